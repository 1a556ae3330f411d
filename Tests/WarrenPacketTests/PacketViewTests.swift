import Foundation
import XCTest
import WarrenPacket
import WarrenTestSupport

func hex(_ text: String) -> [UInt8] {
    let digits = Array(text.filter { $0.isHexDigit })
    return stride(from: 0, to: digits.count, by: 2).map { UInt8(String(digits[$0...$0 + 1]), radix: 16)! }
}

func ip(_ text: String) -> IPAddress { IPAddress(text)! }

final class PacketViewTests: XCTestCase {
    /// The worked IPv4 header-checksum example (header 4500 0073 0000 4000 4011 b861 c0a8 0001 c0a8 00c7).
    func testIPv4HeaderFieldsAndPublishedChecksum() {
        let header = hex("4500 0073 0000 4000 4011 b861 c0a8 0001 c0a8 00c7")
        let packet = header + [UInt8](repeating: 0, count: 0x73 - 20)
        packet.withUnsafeBytes { buffer in
            guard let v4 = IPv4Header(buffer) else { return XCTFail("should parse") }
            XCTAssertEqual(v4.headerLength, 20)
            XCTAssertEqual(v4.totalLength, 115)
            XCTAssertEqual(v4.identification, 0)
            XCTAssertTrue(v4.dontFragment)
            XCTAssertFalse(v4.moreFragments)
            XCTAssertEqual(v4.fragmentOffset, 0)
            XCTAssertEqual(v4.timeToLive, 64)
            XCTAssertEqual(v4.protocolNumber, .udp)
            XCTAssertEqual(v4.headerChecksum, 0xB861)
            XCTAssertEqual(v4.source, ip("192.168.0.1"))
            XCTAssertEqual(v4.destination, ip("192.168.0.199"))
            XCTAssertTrue(v4.isChecksumValid)
            XCTAssertEqual(IPv4Header.computeChecksum(header: UnsafeRawBufferPointer(rebasing: buffer[0..<20])), 0xB861)
            XCTAssertEqual(v4.payload.count, 95)
        }
        var corrupted = packet
        corrupted[15] ^= 0x01
        corrupted.withUnsafeBytes { XCTAssertEqual(IPv4Header($0)?.isChecksumValid, false) }
    }

    /// A TCP SYN from 192.0.2.1:49152 to 198.51.100.7:22, laid out by hand from RFC 791 and RFC 9293.
    func testHandBuiltIPv4TCPSyn() {
        let packet = hex("""
            45 00 00 2c  1c 46 40 00  40 06 00 00  c0 00 02 01  c6 33 64 07
            c0 00 00 16  00 00 00 64  00 00 00 00  60 02 fa f0  00 00 00 00
            02 04 05 b4
            """)
        guard let summary = PacketSummary(parsing: packet) else { return XCTFail("should parse") }
        XCTAssertEqual(summary.version, .v4)
        XCTAssertEqual(summary.proto, .tcp)
        XCTAssertEqual(summary.src, ip("192.0.2.1"))
        XCTAssertEqual(summary.dst, ip("198.51.100.7"))
        XCTAssertEqual(summary.srcPort, 49152)
        XCTAssertEqual(summary.dstPort, 22)
        XCTAssertEqual(summary.tcpFlags, .syn)
        XCTAssertTrue(summary.tcpFlags.isInitialSYN)
        XCTAssertEqual(summary.fragment, .unfragmented)
        XCTAssertEqual(summary.length, 44)
        XCTAssertEqual(summary.transportLength, 24)
        packet.withUnsafeBytes { buffer in
            let tcp = TCPHeader(UnsafeRawBufferPointer(rebasing: buffer[20...]))!
            XCTAssertEqual(tcp.sequenceNumber, 100)
            XCTAssertEqual(tcp.dataOffset, 6)
            XCTAssertEqual(tcp.headerLength, 24)
            XCTAssertEqual(tcp.window, 0xFAF0)
            XCTAssertTrue(tcp.isDataOffsetValid)
            XCTAssertEqual(tcp.payload?.count, 0)
        }
    }

    /// A UDP datagram fd7a:115c:a1e0::1 port 41641 to fd7a:115c:a1e0::2 port 53 with 4 data bytes (RFC 8200, RFC 768).
    func testHandBuiltIPv6UDP() {
        let packet = hex("""
            60 00 00 00  00 0c 11 40
            fd 7a 11 5c a1 e0 00 00 00 00 00 00 00 00 00 01
            fd 7a 11 5c a1 e0 00 00 00 00 00 00 00 00 00 02
            a2 a9 00 35  00 0c 00 00  de ad be ef
            """)
        guard let summary = PacketSummary(parsing: packet) else { return XCTFail("should parse") }
        XCTAssertEqual(summary.version, .v6)
        XCTAssertEqual(summary.proto, .udp)
        XCTAssertEqual(summary.src, ip("fd7a:115c:a1e0::1"))
        XCTAssertEqual(summary.dst, ip("fd7a:115c:a1e0::2"))
        XCTAssertEqual(summary.srcPort, 41641)
        XCTAssertEqual(summary.dstPort, 53)
        XCTAssertFalse(summary.hasIPv6OptionHeaders)
        packet.withUnsafeBytes { buffer in
            let v6 = IPv6Header(buffer)!
            XCTAssertEqual(v6.payloadLength, 12)
            XCTAssertEqual(v6.hopLimit, 64)
            XCTAssertEqual(v6.nextHeader, .udp)
            let udp = UDPHeader(v6.payload)!
            XCTAssertEqual(udp.length, 12)
            XCTAssertTrue(udp.isLengthValid)
            XCTAssertEqual(udp.payload.map(Array.init), [0xDE, 0xAD, 0xBE, 0xEF])
        }
    }

    func testRejectsMalformedIPHeaders() {
        let good = PacketBuilder.udp(src: ip("10.0.0.1"), dst: ip("10.0.0.2"), srcPort: 1, dstPort: 2)
        XCTAssertNotNil(PacketSummary(parsing: good))
        XCTAssertNil(PacketSummary(parsing: [UInt8]()))
        XCTAssertNil(PacketSummary(parsing: Array(good[0..<19])))
        var badIHL = good; badIHL[0] = 0x44
        XCTAssertNil(PacketSummary(parsing: badIHL))
        var longIHL = good; longIHL[0] = 0x4F  // 60-byte header in a 28-byte packet
        XCTAssertNil(PacketSummary(parsing: longIHL))
        var badVersion = good; badVersion[0] = 0x55
        XCTAssertNil(PacketSummary(parsing: badVersion))
        var tooLong = good; tooLong[3] += 1  // total length past the buffer
        XCTAssertNil(PacketSummary(parsing: tooLong))
        var shorterThanHeader = good; shorterThanHeader[2] = 0; shorterThanHeader[3] = 19
        XCTAssertNil(PacketSummary(parsing: shorterThanHeader))
        var noUDPHeader = good; noUDPHeader[3] = 24  // total length cuts the UDP header
        XCTAssertNil(PacketSummary(parsing: noUDPHeader))
        // Link padding after Total Length is not part of the datagram.
        let padded = good + [0, 0, 0, 0]
        XCTAssertEqual(PacketSummary(parsing: padded)?.length, good.count)
        XCTAssertEqual(PacketSummary(parsing: padded)?.transportLength, 8)

        let v6 = PacketBuilder.udp(src: ip("::1"), dst: ip("::2"), srcPort: 1, dstPort: 2)
        XCTAssertNotNil(PacketSummary(parsing: v6))
        XCTAssertNil(PacketSummary(parsing: Array(v6[0..<39])))
        var v6Long = v6; v6Long[5] += 1
        XCTAssertNil(PacketSummary(parsing: v6Long))
        XCTAssertNil(PacketSummary(parsing: Array(v6.dropLast())))
    }

    func testIPv4Fragments() {
        let src = ip("10.0.0.1"), dst = ip("10.0.0.2")
        let segment = PacketBuilder.tcpSegment(src: src, dst: dst, srcPort: 1000, dstPort: 443, flags: .syn)
        let first = PacketBuilder.ipv4(src: src, dst: dst, proto: .tcp, payload: segment, moreFragments: true)
        XCTAssertEqual(PacketSummary(parsing: first)?.fragment, .first)
        XCTAssertEqual(PacketSummary(parsing: first)?.dstPort, 443)
        XCTAssertEqual(PacketSummary(parsing: first)?.isFirstFragment, true)
        let later = PacketBuilder.ipv4(src: src, dst: dst, proto: .tcp, payload: [1, 2, 3], moreFragments: true,
                                       fragmentOffset: 185)
        let summary = PacketSummary(parsing: later)
        XCTAssertEqual(summary?.fragment, .later(offset: 185))
        XCTAssertEqual(summary?.isFragment, true)
        XCTAssertEqual(summary?.dstPort, 0)
        XCTAssertEqual(summary?.transportLength, 0)
        // A first fragment too short for the TCP header is malformed (RFC 1858).
        let tiny = PacketBuilder.ipv4(src: src, dst: dst, proto: .tcp, payload: Array(segment[0..<8]), moreFragments: true)
        XCTAssertNil(PacketSummary(parsing: tiny))
        // Fragmented TSMP is refused.
        let tsmp = PacketBuilder.ipv4(src: src, dst: dst, proto: .tsmp, payload: [UInt8](repeating: 0, count: 8),
                                      moreFragments: true)
        XCTAssertNil(PacketSummary(parsing: tsmp))
        packet(later) { XCTAssertTrue(IPv4Header($0)!.isFragment) }
    }

    func testIPv6ExtensionHeaders() {
        let src = ip("2001:db8::1"), dst = ip("2001:db8::2")
        let tcp = PacketBuilder.tcpSegment(src: src, dst: dst, srcPort: 5, dstPort: 80, flags: [.syn])
        // Hop-by-Hop, Routing, Destination Options, then TCP.
        let chain = PacketBuilder.ipv6OptionsHeader(nextHeader: .ipv6Routing, data: [5, 2, 0, 0])
            + PacketBuilder.ipv6OptionsHeader(nextHeader: .ipv6DestinationOptions, data: [UInt8](repeating: 0, count: 14))
            + PacketBuilder.ipv6OptionsHeader(nextHeader: .tcp)
        let withOptions = PacketBuilder.ipv6(src: src, dst: dst, nextHeader: .hopByHop, payload: chain + tcp)
        let summary = PacketSummary(parsing: withOptions)
        XCTAssertEqual(summary?.proto, .tcp)
        XCTAssertEqual(summary?.dstPort, 80)
        XCTAssertEqual(summary?.hasIPv6OptionHeaders, true)
        packet(withOptions) { buffer in
            let walked = IPv6Header(buffer)!.walkExtensionHeaders()
            XCTAssertEqual(walked?.optionHeaderCount, 3)
            XCTAssertEqual(walked?.upperOffset, 40 + 8 + 16 + 8)
            XCTAssertNil(walked?.fragment)
        }

        // Fragment header: first and later fragments.
        let firstFragment = PacketBuilder.ipv6(src: src, dst: dst, nextHeader: .ipv6Fragment,
            payload: PacketBuilder.ipv6FragmentHeader(nextHeader: .tcp, offset: 0, moreFragments: true,
                                                      identification: 0xABCD) + tcp)
        XCTAssertEqual(PacketSummary(parsing: firstFragment)?.fragment, .first)
        XCTAssertEqual(PacketSummary(parsing: firstFragment)?.dstPort, 80)
        XCTAssertEqual(PacketSummary(parsing: firstFragment)?.hasIPv6OptionHeaders, false)
        let laterFragment = PacketBuilder.ipv6(src: src, dst: dst, nextHeader: .ipv6Fragment,
            payload: PacketBuilder.ipv6FragmentHeader(nextHeader: .tcp, offset: 100, moreFragments: false,
                                                      identification: 0xABCD) + [1, 2, 3])
        XCTAssertEqual(PacketSummary(parsing: laterFragment)?.fragment, .later(offset: 100))
        XCTAssertEqual(PacketSummary(parsing: laterFragment)?.proto, .tcp)
        packet(laterFragment) { buffer in
            XCTAssertEqual(IPv6Header(buffer)!.walkExtensionHeaders()?.fragment,
                           IPv6Header.Fragment(offset: 100, moreFragments: false, identification: 0xABCD))
        }

        // Hop-by-Hop anywhere but first is malformed.
        let lateHopByHop = PacketBuilder.ipv6(src: src, dst: dst, nextHeader: .ipv6DestinationOptions,
            payload: PacketBuilder.ipv6OptionsHeader(nextHeader: .hopByHop) + PacketBuilder.ipv6OptionsHeader(nextHeader: .tcp) + tcp)
        XCTAssertNil(PacketSummary(parsing: lateHopByHop))
        // Two fragment headers are malformed.
        let twoFragments = PacketBuilder.ipv6(src: src, dst: dst, nextHeader: .ipv6Fragment,
            payload: PacketBuilder.ipv6FragmentHeader(nextHeader: .ipv6Fragment, offset: 0, moreFragments: true, identification: 1)
                + PacketBuilder.ipv6FragmentHeader(nextHeader: .tcp, offset: 0, moreFragments: true, identification: 1) + tcp)
        XCTAssertNil(PacketSummary(parsing: twoFragments))
        // The walk is bounded: 8 option headers pass, 9 do not.
        func optionChain(_ count: Int) -> [UInt8] {
            var payload = tcp
            for _ in 0..<count { payload = PacketBuilder.ipv6OptionsHeader(nextHeader: .ipv6DestinationOptions) + payload }
            // Fix the innermost Next Header: the last option header must point at TCP.
            payload[(count - 1) * 8] = IPProtocol.tcp.rawValue
            return PacketBuilder.ipv6(src: src, dst: dst, nextHeader: .ipv6DestinationOptions, payload: payload)
        }
        XCTAssertEqual(PacketSummary(parsing: optionChain(8))?.dstPort, 80)
        XCTAssertNil(PacketSummary(parsing: optionChain(9)))
        // A header whose length runs past the datagram.
        var overrun = PacketBuilder.ipv6(src: src, dst: dst, nextHeader: .ipv6DestinationOptions,
                                         payload: PacketBuilder.ipv6OptionsHeader(nextHeader: .tcp) + tcp)
        overrun[41] = 200
        XCTAssertNil(PacketSummary(parsing: overrun))
    }

    func testICMPEchoAndErrors() {
        for (a, b) in [(ip("100.64.0.1"), ip("100.64.0.2")), (ip("fd7a:115c:a1e0::1"), ip("fd7a:115c:a1e0::2"))] {
            let request = PacketBuilder.icmpEcho(src: a, dst: b, identifier: 0x1234, sequence: 7, payload: [9, 9])
            let summary = PacketSummary(parsing: request)!
            XCTAssertTrue(summary.isICMP)
            XCTAssertTrue(summary.isICMPEchoRequest)
            XCTAssertFalse(summary.isICMPEchoReply)
            XCTAssertFalse(summary.isICMPError)
            XCTAssertEqual(summary.echoIdentifier, 0x1234)
            XCTAssertEqual(summary.icmpType, a.version == .v4 ? 8 : 128)
            let reply = PacketSummary(parsing: PacketBuilder.icmpEcho(src: b, dst: a, reply: true, identifier: 0x1234))!
            XCTAssertTrue(reply.isICMPEchoReply)

            let original = PacketBuilder.udp(src: a, dst: b, srcPort: 4000, dstPort: 53, payload: [1, 2, 3])
            let unreachableType: UInt8 = a.version == .v4 ? 3 : 1
            let error = PacketBuilder.icmpError(src: b, dst: a, type: unreachableType, code: 3, invoking: original)
            let errorSummary = PacketSummary(parsing: error)!
            XCTAssertTrue(errorSummary.isICMPError)
            XCTAssertEqual(errorSummary.icmpCode, 3)
            XCTAssertNil(errorSummary.echoIdentifier)
            packet(error) { buffer in
                let headerLength = a.version == .v4 ? IPv4Header(buffer)!.headerLength : 40
                let icmp = ICMPHeader(UnsafeRawBufferPointer(rebasing: buffer[headerLength...]), version: a.version)!
                XCTAssertTrue(icmp.isError)
                let inner = icmp.invokingPacket.flatMap { PacketSummary(parsing: $0) }
                XCTAssertEqual(inner, PacketSummary(parsing: original))
            }
            XCTAssertEqual(PacketChecksums.transportChecksumIsValid(error), true)
        }
        // A 4-byte ICMP message parses but is neither an error nor an echo (no full header).
        let short = PacketBuilder.ipv4(src: ip("1.1.1.1"), dst: ip("2.2.2.2"), proto: .icmpv4, payload: [3, 0, 0, 0])
        XCTAssertEqual(PacketSummary(parsing: short)?.isICMPError, false)
        XCTAssertNil(PacketSummary(parsing: PacketBuilder.ipv4(src: ip("1.1.1.1"), dst: ip("2.2.2.2"), proto: .icmpv4,
                                                               payload: [3, 0, 0])))
    }

    func testTCPAndUDPHeaderValidity() {
        var segment = PacketBuilder.tcpSegment(src: ip("1.1.1.1"), dst: ip("2.2.2.2"), srcPort: 1, dstPort: 2,
                                               flags: [.ack, .psh], payload: [1, 2, 3])
        segment.withUnsafeBytes { XCTAssertEqual(TCPHeader($0)?.payload?.count, 3) }
        segment[12] = 0x40  // data offset 4: invalid
        segment.withUnsafeBytes { XCTAssertEqual(TCPHeader($0)?.isDataOffsetValid, false); XCTAssertNil(TCPHeader($0)?.payload) }
        segment[12] = 0xF0  // 60 bytes: past the segment
        segment.withUnsafeBytes { XCTAssertEqual(TCPHeader($0)?.isDataOffsetValid, false) }
        var datagram = PacketBuilder.udpDatagram(src: ip("1.1.1.1"), dst: ip("2.2.2.2"), srcPort: 1, dstPort: 2, payload: [7])
        datagram[5] = 20
        datagram.withUnsafeBytes { XCTAssertEqual(UDPHeader($0)?.isLengthValid, false) }
        XCTAssertNil([UInt8](repeating: 0, count: 7).withUnsafeBytes { UDPHeader($0) })
        XCTAssertNil([UInt8](repeating: 0, count: 19).withUnsafeBytes { TCPHeader($0) })
    }

    /// Builds random packets of every kind and checks that parsing gives back what was built
    /// and that every checksum verifies.
    func testBuilderRoundTrips() {
        var rng = SeededGenerator(seed: 0xB0B)
        for _ in 0..<2_000 {
            let v6 = Bool.random(using: &rng)
            let src: IPAddress = v6 ? .v6(rng.next(), rng.next()) : .v4(UInt32.random(in: 0...UInt32.max, using: &rng))
            let dst: IPAddress = v6 ? .v6(rng.next(), rng.next()) : .v4(UInt32.random(in: 0...UInt32.max, using: &rng))
            let sp = UInt16.random(in: 0...65535, using: &rng), dp = UInt16.random(in: 0...65535, using: &rng)
            let payload = rng.bytes(count: Int.random(in: 0...64, using: &rng))
            let packet: [UInt8]
            var expected = PacketSummary(version: v6 ? .v6 : .v4, proto: .tcp, src: src, dst: dst)
            switch Int.random(in: 0..<3, using: &rng) {
            case 0:
                let flags = TCPFlags(rawValue: UInt8.random(in: 0...255, using: &rng))
                packet = PacketBuilder.tcp(src: src, dst: dst, srcPort: sp, dstPort: dp, flags: flags, payload: payload)
                expected.srcPort = sp; expected.dstPort = dp; expected.tcpFlags = flags
                expected.transportLength = 20 + payload.count
            case 1:
                packet = PacketBuilder.udp(src: src, dst: dst, srcPort: sp, dstPort: dp, payload: payload)
                expected.proto = .udp; expected.srcPort = sp; expected.dstPort = dp
                expected.transportLength = 8 + payload.count
            default:
                let reply = Bool.random(using: &rng)
                packet = PacketBuilder.icmpEcho(src: src, dst: dst, reply: reply, identifier: sp, sequence: dp, payload: payload)
                expected.proto = v6 ? .icmpv6 : .icmpv4
                expected.icmpType = reply ? (v6 ? 129 : 0) : (v6 ? 128 : 8)
                expected.echoIdentifier = sp
                expected.transportLength = 8 + payload.count
            }
            expected.length = packet.count
            XCTAssertEqual(PacketSummary(parsing: packet), expected)
            XCTAssertEqual(PacketChecksums.transportChecksumIsValid(packet), true)
            if !v6 { packet.withUnsafeBytes { XCTAssertTrue(IPv4Header($0)!.isChecksumValid) } }
            var corrupted = packet
            corrupted[corrupted.count - 1 - Int.random(in: 0..<(expected.transportLength), using: &rng)] ^= 0x10
            XCTAssertEqual(PacketChecksums.transportChecksumIsValid(corrupted), false)
        }
    }

    /// Cross-checks the builders' checksums with an independent Internet checksum written in Python.
    func testChecksumsAgainstPython() throws {
        var rng = SeededGenerator(seed: 77)
        var packets: [[UInt8]] = []
        for i in 0..<60 {
            let v6 = i % 2 == 0
            let src: IPAddress = v6 ? .v6(rng.next(), rng.next()) : .v4(UInt32.random(in: 0...UInt32.max, using: &rng))
            let dst: IPAddress = v6 ? .v6(rng.next(), rng.next()) : .v4(UInt32.random(in: 0...UInt32.max, using: &rng))
            let payload = rng.bytes(count: Int.random(in: 0...33, using: &rng))
            switch i % 3 {
            case 0: packets.append(PacketBuilder.tcp(src: src, dst: dst, srcPort: 1234, dstPort: 80, flags: [.syn, .ack], payload: payload))
            case 1: packets.append(PacketBuilder.udp(src: src, dst: dst, srcPort: 53, dstPort: 5353, payload: payload))
            default: packets.append(PacketBuilder.icmpEcho(src: src, dst: dst, identifier: 9, sequence: 3, payload: payload))
            }
        }
        let script = """
        import sys
        def fold(data):
            if len(data) % 2: data += b'\\0'
            s = sum((data[i] << 8) | data[i + 1] for i in range(0, len(data), 2))
            while s >> 16: s = (s & 0xffff) + (s >> 16)
            return s
        for line in sys.stdin:
            p = bytes.fromhex(line.strip())
            if p[0] >> 4 == 4:
                ihl = (p[0] & 15) * 4
                ok_ip = fold(p[:ihl]) == 0xffff
                proto, src, dst, seg = p[9], p[12:16], p[16:20], p[ihl:]
            else:
                ok_ip = True
                proto, src, dst, seg = p[6], p[8:24], p[24:40], p[40:]
            pseudo = src + dst + len(seg).to_bytes(4, 'big') + bytes([0, 0, 0, proto])
            if proto == 1:
                ok = fold(seg) == 0xffff
            else:
                ok = fold(pseudo + seg) == 0xffff
            print('ok' if ok and ok_ip else 'bad')
        """
        let text = packets.map { $0.map { String(format: "%02x", $0) }.joined() }.joined(separator: "\n") + "\n"
        let data: String
        do {
            data = try PythonRunner.run(script, input: text)
        } catch let failure as PythonRunner.Failure where failure.kind == .unavailable {
            throw XCTSkip(failure.message)
        }
        let lines = data.split(separator: "\n")
        XCTAssertEqual(lines.count, packets.count)
        XCTAssertTrue(lines.allSatisfy { $0 == "ok" }, "\(lines)")
    }

    /// Mutation fuzzing of IP header parsing: every view and the summary over mangled packets of every kind.
    func testFuzzIPHeaderParsing() {
        let a4 = ip("100.64.0.1"), b4 = ip("100.64.0.2"), a6 = ip("fd7a:115c:a1e0::1"), b6 = ip("fd7a:115c:a1e0::2")
        let tcp6 = PacketBuilder.tcpSegment(src: a6, dst: b6, srcPort: 1, dstPort: 22, flags: .syn)
        let seeds: [[UInt8]] = [
            PacketBuilder.tcp(src: a4, dst: b4, srcPort: 40000, dstPort: 22, flags: .syn, payload: [1, 2, 3]),
            PacketBuilder.udp(src: a4, dst: b4, srcPort: 53, dstPort: 53, payload: [0xAA]),
            PacketBuilder.icmpEcho(src: a4, dst: b4),
            PacketBuilder.icmpError(src: b4, dst: a4, type: 3, invoking: PacketBuilder.udp(src: a4, dst: b4, srcPort: 1, dstPort: 2)),
            PacketBuilder.ipv4(src: a4, dst: b4, proto: .tcp, payload: [1, 2, 3, 4], moreFragments: true, fragmentOffset: 20),
            PacketBuilder.ipv4(src: a4, dst: b4, proto: .sctp, payload: [UInt8](repeating: 1, count: 12), options: [1, 1, 1, 1]),
            PacketBuilder.tcp(src: a6, dst: b6, srcPort: 40000, dstPort: 443, flags: [.ack]),
            PacketBuilder.udp(src: a6, dst: b6, srcPort: 41641, dstPort: 41641, payload: [1]),
            PacketBuilder.icmpEcho(src: a6, dst: b6, reply: true),
            PacketBuilder.icmpError(src: b6, dst: a6, type: 2, rest: 1280, invoking: PacketBuilder.udp(src: a6, dst: b6, srcPort: 1, dstPort: 2)),
            PacketBuilder.ipv6(src: a6, dst: b6, nextHeader: .hopByHop, payload:
                PacketBuilder.ipv6OptionsHeader(nextHeader: .ipv6Routing) + PacketBuilder.ipv6OptionsHeader(nextHeader: .ipv6Fragment)
                + PacketBuilder.ipv6FragmentHeader(nextHeader: .tcp, offset: 0, moreFragments: true, identification: 5) + tcp6),
            PacketBuilder.ipv6(src: a6, dst: b6, nextHeader: .ipv6Fragment,
                payload: PacketBuilder.ipv6FragmentHeader(nextHeader: .udp, offset: 64, moreFragments: false, identification: 5) + [1, 2]),
        ]
        MutationFuzzer(seeds: seeds, iterations: 30_000, maximumLength: 512, seed: 0xF11).run { input in
            input.withUnsafeBytes { buffer in
                if let s = PacketSummary(parsing: buffer) {
                    XCTAssertLessThanOrEqual(s.length, buffer.count)
                    XCTAssertLessThanOrEqual(s.transportLength, s.length)
                    _ = (s.isICMPError, s.isICMPEchoReply, s.isICMPEchoRequest)
                }
                if let v4 = IPv4Header(buffer) {
                    _ = (v4.isChecksumValid, v4.options.count, v4.payload.count, v4.source, v4.fragmentOffset)
                    if let tcp = TCPHeader(v4.payload) { _ = (tcp.payload?.count, tcp.flags) }
                    if let udp = UDPHeader(v4.payload) { _ = udp.payload?.count }
                    if let icmp = ICMPHeader(v4.payload, version: .v4) {
                        _ = (icmp.echoIdentifier, icmp.echoSequence, icmp.invokingPacket.flatMap { PacketSummary(parsing: $0) })
                    }
                }
                if let v6 = IPv6Header(buffer) {
                    _ = (v6.flowLabel, v6.trafficClass, v6.payload.count)
                    if let chain = v6.walkExtensionHeaders() {
                        XCTAssertLessThanOrEqual(chain.upperOffset, v6.totalLength)
                    }
                }
            }
            _ = PacketChecksums.transportChecksumIsValid(input)
        }
    }

    private func packet(_ bytes: [UInt8], _ body: (UnsafeRawBufferPointer) -> Void) {
        bytes.withUnsafeBytes(body)
    }
}
