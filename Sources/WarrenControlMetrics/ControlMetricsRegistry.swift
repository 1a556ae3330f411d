// warren-control's Prometheus registry: the control engine's metrics (recorded as they happen through
// swift-metrics) and the DERP relay's and STUN server's counters (read from their statistics at each
// scrape, so the relay's hot path has nothing more to do).
//
// Relay and STUN names:
//   warren_derp_clients                        gauge    clients connected to the embedded relay
//   warren_derp_packets_relayed_total          counter  packets handed to a destination's queue
//   warren_derp_packets_dropped_total{reason}  counter  queue_full | unknown_destination | gone
//   warren_stun_requests_total{result}         counter  answered | dropped

import CoreMetrics
import Prometheus
import Synchronization
import WarrenControlServer
import WarrenDERPServer

public final class ControlMetricsRegistry: Sendable {
    public enum Name {
        public static let derpClients = "warren_derp_clients"
        public static let derpPacketsRelayed = "warren_derp_packets_relayed_total"
        public static let derpPacketsDropped = "warren_derp_packets_dropped_total"
        public static let stunRequests = "warren_stun_requests_total"
    }

    public let registry: PrometheusCollectorRegistry
    /// Give this to ``ControlEngine/init(configuration:directory:policy:logger:now:metrics:)``.
    public let control: ControlMetrics

    private struct Watched {
        var derp: DERPServer?
        var stun: STUNServer?
        var last = Seen()
    }

    /// The relay's and STUN's readings at the previous scrape (their counters only grow).
    private struct Seen {
        var relayed: UInt64 = 0
        var queueFull: UInt64 = 0
        var unknownDestination: UInt64 = 0
        var gone: UInt64 = 0
        var stunAnswered: UInt64 = 0
        var stunDropped: UInt64 = 0
    }

    private let watched = Mutex(Watched())
    private let derpClients: Prometheus.Gauge
    private let derpRelayed: Prometheus.Counter
    private let derpQueueFull: Prometheus.Counter
    private let derpUnknownDestination: Prometheus.Counter
    private let derpGone: Prometheus.Counter
    private let stunAnswered: Prometheus.Counter
    private let stunDropped: Prometheus.Counter

    public init() {
        let registry = PrometheusCollectorRegistry()
        self.registry = registry
        control = ControlMetrics(factory: PrometheusMetricsFactory(registry: registry))
        derpClients = registry.makeGauge(name: Name.derpClients, help: "Clients connected to the embedded DERP relay")
        derpRelayed = registry.makeCounter(name: Name.derpPacketsRelayed, help: "Packets relayed to a connected client")
        derpQueueFull = registry.makeCounter(name: Name.derpPacketsDropped, labels: [("reason", "queue_full")])
        derpUnknownDestination = registry.makeCounter(name: Name.derpPacketsDropped, labels: [("reason", "unknown_destination")])
        derpGone = registry.makeCounter(name: Name.derpPacketsDropped, labels: [("reason", "gone")])
        stunAnswered = registry.makeCounter(name: Name.stunRequests, labels: [("result", "answered")])
        stunDropped = registry.makeCounter(name: Name.stunRequests, labels: [("result", "dropped")])
    }

    /// Reports this relay's clients and packets from now on.
    public func watch(derp: DERPServer) { watched.withLock { $0.derp = derp } }

    /// Reports this STUN server's requests from now on.
    public func watch(stun: STUNServer) { watched.withLock { $0.stun = stun } }

    /// The text exposition format (version 0.0.4), with the relay and STUN counters brought up to date.
    public func scrape() -> [UInt8] {
        watched.withLock { w in
            var now = w.last
            if let derp = w.derp {
                let s = derp.statistics
                derpClients.set(to: Double(s.clients))
                now.relayed = s.packetsRelayed
                now.queueFull = s.droppedQueueHead
                now.unknownDestination = s.droppedUnknownDestination
                now.gone = s.droppedGone
            }
            if let stun = w.stun {
                let counts = stun.counts
                now.stunAnswered = counts.answered
                now.stunDropped = counts.dropped
            }
            Self.advance(derpRelayed, from: w.last.relayed, to: now.relayed)
            Self.advance(derpQueueFull, from: w.last.queueFull, to: now.queueFull)
            Self.advance(derpUnknownDestination, from: w.last.unknownDestination, to: now.unknownDestination)
            Self.advance(derpGone, from: w.last.gone, to: now.gone)
            Self.advance(stunAnswered, from: w.last.stunAnswered, to: now.stunAnswered)
            Self.advance(stunDropped, from: w.last.stunDropped, to: now.stunDropped)
            w.last = now
        }
        return registry.emitToBuffer()
    }

    private static func advance(_ counter: Prometheus.Counter, from old: UInt64, to new: UInt64) {
        guard new > old else { return }
        counter.increment(by: Int64(clamping: new - old))
    }
}
