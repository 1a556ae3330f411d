#if os(Linux)
import Glibc
#else
import Darwin
#endif
import WarrenPacket

/// The host's interface addresses that a peer on the same network might reach: not loopback, not
/// link-local, not multicast, and not inside the tailnet's own ranges (those are our TUN's).
public enum LocalAddresses {
    public static let tailnetV4 = IPPrefix("100.64.0.0/10")!
    public static let tailnetV6 = IPPrefix("fd7a:115c:a1e0::/48")!

    /// Whether `address` may be offered to peers as a local endpoint.
    public static func isCandidate(_ address: IPAddress) -> Bool {
        if tailnetV4.contains(address) || tailnetV6.contains(address) { return false }
        switch address {
        case .v4(let v):
            let first = v >> 24
            if first == 127 || first == 0 || first >= 224 { return false }
            if v >> 16 == 0xA9FE { return false }  // 169.254/16
            return true
        case .v6(let hi, let lo):
            if hi == 0 && (lo == 0 || lo == 1) { return false }
            if hi >> 54 == 0x3FA { return false }  // fe80::/10
            if hi >> 56 == 0xFF { return false }   // multicast
            if hi == 0 && lo >> 32 == 0xFFFF { return false }  // v4-mapped
            return true
        }
    }

    /// The current candidate addresses of the host's interfaces that are up, sorted.
    public static func current() -> [IPAddress] {
        Array(Set(currentPrefixes().map(\.address))).sorted()
    }

    /// The candidate addresses of the host's interfaces that are up, each with its network's length
    /// (the interface's netmask), sorted: the networks the host sits on.
    public static func currentPrefixes() -> [IPPrefix] {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0, let first = list else { return [] }
        defer { freeifaddrs(list) }
        var out = Set<IPPrefix>()
        var cursor: UnsafeMutablePointer<ifaddrs>? = first
        while let entry = cursor {
            defer { cursor = entry.pointee.ifa_next }
            guard let sa = entry.pointee.ifa_addr, entry.pointee.ifa_flags & UInt32(IFF_UP) != 0 else { continue }
            var address: IPAddress?
            var bits = 0
            if let mask = entry.pointee.ifa_netmask {
                let bytes: [UInt8]
                switch Int32(mask.pointee.sa_family) {
                case AF_INET6:
                    bytes = mask.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { withUnsafeBytes(of: $0.pointee.sin6_addr) { Array($0) } }
                default:
                    bytes = mask.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { withUnsafeBytes(of: $0.pointee.sin_addr) { Array($0) } }
                }
                bits = bytes.reduce(0) { $0 + $1.nonzeroBitCount }
            }
            switch Int32(sa.pointee.sa_family) {
            case AF_INET:
                sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                    address = .v4(UInt32(bigEndian: sin.pointee.sin_addr.s_addr))
                }
            case AF_INET6:
                sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                    let bytes = withUnsafeBytes(of: sin6.pointee.sin6_addr) { Array($0) }
                    address = IPAddress(bytes: bytes)
                }
            default:
                break
            }
            if let address, isCandidate(address) {
                out.insert(IPPrefix(address: address, bits: min(bits == 0 ? address.bitCount : bits, address.bitCount))!)
            }
        }
        return out.sorted()
    }
}
