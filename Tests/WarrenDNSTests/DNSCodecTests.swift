import WarrenPacket
import XCTest
@testable import WarrenDNS

final class DNSCodecTests: XCTestCase {
    func name(_ text: String) -> DNSName { try! DNSName(text) }

    // `dig example.com A` (BIND 9.18): ID 0x1234, RD and AD, one question, an OPT record with a
    // 1232-octet payload size and an 8-octet client cookie. Laid out by hand from RFC 1035 §4.1 and
    // RFC 6891 §6.1.2.
    static let digQuery: [UInt8] = [
        0x12, 0x34, 0x01, 0x20, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
        0x07, 0x65, 0x78, 0x61, 0x6D, 0x70, 0x6C, 0x65, 0x03, 0x63, 0x6F, 0x6D, 0x00, 0x00, 0x01, 0x00, 0x01,
        0x00, 0x00, 0x29, 0x04, 0xD0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0C,
        0x00, 0x0A, 0x00, 0x08, 0x9F, 0x6E, 0x3B, 0x21, 0x5C, 0x0D, 0x71, 0xAA,
    ]

    // Its answer: QR RD RA AD, example.com. 3600 IN A 93.184.215.14 with the owner as a pointer to
    // offset 12 (0xC00C), and an OPT record without options.
    static let digResponse: [UInt8] = [
        0x12, 0x34, 0x81, 0xA0, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01,
        0x07, 0x65, 0x78, 0x61, 0x6D, 0x70, 0x6C, 0x65, 0x03, 0x63, 0x6F, 0x6D, 0x00, 0x00, 0x01, 0x00, 0x01,
        0xC0, 0x0C, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x0E, 0x10, 0x00, 0x04, 0x5D, 0xB8, 0xD7, 0x0E,
        0x00, 0x00, 0x29, 0x04, 0xD0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ]

    // Captured from `dig @127.0.0.1 Example.COM AAAA` (DiG 9.18.49-1~deb12u3-Debian) on a UDP socket.
    static let capturedDigQuery: [UInt8] = hex(
        "fe0201200001000000000001074578616d706c6503434f4d00001c000100002904d000000000000c000a000868804de73ad5691a")

    static func hex(_ text: String) -> [UInt8] {
        let digits = Array(text.utf8)
        return stride(from: 0, to: digits.count, by: 2).map { UInt8(String(decoding: digits[$0..<($0 + 2)], as: UTF8.self), radix: 16)! }
    }

    func testCapturedDigQuery() throws {
        let m = try DNSMessage(bytes: Self.capturedDigQuery)
        XCTAssertEqual(m.header.id, 0xFE02)
        XCTAssertEqual(m.questions, [DNSQuestion(name: name("example.com"), type: .aaaa)])
        XCTAssertEqual(m.questions[0].name.description, "Example.COM.", "the case survives decoding")
        XCTAssertEqual(m.edns?.udpPayloadSize, 1232)
        XCTAssertEqual(m.edns?.options.map(\.code), [10])
        XCTAssertEqual(try m.encoded(), Self.capturedDigQuery)
    }

    func testDigQueryDecodesAndReencodesIdentically() throws {
        let m = try DNSMessage(bytes: Self.digQuery)
        XCTAssertEqual(m.header.id, 0x1234)
        XCTAssertFalse(m.header.isResponse)
        XCTAssertTrue(m.header.recursionDesired)
        XCTAssertTrue(m.header.authenticData)
        XCTAssertEqual(m.header.opcode, .query)
        XCTAssertEqual(m.questions, [DNSQuestion(name: name("example.com."), type: .a)])
        XCTAssertEqual(m.edns?.udpPayloadSize, 1232)
        XCTAssertEqual(m.edns?.version, 0)
        XCTAssertEqual(m.edns?.dnssecOK, false)
        XCTAssertEqual(m.edns?.options, [EDNSOption(code: 10, data: [0x9F, 0x6E, 0x3B, 0x21, 0x5C, 0x0D, 0x71, 0xAA])])
        XCTAssertTrue(m.additionals.isEmpty)
        XCTAssertEqual(try m.encoded(), Self.digQuery)
    }

    func testDigResponseDecodesAndReencodesWithCompression() throws {
        let m = try DNSMessage(bytes: Self.digResponse)
        XCTAssertTrue(m.header.isResponse)
        XCTAssertTrue(m.header.recursionAvailable)
        XCTAssertEqual(m.header.responseCode, .noError)
        XCTAssertEqual(m.answers, [DNSResourceRecord(name: name("example.com"), type: .a, ttl: 3600,
                                                     data: .a(IPAddress("93.184.215.14")!))])
        XCTAssertEqual(try m.encoded(), Self.digResponse)
    }

    // RFC 1035 §4.1.4: F.ISI.ARPA at offset 20, FOO.F.ISI.ARPA at 40 as "FOO" and a pointer to 20,
    // ARPA at 64 as a pointer to 26, and the root at 92.
    func testRFC1035CompressionExample() throws {
        var bytes = [UInt8](repeating: 0, count: 94)
        let first: [UInt8] = [1, 0x46, 3, 0x49, 0x53, 0x49, 4, 0x41, 0x52, 0x50, 0x41, 0]
        bytes.replaceSubrange(20..<32, with: first)
        bytes.replaceSubrange(40..<46, with: [3, 0x46, 0x4F, 0x4F, 0xC0, 20])
        bytes.replaceSubrange(64..<66, with: [0xC0, 26])
        bytes[92] = 0
        try bytes.withUnsafeBytes { buffer in
            var reader = DNSReader(buffer: buffer)
            reader.offset = 20
            XCTAssertEqual(try reader.name(), name("F.ISI.ARPA"))
            XCTAssertEqual(reader.offset, 32)
            reader.offset = 40
            XCTAssertEqual(try reader.name(), name("FOO.F.ISI.ARPA"))
            XCTAssertEqual(reader.offset, 46)
            reader.offset = 64
            XCTAssertEqual(try reader.name(), name("ARPA"))
            XCTAssertEqual(reader.offset, 66)
            reader.offset = 92
            XCTAssertEqual(try reader.name(), DNSName.root)
        }
        // The encoder compresses the same names the same way.
        let message = DNSMessage(
            header: DNSHeader(id: 1, isResponse: true),
            questions: [DNSQuestion(name: name("F.ISI.ARPA"), type: .a)],
            answers: [
                DNSResourceRecord(name: name("FOO.F.ISI.ARPA"), type: .a, ttl: 1, data: .a(.v4(1))),
                DNSResourceRecord(name: name("arpa"), type: .ns, ttl: 1, data: .ns(name("f.isi.arpa"))),
            ])
        let wire = try message.encoded()
        XCTAssertEqual(Array(wire[12..<24]), first)
        XCTAssertEqual(Array(wire[28..<34]), [3, 0x46, 0x4F, 0x4F, 0xC0, 12])
        // ARPA's owner points at offset 12 + 6, its NS RDATA at the question's name.
        let second = 34 + 10 + 4
        XCTAssertEqual(Array(wire[second..<(second + 2)]), [0xC0, 18])
        XCTAssertEqual(Array(wire[(second + 10)..<(second + 12)]), [0, 2])
        XCTAssertEqual(Array(wire[(second + 12)..<(second + 14)]), [0xC0, 12])
        XCTAssertEqual(try DNSMessage(bytes: wire), message)
    }

    func header(qd: UInt8) -> [UInt8] { [0xAB, 0xCD, 0x01, 0x00, 0x00, qd, 0, 0, 0, 0, 0, 0] }

    func testPointerLoopsAndForwardPointersAreRejected() {
        // A pointer to itself.
        XCTAssertThrowsError(try DNSMessage(bytes: header(qd: 1) + [0xC0, 12, 0, 1, 0, 1])) {
            XCTAssertEqual($0 as? DNSDecodingError, .badPointer)
        }
        // A label, then a pointer back to that label: a loop.
        XCTAssertThrowsError(try DNSMessage(bytes: header(qd: 1) + [1, 0x61, 0xC0, 12, 0, 1, 0, 1])) {
            XCTAssertEqual($0 as? DNSDecodingError, .badPointer)
        }
        // A pointer forwards.
        XCTAssertThrowsError(try DNSMessage(bytes: header(qd: 1) + [0xC0, 20, 0, 1, 0, 1, 0, 0, 1, 0x61, 0])) {
            XCTAssertEqual($0 as? DNSDecodingError, .badPointer)
        }
        // Two names pointing at each other: the second's target lies after the first's jump.
        let twoNames = header(qd: 2) + [1, 0x61, 0xC0, 20, 0, 1, 0, 1] + [1, 0x62, 0xC0, 12, 0, 1, 0, 1]
        XCTAssertThrowsError(try DNSMessage(bytes: twoNames))
        // Extended label types (01, 10).
        XCTAssertThrowsError(try DNSMessage(bytes: header(qd: 1) + [0x41, 0, 0, 1, 0, 1])) {
            XCTAssertEqual($0 as? DNSDecodingError, .badLabelType)
        }
        // Truncated label and truncated question.
        XCTAssertThrowsError(try DNSMessage(bytes: header(qd: 1) + [5, 0x61])) {
            XCTAssertEqual($0 as? DNSDecodingError, .truncated)
        }
        XCTAssertThrowsError(try DNSMessage(bytes: header(qd: 1) + [0, 0, 1])) {
            XCTAssertEqual($0 as? DNSDecodingError, .truncated)
        }
    }

    func testNamesLongerThan255OctetsAreRejected() throws {
        // Chains of 63-octet labels, each pointing back at the previous, grow past 255 octets.
        var body: [UInt8] = []
        var previous: Int? = nil
        var offsets: [Int] = []
        for _ in 0..<5 {
            let offset = 12 + body.count
            offsets.append(offset)
            body.append(63)
            body += [UInt8](repeating: 0x61, count: 63)
            if let previous { body += [0xC0 | UInt8(previous >> 8), UInt8(previous & 0xFF)] } else { body.append(0) }
            previous = offset
        }
        let bytes = header(qd: 0) + body
        try bytes.withUnsafeBytes { buffer in
            var reader = DNSReader(buffer: buffer)
            reader.offset = offsets[3]  // 4 labels of 63: 257 octets
            XCTAssertThrowsError(try reader.name()) { XCTAssertEqual($0 as? DNSDecodingError, .nameTooLong) }
            reader.offset = offsets[2]  // 3 labels: 193 octets, fine
            XCTAssertEqual(try? reader.name().labelCount, 3)
        }
        XCTAssertThrowsError(try DNSName(String(repeating: "a", count: 64))) {
            XCTAssertEqual($0 as? DNSNameError, .labelTooLong)
        }
        XCTAssertThrowsError(try DNSName(Array(repeating: String(repeating: "a", count: 63), count: 4).joined(separator: "."))) {
            XCTAssertEqual($0 as? DNSNameError, .nameTooLong)
        }
    }

    func testEveryTypedRecordRoundTrips() throws {
        let owner = name("Host.Example.")
        let records: [DNSResourceRecord] = [
            DNSResourceRecord(name: owner, type: .a, ttl: 1, data: .a(IPAddress("192.0.2.1")!)),
            DNSResourceRecord(name: owner, type: .aaaa, ttl: 2, data: .aaaa(IPAddress("2001:db8::1")!)),
            DNSResourceRecord(name: owner, type: .ptr, ttl: 3, data: .ptr(name("ptr.example"))),
            DNSResourceRecord(name: owner, type: .cname, ttl: 4, data: .cname(name("alias.example"))),
            DNSResourceRecord(name: owner, type: .txt, ttl: 5, data: .txt([Array("v=spf1 -all".utf8), [], [0xFF]])),
            DNSResourceRecord(name: owner, type: .srv, ttl: 6, data: .srv(priority: 1, weight: 2, port: 443, target: name("host.example"))),
            DNSResourceRecord(name: owner, type: .soa, ttl: 7, data: .soa(DNSSOA(
                primaryNameServer: name("ns.example"), responsibleMailbox: name("hostmaster.example"),
                serial: 2026120701, refresh: 7200, retry: 900, expire: 1209600, minimum: 300))),
            DNSResourceRecord(name: owner, type: .ns, ttl: 8, data: .ns(name("ns.example"))),
            DNSResourceRecord(name: owner, type: .mx, ttl: 9, data: .mx(preference: 10, exchange: name("mail.example"))),
            DNSResourceRecord(name: owner, type: DNSRecordType(rawValue: 65280), class: DNSClass(rawValue: 7), ttl: 10,
                              data: .raw([1, 2, 3])),
        ]
        let message = DNSMessage(header: DNSHeader(id: 7, isResponse: true, isAuthoritative: true),
                                 questions: [DNSQuestion(name: owner, type: .any)], answers: records,
                                 authorities: [records[6]], additionals: [records[0]],
                                 edns: EDNS(udpPayloadSize: 4096, dnssecOK: true, options: [EDNSOption(code: 8, data: [0, 1, 24, 0, 192, 0, 2])]))
        let wire = try message.encoded()
        XCTAssertEqual(try DNSMessage(bytes: wire), message)
        // The SRV target is never compressed (RFC 2782): its name appears in full.
        XCTAssertNotNil(wire.firstRange(of: [4, 0x68, 0x6F, 0x73, 0x74, 7] + Array("example".utf8) + [0]))
    }

    func testRDataLengthMismatchIsAnError() {
        // An A record with 5 octets of RDATA.
        let bad = header(qd: 0).enumerated().map { $0.offset == 7 ? 1 : $0.element }
            + [0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 5, 1, 2, 3, 4, 5]
        XCTAssertThrowsError(try DNSMessage(bytes: bad)) { XCTAssertEqual($0 as? DNSDecodingError, .badRecordData(.a)) }
        // A CNAME whose name runs past its RDATA.
        let cname = header(qd: 0).enumerated().map { $0.offset == 7 ? 1 : $0.element }
            + [0, 0, 5, 0, 1, 0, 0, 0, 1, 0, 2, 1, 0x61, 0]
        XCTAssertThrowsError(try DNSMessage(bytes: cname)) { XCTAssertEqual($0 as? DNSDecodingError, .badRecordData(.cname)) }
    }

    func testOPTRulesAndExtendedRCode() throws {
        var m = DNSMessage(header: DNSHeader(id: 9, isResponse: true, responseCode: .badVersion),
                           questions: [DNSQuestion(name: name("a."), type: .a)], edns: EDNS(udpPayloadSize: 1232))
        let wire = try m.encoded()
        // Header RCODE carries the low 4 bits (0), the OPT TTL's first octet the high 8 (1).
        XCTAssertEqual(wire[3] & 0x0F, 0)
        XCTAssertEqual(wire[wire.count - 6], 1)
        XCTAssertEqual(try DNSMessage(bytes: wire).header.responseCode, .badVersion)
        // Two OPT records, or one in the answer section, are malformed.
        m.header.responseCode = .noError
        let single = try m.encoded()
        var double = single + Array(single[(single.count - 11)...])
        double[11] = 2
        XCTAssertThrowsError(try DNSMessage(bytes: double)) { XCTAssertEqual($0 as? DNSDecodingError, .badOPT) }
        var inAnswer = single
        inAnswer[7] = 1
        inAnswer[11] = 0
        XCTAssertThrowsError(try DNSMessage(bytes: inAnswer)) { XCTAssertEqual($0 as? DNSDecodingError, .badOPT) }
    }

    func testTruncationDropsWholeRecordsSetsTCAndKeepsOPT() throws {
        let owner = name("many.example.")
        let answers = (0..<100).map { DNSResourceRecord.address(name: owner, .v4(0x0A00_0000 + UInt32($0)), ttl: 60) }
        let extra = [DNSResourceRecord(name: name("x.example"), type: .txt, ttl: 1, data: .txt([[UInt8](repeating: 0x41, count: 200)]))]
        var m = DNSMessage(header: DNSHeader(id: 1, isResponse: true), questions: [DNSQuestion(name: owner, type: .a)],
                           answers: answers, additionals: extra)
        let plain = try m.encoded(maximumSize: 512)
        XCTAssertLessThanOrEqual(plain.count, 512)
        let decoded = try DNSMessage(bytes: plain)
        XCTAssertTrue(decoded.header.isTruncated)
        // 12 + 18 question + 16 per compressed A record: 30 records fit in 512.
        XCTAssertEqual(decoded.answers.count, (512 - 12 - 18) / 16)
        XCTAssertEqual(Array(decoded.answers), Array(answers.prefix(decoded.answers.count)))

        m.edns = EDNS(udpPayloadSize: 1232)
        let withEDNS = try DNSMessage(bytes: try m.encoded(maximumSize: 1232))
        XCTAssertTrue(withEDNS.header.isTruncated)
        XCTAssertNotNil(withEDNS.edns)
        XCTAssertEqual(withEDNS.answers.count, (1232 - 12 - 18 - 11) / 16)

        // Everything fits over TCP; only the additional record misses when it alone does not fit.
        XCTAssertFalse(try DNSMessage(bytes: try m.encoded(maximumSize: 65535)).header.isTruncated)
        let fewer = DNSMessage(header: m.header, questions: m.questions, answers: Array(answers.prefix(2)), additionals: extra)
        let cut = try DNSMessage(bytes: try fewer.encoded(maximumSize: 200))
        XCTAssertFalse(cut.header.isTruncated)
        XCTAssertEqual(cut.answers.count, 2)
        XCTAssertTrue(cut.additionals.isEmpty)
    }

    func testMaximumResponseSize() throws {
        var q = DNSMessage.query(id: 1, name: name("a."), type: .a, edns: nil)
        XCTAssertEqual(q.maximumResponseSize(overTCP: false), 512)
        XCTAssertEqual(q.maximumResponseSize(overTCP: true), 65535)
        q.edns = EDNS(udpPayloadSize: 4096)
        XCTAssertEqual(q.maximumResponseSize(overTCP: false), 1232)
        q.edns = EDNS(udpPayloadSize: 800)
        XCTAssertEqual(q.maximumResponseSize(overTCP: false), 800)
        q.edns = EDNS(udpPayloadSize: 100)
        XCTAssertEqual(q.maximumResponseSize(overTCP: false), 512)
    }

    func testNamesCompareCaseInsensitivelyAndKeepTheirCase() throws {
        let mixed = name("Alice.Tail1234.TS.net")
        XCTAssertEqual(mixed, name("alice.tail1234.ts.net."))
        XCTAssertEqual(mixed.hashValue, name("ALICE.TAIL1234.TS.NET").hashValue)
        XCTAssertEqual(mixed.description, "Alice.Tail1234.TS.net.")
        XCTAssertTrue(mixed.isSubdomain(of: name("ts.NET")))
        XCTAssertFalse(mixed.isSubdomain(of: name("s.net")))
        XCTAssertTrue(mixed.isSubdomain(of: .root))
        XCTAssertEqual(mixed.parent, name("tail1234.ts.net"))
        XCTAssertEqual(name("a\\.b.c").labelCount, 2)
        XCTAssertEqual(name("a\\.b.c").description, "a\\.b.c.")
        XCTAssertEqual(name("\\065b").description, "Ab.")
        XCTAssertEqual(name(".").description, ".")
        XCTAssertThrowsError(try DNSName("a..b"))
        XCTAssertThrowsError(try DNSName("a\\9"))
    }

    func testReverseNames() {
        XCTAssertEqual(ReverseName.address(of: name("1.0.64.100.in-addr.arpa.")), IPAddress("100.64.0.1"))
        XCTAssertEqual(ReverseName.name(of: IPAddress("100.64.0.1")!), name("1.0.64.100.in-addr.arpa"))
        let v6 = IPAddress("fd7a:115c:a1e0::1")!
        XCTAssertEqual(ReverseName.name(of: v6).description,
                       "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.e.1.a.c.5.1.1.a.7.d.f.ip6.arpa.")
        XCTAssertEqual(ReverseName.address(of: ReverseName.name(of: v6)), v6)
        XCTAssertEqual(ReverseName.address(of: name("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.E.1.A.C.5.1.1.A.7.D.F.IP6.ARPA")), v6)
        XCTAssertNil(ReverseName.address(of: name("0.64.100.in-addr.arpa")))
        XCTAssertNil(ReverseName.address(of: name("01.0.64.100.in-addr.arpa")))
        XCTAssertNil(ReverseName.address(of: name("256.0.64.100.in-addr.arpa")))
        XCTAssertNil(ReverseName.address(of: name("g.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.e.1.a.c.5.1.1.a.7.d.f.ip6.arpa")))
        XCTAssertEqual(TailnetAddresses.ipv4(from6: IPAddress("fd7a:115c:a1e0:ab12:4843:cd96:6240:2")!), IPAddress("100.64.0.2"))
    }
}
