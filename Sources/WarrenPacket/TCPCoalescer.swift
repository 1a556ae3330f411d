// GRO for the write path into a TUN device with IFF_VNET_HDR and TSO: consecutive, in-order
// TCP segments of one flow become one super-packet with a virtio-net header (gso_type TCPV4
// or TCPV6, NEEDS_CSUM with the pseudo-header sum in the checksum field), so the kernel takes
// a whole window of data in one write and runs its TCP receive path once.
//
// A segment joins the group of its flow when (the rules of Linux's tcp_gro_receive and
// inet_gro_receive / ipv6_gro_receive, kept conservative):
// - IPv4 without options and not fragmented, or IPv6 with TCP right after the fixed header;
//   Total Length / Payload Length equal to the bytes received; valid IPv4 header checksum and
//   valid TCP checksum (a segment that fails either is passed through for the kernel to judge);
// - same addresses, ports, IPv4 TOS, DF and TTL (IPv6: traffic class, flow label, hop limit);
//   IPv4 without DF: Identification one more than the previous segment's;
// - same acknowledgment number, window, data offset and TCP options, byte for byte;
// - flags exactly ACK, or ACK|PSH (PSH ends the group: it may only be on the last segment);
// - sequence number right after the previous segment's payload;
// - a payload of 1 to gso_size bytes, where gso_size is the first segment's payload; a shorter
//   payload ends the group; the whole stays within 65,535 bytes of IP length.
// Any other packet of the same flow (a FIN, a pure ACK, an out-of-order segment) closes the
// flow's group, so the order of packets within a flow never changes. Packets of different flows
// may be reordered relative to each other (groups are emitted in the order of their first packet).

/// Coalesces a batch of IP packets into writes for a TUN device with IFF_VNET_HDR.
///
/// Use: `reset()`, `add(_:)` each packet of a batch (the memory must stay valid until the
/// outputs are written), `finish()`, then write `output(i)` for `i` in `0..<outputCount`: each
/// is a virtio-net header followed by a packet or a super-packet. Allocates only in `init`.
/// Not thread-safe: one coalescer per thread.
public final class TCPCoalescer: @unchecked Sendable {
    /// Largest IP packet (IPv4 total length, IPv6 payload length + 40) a group may grow to.
    public static let maximumSuperPacketLength = 65535

    public let maximumPackets: Int
    public let arenaCapacity: Int

    private struct Entry {
        var base: UnsafeRawPointer
        var length: Int
        /// Group this packet belongs to (index into groups), or -1 before `finish`.
        var group: Int
    }

    /// A candidate TCP segment's parsed fields.
    private struct Segment {
        var isV6: Bool
        var ipHeaderLength: Int
        var headerLength: Int
        var payloadLength: Int
        var sequence: UInt32
        var flags: UInt8
        var id: UInt16
        var dontFragment: Bool
    }

    private struct Group {
        var head: Int
        var tail: Int
        var members: Int
        /// Whether further segments may join.
        var open: Bool
        var coalescible: Bool
        var isV6: Bool
        var ipHeaderLength: Int
        var headerLength: Int
        var segmentSize: Int
        var totalLength: Int
        var nextSequence: UInt32
        var lastID: UInt16
        var psh: Bool
        /// Whether the packet is TCP at all (its flow closes on other packets of the flow).
        var isTCP: Bool
    }

    private let entries: UnsafeMutablePointer<Entry>
    private let groups: UnsafeMutablePointer<Group>
    private let arena: UnsafeMutableRawPointer
    private let outputStarts: UnsafeMutablePointer<Int>
    private let outputLengths: UnsafeMutablePointer<Int>
    private var entryCount = 0
    private var groupCount = 0
    private var bytesAdded = 0
    public private(set) var outputCount = 0
    /// Statistics of the last `finish()`: how many outputs are super-packets (2+ segments).
    public private(set) var coalescedOutputs = 0

    /// `maximumPackets` per batch, each at most `maximumPacketLength` bytes (the TUN MTU, or more).
    public init(maximumPackets: Int, maximumPacketLength: Int) {
        precondition(maximumPackets > 0 && maximumPacketLength > 0)
        self.maximumPackets = maximumPackets
        arenaCapacity = maximumPackets * (maximumPacketLength + VirtioNetHeader.size)
        entries = .allocate(capacity: maximumPackets)
        groups = .allocate(capacity: maximumPackets)
        arena = .allocate(byteCount: arenaCapacity, alignment: 64)
        outputStarts = .allocate(capacity: maximumPackets)
        outputLengths = .allocate(capacity: maximumPackets)
    }

    deinit {
        entries.deallocate()
        groups.deallocate()
        arena.deallocate()
        outputStarts.deallocate()
        outputLengths.deallocate()
    }

    /// Forgets the previous batch.
    public func reset() {
        entryCount = 0
        groupCount = 0
        bytesAdded = 0
        outputCount = 0
        coalescedOutputs = 0
    }

    /// Adds one IP packet. Returns false when the batch is full (by count or bytes): call
    /// `finish()`, write the outputs, `reset()` and add it again. On an empty coalescer a
    /// packet is refused only if it alone exceeds the room; write it yourself behind 10 zero bytes.
    @discardableResult
    public func add(_ packet: UnsafeRawBufferPointer) -> Bool {
        guard entryCount < maximumPackets, let base = packet.baseAddress,
              bytesAdded + packet.count + VirtioNetHeader.size <= arenaCapacity
        else { return false }
        let index = entryCount
        entries[index] = Entry(base: base, length: packet.count, group: -1)
        entryCount += 1
        bytesAdded += packet.count + VirtioNetHeader.size

        let isTCP = Self.isTCP(packet)
        let segment = isTCP ? Self.candidate(packet) : nil
        if isTCP {
            // Find the flow's open group, most recent first.
            var g = groupCount - 1
            while g >= 0 {
                let group = groups[g]
                if group.open && group.isTCP && Self.sameFlow(packet, entries[group.head]) {
                    if let segment, group.coalescible, join(g, segment, packet) {
                        entries[index].group = g
                        return true
                    }
                    groups[g].open = false
                    break
                }
                g -= 1
            }
        }
        startGroup(index, packet, isTCP: isTCP, segment: segment)
        return true
    }

    private func startGroup(_ index: Int, _ packet: UnsafeRawBufferPointer, isTCP: Bool, segment: Segment?) {
        let g = groupCount
        groupCount += 1
        entries[index].group = g
        if let s = segment {
            groups[g] = Group(head: index, tail: index, members: 1, open: s.flags & 0x08 == 0, coalescible: true,
                              isV6: s.isV6, ipHeaderLength: s.ipHeaderLength, headerLength: s.headerLength,
                              segmentSize: s.payloadLength, totalLength: packet.count,
                              nextSequence: s.sequence &+ UInt32(truncatingIfNeeded: s.payloadLength),
                              lastID: s.id, psh: s.flags & 0x08 != 0, isTCP: true)
        } else {
            groups[g] = Group(head: index, tail: index, members: 1, open: isTCP, coalescible: false, isV6: false,
                              ipHeaderLength: 0, headerLength: 0, segmentSize: 0, totalLength: packet.count,
                              nextSequence: 0, lastID: 0, psh: false, isTCP: isTCP)
        }
    }

    /// Appends `segment` to group `g` if every rule allows it.
    private func join(_ g: Int, _ s: Segment, _ packet: UnsafeRawBufferPointer) -> Bool {
        let group = groups[g]
        guard s.isV6 == group.isV6, s.headerLength == group.headerLength,
              s.sequence == group.nextSequence,
              s.payloadLength <= group.segmentSize,
              group.totalLength + s.payloadLength <= Self.maximumSuperPacketLength
        else { return false }
        let head = entries[group.head].base
        guard let p = packet.baseAddress else { return false }
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
        let t = group.ipHeaderLength
        // Acknowledgment number (t+8..<t+12), data offset (t+12), window (t+14..<t+16), options.
        guard memcmp(p + t + 8, head + t + 8, 5) == 0,
              memcmp(p + t + 14, head + t + 14, 2) == 0,
              memcmp(p + t + 20, head + t + 20, group.headerLength - t - 20) == 0
        else { return false }
        groups[g].tail = entryCount - 1
        groups[g].members += 1
        groups[g].totalLength += s.payloadLength
        groups[g].nextSequence = s.sequence &+ UInt32(truncatingIfNeeded: s.payloadLength)
        groups[g].lastID = s.id
        if s.flags & 0x08 != 0 {
            groups[g].psh = true
            groups[g].open = false
        }
        if s.payloadLength < group.segmentSize { groups[g].open = false }
        return true
    }

    /// Builds the outputs of the batch. Returns how many there are.
    @discardableResult
    public func finish() -> Int {
        // Members of each group are found by scanning entries after the head; link them by
        // reusing the pass: for each group write its head, then append the payloads of the later
        // entries that carry the group's number (entries are in arrival order, so in sequence order).
        var cursor = 0
        outputCount = 0
        coalescedOutputs = 0
        for g in 0..<groupCount {
            let group = groups[g]
            let start = cursor
            let out = arena + start
            let head = entries[group.head]
            if group.members == 1 {
                VirtioNetHeader().encode(into: out)
                (out + VirtioNetHeader.size).copyMemory(from: head.base, byteCount: head.length)
                cursor += VirtioNetHeader.size + head.length
            } else {
                let packet = out + VirtioNetHeader.size
                packet.copyMemory(from: head.base, byteCount: head.length)
                var length = head.length
                var i = group.head + 1
                var remaining = group.members - 1
                while remaining > 0 && i < entryCount {
                    let e = entries[i]
                    if e.group == g {
                        let payload = e.length - group.headerLength
                        (packet + length).copyMemory(from: e.base + group.headerLength, byteCount: payload)
                        length += payload
                        remaining -= 1
                    }
                    i += 1
                }
                let t = group.ipHeaderLength
                if group.isV6 {
                    FastChecksum.store(UInt16(truncatingIfNeeded: length - 40), packet, at: 4)
                } else {
                    FastChecksum.store(UInt16(truncatingIfNeeded: length), packet, at: 2)
                    FastChecksum.store(0, packet, at: 10)
                    FastChecksum.store(FastChecksum.finish(FastChecksum.sum(packet, count: t)), packet, at: 10)
                }
                if group.psh {
                    let flags = packet.load(fromByteOffset: t + 13, as: UInt8.self)
                    packet.storeBytes(of: flags | 0x08, toByteOffset: t + 13, as: UInt8.self)
                }
                // NEEDS_CSUM: the checksum field holds the folded pseudo-header sum, not complemented.
                let pseudo = FastChecksum.pseudoHeader(packet, isV6: group.isV6, proto: 6, length: length - t)
                FastChecksum.store(UInt16(truncatingIfNeeded: pseudo), packet, at: t + 16)
                VirtioNetHeader(flags: .needsChecksum, gsoType: group.isV6 ? .tcpV6 : .tcpV4,
                                headerLength: UInt16(group.headerLength), gsoSize: UInt16(group.segmentSize),
                                checksumStart: UInt16(t), checksumOffset: 16).encode(into: out)
                cursor += VirtioNetHeader.size + length
                coalescedOutputs += 1
            }
            outputStarts[outputCount] = start
            outputLengths[outputCount] = cursor - start
            outputCount += 1
        }
        return outputCount
    }

    /// Output `index` of the last `finish()`: a virtio-net header and the packet, ready for one write().
    public func output(_ index: Int) -> UnsafeRawBufferPointer {
        precondition(index >= 0 && index < outputCount)
        return UnsafeRawBufferPointer(start: arena + outputStarts[index], count: outputLengths[index])
    }

    /// How many segments output `index` carries (1 for a packet passed through).
    public func segmentCount(ofOutput index: Int) -> Int {
        precondition(index >= 0 && index < outputCount)
        return groups[index].members
    }

    // MARK: parsing

    /// Whether the packet is TCP (for flow ordering), without further validation.
    private static func isTCP(_ packet: UnsafeRawBufferPointer) -> Bool {
        guard packet.count >= 40 else { return false }
        switch packet[0] >> 4 {
        case 4: return packet[9] == 6 && Int(packet[0] & 0x0F) * 4 + 20 <= packet.count
        case 6: return packet.count >= 60 && packet[6] == 6
        default: return false
        }
    }

    /// Same addresses and ports (the caller knows both are TCP with the same IP version or not).
    private static func sameFlow(_ packet: UnsafeRawBufferPointer, _ other: Entry) -> Bool {
        guard let p = packet.baseAddress, other.length >= 40 else { return false }
        let q = other.base
        let version = p.load(as: UInt8.self) >> 4
        guard version == q.load(as: UInt8.self) >> 4 else { return false }
        if version == 6 {
            return other.length >= 60 && memcmp(p + 8, q + 8, 32) == 0 && memcmp(p + 40, q + 40, 4) == 0
        }
        let t1 = Int(p.load(as: UInt8.self) & 0x0F) * 4
        let t2 = Int(q.load(as: UInt8.self) & 0x0F) * 4
        guard t2 + 20 <= other.length else { return false }
        return memcmp(p + 12, q + 12, 8) == 0 && memcmp(p + t1, q + t2, 4) == 0
    }

    /// The segment's fields if it may be coalesced at all (see the rules above).
    private static func candidate(_ packet: UnsafeRawBufferPointer) -> Segment? {
        guard let p = packet.baseAddress else { return nil }
        let count = packet.count
        let isV6: Bool
        let t: Int
        switch packet[0] {
        case 0x45:
            guard count >= 40, packet[9] == 6, Int(FastChecksum.load16(p, at: 2)) == count,
                  packet[6] & 0xBF == 0, packet[7] == 0,  // no MF, no fragment offset, reserved bit clear
                  FastChecksum.sum(p, count: 20) == 0xFFFF
            else { return nil }
            isV6 = false
            t = 20
        case 0x60...0x6F:
            guard count >= 60, packet[6] == 6, Int(FastChecksum.load16(p, at: 4)) + 40 == count else { return nil }
            isV6 = true
            t = 40
        default:
            return nil
        }
        let tcpHeaderLength = Int(packet[t + 12] >> 4) * 4
        let flags = packet[t + 13]
        guard tcpHeaderLength >= 20, t + tcpHeaderLength < count,  // a payload of at least one byte
              flags == 0x10 || flags == 0x18,  // ACK, or ACK|PSH
              packet[t + 12] & 0x0F == 0  // reserved bits (and AE) clear
        else { return nil }
        // The TCP checksum must verify: ones' complement sum over pseudo-header and segment is 0xFFFF.
        let pseudo = FastChecksum.pseudoHeader(p, isV6: isV6, proto: 6, length: count - t)
        guard FastChecksum.add(pseudo, FastChecksum.sum(p + t, count: count - t)) == 0xFFFF else { return nil }
        return Segment(isV6: isV6, ipHeaderLength: t, headerLength: t + tcpHeaderLength,
                       payloadLength: count - t - tcpHeaderLength, sequence: FastChecksum.load32(p, at: t + 4),
                       flags: flags, id: isV6 ? 0 : FastChecksum.load16(p, at: 4), dontFragment: !isV6 && packet[6] & 0x40 != 0)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
