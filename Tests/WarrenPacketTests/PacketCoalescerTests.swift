import XCTest
import WarrenPacket
import WarrenTestSupport

final class PacketCoalescerTests: XCTestCase {
    let timestamps: [UInt8] = [1, 1, 8, 10, 0, 1, 0xE2, 0x40, 0, 0, 0x30, 0x39]

    func bytes(_ count: Int, seed: UInt64) -> [UInt8] {
        var rng = SeededGenerator(seed: seed)
        return rng.bytes(count: count)
    }

    /// Segments of one flow as a sender would put them on the wire.
    func segments(_ flow: TestFlow, sizes: [Int], start: UInt32 = 1000, lastFlags: UInt8 = 0x18, firstID: Int = 100,
                  options: [UInt8]? = nil) -> [[UInt8]] {
        var seq = start
        var out = [[UInt8]]()
        for (i, size) in sizes.enumerated() {
            let flags: UInt8 = i == sizes.count - 1 ? lastFlags : 0x10
            out.append(flow.tcp(sequence: seq, flags: flags, options: options ?? timestamps,
                                payload: bytes(size, seed: UInt64(seq)), id: firstID + i))
            seq &+= UInt32(size)
        }
        return out
    }

    /// Checks a coalesced output: header fields, lengths, and that segmenting it gives back `expected`.
    func assertSuperPacket(_ output: [UInt8], equals expected: [[UInt8]], file: StaticString = #filePath, line: UInt = #line) throws {
        let header = try output.withUnsafeBytes { try VirtioNetHeader(decoding: $0) }
        let packet = Array(output[VirtioNetHeader.size...])
        let v6 = packet[0] >> 4 == 6
        XCTAssertEqual(header.flags, .needsChecksum, file: file, line: line)
        XCTAssertEqual(header.gsoType, v6 ? .tcpV6 : .tcpV4, file: file, line: line)
        XCTAssertEqual(Int(header.checksumStart), v6 ? 40 : 20, file: file, line: line)
        XCTAssertEqual(header.checksumOffset, 16, file: file, line: line)
        XCTAssertEqual(Int(header.gsoSize), expected[0].count - Int(header.headerLength), file: file, line: line)
        let c = try XCTUnwrap(check(packet))
        XCTAssertTrue(c.ipLengthOK && c.ipChecksumOK, file: file, line: line)
        // The checksum field holds the folded pseudo-header sum (NEEDS_CSUM), computed here by the book.
        let t = c.transportStart
        let pseudo = v6 ? Array(packet[8..<40]) + be32(UInt32(packet.count - t)) + [0, 0, 0, 6]
            : Array(packet[12..<20]) + [0, 6] + be16(packet.count - t)
        XCTAssertEqual(read16(packet, t + 16), referenceSum(pseudo), file: file, line: line)
        XCTAssertEqual(try segmentToArrays(packet, header: header), expected, "segmenting gives the inputs back", file: file, line: line)
    }

    func testInOrderSegmentsBecomeOneSuperPacketAndSplitBackExactly() throws {
        let c = PacketCoalescer(maximumPackets: 64)
        for flow in [TestFlow.v4, .v6] {
            for sizes in [[1368, 1368, 1368, 1368], [1368, 1368, 500], [1001, 1001, 1001, 1], [1368]] {
                let input = segments(flow, sizes: sizes)
                let out = coalesce(input, coalescer: c)
                XCTAssertEqual(out.count, 1)
                XCTAssertEqual(out[0].segments, sizes.count)
                if sizes.count > 1 {
                    try assertSuperPacket(out[0].bytes, equals: input)
                    XCTAssertEqual(c.coalescedOutputs, 1)
                } else {
                    XCTAssertEqual(out[0].bytes, [UInt8](repeating: 0, count: 10) + input[0], "a lone packet passes through")
                }
            }
        }
    }

    /// Segmenting a kernel super-packet and coalescing the segments gives the same super-packet.
    func testSegmentThenCoalesceRoundTrip() throws {
        var rng = SeededGenerator(seed: 42)
        let c = PacketCoalescer(maximumPackets: 64)
        for round in 0..<40 {
            let flow = round % 2 == 0 ? TestFlow.v4 : TestFlow.v6
            let mss = Int.random(in: 500...1400, using: &rng)
            let size = Int.random(in: (mss + 1)...(mss * 40), using: &rng)
            let sequence = UInt32.random(in: 0...UInt32.max, using: &rng)
            let original = flow.tcp(sequence: sequence, flags: 0x18, options: timestamps, payload: rng.bytes(count: size), checksum: .partial)
            let t = flow.v6 ? 40 : 20
            let header = VirtioNetHeader(flags: .needsChecksum, gsoType: flow.v6 ? .tcpV6 : .tcpV4,
                                         headerLength: UInt16(t + 32), gsoSize: UInt16(mss), checksumStart: UInt16(t), checksumOffset: 16)
            let pieces = try segmentToArrays(original, header: header)
            let out = coalesce(pieces, coalescer: c)
            XCTAssertEqual(out.count, 1, "round \(round)")
            XCTAssertEqual(out[0].bytes, header.bytes + original, "round \(round): mss \(mss) size \(size)")
        }
    }

    func testInterleavedFlowsKeepPerFlowOrder() throws {
        let a = segments(.v4, sizes: [1000, 1000, 1000])
        var other = TestFlow.v4
        other.sourcePort = 40002
        let b = segments(other, sizes: [1000, 1000])
        let udp = TestFlow.v4.udp(payload: bytes(100, seed: 9))
        let c = PacketCoalescer(maximumPackets: 16)
        let out = coalesce([a[0], b[0], a[1], udp, b[1], a[2]], coalescer: c)
        XCTAssertEqual(out.map(\.segments), [3, 2, 1])
        try assertSuperPacket(out[0].bytes, equals: a)
        try assertSuperPacket(out[1].bytes, equals: b)
        XCTAssertEqual(out[2].bytes, [UInt8](repeating: 0, count: 10) + udp)
    }

    func testRulesThatEndAGroup() throws {
        let c = PacketCoalescer(maximumPackets: 16)
        // PSH in the middle ends the group there.
        var s = segments(.v4, sizes: [1000, 1000, 1000, 1000])
        s[1] = TestFlow.v4.tcp(sequence: 2000, flags: 0x18, options: timestamps, payload: bytes(1000, seed: 2000), id: 101)
        XCTAssertEqual(coalesce(s, coalescer: c).map(\.segments), [2, 2])
        // A shorter segment ends it; a longer one cannot join.
        s = segments(.v4, sizes: [1000, 500, 1000])
        XCTAssertEqual(coalesce(s, coalescer: c).map(\.segments), [2, 1])
        s = segments(.v4, sizes: [1000, 1200])
        XCTAssertEqual(coalesce(s, coalescer: c).map(\.segments), [1, 1])
        // A gap in the sequence numbers.
        s = segments(.v4, sizes: [1000, 1000, 1000])
        s[2] = TestFlow.v4.tcp(sequence: 3001, options: timestamps, payload: bytes(1000, seed: 1), id: 102)
        XCTAssertEqual(coalesce(s, coalescer: c).map(\.segments), [2, 1])
        // Different TCP options (a later timestamp) or acknowledgment.
        s = segments(.v4, sizes: [1000, 1000])
        var ts2 = timestamps
        ts2[7] &+= 1
        s[1] = TestFlow.v4.tcp(sequence: 2000, options: ts2, payload: bytes(1000, seed: 1), id: 101)
        XCTAssertEqual(coalesce(s, coalescer: c).map(\.segments), [1, 1])
        s[1] = TestFlow.v4.tcp(sequence: 2000, ack: 7, options: timestamps, payload: bytes(1000, seed: 1), id: 101)
        XCTAssertEqual(coalesce(s, coalescer: c).map(\.segments), [1, 1])
        // A bad TCP checksum: passed through for the kernel to drop, and it closes the flow's group.
        s = segments(.v4, sizes: [1000, 1000, 1000])
        s[1][60] ^= 0xFF
        let out = coalesce(s, coalescer: c)
        XCTAssertEqual(out.map(\.segments), [1, 1, 1])
        XCTAssertEqual(Array(out[1].bytes[10...]), s[1], "passed through unchanged")
        // FIN and SYN never join; a FIN after data closes the group so the order stays.
        s = segments(.v4, sizes: [1000, 1000, 1000], lastFlags: 0x11)
        XCTAssertEqual(coalesce(s, coalescer: c).map(\.segments), [2, 1])
        // A pure ACK of the same flow between two data segments.
        s = segments(.v6, sizes: [1000, 1000])
        let ack = TestFlow.v6.tcp(sequence: 2000, payload: [])
        XCTAssertEqual(coalesce([s[0], ack, s[1]], coalescer: c).map(\.segments), [1, 1, 1])
        // The reverse direction is another flow and does not disturb the group.
        let reverse = TestFlow.v6.reversed.tcp(sequence: 1, payload: [])
        XCTAssertEqual(coalesce([s[0], reverse, s[1]], coalescer: c).map(\.segments), [2, 1])
    }

    func testSuperPacketStopsAt64KiB() throws {
        let c = PacketCoalescer(maximumPackets: 128)
        let sizes = [Int](repeating: 1400, count: 60)
        let out = coalesce(segments(.v4, sizes: sizes), coalescer: c)
        XCTAssertEqual(out.map(\.segments).reduce(0, +), 60)
        XCTAssertEqual(out.count, 2)
        for o in out { XCTAssertLessThanOrEqual(o.bytes.count - 10, 65535) }
        XCTAssertEqual(out[0].segments, (65535 - 52) / 1400)
    }

    func testBatchFullIsReported() {
        let c = PacketCoalescer(maximumPackets: 2)
        let s = segments(.v4, sizes: [1000, 1000, 1000])
        s[0].withUnsafeBytes { XCTAssertTrue(c.add($0)) }
        s[1].withUnsafeBytes { XCTAssertTrue(c.add($0)) }
        s[2].withUnsafeBytes { XCTAssertFalse(c.add($0)) }
        XCTAssertEqual(c.finish(), 1)
    }

    /// Random batches from a few TCP and UDP flows, some packets damaged, dropped or reordered:
    /// every output is valid, and segmenting the outputs gives back exactly the input packets,
    /// each flow in order.
    func testFuzzCoalescerPreservesEveryPacket() throws {
        var rng = SeededGenerator(seed: 0xC0A1)
        let c = PacketCoalescer(maximumPackets: 96)
        var superPackets = [VirtioNetHeader.GSOType: Int]()
        for round in 0..<80 {
            var flows = [TestFlow.v4, .v6, .v4, .v4, .v6]
            flows[2].destinationPort = 22
            flows[4].sourcePort = 5353
            let isUDP = [false, false, false, true, true]
            var next = [UInt32](repeating: 77, count: flows.count)
            // Senders number their packets per flow (with DF, a coalesced group keeps only the first
            // Identification and segmentation renumbers from it).
            var ids = [Int](repeating: 1, count: flows.count)
            var batch = [[UInt8]]()
            for _ in 0..<Int.random(in: 1...90, using: &rng) {
                let f = Int.random(in: 0..<flows.count, using: &rng)
                let size = Int.random(in: 0...10, using: &rng) < 8 ? 1300 : Int.random(in: 0...1300, using: &rng)
                var p: [UInt8]
                if isUDP[f] {
                    p = flows[f].udp(payload: rng.bytes(count: size), id: ids[f])
                } else {
                    p = flows[f].tcp(sequence: next[f], flags: Int.random(in: 0..<10, using: &rng) == 0 ? 0x18 : 0x10,
                                     options: timestamps, payload: rng.bytes(count: size), id: ids[f])
                }
                ids[f] += 1
                if Int.random(in: 0..<20, using: &rng) == 0 { p[Int.random(in: 0..<p.count, using: &rng)] ^= 0x5A }
                if Int.random(in: 0..<20, using: &rng) != 0 { next[f] &+= UInt32(size) }
                batch.append(p)
            }
            let out = coalesce(batch, coalescer: c)
            var recovered = [[UInt8]]()
            for o in out {
                let header = try o.bytes.withUnsafeBytes { try VirtioNetHeader(decoding: $0) }
                let packet = Array(o.bytes[10...])
                if header.gsoType == .none {
                    recovered.append(packet)
                } else {
                    superPackets[header.gsoType, default: 0] += 1
                    let pieces = try segmentToArrays(packet, header: header)
                    XCTAssertEqual(pieces.count, o.segments)
                    recovered += pieces
                }
            }
            XCTAssertEqual(recovered.count, batch.count, "round \(round)")
            // Per flow (by protocol, ports and version), the order is the input order.
            func key(_ p: [UInt8]) -> [UInt8] { p[0] >> 4 == 6 ? Array(p[40..<44]) + [6, p[6]] : Array(p[20..<24]) + [4, p[9]] }
            for k in Set(batch.map(key)) {
                XCTAssertEqual(recovered.filter { key($0) == k }, batch.filter { key($0) == k }, "round \(round)")
            }
        }
        XCTAssertGreaterThan(superPackets[.tcpV4, default: 0], 0)
        XCTAssertGreaterThan(superPackets[.tcpV6, default: 0], 0)
        XCTAssertGreaterThan(superPackets[.udpL4, default: 0], 0)
    }

    /// The coalescer's parser on mutated packets between two valid segments of the same flow:
    /// never a crash, every output decodes, and segmenting the outputs gives back every input.
    func testFuzzCoalescerParser() throws {
        let s4 = segments(.v4, sizes: [1000, 1000, 1000])
        let s6 = segments(.v6, sizes: [700, 700, 700])
        let c = PacketCoalescer(maximumPackets: 8)
        var coalesced = 0
        let u4 = (0..<3).map { TestFlow.v4.udp(payload: bytes(50, seed: UInt64($0)), id: 5 + $0) }
        let u6 = (0..<3).map { TestFlow.v6.udp(payload: bytes(700, seed: UInt64($0))) }
        try MutationFuzzer(seeds: [s4[1], s6[1], u4[1], u6[1]], iterations: 4000,
                           maximumLength: 4096, seed: 0xFA57).run { input in
            // The mutated packet between two valid neighbours of the flow its seed came from.
            let v6 = input.first.map { $0 >> 4 == 6 } == true
            let udp = v6 ? input.count > 6 && input[6] == 17 : input.count > 9 && input[9] == 17
            let around = v6 ? (udp ? u6 : s6) : (udp ? u4 : s4)
            let batch = [around[0], input, around[2]]
            let out = coalesce(batch, coalescer: c)
            var recovered = [[UInt8]]()
            for o in out {
                let header = try o.bytes.withUnsafeBytes { try VirtioNetHeader(decoding: $0) }
                let packet = Array(o.bytes[10...])
                recovered += header.gsoType == .none ? [packet] : try segmentToArrays(packet, header: header)
                if header.gsoType != .none { coalesced += 1 }
            }
            XCTAssertEqual(recovered.count, 3)
            // With DF set the IPv4 Identification carries nothing (RFC 6864): a UDP group keeps
            // the first one and segmentation numbers on from it. Compare without it.
            XCTAssertEqual(Set(recovered.map(withoutAtomicID)), Set(batch.map(withoutAtomicID)))
        }
        XCTAssertGreaterThan(coalesced, 0)
    }

    /// An IPv4 packet with DF set, with its Identification and header checksum zeroed.
    func withoutAtomicID(_ p: [UInt8]) -> [UInt8] {
        guard p.count >= 20, p[0] == 0x45, p[6] & 0x40 != 0 else { return p }
        var q = p
        for i in [4, 5, 10, 11] { q[i] = 0 }
        return q
    }

    /// Equal-sized datagrams of one UDP flow become one UDP_L4 super-packet (the last may be
    /// shorter and ends it); segmenting it gives the datagrams back.
    func testUDPDatagramsBecomeOneSuperPacket() throws {
        let c = PacketCoalescer(maximumPackets: 128)
        for flow in [TestFlow.v4, .v6] {
            let datagrams = (0..<6).map { flow.udp(payload: bytes($0 == 5 ? 300 : 1392, seed: UInt64($0)), id: 10 + $0) }
            let out = coalesce(datagrams, coalescer: c)
            XCTAssertEqual(out.map(\.segments), [6])
            let header = try out[0].bytes.withUnsafeBytes { try VirtioNetHeader(decoding: $0) }
            let t = flow.v6 ? 40 : 20
            XCTAssertEqual(header.gsoType, .udpL4)
            XCTAssertEqual(header.flags, .needsChecksum)
            XCTAssertEqual(header.gsoSize, 1392)
            XCTAssertEqual(Int(header.headerLength), t + 8)
            XCTAssertEqual(Int(header.checksumStart), t)
            XCTAssertEqual(header.checksumOffset, 6)
            let packet = Array(out[0].bytes[10...])
            XCTAssertEqual(read16(packet, t + 4), packet.count - t, "UDP length of the whole")
            XCTAssertEqual(read16(packet, t + 6), referenceSum(flow.pseudoHeader(proto: 17, length: packet.count - t)),
                           "the pseudo-header sum for NEEDS_CSUM")
            XCTAssertEqual(try segmentToArrays(packet, header: header), datagrams)
            // A longer datagram cannot join; a shorter one ends the group.
            let mixed = [1000, 1200, 1200, 700, 1200].enumerated().map { flow.udp(payload: bytes($0.element, seed: 1), id: $0.offset) }
            XCTAssertEqual(coalesce(mixed, coalescer: c).map(\.segments), [1, 3, 1])
            // At most 64 datagrams in one.
            let many = (0..<100).map { flow.udp(payload: bytes(100, seed: UInt64($0)), id: $0) }
            XCTAssertEqual(coalesce(many, coalescer: c).map(\.segments), [64, 36])
            // A bad UDP checksum (or none: 0 in IPv4) is written alone and closes the group.
            var bad = Array(datagrams[0..<4])
            bad[2][t + 8] ^= 1
            XCTAssertEqual(coalesce(bad, coalescer: c).map(\.segments), [2, 1, 1])
            if !flow.v6 {
                let unchecked = (0..<3).map { flow.udp(payload: bytes(500, seed: 3), id: $0, checksum: .zero) }
                XCTAssertEqual(coalesce(unchecked, coalescer: c).map(\.segments), [1, 1, 1])
            }
            // Switched off: every datagram alone.
            c.coalescesUDP = false
            XCTAssertEqual(coalesce(datagrams, coalescer: c).map(\.segments), [1, 1, 1, 1, 1, 1])
            c.coalescesUDP = true
        }
    }

    /// A packet that stays alone is named by its input index (the caller writes it where it is),
    /// and `output` gives the same bytes behind a zero header; super-packets list their inputs.
    func testSingleOutputsNameTheirInput() throws {
        let c = PacketCoalescer(maximumPackets: 16)
        let a = segments(.v4, sizes: [1000, 1000])
        let udp = TestFlow.v6.udp(payload: bytes(80, seed: 4))
        let icmp: [UInt8] = [0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2] + [UInt8](repeating: 8, count: 8)
        let out = coalesce([udp, a[0], icmp, a[1]], coalescer: c)
        XCTAssertEqual(out.map(\.segments), [1, 2, 1])
        XCTAssertEqual(c.singleInput(ofOutput: 0), 0)
        XCTAssertNil(c.singleInput(ofOutput: 1))
        XCTAssertEqual(c.singleInput(ofOutput: 2), 2)
        XCTAssertEqual(c.inputs(ofOutput: 1), [1, 3])
        XCTAssertEqual(c.gsoType(ofOutput: 1), .tcpV4)
        XCTAssertEqual(c.gsoType(ofOutput: 0), .none)
        XCTAssertEqual(out[0].bytes, [UInt8](repeating: 0, count: 10) + udp)
        XCTAssertEqual(out[2].bytes, [UInt8](repeating: 0, count: 10) + icmp)
        XCTAssertEqual(c.coalescedOutputs, 1)
    }

    /// A flow that comes back after more than `flowSearchDepth` other flows starts a new group;
    /// the flow's order is still kept.
    func testFlowsFarBackStartNewGroups() throws {
        let c = PacketCoalescer(maximumPackets: 64)
        let a = segments(.v4, sizes: [1000, 1000, 1000])
        var batch = [a[0]]
        for k in 0..<PacketCoalescer.flowSearchDepth {
            var f = TestFlow.v4
            f.sourcePort = 50000 + k
            batch.append(f.tcp(sequence: 1, options: timestamps, payload: bytes(100, seed: UInt64(k))))
        }
        batch += [a[1], a[2]]
        let out = coalesce(batch, coalescer: c)
        XCTAssertEqual(out.first?.segments, 1)
        XCTAssertEqual(out.last?.segments, 2)
        XCTAssertEqual(out.count, 2 + PacketCoalescer.flowSearchDepth)
        // Closer than that, the flow's group takes it.
        let near = [a[0]] + Array(batch[1..<PacketCoalescer.flowSearchDepth]) + [a[1], a[2]]
        XCTAssertEqual(coalesce(near, coalescer: c).first?.segments, 3)
    }

    func testUDPRunsAndGROSplitting() {
        let lengths = [1452, 1452, 1452, 800, 1452, 1452, 90, 1452]
        let dest = [0, 0, 0, 0, 0, 1, 1, 1]
        var runs = [Int]()
        var i = 0
        while i < lengths.count {
            let n = UDPSegmentation.runLength(from: i, count: lengths.count, length: { lengths[$0] },
                                              sameDestination: { dest[$0] == dest[$1] })
            runs.append(n)
            i += n
        }
        XCTAssertEqual(runs, [4, 1, 2, 1])
        let many = [Int](repeating: 1000, count: 200)
        XCTAssertEqual(UDPSegmentation.runLength(from: 0, count: 200, length: { many[$0] }, sameDestination: { _, _ in true }), 64)
        let big = [Int](repeating: 1452, count: 64)
        XCTAssertEqual(UDPSegmentation.runLength(from: 0, count: 64, length: { big[$0] }, sameDestination: { _, _ in true }),
                       UDPSegmentation.maximumPayload / 1452)
        XCTAssertEqual(UDPSegmentation.datagramCount(length: 3000, segmentSize: 1452), 3)
        XCTAssertEqual(UDPSegmentation.datagramRange(2, length: 3000, segmentSize: 1452), 2904..<3000)
        XCTAssertEqual(UDPSegmentation.datagramCount(length: 900, segmentSize: 1452), 1)
        XCTAssertEqual(UDPSegmentation.datagramCount(length: 900, segmentSize: 0), 1)
        XCTAssertEqual(UDPSegmentation.datagramRange(0, length: 900, segmentSize: 0), 0..<900)
        XCTAssertEqual(UDPSegmentation.datagramCount(length: 0, segmentSize: 100), 0)
    }
}
