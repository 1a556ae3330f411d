import XCTest
import WarrenTestSupport
@testable import WarrenCrypto

final class BLAKE2sTests: XCTestCase {
    /// RFC 7693, Appendix B: BLAKE2s-256("abc").
    func testRFC7693AppendixB() {
        XCTAssertEqual(hex(BLAKE2s.hash(data: Array("abc".utf8))),
                       "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982")
    }

    func testEmptyInput() {
        XCTAssertEqual(hex(BLAKE2s.hash(data: [UInt8]())),
                       "69217a3079908094e11121d042354a7c1f55b6482ca1a51e1b250dfd1ed0eef9")
    }

    /// RFC 7693, Appendix E: the self-test "grand hash" over digests of lengths 16, 20, 28 and 32 of
    /// inputs of lengths 0, 3, 64, 65, 255 and 1024, unkeyed and keyed, all fed into one BLAKE2s-256.
    func testRFC7693AppendixESelfTest() {
        // The RFC's deterministic byte sequence (a Fibonacci-like generator seeded with `seed`).
        func sequence(count: Int, seed: UInt32) -> [UInt8] {
            var a = 0xDEAD_4BAD &* seed
            var b: UInt32 = 1
            return (0..<count).map { _ in
                let t = a &+ b
                a = b
                b = t
                return UInt8(truncatingIfNeeded: t >> 24)
            }
        }
        var grand = BLAKE2s(outputByteCount: 32)
        for outputLength in [16, 20, 28, 32] {
            for inputLength in [0, 3, 64, 65, 255, 1024] {
                let input = sequence(count: inputLength, seed: UInt32(inputLength))
                grand.update(data: BLAKE2s.hash(data: input, outputByteCount: outputLength))
                let key = sequence(count: outputLength, seed: UInt32(outputLength))
                grand.update(data: BLAKE2s.hash(data: input, key: key, outputByteCount: outputLength))
            }
        }
        XCTAssertEqual(hex(grand.finalize()), "6a411f08ce25adcdfb02aba641451cec53c598b24f4fc787fbdc88797f4c1dfe")
    }

    /// Keyed entries of the BLAKE2 reference blake2s-kat.txt: key 00 01 ... 1f, input 00 01 ... (n-1).
    func testKeyedKATEntries() {
        let key = [UInt8](0...31)
        let expected: [(Int, String)] = [
            (0, "48a8997da407876b3d79c0d92325ad3b89cbb754d86ab71aee047ad345fd2c49"),
            (1, "40d15fee7c328830166ac3f918650f807e7e01e177258cdc0a39b11f598066f1"),
            (65, "21fe0ceb0052be7fb0f004187cacd7de67fa6eb0938d927677f2398c132317a8"),
            (128, "0c311f38c35a4fb90d651c289d486856cd1413df9b0677f53ece2cd9e477c60a"),
            (255, "3fb735061abc519dfe979e54c1ee5bfad0a9d858b3315bad34bde999efd724dd"),
        ]
        for (length, digest) in expected {
            let input = (0..<length).map { UInt8($0) }
            XCTAssertEqual(hex(BLAKE2s.hash(data: input, key: key)), digest, "KAT entry \(length)")
            // Byte at a time, through the incremental API.
            var hasher = BLAKE2s(outputByteCount: 32, key: key)
            for byte in input { hasher.update(data: [byte]) }
            XCTAssertEqual(hex(hasher.finalize()), digest, "KAT entry \(length), byte at a time")
        }
    }

    func testNonContiguousSequenceInput() {
        let bytes = (0..<200).map { UInt8($0 & 0xFF) }
        XCTAssertEqual(BLAKE2s.hash(data: bytes.lazy.map { $0 }), BLAKE2s.hash(data: bytes))
    }

    /// Cross-check against Python's hashlib.blake2s on random data, keys and digest sizes, feeding the
    /// Swift hasher in random-sized pieces.
    func testMatchesPythonHashlibOnRandomInputs() throws {
        var rng = SeededGenerator(seed: 0xB1A4_E25)
        var cases: [(data: [UInt8], key: [UInt8], size: Int)] = []
        for _ in 0..<300 {
            let data = rng.bytes(count: Int.random(in: 0...300, using: &rng))
            let key = rng.bytes(count: Int.random(in: 0...32, using: &rng))
            cases.append((data, key, Int.random(in: 1...32, using: &rng)))
        }
        let script = """
            import sys, hashlib
            for line in sys.stdin.read().splitlines():
                d, k, s = line.split(' ')
                print(hashlib.blake2s(bytes.fromhex(d), key=bytes.fromhex(k), digest_size=int(s)).hexdigest())
            """
        let input = cases.map { "\(hex($0.data)) \(hex($0.key)) \($0.size)" }.joined(separator: "\n")
        let expected = try runPython(script, modules: ["hashlib"], input: input)
        XCTAssertEqual(expected.count, cases.count)
        for (c, python) in zip(cases, expected) {
            XCTAssertEqual(hex(BLAKE2s.hash(data: c.data, key: c.key, outputByteCount: c.size)), python)
            var hasher = BLAKE2s(outputByteCount: c.size, key: c.key)
            var offset = 0
            while offset < c.data.count {
                let piece = Int.random(in: 0...min(130, c.data.count - offset), using: &rng)
                hasher.update(data: c.data[offset..<(offset + piece)])
                offset += piece
            }
            XCTAssertEqual(hex(hasher.finalize()), python, "chunked")
        }
    }
}
