import XCTest
import WarrenPacket
import WarrenTestSupport

final class TCPCoalescerTests: XCTestCase {
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
        let c = TCPCoalescer(maximumPackets: 64, maximumPacketLength: 1500)
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
        let c = TCPCoalescer(maximumPackets: 64, maximumPacketLength: 1500)
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
        let c = TCPCoalescer(maximumPackets: 16, maximumPacketLength: 1500)
        let out = coalesce([a[0], b[0], a[1], udp, b[1], a[2]], coalescer: c)
        XCTAssertEqual(out.map(\.segments), [3, 2, 1])
        try assertSuperPacket(out[0].bytes, equals: a)
        try assertSuperPacket(out[1].bytes, equals: b)
        XCTAssertEqual(out[2].bytes, [UInt8](repeating: 0, count: 10) + udp)
    }

    func testRulesThatEndAGroup() throws {
        let c = TCPCoalescer(maximumPackets: 16, maximumPacketLength: 1500)
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
        let c = TCPCoalescer(maximumPackets: 128, maximumPacketLength: 1500)
        let sizes = [Int](repeating: 1400, count: 60)
        let out = coalesce(segments(.v4, sizes: sizes), coalescer: c)
        XCTAssertEqual(out.map(\.segments).reduce(0, +), 60)
        XCTAssertEqual(out.count, 2)
        for o in out { XCTAssertLessThanOrEqual(o.bytes.count - 10, 65535) }
        XCTAssertEqual(out[0].segments, (65535 - 52) / 1400)
    }

    func testBatchFullIsReported() {
        let c = TCPCoalescer(maximumPackets: 2, maximumPacketLength: 1500)
        let s = segments(.v4, sizes: [1000, 1000, 1000])
        s[0].withUnsafeBytes { XCTAssertTrue(c.add($0)) }
        s[1].withUnsafeBytes { XCTAssertTrue(c.add($0)) }
        s[2].withUnsafeBytes { XCTAssertFalse(c.add($0)) }
        XCTAssertEqual(c.finish(), 1)
    }

    /// Random batches from a few flows, some segments damaged, dropped or reordered: every output
    /// is valid, and segmenting the outputs gives back exactly the input packets, each flow in order.
    func testFuzzCoalescerPreservesEveryPacket() throws {
        var rng = SeededGenerator(seed: 0xC0A1)
        let c = TCPCoalescer(maximumPackets: 96, maximumPacketLength: 1500)
        for round in 0..<60 {
            var flows = [TestFlow.v4, .v6, .v4]
            flows[2].destinationPort = 22
            var next = [UInt32](repeating: 77, count: 3)
            // Senders number their packets per flow (with DF, a coalesced group keeps only the first
            // Identification and segmentation renumbers from it).
            var ids = [Int](repeating: 1, count: 3)
            var batch = [[UInt8]]()
            for _ in 0..<Int.random(in: 1...90, using: &rng) {
                let f = Int.random(in: 0..<3, using: &rng)
                let size = Int.random(in: 0...10, using: &rng) < 8 ? 1300 : Int.random(in: 0...1300, using: &rng)
                var p = flows[f].tcp(sequence: next[f], flags: Int.random(in: 0..<10, using: &rng) == 0 ? 0x18 : 0x10,
                                     options: timestamps, payload: rng.bytes(count: size), id: ids[f])
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
                    recovered += try segmentToArrays(packet, header: header)
                }
            }
            XCTAssertEqual(recovered.count, batch.count, "round \(round)")
            // Per flow (by ports and version), the order is the input order.
            func key(_ p: [UInt8]) -> [UInt8] { p[0] >> 4 == 6 ? Array(p[40..<44]) + [6] : Array(p[20..<24]) + [4] }
            for k in Set(batch.map(key)) {
                XCTAssertEqual(recovered.filter { key($0) == k }, batch.filter { key($0) == k }, "round \(round)")
            }
        }
    }

    /// The coalescer's parser on mutated packets between two valid segments of the same flow:
    /// never a crash, every output decodes, and segmenting the outputs gives back every input.
    func testFuzzCoalescerParser() throws {
        let s4 = segments(.v4, sizes: [1000, 1000, 1000])
        let s6 = segments(.v6, sizes: [700, 700, 700])
        let c = TCPCoalescer(maximumPackets: 8, maximumPacketLength: 4200)
        var coalesced = 0
        try MutationFuzzer(seeds: [s4[1], s6[1], TestFlow.v4.udp(payload: bytes(50, seed: 1))], iterations: 3000,
                           maximumLength: 4096, seed: 0xFA57).run { input in
            let batch = input.first.map { $0 >> 4 == 6 } == true ? [s6[0], input, s6[2]] : [s4[0], input, s4[2]]
            let out = coalesce(batch, coalescer: c)
            var recovered = [[UInt8]]()
            for o in out {
                let header = try o.bytes.withUnsafeBytes { try VirtioNetHeader(decoding: $0) }
                let packet = Array(o.bytes[10...])
                recovered += header.gsoType == .none ? [packet] : try segmentToArrays(packet, header: header)
                if header.gsoType != .none { coalesced += 1 }
            }
            XCTAssertEqual(recovered.count, 3)
            XCTAssertEqual(Set(recovered), Set(batch))
        }
        XCTAssertGreaterThan(coalesced, 0)
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
