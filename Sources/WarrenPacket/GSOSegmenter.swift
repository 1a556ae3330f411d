// Software segmentation of the GSO super-packets that a TUN device with TSO/USO offloads hands
// to user space: what a NIC would do on transmit (Linux: tcp_gso_segment, __udp_gso_segment).
//
// Per TCP segment (RFC 9293; Linux tcp_gso_segment and inet_gso_segment):
// - the IP and TCP headers are repeated; IPv4 Total Length / IPv6 Payload Length fit the segment;
// - the IPv4 Identification grows by one per segment (from the super-packet's) and the IPv4
//   header checksum is recomputed;
// - the TCP sequence number grows by the payload that went before;
// - FIN and PSH stay only on the last segment, CWR only on the first;
// - the TCP checksum is computed in full (pseudo-header, header, payload).
// Per UDP segment (gso_type UDP_L4): the UDP header is repeated with its Length, the checksum
// computed in full (0 sent as 0xFFFF, RFC 768), the IP header as for TCP.
//
// IPv4 options are copied with the header. IPv6 extension headers are not accepted: the
// transport header must follow the fixed header (Linux's TCP and UDP do not add any).

/// Splits GSO super-packets into wire-sized packets, and finishes partial checksums.
/// Writes only into memory the caller provides; allocates nothing.
public enum GSOSegmenter {
    /// Where the transport header starts and how long the repeated headers are.
    @usableFromInline
    struct Layout {
        var isV6: Bool
        var isTCP: Bool
        var transportStart: Int
        var headerLength: Int
    }

    /// The number of packets `segment` will produce for `packet` (the bytes after the
    /// virtio-net header). Throws what `segment` would throw for a malformed packet.
    public static func segmentCount(_ packet: UnsafeRawBufferPointer, header: VirtioNetHeader) throws(OffloadError) -> Int {
        guard header.gsoType != .none else { return 1 }
        let layout = try layout(packet, header)
        let payload = packet.count - layout.headerLength
        let size = Int(header.gsoSize)
        return payload == 0 ? 1 : (payload + size - 1) / size
    }

    /// The longest packet `segment` will produce (to size output slots): headers + gso_size.
    public static func maximumSegmentLength(_ packet: UnsafeRawBufferPointer, header: VirtioNetHeader) throws(OffloadError) -> Int {
        guard header.gsoType != .none else { return packet.count }
        let layout = try layout(packet, header)
        return min(packet.count, layout.headerLength + Int(header.gsoSize))
    }

    /// Cuts `packet` (an IP packet as read after its virtio-net `header`) into packets of at
    /// most gso_size payload bytes, each with complete headers and checksums.
    ///
    /// For each output packet `destination(index, length)` returns where to write its `length`
    /// bytes (or nil when there is no room: then `.outputTooSmall` is thrown). A packet without
    /// GSO (gso_type NONE) is copied once, its checksum finished if NEEDS_CSUM asks for it.
    /// Returns the number of packets written.
    public static func segment(_ packet: UnsafeRawBufferPointer, header: VirtioNetHeader,
                               into destination: (_ index: Int, _ length: Int) -> UnsafeMutableRawPointer?)
        throws(OffloadError) -> Int
    {
        try segment(packet, header: header, from: 0, stopWhenFull: false, into: destination)
    }

    /// Like `segment(_:header:into:)`, but starts at output packet `first` (0 at first; a later call
    /// resumes where an earlier one stopped) and stops without an error at the first nil from
    /// `destination`. Returns the index of the next packet to write: `segmentCount` when done.
    /// This lets a reader fill a fixed batch and continue the super-packet in the next batch.
    public static func segment(_ packet: UnsafeRawBufferPointer, header: VirtioNetHeader, resumingAt first: Int,
                               into destination: (_ index: Int, _ length: Int) -> UnsafeMutableRawPointer?)
        throws(OffloadError) -> Int
    {
        try segment(packet, header: header, from: first, stopWhenFull: true, into: destination)
    }

    @inline(__always)
    static func segment(_ packet: UnsafeRawBufferPointer, header: VirtioNetHeader, from first: Int, stopWhenFull: Bool,
                        into destination: (_ index: Int, _ length: Int) -> UnsafeMutableRawPointer?)
        throws(OffloadError) -> Int
    {
        guard let source = packet.baseAddress else { throw OffloadError(.malformedPacket, "empty packet") }
        guard first >= 0 else { throw OffloadError(.malformedPacket, "negative start \(first)") }
        if header.gsoType == .none {
            guard first == 0 else { throw OffloadError(.malformedPacket, "start \(first) past a single packet") }
            guard let out = destination(0, packet.count) else {
                if stopWhenFull { return 0 }
                throw OffloadError(.outputTooSmall, "no room")
            }
            out.copyMemory(from: source, byteCount: packet.count)
            if header.flags.contains(.needsChecksum) {
                try completeChecksum(UnsafeMutableRawBufferPointer(start: out, count: packet.count), header: header)
            }
            return 1
        }
        let layout = try layout(packet, header)
        let size = Int(header.gsoSize)
        let payloadLength = packet.count - layout.headerLength
        let isV6 = layout.isV6
        let t = layout.transportStart
        let h = layout.headerLength
        let firstID = isV6 ? 0 : FastChecksum.load16(source, at: 4)
        let firstSequence = layout.isTCP ? FastChecksum.load32(source, at: t + 4) : 0
        let tcpFlags: UInt8 = layout.isTCP ? source.load(fromByteOffset: t + 13, as: UInt8.self) : 0
        let ipHeaderLength = isV6 ? 40 : t
        // The pseudo-header's address part is the same for every segment.
        let addressSum = isV6 ? FastChecksum.sum(source + 8, count: 32) : FastChecksum.sum(source + 12, count: 8)
        let proto: UInt32 = layout.isTCP ? 6 : 17
        let checksumField = layout.isTCP ? 16 : 6

        let count = payloadLength == 0 ? 1 : (payloadLength + size - 1) / size
        guard first <= count else { throw OffloadError(.malformedPacket, "start \(first) past \(count) segments") }
        if first == count { return count }
        var index = first
        var offset = first * size
        repeat {
            let chunk = min(size, payloadLength - offset)
            let length = h + chunk
            guard let out = destination(index, length) else {
                if stopWhenFull { return index }
                throw OffloadError(.outputTooSmall, "no room for segment \(index)")
            }
            out.copyMemory(from: source, byteCount: h)
            (out + h).copyMemory(from: source + h + offset, byteCount: chunk)
            if isV6 {
                FastChecksum.store(UInt16(truncatingIfNeeded: length - 40), out, at: 4)
            } else {
                FastChecksum.store(UInt16(truncatingIfNeeded: length), out, at: 2)
                FastChecksum.store(firstID &+ UInt16(truncatingIfNeeded: index), out, at: 4)
                FastChecksum.store(0, out, at: 10)
                FastChecksum.store(FastChecksum.finish(FastChecksum.sum(out, count: ipHeaderLength)), out, at: 10)
            }
            let transport = out + t
            let transportLength = length - t
            if layout.isTCP {
                transport.storeBytes(of: (firstSequence &+ UInt32(truncatingIfNeeded: offset)).bigEndian,
                                     toByteOffset: 4, as: UInt32.self)
                var flags = tcpFlags
                if offset + chunk < payloadLength { flags &= ~0x09 }  // FIN, PSH: last segment only
                if offset > 0 { flags &= ~0x80 }  // CWR: first segment only
                transport.storeBytes(of: flags, toByteOffset: 13, as: UInt8.self)
            } else {
                FastChecksum.store(UInt16(truncatingIfNeeded: transportLength), transport, at: 4)
            }
            FastChecksum.store(0, transport, at: checksumField)
            var sum = FastChecksum.add(addressSum, proto)
            sum = FastChecksum.add(sum, UInt32(transportLength))
            sum = FastChecksum.add(sum, FastChecksum.sum(transport, count: h - t))
            sum = FastChecksum.add(sum, FastChecksum.sum(out + h, count: chunk))
            var checksum = FastChecksum.finish(sum)
            if !layout.isTCP && checksum == 0 { checksum = 0xFFFF }
            FastChecksum.store(checksum, transport, at: checksumField)
            index += 1
            offset += chunk
        } while offset < payloadLength
        return index
    }

    /// Finishes, in place, a checksum the kernel left undone (NEEDS_CSUM): the field at
    /// csum_start + csum_offset holds the pseudo-header sum; the checksum covers csum_start to the end.
    /// Does nothing without NEEDS_CSUM. Throws `.malformedPacket` when the offsets do not fit.
    public static func completeChecksum(_ packet: UnsafeMutableRawBufferPointer, header: VirtioNetHeader) throws(OffloadError) {
        guard header.flags.contains(.needsChecksum) else { return }
        let start = Int(header.checksumStart)
        let field = start + Int(header.checksumOffset)
        guard let p = packet.baseAddress, field + 2 <= packet.count else {
            throw OffloadError(.malformedPacket, "checksum at \(start)+\(header.checksumOffset) outside \(packet.count) bytes")
        }
        // The field's current content (the pseudo-header sum) is part of the sum.
        var checksum = FastChecksum.finish(FastChecksum.sum(p + start, count: packet.count - start))
        // UDP sends a computed 0 as 0xFFFF; the UDP checksum field sits at offset 6.
        if checksum == 0 && header.checksumOffset == 6 { checksum = 0xFFFF }
        FastChecksum.store(checksum, p, at: field)
    }

    @usableFromInline
    static func layout(_ packet: UnsafeRawBufferPointer, _ header: VirtioNetHeader) throws(OffloadError) -> Layout {
        let isTCP: Bool
        switch header.gsoType {
        case .tcpV4, .tcpV6: isTCP = true
        case .udpL4: isTCP = false
        case .none, .udpFragmentation: throw OffloadError(.unsupportedGSOType, "gso_type \(header.gsoType) cannot be segmented")
        }
        guard header.gsoSize > 0 else { throw OffloadError(.malformedPacket, "gso_size 0") }
        guard packet.count >= 20, packet.count <= 65535 + 40 else {
            throw OffloadError(.malformedPacket, "length \(packet.count)")
        }
        let version = packet[0] >> 4
        let isV6: Bool
        let transportStart: Int
        let proto: UInt8
        switch version {
        case 4:
            guard header.gsoType != .tcpV6 else { throw OffloadError(.malformedPacket, "TCPV6 GSO on an IPv4 packet") }
            isV6 = false
            transportStart = Int(packet[0] & 0x0F) * 4
            guard transportStart >= 20 else { throw OffloadError(.malformedPacket, "IHL below 5") }
            proto = packet[9]
            // Fragments cannot be segmented (MF set or a fragment offset).
            guard packet[6] & 0x3F == 0, packet[7] == 0 else { throw OffloadError(.malformedPacket, "IPv4 fragment") }
        case 6:
            guard header.gsoType != .tcpV4, packet.count >= 40 else {
                throw OffloadError(.malformedPacket, "TCPV4 GSO on an IPv6 packet, or short IPv6 header")
            }
            isV6 = true
            transportStart = 40
            proto = packet[6]
        default:
            throw OffloadError(.malformedPacket, "IP version \(version)")
        }
        guard proto == (isTCP ? 6 : 17) else {
            throw OffloadError(.malformedPacket, "protocol \(proto) for gso_type \(header.gsoType)")
        }
        if header.flags.contains(.needsChecksum) {
            guard Int(header.checksumStart) == transportStart, header.checksumOffset == (isTCP ? 16 : 6) else {
                throw OffloadError(.malformedPacket, "csum_start \(header.checksumStart) offset \(header.checksumOffset)")
            }
        }
        let transportHeaderLength: Int
        if isTCP {
            guard transportStart + 20 <= packet.count else { throw OffloadError(.malformedPacket, "short TCP header") }
            transportHeaderLength = Int(packet[transportStart + 12] >> 4) * 4
            guard transportHeaderLength >= 20 else { throw OffloadError(.malformedPacket, "TCP data offset below 5") }
        } else {
            transportHeaderLength = 8
        }
        let headerLength = transportStart + transportHeaderLength
        guard headerLength <= packet.count else { throw OffloadError(.malformedPacket, "headers past the packet") }
        // Every segment must stay a valid IP packet.
        guard headerLength + Int(header.gsoSize) <= 65535 else { throw OffloadError(.malformedPacket, "gso_size too large") }
        return Layout(isV6: isV6, isTCP: isTCP, transportStart: transportStart, headerLength: headerLength)
    }
}
