// The 32 bytes behind every Curve25519 key, and Tailscale's "<prefix><64 hex digits>" text form.

/// Thirty-two bytes stored inline (no heap allocation), cheap to hash and compare.
///
/// Equality here is *not* constant-time; private key types wrap it and compare with
/// ``Key32/constantTimeEquals(_:)`` instead.
public struct Key32: Hashable, Sendable, Comparable {
    // Big-endian words, so that comparing words orders keys like comparing bytes.
    private var w0: UInt64, w1: UInt64, w2: UInt64, w3: UInt64

    public static let byteCount = 32
    public static let zero = Key32(w0: 0, w1: 0, w2: 0, w3: 0)

    private init(w0: UInt64, w1: UInt64, w2: UInt64, w3: UInt64) {
        (self.w0, self.w1, self.w2, self.w3) = (w0, w1, w2, w3)
    }

    /// The key from four big-endian 64-bit words: byte 0 is the top byte of the first word
    /// (what reading four big-endian `UInt64`s off the wire gives).
    public init(bigEndianWords words: (UInt64, UInt64, UInt64, UInt64)) {
        self.init(w0: words.0, w1: words.1, w2: words.2, w3: words.3)
    }

    /// The four big-endian 64-bit words (see ``init(bigEndianWords:)``).
    public var bigEndianWords: (UInt64, UInt64, UInt64, UInt64) { (w0, w1, w2, w3) }

    /// Returns nil unless `bytes` holds exactly 32 bytes.
    public init?<Bytes: Collection>(bytes: Bytes) where Bytes.Element == UInt8 {
        guard bytes.count == Self.byteCount else { return nil }
        // Contiguous input (arrays, slices, buffers) takes a loop without generic dispatch per byte.
        if let key = bytes.withContiguousStorageIfAvailable({ Key32(contiguous: $0) }) {
            self = key
            return
        }
        var words: [UInt64] = [0, 0, 0, 0]
        for (i, byte) in bytes.enumerated() {
            words[i / 8] = words[i / 8] << 8 | UInt64(byte)
        }
        self.init(w0: words[0], w1: words[1], w2: words[2], w3: words[3])
    }

    private init(contiguous bytes: UnsafeBufferPointer<UInt8>) {
        var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        for i in 0..<8 {
            words.0 = words.0 << 8 | UInt64(bytes[i])
            words.1 = words.1 << 8 | UInt64(bytes[8 + i])
            words.2 = words.2 << 8 | UInt64(bytes[16 + i])
            words.3 = words.3 << 8 | UInt64(bytes[24 + i])
        }
        self.init(bigEndianWords: words)
    }

    /// The 32 bytes, in order.
    public var bytes: [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(Self.byteCount)
        for word in [w0, w1, w2, w3] {
            for shift in stride(from: 56, through: 0, by: -8) {
                out.append(UInt8(truncatingIfNeeded: word >> UInt64(shift)))
            }
        }
        return out
    }

    public var isZero: Bool { (w0 | w1 | w2 | w3) == 0 }

    /// Compares without branching on the contents (for secrets).
    public func constantTimeEquals(_ other: Key32) -> Bool {
        ((w0 ^ other.w0) | (w1 ^ other.w1) | (w2 ^ other.w2) | (w3 ^ other.w3)) == 0
    }

    public static func < (a: Key32, b: Key32) -> Bool {
        (a.w0, a.w1, a.w2, a.w3) < (b.w0, b.w1, b.w2, b.w3)
    }

    /// Lowercase hex of the 32 bytes.
    public var hex: String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(64)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Parses exactly 64 hex digits (either case).
    public init?(hex text: some StringProtocol) {
        let utf8 = Array(text.utf8)
        guard utf8.count == 64 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(32)
        var i = 0
        while i < 64 {
            guard let hi = Self.hexValue(utf8[i]), let lo = Self.hexValue(utf8[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        self.init(bytes: out)
    }

    /// Parses `prefix` followed by exactly 64 hex digits.
    public init?(text: some StringProtocol, prefix: String) {
        guard text.hasPrefix(prefix) else { return nil }
        self.init(hex: text.dropFirst(prefix.count))
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}

/// Why a key's text form was rejected. The message never echoes the input (it may be a secret).
public struct KeyTextError: Error, Hashable, Sendable, CustomStringConvertible {
    public let expectedPrefix: String
    public var description: String { "key text must be \"\(expectedPrefix)\" followed by 64 hex digits" }
}
