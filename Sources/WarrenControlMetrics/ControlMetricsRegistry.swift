// warren-control's Prometheus registry: the control engine's metrics (recorded as they happen through
// swift-metrics), the DERP relay's and STUN server's counters and the process's figures (read at each
// scrape, so the relay's hot path has nothing more to do), and the build.
//
// Every family has help text (`# HELP`), so that `promtool check metrics` passes on a scrape: families
// made through swift-metrics get theirs from `factory` (ControlMetrics.help, or `describe`), the others
// name it where they are made. To add a family, either make it on `registry` with a descriptor that has
// help text, or `describe` its name and make it through `factory`.
//
// Relay and STUN names:
//   warren_derp_clients                        gauge    clients connected to the embedded relay
//   warren_derp_packets_relayed_total          counter  packets handed to a destination's queue
//   warren_derp_packets_dropped_total{reason}  counter  queue_full | unknown_destination | gone
//   warren_stun_requests_total{result}         counter  answered | dropped
// The build:
//   warren_control_build_info{version,swift}   gauge    always 1
// The process: see ProcessMetrics.swift (process_cpu_seconds_total, process_resident_memory_bytes, ...).

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
        public static let buildInfo = "warren_control_build_info"
        public static let processCPUSeconds = "process_cpu_seconds_total"
        public static let processResidentMemory = "process_resident_memory_bytes"
        public static let processVirtualMemory = "process_virtual_memory_bytes"
        public static let processVirtualMemoryMax = "process_virtual_memory_max_bytes"
        public static let processOpenFDs = "process_open_fds"
        public static let processMaxFDs = "process_max_fds"
        public static let processStartTime = "process_start_time_seconds"
    }

    public let registry: PrometheusCollectorRegistry
    /// Give this to ``ControlEngine/init(configuration:directory:policy:logger:now:metrics:)``.
    public let control: ControlMetrics
    /// swift-metrics into `registry`, with help text by name (see ``DescribedMetricsFactory/describe(_:help:durationBuckets:valueBuckets:)``).
    public let factory: DescribedMetricsFactory

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
    private let process: ProcessGauges

    /// The process's families, brought up to date at each scrape.
    private final class ProcessGauges: Sendable {
        let cpuSeconds: Prometheus.Counter
        let residentMemory: Prometheus.Gauge
        let virtualMemory: Prometheus.Gauge
        let virtualMemoryMax: Prometheus.Gauge
        let openFDs: Prometheus.Gauge
        let maxFDs: Prometheus.Gauge
        let startTime: Prometheus.Gauge
        /// CPU seconds at the previous scrape (the counter only grows by the difference).
        let lastCPUSeconds = Mutex(0.0)

        init(cpuSeconds: Prometheus.Counter, residentMemory: Prometheus.Gauge, virtualMemory: Prometheus.Gauge,
             virtualMemoryMax: Prometheus.Gauge, openFDs: Prometheus.Gauge, maxFDs: Prometheus.Gauge, startTime: Prometheus.Gauge) {
            self.cpuSeconds = cpuSeconds
            self.residentMemory = residentMemory
            self.virtualMemory = virtualMemory
            self.virtualMemoryMax = virtualMemoryMax
            self.openFDs = openFDs
            self.maxFDs = maxFDs
            self.startTime = startTime
        }
    }

    /// `version` and `swift` label `warren_control_build_info`.
    public init(version: String = WarrenControlBuild.version, swift: String = WarrenControlBuild.swiftVersion) {
        let registry = PrometheusCollectorRegistry()
        self.registry = registry
        factory = DescribedMetricsFactory(registry: registry, help: ControlMetrics.help,
                                          durationBuckets: [ControlMetrics.Name.mapEncodeDuration: ControlMetrics.mapEncodeBuckets])
        control = ControlMetrics(factory: factory)
        func described(_ name: String, _ help: String) -> MetricNameDescriptor {
            MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
        }
        derpClients = registry.makeGauge(descriptor: described(Name.derpClients, "Clients connected to the embedded DERP relay"))
        derpRelayed = registry.makeCounter(descriptor: described(Name.derpPacketsRelayed, "Packets relayed to a connected client"))
        let dropped = described(Name.derpPacketsDropped,
                                "Packets the embedded DERP relay dropped, by reason: queue_full, unknown_destination or gone")
        derpQueueFull = registry.makeCounter(descriptor: dropped, labels: [("reason", "queue_full")])
        derpUnknownDestination = registry.makeCounter(descriptor: dropped, labels: [("reason", "unknown_destination")])
        derpGone = registry.makeCounter(descriptor: dropped, labels: [("reason", "gone")])
        let stun = described(Name.stunRequests, "STUN binding requests, by result: answered or dropped")
        stunAnswered = registry.makeCounter(descriptor: stun, labels: [("result", "answered")])
        stunDropped = registry.makeCounter(descriptor: stun, labels: [("result", "dropped")])
        registry.makeGauge(descriptor: described(Name.buildInfo, "The warren-control build: version and Swift compiler, value 1"),
                           labels: [("version", version), ("swift", swift)]).set(to: 1)
        process = ProcessGauges(
            cpuSeconds: registry.makeCounter(descriptor: described(Name.processCPUSeconds,
                                                                   "Total user and system CPU time spent in seconds")),
            residentMemory: registry.makeGauge(descriptor: described(Name.processResidentMemory, "Resident memory size in bytes")),
            virtualMemory: registry.makeGauge(descriptor: described(Name.processVirtualMemory, "Virtual memory size in bytes")),
            virtualMemoryMax: registry.makeGauge(descriptor: described(Name.processVirtualMemoryMax,
                                                                       "Maximum amount of virtual memory available in bytes")),
            openFDs: registry.makeGauge(descriptor: described(Name.processOpenFDs, "Number of open file descriptors")),
            maxFDs: registry.makeGauge(descriptor: described(Name.processMaxFDs, "Maximum number of open file descriptors")),
            startTime: registry.makeGauge(descriptor: described(Name.processStartTime,
                                                                "Start time of the process since unix epoch in seconds")))
        updateProcess()
    }

    /// Gives `name` its help text for families made through `factory` (see ``DescribedMetricsFactory``).
    public func describe(_ name: String, help: String, durationBuckets: [Duration]? = nil) {
        factory.describe(name, help: help, durationBuckets: durationBuckets)
    }

    /// Reads /proc/self into the process families; a failed read leaves them as they were.
    private func updateProcess() {
        guard let reading = try? ProcessReading.current() else { return }
        process.lastCPUSeconds.withLock { last in
            if reading.cpuSeconds > last { process.cpuSeconds.increment(by: reading.cpuSeconds - last) }
            last = max(last, reading.cpuSeconds)
        }
        process.residentMemory.set(to: reading.residentBytes)
        process.virtualMemory.set(to: reading.virtualBytes)
        process.virtualMemoryMax.set(to: reading.virtualMaxBytes)
        process.openFDs.set(to: reading.openFDs)
        process.maxFDs.set(to: reading.maxFDs)
        process.startTime.set(to: reading.startTimeSeconds)
    }

    /// Reports this relay's clients and packets from now on.
    public func watch(derp: DERPServer) { watched.withLock { $0.derp = derp } }

    /// Reports this STUN server's requests from now on.
    public func watch(stun: STUNServer) { watched.withLock { $0.stun = stun } }

    /// The text exposition format (version 0.0.4), with the relay and STUN counters brought up to date.
    public func scrape() -> [UInt8] {
        updateProcess()
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
