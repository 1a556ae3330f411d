import XCTest
import WarrenPacket
import WarrenTestSupport

final class IPAddressTests: XCTestCase {
    func testRoundTripsCanonicalForms() {
        for text in ["0.0.0.0", "100.64.0.1", "255.255.255.255", "::", "::1", "fd7a:115c:a1e0::1",
                     "2001:db8::1:0:0:1", "2001:db8:0:1:1:1:1:1", "1::", "::ffff:192.0.2.1",
                     "fd7a:115c:a1e0:ab12:4843:cd96:6258:b240"] {
            XCTAssertEqual(IPAddress(text)?.description, text, text)
        }
    }

    func testRFC5952Canonicalisation() {
        XCTAssertEqual(IPAddress("2001:0db8:0000:0000:0000:0000:0000:0001")?.description, "2001:db8::1")
        XCTAssertEqual(IPAddress("2001:db8:0:0:1:0:0:1")?.description, "2001:db8::1:0:0:1")
        XCTAssertEqual(IPAddress("2001:DB8::A")?.description, "2001:db8::a")
    }

    func testRejectsMalformed() {
        for text in ["", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "1..2.3", ":::", "1::2::3",
                     "1:2:3:4:5:6:7:8:9", "12345::", "g::", "1:2:3:4:5:6:7::8", ":1", "1:"] {
            XCTAssertNil(IPAddress(text), text)
        }
    }

    func testBytesRoundTrip() {
        for text in ["10.1.2.3", "fd7a:115c:a1e0::53"] {
            let address = IPAddress(text)!
            XCTAssertEqual(IPAddress(bytes: address.bytes), address)
        }
    }

    func testPrefixes() {
        let p = IPPrefix("100.64.0.0/10")!
        XCTAssertTrue(p.contains(IPAddress("100.127.255.255")!))
        XCTAssertFalse(p.contains(IPAddress("100.128.0.0")!))
        XCTAssertFalse(p.contains(IPAddress("::1")!))
        XCTAssertEqual(IPPrefix("10.1.2.3/8")?.masked.description, "10.0.0.0/8")
        XCTAssertEqual(IPPrefix("fd7a:115c:a1e0::1/48")?.masked.description, "fd7a:115c:a1e0::/48")
        XCTAssertEqual(IPPrefix("fd7a:115c:a1e0::1/70")?.masked.description, "fd7a:115c:a1e0::/70")
        XCTAssertEqual(IPPrefix("1.2.3.4")?.bits, 32)
        XCTAssertNil(IPPrefix("1.2.3.4/33"))
        XCTAssertNil(IPPrefix("1.2.3.4/"))
        XCTAssertNil(IPPrefix("::/129"))
        XCTAssertTrue(IPPrefix("0.0.0.0/0")!.contains(IPPrefix("10.0.0.0/8")!))
    }

    func testFuzzParsersNeverCrashAndRoundTrip() {
        let seeds = ["1.2.3.4", "::ffff:1.2.3.4", "fd7a:115c:a1e0::1/48", "10.0.0.0/8"].map { Array($0.utf8) }
        MutationFuzzer(seeds: seeds, iterations: 20_000, maximumLength: 64).run { input in
            let text = String(decoding: input, as: UTF8.self)
            if let address = IPAddress(text) {
                XCTAssertEqual(IPAddress(address.description), address, text)
            }
            _ = IPPrefix(text)
        }
    }
}
