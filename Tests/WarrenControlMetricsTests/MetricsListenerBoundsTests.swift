// Issue 14 point 1 for the metrics listener: its connection cap closes the excess at accept (and scraping works
// again once a slot frees), silent connections and a slowloris head are closed at the handshake timeout, and a
// keep-alive connection at the idle timeout. Short timers here; defaults in docs/limits.md.

import Foundation
import Glibc
import WarrenControlMetrics
import WarrenListenerGuard
import WarrenTestProbes
import XCTest

final class MetricsListenerBoundsTests: XCTestCase {
    func testTheCapClosesTheExcessAtAcceptAndScrapingWorksAfterwards() async throws {
        let listener = try await MetricsListener.start(metrics: ControlMetricsRegistry(), host: "127.0.0.1", port: 0,
                                                       limits: ListenerLimits(maximumConnections: 4, handshakeTimeout: .seconds(60)))
        defer { Task { await listener.close() } }
        let port = try XCTUnwrap(listener.port)
        var held: [BoundsProbe] = []
        for _ in 0..<4 { held.append(try BoundsProbe.tcp(port: port)) }
        XCTAssertTrue(eventually { listener.listenerGuard.openConnections == 4 })
        let extra = try (0..<3).map { _ in try BoundsProbe.tcp(port: port) }
        for probe in extra { XCTAssertTrue(probe.isClosed(within: 3), "a connection over the cap stayed open") }
        XCTAssertEqual(listener.listenerGuard.refusedConnections, 3)
        held.removeFirst()
        XCTAssertTrue(eventually { listener.listenerGuard.openConnections == 3 })
        let scrape = try BoundsProbe.tcp(port: port)
        scrape.send("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        let answer = scrape.waitClosed(within: 5)
        XCTAssertTrue(answer.text.hasPrefix("HTTP/1.1 200"), answer.text)
        withExtendedLifetime(held) {}
    }

    func testSilentSlowlorisAndIdleConnectionsAreClosedByTheirTimers() async throws {
        let listener = try await MetricsListener.start(
            metrics: ControlMetricsRegistry(), host: "127.0.0.1", port: 0,
            limits: ListenerLimits(maximumConnections: 64, handshakeTimeout: .seconds(1), idleTimeout: .seconds(1)))
        defer { Task { await listener.close() } }
        let port = try XCTUnwrap(listener.port)
        let silent = try (0..<10).map { _ in try BoundsProbe.tcp(port: port) }
        let slow = try BoundsProbe.tcp(port: port)
        slow.send("GET /metrics HTTP/1.1\r\nHost: x\r\n")
        let keepAlive = try BoundsProbe.tcp(port: port)
        keepAlive.send("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        // One header line every 200 ms: bytes arrive, the head never completes.
        let started = Date()
        var slowClosed = false
        for i in 0..<40 where !slowClosed {
            slow.send("X-Slow-\(i): y\r\n")
            slowClosed = slow.isClosed(within: 0.2)
        }
        XCTAssertTrue(slowClosed, "a slowloris head stayed open for \(Date().timeIntervalSince(started)) s")
        for probe in silent { XCTAssertTrue(probe.isClosed(within: 5), "a silent connection stayed open") }
        let kept = keepAlive.waitClosed(within: 5)
        XCTAssertTrue(kept.closed, "an idle keep-alive connection stayed open")
        XCTAssertTrue(kept.text.hasPrefix("HTTP/1.1 200"), kept.text)
        XCTAssertGreaterThanOrEqual(listener.listenerGuard.timedOutConnections, 12)
    }
}
