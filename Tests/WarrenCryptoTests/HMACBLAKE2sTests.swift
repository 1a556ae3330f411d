import XCTest
import WarrenTestSupport
@testable import WarrenCrypto

final class HMACBLAKE2sTests: XCTestCase {
    /// Cross-check HMAC-BLAKE2s and Noise's HKDF against Python's `hmac` with `hashlib.blake2s`.
    func testMatchesPythonHMACAndHKDF() throws {
        var rng = SeededGenerator(seed: 0x484D_4143)
        var cases: [(key: [UInt8], data: [UInt8])] = []
        for index in 0..<120 {
            // Include keys longer than the 64-byte block, which HMAC hashes first.
            let keyLength = index < 4 ? [0, 64, 65, 100][index] : Int.random(in: 0...80, using: &rng)
            cases.append((rng.bytes(count: keyLength), rng.bytes(count: Int.random(in: 0...200, using: &rng))))
        }
        let script = """
            import sys, hmac, hashlib
            def mac(k, d): return hmac.new(k, d, hashlib.blake2s).digest()
            for line in sys.stdin.read().splitlines():
                k, d = [bytes.fromhex(f) for f in line.split(' ')]
                prk = mac(k, d)
                t1 = mac(prk, b'\\x01'); t2 = mac(prk, t1 + b'\\x02'); t3 = mac(prk, t2 + b'\\x03')
                print(mac(k, d).hex(), t1.hex(), t2.hex(), t3.hex())
            """
        let input = cases.map { "\(hex($0.key)) \(hex($0.data))" }.joined(separator: "\n")
        let expected = try runPython(script, modules: ["hmac", "hashlib"], input: input)
        XCTAssertEqual(expected.count, cases.count)
        for (c, line) in zip(cases, expected) {
            let fields = line.split(separator: " ").map(String.init)
            XCTAssertEqual(hex(HMACBLAKE2s.authenticationCode(for: c.data, key: c.key)), fields[0])
            for count in 1...3 {
                let outputs = NoiseHKDF.derive(chainingKey: c.key, inputKeyMaterial: c.data, count: count)
                XCTAssertEqual(outputs.map(hex), Array(fields[1...count]))
            }
        }
    }
}
