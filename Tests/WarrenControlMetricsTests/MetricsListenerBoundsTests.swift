// Issue 14 point 1 for the metrics listener: its connection cap closes the excess at accept (and scraping works
// again once a slot frees), silent connections and a slowloris head are closed at the handshake timeout, and a
// keep-alive connection at the idle timeout. Short timers here; defaults in docs/limits.md.

import Foundation
import Glibc
import WarrenControlMetrics
import WarrenListenerGuard
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

/// A blocking client socket for listener-bound tests: connect, send, and wait (bounded) for the server to close.
final class BoundsProbe {
    let fd: Int32

    private init(fd: Int32) { self.fd = fd }

    deinit { close(fd) }

    static func tcp(port: Int) throws -> BoundsProbe {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            close(fd)
            throw BoundsProbeError(description: "connect to 127.0.0.1:\(port): errno \(errno)")
        }
        return BoundsProbe(fd: fd)
    }

    static func unix(path: String) throws -> BoundsProbe {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, byte) in path.utf8.prefix(raw.count - 1).enumerated() { raw[i] = byte }
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else {
            close(fd)
            throw BoundsProbeError(description: "connect to \(path): errno \(errno)")
        }
        return BoundsProbe(fd: fd)
    }

    func send(_ text: String) {
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// Reads until the server closes or `seconds` pass; `closed` says which.
    func waitClosed(within seconds: Double) -> (closed: Bool, text: String) {
        var received: [UInt8] = []
        let deadline = Date().addingTimeInterval(seconds)
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { return (false, String(decoding: received, as: UTF8.self)) }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&p, 1, Int32(max(1, left * 1000)))
            if ready <= 0 { continue }
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { return (true, String(decoding: received, as: UTF8.self)) }
            received += buffer[0..<n]
        }
    }

    /// Whether the server closed the connection within `seconds`.
    func isClosed(within seconds: Double) -> Bool { waitClosed(within: seconds).closed }
}

struct BoundsProbeError: Error, CustomStringConvertible { var description: String }

/// Polls `condition` until it holds or `seconds` pass.
func eventually(_ seconds: Double = 10, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        usleep(20_000)
    }
    return condition()
}
