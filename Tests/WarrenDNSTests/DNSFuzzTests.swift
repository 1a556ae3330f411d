import WarrenPacket
import WarrenTestSupport
import XCTest
@testable import WarrenDNS

/// Bounded, seeded mutation fuzzing of the decoder and of the resolver (CI runs it every time).
final class DNSFuzzTests: XCTestCase {
    static func seeds() throws -> [[UInt8]] {
        let n = { (text: String) in try DNSName(text) }
        var seeds = [DNSCodecTests.digQuery, DNSCodecTests.digResponse]
        for (name, type) in [("alice.tail1234.ts.net", DNSRecordType.a), ("bob", .aaaa), ("1.0.64.100.in-addr.arpa", .ptr),
                             ("www.tail1234.ts.net", .any), ("example.com", .txt)] {
            seeds.append(try DNSMessage.query(id: 1, name: n(name), type: type).encoded())
        }
        let owner = try n("Host.Example.")
        seeds.append(try DNSMessage(
            header: DNSHeader(id: 2, isResponse: true),
            questions: [DNSQuestion(name: owner, type: .any)],
            answers: [
                DNSResourceRecord(name: owner, type: .cname, ttl: 1, data: .cname(try n("a.host.example"))),
                DNSResourceRecord(name: owner, type: .mx, ttl: 1, data: .mx(preference: 1, exchange: try n("mx.host.example"))),
                DNSResourceRecord(name: owner, type: .soa, ttl: 1, data: .soa(DNSSOA(
                    primaryNameServer: try n("ns.example"), responsibleMailbox: try n("h.example"), serial: 1, refresh: 2,
                    retry: 3, expire: 4, minimum: 5))),
                DNSResourceRecord(name: owner, type: .srv, ttl: 1, data: .srv(priority: 1, weight: 1, port: 1, target: try n("t.example"))),
                DNSResourceRecord(name: owner, type: .txt, ttl: 1, data: .txt([[1, 2], []])),
            ],
            edns: EDNS(options: [EDNSOption(code: 10, data: [1, 2, 3, 4, 5, 6, 7, 8])])).encoded())
        return seeds
    }

    /// Whatever decodes re-encodes, and decodes again to the same value.
    func testDecoderSurvivesMutationsAndRoundTrips() throws {
        var decoded = 0
        try MutationFuzzer(seeds: Self.seeds(), iterations: 30_000, maximumLength: 1500, seed: 0xD45).run { input in
            guard let message = try? DNSMessage(bytes: input) else { return }
            decoded += 1
            let again = try message.encoded()
            XCTAssertEqual(try DNSMessage(bytes: again), message, "round trip of \(input)")
            // Truncated encodings stay within their limit (unless header and question alone do not).
            let cut = try message.encoded(maximumSize: 512)
            let floor = try DNSMessage(header: message.header, questions: message.questions, edns: message.edns).encoded()
            XCTAssertLessThanOrEqual(cut.count, max(512, floor.count))
            XCTAssertNoThrow(try DNSMessage(bytes: cut))
        }
        XCTAssertGreaterThan(decoded, 1000, "the fuzzer should reach past the decoder's first checks")
    }

    /// The resolver decides on any octets: drops, or answers that encode and keep the query's ID.
    func testResolverSurvivesMutations() throws {
        let resolver = MagicDNSResolver(config: MagicDNSConfig(
            hosts: [try DNSName("alice.tail1234.ts.net"): [IPAddress("100.64.0.1")!, IPAddress("fd7a:115c:a1e0::1")!]],
            magicDNSDomains: [try DNSName("tail1234.ts.net")],
            extraRecords: [MagicDNSExtraRecord(name: "www.tail1234.ts.net", type: "CNAME", value: "alice.tail1234.ts.net")],
            routes: [try DNSName("example.com"): [DNSUpstream("10.0.0.53")!]],
            globalResolvers: [DNSUpstream("1.1.1.1")!]))
        var counts = (answers: 0, forwards: 0, drops: 0)
        try MutationFuzzer(seeds: Self.seeds(), iterations: 30_000, maximumLength: 1500, seed: 0x5E1).run { input in
            let (decision, _) = input.withUnsafeBytes { resolver.decide(packet: $0) }
            switch decision {
            case .drop:
                counts.drops += 1
            case .forward(let upstreams):
                counts.forwards += 1
                XCTAssertFalse(upstreams.isEmpty)
            case .answer(let m):
                counts.answers += 1
                XCTAssertTrue(m.header.isResponse)
                XCTAssertEqual(m.header.id, UInt16(input[0]) << 8 | UInt16(input[1]))
                let bytes = try m.encoded(maximumSize: 512)
                XCTAssertLessThanOrEqual(bytes.count, 512)
            }
        }
        XCTAssertGreaterThan(counts.answers, 1000)
        XCTAssertGreaterThan(counts.forwards, 100)
        XCTAssertGreaterThan(counts.drops, 100)
    }
}
