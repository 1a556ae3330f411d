import Crypto
import XCTest
import WarrenTestSupport
@testable import WarrenCrypto

final class NaClTests: XCTestCase {
    // The classic NaCl distribution vectors (tests/box.c, secretbox.c, box.exp; also in libsodium's
    // test/default): Alice's and Bob's X25519 keys (those of RFC 7748 section 6.1), a nonce, and a
    // 131-byte message.
    private let aliceSecret = unhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    private let alicePublic = unhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    private let bobSecret = unhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
    private let bobPublic = unhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    private let nonce = unhex("69696ee955b62b73cd62bda875fc73d68219e0036b7a0b37")
    private let sharedKey = unhex("1b27556473e985d462cd51197a9a46c76009549eac6474f206c4ee0844f68389")
    private let message = unhex("""
        be075fc53c81f2d5cf141316ebeb0c7b5228c52a4c62cbd44b66849b64244ffce5ecbaaf33bd751a1ac728d45e6c61296cdc3c01233561f4
        1db66cce314adb310e3be8250c46f06dceea3a7fa1348057e2f6556ad6b1318a024a838f21af1fde048977eb48f59ffd4924ca1c60902e52
        f0a089bc76897040e082f937763848645e0705
        """)
    /// box.exp: the 16-byte tag then the 131-byte ciphertext.
    private let sealedVector = unhex("""
        f3ffc7703f9400e52a7dfb4b3d3305d98e993b9f48681273c29650ba32fc76ce48332ea7164d96a4476fb8c531a1186ac0dfc17c98dce87b
        4da7f011ec48c97271d2c20f9b928fe2270d6fb863d51738b48eeee314a7cc8ab932164548e526ae90224368517acfeabd6bb3732bc0e9da
        99832b61ca01b6de56244a9e88d5f9b37973f622a43d14a6599b1f654cb45a74e355a5
        """)

    private func keys() throws -> (alice: Curve25519.KeyAgreement.PrivateKey, bob: Curve25519.KeyAgreement.PrivateKey) {
        (try .init(rawRepresentation: aliceSecret), try .init(rawRepresentation: bobSecret))
    }

    func testVectorLengths() {
        XCTAssertEqual(message.count, 131)
        XCTAssertEqual(sealedVector.count, 147)
    }

    func testHSalsa20OfSharedSecretIsTheNaClFirstKey() throws {
        let (alice, bob) = try keys()
        XCTAssertEqual(hex(alice.publicKey.rawRepresentation.map { $0 }), hex(alicePublic))
        XCTAssertEqual(hex(bob.publicKey.rawRepresentation.map { $0 }), hex(bobPublic))
        XCTAssertEqual(try NaClBox.precompute(publicKey: bob.publicKey, privateKey: alice).bytes, sharedKey)
        XCTAssertEqual(try NaClBox.precompute(publicKey: alice.publicKey, privateKey: bob).bytes, sharedKey)
    }

    func testSecretBoxVector() throws {
        XCTAssertEqual(hex(try NaClSecretBox.seal(message, key: sharedKey, nonce: nonce)), hex(sealedVector))
        XCTAssertEqual(try NaClSecretBox.open(sealedVector, key: sharedKey, nonce: nonce), message)
    }

    func testBoxVector() throws {
        let (alice, bob) = try keys()
        let sealed = try NaClBox.seal(message, nonce: nonce, recipientPublicKey: bob.publicKey, senderPrivateKey: alice)
        XCTAssertEqual(hex(sealed), hex(sealedVector))
        XCTAssertEqual(try NaClBox.open(sealedVector, nonce: nonce, senderPublicKey: alice.publicKey,
                                        recipientPrivateKey: bob), message)
        let precomputed = try NaClBox.precompute(publicKey: alice.publicKey, privateKey: bob)
        XCTAssertEqual(try precomputed.open(sealedVector, nonce: nonce), message)
        XCTAssertEqual(try precomputed.seal(message, nonce: nonce), sealedVector)
    }

    func testOpenRejectsEveryModifiedByte() throws {
        let (alice, bob) = try keys()
        for index in sealedVector.indices {
            for bit in [0x01, 0x80] as [UInt8] {
                var tampered = sealedVector
                tampered[index] ^= bit
                XCTAssertThrowsError(try NaClSecretBox.open(tampered, key: sharedKey, nonce: nonce)) {
                    XCTAssertEqual($0 as? WarrenCryptoError, .authenticationFailure)
                }
                XCTAssertThrowsError(try NaClBox.open(tampered, nonce: nonce, senderPublicKey: alice.publicKey,
                                                      recipientPrivateKey: bob))
            }
        }
        var otherNonce = nonce
        otherNonce[23] ^= 1
        XCTAssertThrowsError(try NaClSecretBox.open(sealedVector, key: sharedKey, nonce: otherNonce))
        XCTAssertThrowsError(try NaClSecretBox.open(Array(sealedVector.dropLast()), key: sharedKey, nonce: nonce))
        // Bob's key pair on both sides is not the pair that sealed it.
        XCTAssertThrowsError(try NaClBox.open(sealedVector, nonce: nonce, senderPublicKey: bob.publicKey,
                                              recipientPrivateKey: bob))
    }

    func testBadSizesAndShortInputThrow() throws {
        XCTAssertThrowsError(try NaClSecretBox.seal([], key: [UInt8](repeating: 0, count: 16), nonce: nonce)) {
            XCTAssertEqual($0 as? WarrenCryptoError, .invalidKeySize)
        }
        XCTAssertThrowsError(try NaClSecretBox.seal([], key: sharedKey, nonce: [UInt8](repeating: 0, count: 12))) {
            XCTAssertEqual($0 as? WarrenCryptoError, .invalidNonceSize)
        }
        for count in 0..<16 {
            XCTAssertThrowsError(try NaClSecretBox.open([UInt8](repeating: 0, count: count), key: sharedKey, nonce: nonce)) {
                XCTAssertEqual($0 as? WarrenCryptoError, .ciphertextTooShort)
            }
        }
        let empty = try NaClSecretBox.seal([], key: sharedKey, nonce: nonce)
        XCTAssertEqual(empty.count, 16)
        XCTAssertEqual(try NaClSecretBox.open(empty, key: sharedKey, nonce: nonce), [])
    }

    /// libsodium's box.c: a small-order public key gives an all-zero X25519 result and is refused.
    func testSmallOrderPublicKeyIsRejected() throws {
        let (alice, _) = try keys()
        let smallOrder = try Curve25519.KeyAgreement.PublicKey(
            rawRepresentation: unhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"))
        XCTAssertThrowsError(try NaClBox.seal(message, nonce: nonce, recipientPublicKey: smallOrder, senderPrivateKey: alice)) {
            XCTAssertEqual($0 as? WarrenCryptoError, .invalidPublicKey)
        }
    }

    /// Cross-check secretbox, box and beforenm against libsodium through PyNaCl on random inputs.
    func testMatchesPyNaClOnRandomInputs() throws {
        var rng = SeededGenerator(seed: 0x4E61_434C)
        var cases: [(key: [UInt8], secret: [UInt8], nonce: [UInt8], message: [UInt8])] = []
        for _ in 0..<60 {
            cases.append((rng.bytes(count: 32), rng.bytes(count: 32), rng.bytes(count: 24),
                          rng.bytes(count: Int.random(in: 0...700, using: &rng))))
        }
        // For box: `key` serves as the sender's secret key and `secret` as the recipient's.
        let script = """
            import sys
            import nacl.bindings as b
            for line in sys.stdin.read().splitlines():
                k, s, n, m = [bytes.fromhex(f) for f in line.split(' ')]
                recipient_pk = b.crypto_scalarmult_base(s)
                boxed = b.crypto_box(m, n, recipient_pk, k)
                print(b.crypto_secretbox(m, n, k).hex(), boxed.hex(), b.crypto_box_beforenm(recipient_pk, k).hex())
            """
        let input = cases.map { "\(hex($0.key)) \(hex($0.secret)) \(hex($0.nonce)) \(hex($0.message))" }
            .joined(separator: "\n")
        let expected = try runPython(script, modules: ["nacl.bindings"], input: input)
        XCTAssertEqual(expected.count, cases.count)
        for (c, line) in zip(cases, expected) {
            let fields = line.split(separator: " ").map(String.init)
            XCTAssertEqual(hex(try NaClSecretBox.seal(c.message, key: c.key, nonce: c.nonce)), fields[0])
            XCTAssertEqual(try NaClSecretBox.open(unhex(fields[0]), key: c.key, nonce: c.nonce), c.message)
            let sender = try Curve25519.KeyAgreement.PrivateKey(rawRepresentation: c.key)
            let recipient = try Curve25519.KeyAgreement.PrivateKey(rawRepresentation: c.secret)
            XCTAssertEqual(hex(try NaClBox.seal(c.message, nonce: c.nonce, recipientPublicKey: recipient.publicKey,
                                                senderPrivateKey: sender)), fields[1])
            XCTAssertEqual(try NaClBox.open(unhex(fields[1]), nonce: c.nonce, senderPublicKey: sender.publicKey,
                                            recipientPrivateKey: recipient), c.message)
            XCTAssertEqual(hex(try NaClBox.precompute(publicKey: recipient.publicKey, privateKey: sender).bytes),
                           fields[2])
        }
    }
}
