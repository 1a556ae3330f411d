// The Noise functions WireGuard uses (paper section 5.4): HASH = BLAKE2s-256, MAC = keyed
// BLAKE2s-128, HMAC/HKDF over BLAKE2s, and AEAD = ChaCha20-Poly1305 with a 96-bit nonce of four
// zero bytes followed by the 64-bit little-endian counter.

import Crypto
import Foundation
import WarrenCrypto

enum Noise {
    /// HASH(construction): the initial chaining key.
    static let initialChainingKey: [UInt8] = BLAKE2s.hash(data: WireGuardConstants.construction)
    /// HASH(chaining key || identifier): the initial hash.
    static let initialHash: [UInt8] = BLAKE2s.hash(data: initialChainingKey + WireGuardConstants.identifier)

    static func hash(_ parts: [UInt8]...) -> [UInt8] {
        var h = BLAKE2s()
        for p in parts { h.update(data: p) }
        return h.finalize()
    }

    static func mixHash(_ h: inout [UInt8], _ data: [UInt8]) {
        h = hash(h, data)
    }

    /// MAC(key, data) = keyed BLAKE2s with a 16-byte output.
    static func mac(key: [UInt8], data: some Sequence<UInt8>) -> [UInt8] {
        BLAKE2s.hash(data: data, key: key, outputByteCount: 16)
    }

    static func nonce(_ counter: UInt64) -> ChaChaPoly.Nonce {
        var n = [UInt8](repeating: 0, count: 12)
        for i in 0..<8 { n[4 + i] = UInt8(truncatingIfNeeded: counter >> (8 * UInt64(i))) }
        // 12 bytes is always a valid ChaChaPoly nonce.
        return try! ChaChaPoly.Nonce(data: n)
    }

    static func seal(key: [UInt8], counter: UInt64, plaintext: [UInt8], aad: [UInt8]) -> [UInt8] {
        // ChaChaPoly.seal only throws for invalid key sizes; keys here are always 32 bytes.
        let box = try! ChaChaPoly.seal(plaintext, using: SymmetricKey(data: key), nonce: nonce(counter), authenticating: aad)
        return Array(box.ciphertext) + Array(box.tag)
    }

    static func open(key: [UInt8], counter: UInt64, ciphertext: [UInt8], aad: [UInt8]) -> [UInt8]? {
        guard ciphertext.count >= 16 else { return nil }
        guard let box = try? ChaChaPoly.SealedBox(nonce: nonce(counter), ciphertext: ciphertext.dropLast(16),
                                                  tag: ciphertext.suffix(16)),
              let plain = try? ChaChaPoly.open(box, using: SymmetricKey(data: key), authenticating: aad)
        else { return nil }
        return Array(plain)
    }

    static func kdf1(_ ck: [UInt8], _ input: [UInt8]) -> [UInt8] {
        NoiseHKDF.derive(chainingKey: ck, inputKeyMaterial: input, count: 1)[0]
    }

    static func kdf2(_ ck: [UInt8], _ input: [UInt8]) -> ([UInt8], [UInt8]) {
        let o = NoiseHKDF.derive(chainingKey: ck, inputKeyMaterial: input, count: 2)
        return (o[0], o[1])
    }

    static func kdf3(_ ck: [UInt8], _ input: [UInt8]) -> ([UInt8], [UInt8], [UInt8]) {
        let o = NoiseHKDF.derive(chainingKey: ck, inputKeyMaterial: input, count: 3)
        return (o[0], o[1], o[2])
    }
}
