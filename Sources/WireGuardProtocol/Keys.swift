// WireGuard's keys: Curve25519 static and ephemeral keys and the optional preshared key,
// with the two text forms WireGuard tools use: base64 (`wg genkey`, config files) and
// lowercase hex (the UAPI's `private_key=`, `public_key=`, `preshared_key=` lines).

import Crypto
import Foundation

/// Why a key could not be read or used.
public struct WireGuardKeyError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Code: Hashable, Sendable {
        /// Not 32 bytes, or not valid base64/hex.
        case malformed
        /// A Diffie-Hellman result was all zero (a low-order public key).
        case invalidSharedSecret
    }

    public let code: Code
    public init(_ code: Code) { self.code = code }
    public var description: String { "WireGuardKeyError(\(code))" }
}

/// Text forms shared by all three key types.
enum KeyText {
    static func base64(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString()
    }

    static func fromBase64(_ text: some StringProtocol) -> [UInt8]? {
        guard text.utf8.count == 44, let data = Data(base64Encoded: String(text)), data.count == 32 else { return nil }
        return Array(data)
    }

    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(bytes.count * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func fromHex(_ text: some StringProtocol) -> [UInt8]? {
        let utf8 = Array(text.utf8)
        guard utf8.count == 64 else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
            default: return nil
            }
        }
        var out = [UInt8]()
        out.reserveCapacity(32)
        var i = 0
        while i < 64 {
            guard let hi = nibble(utf8[i]), let lo = nibble(utf8[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }

    /// `count` random bytes, eight from each draw of `rng` (one system call per 8 bytes instead of
    /// one per byte with `SystemRandomNumberGenerator`).
    static func randomBytes(_ count: Int, using rng: inout some RandomNumberGenerator) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(count + 7)
        while out.count < count {
            let word = rng.next()
            for shift in stride(from: 0, to: 64, by: 8) { out.append(UInt8(truncatingIfNeeded: word >> UInt64(shift))) }
        }
        out.removeLast(out.count - count)
        return out
    }

    /// Compares two byte strings without an early exit.
    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var diff: UInt8 = 0
        for i in 0..<a.count { diff |= a[i] ^ b[i] }
        return diff == 0
    }
}

/// A WireGuard Curve25519 public key (32 bytes).
public struct WireGuardPublicKey: Hashable, Sendable, CustomStringConvertible {
    /// The 32 bytes of the key.
    public let rawRepresentation: [UInt8]

    /// Wraps 32 bytes; throws `.malformed` for any other length.
    public init(rawRepresentation: some Collection<UInt8>) throws {
        guard rawRepresentation.count == 32 else { throw WireGuardKeyError(.malformed) }
        self.rawRepresentation = Array(rawRepresentation)
    }

    /// Reads the base64 text form (44 characters).
    public init?(base64: some StringProtocol) {
        guard let raw = KeyText.fromBase64(base64) else { return nil }
        rawRepresentation = raw
    }

    /// Reads the hex form (64 hex digits, as in the UAPI).
    public init?(hex: some StringProtocol) {
        guard let raw = KeyText.fromHex(hex) else { return nil }
        rawRepresentation = raw
    }

    /// Base64 text form, as `wg` prints it.
    public var base64: String { KeyText.base64(rawRepresentation) }
    /// Lowercase hex form, as the UAPI prints it.
    public var hex: String { KeyText.hex(rawRepresentation) }
    public var description: String { base64 }

    var agreementKey: Curve25519.KeyAgreement.PublicKey? {
        try? Curve25519.KeyAgreement.PublicKey(rawRepresentation: rawRepresentation)
    }
}

/// A WireGuard Curve25519 private key.
public struct WireGuardPrivateKey: Sendable {
    let key: Curve25519.KeyAgreement.PrivateKey

    /// A fresh key from `rng` (clamped as `wg genkey` does).
    public init(using rng: inout some RandomNumberGenerator) {
        var bytes = KeyText.randomBytes(32, using: &rng)
        bytes[0] &= 248
        bytes[31] = (bytes[31] & 127) | 64
        // 32 bytes are always accepted.
        key = try! Curve25519.KeyAgreement.PrivateKey(rawRepresentation: bytes)
    }

    /// Wraps 32 bytes; throws `.malformed` for any other length.
    public init(rawRepresentation: some Collection<UInt8>) throws {
        guard rawRepresentation.count == 32,
              let key = try? Curve25519.KeyAgreement.PrivateKey(rawRepresentation: Array(rawRepresentation))
        else { throw WireGuardKeyError(.malformed) }
        self.key = key
    }

    /// Reads the base64 text form.
    public init?(base64: some StringProtocol) {
        guard let raw = KeyText.fromBase64(base64), let k = try? Self(rawRepresentation: raw) else { return nil }
        self = k
    }

    /// Reads the hex form of the UAPI.
    public init?(hex: some StringProtocol) {
        guard let raw = KeyText.fromHex(hex), let k = try? Self(rawRepresentation: raw) else { return nil }
        self = k
    }

    /// The 32 bytes of the key.
    public var rawRepresentation: [UInt8] { Array(key.rawRepresentation) }

    /// The key clamped as RFC 7748 section 5 does before every X25519 (low three bits of the
    /// first byte cleared, top bit of the last cleared, its second-highest set). X25519 results
    /// are the same; wireguard-go clamps a key when it is set, so `wg show` prints this form.
    public var clamped: WireGuardPrivateKey {
        var bytes = rawRepresentation
        bytes[0] &= 248
        bytes[31] = (bytes[31] & 127) | 64
        // 32 bytes are always accepted.
        return try! WireGuardPrivateKey(rawRepresentation: bytes)
    }

    public var base64: String { KeyText.base64(rawRepresentation) }
    public var hex: String { KeyText.hex(rawRepresentation) }

    /// The matching public key.
    public var publicKey: WireGuardPublicKey {
        WireGuardPublicKey(uncheckedRaw: Array(key.publicKey.rawRepresentation))
    }

    /// X25519(self, peer); throws `.invalidSharedSecret` when the result is all zero.
    public func sharedSecret(with peer: WireGuardPublicKey) throws -> [UInt8] {
        guard let pub = peer.agreementKey,
              let secret = try? key.sharedSecretFromKeyAgreement(with: pub)
        else { throw WireGuardKeyError(.invalidSharedSecret) }
        let bytes = secret.withUnsafeBytes { Array($0) }
        guard bytes.contains(where: { $0 != 0 }) else { throw WireGuardKeyError(.invalidSharedSecret) }
        return bytes
    }
}

extension WireGuardPrivateKey: Equatable {
    /// Compares in constant time.
    public static func == (a: WireGuardPrivateKey, b: WireGuardPrivateKey) -> Bool {
        KeyText.constantTimeEqual(a.rawRepresentation, b.rawRepresentation)
    }
}

extension WireGuardPublicKey {
    init(uncheckedRaw: [UInt8]) { rawRepresentation = uncheckedRaw }
}

/// The optional symmetric key mixed into the handshake (`Q` in the paper); all zero when unset.
public struct WireGuardPresharedKey: Sendable, Equatable {
    /// The 32 bytes of the key.
    public let rawRepresentation: [UInt8]

    /// The all-zero key used when no preshared key is configured.
    public static let zero = WireGuardPresharedKey(uncheckedRaw: [UInt8](repeating: 0, count: 32))

    /// Wraps 32 bytes; throws `.malformed` for any other length.
    public init(rawRepresentation: some Collection<UInt8>) throws {
        guard rawRepresentation.count == 32 else { throw WireGuardKeyError(.malformed) }
        self.rawRepresentation = Array(rawRepresentation)
    }

    init(uncheckedRaw: [UInt8]) { rawRepresentation = uncheckedRaw }

    /// A fresh random key (`wg genpsk`).
    public init(using rng: inout some RandomNumberGenerator) {
        rawRepresentation = KeyText.randomBytes(32, using: &rng)
    }

    public init?(base64: some StringProtocol) {
        guard let raw = KeyText.fromBase64(base64) else { return nil }
        rawRepresentation = raw
    }

    public init?(hex: some StringProtocol) {
        guard let raw = KeyText.fromHex(hex) else { return nil }
        rawRepresentation = raw
    }

    public var base64: String { KeyText.base64(rawRepresentation) }
    public var hex: String { KeyText.hex(rawRepresentation) }

    public static func == (a: Self, b: Self) -> Bool {
        KeyText.constantTimeEqual(a.rawRepresentation, b.rawRepresentation)
    }
}
