import XCTest
import WarrenTestSupport
@testable import WarrenCrypto

final class XChaCha20Poly1305Tests: XCTestCase {
    /// draft-irtf-cfrg-xchacha-03, section 2.2.1.
    func testHChaCha20DraftVector() {
        let key = [UInt8](0...31)
        let nonce = unhex("00:00:00:09:00:00:00:4a:00:00:00:00:31:41:59:27")
        let subkey = key.withUnsafeBytes { k in nonce.withUnsafeBytes { n in HChaCha20.subkey(key: k, nonce: n) } }
        XCTAssertEqual(hex(subkey), "82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc")
    }

    private let sunscreen = Array(
        "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.".utf8)
    private let vectorAAD = unhex("50515253c0c1c2c3c4c5c6c7")
    private let vectorKey = [UInt8](0x80...0x9F)
    private let vectorNonce = [UInt8](0x40...0x57)
    private let vectorCiphertext = """
        bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216\
        cb96b72e1213b4522f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff921f9664c97637da9768812f615c68b13b52e
        """
    private let vectorTag = "c0875924c1c7987947deafd8780acf49"

    /// draft-irtf-cfrg-xchacha-03, appendix A.3.1.
    func testAEADDraftVectorSeal() throws {
        let sealed = try XChaCha20Poly1305.seal(sunscreen, key: vectorKey, nonce: vectorNonce, authenticating: vectorAAD)
        XCTAssertEqual(hex(sealed), vectorCiphertext + vectorTag)
    }

    func testAEADDraftVectorOpen() throws {
        let opened = try XChaCha20Poly1305.open(unhex(vectorCiphertext + vectorTag), key: vectorKey, nonce: vectorNonce,
                                                authenticating: vectorAAD)
        XCTAssertEqual(opened, sunscreen)
    }

    func testEveryModifiedByteFailsToOpen() throws {
        let sealed = unhex(vectorCiphertext + vectorTag)
        for index in sealed.indices {
            var tampered = sealed
            tampered[index] ^= 0x01
            XCTAssertThrowsError(try XChaCha20Poly1305.open(tampered, key: vectorKey, nonce: vectorNonce,
                                                            authenticating: vectorAAD)) { error in
                XCTAssertEqual(error as? WarrenCryptoError, .authenticationFailure)
            }
        }
        var aad = vectorAAD
        aad[0] ^= 0x80
        XCTAssertThrowsError(try XChaCha20Poly1305.open(sealed, key: vectorKey, nonce: vectorNonce, authenticating: aad))
        var nonce = vectorNonce
        nonce[3] ^= 0x01  // a byte that only HChaCha20 sees
        XCTAssertThrowsError(try XChaCha20Poly1305.open(sealed, key: vectorKey, nonce: nonce, authenticating: vectorAAD))
    }

    func testBadSizesThrow() {
        XCTAssertThrowsError(try XChaCha20Poly1305.seal([1], key: [UInt8](repeating: 0, count: 31), nonce: vectorNonce)) {
            XCTAssertEqual($0 as? WarrenCryptoError, .invalidKeySize)
        }
        XCTAssertThrowsError(try XChaCha20Poly1305.seal([1], key: vectorKey, nonce: [UInt8](repeating: 0, count: 12))) {
            XCTAssertEqual($0 as? WarrenCryptoError, .invalidNonceSize)
        }
        XCTAssertThrowsError(try XChaCha20Poly1305.open([UInt8](repeating: 0, count: 15), key: vectorKey, nonce: vectorNonce)) {
            XCTAssertEqual($0 as? WarrenCryptoError, .ciphertextTooShort)
        }
    }

    func testEmptyPlaintextRoundTrip() throws {
        let sealed = try XChaCha20Poly1305.seal([], key: vectorKey, nonce: vectorNonce)
        XCTAssertEqual(sealed.count, 16)
        XCTAssertEqual(try XChaCha20Poly1305.open(sealed, key: vectorKey, nonce: vectorNonce), [])
    }

    /// Cross-check against libsodium through PyNaCl on random keys, nonces, messages and associated data.
    func testMatchesPyNaClOnRandomInputs() throws {
        var rng = SeededGenerator(seed: 0x58_4348_4143_4841)
        var cases: [(key: [UInt8], nonce: [UInt8], aad: [UInt8], message: [UInt8])] = []
        for _ in 0..<64 {
            cases.append((rng.bytes(count: 32), rng.bytes(count: 24), rng.bytes(count: Int.random(in: 0...40, using: &rng)),
                          rng.bytes(count: Int.random(in: 0...600, using: &rng))))
        }
        let input = cases.map { "\(hex($0.key)) \(hex($0.nonce)) \(hex($0.aad)) \(hex($0.message))" }.joined(separator: "\n")
        let script = """
            import sys
            from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_encrypt as enc
            for line in sys.stdin.read().splitlines():
                k, n, a, m = [bytes.fromhex(f) for f in line.split(' ')]
                print(enc(m, a, n, k).hex())
            """
        let expected = try runPython(script, modules: ["nacl.bindings"], input: input)
        XCTAssertEqual(expected.count, cases.count)
        for (c, python) in zip(cases, expected) {
            let sealed = try XChaCha20Poly1305.seal(c.message, key: c.key, nonce: c.nonce, authenticating: c.aad)
            XCTAssertEqual(hex(sealed), python)
            XCTAssertEqual(try XChaCha20Poly1305.open(unhex(python), key: c.key, nonce: c.nonce, authenticating: c.aad),
                           c.message)
        }
    }
}
