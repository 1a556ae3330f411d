// Poly1305 (RFC 8439 section 2.5): arithmetic modulo 2^130 - 5 on five 26-bit limbs, so every
// product fits in 64 bits. No branches or table lookups depend on secret data.

/// The Poly1305 one-time authenticator. Internal: used by NaCl's box and secretbox.
enum Poly1305 {
    static let tagByteCount = 16
    static let keyByteCount = 32

    /// Returns the 16-byte tag of `message` under the one-time `key` (32 bytes: r then s).
    static func tag(message: UnsafeRawBufferPointer, key: UnsafeRawBufferPointer) -> [UInt8] {
        precondition(key.count == keyByteCount)
        let mask: UInt32 = 0x3FF_FFFF
        // r with the clamping of RFC 8439 section 2.5.1, split into 26-bit limbs.
        let r0 = loadLittleEndian(key, 0) & 0x3FF_FFFF
        let r1 = (loadLittleEndian(key, 3) >> 2) & 0x3FF_FF03
        let r2 = (loadLittleEndian(key, 6) >> 4) & 0x3FF_C0FF
        let r3 = (loadLittleEndian(key, 9) >> 6) & 0x3F0_3FFF
        let r4 = (loadLittleEndian(key, 12) >> 8) & 0x00F_FFFF
        let s1 = UInt64(r1 * 5), s2 = UInt64(r2 * 5), s3 = UInt64(r3 * 5), s4 = UInt64(r4 * 5)
        let (R0, R1, R2, R3, R4) = (UInt64(r0), UInt64(r1), UInt64(r2), UInt64(r3), UInt64(r4))
        var h0: UInt32 = 0, h1: UInt32 = 0, h2: UInt32 = 0, h3: UInt32 = 0, h4: UInt32 = 0

        func absorb(_ block: UnsafeRawBufferPointer, highBit: UInt32) {
            h0 &+= loadLittleEndian(block, 0) & mask
            h1 &+= (loadLittleEndian(block, 3) >> 2) & mask
            h2 &+= (loadLittleEndian(block, 6) >> 4) & mask
            h3 &+= (loadLittleEndian(block, 9) >> 6) & mask
            h4 &+= (loadLittleEndian(block, 12) >> 8) | highBit
            let (H0, H1, H2, H3, H4) = (UInt64(h0), UInt64(h1), UInt64(h2), UInt64(h3), UInt64(h4))
            let d0 = H0 * R0 + H1 * s4 + H2 * s3 + H3 * s2 + H4 * s1
            var d1 = H0 * R1 + H1 * R0 + H2 * s4 + H3 * s3 + H4 * s2
            var d2 = H0 * R2 + H1 * R1 + H2 * R0 + H3 * s4 + H4 * s3
            var d3 = H0 * R3 + H1 * R2 + H2 * R1 + H3 * R0 + H4 * s4
            var d4 = H0 * R4 + H1 * R3 + H2 * R2 + H3 * R1 + H4 * R0
            d1 += d0 >> 26
            h0 = UInt32(truncatingIfNeeded: d0) & mask
            d2 += d1 >> 26
            h1 = UInt32(truncatingIfNeeded: d1) & mask
            d3 += d2 >> 26
            h2 = UInt32(truncatingIfNeeded: d2) & mask
            d4 += d3 >> 26
            h3 = UInt32(truncatingIfNeeded: d3) & mask
            let carry = UInt32(truncatingIfNeeded: d4 >> 26)
            h4 = UInt32(truncatingIfNeeded: d4) & mask
            h0 &+= carry &* 5
            h1 &+= h0 >> 26
            h0 &= mask
        }

        var offset = 0
        while message.count - offset >= 16 {
            absorb(UnsafeRawBufferPointer(rebasing: message[offset..<(offset + 16)]), highBit: 1 << 24)
            offset += 16
        }
        if offset < message.count {
            // The final partial block is padded with a 1 byte and zeros, and gets no 2^128 bit.
            var last = (UInt64(0), UInt64(0))
            withUnsafeMutableBytes(of: &last) { block in
                let rest = message.count - offset
                block.baseAddress!.copyMemory(from: message.baseAddress! + offset, byteCount: rest)
                block[rest] = 1
                absorb(UnsafeRawBufferPointer(block), highBit: 0)
            }
        }

        // Fully carry h, then compute h - p and keep it if it did not go negative.
        h2 &+= h1 >> 26; h1 &= mask
        h3 &+= h2 >> 26; h2 &= mask
        h4 &+= h3 >> 26; h3 &= mask
        h0 &+= (h4 >> 26) &* 5; h4 &= mask
        h1 &+= h0 >> 26; h0 &= mask

        var g0 = h0 &+ 5
        var g1 = h1 &+ (g0 >> 26); g0 &= mask
        var g2 = h2 &+ (g1 >> 26); g1 &= mask
        var g3 = h3 &+ (g2 >> 26); g2 &= mask
        var g4 = h4 &+ (g3 >> 26) &- (1 << 26); g3 &= mask
        // All ones when g4 did not borrow (h >= p), else zero.
        let select = (g4 >> 31) &- 1
        g0 &= select; g1 &= select; g2 &= select; g3 &= select; g4 &= select
        h0 = (h0 & ~select) | g0
        h1 = (h1 & ~select) | g1
        h2 = (h2 & ~select) | g2
        h3 = (h3 & ~select) | g3
        h4 = (h4 & ~select) | g4

        // h mod 2^128 as four 32-bit words, plus s.
        let w0 = h0 | (h1 << 26)
        let w1 = (h1 >> 6) | (h2 << 20)
        let w2 = (h2 >> 12) | (h3 << 14)
        let w3 = (h3 >> 18) | (h4 << 8)
        var f = UInt64(w0) + UInt64(loadLittleEndian(key, 16))
        var out = [UInt8](repeating: 0, count: tagByteCount)
        storeLittleEndian(UInt32(truncatingIfNeeded: f), into: &out, at: 0)
        f = UInt64(w1) + UInt64(loadLittleEndian(key, 20)) + (f >> 32)
        storeLittleEndian(UInt32(truncatingIfNeeded: f), into: &out, at: 4)
        f = UInt64(w2) + UInt64(loadLittleEndian(key, 24)) + (f >> 32)
        storeLittleEndian(UInt32(truncatingIfNeeded: f), into: &out, at: 8)
        f = UInt64(w3) + UInt64(loadLittleEndian(key, 28)) + (f >> 32)
        storeLittleEndian(UInt32(truncatingIfNeeded: f), into: &out, at: 12)
        return out
    }
}

/// Compares two byte sequences in time that depends only on their lengths, not their contents.
func constantTimeEquals<A: Collection, B: Collection>(_ a: A, _ b: B) -> Bool
where A.Element == UInt8, B.Element == UInt8 {
    guard a.count == b.count else { return false }
    var difference: UInt8 = 0
    for (x, y) in zip(a, b) { difference |= x ^ y }
    return difference == 0
}
