#if os(Linux)
import Foundation
import Glibc
import Synchronization
import WarrenPacket

/// TSMP, Tailscale's message protocol inside WireGuard (IP protocol 99), its ping and pong
/// (tailscale/tailscale:net/packet/tsmp.go): a ping is 'p' and 8 opaque bytes; the pong is 'o', the same
/// 8 bytes and the responder's PeerAPI port (2 bytes, big-endian; 0 when it has none).
///
/// Both go through the system's stack on raw sockets (root), so that they cross the TUN device and the
/// tunnel as any packet to a peer's tailnet address does.
public enum TSMP {
    public static let ipProtocol: Int32 = 99
    public static let ping = UInt8(ascii: "p")
    public static let pong = UInt8(ascii: "o")

    /// Sends one TSMP ping to `address` and waits up to `timeoutMilliseconds` for the pong that carries
    /// `data` back. Returns the round trip in nanoseconds, or nil on timeout.
    public static func ping(_ address: IPAddress, data: [UInt8], timeoutMilliseconds: Int32) throws(SystemError) -> UInt64? {
        precondition(data.count == 8)
        let socket = try RawSocket(family: address.version)
        var start = timespec()
        clock_gettime(CLOCK_MONOTONIC, &start)
        try socket.send([ping] + data, to: address)
        var left = timeoutMilliseconds
        while left > 0 {
            let received = try socket.receive(timeoutMilliseconds: left)
            var now = timespec()
            clock_gettime(CLOCK_MONOTONIC, &now)
            let elapsed = UInt64(now.tv_sec - start.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec) &- UInt64(start.tv_nsec)
            left = timeoutMilliseconds - Int32(clamping: elapsed / 1_000_000)
            guard let (source, body) = received else { return nil }
            if source == address, body.count >= 9, body[0] == pong, Array(body[1..<9]) == data { return elapsed }
        }
        return nil
    }
}

/// A raw IP socket of protocol 99, for one address family (used by one thread at a time).
final class RawSocket: @unchecked Sendable {
    let fd: Int32
    let family: IPVersion

    init(family: IPVersion) throws(SystemError) {
        self.family = family
        fd = Glibc.socket(family == .v6 ? AF_INET6 : AF_INET, Int32(SOCK_RAW.rawValue), TSMP.ipProtocol)
        guard fd >= 0 else { throw SystemError("socket(raw, protocol 99)", errno: errno) }
    }

    deinit { Glibc.close(fd) }

    func send(_ body: [UInt8], to address: IPAddress) throws(SystemError) {
        let sent: Int = try withSocketAddress(address) { (sa, length) throws(SystemError) -> Int in
            body.withUnsafeBytes { Glibc.sendto(fd, $0.baseAddress, $0.count, 0, sa, length) }
        }
        guard sent == body.count else { throw SystemError("sendto(TSMP to \(address))", errno: errno) }
    }

    /// The next datagram's source and TSMP body (an IPv4 raw socket hands over the IP header too; it is
    /// skipped), or nil after `timeoutMilliseconds` without one.
    func receive(timeoutMilliseconds: Int32) throws(SystemError) -> (IPAddress, [UInt8])? {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        while true {
            let ready = poll(&pfd, 1, timeoutMilliseconds)
            if ready < 0 {
                if errno == EINTR { continue }
                throw SystemError("poll(TSMP)", errno: errno)
            }
            if ready == 0 { return nil }
            break
        }
        var buffer = [UInt8](repeating: 0, count: 2048)
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let n = buffer.withUnsafeMutableBytes { b in
            withUnsafeMutablePointer(to: &storage) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.recvfrom(fd, b.baseAddress, b.count, 0, $0, &length) }
            }
        }
        guard n > 0 else { return nil }
        var source: IPAddress
        var body: ArraySlice<UInt8> = buffer[0..<n]
        if family == .v4 {
            guard n >= 20 else { return nil }
            let headerLength = Int(buffer[0] & 0x0F) * 4
            guard n >= headerLength, let s = IPAddress(bytes: buffer[12..<16]) else { return nil }
            source = s
            body = buffer[headerLength..<n]
        } else {
            source = withUnsafeBytes(of: &storage) { raw in
                IPAddress(bytes: Array(raw[8..<24])) ?? .v6(0, 0)
            }
        }
        return (source, Array(body))
    }
}

/// Answers TSMP pings from the tailnet (what tailscaled does in its TUN wrapper), on raw sockets: a
/// thread per address family, until `stop()`.
public final class TSMPResponder: @unchecked Sendable {
    private let stopped = Atomic<Bool>(false)
    private var threads: [Thread] = []
    /// Who may be answered: sources inside these prefixes (the tailnet's ranges).
    private let sources: [IPPrefix]

    public init(sources: [IPPrefix]) { self.sources = sources }

    /// Opens the sockets and starts answering. Throws when no raw socket can be opened (not root).
    public func start() throws(SystemError) {
        var sockets: [RawSocket] = []
        for family in [IPVersion.v4, .v6] {
            if let s = try? RawSocket(family: family) { sockets.append(s) }
        }
        guard !sockets.isEmpty else { throw SystemError("socket(raw, protocol 99)", errno: EPERM) }
        for socket in sockets {
            let thread = Thread { [self] in serve(socket) }
            thread.name = "tsmp-\(socket.family == .v4 ? 4 : 6)"
            threads.append(thread)
            thread.start()
        }
    }

    private func serve(_ socket: RawSocket) {
        while !stopped.load(ordering: .relaxed) {
            guard let received = try? socket.receive(timeoutMilliseconds: 500), let (source, body) = received as (IPAddress, [UInt8])? else {
                continue
            }
            guard body.count >= 9, body[0] == TSMP.ping, sources.contains(where: { $0.contains(source) }) else { continue }
            try? socket.send([TSMP.pong] + Array(body[1..<9]) + [0, 0], to: source)
        }
    }

    /// Stops answering (the threads end within half a second).
    public func stop() { stopped.store(true, ordering: .relaxed) }
}
#endif
