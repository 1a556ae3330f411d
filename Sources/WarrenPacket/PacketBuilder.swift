// Builders of well-formed IPv4/IPv6 packets with TCP, UDP and ICMP payloads and correct
// checksums, for tests and for synthesising replies. Not on any hot path: they allocate.

public enum PacketBuilder {
    // MARK: IP

    /// An IPv4 packet around `payload`, with the header checksum filled in.
    /// `options` is padded with zeros to a multiple of 4 bytes (at most 40).
    public static func ipv4(src: IPAddress, dst: IPAddress, proto: IPProtocol, payload: [UInt8], ttl: UInt8 = 64,
                            identification: UInt16 = 0, dontFragment: Bool = false, moreFragments: Bool = false,
                            fragmentOffset: UInt16 = 0, typeOfService: UInt8 = 0, options: [UInt8] = []) -> [UInt8] {
        precondition(src.version == .v4 && dst.version == .v4, "IPv4 packet needs IPv4 addresses")
        var paddedOptions = options
        while paddedOptions.count % 4 != 0 { paddedOptions.append(0) }
        precondition(paddedOptions.count <= 40, "at most 40 bytes of IPv4 options")
        let headerLength = 20 + paddedOptions.count
        let total = headerLength + payload.count
        precondition(total <= 0xFFFF, "IPv4 packet too long")
        let flags: UInt16 = (dontFragment ? 0x4000 : 0) | (moreFragments ? 0x2000 : 0) | (fragmentOffset & 0x1FFF)
        var header: [UInt8] = [0x40 | UInt8(headerLength / 4), typeOfService]
        header += be16(UInt16(total)) + be16(identification) + be16(flags)
        header += [ttl, proto.rawValue, 0, 0]
        header += src.bytes + dst.bytes + paddedOptions
        let checksum = header.withUnsafeBytes { IPv4Header.computeChecksum(header: $0) }
        header[10] = UInt8(checksum >> 8)
        header[11] = UInt8(checksum & 0xFF)
        return header + payload
    }

    /// An IPv6 packet. `extensionHeaders` are placed in order between the fixed header and the
    /// payload; the first one's type is `nextHeader`, each carries its own Next Header field.
    public static func ipv6(src: IPAddress, dst: IPAddress, nextHeader: IPProtocol, payload: [UInt8],
                            hopLimit: UInt8 = 64, trafficClass: UInt8 = 0, flowLabel: UInt32 = 0) -> [UInt8] {
        precondition(src.version == .v6 && dst.version == .v6, "IPv6 packet needs IPv6 addresses")
        precondition(payload.count <= 0xFFFF, "IPv6 payload too long")
        let first = UInt32(6) << 28 | UInt32(trafficClass) << 20 | (flowLabel & 0xF_FFFF)
        var header = be32(first) + be16(UInt16(payload.count)) + [nextHeader.rawValue, hopLimit]
        header += src.bytes + dst.bytes
        return header + payload
    }

    /// A Hop-by-Hop, Routing or Destination Options header: Next Header, Hdr Ext Len, `data`
    /// padded with zeros (Pad1/PadN-compatible for options headers) to a multiple of 8 bytes.
    public static func ipv6OptionsHeader(nextHeader: IPProtocol, data: [UInt8] = []) -> [UInt8] {
        var body = data
        while (body.count + 2) % 8 != 0 { body.append(0) }
        let units = (body.count + 2) / 8 - 1
        precondition(units <= 255, "extension header too long")
        return [nextHeader.rawValue, UInt8(units)] + body
    }

    /// An IPv6 Fragment header (8 bytes).
    public static func ipv6FragmentHeader(nextHeader: IPProtocol, offset: UInt16, moreFragments: Bool,
                                          identification: UInt32) -> [UInt8] {
        [nextHeader.rawValue, 0] + be16(offset << 3 | (moreFragments ? 1 : 0)) + be32(identification)
    }

    /// An IPv4 or IPv6 packet chosen by the addresses' version.
    public static func ip(src: IPAddress, dst: IPAddress, proto: IPProtocol, payload: [UInt8]) -> [UInt8] {
        src.version == .v4
            ? ipv4(src: src, dst: dst, proto: proto, payload: payload)
            : ipv6(src: src, dst: dst, nextHeader: proto, payload: payload)
    }

    // MARK: Transport segments (checksummed over the pseudo-header)

    public static func tcpSegment(src: IPAddress, dst: IPAddress, srcPort: UInt16, dstPort: UInt16, flags: TCPFlags,
                                  sequence: UInt32 = 1, acknowledgment: UInt32 = 0, window: UInt16 = 65535,
                                  options: [UInt8] = [], payload: [UInt8] = []) -> [UInt8] {
        var paddedOptions = options
        while paddedOptions.count % 4 != 0 { paddedOptions.append(1) }  // NOP padding
        precondition(paddedOptions.count <= 40, "at most 40 bytes of TCP options")
        let headerLength = 20 + paddedOptions.count
        var segment = be16(srcPort) + be16(dstPort) + be32(sequence) + be32(acknowledgment)
        segment += [UInt8(headerLength / 4) << 4, flags.rawValue] + be16(window) + [0, 0, 0, 0]
        segment += paddedOptions + payload
        let checksum = transportChecksum(src: src, dst: dst, proto: .tcp, segment: segment)
        segment[16] = UInt8(checksum >> 8)
        segment[17] = UInt8(checksum & 0xFF)
        return segment
    }

    public static func udpDatagram(src: IPAddress, dst: IPAddress, srcPort: UInt16, dstPort: UInt16,
                                   payload: [UInt8] = []) -> [UInt8] {
        var datagram = be16(srcPort) + be16(dstPort) + be16(UInt16(8 + payload.count)) + [0, 0] + payload
        var checksum = transportChecksum(src: src, dst: dst, proto: .udp, segment: datagram)
        if checksum == 0 { checksum = 0xFFFF }  // RFC 768: zero means "no checksum"
        datagram[6] = UInt8(checksum >> 8)
        datagram[7] = UInt8(checksum & 0xFF)
        return datagram
    }

    /// An ICMP message: type, code, checksum, then `body` (the 4 bytes of the rest of the
    /// header and any data). ICMPv6 checksums cover the pseudo-header; ICMPv4 ones do not.
    public static func icmpMessage(src: IPAddress, dst: IPAddress, type: UInt8, code: UInt8, body: [UInt8]) -> [UInt8] {
        var message = [type, code, 0, 0] + body
        let checksum: UInt16
        if src.version == .v6 {
            checksum = transportChecksum(src: src, dst: dst, proto: .icmpv6, segment: message)
        } else {
            var sum = InternetChecksum()
            sum.add(message)
            checksum = sum.checksum
        }
        message[2] = UInt8(checksum >> 8)
        message[3] = UInt8(checksum & 0xFF)
        return message
    }

    // MARK: Whole packets

    public static func tcp(src: IPAddress, dst: IPAddress, srcPort: UInt16, dstPort: UInt16, flags: TCPFlags,
                           payload: [UInt8] = []) -> [UInt8] {
        ip(src: src, dst: dst, proto: .tcp,
           payload: tcpSegment(src: src, dst: dst, srcPort: srcPort, dstPort: dstPort, flags: flags, payload: payload))
    }

    public static func udp(src: IPAddress, dst: IPAddress, srcPort: UInt16, dstPort: UInt16,
                           payload: [UInt8] = []) -> [UInt8] {
        ip(src: src, dst: dst, proto: .udp,
           payload: udpDatagram(src: src, dst: dst, srcPort: srcPort, dstPort: dstPort, payload: payload))
    }

    /// An ICMP echo request or reply of the addresses' version.
    public static func icmpEcho(src: IPAddress, dst: IPAddress, reply: Bool = false, identifier: UInt16 = 1,
                                sequence: UInt16 = 1, payload: [UInt8] = []) -> [UInt8] {
        let v4 = src.version == .v4
        let type = reply ? (v4 ? ICMPMessage.v4EchoReply : ICMPMessage.v6EchoReply)
                         : (v4 ? ICMPMessage.v4EchoRequest : ICMPMessage.v6EchoRequest)
        let message = icmpMessage(src: src, dst: dst, type: type, code: 0,
                                  body: be16(identifier) + be16(sequence) + payload)
        return ip(src: src, dst: dst, proto: v4 ? .icmpv4 : .icmpv6, payload: message)
    }

    /// An ICMP error (destination unreachable, time exceeded, ...) quoting `invoking`.
    /// `rest` is the 4-byte field after the checksum (unused, MTU or pointer).
    public static func icmpError(src: IPAddress, dst: IPAddress, type: UInt8, code: UInt8 = 0,
                                 rest: UInt32 = 0, invoking: [UInt8]) -> [UInt8] {
        let message = icmpMessage(src: src, dst: dst, type: type, code: code, body: be32(rest) + invoking)
        return ip(src: src, dst: dst, proto: src.version == .v4 ? .icmpv4 : .icmpv6, payload: message)
    }

    // MARK: Helpers

    static func transportChecksum(src: IPAddress, dst: IPAddress, proto: IPProtocol, segment: [UInt8]) -> UInt16 {
        var sum = InternetChecksum()
        sum.addPseudoHeader(source: src, destination: dst, protocol: proto, length: segment.count)
        sum.add(segment)
        return sum.checksum
    }

    static func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xFF)] }
    static func be32(_ v: UInt32) -> [UInt8] {
        [UInt8(v >> 24), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)]
    }
}

/// Checks of transport checksums over a whole packet (for tests and diagnostics).
public enum PacketChecksums {
    /// Whether the TCP, UDP or ICMP checksum of an unfragmented packet is correct; nil when the
    /// packet does not parse, is a fragment, or carries another protocol. A UDP checksum of 0
    /// over IPv4 means "not computed" and counts as valid.
    public static func transportChecksumIsValid(_ packet: [UInt8]) -> Bool? {
        packet.withUnsafeBytes { buffer -> Bool? in
            guard let summary = PacketSummary(parsing: buffer), summary.fragment == .unfragmented else { return nil }
            let start = summary.length - summary.transportLength
            let segment = buffer.slice(start..<summary.length)
            var sum = InternetChecksum()
            switch summary.proto {
            case .tcp, .udp:
                if summary.proto == .udp, summary.version == .v4, segment.u16(6) == 0 { return true }
                sum.addPseudoHeader(source: summary.src, destination: summary.dst, protocol: summary.proto,
                                    length: segment.count)
            case .icmpv6 where summary.version == .v6:
                sum.addPseudoHeader(source: summary.src, destination: summary.dst, protocol: .icmpv6,
                                    length: segment.count)
            case .icmpv4 where summary.version == .v4:
                break
            default:
                return nil
            }
            sum.add(segment)
            return sum.verifies
        }
    }
}
