// The ChaCha20 permutation (RFC 8439 section 2.3) and HChaCha20
// (draft-irtf-cfrg-xchacha-03 section 2.2), written for XChaCha20's subkey derivation.

/// HChaCha20: derives a 32-byte subkey from a 32-byte key and a 16-byte nonce.
///
/// This is the ChaCha20 block function without the final addition of the input state, keeping
/// words 0...3 and 12...15 of the result.
enum HChaCha20 {
    static let constants: (UInt32, UInt32, UInt32, UInt32) = (0x6170_7865, 0x3320_646E, 0x7962_2D32, 0x6B20_6574)

    /// `key` must hold 32 bytes and `nonce` 16 bytes (checked by the callers).
    static func subkey(key: UnsafeRawBufferPointer, nonce: UnsafeRawBufferPointer) -> [UInt8] {
        precondition(key.count == 32 && nonce.count == 16)
        var x: (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32,
                UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32)
        x.0 = constants.0
        x.1 = constants.1
        x.2 = constants.2
        x.3 = constants.3
        x.4 = loadLittleEndian(key, 0)
        x.5 = loadLittleEndian(key, 4)
        x.6 = loadLittleEndian(key, 8)
        x.7 = loadLittleEndian(key, 12)
        x.8 = loadLittleEndian(key, 16)
        x.9 = loadLittleEndian(key, 20)
        x.10 = loadLittleEndian(key, 24)
        x.11 = loadLittleEndian(key, 28)
        x.12 = loadLittleEndian(nonce, 0)
        x.13 = loadLittleEndian(nonce, 4)
        x.14 = loadLittleEndian(nonce, 8)
        x.15 = loadLittleEndian(nonce, 12)
        for _ in 0..<10 {
            quarterRound(&x.0, &x.4, &x.8, &x.12)
            quarterRound(&x.1, &x.5, &x.9, &x.13)
            quarterRound(&x.2, &x.6, &x.10, &x.14)
            quarterRound(&x.3, &x.7, &x.11, &x.15)
            quarterRound(&x.0, &x.5, &x.10, &x.15)
            quarterRound(&x.1, &x.6, &x.11, &x.12)
            quarterRound(&x.2, &x.7, &x.8, &x.13)
            quarterRound(&x.3, &x.4, &x.9, &x.14)
        }
        var out = [UInt8](repeating: 0, count: 32)
        for (i, word) in [x.0, x.1, x.2, x.3, x.12, x.13, x.14, x.15].enumerated() {
            storeLittleEndian(word, into: &out, at: i * 4)
        }
        return out
    }

    @inline(__always)
    static func quarterRound(_ a: inout UInt32, _ b: inout UInt32, _ c: inout UInt32, _ d: inout UInt32) {
        a = a &+ b; d ^= a; d = d.rotateLeft(16)
        c = c &+ d; b ^= c; b = b.rotateLeft(12)
        a = a &+ b; d ^= a; d = d.rotateLeft(8)
        c = c &+ d; b ^= c; b = b.rotateLeft(7)
    }
}

@inline(__always)
func loadLittleEndian(_ bytes: UnsafeRawBufferPointer, _ offset: Int) -> UInt32 {
    UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
}

@inline(__always)
func storeLittleEndian(_ word: UInt32, into bytes: inout [UInt8], at offset: Int) {
    bytes[offset] = UInt8(truncatingIfNeeded: word)
    bytes[offset + 1] = UInt8(truncatingIfNeeded: word >> 8)
    bytes[offset + 2] = UInt8(truncatingIfNeeded: word >> 16)
    bytes[offset + 3] = UInt8(truncatingIfNeeded: word >> 24)
}

extension UInt32 {
    @inline(__always)
    func rotateLeft(_ n: UInt32) -> UInt32 { (self << n) | (self >> (32 - n)) }
}
