// Encoding the map messages a server streams. Two things make a full map for one node of 10,000 cheap:
//
// 1. The hand-written writer (WarrenTailcfg's TailcfgJSONWriter) instead of Foundation's JSONEncoder:
//    the same bytes, without the intermediate tree of boxed values.
// 2. A cache of each peer's encoded `Node`, shared by all streams: in a tailnet of N nodes every full
//    map carries N-1 peers, nearly all of them unchanged since the last map that carried them, and a
//    change to one node sends the same `Node` to every viewer. A cached fragment is reused only when
//    the stored `Node` equals the one being written, so the cache can never send stale data and needs
//    no invalidation from the engine; a changed node simply misses once and replaces its entry.
//
// The cache holds at most two generations of `capacity` entries: when the current generation is full
// it becomes the previous one (still read, and entries hit there move back) and the older one is
// dropped, so nodes deleted long ago do not stay in memory.
//
// With `metrics`, each encode's duration goes to `warren_map_encode_duration_seconds`: two reads of the
// monotonic clock and one histogram update per message (a message is encoded once for all the streams
// that share it), nothing when `metrics` is nil.

import Synchronization
import WarrenControlTransport
import WarrenTailcfg

public final class MapMessageEncoder: Sendable {
    public struct Statistics: Hashable, Sendable {
        /// Messages encoded.
        public var messages = 0
        /// Peers (in Peers and PeersChanged) written from the cache, and written afresh.
        public var peerHits = 0
        public var peerMisses = 0
        public init() {}
    }

    /// A class, so that looking an entry up does not copy the (large) `Node` value.
    private final class Entry: Sendable {
        let node: Node
        let json: [UInt8]

        init(node: Node, json: [UInt8]) {
            self.node = node
            self.json = json
        }
    }

    private struct State: Sendable {
        var current: [Int64: Entry] = [:]
        var previous: [Int64: Entry] = [:]
        var statistics = Statistics()
    }

    private let state = Mutex(State())
    /// What the map stream writers using this encoder hold in their channels (``MapStreamWriterAccount``).
    public let streams = MapStreamWriterAccount()
    /// Entries per generation.
    public let capacity: Int
    /// Where encode durations are recorded, if anywhere.
    public let metrics: ControlMetrics?

    public init(capacity: Int = 65_536, metrics: ControlMetrics? = nil) {
        self.capacity = max(1, capacity)
        self.metrics = metrics
    }

    public var statistics: Statistics { state.withLock { $0.statistics } }

    /// Cached peers (both generations).
    public var cachedPeerCount: Int { state.withLock { $0.current.count + $0.previous.count } }

    /// The JSON of `response`: the bytes `TailcfgJSON.encode(response)` gives.
    public func encode(_ response: MapResponse) throws -> [UInt8] {
        guard let metrics else { return try encodeUntimed(response) }
        let clock = ContinuousClock()
        let start = clock.now
        let bytes = try encodeUntimed(response)
        let (seconds, attoseconds) = (clock.now - start).components
        let kind: ControlMetrics.MessageKind = response.peers != nil ? .full : response.keepAlive == true ? .keepalive : .delta
        metrics.record(encode: kind, nanoseconds: seconds &* 1_000_000_000 &+ attoseconds / 1_000_000_000)
        return bytes
    }

    private func encodeUntimed(_ response: MapResponse) throws -> [UInt8] {
        let peerCount = (response.peers?.count ?? 0) + (response.peersChanged?.count ?? 0)
        guard peerCount > 0 else {
            let bytes = try TailcfgJSON.write(response)
            state.withLock { $0.statistics.messages += 1 }
            return bytes
        }
        // Read a snapshot of the cache without holding the lock while writing; dictionaries are
        // copy-on-write, so this costs nothing until the cache is updated below.
        var (current, previous) = state.withLock { ($0.current, $0.previous) }
        var fresh = [(id: Int64, entry: Entry)]()
        var hits = 0
        var writer = TailcfgJSONWriter(reservingCapacity: 2048 + peerCount * 800)
        try response.writeJSON(to: &writer) { node, w in
            if let entry = current[node.id], entry.node == node {
                w.rawValue(entry.json)
                hits += 1
            } else if let entry = previous[node.id], entry.node == node {
                w.rawValue(entry.json)
                hits += 1
                fresh.append((node.id, entry))
            } else {
                let start = w.beginCapture()
                try node.writeJSON(to: &w)
                fresh.append((node.id, Entry(node: copy node, json: w.captured(since: start))))
            }
        }
        // Let go of the snapshot first, so that updating the cache does not copy the dictionaries.
        current = [:]
        previous = [:]
        let misses = peerCount - hits
        let capacity = capacity
        state.withLock { state in
            for (id, entry) in fresh {
                if state.current.count >= capacity {
                    state.previous = state.current
                    state.current = [:]
                }
                state.current[id] = entry
            }
            state.statistics.messages += 1
            state.statistics.peerHits += hits
            state.statistics.peerMisses += misses
        }
        return writer.takeBytes()
    }

    /// Drops every cached peer.
    public func removeAll() {
        state.withLock {
            $0.current = [:]
            $0.previous = [:]
        }
        chunks.withLock { $0 = [:] }
    }

    // MARK: Full maps from shared peers

    /// Peers per chunk: a full map's peers are cut by node ID (`id / chunkSize`), and a run that is the same for
    /// many viewers (the same ``CachedPeer`` objects) is compressed once, as a zstd frame of its own.
    public static let chunkSize: Int64 = 256

    private struct ChunkKey: Hashable {
        var index: Int64
        var leadingComma: Bool
    }

    /// A compressed run of peers, with the entries it was made from (held, so that an identity match is real).
    private struct Chunk {
        var peers: [CachedPeer]
        var frame: [UInt8]
    }

    /// Two variants per chunk: the one last reused (what the viewers outside the chunk share), and the one last made
    /// (on probation: a viewer's own, its chunk lacking it, or a shared one after a change, kept once it is reused).
    /// A viewer's own variant is never reused, so it never pushes the shared one out.
    private struct Variants {
        var shared: Chunk?
        var probation: Chunk?
    }

    private let chunks = Mutex<[ChunkKey: Variants]>([:])

    /// Bytes of the compressed chunk frames kept (for the memory account).
    public var chunkBytes: Int {
        chunks.withLock { $0.values.reduce(0) { $0 + ($1.shared?.frame.count ?? 0) + ($1.probation?.frame.count ?? 0) } }
    }

    /// Chunks compressed, and reused (statistics for tests and the benchmark).
    public var chunkCounts: (compressed: Int, reused: Int) { chunkStatistics.withLock { $0 } }
    private let chunkStatistics = Mutex<(compressed: Int, reused: Int)>((0, 0))

    /// The framed full map: `response` (whose `peers` is empty) with `peers` as its Peers, the bytes
    /// `TailcfgJSON.write` gives for the map with the peers written out. Compressed, it is a series of zstd frames
    /// (clients decode all the frames of a message: tailscale's zstdframe.AppendDecode, Warren's streaming
    /// decoder): the map around the peers, and each chunk of peers, shared by every viewer whose chunk is the same.
    public func frameFullMap(_ response: MapResponse, peers: [CachedPeer], compress: Bool) throws -> [UInt8] {
        Array(try fullMapPieces(response, peers: peers, compress: compress).joined())
    }

    /// ``frameFullMap(_:peers:compress:)`` as the pieces a stream writer sends one after another, without joining them:
    /// the first holds the frame's length and the map around the peers, the others are the chunks of peers (the
    /// shared ones are the cache's own arrays, not copies) and the map's end. Joined, they are the framed message.
    public func fullMapPieces(_ response: MapResponse, peers: [CachedPeer], compress: Bool) throws -> [[UInt8]] {
        let clock = ContinuousClock()
        let start = clock.now
        // The map with one marker peer that writes nothing: the peers go where the marker was.
        var outer = response
        outer.peers = [Node()]
        var mark = -1
        var writer = TailcfgJSONWriter(reservingCapacity: 8192)
        try outer.writeJSON(to: &writer) { _, w in mark = w.bytes.count }
        let whole = writer.takeBytes()
        guard mark >= 0 else { throw FullMapEncodingError() }
        let head = Array(whole[..<mark]), tail = Array(whole[mark...])
        var pieces: [[UInt8]]
        if compress {
            pieces = [Self.trimmed(try Zstd.compress(head, level: MapStreamFraming.compressionLevel))]
            var i = 0
            while i < peers.count {
                let index = peers[i].node.id / Self.chunkSize
                var j = i + 1
                while j < peers.count, peers[j].node.id / Self.chunkSize == index { j += 1 }
                pieces.append(try chunkFrame(index: index, peers: peers[i..<j], leadingComma: i > 0))
                i = j
            }
            pieces.append(Self.trimmed(try Zstd.compress(tail, level: MapStreamFraming.compressionLevel)))
        } else {
            // Uncompressed, each peer's JSON is the engine's shared bytes; runs of them are joined into pieces of
            // about a chunk's size.
            pieces = [head]
            var run = [UInt8]()
            for (i, peer) in peers.enumerated() {
                if i > 0 { run.append(UInt8(ascii: ",")) }
                run += try peer.json()
                if run.count >= 32 << 10 {
                    pieces.append(run)
                    run = []
                }
            }
            run += tail
            pieces.append(run)
        }
        // The frame's length goes before the first piece.
        let total = pieces.reduce(0) { $0 + $1.count }
        let n = UInt32(truncatingIfNeeded: total)
        pieces[0] = [UInt8(truncatingIfNeeded: n), UInt8(truncatingIfNeeded: n >> 8), UInt8(truncatingIfNeeded: n >> 16),
                     UInt8(truncatingIfNeeded: n >> 24)] + pieces[0]
        if let metrics {
            let (seconds, attoseconds) = (clock.now - start).components
            metrics.record(encode: .full, nanoseconds: seconds &* 1_000_000_000 &+ attoseconds / 1_000_000_000)
        }
        state.withLock { $0.statistics.messages += 1 }
        return pieces
    }

    /// `bytes` in an array of its own size: Zstd.compress leaves the capacity of the bound it wrote into (the input's size
    /// and more), and a chunk frame is kept (shared) or held until its stream has written it (a viewer's own), about five
    /// times its size otherwise.
    static func trimmed(_ bytes: [UInt8]) -> [UInt8] {
        guard bytes.capacity > bytes.count + bytes.count / 8 else { return bytes }
        var out = [UInt8]()
        out.reserveCapacity(bytes.count)
        out.append(contentsOf: bytes)
        return out
    }

    private func chunkFrame(index: Int64, peers: ArraySlice<CachedPeer>, leadingComma: Bool) throws -> [UInt8] {
        let key = ChunkKey(index: index, leadingComma: leadingComma)
        func same(_ chunk: Chunk) -> Bool {
            chunk.peers.count == peers.count && zip(chunk.peers, peers).allSatisfy { $0 === $1 }
        }
        let found: [UInt8]? = chunks.withLock { cache in
            guard var variants = cache[key] else { return nil }
            if let shared = variants.shared, same(shared) { return shared.frame }
            guard let candidate = variants.probation, same(candidate) else { return nil }
            variants.shared = candidate
            variants.probation = nil
            cache[key] = variants
            return candidate.frame
        }
        if let found {
            chunkStatistics.withLock { $0.reused += 1 }
            return found
        }
        var json = [UInt8]()
        json.reserveCapacity(peers.count * 800)
        for (i, peer) in peers.enumerated() {
            if i > 0 || leadingComma { json.append(UInt8(ascii: ",")) }
            json += try peer.json()
        }
        let frame = Self.trimmed(try Zstd.compress(json, level: MapStreamFraming.compressionLevel))
        let chunk = Chunk(peers: Array(peers), frame: frame)
        chunks.withLock { cache in cache[key, default: Variants()].probation = chunk }
        chunkStatistics.withLock { $0.compressed += 1 }
        return frame
    }
}

/// A full map whose writer wrote no peer list (cannot happen with a map that has peers set).
struct FullMapEncodingError: Error, CustomStringConvertible {
    var description: String { "full map written without its peer list" }
}
