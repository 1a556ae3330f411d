// GRO for the write path into a TUN device with IFF_VNET_HDR: in-order TCP segments of one flow
// become one super-packet (gso_type TCPV4/TCPV6), and equal-sized UDP datagrams of one flow one
// UDP_L4 super-packet, each with NEEDS_CSUM and the pseudo-header sum in the checksum field, so
// the kernel takes a window of data in one write and runs its receive path once.
//
// A packet joins the group of its flow when (Linux's tcp_gro_receive, udp_gro_receive and
// inet_gro_receive / ipv6_gro_receive, kept conservative):
// - IPv4 without options and not fragmented, or IPv6 with TCP/UDP right after the fixed header;
//   Total Length / Payload Length equal to the bytes received; a valid IPv4 header checksum;
// - same addresses, protocol and ports; same IPv4 TOS, DF and TTL (IPv6: traffic class, flow
//   label, hop limit); IPv4 without DF: Identification one more than the previous packet's;
// - its transport checksum verifies, and so does the first packet's (checked when the second
//   joins): the super-packet goes up with NEEDS_CSUM and the kernel will not check it again;
// - TCP: same acknowledgment number, window, data offset and options, byte for byte; flags
//   exactly ACK or ACK|PSH (PSH ends the group); sequence number right after the previous
//   payload; UDP: the UDP length equals the IP payload, at most 64 datagrams per group;
// - a payload of 1 to gso_size bytes, gso_size being the first packet's payload; a shorter one
//   ends the group; the whole stays within 65,535 bytes.
// Any other packet of the flow (a FIN, a pure ACK, an out-of-order segment, a bad checksum) ends
// the flow's group and starts its own, so the order within a flow never changes. Packets of
// different flows may be reordered (outputs come in the order of each group's first packet).
// wireguard-go's tun/offload_linux.go applies the same kind of rules, checksum checks included.

/// Coalesces a batch of IP packets into writes for a TUN device with IFF_VNET_HDR.
///
/// Use: `reset()`, `add(_:)` each packet of the batch (its memory must stay valid until the
/// outputs are written), `finish()`, then for each output `i < outputCount`:
/// - `singleInput(ofOutput: i)` is the index (in `add` order) of a packet that stays alone:
///   write it behind `VirtioNetHeader.size` zero bytes, from where it is (no copy needed);
/// - otherwise, or for convenience, `output(i)` is the virtio-net header and the packet or
///   super-packet, built in the coalescer's buffer (valid until the next `output` call).
///
/// Pure: no I/O. Allocates only in `init`. Not thread-safe: one coalescer per writing thread.
public final class PacketCoalescer: @unchecked Sendable {
    /// Largest IP packet (IPv4 total length, IPv6 payload length + 40) a group may grow to.
    public static let maximumSuperPacketLength = 65_535
    /// Most datagrams in one UDP_L4 super-packet (the kernel's UDP_MAX_SEGMENTS).
    public static let maximumUDPSegments = 64
    /// How many groups back `add` looks for the packet's flow. A flow last seen further back
    /// starts a new group (order is still kept: only a flow's newest group takes packets).
    public static let flowSearchDepth = 16
    /// Bytes `output(_:)` may return: a virtio-net header and the largest super-packet.
    public static let maximumOutputLength = VirtioNetHeader.size + maximumSuperPacketLength

    public let maximumPackets: Int
    /// Whether UDP datagrams are coalesced (UDP_L4) too. A kernel that refuses UDP GSO writes
    /// from user space (before Linux 6.2) needs this off.
    public var coalescesUDP: Bool

    private enum Kind: UInt8 {
        case other, tcp, udp
    }

    private struct Entry {
        var base: UnsafeRawPointer
        var length: Int
        /// The next member of the same group, or -1.
        var next: Int
    }

    /// What `add` learns from a packet's headers.
    private struct Parsed {
        var kind = Kind.other
        var isV6 = false
        /// Where the transport header starts.
        var transportStart = 0
        /// Whether it may be coalesced at all (see the rules above; checksums come later).
        var candidate = false
        var headerLength = 0
        var payloadLength = 0
        var sequence: UInt32 = 0
        var flags: UInt8 = 0
        var id: UInt16 = 0
        var dontFragment = false
    }

    private struct Group {
        var head: Int
        var tail: Int
        var members: Int
        var kind: Kind
        /// Whether further packets may join.
        var open: Bool
        var isV6: Bool
        var transportStart: Int
        var headerLength: Int
        var segmentSize: Int
        var totalLength: Int
        var nextSequence: UInt32
        var lastID: UInt16
        var psh: Bool
        /// Whether the head's checksums were verified (done when the second member joins).
        var headVerified: Bool
    }

    private let entries: UnsafeMutablePointer<Entry>
    private let groups: UnsafeMutablePointer<Group>
    private let buffer: UnsafeMutableRawPointer
    private var entryCount = 0
    private var groupCount = 0
    public private(set) var outputCount = 0
    /// Of the last `finish()`: how many outputs are super-packets (two or more packets).
    public private(set) var coalescedOutputs = 0

    /// At most `maximumPackets` packets per batch.
    public init(maximumPackets: Int, coalescesUDP: Bool = true) {
        precondition(maximumPackets > 0)
        self.maximumPackets = maximumPackets
        self.coalescesUDP = coalescesUDP
        entries = .allocate(capacity: maximumPackets)
        groups = .allocate(capacity: maximumPackets)
        buffer = .allocate(byteCount: Self.maximumOutputLength, alignment: 64)
    }

    deinit {
        entries.deallocate()
        groups.deallocate()
        buffer.deallocate()
    }

    /// Forgets the previous batch.
    public func reset() {
        entryCount = 0
        groupCount = 0
        outputCount = 0
        coalescedOutputs = 0
    }

    /// Adds one IP packet. Returns false when the batch is full: `finish()`, write the outputs,
    /// `reset()` and add it again.
    @discardableResult
    public func add(_ packet: UnsafeRawBufferPointer) -> Bool {
        guard entryCount < maximumPackets, let base = packet.baseAddress else { return false }
        let index = entryCount
        entries[index] = Entry(base: base, length: packet.count, next: -1)
        entryCount += 1
        let parsed = parse(base, count: packet.count)
        if parsed.kind != .other {
            // The flow's newest group, if it is recent: join it, or close it and start anew.
            var g = groupCount - 1
            let stop = max(0, groupCount - Self.flowSearchDepth)
            while g >= stop {
                if groups[g].kind == parsed.kind, Self.sameFlow(base, parsed.transportStart, groups[g], entries) {
                    if groups[g].open, parsed.candidate, join(g, parsed, base, index) { return true }
                    groups[g].open = false
                    break
                }
                g -= 1
            }
        }
        startGroup(index, parsed, length: packet.count)
        return true
    }

    /// Ends the batch. Returns how many outputs there are.
    @discardableResult
    public func finish() -> Int {
        outputCount = groupCount
        coalescedOutputs = 0
        for g in 0..<groupCount where groups[g].members > 1 { coalescedOutputs += 1 }
        return outputCount
    }

    /// The input index of output `index` when it is one packet left as it was (nil for a super-packet).
    public func singleInput(ofOutput index: Int) -> Int? {
        precondition(index >= 0 && index < outputCount)
        return groups[index].members == 1 ? groups[index].head : nil
    }

    /// How many packets output `index` carries.
    public func segmentCount(ofOutput index: Int) -> Int {
        precondition(index >= 0 && index < outputCount)
        return groups[index].members
    }

    /// The GSO type output `index` is written with.
    public func gsoType(ofOutput index: Int) -> VirtioNetHeader.GSOType {
        precondition(index >= 0 && index < outputCount)
        let group = groups[index]
        guard group.members > 1 else { return .none }
        if group.kind == .udp { return .udpL4 }
        return group.isV6 ? .tcpV6 : .tcpV4
    }

    /// The input indices of the packets in output `index`, in order (to write them one by one
    /// when the kernel refuses the super-packet).
    public func inputs(ofOutput index: Int) -> [Int] {
        precondition(index >= 0 && index < outputCount)
        var out = [Int]()
        var i = groups[index].head
        while i >= 0 {
            out.append(i)
            i = entries[i].next
        }
        return out
    }

    /// Output `index` of the last `finish()`: a virtio-net header and the packet or super-packet,
    /// ready for one write(). Valid until the next call of `output` or `reset`.
    public func output(_ index: Int) -> UnsafeRawBufferPointer {
        precondition(index >= 0 && index < outputCount)
        let group = groups[index]
        let head = entries[group.head]
        let packet = buffer + VirtioNetHeader.size
        guard group.members > 1 else {
            VirtioNetHeader().encode(into: buffer)
            let length = min(head.length, Self.maximumSuperPacketLength)
            packet.copyMemory(from: head.base, byteCount: length)
            return UnsafeRawBufferPointer(start: buffer, count: VirtioNetHeader.size + length)
        }
        packet.copyMemory(from: head.base, byteCount: head.length)
        var length = head.length
        var i = head.next
        while i >= 0 {
            let e = entries[i]
            let payload = e.length - group.headerLength
            (packet + length).copyMemory(from: e.base + group.headerLength, byteCount: payload)
            length += payload
            i = e.next
        }
        let t = group.transportStart
        if group.isV6 {
            FastChecksum.store(UInt16(truncatingIfNeeded: length - 40), packet, at: 4)
        } else {
            FastChecksum.store(UInt16(truncatingIfNeeded: length), packet, at: 2)
            FastChecksum.store(0, packet, at: 10)
            FastChecksum.store(FastChecksum.finish(FastChecksum.sum(packet, count: t)), packet, at: 10)
        }
        let header: VirtioNetHeader
        if group.kind == .udp {
            FastChecksum.store(UInt16(truncatingIfNeeded: length - t), packet, at: t + 4)
            // NEEDS_CSUM: the checksum field holds the folded pseudo-header sum, not complemented.
            let pseudo = FastChecksum.pseudoHeader(packet, isV6: group.isV6, proto: 17, length: length - t)
            FastChecksum.store(UInt16(truncatingIfNeeded: pseudo), packet, at: t + 6)
            header = VirtioNetHeader(flags: .needsChecksum, gsoType: .udpL4, headerLength: UInt16(t + 8),
                                     gsoSize: UInt16(group.segmentSize), checksumStart: UInt16(t), checksumOffset: 6)
        } else {
            if group.psh {
                let flags = packet.load(fromByteOffset: t + 13, as: UInt8.self)
                packet.storeBytes(of: flags | 0x08, toByteOffset: t + 13, as: UInt8.self)
            }
            let pseudo = FastChecksum.pseudoHeader(packet, isV6: group.isV6, proto: 6, length: length - t)
            FastChecksum.store(UInt16(truncatingIfNeeded: pseudo), packet, at: t + 16)
            header = VirtioNetHeader(flags: .needsChecksum, gsoType: group.isV6 ? .tcpV6 : .tcpV4,
                                     headerLength: UInt16(group.headerLength), gsoSize: UInt16(group.segmentSize),
                                     checksumStart: UInt16(t), checksumOffset: 16)
        }
        header.encode(into: buffer)
        return UnsafeRawBufferPointer(start: buffer, count: VirtioNetHeader.size + length)
    }

    // MARK: groups

    private func startGroup(_ index: Int, _ p: Parsed, length: Int) {
        let g = groupCount
        groupCount += 1
        groups[g] = Group(head: index, tail: index, members: 1, kind: p.kind,
                          open: p.kind != .other && p.candidate && !(p.kind == .tcp && p.flags & 0x08 != 0),
                          isV6: p.isV6, transportStart: p.transportStart, headerLength: p.headerLength,
                          segmentSize: p.payloadLength, totalLength: length,
                          nextSequence: p.sequence &+ UInt32(truncatingIfNeeded: p.payloadLength),
                          lastID: p.id, psh: p.kind == .tcp && p.flags & 0x08 != 0, headVerified: false)
    }

    /// Appends entry `index` (parsed as `s`) to group `g` if every rule allows it.
    private func join(_ g: Int, _ s: Parsed, _ p: UnsafeRawPointer, _ index: Int) -> Bool {
        let group = groups[g]
        guard s.isV6 == group.isV6, s.headerLength == group.headerLength,
              s.payloadLength <= group.segmentSize,
              group.totalLength + s.payloadLength <= Self.maximumSuperPacketLength
        else { return false }
        let head = entries[group.head].base
        if s.isV6 {
            // Version, traffic class, flow label; hop limit.
            guard memcmp(p, head, 4) == 0, p.load(fromByteOffset: 7, as: UInt8.self) == head.load(fromByteOffset: 7, as: UInt8.self)
            else { return false }
        } else {
            // TOS, flags byte (DF), TTL.
            guard p.load(fromByteOffset: 1, as: UInt8.self) == head.load(fromByteOffset: 1, as: UInt8.self),
                  p.load(fromByteOffset: 6, as: UInt8.self) == head.load(fromByteOffset: 6, as: UInt8.self),
                  p.load(fromByteOffset: 8, as: UInt8.self) == head.load(fromByteOffset: 8, as: UInt8.self)
            else { return false }
            if !s.dontFragment && s.id != group.lastID &+ 1 { return false }
        }
        let t = group.transportStart
        if group.kind == .tcp {
            // Acknowledgment number (t+8..<t+12), data offset (t+12), window (t+14..<t+16), options.
            guard s.sequence == group.nextSequence,
                  memcmp(p + t + 8, head + t + 8, 5) == 0,
                  memcmp(p + t + 14, head + t + 14, 2) == 0,
                  memcmp(p + t + 20, head + t + 20, group.headerLength - t - 20) == 0
            else { return false }
        } else {
            guard group.members < Self.maximumUDPSegments else { return false }
        }
        // Checksums last: they read every byte.
        if !group.headVerified {
            guard Self.transportChecksumValid(head, count: entries[group.head].length, group.isV6, t,
                                              proto: group.kind == .tcp ? 6 : 17)
            else {
                groups[g].open = false
                return false
            }
            groups[g].headVerified = true
        }
        guard Self.transportChecksumValid(p, count: entries[index].length, s.isV6, t, proto: group.kind == .tcp ? 6 : 17)
        else { return false }
        entries[group.tail].next = index
        groups[g].tail = index
        groups[g].members += 1
        groups[g].totalLength += s.payloadLength
        groups[g].nextSequence = s.sequence &+ UInt32(truncatingIfNeeded: s.payloadLength)
        groups[g].lastID = s.id
        if group.kind == .tcp && s.flags & 0x08 != 0 {
            groups[g].psh = true
            groups[g].open = false
        }
        if s.payloadLength < group.segmentSize { groups[g].open = false }
        return true
    }

    // MARK: parsing

    /// The packet's flow kind and, for a candidate, the fields coalescing needs.
    private func parse(_ p: UnsafeRawPointer, count: Int) -> Parsed {
        var r = Parsed()
        guard count >= 20 else { return r }
        let first = p.load(as: UInt8.self)
        let proto: UInt8
        switch first >> 4 {
        case 4:
            let ihl = Int(first & 0x0F) * 4
            proto = p.load(fromByteOffset: 9, as: UInt8.self)
            // Fragments carry no ports (or not all the datagram): no flow.
            guard ihl >= 20, ihl + 4 <= count, FastChecksum.load16(p, at: 6) & 0x3FFF == 0 else { return r }
            r.transportStart = ihl
            r.candidate = ihl == 20 && Int(FastChecksum.load16(p, at: 2)) == count
                && p.load(fromByteOffset: 6, as: UInt8.self) & 0x80 == 0  // reserved bit clear
                && FastChecksum.sum(p, count: 20) == 0xFFFF
            r.id = FastChecksum.load16(p, at: 4)
            r.dontFragment = p.load(fromByteOffset: 6, as: UInt8.self) & 0x40 != 0
        case 6:
            guard count >= 44 else { return r }
            proto = p.load(fromByteOffset: 6, as: UInt8.self)
            r.isV6 = true
            r.transportStart = 40
            r.candidate = Int(FastChecksum.load16(p, at: 4)) + 40 == count
        default:
            return r
        }
        let t = r.transportStart
        switch proto {
        case 6:
            r.kind = .tcp
            guard r.candidate, t + 20 <= count else {
                r.candidate = false
                return r
            }
            let offsetByte = p.load(fromByteOffset: t + 12, as: UInt8.self)
            let tcpHeaderLength = Int(offsetByte >> 4) * 4
            r.flags = p.load(fromByteOffset: t + 13, as: UInt8.self)
            r.headerLength = t + tcpHeaderLength
            r.candidate = tcpHeaderLength >= 20 && r.headerLength < count  // a payload of at least one byte
                && (r.flags == 0x10 || r.flags == 0x18)  // ACK, or ACK|PSH
                && offsetByte & 0x0F == 0  // reserved bits (and AE) clear
            r.payloadLength = count - r.headerLength
            r.sequence = FastChecksum.load32(p, at: t + 4)
        case 17:
            r.kind = .udp
            r.headerLength = t + 8
            r.payloadLength = count - r.headerLength
            r.candidate = r.candidate && coalescesUDP && r.payloadLength > 0
                && Int(FastChecksum.load16(p, at: t + 4)) == count - t
        default:
            r.candidate = false
        }
        return r
    }

    /// Same protocol, addresses and ports (both packets parsed as the same kind).
    private static func sameFlow(_ p: UnsafeRawPointer, _ t: Int, _ group: Group,
                                 _ entries: UnsafeMutablePointer<Entry>) -> Bool {
        let q = entries[group.head].base
        let version = p.load(as: UInt8.self) >> 4
        guard version == q.load(as: UInt8.self) >> 4 else { return false }
        if version == 6 {
            return memcmp(p + 8, q + 8, 32) == 0 && memcmp(p + 40, q + 40, 4) == 0
        }
        return memcmp(p + 12, q + 12, 8) == 0 && memcmp(p + t, q + group.transportStart, 4) == 0
    }

    /// Whether the TCP/UDP checksum of the packet verifies: the ones' complement sum over the
    /// pseudo-header and the transport bytes is 0xFFFF. (An IPv4 UDP checksum of 0, "none",
    /// does not verify: such datagrams are written as they are.)
    private static func transportChecksumValid(_ p: UnsafeRawPointer, count: Int, _ isV6: Bool, _ t: Int, proto: UInt8) -> Bool {
        let pseudo = FastChecksum.pseudoHeader(p, isV6: isV6, proto: proto, length: count - t)
        return FastChecksum.add(pseudo, FastChecksum.sum(p + t, count: count - t)) == 0xFFFF
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
