import Foundation
import WarrenTestSupport
import XCTest
@testable import WarrenTailcfg

final class HostinfoTests: XCTestCase {
    func testUnknownFieldsArePreservedAndKnownOnesModelled() throws {
        let text = #"{"Hostname":"box","OS":"linux","NewThing":{"a":true},"AnotherNew":[1],"sshHostKeys":["k"],"WoLMACs":["aa:bb:cc:dd:ee:ff"]}"#
        let hostinfo = try decodeGo(Hostinfo.self, text)
        XCTAssertEqual(hostinfo.hostname, "box")
        XCTAssertEqual(hostinfo.sshHostKeys, ["k"])
        XCTAssertEqual(hostinfo.wolMACs, ["aa:bb:cc:dd:ee:ff"])
        XCTAssertEqual(Set(hostinfo.unknownFields.keys), ["NewThing", "AnotherNew"])
        let object = try encodedObject(hostinfo)
        XCTAssertEqual(Set(object.keys), ["Hostname", "OS", "NewThing", "AnotherNew", "sshHostKeys", "WoLMACs"])
        XCTAssertEqual(try decodeGo(Hostinfo.self, try encodedText(hostinfo)), hostinfo)
    }

    func testKnownNamesWinOverStaleUnknownEntries() throws {
        // An "unknown" entry that collides with a known name is never written twice.
        var hostinfo = Hostinfo(HostinfoFields(), unknownFields: ["Hostname": .string("stale")])
        hostinfo.hostname = "fresh"
        let object = try encodedObject(hostinfo)
        XCTAssertEqual(object["Hostname"] as? String, "fresh")
    }

    func testEmptyHostinfoEncodesAsEmptyObject() throws {
        XCTAssertEqual(try encodedText(Hostinfo(HostinfoFields())), "{}")
        XCTAssertEqual(try decodeGo(Hostinfo.self, "{}"), Hostinfo(HostinfoFields()))
        XCTAssertThrowsError(try decodeGo(Hostinfo.self, "[]"))
        XCTAssertThrowsError(try decodeGo(Hostinfo.self, #"{"RoutableIPs":["nonsense"]}"#))
    }

    func testKnownFieldNamesCoverGoNames() {
        for name in ["IPNVersion", "BackendLogID", "OS", "OSVersion", "Hostname", "RoutableIPs", "RequestTags",
                     "Services", "NetInfo", "sshHostKeys", "GoArch", "GoVersion", "Userspace", "AppConnector"] {
            XCTAssertTrue(HostinfoFields.knownFieldNames.contains(name), name)
        }
    }
}

/// Random mutations of the Go documents: decoding must throw or succeed, never crash or hang; what
/// decodes must encode, and that encoding must decode again and encode to the same bytes (Go, too,
/// reads an empty list where it later omits one, so values may differ in nil versus empty).
final class TailcfgFuzzTests: XCTestCase {
    private func fuzz<T: Codable & Equatable>(_ type: T.Type, seeds: [String], seed: UInt64) throws {
        var decodedCount = 0
        try MutationFuzzer(seeds: seeds.map { Array($0.utf8) }, iterations: 3000, maximumLength: 8192, seed: seed).run { bytes in
            guard let value = try? TailcfgJSON.decode(type, from: bytes) else { return }
            decodedCount += 1
            let encoded = try TailcfgJSON.encode(value)
            let again = try TailcfgJSON.decode(type, from: encoded)
            XCTAssertEqual(try TailcfgJSON.encode(again), encoded, String(decoding: bytes, as: UTF8.self))
        }
        XCTAssertGreaterThan(decodedCount, 0, "some mutations (at least the seeds) decode")
    }

    func testFuzzRegisterRequest() throws {
        try fuzz(RegisterRequest.self, seeds: [GoJSON.registerRequest, "{}"], seed: 1)
    }

    func testFuzzRegisterResponse() throws {
        try fuzz(RegisterResponse.self, seeds: [#"{"User":{"ID":5},"Login":{"LoginName":"a"},"AuthURL":"https://x/y","NodeKeySignature":"AQID"}"#], seed: 2)
    }

    func testFuzzMapRequest() throws {
        try fuzz(MapRequest.self, seeds: [GoJSON.mapRequest], seed: 3)
    }

    func testFuzzMapResponse() throws {
        try fuzz(MapResponse.self, seeds: [GoJSON.mapResponse, #"{"KeepAlive":true}"#], seed: 4)
    }

    func testFuzzNodeAndDERPMap() throws {
        try fuzz(Node.self, seeds: [GoJSON.node], seed: 5)
        try fuzz(DERPMap.self, seeds: [GoJSON.derpMap], seed: 6)
    }

    func testFuzzFilterSSHAndTimes() throws {
        try fuzz([FilterRule].self, seeds: [GoJSON.packetFilter], seed: 7)
        try fuzz(SSHPolicy.self, seeds: [GoJSON.sshPolicy], seed: 8)
        try fuzz([TailcfgTime].self, seeds: [#"["2027-01-02T03:04:05.123456789Z","0001-01-01T00:00:00Z","2026-08-22T12:11:12+02:00"]"#], seed: 9)
        try fuzz([AddrPort].self, seeds: [#"["192.0.2.1:41641","[2001:db8::1]:443"]"#], seed: 10)
        try fuzz(PingRequest.self, seeds: [#"{"URL":"https://x","Payload":"aGVsbG8=","IP":"100.64.0.2"}"#], seed: 11)
    }
}
