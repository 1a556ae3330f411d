// Admin API request metrics (helper A's families, beside the registry's others):
//
//   warren_admin_requests_total{route,method,status}           counter    requests answered
//   warren_admin_request_duration_seconds{route,method}         histogram  time from the request's arrival to its answer
//
// `route` is the route template ("/api/v1/node/{nodeId}", "/api/v1/users/{user}/rename"), "unmatched" for a path no
// route serves; `method` one of GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS or "other". Label values are therefore
// bounded by the route tables, whatever clients send.

import Prometheus

public final class AdminRequestMetrics: Sendable {
    public enum Name {
        public static let requests = "warren_admin_requests_total"
        public static let duration = "warren_admin_request_duration_seconds"
    }

    public static let buckets: [Duration] = [
        .microseconds(500), .milliseconds(1), .microseconds(2500), .milliseconds(5), .milliseconds(10), .milliseconds(25),
        .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500),
        .seconds(5), .seconds(10),
    ]

    static let methods: Set<String> = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]

    private let registry: PrometheusCollectorRegistry
    private var requests: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "warren_admin_requests", unitName: "total",
                             helpText: "Admin API requests answered, by route template, method and HTTP status")
    }
    private var duration: MetricNameDescriptor {
        MetricNameDescriptor(metricName: "warren_admin_request_duration", unitName: "seconds",
                             helpText: "Admin API request latency from arrival to answer, by route template and method")
    }

    /// Registers nothing until the first request (a family appears with its first sample).
    public init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
    }

    /// Counts one answered request and its latency.
    public func record(route: String, method: String, status: Int, duration elapsed: Duration) {
        let method = Self.methods.contains(method) ? method : "other"
        let status = (100...599).contains(status) ? String(status) : "other"
        registry.makeCounter(descriptor: requests, labels: [("route", route), ("method", method), ("status", status)]).increment()
        registry.makeDurationHistogram(descriptor: duration, labels: [("route", route), ("method", method)], buckets: Self.buckets)
            .recordNanoseconds(elapsed.nanosecondsClamped)
    }
}

extension Duration {
    fileprivate var nanosecondsClamped: Int64 {
        let (seconds, attoseconds) = components
        let (product, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? 0 : .max }
        return max(0, product.addingReportingOverflow(attoseconds / 1_000_000_000).partialValue)
    }
}
