// A 32-byte WireGuard key as the configuration protocol carries it: 64 hexadecimal digits.

/// A 32-byte key (private, public or preshared) in the form the UAPI carries it.
///
/// The configuration protocol writes keys as 64 lowercase hexadecimal digits; on input it
/// also accepts uppercase digits (as wireguard-go does). The type says nothing about the key's
/// role; `DeviceConfigUpdate` and `DeviceSnapshot` name the role of each field.
public struct UAPIKey: Hashable, Sendable, CustomStringConvertible {
    /// Always exactly 32 bytes.
    public let bytes: [UInt8]

    public static let byteCount = 32

    /// The all-zero key: "no key" for a private key, "no preshared key" for a preshared key.
    public static let zero = UAPIKey(uncheckedBytes: [UInt8](repeating: 0, count: byteCount))

    /// Wraps exactly 32 bytes; nil for any other length.
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == Self.byteCount else { return nil }
        self.bytes = Array(bytes)
    }

    private init(uncheckedBytes: [UInt8]) { bytes = uncheckedBytes }

    /// Parses 64 hexadecimal digits (either case); nil for anything else.
    public init?(hex text: some StringProtocol) {
        let utf8 = Array(text.utf8)
        guard utf8.count == 2 * Self.byteCount else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(Self.byteCount)
        var index = 0
        while index < utf8.count {
            guard let high = Self.nibble(utf8[index]), let low = Self.nibble(utf8[index + 1]) else { return nil }
            out.append(high << 4 | low)
            index += 2
        }
        bytes = out
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    /// 64 lowercase hexadecimal digits.
    public var hex: String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(2 * Self.byteCount)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Whether every byte is zero (checked without an early exit).
    public var isZero: Bool { bytes.reduce(0) { $0 | $1 } == 0 }

    /// The key with Curve25519's clamping applied (RFC 7748 section 5): what wireguard-go stores
    /// when it is given a non-zero private key.
    public var clamped: UAPIKey {
        var b = bytes
        b[0] &= 248
        b[31] = (b[31] & 127) | 64
        return UAPIKey(uncheckedBytes: b)
    }

    /// The hex form, so that a key never prints as a byte array by accident.
    public var description: String { hex }
}
