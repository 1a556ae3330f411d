// Reverse-mapping names (RFC 1035 §3.5 in-addr.arpa, RFC 3596 §2.5 ip6.arpa) and the tailnet's
// fixed addresses.

import WarrenPacket

public enum ReverseName {
    static let inAddrArpa = try! DNSName("in-addr.arpa.")
    static let ip6Arpa = try! DNSName("ip6.arpa.")

    /// The address a full reverse name stands for ("4.3.2.1.in-addr.arpa." is 1.2.3.4; 32 nibble
    /// labels under ip6.arpa. make an IPv6 address); nil for anything else, partial names included.
    public static func address(of name: DNSName) -> IPAddress? {
        let isV4 = name.isSubdomain(of: inAddrArpa)
        guard isV4 || name.isSubdomain(of: ip6Arpa) else { return nil }
        let labels = name.labels
        if labels.count == 6, isV4 {
            var value: UInt32 = 0
            for label in labels[0..<4].reversed() {
                guard (1...3).contains(label.count), label.allSatisfy({ (48...57).contains($0) }),
                      label.count == 1 || label.first != 48 else { return nil }
                let octet = label.reduce(0) { $0 * 10 + UInt32($1 - 48) }
                guard octet <= 255 else { return nil }
                value = value << 8 | octet
            }
            return .v4(value)
        }
        if labels.count == 34, !isV4 {
            var hi: UInt64 = 0, lo: UInt64 = 0
            for (index, label) in labels[0..<32].reversed().enumerated() {
                guard label.count == 1, let nibble = hexValue(label.first!) else { return nil }
                if index < 16 { hi = hi << 4 | UInt64(nibble) } else { lo = lo << 4 | UInt64(nibble) }
            }
            return .v6(hi, lo)
        }
        return nil
    }

    /// The full reverse name of `address`.
    public static func name(of address: IPAddress) -> DNSName {
        let digits = Array("0123456789abcdef".utf8)
        var labels: [[UInt8]] = []
        switch address {
        case .v4(let v):
            for shift in stride(from: 0, through: 24, by: 8) { labels.append(Array(String(v >> UInt32(shift) & 0xFF).utf8)) }
            labels += [Array("in-addr".utf8), Array("arpa".utf8)]
        case .v6:
            for byte in address.bytes.reversed() {
                labels.append([digits[Int(byte & 0x0F)]])
                labels.append([digits[Int(byte >> 4)]])
            }
            labels += [Array("ip6".utf8), Array("arpa".utf8)]
        }
        return try! DNSName(labels: labels)
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case 48...57: return c - 48
        case 97...102: return c - 87
        case 65...70: return c - 55
        default: return nil
        }
    }
}

/// The tailnet's well-known addresses and ranges.
public enum TailnetAddresses {
    /// 100.100.100.100, where MagicDNS listens.
    public static let serviceIPv4 = IPAddress("100.100.100.100")!
    /// fd7a:115c:a1e0::53, where MagicDNS listens over IPv6.
    public static let serviceIPv6 = IPAddress("fd7a:115c:a1e0::53")!
    /// 100.64.0.0/10 (CGNAT), the range node addresses come from.
    public static let ipv4Range = IPPrefix("100.64.0.0/10")!
    /// fd7a:115c:a1e0::/48, the tailnet's IPv6 ULA range.
    public static let ipv6Range = IPPrefix("fd7a:115c:a1e0::/48")!
    /// fd7a:115c:a1e0:ab12:4843:cd96:6200::/104: IPv6 forms of IPv4 node addresses (the low 24 bits
    /// are the IPv4 address's, whose first octet is 100).
    public static let fourToSixRange = IPPrefix("fd7a:115c:a1e0:ab12:4843:cd96:6200::/104")!

    /// The IPv4 node address an address of `fourToSixRange` stands for.
    public static func ipv4(from6 address: IPAddress) -> IPAddress? {
        guard fourToSixRange.contains(address), case .v6(_, let lo) = address else { return nil }
        return .v4(100 << 24 | UInt32(truncatingIfNeeded: lo) & 0x00FF_FFFF)
    }
}
