// A swift-metrics factory over the Prometheus registry that gives every family its help text.
//
// swift-prometheus' own PrometheusMetricsFactory registers what comes through swift-metrics without help
// (no `# HELP` line, which `promtool check metrics` reports). This one looks the help up by the metric's
// name in a table (ControlMetrics.help, and whatever `describe` added), and takes a histogram's buckets
// from a second table. A name without help is still registered, without it; PromtoolTests refuses that.

import CoreMetrics
import Prometheus
import Synchronization

public final class DescribedMetricsFactory: MetricsFactory, Sendable {
    public let registry: PrometheusCollectorRegistry

    private struct Tables {
        var help: [String: String]
        var durationBuckets: [String: [Duration]]
        var valueBuckets: [String: [Double]]
    }

    private let tables: Mutex<Tables>

    /// Buckets for a timer without an entry: 1 ms to 10 s.
    public static let defaultDurationBuckets: [Duration] = [
        .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
        .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10),
    ]

    /// Buckets for an aggregating recorder without an entry.
    public static let defaultValueBuckets: [Double] = [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000]

    public init(registry: PrometheusCollectorRegistry, help: [String: String] = [:],
                durationBuckets: [String: [Duration]] = [:], valueBuckets: [String: [Double]] = [:]) {
        self.registry = registry
        tables = Mutex(Tables(help: help, durationBuckets: durationBuckets, valueBuckets: valueBuckets))
    }

    /// Gives `name` its help text (and, for a timer or histogram, its buckets). Call it before the first
    /// metric of that name is made: the registry keeps the help the family was created with.
    public func describe(_ name: String, help: String, durationBuckets: [Duration]? = nil, valueBuckets: [Double]? = nil) {
        tables.withLock { tables in
            tables.help[name] = help
            if let durationBuckets { tables.durationBuckets[name] = durationBuckets }
            if let valueBuckets { tables.valueBuckets[name] = valueBuckets }
        }
    }

    /// The help text for `name`, if it has one.
    public func help(for name: String) -> String? { tables.withLock { $0.help[name] } }

    /// `name` with its help text, as the registry takes it.
    private func descriptor(_ name: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: tables.withLock { $0.help[name] ?? "" })
    }

    public func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        registry.makeCounter(descriptor: descriptor(label), labels: dimensions)
    }

    public func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        registry.makeCounter(descriptor: descriptor(label), labels: dimensions)
    }

    public func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        guard aggregate else { return registry.makeGauge(descriptor: descriptor(label), labels: dimensions) }
        let buckets = tables.withLock { $0.valueBuckets[label] } ?? Self.defaultValueBuckets
        return registry.makeValueHistogram(descriptor: descriptor(label), labels: dimensions, buckets: buckets)
    }

    public func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        registry.makeGauge(descriptor: descriptor(label), labels: dimensions)
    }

    public func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        let buckets = tables.withLock { $0.durationBuckets[label] } ?? Self.defaultDurationBuckets
        return registry.makeDurationHistogram(descriptor: descriptor(label), labels: dimensions, buckets: buckets)
    }

    public func destroyCounter(_ handler: any CounterHandler) {
        if let counter = handler as? Prometheus.Counter { registry.unregisterCounter(counter) }
    }

    public func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {
        if let counter = handler as? Prometheus.Counter { registry.unregisterCounter(counter) }
    }

    public func destroyRecorder(_ handler: any RecorderHandler) {
        switch handler {
        case let gauge as Prometheus.Gauge: registry.unregisterGauge(gauge)
        case let histogram as ValueHistogram: registry.unregisterValueHistogram(histogram)
        default: break
        }
    }

    public func destroyMeter(_ handler: any MeterHandler) {
        if let gauge = handler as? Prometheus.Gauge { registry.unregisterGauge(gauge) }
    }

    public func destroyTimer(_ handler: any TimerHandler) {
        if let histogram = handler as? DurationHistogram { registry.unregisterDurationHistogram(histogram) }
    }
}
