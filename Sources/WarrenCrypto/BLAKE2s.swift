// BLAKE2s as specified in RFC 7693: 32-bit words, 10 rounds, 64-byte blocks,
// digests of 1 to 32 bytes, optionally keyed with up to 32 bytes.

/// An incremental BLAKE2s hasher.
///
/// ```swift
/// var hasher = BLAKE2s(outputByteCount: 32)
/// hasher.update(data: bytes)
/// let digest = hasher.finalize()
/// ```
public struct BLAKE2s: Sendable {
    public static let blockByteCount = 64
    public static let maximumOutputByteCount = 32
    public static let maximumKeyByteCount = 32

    @usableFromInline static let iv: (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32) = (
        0x6A09_E667, 0xBB67_AE85, 0x3C6E_F372, 0xA54F_F53A,
        0x510E_527F, 0x9B05_688C, 0x1F83_D9AB, 0x5BE0_CD19
    )

    private var h: (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32)
    private var t: UInt64 = 0
    private var buffer: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
    private var bufferCount = 0
    public let outputByteCount: Int

    /// Creates a hasher. `outputByteCount` must be 1...32 and `key`, if given, at most 32 bytes.
    public init<Key: Collection>(outputByteCount: Int = 32, key: Key) where Key.Element == UInt8 {
        precondition((1...Self.maximumOutputByteCount).contains(outputByteCount), "BLAKE2s output must be 1...32 bytes")
        precondition(key.count <= Self.maximumKeyByteCount, "BLAKE2s key must be at most 32 bytes")
        self.outputByteCount = outputByteCount
        h = Self.iv
        h.0 ^= 0x0101_0000 ^ (UInt32(key.count) << 8) ^ UInt32(outputByteCount)
        if !key.isEmpty {
            var block = [UInt8](repeating: 0, count: Self.blockByteCount)
            block.replaceSubrange(0..<key.count, with: key)
            update(data: block)
        }
    }

    public init(outputByteCount: Int = 32) {
        self.init(outputByteCount: outputByteCount, key: EmptyCollection<UInt8>())
    }

    public mutating func update<D: Sequence>(data: D) where D.Element == UInt8 {
        let handled: Bool? = data.withContiguousStorageIfAvailable { bytes in
            update(bufferPointer: UnsafeRawBufferPointer(bytes))
            return true
        }
        if handled == nil {
            let array = Array(data)
            array.withUnsafeBytes { update(bufferPointer: $0) }
        }
    }

    public mutating func update(bufferPointer input: UnsafeRawBufferPointer) {
        var offset = 0
        let count = input.count
        while offset < count {
            // The last block is compressed in finalize(), so a full buffer is
            // only compressed once more input is known to follow.
            if bufferCount == Self.blockByteCount {
                t &+= UInt64(Self.blockByteCount)
                compress(last: false)
                bufferCount = 0
            }
            let take = min(Self.blockByteCount - bufferCount, count - offset)
            withUnsafeMutableBytes(of: &buffer) { buf in
                buf.baseAddress!.advanced(by: bufferCount).copyMemory(from: input.baseAddress!.advanced(by: offset), byteCount: take)
            }
            bufferCount += take
            offset += take
        }
    }

    /// Returns the digest; the hasher must not be used afterwards.
    public mutating func finalize() -> [UInt8] {
        t &+= UInt64(bufferCount)
        withUnsafeMutableBytes(of: &buffer) { buf in
            for i in bufferCount..<Self.blockByteCount { buf[i] = 0 }
        }
        compress(last: true)
        var out = [UInt8](repeating: 0, count: outputByteCount)
        withUnsafeBytes(of: &h) { words in
            for i in 0..<outputByteCount {
                // h is stored in host order; the digest is little-endian.
                let word = words.load(fromByteOffset: (i / 4) * 4, as: UInt32.self)
                out[i] = UInt8(truncatingIfNeeded: word.littleEndian >> (UInt32(i % 4) * 8))
            }
        }
        return out
    }

    /// One-shot hash.
    public static func hash<D: Sequence>(data: D, outputByteCount: Int = 32) -> [UInt8] where D.Element == UInt8 {
        var hasher = BLAKE2s(outputByteCount: outputByteCount)
        hasher.update(data: data)
        return hasher.finalize()
    }

    /// One-shot keyed hash (BLAKE2s's own keyed mode, used for WireGuard's MAC1 and MAC2).
    public static func hash<D: Sequence, K: Collection>(data: D, key: K, outputByteCount: Int = 32) -> [UInt8]
    where D.Element == UInt8, K.Element == UInt8 {
        var hasher = BLAKE2s(outputByteCount: outputByteCount, key: key)
        hasher.update(data: data)
        return hasher.finalize()
    }

    @inline(__always)
    private static func g(_ v: inout (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32,
                                      UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32),
                          _ a: Int, _ b: Int, _ c: Int, _ d: Int, _ x: UInt32, _ y: UInt32) {
        withUnsafeMutableBytes(of: &v) { raw in
            let w = raw.bindMemory(to: UInt32.self)
            w[a] = w[a] &+ w[b] &+ x
            w[d] = (w[d] ^ w[a]).rotateRight(16)
            w[c] = w[c] &+ w[d]
            w[b] = (w[b] ^ w[c]).rotateRight(12)
            w[a] = w[a] &+ w[b] &+ y
            w[d] = (w[d] ^ w[a]).rotateRight(8)
            w[c] = w[c] &+ w[d]
            w[b] = (w[b] ^ w[c]).rotateRight(7)
        }
    }

    private static let sigma: [[Int]] = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
        [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
        [11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4],
        [7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8],
        [9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13],
        [2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9],
        [12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11],
        [13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10],
        [6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5],
        [10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0],
    ]

    private mutating func compress(last: Bool) {
        var m = [UInt32](repeating: 0, count: 16)
        withUnsafeBytes(of: &buffer) { raw in
            for i in 0..<16 { m[i] = UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self)) }
        }
        var v = (h.0, h.1, h.2, h.3, h.4, h.5, h.6, h.7,
                 Self.iv.0, Self.iv.1, Self.iv.2, Self.iv.3, Self.iv.4, Self.iv.5, Self.iv.6, Self.iv.7)
        v.12 ^= UInt32(truncatingIfNeeded: t)
        v.13 ^= UInt32(truncatingIfNeeded: t >> 32)
        if last { v.14 = ~v.14 }
        for round in 0..<10 {
            let s = Self.sigma[round]
            Self.g(&v, 0, 4, 8, 12, m[s[0]], m[s[1]])
            Self.g(&v, 1, 5, 9, 13, m[s[2]], m[s[3]])
            Self.g(&v, 2, 6, 10, 14, m[s[4]], m[s[5]])
            Self.g(&v, 3, 7, 11, 15, m[s[6]], m[s[7]])
            Self.g(&v, 0, 5, 10, 15, m[s[8]], m[s[9]])
            Self.g(&v, 1, 6, 11, 12, m[s[10]], m[s[11]])
            Self.g(&v, 2, 7, 8, 13, m[s[12]], m[s[13]])
            Self.g(&v, 3, 4, 9, 14, m[s[14]], m[s[15]])
        }
        h.0 ^= v.0 ^ v.8
        h.1 ^= v.1 ^ v.9
        h.2 ^= v.2 ^ v.10
        h.3 ^= v.3 ^ v.11
        h.4 ^= v.4 ^ v.12
        h.5 ^= v.5 ^ v.13
        h.6 ^= v.6 ^ v.14
        h.7 ^= v.7 ^ v.15
    }
}

extension UInt32 {
    @inline(__always)
    func rotateRight(_ n: UInt32) -> UInt32 { (self >> n) | (self << (32 - n)) }
}
