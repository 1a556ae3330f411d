// Salsa20 (Bernstein, "The Salsa20 family of stream ciphers"), HSalsa20 and XSalsa20
// ("Extending the Salsa20 nonce"), as NaCl's secretbox and box use them.

/// The Salsa20 permutation and the constructions built on it. Internal: NaCl's box and secretbox
/// are the public face.
enum Salsa20 {
    typealias State = (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32,
                       UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32)

    /// "expand 32-byte k" as four little-endian words.
    static let sigma: (UInt32, UInt32, UInt32, UInt32) = (0x6170_7865, 0x3320_646E, 0x7962_2D32, 0x6B20_6574)

    @inline(__always)
    static func quarterRound(_ y0: inout UInt32, _ y1: inout UInt32, _ y2: inout UInt32, _ y3: inout UInt32) {
        y1 ^= (y0 &+ y3).rotateLeft(7)
        y2 ^= (y1 &+ y0).rotateLeft(9)
        y3 ^= (y2 &+ y1).rotateLeft(13)
        y0 ^= (y3 &+ y2).rotateLeft(18)
    }

    /// Twenty rounds (ten column rounds each followed by a row round), without the feed-forward.
    @inline(__always)
    static func rounds(_ x: inout State) {
        for _ in 0..<10 {
            quarterRound(&x.0, &x.4, &x.8, &x.12)
            quarterRound(&x.5, &x.9, &x.13, &x.1)
            quarterRound(&x.10, &x.14, &x.2, &x.6)
            quarterRound(&x.15, &x.3, &x.7, &x.11)
            quarterRound(&x.0, &x.1, &x.2, &x.3)
            quarterRound(&x.5, &x.6, &x.7, &x.4)
            quarterRound(&x.10, &x.11, &x.8, &x.9)
            quarterRound(&x.15, &x.12, &x.13, &x.14)
        }
    }

    /// The input block: constants on the diagonal, the key around them, and 16 bytes of `input`
    /// (nonce and counter for Salsa20, the nonce prefix for HSalsa20) in words 6...9.
    @inline(__always)
    static func initialState(key k: UnsafeRawBufferPointer, input: (UInt32, UInt32, UInt32, UInt32)) -> State {
        (sigma.0, loadLittleEndian(k, 0), loadLittleEndian(k, 4), loadLittleEndian(k, 8),
         loadLittleEndian(k, 12), sigma.1, input.0, input.1,
         input.2, input.3, sigma.2, loadLittleEndian(k, 16),
         loadLittleEndian(k, 20), loadLittleEndian(k, 24), loadLittleEndian(k, 28), sigma.3)
    }

    /// HSalsa20: a 32-byte key and 16-byte input to a 32-byte output (words 0, 5, 10, 15, 6, 7, 8, 9
    /// of the permuted state, with no feed-forward).
    static func hsalsa20(key: UnsafeRawBufferPointer, input: UnsafeRawBufferPointer) -> [UInt8] {
        precondition(key.count == 32 && input.count == 16)
        var x = initialState(key: key, input: (loadLittleEndian(input, 0), loadLittleEndian(input, 4),
                                               loadLittleEndian(input, 8), loadLittleEndian(input, 12)))
        rounds(&x)
        var out = [UInt8](repeating: 0, count: 32)
        for (i, word) in [x.0, x.5, x.10, x.15, x.6, x.7, x.8, x.9].enumerated() {
            storeLittleEndian(word, into: &out, at: i * 4)
        }
        return out
    }

    /// XORs `data` in place with the XSalsa20 key stream for `key` (32 bytes) and `nonce` (24 bytes),
    /// starting at block 0.
    static func xsalsa20XOR(_ data: inout [UInt8], key: [UInt8], nonce: [UInt8]) {
        precondition(key.count == 32 && nonce.count == 24)
        let subkey = key.withUnsafeBytes { k in
            nonce.withUnsafeBytes { n in hsalsa20(key: k, input: UnsafeRawBufferPointer(rebasing: n[0..<16])) }
        }
        let n0 = nonce.withUnsafeBytes { loadLittleEndian($0, 16) }
        let n1 = nonce.withUnsafeBytes { loadLittleEndian($0, 20) }
        subkey.withUnsafeBytes { k in
            let initial = initialState(key: k, input: (n0, n1, 0, 0))
            data.withUnsafeMutableBytes { out in
                var counter: UInt64 = 0
                var offset = 0
                while offset < out.count {
                    var input = initial
                    input.8 = UInt32(truncatingIfNeeded: counter)
                    input.9 = UInt32(truncatingIfNeeded: counter >> 32)
                    var x = input
                    rounds(&x)
                    var block: State = (x.0 &+ input.0, x.1 &+ input.1, x.2 &+ input.2, x.3 &+ input.3,
                                        x.4 &+ input.4, x.5 &+ input.5, x.6 &+ input.6, x.7 &+ input.7,
                                        x.8 &+ input.8, x.9 &+ input.9, x.10 &+ input.10, x.11 &+ input.11,
                                        x.12 &+ input.12, x.13 &+ input.13, x.14 &+ input.14, x.15 &+ input.15)
                    let take = min(64, out.count - offset)
                    withUnsafeMutableBytes(of: &block) { stream in
                        let words = stream.assumingMemoryBound(to: UInt32.self)
                        for i in 0..<16 { words[i] = words[i].littleEndian }
                        for i in 0..<take { out[offset + i] ^= stream[i] }
                    }
                    offset += take
                    counter &+= 1
                }
            }
        }
    }
}
