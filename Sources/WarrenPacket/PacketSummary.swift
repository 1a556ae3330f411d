// One parsed summary of an IP packet: what the packet filter and the WireGuard device's
// source-address check need, read without allocating.

/// The addresses, protocol, ports, TCP flags, ICMP type and fragment position of one packet.
///
/// Parsing returns nil for anything malformed: a bad version or header length, a length
/// field longer than the buffer, an IPv6 extension-header chain that runs off the end, or a
/// packet that is not a later fragment but lacks a whole transport header for its protocol
/// (ICMP 4 bytes, IGMP 8, TCP 20, UDP 8, SCTP 12, TSMP 7). The last rule stops the classic
/// tiny-first-fragment trick of hiding the ports from the filter (RFC 1858).
public struct PacketSummary: Hashable, Sendable {
    public enum FragmentPosition: Hashable, Sendable {
        case unfragmented
        /// Offset 0 with More Fragments set: carries the transport header.
        case first
        /// A fragment at `offset` 8-byte blocks: no transport header, so no ports.
        case later(offset: UInt16)
    }

    public var version: IPVersion
    /// The upper-layer protocol (for IPv6 after walking extension headers).
    public var proto: IPProtocol
    public var src: IPAddress
    public var dst: IPAddress
    /// Zero where the protocol has no ports (ICMP and others) or for a later fragment.
    public var srcPort: UInt16
    public var dstPort: UInt16
    public var tcpFlags: TCPFlags
    public var icmpType: UInt8
    public var icmpCode: UInt8
    /// Echo identifier of an ICMP echo request or reply.
    public var echoIdentifier: UInt16?
    public var fragment: FragmentPosition
    /// IPv6 only: the packet has Hop-by-Hop, Routing or Destination Options headers.
    public var hasIPv6OptionHeaders: Bool
    /// Bytes of the IP datagram (header, extension headers and payload).
    public var length: Int
    /// Bytes from the start of the transport header to the end of the datagram (0 for a later fragment).
    public var transportLength: Int

    public init(version: IPVersion, proto: IPProtocol, src: IPAddress, dst: IPAddress, srcPort: UInt16 = 0,
                dstPort: UInt16 = 0, tcpFlags: TCPFlags = [], icmpType: UInt8 = 0, icmpCode: UInt8 = 0,
                echoIdentifier: UInt16? = nil, fragment: FragmentPosition = .unfragmented,
                hasIPv6OptionHeaders: Bool = false, length: Int = 0, transportLength: Int = 0) {
        self.version = version
        self.proto = proto
        self.src = src
        self.dst = dst
        self.srcPort = srcPort
        self.dstPort = dstPort
        self.tcpFlags = tcpFlags
        self.icmpType = icmpType
        self.icmpCode = icmpCode
        self.echoIdentifier = echoIdentifier
        self.fragment = fragment
        self.hasIPv6OptionHeaders = hasIPv6OptionHeaders
        self.length = length
        self.transportLength = transportLength
    }

    public var isFragment: Bool { fragment != .unfragmented }
    public var isFirstFragment: Bool { fragment == .first }
    public var isLaterFragment: Bool {
        if case .later = fragment { return true }
        return false
    }

    /// The ICMP protocol of this packet's IP version.
    public var isICMP: Bool { proto == (version == .v4 ? .icmpv4 : .icmpv6) }

    /// An ICMP error message (with its full 8-byte header) of this packet's IP version.
    public var isICMPError: Bool {
        isICMP && !isLaterFragment && transportLength >= 8 && ICMPMessage.isError(type: icmpType, version: version)
    }

    /// An ICMP echo reply, code 0, with its full 8-byte header.
    public var isICMPEchoReply: Bool {
        isICMP && !isLaterFragment && transportLength >= 8 && icmpCode == 0
            && ICMPMessage.isEchoReply(type: icmpType, version: version)
    }

    /// An ICMP echo request, code 0, with its full 8-byte header.
    public var isICMPEchoRequest: Bool {
        isICMP && !isLaterFragment && transportLength >= 8 && icmpCode == 0
            && ICMPMessage.isEchoRequest(type: icmpType, version: version)
    }

    // MARK: Parsing

    public init?(parsing bytes: [UInt8]) {
        guard let parsed = bytes.withUnsafeBytes({ PacketSummary(parsing: $0) }) else { return nil }
        self = parsed
    }

    public init?(parsing bytes: ArraySlice<UInt8>) {
        guard let parsed = bytes.withUnsafeBytes({ PacketSummary(parsing: $0) }) else { return nil }
        self = parsed
    }

    public init?(parsing buffer: UnsafeRawBufferPointer) {
        guard let first = buffer.first else { return nil }
        switch first >> 4 {
        case 4:
            guard let ip = IPv4Header(buffer) else { return nil }
            let fragmentOffset = ip.fragmentOffset
            self.init(version: .v4, proto: ip.protocolNumber, src: ip.source, dst: ip.destination,
                      length: ip.totalLength)
            if fragmentOffset != 0 {
                fragment = .later(offset: fragmentOffset)
                return
            }
            fragment = ip.moreFragments ? .first : .unfragmented
            // TSMP is never fragmented.
            if proto == .tsmp && ip.moreFragments { return nil }
            guard readTransport(buffer.slice(ip.headerLength..<ip.totalLength)) else { return nil }
        case 6:
            guard let ip = IPv6Header(buffer), let chain = ip.walkExtensionHeaders() else { return nil }
            self.init(version: .v6, proto: chain.upperProtocol, src: ip.source, dst: ip.destination,
                      hasIPv6OptionHeaders: chain.optionHeaderCount > 0, length: ip.totalLength)
            if let header = chain.fragment {
                if header.offset != 0 {
                    fragment = .later(offset: header.offset)
                    return
                }
                fragment = header.moreFragments ? .first : .unfragmented
            }
            guard readTransport(buffer.slice(chain.upperOffset..<ip.totalLength)) else { return nil }
        default:
            return nil
        }
    }

    /// Reads ports, flags and ICMP fields from `transport`; false if its header is incomplete.
    private mutating func readTransport(_ transport: UnsafeRawBufferPointer) -> Bool {
        transportLength = transport.count
        switch proto {
        case .tcp:
            guard let tcp = TCPHeader(transport) else { return false }
            srcPort = tcp.sourcePort
            dstPort = tcp.destinationPort
            tcpFlags = tcp.flags
        case .udp:
            guard let udp = UDPHeader(transport) else { return false }
            srcPort = udp.sourcePort
            dstPort = udp.destinationPort
        case .sctp:
            // SCTP common header (RFC 9260 section 3.1): ports, verification tag, checksum.
            guard transport.count >= 12 else { return false }
            srcPort = transport.u16(0)
            dstPort = transport.u16(2)
        case .igmp:
            guard version == .v4, transport.count >= 8 else { return version != .v4 }
        case .tsmp:
            guard transport.count >= 7 else { return false }
        case IPProtocol(255):
            // Reserved; never seen in honest traffic.
            return false
        default:
            if isICMP {
                guard let icmp = ICMPHeader(transport, version: version) else { return false }
                icmpType = icmp.type
                icmpCode = icmp.code
                echoIdentifier = icmp.echoIdentifier
            }
        }
        return true
    }
}
