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
    /// The size of a BLAKE2s block in bytes (also HMAC-BLAKE2s's block size).
    public static let blockByteCount = 64
    /// The largest digest BLAKE2s produces, in bytes.
    public static let maximumOutputByteCount = 32
    /// The longest key BLAKE2s's keyed mode accepts, in bytes.
    public static let maximumKeyByteCount = 32

    @usableFromInline static let iv: (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32) = (
        0x6A09_E667, 0xBB67_AE85, 0x3C6E_F372, 0xA54F_F53A,
        0x510E_527F, 0x9B05_688C, 0x1F83_D9AB, 0x5BE0_CD19
    )

    private var h: (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32)
    private var t: UInt64 = 0
    private var buffer: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
    private var bufferCount = 0
    /// The digest length in bytes (1...32) chosen at creation; it is part of the hash parameters.
    public let outputByteCount: Int

    /// Creates a keyed hasher (BLAKE2s's own keyed mode, RFC 7693 section 3.3).
    ///
    /// `outputByteCount` must be 1...32 and `key` at most 32 bytes; these are programming errors
    /// (the values are constants in every protocol), so they trap rather than throw. An empty key
    /// gives the unkeyed hash.
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

    /// Creates an unkeyed hasher producing `outputByteCount` (1...32) bytes.
    public init(outputByteCount: Int = 32) {
        self.init(outputByteCount: outputByteCount, key: EmptyCollection<UInt8>())
    }

    /// Absorbs the bytes of `data`; may be called any number of times with pieces of any size.
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

    /// Absorbs the bytes of `input`.
    public mutating func update(bufferPointer input: UnsafeRawBufferPointer) {
        guard let base = input.baseAddress, input.count > 0 else { return }
        var offset = 0
        let count = input.count
        // The last block is compressed in finalize(), so a full block is only compressed once
        // more input is known to follow it.
        if bufferCount > 0 {
            let take = min(Self.blockByteCount - bufferCount, count)
            withUnsafeMutableBytes(of: &buffer) { buf in
                buf.baseAddress!.advanced(by: bufferCount).copyMemory(from: base, byteCount: take)
            }
            bufferCount += take
            offset = take
            guard offset < count else { return }
            t &+= UInt64(Self.blockByteCount)
            withUnsafeBytes(of: buffer) { Self.compress(&h, block: $0.baseAddress!, t: t, last: false) }
            bufferCount = 0
        }
        // Whole blocks straight from the input, keeping at least one byte back for the buffer.
        while count - offset > Self.blockByteCount {
            t &+= UInt64(Self.blockByteCount)
            Self.compress(&h, block: base + offset, t: t, last: false)
            offset += Self.blockByteCount
        }
        let rest = count - offset
        withUnsafeMutableBytes(of: &buffer) { buf in
            buf.baseAddress!.copyMemory(from: base + offset, byteCount: rest)
        }
        bufferCount = rest
    }

    /// Returns the digest; the hasher must not be used afterwards.
    public mutating func finalize() -> [UInt8] {
        t &+= UInt64(bufferCount)
        withUnsafeMutableBytes(of: &buffer) { buf in
            for i in bufferCount..<Self.blockByteCount { buf[i] = 0 }
        }
        withUnsafeBytes(of: buffer) { Self.compress(&h, block: $0.baseAddress!, t: t, last: true) }
        var out = [UInt8](repeating: 0, count: outputByteCount)
        withUnsafeBytes(of: h) { raw in
            let words = raw.assumingMemoryBound(to: UInt32.self)
            for i in 0..<outputByteCount {
                // The words hold numbers; the digest is their little-endian encoding.
                out[i] = UInt8(truncatingIfNeeded: words[i / 4] >> (UInt32(i % 4) * 8))
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
    private static func g(_ a: inout UInt32, _ b: inout UInt32, _ c: inout UInt32, _ d: inout UInt32,
                          _ x: UInt32, _ y: UInt32) {
        a = a &+ b &+ x
        d = (d ^ a).rotateRight(16)
        c = c &+ d
        b = (b ^ c).rotateRight(12)
        a = a &+ b &+ y
        d = (d ^ a).rotateRight(8)
        c = c &+ d
        b = (b ^ c).rotateRight(7)
    }

    /// The message schedule of RFC 7693 section 2.7, one row of 16 word indices per round.
    private static let sigma: [UInt8] = [
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
        14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3,
        11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4,
        7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8,
        9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13,
        2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9,
        12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11,
        13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10,
        6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5,
        10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0,
    ]

    /// The compression function F of RFC 7693 section 3.2 on one 64-byte block at `block`
    /// (no alignment needed). Works on stack tuples only: no heap allocation per block.
    private static func compress(_ h: inout (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32),
                                 block: UnsafeRawPointer, t: UInt64, last: Bool) {
        var m: (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32,
                UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var v = (h.0, h.1, h.2, h.3, h.4, h.5, h.6, h.7,
                 iv.0, iv.1, iv.2, iv.3, iv.4 ^ UInt32(truncatingIfNeeded: t),
                 iv.5 ^ UInt32(truncatingIfNeeded: t >> 32), last ? ~iv.6 : iv.6, iv.7)
        withUnsafeMutableBytes(of: &m) { raw in
            let words = raw.assumingMemoryBound(to: UInt32.self)
            for i in 0..<16 {
                words[i] = UInt32(littleEndian: block.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self))
            }
        }
        withUnsafeBytes(of: m) { raw in
            let w = raw.assumingMemoryBound(to: UInt32.self)
            sigma.withUnsafeBufferPointer { sigma in
                for round in 0..<10 {
                    let s = UnsafeBufferPointer(rebasing: sigma[(round * 16)..<(round * 16 + 16)])
                    g(&v.0, &v.4, &v.8, &v.12, w[Int(s[0])], w[Int(s[1])])
                    g(&v.1, &v.5, &v.9, &v.13, w[Int(s[2])], w[Int(s[3])])
                    g(&v.2, &v.6, &v.10, &v.14, w[Int(s[4])], w[Int(s[5])])
                    g(&v.3, &v.7, &v.11, &v.15, w[Int(s[6])], w[Int(s[7])])
                    g(&v.0, &v.5, &v.10, &v.15, w[Int(s[8])], w[Int(s[9])])
                    g(&v.1, &v.6, &v.11, &v.12, w[Int(s[10])], w[Int(s[11])])
                    g(&v.2, &v.7, &v.8, &v.13, w[Int(s[12])], w[Int(s[13])])
                    g(&v.3, &v.4, &v.9, &v.14, w[Int(s[14])], w[Int(s[15])])
                }
            }
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
