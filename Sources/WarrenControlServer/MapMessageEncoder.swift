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
    }
}
