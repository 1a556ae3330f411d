import Foundation
import XCTest
import WarrenPacket
import WarrenTestSupport

final class GSOSegmenterTests: XCTestCase {
    /// TCP timestamps option as Linux sends it: NOP NOP TS(10) val ecr.
    let timestamps: [UInt8] = [1, 1, 8, 10, 0, 1, 0xE2, 0x40, 0, 0, 0x30, 0x39]

    func payload(_ count: Int, seed: UInt64 = 1) -> [UInt8] {
        var rng = SeededGenerator(seed: seed)
        return rng.bytes(count: count)
    }

    /// A super-packet as the kernel hands it over a TUN with TSO: full IP length, the TCP
    /// checksum field holding the pseudo-header sum, NEEDS_CSUM.
    func superPacket(_ flow: TestFlow, payload: [UInt8], mss: Int, flags: UInt8 = 0x18, sequence: UInt32 = 0xFFFF_F000,
                     options: [UInt8]? = nil) -> ([UInt8], VirtioNetHeader) {
        let options = options ?? timestamps
        let packet = flow.tcp(sequence: sequence, flags: flags, options: options, payload: payload, checksum: .partial)
        let t = flow.v6 ? 40 : 20
        let header = VirtioNetHeader(flags: .needsChecksum, gsoType: flow.v6 ? .tcpV6 : .tcpV4,
                                     headerLength: UInt16(t + 20 + options.count), gsoSize: UInt16(mss),
                                     checksumStart: UInt16(t), checksumOffset: 16)
        return (packet, header)
    }

    func testVirtioHeaderLayoutIsLittleEndianTenBytes() throws {
        let h = VirtioNetHeader(flags: .needsChecksum, gsoType: .tcpV4, ecn: true, headerLength: 0x0102,
                                gsoSize: 1448, checksumStart: 20, checksumOffset: 16)
        XCTAssertEqual(h.bytes, [0x01, 0x81, 0x02, 0x01, 0xA8, 0x05, 20, 0, 16, 0])
        let decoded = try h.bytes.withUnsafeBytes { try VirtioNetHeader(decoding: $0) }
        XCTAssertEqual(decoded, h)
        XCTAssertThrowsError(try [UInt8](repeating: 0, count: 9).withUnsafeBytes { try VirtioNetHeader(decoding: $0) }) {
            XCTAssertEqual(($0 as? OffloadError)?.code, .truncatedHeader)
        }
        XCTAssertThrowsError(try [UInt8]([0, 2, 0, 0, 0, 0, 0, 0, 0, 0]).withUnsafeBytes { try VirtioNetHeader(decoding: $0) }) {
            XCTAssertEqual(($0 as? OffloadError)?.code, .unsupportedGSOType)
        }
    }

    func testTCPv4SegmentsHaveLengthsIDsSequencesFlagsAndChecksums() throws {
        let data = payload(5000)
        let (packet, header) = superPacket(.v4, payload: data, mss: 1448, flags: 0x19 | 0x80)  // FIN PSH ACK CWR
        let segments = try segmentToArrays(packet, header: header)
        XCTAssertEqual(segments.count, 4)
        XCTAssertEqual(try packet.withUnsafeBytes { try GSOSegmenter.segmentCount($0, header: header) }, 4)
        var reassembled = [UInt8]()
        for (i, s) in segments.enumerated() {
            let c = try XCTUnwrap(check(s))
            XCTAssertTrue(c.ipLengthOK, "segment \(i) IP length")
            XCTAssertTrue(c.ipChecksumOK, "segment \(i) IP checksum")
            XCTAssertTrue(c.transportChecksumOK, "segment \(i) TCP checksum")
            XCTAssertEqual(c.id, 0x1234 + i)
            XCTAssertEqual(read32(s, 24), 0xFFFF_F000 &+ UInt32(i * 1448), "sequence wraps around correctly")
            let flags = s[33]
            XCTAssertEqual(flags & 0x10, 0x10, "ACK on every segment")
            XCTAssertEqual(flags & 0x09 != 0, i == 3, "FIN/PSH only on the last")
            XCTAssertEqual(flags & 0x80 != 0, i == 0, "CWR only on the first")
            XCTAssertEqual(Array(s[40..<52]), timestamps, "options repeated")
            XCTAssertEqual(s.count, i < 3 ? 52 + 1448 : 52 + 5000 - 3 * 1448)
            reassembled += s[52...]
        }
        XCTAssertEqual(reassembled, data)
    }

    func testTCPv6OddSizesAndNoOptions() throws {
        let data = payload(3333, seed: 7)
        let (packet, header) = superPacket(.v6, payload: data, mss: 1001, flags: 0x10, options: [])
        let segments = try segmentToArrays(packet, header: header)
        XCTAssertEqual(segments.map(\.count), [1061, 1061, 1061, 60 + 330])
        var reassembled = [UInt8]()
        for (i, s) in segments.enumerated() {
            let c = try XCTUnwrap(check(s))
            XCTAssertTrue(c.v6 && c.ipLengthOK && c.transportChecksumOK, "segment \(i)")
            XCTAssertEqual(read32(s, 44), 0xFFFF_F000 &+ UInt32(i * 1001))
            XCTAssertEqual(Array(s[0..<4]), [0x60, 0x00, 0x12, 0x34], "flow label kept")
            reassembled += s[60...]
        }
        XCTAssertEqual(reassembled, data)
    }

    func testPayloadNotAboveGSOSizeGivesOneCompletePacket() throws {
        for flow in [TestFlow.v4, .v6] {
            let data = payload(999)
            let (packet, header) = superPacket(flow, payload: data, mss: 1448)
            let segments = try segmentToArrays(packet, header: header)
            XCTAssertEqual(segments.count, 1)
            XCTAssertEqual(segments[0], flow.tcp(sequence: 0xFFFF_F000, flags: 0x18, options: timestamps, payload: data),
                           "the same bytes as a packet built with its checksum")
        }
    }

    func testUDPL4SegmentationBothFamilies() throws {
        for flow in [TestFlow.v4, .v6] {
            let data = payload(4000, seed: 3)
            let packet = flow.udp(payload: data, checksum: .partial)
            let t = flow.v6 ? 40 : 20
            let header = VirtioNetHeader(flags: .needsChecksum, gsoType: .udpL4, headerLength: UInt16(t + 8),
                                         gsoSize: 1200, checksumStart: UInt16(t), checksumOffset: 6)
            let segments = try segmentToArrays(packet, header: header)
            XCTAssertEqual(segments.count, 4)
            var reassembled = [UInt8]()
            for (i, s) in segments.enumerated() {
                let c = try XCTUnwrap(check(s))
                XCTAssertTrue(c.ipLengthOK && c.ipChecksumOK && c.transportChecksumOK, "\(flow.v6) segment \(i)")
                XCTAssertEqual(read16(s, t + 4), s.count - t, "UDP length")
                if !flow.v6 { XCTAssertEqual(c.id, 0x1234 + i) }
                // Each segment is exactly the datagram a sender would have built.
                XCTAssertEqual(s, flow.udp(payload: Array(s[(t + 8)...]), id: 0x1234 + (flow.v6 ? 0 : i)))
                reassembled += s[(t + 8)...]
            }
            XCTAssertEqual(reassembled, data)
        }
    }

    func testNonGSOPacketGetsItsChecksumFinished() throws {
        for flow in [TestFlow.v4, .v6] {
            let data = payload(777)
            let partial = flow.tcp(sequence: 5, payload: data, checksum: .partial)
            let t = flow.v6 ? 40 : 20
            let header = VirtioNetHeader(flags: .needsChecksum, gsoType: .none, checksumStart: UInt16(t), checksumOffset: 16)
            XCTAssertEqual(try segmentToArrays(partial, header: header), [flow.tcp(sequence: 5, payload: data)])
            var inPlace = partial
            try inPlace.withUnsafeMutableBytes { try GSOSegmenter.completeChecksum($0, header: header) }
            XCTAssertEqual(inPlace, flow.tcp(sequence: 5, payload: data))
            // Without NEEDS_CSUM nothing changes.
            XCTAssertEqual(try segmentToArrays(partial, header: VirtioNetHeader()), [partial])
        }
    }

    func testMalformedSuperPacketsAreRefused() throws {
        let (packet, header) = superPacket(.v4, payload: payload(3000), mss: 1000)
        func code(_ p: [UInt8], _ h: VirtioNetHeader) -> OffloadError.Code? {
            do {
                _ = try segmentToArrays(p, header: h)
                return nil
            } catch let e as OffloadError {
                return e.code
            } catch {
                return nil
            }
        }
        var h = header
        h.gsoSize = 0
        XCTAssertEqual(code(packet, h), .malformedPacket)
        h = header
        h.gsoType = .tcpV6
        XCTAssertEqual(code(packet, h), .malformedPacket, "TCPV6 on IPv4")
        h = header
        h.checksumStart = 24
        XCTAssertEqual(code(packet, h), .malformedPacket, "csum_start not at the TCP header")
        h = header
        h.gsoType = .udpFragmentation
        XCTAssertEqual(code(packet, h), .unsupportedGSOType)
        var udpProto = packet
        udpProto[9] = 17
        XCTAssertEqual(code(udpProto, header), .malformedPacket)
        XCTAssertEqual(code(Array(packet[0..<30]), header), .malformedPacket, "TCP header cut")
        XCTAssertEqual(code(packet, header), nil)
        // Too little output room.
        XCTAssertThrowsError(try segmentToArrays(packet, header: header, slotSize: 1000)) {
            XCTAssertEqual(($0 as? OffloadError)?.code, .outputTooSmall)
        }
    }

    /// Segments cross-checked by Python: its own RFC 1071 sum, IPv4/IPv6 lengths, sequence numbers.
    func testSegmentsVerifiedByPython() throws {
        var hexLines = [String]()
        for flow in [TestFlow.v4, .v6] {
            for (size, mss) in [(9000, 1448), (4097, 1377), (65000, 1380)] {
                let (packet, header) = superPacket(flow, payload: payload(size, seed: UInt64(size)), mss: mss)
                for s in try segmentToArrays(packet, header: header) {
                    hexLines.append(s.map { String(format: "%02x", $0) }.joined())
                }
            }
        }
        let script = """
        import sys, struct
        def csum(b):
            if len(b) % 2: b += b'\\x00'
            s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
            while s >> 16: s = (s & 0xffff) + (s >> 16)
            return s
        bad = 0; n = 0
        for line in sys.stdin:
            p = bytes.fromhex(line.strip()); n += 1
            if p[0] >> 4 == 4:
                ihl = (p[0] & 15) * 4
                ok = struct.unpack('!H', p[2:4])[0] == len(p) and csum(p[:ihl]) == 0xffff
                seg = p[ihl:]; pseudo = p[12:20] + struct.pack('!BBH', 0, p[9], len(seg))
            else:
                ok = struct.unpack('!H', p[4:6])[0] + 40 == len(p)
                seg = p[40:]; pseudo = p[8:40] + struct.pack('!IxxxB', len(seg), p[6])
            ok = ok and csum(pseudo + seg) == 0xffff
            bad += 0 if ok else 1
        print(n, bad)
        """
        let output = try runPython(script, input: hexLines.joined(separator: "\n") + "\n")
        XCTAssertEqual(output.trimmingCharacters(in: .whitespacesAndNewlines), "\(hexLines.count) 0")
    }

    func runPython(_ script: String, input: String) throws -> String {
        do {
            return try PythonRunner.run(script, input: input)
        } catch let failure as PythonRunner.Failure where failure.kind == .unavailable {
            throw XCTSkip(failure.message)
        }
    }

    /// The virtio-net header decoder and the segmenter on mutated headers and packets: never a
    /// crash, and every segment that comes out is a well-formed packet with valid checksums.
    func testFuzzHeaderParserAndSegmenter() {
        var seeds = [[UInt8]]()
        for flow in [TestFlow.v4, .v6] {
            let (p, h) = superPacket(flow, payload: payload(3000), mss: 1000)
            seeds.append(h.bytes + p)
            let u = flow.udp(payload: payload(2500), checksum: .partial)
            let t = flow.v6 ? 40 : 20
            seeds.append(VirtioNetHeader(flags: .needsChecksum, gsoType: .udpL4, headerLength: UInt16(t + 8), gsoSize: 700,
                                         checksumStart: UInt16(t), checksumOffset: 6).bytes + u)
        }
        let slot = 65536
        let storage = UnsafeMutableRawPointer.allocate(byteCount: 8 * slot, alignment: 16)
        defer { storage.deallocate() }
        var produced = 0
        MutationFuzzer(seeds: seeds, iterations: 4000, maximumLength: 8192, seed: 0x0FF1_0AD).run { input in
            input.withUnsafeBytes { raw in
                guard let header = try? VirtioNetHeader(decoding: raw) else { return }
                let packet = UnsafeRawBufferPointer(rebasing: raw[VirtioNetHeader.size...])
                var lengths = [Int]()
                guard let n = try? GSOSegmenter.segment(packet, header: header, into: { index, length in
                    guard index < 8, length <= slot else { return nil }
                    lengths.append(length)
                    return storage + index * slot
                }) else { return }
                XCTAssertEqual(n, lengths.count)
                if header.gsoType == .tcpV4 || header.gsoType == .tcpV6 || header.gsoType == .udpL4 {
                    for i in 0..<n {
                        let s = Array(UnsafeRawBufferPointer(start: storage + i * slot, count: lengths[i]))
                        guard let c = check(s) else { return XCTFail("segment too short") }
                        XCTAssertTrue(c.ipLengthOK && c.transportChecksumOK, "fuzzed segment \(i)")
                        produced += 1
                    }
                }
            }
        }
        XCTAssertGreaterThan(produced, 0, "some mutated inputs still segment")
    }
}
