// The control server's metrics, through swift-metrics. The engine and the stream writers record into
// them; the exporter is the caller's choice (Prometheus in warren-control, nothing by default).
//
// Names (Prometheus style; the kinds and results are labels):
//   warren_nodes                          gauge    registered nodes
//   warren_nodes_online                   gauge    nodes with at least one open map stream
//   warren_map_sessions                   gauge    open map streams (a node may hold more than one)
//   warren_map_updates_sent_total{kind}   counter  full | delta | keepalive; delta is an incremental update
//                                                  (PeersChanged, PeersChangedPatch, PeersRemoved, Node)
//   warren_map_bytes_sent_total           counter  framed bytes written on map responses (after zstd)
//   warren_register_requests_total{result} counter ok | auth_url | refused | error

import CoreMetrics

public final class ControlMetrics: Sendable {
    public enum Name {
        public static let nodes = "warren_nodes"
        public static let nodesOnline = "warren_nodes_online"
        public static let mapSessions = "warren_map_sessions"
        public static let mapUpdatesSent = "warren_map_updates_sent_total"
        public static let mapBytesSent = "warren_map_bytes_sent_total"
        public static let registerRequests = "warren_register_requests_total"
    }

    public enum RegisterResult: String, Sendable, CaseIterable {
        /// Registered, logged in again, rotated, or logged out.
        case ok
        /// Interactive login started or still waiting: the client was sent an AuthURL.
        case authURL = "auth_url"
        /// Refused with an `Error` text (bad or expired key, too old a client, ...).
        case refused
        /// The server failed (store error).
        case error
    }

    let nodes: Gauge
    let nodesOnline: Gauge
    let mapSessions: Gauge
    let fullMaps: Counter
    let deltas: Counter
    let keepAlives: Counter
    let mapBytes: Counter
    let registerResults: [RegisterResult: Counter]

    /// Metrics recorded through `factory` (by default nowhere).
    public init(factory: any MetricsFactory = NOOPMetricsHandler.instance) {
        nodes = Gauge(label: Name.nodes, factory: factory)
        nodesOnline = Gauge(label: Name.nodesOnline, factory: factory)
        mapSessions = Gauge(label: Name.mapSessions, factory: factory)
        fullMaps = Counter(label: Name.mapUpdatesSent, dimensions: [("kind", "full")], factory: factory)
        deltas = Counter(label: Name.mapUpdatesSent, dimensions: [("kind", "delta")], factory: factory)
        keepAlives = Counter(label: Name.mapUpdatesSent, dimensions: [("kind", "keepalive")], factory: factory)
        mapBytes = Counter(label: Name.mapBytesSent, factory: factory)
        var results = [RegisterResult: Counter]()
        for result in RegisterResult.allCases {
            results[result] = Counter(label: Name.registerRequests, dimensions: [("result", result.rawValue)], factory: factory)
        }
        registerResults = results
        // Present from the start, so that a scrape shows zeros rather than nothing.
        nodes.record(0)
        nodesOnline.record(0)
        mapSessions.record(0)
    }

    func record(register result: RegisterResult) { registerResults[result]?.increment() }

    /// Records what changed between two readings of the engine's statistics.
    func record(from old: ControlEngine.Statistics, to new: ControlEngine.Statistics) {
        if new.fullMapsSent > old.fullMapsSent { fullMaps.increment(by: new.fullMapsSent - old.fullMapsSent) }
        if new.incrementalUpdatesSent > old.incrementalUpdatesSent {
            deltas.increment(by: new.incrementalUpdatesSent - old.incrementalUpdatesSent)
        }
        if new.keepAlivesSent > old.keepAlivesSent { keepAlives.increment(by: new.keepAlivesSent - old.keepAlivesSent) }
    }

    func record(nodes total: Int) { nodes.record(total) }

    func record(online: Int, sessions: Int) {
        nodesOnline.record(online)
        mapSessions.record(sessions)
    }

    /// Called by the stream writer with each framed message it writes.
    public func record(mapBytesSent count: Int) { mapBytes.increment(by: count) }
}
