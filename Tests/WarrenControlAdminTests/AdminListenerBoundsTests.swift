// Issue 14 point 1 for the admin listeners (the root-only socket and the optional TCP listener): the cap closes the
// excess at accept while a request in a free slot is served, a silent connection and a slowloris head are closed at
// the handshake timeout, and nothing stays open after its one request. Short timers here; defaults (64, 15 s, 15 s,
// `listeners.admin` in the YAML file) in docs/limits.md.

import Foundation
import Glibc
import WarrenControlAdmin
import WarrenListenerGuard
import WarrenTestProbes
import XCTest

final class AdminListenerBoundsTests: XCTestCase {
    private func start(limits: ListenerLimits) async throws -> (AdminHTTPServer, String, String) {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("wab-admin-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let path = directory + "/admin.sock"
        let server = try await AdminHTTPServer.start(api: Harness().api, socketPath: path, tcp: ("127.0.0.1", 0), limits: limits)
        return (server, path, directory)
    }

    func testTheCapClosesTheExcessOnTheSocketAndOnTCP() async throws {
        let (server, path, directory) = try await start(limits: ListenerLimits(maximumConnections: 3, handshakeTimeout: .seconds(60),
                                                                                idleTimeout: .seconds(60)))
        defer { Task { await server.close(); try? FileManager.default.removeItem(atPath: directory) } }
        let port = try XCTUnwrap(server.tcpPort)
        for (name, index, open) in [("socket", 0, { try BoundsProbe.unix(path: path) }), ("tcp", 1, { try BoundsProbe.tcp(port: port) })] {
            let guardian = server.listenerGuards[index]
            var held = try (0..<3).map { _ in try open() }
            XCTAssertTrue(eventually { guardian.openConnections == 3 }, name)
            let extra = try (0..<4).map { _ in try open() }
            for probe in extra { XCTAssertTrue(probe.isClosed(within: 3), "\(name): a connection over the cap stayed open") }
            XCTAssertEqual(guardian.refusedConnections, 4, name)
            held.removeFirst()
            XCTAssertTrue(eventually { guardian.openConnections == 2 }, name)
            let request = try open()
            request.send("GET /api/v1/user HTTP/1.1\r\nHost: x\r\n\r\n")
            let answer = request.waitClosed(within: 5)
            XCTAssertTrue(answer.closed, "\(name): the connection stayed open after its one request")
            XCTAssertTrue(answer.text.hasPrefix("HTTP/1.1 "), "\(name): \(answer.text)")
            XCTAssertFalse(answer.text.hasPrefix("HTTP/1.1 5"), "\(name): \(answer.text)")
            withExtendedLifetime(held) {}
        }
    }

    func testSilentAndSlowlorisConnectionsAreClosedAtTheHandshakeTimeout() async throws {
        let (server, path, directory) = try await start(limits: ListenerLimits(maximumConnections: 64, handshakeTimeout: .seconds(1),
                                                                                idleTimeout: .seconds(1)))
        defer { Task { await server.close(); try? FileManager.default.removeItem(atPath: directory) } }
        let port = try XCTUnwrap(server.tcpPort)
        let silent = try (0..<5).map { _ in try BoundsProbe.unix(path: path) } + (0..<5).map { _ in try BoundsProbe.tcp(port: port) }
        let slow = [try BoundsProbe.unix(path: path), try BoundsProbe.tcp(port: port)]
        for probe in slow { probe.send("POST /api/v1/user HTTP/1.1\r\nHost: x\r\n") }
        let started = Date()
        var open = slow
        for i in 0..<40 where !open.isEmpty {
            for probe in open { probe.send("X-Slow-\(i): y\r\n") }
            open = open.filter { !$0.isClosed(within: 0.1) }
            usleep(100_000)
        }
        XCTAssertTrue(open.isEmpty, "a slowloris head stayed open for \(Date().timeIntervalSince(started)) s")
        for probe in silent { XCTAssertTrue(probe.isClosed(within: 5), "a silent connection stayed open") }
        // A slow body: the head arrives, the declared body never does.
        let slowBody = try BoundsProbe.unix(path: path)
        slowBody.send("POST /api/v1/user HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        XCTAssertTrue(slowBody.isClosed(within: 5), "a body that never completes kept its connection")
        XCTAssertGreaterThanOrEqual(server.listenerGuards.reduce(0) { $0 + $1.timedOutConnections }, 12)
    }
}
