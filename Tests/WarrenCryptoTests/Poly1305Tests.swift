import XCTest
import WarrenTestSupport
@testable import WarrenCrypto

final class Poly1305Tests: XCTestCase {
    private func tag(_ message: [UInt8], key: String) -> String {
        let k = unhex(key)
        return hex(message.withUnsafeBytes { m in k.withUnsafeBytes { Poly1305.tag(message: m, key: $0) } })
    }

    private let zero16 = String(repeating: "00", count: 16)

    /// RFC 8439, section 2.5.2.
    func testRFC8439Section252() {
        XCTAssertEqual(tag(Array("Cryptographic Forum Research Group".utf8),
                           key: "85d6be7857556d337f4452fe42d506a80103808afb0db2fd4abff6af4149f51b"),
                       "a8061dc1305136c6c22b8baf0c0127a9")
    }

    /// RFC 8439, appendix A.3, test vectors 1 and 4 to 11 (vectors 5 to 11 exercise the carries
    /// and the final reduction modulo 2^130 - 5).
    func testRFC8439AppendixA3() {
        XCTAssertEqual(tag([UInt8](repeating: 0, count: 64), key: zero16 + zero16), zero16)
        let jabberwocky = Array("""
            'Twas brillig, and the slithy toves
            Did gyre and gimble in the wabe:
            All mimsy were the borogoves,
            And the mome raths outgrabe.
            """.utf8)
        XCTAssertEqual(tag(jabberwocky, key: "1c9240a5eb55d38af333888604f6b5f0473917c1402b80099dca5cbc207075c0"),
                       "4541669a7eaaee61e708dc7cbcc5eb62")
        let r2 = "02" + String(repeating: "00", count: 15)
        let r1 = "01" + String(repeating: "00", count: 15)
        let ff16 = [UInt8](repeating: 0xFF, count: 16)
        XCTAssertEqual(tag(ff16, key: r2 + zero16), "03" + String(repeating: "00", count: 15))
        XCTAssertEqual(tag([2] + [UInt8](repeating: 0, count: 15), key: r2 + String(repeating: "ff", count: 16)),
                       "03" + String(repeating: "00", count: 15))
        XCTAssertEqual(tag(ff16 + [0xF0] + [UInt8](repeating: 0xFF, count: 15) + [0x11] + [UInt8](repeating: 0, count: 15),
                           key: r1 + zero16),
                       "05" + String(repeating: "00", count: 15))
        XCTAssertEqual(tag(ff16 + [0xFB] + [UInt8](repeating: 0xFE, count: 15) + [UInt8](repeating: 1, count: 16),
                           key: r1 + zero16),
                       zero16)
        XCTAssertEqual(tag([0xFD] + [UInt8](repeating: 0xFF, count: 15), key: r2 + zero16),
                       "fa" + String(repeating: "ff", count: 15))
        let r10 = "0100000000000000040000000000000000000000000000000000000000000000"
        let m10 = unhex("""
            e33594d7505e43b90000000000000000 3394d7505e4379cd0100000000000000
            00000000000000000000000000000000 01000000000000000000000000000000
            """)
        XCTAssertEqual(tag(m10, key: r10), "14000000000000005500000000000000")
        XCTAssertEqual(tag(Array(m10[0..<48]), key: r10), "13000000000000000000000000000000")
    }

    /// Cross-check against the `cryptography` package's Poly1305 on random keys and messages.
    func testMatchesPythonCryptography() throws {
        var rng = SeededGenerator(seed: 0x1305)
        var cases: [(key: [UInt8], message: [UInt8])] = []
        for index in 0..<200 {
            // Start with all-ones keys and messages to reach the largest intermediate values.
            let key = index < 4 ? [UInt8](repeating: 0xFF, count: 32) : rng.bytes(count: 32)
            let length = Int.random(in: 0...200, using: &rng)
            cases.append((key, index < 4 ? [UInt8](repeating: 0xFF, count: length) : rng.bytes(count: length)))
        }
        let script = """
            import sys
            from cryptography.hazmat.primitives.poly1305 import Poly1305
            for line in sys.stdin.read().splitlines():
                k, m = [bytes.fromhex(f) for f in line.split(' ')]
                print(Poly1305.generate_tag(k, m).hex())
            """
        let expected = try runPython(script, modules: ["cryptography.hazmat.primitives.poly1305"],
                                     input: cases.map { "\(hex($0.key)) \(hex($0.message))" }.joined(separator: "\n"))
        XCTAssertEqual(expected.count, cases.count)
        for (c, python) in zip(cases, expected) {
            XCTAssertEqual(tag(c.message, key: hex(c.key)), python)
        }
    }

    func testConstantTimeEquals() {
        XCTAssertTrue(constantTimeEquals([1, 2, 3], [1, 2, 3]))
        XCTAssertFalse(constantTimeEquals([1, 2, 3], [1, 2, 4]))
        XCTAssertFalse(constantTimeEquals([1, 2, 3], [1, 2]))
        XCTAssertTrue(constantTimeEquals([UInt8](), [UInt8]()))
    }
}
