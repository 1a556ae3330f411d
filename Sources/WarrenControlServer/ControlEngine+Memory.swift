// Where the engine's memory goes, counted from its own structures (counts times sizes that can be justified): for the
// benchmark's per-component breakdown beside the process's RSS. An estimate of live bytes, not a measurement: what a
// Swift collection holds on the heap is its element stride times its capacity plus a header; a class instance is its
// fields plus a 16-byte header.

extension ControlEngine {
    /// (name, value): names ending in "Bytes" are byte estimates, the others counts.
    public func memoryAccount() -> [(name: String, bytes: Int)] {
        var out = [(name: String, bytes: Int)]()
        // Node records: the dictionary's entries (key + value stride), and each record's host details (Hostinfo, held
        // indirectly) are not counted.
        out.append(("nodes", nodes.count))
        out.append(("nodeRecordBytes", nodes.capacity * (MemoryLayout<Int64>.stride + MemoryLayout<ControlNode>.stride)))
        var sessionCount = 0, knownPeerBytes = 0, queued = 0
        for viewerSessions in sessions.values {
            for session in viewerSessions.values {
                sessionCount += 1
                knownPeerBytes += session.knownPeers.heapBytes
                queued += session.outbox.pendingCount
            }
        }
        out.append(("sessions", sessionCount))
        out.append(("queuedMessages", queued))
        // A Session object (its fields) and its outbox object (the mutex-held state) with their object headers.
        out.append(("sessionObjectBytes", sessionCount * (16 + 8 * 8 + 16 + 256)))
        out.append(("knownPeerBitsBytes", knownPeerBytes))
        out.append(("peerEntries", peerCache.count))
        out.append(("peerEntryJSONBytes", peerCache.jsonBytes))
        let chunks = mapEncoder.chunkBytes
        out.append(("sharedChunkFrameBytes", chunks))
        out.append(("streamWriterBufferedBytes", mapEncoder.streams.bufferedBytes))
        out.append(("streamWriterPeakStreamBytes", mapEncoder.streams.peakStreamBytes))
        return out
    }
}

extension ControlEngine {
    /// Every open stream's outbox (tests).
    func openOutboxes() -> [MapSessionOutbox] {
        sessions.values.flatMap { $0.values.map(\.outbox) }
    }
}
