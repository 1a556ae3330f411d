// The UAPI socket's bounds (docs/limits.md, warren-wireguard): each connection costs a thread, so at most
// `maximumConnections` are served at once (the excess is closed at accept and `wg` still works once one frees),
// a connection that sends nothing for `idleTimeoutMilliseconds` is closed, and a dribbled set request that never
// ends is closed too. The request size bounds (64-byte operation line, 64 KiB set line, 16 MiB set request) are
// tested in WireGuardUAPITests (ConnectionTests).

#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization
import WireGuardUAPI
import WireGuardUAPIServer
import XCTest

final class UAPIServerBoundsTests: XCTestCase {
    var directory = ""

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "wub-\(getpid())-\(UInt32.random(in: 0...UInt32.max))/run/wireguard"
    }

    override func tearDownWithError() throws {
        let top = (directory as NSString).deletingLastPathComponent
        try? FileManager.default.removeItem(atPath: (top as NSString).deletingLastPathComponent)
    }

    private func connectRaw(_ path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in raw.copyBytes(from: Array(path.utf8) + [0]) }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else {
            close(fd)
            throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
        }
        return fd
    }

    /// Whether the server closes `fd` within `seconds` (reads and discards anything it sends).
    private func closedByServer(_ fd: Int32, within seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        var buffer = [UInt8](repeating: 0, count: 1024)
        while Date() < deadline {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 50) > 0 else { continue }
            if recv(fd, &buffer, buffer.count, 0) <= 0 { return true }
        }
        return false
    }

    private func start(maximumConnections: Int, idleTimeoutMilliseconds: Int) throws -> UAPIServer {
        let listener = try UAPIListener.open(interfaceName: "wub0", directory: directory)
        let server = UAPIServer(listener: listener, handler: FakeDevice(), maximumConnections: maximumConnections,
                                idleTimeoutMilliseconds: idleTimeoutMilliseconds)
        server.start()
        return server
    }

    func testConnectionsOverTheCapAreClosedAtAcceptAndWgWorksOnceOneFrees() throws {
        let server = try start(maximumConnections: 4, idleTimeoutMilliseconds: 60_000)
        defer { server.stop() }
        let path = server.listener.path
        var held = try (0..<4).map { _ in try connectRaw(path) }
        defer { for fd in held { close(fd) } }
        let deadline = Date().addingTimeInterval(5)
        while server.openConnections < 4, Date() < deadline { usleep(10_000) }
        XCTAssertEqual(server.openConnections, 4)
        for _ in 0..<3 {
            let fd = try connectRaw(path)
            XCTAssertTrue(closedByServer(fd, within: 3), "a connection over the cap stayed open")
            close(fd)
        }
        XCTAssertEqual(server.refusedConnections, 3)
        close(held.removeFirst())
        let freed = Date().addingTimeInterval(5)
        while server.openConnections > 3, Date() < freed { usleep(10_000) }
        XCTAssertEqual(try exchange(path, "get=1\n\n"), "errno=0\n\n")
    }

    func testSilentAndDribblingConnectionsAreClosedAfterTheIdleTimeout() throws {
        let server = try start(maximumConnections: 64, idleTimeoutMilliseconds: 500)
        defer { server.stop() }
        let path = server.listener.path
        let silent = try (0..<8).map { _ in try connectRaw(path) }
        defer { for fd in silent { close(fd) } }
        // A set request that stops half-way.
        let stalled = try connectRaw(path)
        defer { close(stalled) }
        _ = Array("set=1\nlisten_port=".utf8).withUnsafeBytes { send(stalled, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        let started = Date()
        for fd in silent + [stalled] { XCTAssertTrue(closedByServer(fd, within: 5), "an idle UAPI connection stayed open") }
        XCTAssertLessThan(Date().timeIntervalSince(started), 4)
        XCTAssertGreaterThanOrEqual(server.timedOutConnections, 9)
        // The socket still answers.
        XCTAssertEqual(try exchange(path, "get=1\n\n"), "errno=0\n\n")
    }
}
