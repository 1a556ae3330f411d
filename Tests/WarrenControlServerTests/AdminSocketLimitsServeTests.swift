// `listeners.admin` in serve's YAML file bounds the admin socket (issue 14 point 1): its cap closes the excess at
// accept and its handshake timeout closes silent connections, while the CLI still gets through; a bad value is
// refused at start, naming the key.

import Foundation
import Glibc
import XCTest

final class AdminSocketLimitsServeTests: XCTestCase {
    func testListenersAdminBoundsTheAdminSocket() throws {
        let served = try ServedControl(prefix: "wab-adminsock", config: """
            derp:
              enabled: false
            listeners:
              admin: {max_connections: 3, handshake_timeout: 1s, idle_timeout: 1s}

            """)
        defer { served.stop() }
        let path = served.stateDir + "/admin.sock"
        let held = try (0..<3).map { _ in try BoundsProbe.unix(path: path) }
        usleep(200_000)
        let extra = try BoundsProbe.unix(path: path)
        XCTAssertTrue(extra.isClosed(within: 0.5), "a connection over listeners.admin.max_connections stayed open")
        let started = Date()
        for probe in held { XCTAssertTrue(probe.isClosed(within: 5), "a silent admin connection stayed open") }
        let took = Date().timeIntervalSince(started)
        XCTAssertLessThan(took, 4, "silent admin connections closed after \(took) s with handshake_timeout 1s")
        // The CLI works once they are gone.
        try served.cli(["users", "create", "after"])
    }

    func testABadAdminListenerValueIsRefusedNamingTheKey() throws {
        let binary = try ServedControl.binary()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("wab-adminbad-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try "listeners:\n  admin:\n    max_connections: -1\n".write(toFile: directory + "/c.yaml", atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["serve", "--state-dir", directory + "/state", "--listen", "127.0.0.1:0", "--metrics-listen", "off",
                             "--config", directory + "/c.yaml"]
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let data = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        XCTAssertEqual(process.terminationStatus, 2, text)
        XCTAssertTrue(text.contains("listeners.admin.max_connections"), text)
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory + "/state"))
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
