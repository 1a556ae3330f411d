// Issue 14 point 1 for the admin listeners (the root-only socket and the optional TCP listener): the cap closes the
// excess at accept while a request in a free slot is served, a silent connection and a slowloris head are closed at
// the handshake timeout, and nothing stays open after its one request. Short timers here; defaults (64, 15 s, 15 s,
// `listeners.admin` in the YAML file) in docs/limits.md.

import Foundation
import Glibc
import WarrenControlAdmin
import WarrenListenerGuard
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
