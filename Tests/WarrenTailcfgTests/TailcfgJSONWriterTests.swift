// The hand-written JSON writer against Foundation's JSONEncoder (the Codable path it replaces on the
// map stream), against JSONDecoder, and against Python's json module as an independent parser.

import Foundation
import TailscaleKeys
import WarrenPacket
import WarrenTestSupport
import XCTest
@testable import WarrenTailcfg

final class TailcfgJSONWriterTests: XCTestCase {
    private func foundationObject(_ bytes: [UInt8], file: StaticString = #filePath, line: UInt = #line) throws -> NSObject {
        let object = try JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed])
        return try XCTUnwrap(object as? NSObject, file: file, line: line)
    }

    /// The writer's bytes equal JSONEncoder's, parse to the same Foundation objects, and decode to `value`.
    private func check<T: Codable & Equatable & TailcfgJSONWritable>(_ value: T, roundTrips: Bool = true,
                                                                     file: StaticString = #filePath, line: UInt = #line) throws {
        let expected = try TailcfgJSON.encode(value)
        let fast = try TailcfgJSON.write(value)
        XCTAssertEqual(String(decoding: fast, as: UTF8.self), String(decoding: expected, as: UTF8.self), file: file, line: line)
        XCTAssertEqual(fast, expected, "bytes", file: file, line: line)
        XCTAssertEqual(try foundationObject(fast), try foundationObject(expected), file: file, line: line)
        if roundTrips {
            XCTAssertEqual(try TailcfgJSON.decode(T.self, from: fast), value, "decodes back", file: file, line: line)
        }
    }

    func testRandomMapResponsesMatchJSONEncoder() throws {
        var generator = TailcfgValueGenerator(seed: 0x5EED_0001)
        for _ in 0..<400 {
            try check(generator.mapResponse())
        }
    }

    func testRandomMapResponsesWithEveryFieldPresentOrAbsent() throws {
        for (seed, presence) in [(UInt64(11), 1.0), (12, 0.0), (13, 0.9), (14, 0.1)] {
            var generator = TailcfgValueGenerator(seed: seed, presence: presence)
            for _ in 0..<60 { try check(generator.mapResponse()) }
        }
    }

    func testRandomPartsMatchJSONEncoder() throws {
        var generator = TailcfgValueGenerator(seed: 0x5EED_0002, presence: 0.7)
        for _ in 0..<200 {
            try check(generator.node())
            try check(generator.peerChange())
            try check(generator.hostinfo())
            try check(generator.derpMap())
            try check(generator.dnsConfig())
            try check([generator.filterRule()])
            try check(generator.sshPolicy())
            try check(generator.pingRequest())
            try check(generator.userProfile())
            try check(generator.jsonValue())
        }
    }

    func testLossyValuesStillMatchJSONEncoderBytes() throws {
        // What does not survive a round trip (as in Go) must still be written exactly as the Codable path.
        var response = MapResponse()
        response.sshPolicy = .null
        var ping = PingRequest(url: "u")
        ping.payload = []
        response.pingRequest = ping
        var derp = DERPMap(regions: [10: DERPRegion(regionID: 10, regionCode: "a", regionName: "b", nodes: [])],
                           omitDefaultRegions: false)
        derp.homeParams = DERPHomeParams(regionScore: [:])
        response.derpMap = derp
        response.peers = [Node()]
        var hostinfo = Hostinfo(HostinfoFields(), unknownFields: ["Hostname": .string("stale"), "Zeta": .null, "A": .bool(true)])
        hostinfo.os = "linux"
        response.node = Node()
        response.node?.hostinfo = hostinfo
        try check(response, roundTrips: false)
    }

    func testStringEscapesAreRFC8259() throws {
        var all = ""
        for c in 0..<0x20 { all.unicodeScalars.append(UnicodeScalar(UInt8(c))) }
        all += "\"\\/\u{7F}é😀\u{2028}"
        let fast = String(decoding: try TailcfgJSON.write(all), as: UTF8.self)
        XCTAssertEqual(fast, "\"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n\\u000b\\f\\r\\u000e\\u000f"
                       + "\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017\\u0018\\u0019\\u001a\\u001b\\u001c\\u001d"
                       + "\\u001e\\u001f\\\"\\\\/\u{7F}é😀\u{2028}\"")
        try check(all)
        for piece in TailcfgValueGenerator.awkwardPieces { try check(piece) }
    }

    func testAddressesMatchTheirDescriptions() throws {
        var generator = TailcfgValueGenerator(seed: 99)
        var seen = Set<String>()
        for _ in 0..<3000 {
            let address = generator.address()
            XCTAssertEqual(String(decoding: try TailcfgJSON.write(address), as: UTF8.self), "\"\(address)\"")
            seen.insert(String(describing: address))
        }
        for text in ["::", "::1", "1::", "2001:db8::1", "1:0:0:1::1", "1::1:0:0:1:1", "1:0:1:0:1:0:1:0", "::ffff:1.2.3.4", "0.0.0.0",
                     "255.255.255.255", "fd7a:115c:a1e0::1"] {
            let address = try XCTUnwrap(IPAddress(text))
            XCTAssertEqual(String(decoding: try TailcfgJSON.write(address), as: UTF8.self), "\"\(text)\"")
        }
        XCTAssertGreaterThan(seen.count, 2000)
    }

    func testTimesAndNumbersMatchJSONEncoder() throws {
        var generator = TailcfgValueGenerator(seed: 5)
        for _ in 0..<2000 {
            try check([generator.time()])
            try check([generator.double()])
            try check([generator.int64()])
        }
        XCTAssertEqual(String(decoding: try TailcfgJSON.write(TailcfgTime(secondsSince1970: 0, nanoseconds: 120_000_000)),
                              as: UTF8.self), "\"1970-01-01T00:00:00.12Z\"")
    }

    func testWhatJSONEncoderRefusesTheWriterRefuses() {
        let late = TailcfgTime(secondsSince1970: 253_402_300_800)
        let early = TailcfgTime(secondsSince1970: -62_167_219_201)
        XCTAssertThrowsError(try TailcfgJSON.encode([late]))
        XCTAssertThrowsError(try TailcfgJSON.write([late]))
        XCTAssertThrowsError(try TailcfgJSON.write([early]))
        for bad in [Double.nan, .infinity, -.infinity] {
            var response = MapResponse()
            response.debug = .array([.number(1), .number(bad)])
            XCTAssertThrowsError(try TailcfgJSON.encode(response))
            XCTAssertThrowsError(try TailcfgJSON.write(response))
            // Also inside the unknown members merged into a Hostinfo.
            var node = Node()
            node.hostinfo = Hostinfo(HostinfoFields(), unknownFields: ["X": .number(bad)])
            XCTAssertThrowsError(try TailcfgJSON.encode(node))
            XCTAssertThrowsError(try TailcfgJSON.write(node))
        }
    }

    /// A field added to a struct without adding it to the writer is caught here: with every optional
    /// set, the writer writes one member per stored property.
    func testWriterCoversEveryStoredProperty() throws {
        var generator = TailcfgValueGenerator(seed: 21, presence: 1)
        func memberCount(_ value: some TailcfgJSONWritable) throws -> Int {
            let object = try JSONSerialization.jsonObject(with: Data(try TailcfgJSON.write(value)))
            return try XCTUnwrap(object as? [String: Any]).count
        }
        func assertCovered(_ value: some TailcfgJSONWritable, line: UInt = #line) throws {
            XCTAssertEqual(try memberCount(value), Mirror(reflecting: value).children.count,
                           "\(type(of: value)) has a property the JSON writer does not write", line: line)
        }
        let response = generator.mapResponse()
        try assertCovered(response)
        try assertCovered(generator.node())
        try assertCovered(generator.peerChange())
        try assertCovered(generator.hostinfo().known)
        try assertCovered(try XCTUnwrap(generator.hostinfo().netInfo))
        try assertCovered(try XCTUnwrap(generator.hostinfo().location))
        try assertCovered(HostService(proto: "tcp", port: 22, description: "ssh"))
        try assertCovered(generator.dnsConfig())
        try assertCovered(generator.resolver())
        try assertCovered(DNSRecord(name: "a", type: "A", value: "1.2.3.4"))
        var derp = generator.derpMap()
        while !derp.regions.values.contains(where: { $0.nodes?.isEmpty == false }) { derp = generator.derpMap() }
        try assertCovered(derp)
        try assertCovered(try XCTUnwrap(derp.homeParams))
        let region = try XCTUnwrap(derp.regions.values.first { $0.nodes?.isEmpty == false })
        try assertCovered(region)
        try assertCovered(try XCTUnwrap(region.nodes?.first))
        let rule = generator.filterRule()
        try assertCovered(rule)
        try assertCovered(try XCTUnwrap(rule.dstPorts?.first ?? NetPortRange(ip: "*", ports: .all)))
        try assertCovered(PortRange.all)
        try assertCovered(CapGrant(dsts: [], capMap: [:]))
        try assertCovered(generator.pingRequest())
        try assertCovered(generator.userProfile())
        let ssh = SSHPolicy(rules: [])
        try assertCovered(ssh)
        var sshGenerator = TailcfgValueGenerator(seed: 22, presence: 1)
        var policy = sshGenerator.sshPolicy()
        while policy.rules.isEmpty || policy.rules[0].principals.isEmpty { policy = sshGenerator.sshPolicy() }
        try assertCovered(policy.rules[0])
        try assertCovered(policy.rules[0].principals[0])
        try assertCovered(try XCTUnwrap(policy.rules[0].action))
    }

    func testMutatedGoDocumentsWriteLikeJSONEncoder() throws {
        var decoded = 0
        try MutationFuzzer(seeds: [Array(GoJSON.mapResponse.utf8), Array(GoJSON.node.utf8)], iterations: 3000,
                           maximumLength: 16384, seed: 77).run { bytes in
            if let value = try? TailcfgJSON.decode(MapResponse.self, from: bytes) {
                decoded += 1
                XCTAssertEqual(try? TailcfgJSON.write(value), try? TailcfgJSON.encode(value))
            }
            if let value = try? TailcfgJSON.decode(Node.self, from: bytes) {
                decoded += 1
                XCTAssertEqual(try? TailcfgJSON.write(value), try? TailcfgJSON.encode(value))
            }
        }
        XCTAssertGreaterThan(decoded, 10)
    }

    func testPeerHookWritesPeersAndPeersChanged() throws {
        var generator = TailcfgValueGenerator(seed: 31, presence: 1)
        var response = generator.mapResponse()
        response.peers = [generator.node(), generator.node()]
        response.peersChanged = [generator.node()]
        var seen = [Int64]()
        var writer = TailcfgJSONWriter()
        try response.writeJSON(to: &writer) { node, w in
            seen.append(node.id)
            try node.writeJSON(to: &w)
        }
        XCTAssertEqual(seen, (response.peers ?? []).map(\.id) + (response.peersChanged ?? []).map(\.id))
        XCTAssertEqual(writer.bytes, try TailcfgJSON.encode(response))
    }

    /// Python's json module, an independent parser: the writer's output is strict JSON, parses to the
    /// same value as JSONEncoder's, and Python writing that value back (sorted keys, no ASCII escaping,
    /// no spaces) gives exactly the writer's bytes.
    func testPythonJSONModuleAgrees() throws {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        let python = path.split(separator: ":").map { "\($0)/python3" }.first { FileManager.default.isExecutableFile(atPath: $0) }
        guard let python else { throw XCTSkip("python3 is not installed; skipping the Python json cross-check") }
        var generator = TailcfgValueGenerator(seed: 0x9E7, presence: 0.6)
        generator.allowNegativeZero = false
        var lines = [String]()
        for _ in 0..<120 {
            let response = generator.mapResponse()
            let fast = try TailcfgJSON.write(response)
            let slow = try TailcfgJSON.encode(response)
            lines.append(Data(fast).base64EncodedString() + " " + Data(slow).base64EncodedString())
        }
        let input = FileManager.default.temporaryDirectory.appendingPathComponent("tailcfg-writer-\(getpid()).txt")
        try Data((lines.joined(separator: "\n") + "\n").utf8).write(to: input)
        defer { try? FileManager.default.removeItem(at: input) }
        let script = """
        import base64, json, sys
        bad = 0
        n = -1
        for n, line in enumerate(open(sys.argv[1])):
            fast_b64, slow_b64 = line.split()
            fast = base64.b64decode(fast_b64).decode("utf-8")
            slow = base64.b64decode(slow_b64).decode("utf-8")
            a = json.loads(fast)  # strict: raw control characters in strings are refused
            b = json.loads(slow)
            again = json.dumps(a, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
            if a != b:
                print("message %d parses differently" % n); bad += 1
            elif again != fast:
                print("message %d: python writes %r\\n   writer wrote %r" % (n, again[:300], fast[:300])); bad += 1
        print("checked", n + 1, "bad", bad)
        """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = ["-c", script, input.path]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, text)
        XCTAssertTrue(text.hasSuffix("checked 120 bad 0\n"), text)
    }
}
