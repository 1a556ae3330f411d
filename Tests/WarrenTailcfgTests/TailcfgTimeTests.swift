import Foundation
import WarrenPacket
import XCTest
@testable import WarrenTailcfg

final class TailcfgTimeTests: XCTestCase {
    func testGoZeroTimeText() throws {
        XCTAssertEqual(TailcfgTime.goZero.description, "0001-01-01T00:00:00Z")
        XCTAssertEqual(TailcfgTime(rfc3339: "0001-01-01T00:00:00Z"), .goZero)
        XCTAssertTrue(TailcfgTime(rfc3339: "0001-01-01T00:00:00Z")?.isGoZero ?? false)
        XCTAssertEqual(try encodedText([TailcfgTime.goZero]), #"["0001-01-01T00:00:00Z"]"#)
    }

    func testUnixEpochAndKnownInstants() {
        XCTAssertEqual(TailcfgTime(secondsSince1970: 0).description, "1970-01-01T00:00:00Z")
        // The "log out" expiry clients send: 123 seconds after the epoch.
        XCTAssertEqual(TailcfgTime(rfc3339: "1970-01-01T00:02:03Z")?.secondsSince1970, 123)
        // 2000-02-29 (leap day), computed independently with Foundation's calendar.
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let date = calendar.date(from: DateComponents(year: 2000, month: 2, day: 29, hour: 23, minute: 59, second: 58))!
        let seconds = Int64(date.timeIntervalSince1970)
        XCTAssertEqual(TailcfgTime(rfc3339: "2000-02-29T23:59:58Z")?.secondsSince1970, seconds)
        XCTAssertEqual(TailcfgTime(secondsSince1970: seconds).description, "2000-02-29T23:59:58Z")
        // Before the epoch.
        XCTAssertEqual(TailcfgTime(secondsSince1970: -1).description, "1969-12-31T23:59:59Z")
        XCTAssertEqual(TailcfgTime(rfc3339: "1969-12-31T23:59:59Z")?.secondsSince1970, -1)
    }

    func testNanosecondsAsGoRFC3339Nano() {
        let t = TailcfgTime(rfc3339: "2027-01-02T03:04:05.123456789Z")
        XCTAssertEqual(t?.nanoseconds, 123_456_789)
        XCTAssertEqual(t?.description, "2027-01-02T03:04:05.123456789Z")
        // Go's RFC3339Nano drops trailing zeros of the fraction, and the whole fraction when zero.
        XCTAssertEqual(TailcfgTime(rfc3339: "2026-08-22T10:11:12.500Z")?.description, "2026-08-22T10:11:12.5Z")
        XCTAssertEqual(TailcfgTime(rfc3339: "2026-08-22T10:11:12.000Z")?.description, "2026-08-22T10:11:12Z")
        XCTAssertEqual(TailcfgTime(rfc3339: "2026-08-22T10:11:12.000000001Z")?.nanoseconds, 1)
    }

    func testOffsetsNormaliseToUTC() {
        let plus = TailcfgTime(rfc3339: "2026-08-22T12:11:12+02:00")
        let minus = TailcfgTime(rfc3339: "2026-08-22T05:41:12-04:30")
        let utc = TailcfgTime(rfc3339: "2026-08-22T10:11:12Z")
        XCTAssertNotNil(utc)
        XCTAssertEqual(plus, utc)
        XCTAssertEqual(minus, utc)
        XCTAssertEqual(plus?.description, "2026-08-22T10:11:12Z")
    }

    func testRejectsMalformedTimes() {
        for text in ["", "2026-08-22", "2026-08-22T10:11:12", "2026-02-30T00:00:00Z", "2026-13-01T00:00:00Z",
                     "2026-08-22T24:00:00Z", "2026-08-22T10:60:00Z", "2026-08-22T10:11:12.Z",
                     "2026-08-22T10:11:12.1234567891Z", "2026-08-22T10:11:12+0200", "2026-08-22T10:11:12Zjunk",
                     "2026-08-22 10:11:12Z", "x026-08-22T10:11:12Z", "1970-01-01T00:00:00+2:00"] {
            XCTAssertNil(TailcfgTime(rfc3339: text), text)
        }
        XCTAssertThrowsError(try decodeGo([TailcfgTime].self, #"["yesterday"]"#))
        XCTAssertThrowsError(try decodeGo([TailcfgTime].self, #"[12345]"#))
    }

    func testYearsOutsideFourDigitsAreNotEncoded() throws {
        // Go parses this (it is 10000-01-01T00:00:59Z in UTC) but refuses to marshal it again.
        let late = try XCTUnwrap(TailcfgTime(rfc3339: "9999-12-31T23:59:59-00:01"))
        XCTAssertThrowsError(try TailcfgJSON.encode([late]))
        let early = try XCTUnwrap(TailcfgTime(rfc3339: "0000-01-01T00:00:00+00:01"))
        XCTAssertThrowsError(try TailcfgJSON.encode([early]))
        XCTAssertEqual(try encodedText([TailcfgTime(rfc3339: "9999-12-31T23:59:59Z")!]), #"["9999-12-31T23:59:59Z"]"#)
        XCTAssertEqual(try encodedText([TailcfgTime(rfc3339: "0000-01-01T00:00:00Z")!]), #"["0000-01-01T00:00:00Z"]"#)
    }

    func testOrdering() {
        let a = TailcfgTime(secondsSince1970: 10, nanoseconds: 5)
        let b = TailcfgTime(secondsSince1970: 10, nanoseconds: 6)
        let c = TailcfgTime(secondsSince1970: 11)
        XCTAssertLessThan(a, b)
        XCTAssertLessThan(b, c)
        XCTAssertLessThan(TailcfgTime.goZero, a)
    }

    func testRoundTripOverManyInstants() throws {
        var generator = SplitMix(seed: 42)
        for _ in 0..<2000 {
            // Years 0001 to 9999.
            let seconds = Int64(generator.next() % 315_537_897_600) - 62_135_596_800
            let nanos = Int32(generator.next() % 1_000_000_000)
            let time = TailcfgTime(secondsSince1970: seconds, nanoseconds: nanos)
            XCTAssertEqual(TailcfgTime(rfc3339: time.description), time, time.description)
            let back = try decodeGo([TailcfgTime].self, try encodedText([time]))
            XCTAssertEqual(back, [time])
        }
    }
}

struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

final class AddrPortTests: XCTestCase {
    func testParsesGoNetipForms() throws {
        let v4 = try XCTUnwrap(AddrPort("192.0.2.1:41641"))
        XCTAssertEqual(v4.address, IPAddress("192.0.2.1"))
        XCTAssertEqual(v4.port, 41641)
        XCTAssertEqual(v4.description, "192.0.2.1:41641")
        let v6 = try XCTUnwrap(AddrPort("[2001:db8::1]:443"))
        XCTAssertEqual(v6.address, IPAddress("2001:db8::1"))
        XCTAssertEqual(v6.port, 443)
        XCTAssertEqual(v6.description, "[2001:db8::1]:443")
        XCTAssertEqual(AddrPort("[2001:DB8:0:0::1]:443")?.description, "[2001:db8::1]:443")
        XCTAssertEqual(AddrPort("0.0.0.0:0")?.port, 0)
    }

    func testRejectsBadForms() {
        for text in ["", "192.0.2.1", "192.0.2.1:", "192.0.2.1:65536", "192.0.2.1:-1", "192.0.2.1:+80",
                     "2001:db8::1:443", "[2001:db8::1]", "[192.0.2.1]:80", "[2001:db8::1:443", "host.example:80",
                     "192.0.2.1:123456", ":80", "[]:80"] {
            XCTAssertNil(AddrPort(text), text)
        }
    }

    func testCodableAsString() throws {
        let values = try decodeGo([AddrPort].self, #"["192.0.2.1:41641","[::1]:1"]"#)
        XCTAssertEqual(values.map(\.description), ["192.0.2.1:41641", "[::1]:1"])
        XCTAssertEqual(try encodedText(values), #"["192.0.2.1:41641","[::1]:1"]"#)
        XCTAssertThrowsError(try decodeGo([AddrPort].self, #"["192.0.2.1"]"#))
        XCTAssertThrowsError(try decodeGo([AddrPort].self, #"[41641]"#))
    }
}

final class CapabilityVersionTests: XCTestCase {
    func testMilestonesAreOrdered() {
        let milestones = [CapabilityVersions.noise, CapabilityVersions.peersChangedPatchFull, CapabilityVersions.earlyNoise,
                          CapabilityVersions.streamingRequestsAreReadOnly, CapabilityVersions.packetFilters,
                          CapabilityVersions.homeDERP, CapabilityVersions.nilAllowedIPsMeansAddresses,
                          CapabilityVersions.minimumSupported, CapabilityVersions.current]
        XCTAssertEqual(milestones, milestones.sorted())
        XCTAssertGreaterThan(CapabilityVersions.current, CapabilityVersions.minimumSupported)
    }

    func testLegacyDERPString() {
        XCTAssertEqual(LegacyDERP.string(region: 900), "127.3.3.40:900")
        // The legacy string is itself a valid AddrPort, as Go's clients parse it.
        XCTAssertEqual(AddrPort(LegacyDERP.string(region: 1))?.port, 1)
    }
}
