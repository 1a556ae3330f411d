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
//   warren_map_encode_duration_seconds{kind} histogram  time to encode one MapResponse to JSON (before
//                                                  zstd); full | delta | keepalive. A message shared by many
//                                                  streams is encoded once and counted once.
//
// Each name's help text is in `help`, for exporters that print it (Prometheus' HELP lines).

import CoreMetrics

public final class ControlMetrics: Sendable {
    public enum Name {
        public static let nodes = "warren_nodes"
        public static let nodesOnline = "warren_nodes_online"
        public static let mapSessions = "warren_map_sessions"
        public static let mapUpdatesSent = "warren_map_updates_sent_total"
        public static let mapBytesSent = "warren_map_bytes_sent_total"
        public static let registerRequests = "warren_register_requests_total"
        public static let mapEncodeDuration = "warren_map_encode_duration_seconds"
    }

    /// The help text of each family above.
    public static let help: [String: String] = [
        Name.nodes: "Nodes registered with this server",
        Name.nodesOnline: "Nodes with at least one open map stream",
        Name.mapSessions: "Open map streams (a node may hold more than one)",
        Name.mapUpdatesSent: "Map messages written to streams, by kind: full map, incremental update (delta) or keep-alive",
        Name.mapBytesSent: "Framed bytes written on map responses, after compression",
        Name.registerRequests: "Registration requests (/machine/register) by result: ok, auth_url, refused or error",
        Name.mapEncodeDuration: "Time to encode one map response to JSON (before compression), by kind; "
            + "a message shared by many streams is encoded once",
    ]

    /// Buckets of `warren_map_encode_duration_seconds`: from a keep-alive (microseconds) to a full map of
    /// tens of thousands of peers (tens to hundreds of milliseconds).
    public static let mapEncodeBuckets: [Duration] = [
        .microseconds(10), .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500),
        .milliseconds(1), .microseconds(2500), .milliseconds(5), .milliseconds(10), .milliseconds(25),
        .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
    ]

    /// What a map message is, for the encode histogram (the same kinds as `warren_map_updates_sent_total`).
    public enum MessageKind: String, Sendable, CaseIterable {
        case full
        case delta
        case keepalive
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
    let encodeDurations: [MessageKind: Timer]

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
        var timers = [MessageKind: Timer]()
        for kind in MessageKind.allCases {
            timers[kind] = Timer(label: Name.mapEncodeDuration, dimensions: [("kind", kind.rawValue)], factory: factory)
        }
        encodeDurations = timers
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

    /// Called by ``MapMessageEncoder`` with the time one message took to encode.
    public func record(encode kind: MessageKind, nanoseconds: Int64) {
        encodeDurations[kind]?.recordNanoseconds(nanoseconds)
    }
}

/// The release of warren-control, for `warren-control version` and the `warren_control_build_info` metric.
public enum WarrenControlBuild {
    public static let version = "0.1.0"

    /// The compiler this was built with, as precisely as `#if compiler` tells it.
    public static var swiftVersion: String {
        #if compiler(>=6.4)
        "6.4+"
        #elseif compiler(>=6.3.2)
        "6.3.2"
        #elseif compiler(>=6.3.1)
        "6.3.1"
        #elseif compiler(>=6.3)
        "6.3"
        #elseif compiler(>=6.2)
        "6.2"
        #elseif compiler(>=6.1)
        "6.1"
        #elseif compiler(>=6.0)
        "6.0"
        #else
        "5.x"
        #endif
    }
}
