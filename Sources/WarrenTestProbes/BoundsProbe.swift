// Test support for listener bounds: a blocking client socket that connects, sends a little and waits (bounded)
// for the server to close, shared by the admin, metrics and serve tests. Never linked into a product.

import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A blocking client socket for listener-bound tests: connect, send, and wait (bounded) for the server to close.
public final class BoundsProbe {
    public let fd: Int32

    private init(fd: Int32) { self.fd = fd }

    deinit { close(fd) }

    public static func tcp(port: Int) throws -> BoundsProbe {
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

    public static func unix(path: String) throws -> BoundsProbe {
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

    public func send(_ text: String) {
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// Reads until the server closes or `seconds` pass; `closed` says which.
    public func waitClosed(within seconds: Double) -> (closed: Bool, text: String) {
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
    public func isClosed(within seconds: Double) -> Bool { waitClosed(within: seconds).closed }
}

public struct BoundsProbeError: Error, CustomStringConvertible { public var description: String }

/// Polls `condition` until it holds or `seconds` pass.
public func eventually(_ seconds: Double = 10, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        usleep(20_000)
    }
    return condition()
}
