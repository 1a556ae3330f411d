// HMAC (RFC 2104) over BLAKE2s-256 and the HKDF built from it, as WireGuard and
// Noise use them (these are not BLAKE2s's own keyed mode).

/// HMAC over BLAKE2s-256, as used by the Noise protocol framework and WireGuard.
public enum HMACBLAKE2s {
    /// The size of an HMAC-BLAKE2s code in bytes.
    public static let outputByteCount = 32

    /// HMAC-BLAKE2s-256(key, data) as RFC 2104 defines HMAC, with a 64-byte block (keys longer
    /// than 64 bytes are hashed first). WireGuard and Noise use this, not BLAKE2s's keyed mode.
    public static func authenticationCode<K: Collection, D: Sequence>(for data: D, key: K) -> [UInt8]
    where K.Element == UInt8, D.Element == UInt8 {
        var k = [UInt8](repeating: 0, count: BLAKE2s.blockByteCount)
        if key.count > BLAKE2s.blockByteCount {
            let digest = BLAKE2s.hash(data: key)
            k.replaceSubrange(0..<digest.count, with: digest)
        } else {
            k.replaceSubrange(0..<key.count, with: key)
        }
        var inner = BLAKE2s()
        inner.update(data: k.map { $0 ^ 0x36 })
        inner.update(data: data)
        let innerDigest = inner.finalize()
        var outer = BLAKE2s()
        outer.update(data: k.map { $0 ^ 0x5C })
        outer.update(data: innerDigest)
        return outer.finalize()
    }
}

/// Noise's HKDF over HMAC-BLAKE2s: one to three 32-byte outputs.
public enum NoiseHKDF {
    /// Returns `count` (1...3) outputs derived from `chainingKey` and `inputKeyMaterial`.
    public static func derive<K: Collection, I: Sequence>(chainingKey: K, inputKeyMaterial: I, count: Int) -> [[UInt8]]
    where K.Element == UInt8, I.Element == UInt8 {
        precondition((1...3).contains(count), "NoiseHKDF yields one to three outputs")
        let prk = HMACBLAKE2s.authenticationCode(for: inputKeyMaterial, key: chainingKey)
        var outputs: [[UInt8]] = []
        var previous: [UInt8] = []
        for i in 1...count {
            previous = HMACBLAKE2s.authenticationCode(for: previous + [UInt8(i)], key: prk)
            outputs.append(previous)
        }
        return outputs
    }
}
