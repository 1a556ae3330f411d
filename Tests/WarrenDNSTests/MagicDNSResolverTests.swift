import WarrenPacket
import XCTest
@testable import WarrenDNS

final class MagicDNSResolverTests: XCTestCase {
    func name(_ text: String) -> DNSName { try! DNSName(text) }
    func ip(_ text: String) -> IPAddress { IPAddress(text)! }
    func up(_ text: String) -> DNSUpstream { DNSUpstream(text)! }

    lazy var config = MagicDNSConfig(
        hosts: [
            name("alice.tail1234.ts.net"): [ip("100.64.0.1"), ip("fd7a:115c:a1e0::1")],
            name("bob.tail1234.ts.net"): [ip("100.64.0.2")],
            name("carol.tail1234.ts.net"): [ip("fd7a:115c:a1e0::3")],
        ],
        magicDNSDomains: [name("tail1234.ts.net")],
        extraRecords: [
            MagicDNSExtraRecord(name: "db.tail1234.ts.net", value: "100.64.0.9"),
            MagicDNSExtraRecord(name: "svc.example.internal.", type: "A", value: "10.1.2.3"),
            MagicDNSExtraRecord(name: "info.tail1234.ts.net", type: "TXT", value: "hello"),
            MagicDNSExtraRecord(name: "www.tail1234.ts.net", type: "CNAME", value: "alice.tail1234.ts.net"),
            MagicDNSExtraRecord(name: "odd.tail1234.ts.net", type: "MX", value: "10 mail"),
            MagicDNSExtraRecord(name: "bad.tail1234.ts.net", type: "AAAA", value: " 100.64.0.10 "),
        ],
        routes: [
            name("example.com"): [up("10.0.0.54")],
            name("corp.example.com"): [up("10.0.0.53"), up("[fd00::53]:5353")],
            name("local.lan"): [],
        ],
        globalResolvers: [up("1.1.1.1"), up("8.8.8.8")],
        hostResolvers: [up("192.168.1.1")])

    func decide(_ qname: String, _ type: DNSRecordType, edns: EDNS? = nil, config: MagicDNSConfig? = nil) -> MagicDNSDecision {
        let query = DNSMessage.query(id: 0x4242, name: name(qname), type: type, edns: edns)
        return MagicDNSResolver(config: config ?? self.config).decide(query)
    }

    /// The answer, checked for the things every local answer has.
    func answer(_ qname: String, _ type: DNSRecordType, edns: EDNS? = nil, file: StaticString = #filePath,
                line: UInt = #line) -> DNSMessage? {
        guard case .answer(let m) = decide(qname, type, edns: edns) else {
            XCTFail("expected an answer for \(qname) \(type)", file: file, line: line)
            return nil
        }
        XCTAssertEqual(m.header.id, 0x4242, file: file, line: line)
        XCTAssertTrue(m.header.isResponse, file: file, line: line)
        XCTAssertTrue(m.header.recursionAvailable, file: file, line: line)
        XCTAssertEqual(m.questions.first?.name.wire, name(qname).wire, "the question's case is echoed", file: file, line: line)
        // Everything the resolver answers must encode.
        XCTAssertNoThrow(try m.encoded(), file: file, line: line)
        return m
    }

    func testAAndAAAAForKnownNamesWithTheQuestionsCase() {
        let a = answer("ALICE.Tail1234.ts.net.", .a)
        XCTAssertEqual(a?.header.responseCode, .noError)
        XCTAssertTrue(a?.header.isAuthoritative ?? false)
        XCTAssertEqual(a?.answers, [DNSResourceRecord(name: name("alice.tail1234.ts.net"), type: .a, ttl: 600, data: .a(ip("100.64.0.1")))])
        XCTAssertEqual(a?.answers.first?.name.wire, name("ALICE.Tail1234.ts.net.").wire)
        XCTAssertEqual(answer("alice.tail1234.ts.net", .aaaa)?.answers.map(\.data), [.aaaa(ip("fd7a:115c:a1e0::1"))])
        XCTAssertEqual(answer("alice.tail1234.ts.net", .any)?.answers.count, 2)
    }

    func testShortNames() {
        let a = answer("bob", .a)
        XCTAssertEqual(a?.answers.map(\.data), [.a(ip("100.64.0.2"))])
        XCTAssertEqual(a?.answers.first?.name, name("bob."))
        XCTAssertEqual(answer("Carol.", .aaaa)?.answers.map(\.data), [.aaaa(ip("fd7a:115c:a1e0::3"))])
        // An unknown single label is not ours: it goes upstream.
        XCTAssertEqual(decide("nosuchpeer", .a), .forward(to: [up("1.1.1.1"), up("8.8.8.8")]))
    }

    func testNODATAForAKnownNameWithoutThatFamilyOrType() {
        for (qname, type) in [("bob.tail1234.ts.net", DNSRecordType.aaaa), ("carol.tail1234.ts.net", .a),
                              ("alice.tail1234.ts.net", .mx), ("alice.tail1234.ts.net", DNSRecordType(rawValue: 9824))] {
            let m = answer(qname, type)
            XCTAssertEqual(m?.header.responseCode, .noError, "\(qname) \(type)")
            XCTAssertEqual(m?.answers, [], "\(qname) \(type)")
            XCTAssertEqual(m?.authorities, [], "no SOA, as Tailscale")
        }
        // Types about zones are not implemented for node names (Tailscale: NS, SOA, AXFR, HINFO).
        XCTAssertEqual(answer("alice.tail1234.ts.net", .soa)?.header.responseCode, .notImplemented)
        XCTAssertEqual(answer("alice.tail1234.ts.net", .ns)?.header.responseCode, .notImplemented)
    }

    func testNXDOMAINUnderMagicDNSDomainsAndLocalRoutes() {
        XCTAssertEqual(answer("nobody.tail1234.ts.net", .a)?.header.responseCode, .nameError)
        XCTAssertEqual(answer("deep.nobody.tail1234.ts.net", .aaaa)?.header.responseCode, .nameError)
        XCTAssertEqual(answer("printer.local.lan", .a)?.header.responseCode, .nameError)
        XCTAssertEqual(answer("odd.tail1234.ts.net", .mx)?.header.responseCode, .nameError, "unsupported extra record types are ignored")
        XCTAssertEqual(answer("bad.tail1234.ts.net", .a)?.answers.map(\.data), [.a(ip("100.64.0.10"))],
                       "as Tailscale, A/AAAA/\"\" extra records take their family from the value")
        XCTAssertEqual(answer("hidden.onion", .a)?.header.responseCode, .nameError)
        XCTAssertEqual(answer("b._dns-sd._udp.0.1.168.192.in-addr.arpa", .ptr)?.header.responseCode, .nameError)
    }

    func testPTRForTailnetAddresses() {
        XCTAssertEqual(answer("1.0.64.100.in-addr.arpa", .ptr)?.answers,
                       [DNSResourceRecord(name: name("1.0.64.100.in-addr.arpa"), type: .ptr, ttl: 600,
                                          data: .ptr(name("alice.tail1234.ts.net")))])
        XCTAssertEqual(answer(ReverseName.name(of: ip("fd7a:115c:a1e0::3")).description, .ptr)?.answers.map(\.data),
                       [.ptr(name("carol.tail1234.ts.net"))])
        // The IPv6 form of bob's IPv4 address (Tailscale's 4-to-6 range).
        XCTAssertEqual(answer(ReverseName.name(of: ip("fd7a:115c:a1e0:ab12:4843:cd96:6240:2")).description, .ptr)?.answers.map(\.data),
                       [.ptr(name("bob.tail1234.ts.net"))])
        XCTAssertEqual(answer("9.0.64.100.in-addr.arpa", .ptr)?.answers.map(\.data), [.ptr(name("db.tail1234.ts.net"))])
        XCTAssertEqual(answer("100.100.100.100.in-addr.arpa", .ptr)?.answers.map(\.data), [.ptr(MagicDNSResolver.serviceName)])
        XCTAssertEqual(answer("magicdns.localhost-tailscale-daemon", .a)?.answers.map(\.data), [.a(ip("100.100.100.100"))])
        // Unknown tailnet addresses: NXDOMAIN here; other addresses go upstream.
        XCTAssertEqual(answer("200.0.64.100.in-addr.arpa", .ptr)?.header.responseCode, .nameError)
        XCTAssertEqual(answer(ReverseName.name(of: ip("fd7a:115c:a1e0::99")).description, .ptr)?.header.responseCode, .nameError)
        XCTAssertEqual(decide("1.1.168.192.in-addr.arpa", .ptr), .forward(to: [up("1.1.1.1"), up("8.8.8.8")]))
        XCTAssertEqual(decide("0.64.100.in-addr.arpa", .ptr), .forward(to: [up("1.1.1.1"), up("8.8.8.8")]))
        // A known address's reverse name with another type: the name exists, no data.
        XCTAssertEqual(answer("1.0.64.100.in-addr.arpa", .a)?.answers, [])
        var off = config
        off.answersTailnetReverseZones = false
        XCTAssertEqual(decide("200.0.64.100.in-addr.arpa", .ptr, config: off), .forward(to: [up("1.1.1.1"), up("8.8.8.8")]))
    }

    func testExtraRecords() {
        XCTAssertEqual(answer("db.tail1234.ts.net", .a)?.answers.map(\.data), [.a(ip("100.64.0.9"))])
        XCTAssertEqual(answer("svc.example.internal", .a)?.answers.map(\.data), [.a(ip("10.1.2.3"))])
        XCTAssertEqual(answer("info.tail1234.ts.net", .txt)?.answers.map(\.data), [.txt([Array("hello".utf8)])])
        let www = answer("www.tail1234.ts.net", .a)
        XCTAssertEqual(www?.answers.map(\.data), [.cname(name("alice.tail1234.ts.net")), .a(ip("100.64.0.1"))])
        XCTAssertEqual(www?.answers.last?.name, name("alice.tail1234.ts.net"))
        XCTAssertEqual(answer("www.tail1234.ts.net", .cname)?.answers.map(\.data), [.cname(name("alice.tail1234.ts.net"))])
    }

    func testFourViaSixNames() {
        let expected = ip("fd7a:115c:a1e0:b1a:0:7:c0a8:102")
        for qname in ["192-168-1-2-via-7", "192-168-1-2-via-7.tail1234.ts.net", "via-7.192.168.1.2", "192.168.1.2.via-7",
                      "192-168-1-2-via-0x7"] {
            XCTAssertEqual(answer(qname, .aaaa)?.answers.map(\.data), [.aaaa(expected)], qname)
            let a = answer(qname, .a)
            XCTAssertEqual(a?.header.responseCode, .noError, qname)
            XCTAssertEqual(a?.answers, [], qname)
        }
        // Not under one of our domains, a bad address or site: not a 4via6 name.
        XCTAssertEqual(decide("192-168-1-2-via-7.example.org", .aaaa), .forward(to: [up("1.1.1.1"), up("8.8.8.8")]))
        XCTAssertEqual(answer("192-168-1-300-via-7.tail1234.ts.net", .aaaa)?.header.responseCode, .nameError)
        XCTAssertEqual(answer("192-168-1-2-via-x.tail1234.ts.net", .aaaa)?.header.responseCode, .nameError)
    }

    func testForwardingChoosesTheLongestRouteThenGlobalThenHost() {
        XCTAssertEqual(decide("git.corp.example.com", .a), .forward(to: [up("10.0.0.53"), up("[fd00::53]:5353")]))
        XCTAssertEqual(decide("CORP.example.com", .a), .forward(to: [up("10.0.0.53"), up("[fd00::53]:5353")]))
        XCTAssertEqual(decide("www.example.com", .aaaa), .forward(to: [up("10.0.0.54")]))
        XCTAssertEqual(decide("notexample.com", .a), .forward(to: [up("1.1.1.1"), up("8.8.8.8")]))
        var noGlobal = config
        noGlobal.globalResolvers = []
        XCTAssertEqual(decide("example.org", .a, config: noGlobal), .forward(to: [up("192.168.1.1")]))
        noGlobal.hostResolvers = [up("100.100.100.100"), up("fd7a:115c:a1e0::53")]
        guard case .answer(let m) = decide("example.org", .a, config: noGlobal) else { return XCTFail() }
        XCTAssertEqual(m.header.responseCode, .serverFailure)
        // A root route catches everything no longer one does.
        var root = config
        root.routes[.root] = [up("9.9.9.9")]
        XCTAssertEqual(decide("example.org", .a, config: root), .forward(to: [up("9.9.9.9")]))
    }

    func testProtocolErrorsAndEDNS() {
        let resolver = MagicDNSResolver(config: config)
        var q = DNSMessage.query(id: 7, name: name("alice.tail1234.ts.net"), type: .a, edns: nil)
        q.header.opcode = .status
        guard case .answer(let notimp) = resolver.decide(q) else { return XCTFail() }
        XCTAssertEqual(notimp.header.responseCode, .notImplemented)
        q.header.opcode = .query
        q.questions.append(q.questions[0])
        guard case .answer(let formerr) = resolver.decide(q) else { return XCTFail() }
        XCTAssertEqual(formerr.header.responseCode, .formatError)
        q.questions = []
        guard case .answer(let empty) = resolver.decide(q) else { return XCTFail() }
        XCTAssertEqual(empty.header.responseCode, .formatError)
        var response = DNSMessage.query(id: 7, name: name("alice.tail1234.ts.net"), type: .a)
        response.header.isResponse = true
        XCTAssertEqual(resolver.decide(response), .drop)

        let badvers = answer("alice.tail1234.ts.net", .a, edns: EDNS(udpPayloadSize: 4096, version: 1))
        XCTAssertEqual(badvers?.header.responseCode, .badVersion)
        XCTAssertEqual(badvers?.edns?.version, 0)
        XCTAssertEqual(badvers?.answers, [])
        let withDO = answer("alice.tail1234.ts.net", .a, edns: EDNS(udpPayloadSize: 4096, dnssecOK: true))
        XCTAssertEqual(withDO?.edns, EDNS(udpPayloadSize: 1232, dnssecOK: true))
        XCTAssertNil(answer("alice.tail1234.ts.net", .a)?.edns)

        var chaos = DNSMessage.query(id: 7, name: name("alice.tail1234.ts.net"), type: .txt)
        chaos.questions[0].class = .chaos
        guard case .answer(let refused) = resolver.decide(chaos) else { return XCTFail() }
        XCTAssertEqual(refused.header.responseCode, .refused)
    }

    func testUndecodablePackets() throws {
        let resolver = MagicDNSResolver(config: config)
        // Too short for a header: dropped.
        XCTAssertEqual([UInt8]([1, 2, 3]).withUnsafeBytes { resolver.decide(packet: $0).decision }, .drop)
        // A header promising a question that is not there: FORMERR with the query's ID and RD.
        let bytes: [UInt8] = [0xBE, 0xEF, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]
        guard case .answer(let m) = bytes.withUnsafeBytes({ resolver.decide(packet: $0).decision }) else { return XCTFail() }
        XCTAssertEqual(m.header.id, 0xBEEF)
        XCTAssertEqual(m.header.responseCode, .formatError)
        XCTAssertTrue(m.header.recursionDesired)
        // The same from a response: dropped (never answer answers).
        let fromResponse: [UInt8] = [0xBE, 0xEF, 0x81, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]
        XCTAssertEqual(fromResponse.withUnsafeBytes { resolver.decide(packet: $0).decision }, .drop)
        // A good packet parses and decides.
        let good = try DNSMessage.query(id: 3, name: name("bob"), type: .a).encoded()
        let (decision, query) = good.withUnsafeBytes { resolver.decide(packet: $0) }
        XCTAssertEqual(query?.header.id, 3)
        guard case .answer(let ok) = decision else { return XCTFail() }
        XCTAssertEqual(ok.answers.count, 1)
    }

    func testUpstreamParsing() {
        XCTAssertEqual(DNSUpstream("1.1.1.1"), DNSUpstream(address: ip("1.1.1.1"), port: 53))
        XCTAssertEqual(DNSUpstream("1.1.1.1:5353"), DNSUpstream(address: ip("1.1.1.1"), port: 5353))
        XCTAssertEqual(DNSUpstream("2001:db8::1"), DNSUpstream(address: ip("2001:db8::1"), port: 53))
        XCTAssertEqual(DNSUpstream("[2001:db8::1]:853"), DNSUpstream(address: ip("2001:db8::1"), port: 853))
        XCTAssertNil(DNSUpstream("https://dns.example/dns-query"))
        XCTAssertNil(DNSUpstream("1.1.1.1:0"))
        XCTAssertEqual(DNSUpstream("[2001:db8::1]:853")?.description, "[2001:db8::1]:853")
        // An exit node's PeerAPI (DNS over plain HTTP): the port must be written out.
        XCTAssertEqual(DNSUpstream("http://100.64.0.1:41234/dns-query"),
                       DNSUpstream(address: ip("100.64.0.1"), port: 41234, httpPath: "/dns-query"))
        XCTAssertEqual(DNSUpstream("http://[fd7a:115c:a1e0::1]:41234/dns-query")?.httpPath, "/dns-query")
        XCTAssertEqual(DNSUpstream("http://100.64.0.1:41234/dns-query")?.description, "http://100.64.0.1:41234/dns-query")
        for bad in ["http://100.64.0.1/dns-query", "http://100.64.0.1:41234", "http://name.example:80/dns-query",
                    "http://[fd7a:115c:a1e0::1]/dns-query", "http://fd7a:115c:a1e0::1/dns-query"] {
            XCTAssertNil(DNSUpstream(bad), bad)
        }
    }
}
