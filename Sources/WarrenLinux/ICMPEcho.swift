#if os(Linux)
import Glibc
import WarrenPacket

/// One ICMP (or ICMPv6) echo through the system's stack, on a raw socket (root): what `warren ping
/// --icmp` sends to a peer's tailnet address, so that the echo goes out through the TUN device and
/// the peer's own stack answers it, as `tailscale ping --icmp` checks.
public enum ICMPEcho {
    /// Sends one echo request to `address` and waits up to `timeoutMilliseconds` for its reply.
    /// Returns the round trip in nanoseconds, or nil on timeout.
    public static func ping(_ address: IPAddress, identifier: UInt16, sequence: UInt16, payload: [UInt8] = Array("warren".utf8),
                            timeoutMilliseconds: Int32) throws(SystemError) -> UInt64? {
        let v6 = address.version == .v6
        let fd = Glibc.socket(v6 ? AF_INET6 : AF_INET, Int32(SOCK_RAW.rawValue), v6 ? Int32(IPPROTO_ICMPV6) : Int32(IPPROTO_ICMP))
        guard fd >= 0 else { throw SystemError("socket(raw ICMP)", errno: errno) }
        defer { Glibc.close(fd) }
        // The request: type, code, checksum (the kernel fills ICMPv6's), identifier, sequence, payload.
        var message: [UInt8] = [v6 ? 128 : 8, 0, 0, 0, UInt8(identifier >> 8), UInt8(identifier & 0xFF),
                                UInt8(sequence >> 8), UInt8(sequence & 0xFF)] + payload
        if !v6 {
            var accumulator = InternetChecksum()
            accumulator.add(message)
            let sum = accumulator.checksum
            message[2] = UInt8(sum >> 8)
            message[3] = UInt8(sum & 0xFF)
        }
        var start = timespec()
        clock_gettime(CLOCK_MONOTONIC, &start)
        let sent: Int = try withSocketAddress(address) { (sa, length) throws(SystemError) -> Int in
            message.withUnsafeBytes { Glibc.sendto(fd, $0.baseAddress, $0.count, 0, sa, length) }
        }
        guard sent == message.count else { throw SystemError("sendto(ICMP echo to \(address))", errno: errno) }
        var buffer = [UInt8](repeating: 0, count: 1500)
        var left = timeoutMilliseconds
        while left > 0 {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&pfd, 1, left)
            var now = timespec()
            clock_gettime(CLOCK_MONOTONIC, &now)
            let elapsed = UInt64(now.tv_sec - start.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec) &- UInt64(start.tv_nsec)
            left = timeoutMilliseconds - Int32(clamping: elapsed / 1_000_000)
            if ready < 0 {
                if errno == EINTR { continue }
                throw SystemError("poll(ICMP)", errno: errno)
            }
            if ready == 0 { return nil }
            let n = buffer.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { continue }
            // A raw IPv4 socket hands over the IP header too; an ICMPv6 one only the message.
            var offset = 0
            if !v6 {
                guard n >= 20 else { continue }
                offset = Int(buffer[0] & 0x0F) * 4
                // Only replies from the address pinged.
                let source = IPAddress(bytes: buffer[12..<16])
                guard source == address else { continue }
            }
            guard n >= offset + 8 else { continue }
            let type = buffer[offset]
            let id = UInt16(buffer[offset + 4]) << 8 | UInt16(buffer[offset + 5])
            let seq = UInt16(buffer[offset + 6]) << 8 | UInt16(buffer[offset + 7])
            if type == (v6 ? 129 : 0) && id == identifier && seq == sequence { return elapsed }
        }
        return nil
    }
}

/// Calls `body` with `address` as a sockaddr (port 0: raw sockets have none).
func withSocketAddress<R>(_ address: IPAddress,
                          _ body: (UnsafePointer<sockaddr>, socklen_t) throws(SystemError) -> R) throws(SystemError) -> R {
    switch address {
    case .v4(let v):
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_addr.s_addr = v.bigEndian
        return try withUnsafePointer(to: &sin) { (p) throws(SystemError) -> R in
            try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sa) throws(SystemError) -> R in
                try body(sa, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
    case .v6:
        var sin6 = sockaddr_in6()
        sin6.sin6_family = sa_family_t(AF_INET6)
        let bytes = address.bytes
        withUnsafeMutableBytes(of: &sin6.sin6_addr) { raw in for i in 0..<16 { raw[i] = bytes[i] } }
        return try withUnsafePointer(to: &sin6) { (p) throws(SystemError) -> R in
            try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sa) throws(SystemError) -> R in
                try body(sa, socklen_t(MemoryLayout<sockaddr_in6>.size))
            }
        }
    }
}
#endif
