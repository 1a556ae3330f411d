import XCTest
import WarrenPacket
import WarrenTestSupport
@testable import WireGuardDevice

/// The TUN offload path as the device drives it (WarrenPacket's `GSOSegmenter` resumed across
/// batches, checksums, `PacketCoalescer` over the device's packet buffers), checked against a naive RFC 1071
/// checksum written independently here (16-bit big-endian words, one at a time).
final class OffloadTests: XCTestCase {
    static func naiveSum(_ bytes: [UInt8]) -> UInt32 {
        var sum: UInt32 = 0
        var i = 0
        while i < bytes.count {
            let hi = UInt32(bytes[i])
            let lo = i + 1 < bytes.count ? UInt32(bytes[i + 1]) : 0
            sum += hi << 8 | lo
            i += 2
        }
        while sum >> 16 != 0 { sum = (sum & 0xffff) + (sum >> 16) }
        return sum
    }

    /// Whether the TCP checksum of a whole IPv4 or IPv6 packet verifies (the sum comes out 0xffff).
    static func tcpChecksumVerifies(_ p: [UInt8]) -> Bool {
        let isV6 = p[0] >> 4 == 6
        let l4 = isV6 ? 40 : Int(p[0] & 0x0f) * 4
        let tcpLength = p.count - l4
        var pseudo: [UInt8] = isV6 ? Array(p[8..<40]) : Array(p[12..<20])
        pseudo += isV6 ? [UInt8(tcpLength >> 24), UInt8((tcpLength >> 16) & 0xff), UInt8((tcpLength >> 8) & 0xff), UInt8(tcpLength & 0xff), 0, 0, 0, 6]
                       : [0, 6, UInt8(tcpLength >> 8), UInt8(tcpLength & 0xff)]
        return naiveSum(pseudo + Array(p[l4...])) == 0xffff
    }

    static func tcpPacket(isV6: Bool, payload: [UInt8], flags: UInt8 = 0x18, sequence: UInt32 = 0xfffff000,
                          options: [UInt8] = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]) -> [UInt8] {
        let tcpHeader = 20 + options.count
        var tcp: [UInt8] = [0x9c, 0x40, 0x14, 0x51]
        tcp += withUnsafeBytes(of: sequence.bigEndian, Array.init)
        tcp += [0, 0, 0, 7, UInt8(tcpHeader / 4) << 4, flags, 0xff, 0xff, 0, 0, 0, 0] + options
        let l4 = tcp + payload
        if isV6 {
            var ip: [UInt8] = [0x60, 0, 0, 0, UInt8(l4.count >> 8), UInt8(l4.count & 0xff), 6, 64]
            ip += IPAddress("fd00::1")!.bytes + IPAddress("fd00::2")!.bytes
            return ip + l4
        }
        let total = 20 + l4.count
        var ip: [UInt8] = [0x45, 0, UInt8(total >> 8), UInt8(total & 0xff), 0x12, 0x34, 0x40, 0, 64, 6, 0, 0]
        ip += IPAddress("10.0.0.1")!.bytes + IPAddress("10.0.0.2")!.bytes
        return ip + l4
    }

    /// Segments `packet` (a TSO super-packet as the kernel hands it over) with at most `perCall`
    /// outputs per call, resuming where the previous call stopped, as the device's reader does.
    static func segments(of packet: [UInt8], isV6: Bool, segmentSize: Int, perCall: Int) -> [[UInt8]]? {
        var out: [[UInt8]] = []
        let transportStart = isV6 ? 40 : 20
        let header = VirtioNetHeader(flags: .needsChecksum, gsoType: isV6 ? .tcpV6 : .tcpV4,
                                     headerLength: UInt16(transportStart + Int(packet[transportStart + 12] >> 4) * 4),
                                     gsoSize: UInt16(segmentSize), checksumStart: UInt16(transportStart), checksumOffset: 16)
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: 70_000 * perCall, alignment: 16)
        defer { scratch.deallocate() }
        guard let total = packet.withUnsafeBytes({ try? GSOSegmenter.segmentCount($0, header: header) }) else { return nil }
        var next = 0
        repeat {
            var lengths: [Int] = []
            let reached = packet.withUnsafeBytes { raw in
                try? GSOSegmenter.segment(raw, header: header, resumingAt: next) { _, n in
                    guard lengths.count < perCall else { return nil }
                    lengths.append(n)
                    return scratch + (lengths.count - 1) * 70_000
                }
            }
            guard let reached, reached > next else { return nil }
            for (i, n) in lengths.enumerated() {
                out.append(Array(UnsafeRawBufferPointer(start: scratch + i * 70_000, count: n)))
            }
            next = reached
        } while next < total
        return out
    }

    func testSegmentationRebuildsTheStream() throws {
        var rng = SeededGenerator(seed: 7)
        for isV6 in [false, true] {
            for (payloadCount, segmentSize, perCall) in [(5000, 1000, 64), (4001, 1000, 2), (1368 * 47 + 5, 1368, 64), (10, 1368, 1)] {
                let payload = (0..<payloadCount).map { _ in UInt8.random(in: 0...255, using: &rng) }
                let packet = Self.tcpPacket(isV6: isV6, payload: payload, flags: 0x80 | 0x18 | 0x01)
                let segs = try XCTUnwrap(Self.segments(of: packet, isV6: isV6, segmentSize: segmentSize, perCall: perCall))
                XCTAssertEqual(segs.count, (payloadCount + segmentSize - 1) / segmentSize)
                var rebuilt: [UInt8] = []
                let l4 = isV6 ? 40 : 20
                let headerLength = l4 + 32
                for (i, s) in segs.enumerated() {
                    XCTAssertTrue(Self.tcpChecksumVerifies(s), "TCP checksum of segment \(i)")
                    if isV6 {
                        XCTAssertEqual(Int(s[4]) << 8 | Int(s[5]), s.count - 40)
                    } else {
                        XCTAssertEqual(Self.naiveSum(Array(s[0..<20])), 0xffff, "IPv4 header checksum")
                        XCTAssertEqual(Int(s[2]) << 8 | Int(s[3]), s.count)
                        XCTAssertEqual(Int(s[4]) << 8 | Int(s[5]), 0x1234 + i)
                    }
                    let seq = UInt32(s[l4 + 4]) << 24 | UInt32(s[l4 + 5]) << 16 | UInt32(s[l4 + 6]) << 8 | UInt32(s[l4 + 7])
                    XCTAssertEqual(seq, 0xfffff000 &+ UInt32(rebuilt.count))
                    let flags = s[l4 + 13]
                    XCTAssertEqual(flags & 0x80 != 0, i == 0, "CWR only on the first segment")
                    XCTAssertEqual(flags & 0x09 != 0, i == segs.count - 1, "FIN/PSH only on the last segment")
                    XCTAssertEqual(Array(s[(l4 + 20)..<headerLength]), [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2], "options copied")
                    XCTAssertLessThanOrEqual(s.count - headerLength, segmentSize)
                    rebuilt += s[headerLength...]
                }
                XCTAssertEqual(rebuilt, payload)
            }
        }
    }

    func testCompleteChecksumMatchesNaive() {
        var rng = SeededGenerator(seed: 11)
        for count in [21, 64, 1399, 1400, 1401] {
            for isV6 in [false, true] {
                let payload = (0..<count).map { _ in UInt8.random(in: 0...255, using: &rng) }
                var packet = Self.tcpPacket(isV6: isV6, payload: payload)
                let l4 = isV6 ? 40 : 20
                // As the kernel leaves it: the checksum field holds the folded pseudo-header sum.
                let tcpLength = packet.count - l4
                var pseudo: [UInt8] = isV6 ? Array(packet[8..<40]) : Array(packet[12..<20])
                pseudo += [0, 6, UInt8(tcpLength >> 8), UInt8(tcpLength & 0xff)]
                let partial = Self.naiveSum(pseudo)
                packet[l4 + 16] = UInt8(partial >> 8)
                packet[l4 + 17] = UInt8(partial & 0xff)
                let header = VirtioNetHeader(flags: .needsChecksum, checksumStart: UInt16(l4), checksumOffset: 16)
                XCTAssertNoThrow(try packet.withUnsafeMutableBytes { try GSOSegmenter.completeChecksum($0, header: header) })
                XCTAssertTrue(Self.tcpChecksumVerifies(packet), "count \(count) v6 \(isV6)")
            }
        }
    }

    func testMalformedSuperPacketsAreRefused() throws {
        let packet = Self.tcpPacket(isV6: false, payload: Array(repeating: 1, count: 100))
        func header(start: UInt16 = 20, size: UInt16 = 50) -> VirtioNetHeader {
            VirtioNetHeader(flags: .needsChecksum, gsoType: .tcpV4, headerLength: 52, gsoSize: size,
                            checksumStart: start, checksumOffset: 16)
        }
        try packet.withUnsafeBytes { raw in
            XCTAssertThrowsError(try GSOSegmenter.segment(raw, header: header(start: 10), resumingAt: 0) { _, _ in nil })
            XCTAssertThrowsError(try GSOSegmenter.segment(UnsafeRawBufferPointer(rebasing: raw[0..<30]), header: header(),
                                                          resumingAt: 0) { _, _ in nil })
            XCTAssertThrowsError(try GSOSegmenter.segment(raw, header: header(size: 0), resumingAt: 0) { _, _ in nil })
            XCTAssertThrowsError(try GSOSegmenter.segment(raw, header: header(), resumingAt: 1000) { _, _ in nil })
            XCTAssertThrowsError(try GSOSegmenter.segment(raw, header: header(), resumingAt: -1) { _, _ in nil })
            // No room at all is not an error when resuming: nothing written, start again later.
            XCTAssertEqual(try GSOSegmenter.segment(raw, header: header(), resumingAt: 1) { _, _ in nil }, 1)
        }
        var short = Array(packet[0..<40])
        XCTAssertThrowsError(try short.withUnsafeMutableBytes {
            try GSOSegmenter.completeChecksum(UnsafeMutableRawBufferPointer(rebasing: $0[0..<40]),
                                              header: VirtioNetHeader(flags: .needsChecksum, checksumStart: 30, checksumOffset: 16))
        })
    }

    func testVirtioHeaderFields() throws {
        let bytes: [UInt8] = [1, 0x81, 0x42, 0, 0x58, 0x05, 20, 0, 16, 0]
        let h = try bytes.withUnsafeBytes { try VirtioNetHeader(decoding: $0) }
        XCTAssertEqual(h.flags, .needsChecksum)
        XCTAssertEqual(h.gsoType, .tcpV4, "the ECN bit is not part of the type")
        XCTAssertTrue(h.ecn)
        XCTAssertEqual(h.headerLength, 0x42)
        XCTAssertEqual(h.gsoSize, 1368)
        XCTAssertEqual(h.checksumStart, 20)
        XCTAssertEqual(h.checksumOffset, 16)
    }

    /// Segments go into device buffers the way the inbound path leaves them (at an offset), and
    /// coalescing puts the original super-packet back together.
    func testCoalescingUndoesSegmentation() throws {
        var rng = SeededGenerator(seed: 5)
        for isV6 in [false, true] {
            let payload = (0..<(1368 * 10 + 100)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let original = Self.tcpPacket(isV6: isV6, payload: payload, flags: 0x18)
            let segs = try XCTUnwrap(Self.segments(of: original, isV6: isV6, segmentSize: 1368, perCall: 64))
            XCTAssertEqual(segs.count, 11)
            let buffers = PacketBuffers(capacity: 16, slotSize: 2048)
            for (i, s) in segs.enumerated() { s.withUnsafeBytes { _ = buffers.store($0, in: i, at: 16) } }
            // One foreign packet after them (other port) ends the run.
            var other = Self.tcpPacket(isV6: isV6, payload: [1, 2, 3])
            other[isV6 ? 40 : 20] ^= 1
            other.withUnsafeBytes { _ = buffers.store($0, in: segs.count, at: 16) }
            let coalescer = PacketCoalescer(maximumPackets: 16)
            for i in 0...segs.count { XCTAssertTrue(coalescer.add(UnsafeRawBufferPointer(buffers.packet(i)))) }
            XCTAssertEqual(coalescer.finish(), 2)
            XCTAssertEqual(coalescer.segmentCount(ofOutput: 0), segs.count)
            XCTAssertNil(coalescer.singleInput(ofOutput: 0))
            XCTAssertEqual(coalescer.singleInput(ofOutput: 1), segs.count, "the foreign packet stays alone, written in place")
            let output = coalescer.output(0)
            let length = output.count
            let out = try XCTUnwrap(UnsafeMutableRawPointer(mutating: output.baseAddress))
            let header = try VirtioNetHeader(decoding: UnsafeRawBufferPointer(start: out, count: VirtioNetHeader.size))
            XCTAssertEqual(header.gsoType, isV6 ? .tcpV6 : .tcpV4)
            XCTAssertEqual(header.gsoSize, 1368)
            XCTAssertEqual(Int(header.checksumStart), isV6 ? 40 : 20)
            XCTAssertEqual(header.checksumOffset, 16)
            XCTAssertEqual(header.flags, .needsChecksum)
            var merged = Array(UnsafeRawBufferPointer(start: out + VirtioNetHeader.size, count: length - VirtioNetHeader.size))
            XCTAssertEqual(merged.count, original.count)
            let l4 = isV6 ? 40 : 20
            // The checksum is left partial (the pseudo-header sum): completing it must verify.
            XCTAssertNoThrow(try merged.withUnsafeMutableBytes {
                try GSOSegmenter.completeChecksum($0, header: VirtioNetHeader(flags: .needsChecksum, checksumStart: UInt16(l4),
                                                                              checksumOffset: 16))
            })
            XCTAssertTrue(Self.tcpChecksumVerifies(merged))
            if !isV6 { XCTAssertEqual(Self.naiveSum(Array(merged[0..<20])), 0xffff) }
            // Apart from the TCP checksum, what went in comes out.
            var expected = original
            for k in [l4 + 16, l4 + 17] { merged[k] = 0; expected[k] = 0 }
            if !isV6 { for k in [10, 11] { merged[k] = 0; expected[k] = 0 } }
            XCTAssertEqual(merged, expected)
        }
    }

    /// A UDP datagram with valid checksums (the coalescer merges only packets whose checksums verify).
    static func udpPacket(isV6: Bool, payload: [UInt8], sourcePort: UInt16 = 40000) -> [UInt8] {
        let udpLength = 8 + payload.count
        var udp: [UInt8] = [UInt8(sourcePort >> 8), UInt8(sourcePort & 0xff), 0x14, 0x51,
                            UInt8(udpLength >> 8), UInt8(udpLength & 0xff), 0, 0] + payload
        let source = isV6 ? IPAddress("fd00::1")!.bytes : IPAddress("10.0.0.1")!.bytes
        let destination = isV6 ? IPAddress("fd00::2")!.bytes : IPAddress("10.0.0.2")!.bytes
        let sum = naiveSum(source + destination + [0, 17, UInt8(udpLength >> 8), UInt8(udpLength & 0xff)] + udp)
        let checksum = sum == 0xffff ? 0xffff : ~sum & 0xffff
        udp[6] = UInt8(checksum >> 8)
        udp[7] = UInt8(checksum & 0xff)
        if isV6 {
            let ip: [UInt8] = [0x60, 0, 0, 0, UInt8(udp.count >> 8), UInt8(udp.count & 0xff), 17, 64]
            return ip + source + destination + udp
        }
        let total = 20 + udp.count
        var ip: [UInt8] = [0x45, 0, UInt8(total >> 8), UInt8(total & 0xff), 0, 1, 0x40, 0, 64, 17, 0, 0] + source + destination
        let headerSum = ~naiveSum(ip) & 0xffff
        ip[10] = UInt8(headerSum >> 8)
        ip[11] = UInt8(headerSum & 0xff)
        return ip + udp
    }

    func testUDPCoalescing() throws {
        var rng = SeededGenerator(seed: 9)
        for isV6 in [false, true] {
            let payloads = (0..<5).map { k in (0..<(k == 4 ? 300 : 1392)).map { _ in UInt8.random(in: 0...255, using: &rng) } }
            let buffers = PacketBuffers(capacity: 8, slotSize: 2048)
            for (i, payload) in payloads.enumerated() {
                Self.udpPacket(isV6: isV6, payload: payload).withUnsafeBytes { _ = buffers.store($0, in: i, at: 16) }
            }
            Self.udpPacket(isV6: isV6, payload: [1], sourcePort: 1).withUnsafeBytes { _ = buffers.store($0, in: 5, at: 16) }
            let coalescer = PacketCoalescer(maximumPackets: 8)
            for i in 0..<6 { XCTAssertTrue(coalescer.add(UnsafeRawBufferPointer(buffers.packet(i)))) }
            XCTAssertEqual(coalescer.finish(), 2, "the shorter datagram ends the run; the other flow is not merged")
            XCTAssertEqual(coalescer.segmentCount(ofOutput: 0), 5)
            XCTAssertEqual(coalescer.gsoType(ofOutput: 0), .udpL4)
            XCTAssertEqual(coalescer.singleInput(ofOutput: 1), 5)
            let output = coalescer.output(0)
            let length = output.count
            let out = try XCTUnwrap(UnsafeMutableRawPointer(mutating: output.baseAddress))
            let header = try VirtioNetHeader(decoding: UnsafeRawBufferPointer(start: out, count: VirtioNetHeader.size))
            XCTAssertEqual(header.gsoType, .udpL4)
            XCTAssertEqual(header.gsoSize, 1392)
            let l4 = isV6 ? 40 : 20
            XCTAssertEqual(Int(header.headerLength), l4 + 8)
            XCTAssertEqual(Int(header.checksumStart), l4)
            XCTAssertEqual(header.checksumOffset, 6)
            var merged = Array(UnsafeRawBufferPointer(start: out + VirtioNetHeader.size, count: length - VirtioNetHeader.size))
            XCTAssertEqual(Array(merged[(l4 + 8)...]), payloads.flatMap { $0 })
            XCTAssertEqual(Int(merged[l4 + 4]) << 8 | Int(merged[l4 + 5]), merged.count - l4)
            if !isV6 { XCTAssertEqual(Self.naiveSum(Array(merged[0..<20])), 0xffff) }
            // Completing the partial checksum gives a valid UDP checksum over the whole packet.
            XCTAssertNoThrow(try merged.withUnsafeMutableBytes {
                try GSOSegmenter.completeChecksum($0, header: VirtioNetHeader(flags: .needsChecksum, checksumStart: UInt16(l4),
                                                                              checksumOffset: 6))
            })
            let udpLength = merged.count - l4
            var pseudo: [UInt8] = isV6 ? Array(merged[8..<40]) : Array(merged[12..<20])
            pseudo += [0, 17, UInt8(udpLength >> 8), UInt8(udpLength & 0xff)]
            XCTAssertEqual(Self.naiveSum(pseudo + Array(merged[l4...])), 0xffff)
            // With UDP coalescing off (a kernel that refuses UDP GSO), every datagram stays alone.
            coalescer.reset()
            coalescer.coalescesUDP = false
            for i in 0..<6 { XCTAssertTrue(coalescer.add(UnsafeRawBufferPointer(buffers.packet(i)))) }
            XCTAssertEqual(coalescer.finish(), 6)
        }
    }
}
