import WarrenControlStore
import WarrenPacket
import WarrenTestSupport
import XCTest

final class AddressAllocatorTests: XCTestCase {
    /// Walks the allocator from the start with nothing taken, collecting `count` addresses.
    private func walk(_ allocator: AddressAllocator, _ version: IPVersion, count: Int, from start: IPAddress? = nil) throws -> [IPAddress] {
        var cursor = start
        var out: [IPAddress] = []
        for _ in 0..<count {
            let next = try allocator.next(version, after: cursor) { _ in false }
            out.append(next)
            cursor = next
        }
        return out
    }

    func testStartsAfterTheNetworkAddress() throws {
        let allocator = try AddressAllocator()
        XCTAssertEqual(try walk(allocator, .v4, count: 3).map(\.description), ["100.64.0.1", "100.64.0.2", "100.64.0.3"])
        XCTAssertEqual(try walk(allocator, .v6, count: 2).map(\.description), ["fd7a:115c:a1e0::1", "fd7a:115c:a1e0::2"])
    }

    func testSkipsQuad100AndTheChromeOSRange() throws {
        let allocator = try AddressAllocator()
        let beforeQuad100 = try walk(allocator, .v4, count: 1, from: IPAddress("100.100.99.255")!)
        XCTAssertEqual(beforeQuad100.map(\.description), ["100.100.101.0"])
        let beforeChromeOS = try walk(allocator, .v4, count: 1, from: IPAddress("100.115.91.255")!)
        XCTAssertEqual(beforeChromeOS.map(\.description), ["100.115.94.0"])
        XCTAssertFalse(allocator.isAssignable(IPAddress("100.100.100.100")!))
        XCTAssertFalse(allocator.isAssignable(IPAddress("100.115.93.7")!))
        XCTAssertFalse(allocator.isAssignable(IPAddress("100.64.0.0")!))
        XCTAssertFalse(allocator.isAssignable(IPAddress("100.127.255.255")!))
        XCTAssertFalse(allocator.isAssignable(IPAddress("10.0.0.1")!))
        XCTAssertTrue(allocator.isAssignable(IPAddress("100.127.255.254")!))
    }

    func testSkipsTailscaleIPv6Ranges() throws {
        let allocator = try AddressAllocator()
        XCTAssertEqual(try walk(allocator, .v6, count: 1, from: IPAddress("fd7a:115c:a1e0::52")!).map(\.description), ["fd7a:115c:a1e0::54"])
        XCTAssertEqual(try walk(allocator, .v6, count: 1, from: IPAddress("fd7a:115c:a1e0:b19:ffff:ffff:ffff:ffff")!).map(\.description),
                       ["fd7a:115c:a1e0:b1b::"])
        XCTAssertFalse(allocator.isAssignable(IPAddress("fd7a:115c:a1e0:ab12:4843:cd96:6264:1")!))
        XCTAssertFalse(allocator.isAssignable(IPAddress("fd7a:115c:a1e0:efe3::9")!))
        XCTAssertFalse(allocator.isAssignable(IPAddress("fd7a:115c:a1e0::")!))
        XCTAssertFalse(allocator.isAssignable(IPAddress("fd7b::1")!))
    }

    func testTakenAddressesAreSkippedAndTheEndIsExhaustion() throws {
        let allocator = try AddressAllocator(ipv4Prefix: IPPrefix("100.64.0.0/30")!, ipv6Prefix: IPPrefix("fd7a:115c:a1e0::/126")!)
        let taken: Set<IPAddress> = [IPAddress("100.64.0.1")!]
        XCTAssertEqual(try allocator.next(.v4, after: nil) { taken.contains($0) }, IPAddress("100.64.0.2")!)
        XCTAssertThrowsError(try allocator.next(.v4, after: IPAddress("100.64.0.2")!) { _ in false }) { error in
            XCTAssertEqual((error as? StoreError)?.code, .exhausted)
        }
        // IPv6 has no broadcast: ::1 to ::3.
        XCTAssertEqual(try walk(allocator, .v6, count: 3).map(\.description), ["fd7a:115c:a1e0::1", "fd7a:115c:a1e0::2", "fd7a:115c:a1e0::3"])
    }

    func testACursorOutsideAChangedPrefixRestartsAtItsStart() throws {
        let allocator = try AddressAllocator(ipv4Prefix: IPPrefix("100.80.0.0/16")!)
        XCTAssertEqual(try allocator.next(.v4, after: IPAddress("100.64.0.9")!) { _ in false }, IPAddress("100.80.0.1")!)
    }

    func testProbesAreBounded() throws {
        let allocator = try AddressAllocator()
        var asked = 0
        XCTAssertThrowsError(try allocator.next(.v4, after: nil, maximumProbes: 100) { _ in asked += 1; return true })
        XCTAssertEqual(asked, 100)
    }

    func testRejectsPrefixesOfTheWrongFamilyOrSize() {
        XCTAssertThrowsError(try AddressAllocator(ipv4Prefix: IPPrefix("fd00::/8")!))
        XCTAssertThrowsError(try AddressAllocator(ipv4Prefix: IPPrefix("100.64.0.0/31")!))
        XCTAssertThrowsError(try AddressAllocator(ipv6Prefix: IPPrefix("10.0.0.0/8")!))
        XCTAssertThrowsError(try AddressAllocator(ipv6Prefix: IPPrefix("fd7a::/127")!))
    }
}

final class DNSLabelTests: XCTestCase {
    func testSanitize() {
        XCTAssertEqual(DNSLabel.sanitize("My-Laptop"), "my-laptop")
        XCTAssertEqual(DNSLabel.sanitize("web server.local"), "web-server-local")
        XCTAssertEqual(DNSLabel.sanitize("--x__y--"), "x-y")
        XCTAssertEqual(DNSLabel.sanitize("élan"), "lan")
        XCTAssertEqual(DNSLabel.sanitize(""), "node")
        XCTAssertEqual(DNSLabel.sanitize("!!!"), "node")
        XCTAssertEqual(DNSLabel.sanitize(String(repeating: "a", count: 100)).count, 63)
    }

    func testUniqueSuffixesFitInALabel() throws {
        let long = String(repeating: "b", count: 63)
        let taken: Set<String> = [long, String(repeating: "b", count: 61) + "-1"]
        let name = try DNSLabel.unique(long) { taken.contains($0) }
        XCTAssertEqual(name, String(repeating: "b", count: 61) + "-2")
        XCTAssertTrue(DNSLabel.isValid(name))
    }
}

final class SecretKeyTextTests: XCTestCase {
    func testRoundTripAndShape() throws {
        var generator = SeededGeneratorForKeys(seed: 3)
        let key = SecretKeyText.generate(.preAuth, using: &generator)
        XCTAssertEqual(key.text.count, "wkey-auth-".count + 12 + 1 + 64)
        let parsed = try XCTUnwrap(SecretKeyText(parsing: key.text, kind: .preAuth))
        XCTAssertEqual(parsed, key)
        XCTAssertNil(SecretKeyText(parsing: key.text, kind: .api))
        XCTAssertTrue(parsed.matches(storedHash: key.secretHash))
        XCTAssertFalse(parsed.matches(storedHash: Array(key.secretHash.dropLast()) + [key.secretHash.last! ^ 1]))
        XCTAssertFalse(parsed.matches(storedHash: []))
    }

    func testFuzzParsingNeverTraps() {
        var generator = SeededGeneratorForKeys(seed: 5)
        let valid = SecretKeyText.generate(.preAuth, using: &generator).text
        MutationFuzzer(seeds: [Array(valid.utf8), Array("wkey-api-".utf8)], iterations: 20_000, maximumLength: 200).run { bytes in
            let text = String(decoding: bytes, as: UTF8.self)
            if let parsed = SecretKeyText(parsing: text, kind: .preAuth) {
                XCTAssertEqual(parsed.text, text)
            }
            _ = SecretKeyText(parsing: text, kind: .api)
        }
    }

    func testHashIsSHA256OfTheSecretPart() throws {
        // Cross-check with Python's hashlib.
        var generator = SeededGeneratorForKeys(seed: 4)
        let key = SecretKeyText.generate(.api, using: &generator)
        let python = try PythonCheck.run("import hashlib,sys; print(hashlib.sha256(sys.argv[1].encode()).hexdigest())", arguments: [key.secret])
        XCTAssertEqual(python, key.secretHash.map { String(format: "%02x", $0) }.joined())
    }
}
