import Crypto
import Foundation
import Synchronization
import XCTest
import WarrenFastAEAD
import WarrenTestSupport

final class ChaCha20Poly1305KeyTests: XCTestCase {
    /// WireGuard's nonce: 4 zero bytes then the little-endian counter.
    private func wireGuardNonce(_ counter: UInt64) throws -> ChaChaPoly.Nonce {
        try ChaChaPoly.Nonce(data: [0, 0, 0, 0] + withUnsafeBytes(of: counter.littleEndian) { Array($0) })
    }

    /// The nonce is 4 zero bytes then the counter in little-endian order (WireGuard's layout):
    /// a counter whose bytes are all different must give what ChaChaPoly gives with that layout.
    func testNonceLayoutMatchesChaChaPoly() throws {
        let keyBytes = [UInt8](0x80...0x9F)
        let key = try ChaCha20Poly1305Key(keyBytes)
        let context = ChaCha20Poly1305Context()
        let plaintext = Array("Ladies and Gentlemen of the class of '99".utf8)
        let counter: UInt64 = 0x4746_4544_4342_4140
        let expected = try ChaChaPoly.seal(plaintext, using: SymmetricKey(data: keyBytes), nonce: wireGuardNonce(counter))
        XCTAssertEqual(fastSeal(plaintext, key: key, counter: counter, context: context),
                       Array(expected.ciphertext) + Array(expected.tag))
    }

    /// Equal to swift-crypto's ChaChaPoly on random keys, counters and sizes 0...2000, both ways,
    /// with one context reused across keys and directions.
    func testMatchesSwiftCryptoOnRandomInputs() throws {
        var rng = SeededGenerator(seed: 0xFA57)
        let context = ChaCha20Poly1305Context()
        var sizes = [0, 1, 15, 16, 17, 63, 64, 65, 1420, 2000]
        for _ in 0..<150 { sizes.append(Int.random(in: 0...2000, using: &rng)) }
        for size in sizes {
            let keyBytes = rng.bytes(count: 32)
            let key = try ChaCha20Poly1305Key(keyBytes)
            let counter = rng.next()
            let plaintext = rng.bytes(count: size)
            let symmetric = SymmetricKey(data: keyBytes)

            let sealed = fastSeal(plaintext, key: key, counter: counter, context: context)
            let reference = try ChaChaPoly.seal(plaintext, using: symmetric, nonce: wireGuardNonce(counter))
            XCTAssertEqual(sealed, Array(reference.ciphertext) + Array(reference.tag), "size \(size)")
            let box = try ChaChaPoly.SealedBox(nonce: wireGuardNonce(counter), ciphertext: sealed[0..<size],
                                               tag: sealed[size...])
            XCTAssertEqual(Array(try ChaChaPoly.open(box, using: symmetric)), plaintext)
            XCTAssertEqual(fastOpen(Array(reference.ciphertext) + Array(reference.tag), key: key, counter: counter,
                                    context: context), plaintext, "size \(size)")
        }
    }

    func testTamperingFailsAndErasesTheCiphertext() throws {
        var rng = SeededGenerator(seed: 0x7A3)
        let key = try ChaCha20Poly1305Key(rng.bytes(count: 32))
        let context = ChaCha20Poly1305Context()
        let plaintext = rng.bytes(count: 100)
        let sealed = fastSeal(plaintext, key: key, counter: 9, context: context)
        for index in sealed.indices {
            var tampered = sealed
            tampered[index] ^= 0x04
            var buffer = tampered
            let ok = buffer.withUnsafeMutableBytes {
                key.open(counter: 9, buffer: $0, ciphertextAndTagCount: tampered.count, context: context)
            }
            XCTAssertFalse(ok, "modified byte \(index) was accepted")
            XCTAssertEqual(Array(buffer[0..<100]), [UInt8](repeating: 0, count: 100))
        }
        XCTAssertNil(fastOpen(sealed, key: key, counter: 10, context: context), "wrong counter accepted")
        XCTAssertNil(fastOpen(sealed, key: try ChaCha20Poly1305Key(rng.bytes(count: 32)), counter: 9, context: context))
        // The context is still good after failures.
        XCTAssertEqual(fastOpen(sealed, key: key, counter: 9, context: context), plaintext)
    }

    func testShortOrOversizedCountsAreRejected() throws {
        let key = try ChaCha20Poly1305Key([UInt8](repeating: 1, count: 32))
        let context = ChaCha20Poly1305Context()
        var buffer = [UInt8](repeating: 0, count: 20)
        buffer.withUnsafeMutableBytes { raw in
            for count in 0..<16 {
                XCTAssertFalse(key.open(counter: 0, buffer: raw, ciphertextAndTagCount: count, context: context))
            }
            XCTAssertFalse(key.open(counter: 0, buffer: raw, ciphertextAndTagCount: 21, context: context))
        }
        XCTAssertThrowsError(try ChaCha20Poly1305Key([UInt8](repeating: 1, count: 31))) {
            XCTAssertEqual($0 as? ChaCha20Poly1305Key.Error, .invalidKeySize)
        }
    }

    /// One key shared by several threads, each with its own context.
    func testOneKeyManyThreads() throws {
        let keyBytes = [UInt8](repeating: 0x42, count: 32)
        let key = try ChaCha20Poly1305Key(keyBytes)
        let plaintext = [UInt8](repeating: 0x5A, count: 1420)
        let expected = try (0..<200).map { counter -> [UInt8] in
            let box = try ChaChaPoly.seal(plaintext, using: SymmetricKey(data: keyBytes),
                                          nonce: wireGuardNonce(UInt64(counter)))
            return Array(box.ciphertext) + Array(box.tag)
        }
        let mismatches = Mutex(0)
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            let context = ChaCha20Poly1305Context()
            for counter in 0..<200 {
                let sealed = fastSeal(plaintext, key: key, counter: UInt64(counter), context: context)
                let opened = fastOpen(sealed, key: key, counter: UInt64(counter), context: context)
                if sealed != expected[counter] || opened != plaintext { mismatches.withLock { $0 += 1 } }
            }
        }
        XCTAssertEqual(mismatches.withLock { $0 }, 0)
    }
}

private func fastSeal(_ plaintext: [UInt8], key: ChaCha20Poly1305Key, counter: UInt64,
                      context: ChaCha20Poly1305Context) -> [UInt8] {
    var buffer = plaintext + [UInt8](repeating: 0, count: 16)
    buffer.withUnsafeMutableBytes {
        key.seal(counter: counter, buffer: $0, plaintextCount: plaintext.count, context: context)
    }
    return buffer
}

private func fastOpen(_ sealed: [UInt8], key: ChaCha20Poly1305Key, counter: UInt64,
                      context: ChaCha20Poly1305Context) -> [UInt8]? {
    var buffer = sealed
    let ok = buffer.withUnsafeMutableBytes {
        key.open(counter: counter, buffer: $0, ciphertextAndTagCount: sealed.count, context: context)
    }
    return ok ? Array(buffer[0..<(sealed.count - 16)]) : nil
}
