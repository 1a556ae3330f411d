/// An IANA IP protocol number (IPv4 Protocol field, IPv6 Next Header).
public struct IPProtocol: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8

    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public init(_ rawValue: UInt8) { self.rawValue = rawValue }

    /// IPv6 Hop-by-Hop Options (RFC 8200 section 4.3); in IPv4 the number is unassigned in practice.
    public static let hopByHop = IPProtocol(0)
    public static let icmpv4 = IPProtocol(1)
    public static let igmp = IPProtocol(2)
    public static let tcp = IPProtocol(6)
    public static let udp = IPProtocol(17)
    /// IPv6 Routing header (RFC 8200 section 4.4).
    public static let ipv6Routing = IPProtocol(43)
    /// IPv6 Fragment header (RFC 8200 section 4.5).
    public static let ipv6Fragment = IPProtocol(44)
    public static let icmpv6 = IPProtocol(58)
    /// IPv6 No Next Header.
    public static let ipv6NoNextHeader = IPProtocol(59)
    /// IPv6 Destination Options (RFC 8200 section 4.6).
    public static let ipv6DestinationOptions = IPProtocol(60)
    /// Tailscale's own message protocol between nodes (number 99, "any private encryption scheme").
    public static let tsmp = IPProtocol(99)
    public static let sctp = IPProtocol(132)

    public var description: String {
        switch rawValue {
        case 1: return "ICMPv4"
        case 2: return "IGMP"
        case 6: return "TCP"
        case 17: return "UDP"
        case 58: return "ICMPv6"
        case 99: return "TSMP"
        case 132: return "SCTP"
        default: return "proto-\(rawValue)"
        }
    }
}

/// TCP header flags (RFC 9293 section 3.1; CWR and ECE from RFC 3168).
public struct TCPFlags: OptionSet, Hashable, Sendable {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let fin = TCPFlags(rawValue: 0x01)
    public static let syn = TCPFlags(rawValue: 0x02)
    public static let rst = TCPFlags(rawValue: 0x04)
    public static let psh = TCPFlags(rawValue: 0x08)
    public static let ack = TCPFlags(rawValue: 0x10)
    public static let urg = TCPFlags(rawValue: 0x20)
    public static let ece = TCPFlags(rawValue: 0x40)
    public static let cwr = TCPFlags(rawValue: 0x80)

    /// SYN without ACK: the first packet of a new connection.
    public var isInitialSYN: Bool { rawValue & 0x12 == 0x02 }
}
