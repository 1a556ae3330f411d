import WarrenPacket

// Packet building and checking for the offload tests, written plainly (byte arrays, Int sums)
// so that it does not share code with the checksum paths it checks.

/// RFC 1071 by the book: 16-bit big-endian words, odd byte padded, end-around carry.
func referenceSum(_ bytes: [UInt8]) -> Int {
    var sum = 0
    var i = 0
    while i < bytes.count {
        let hi = Int(bytes[i])
        let lo = i + 1 < bytes.count ? Int(bytes[i + 1]) : 0
        sum += hi << 8 | lo
        i += 2
    }
    while sum > 0xFFFF { sum = (sum & 0xFFFF) + (sum >> 16) }
    return sum
}

func be16(_ v: Int) -> [UInt8] { [UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }
func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }
func read16(_ b: [UInt8], _ o: Int) -> Int { Int(b[o]) << 8 | Int(b[o + 1]) }
func read32(_ b: [UInt8], _ o: Int) -> UInt32 { UInt32(b[o]) << 24 | UInt32(b[o + 1]) << 16 | UInt32(b[o + 2]) << 8 | UInt32(b[o + 3]) }

struct TestFlow {
    var v6: Bool
    var source: [UInt8]
    var destination: [UInt8]
    var sourcePort: Int
    var destinationPort: Int

    static let v4 = TestFlow(v6: false, source: [10, 0, 0, 1], destination: [10, 0, 0, 2], sourcePort: 40000, destinationPort: 5201)
    static let v6 = TestFlow(v6: true, source: [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                             destination: [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                             sourcePort: 40001, destinationPort: 5201)

    var reversed: TestFlow {
        TestFlow(v6: v6, source: destination, destination: source, sourcePort: destinationPort, destinationPort: sourcePort)
    }

    func pseudoHeader(proto: Int, length: Int) -> [UInt8] {
        if v6 { return source + destination + be32(UInt32(length)) + [0, 0, 0, UInt8(proto)] }
        return source + destination + [0, UInt8(proto)] + be16(length)
    }

    /// An IP header for `transportLength` bytes of `proto`.
    func ipHeader(proto: Int, transportLength: Int, id: Int = 0x1234, ttl: UInt8 = 64, tos: UInt8 = 0) -> [UInt8] {
        if v6 {
            return [0x60 | (tos >> 4), (tos & 0x0F) << 4, 0x12, 0x34] + be16(transportLength) + [UInt8(proto), ttl] + source + destination
        }
        var h: [UInt8] = [0x45, tos] + be16(20 + transportLength) + be16(id) + [0x40, 0, ttl, UInt8(proto), 0, 0] + source + destination
        let c = 0xFFFF - referenceSum(h)
        h[10] = UInt8(c >> 8)
        h[11] = UInt8(c & 0xFF)
        return h
    }

    enum Checksum { case full, partial, zero }

    /// A TCP packet. `.partial` stores the folded pseudo-header sum, as a kernel with NEEDS_CSUM does.
    func tcp(sequence: UInt32, ack: UInt32 = 0x0BAD_F00D, flags: UInt8 = 0x10, window: Int = 502,
             options: [UInt8] = [], payload: [UInt8], id: Int = 0x1234, checksum: Checksum = .full) -> [UInt8] {
        precondition(options.count % 4 == 0)
        let dataOffset = (20 + options.count) / 4
        var t: [UInt8] = be16(sourcePort) + be16(destinationPort) + be32(sequence) + be32(ack)
        t += [UInt8(dataOffset << 4), flags] + be16(window) + [0, 0, 0, 0] + options
        t += payload
        let pseudo = pseudoHeader(proto: 6, length: t.count)
        let value: Int
        switch checksum {
        case .full: value = 0xFFFF - referenceSum(pseudo + t)
        case .partial: value = referenceSum(pseudo)
        case .zero: value = 0
        }
        t[16] = UInt8(value >> 8)
        t[17] = UInt8(value & 0xFF)
        return ipHeader(proto: 6, transportLength: t.count, id: id) + t
    }

    func udp(payload: [UInt8], id: Int = 0x1234, checksum: Checksum = .full) -> [UInt8] {
        var u: [UInt8] = be16(sourcePort) + be16(destinationPort) + be16(8 + payload.count) + [0, 0] + payload
        let pseudo = pseudoHeader(proto: 17, length: u.count)
        var value: Int
        switch checksum {
        case .full:
            value = 0xFFFF - referenceSum(pseudo + u)
            if value == 0 { value = 0xFFFF }
        case .partial: value = referenceSum(pseudo)
        case .zero: value = 0
        }
        u[6] = UInt8(value >> 8)
        u[7] = UInt8(value & 0xFF)
        return ipHeader(proto: 17, transportLength: u.count, id: id) + u
    }
}

/// What a checked packet looked like.
struct CheckedPacket {
    var v6: Bool
    var ipLengthOK: Bool
    var ipChecksumOK: Bool
    var transportChecksumOK: Bool
    var id: Int
    var transportStart: Int
}

/// Checks lengths and checksums of an IP packet with TCP or UDP inside, with the reference sum.
func check(_ p: [UInt8]) -> CheckedPacket? {
    guard p.count >= 20 else { return nil }
    if p[0] >> 4 == 4 {
        let ihl = Int(p[0] & 0x0F) * 4
        let proto = Int(p[9])
        let transport = Array(p[ihl...])
        let pseudo = Array(p[12..<20]) + [0, UInt8(proto)] + be16(transport.count)
        return CheckedPacket(v6: false, ipLengthOK: read16(p, 2) == p.count,
                             ipChecksumOK: referenceSum(Array(p[0..<ihl])) == 0xFFFF,
                             transportChecksumOK: referenceSum(pseudo + transport) == 0xFFFF, id: read16(p, 4), transportStart: ihl)
    }
    guard p.count >= 40 else { return nil }
    let transport = Array(p[40...])
    let pseudo = Array(p[8..<40]) + be32(UInt32(transport.count)) + [0, 0, 0, p[6]]
    return CheckedPacket(v6: true, ipLengthOK: read16(p, 4) + 40 == p.count, ipChecksumOK: true,
                         transportChecksumOK: referenceSum(pseudo + transport) == 0xFFFF, id: 0, transportStart: 40)
}

/// Runs `GSOSegmenter.segment` into arrays.
func segmentToArrays(_ packet: [UInt8], header: VirtioNetHeader, slotSize: Int = 65536) throws -> [[UInt8]] {
    var slots = [[UInt8]]()
    var lengths = [Int]()
    let storage = UnsafeMutableRawPointer.allocate(byteCount: 64 * slotSize, alignment: 16)
    defer { storage.deallocate() }
    let n = try packet.withUnsafeBytes { raw in
        try GSOSegmenter.segment(raw, header: header) { index, length in
            guard index < 64, length <= slotSize else { return nil }
            lengths.append(length)
            return storage + index * slotSize
        }
    }
    for i in 0..<n {
        slots.append(Array(UnsafeRawBufferPointer(start: storage + i * slotSize, count: lengths[i])))
    }
    return slots
}

/// Runs a coalescer over `packets`; returns the outputs (virtio-net header + packet) and segment counts.
func coalesce(_ packets: [[UInt8]], coalescer: PacketCoalescer) -> [(bytes: [UInt8], segments: Int)] {
    coalescer.reset()
    // Keep the inputs in stable memory until finish().
    let total = packets.reduce(0) { $0 + $1.count }
    let memory = UnsafeMutableRawPointer.allocate(byteCount: max(total, 1), alignment: 16)
    defer { memory.deallocate() }
    var offset = 0
    for p in packets {
        p.withUnsafeBytes { (memory + offset).copyMemory(from: $0.baseAddress!, byteCount: p.count) }
        let accepted = coalescer.add(UnsafeRawBufferPointer(start: memory + offset, count: p.count))
        precondition(accepted)
        offset += p.count
    }
    coalescer.finish()
    return (0..<coalescer.outputCount).map { (Array(coalescer.output($0)), coalescer.segmentCount(ofOutput: $0)) }
}
