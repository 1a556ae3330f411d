// One type per key role, with Tailscale's text forms (tailscale/tailscale:types/key):
//
//   role        public text          private text
//   machine     mkey:<hex>           privkey:<hex>
//   node        nodekey:<hex>        privkey:<hex>   (same prefix as machine, for historical reasons)
//   disco       discokey:<hex>       (never serialised)
//   challenge   chalpub:<hex>        (never serialised)
//
// <hex> is the lowercase hex of the 32 key bytes; parsing accepts either case.

internal import Crypto

/// The operations every typed public key shares: raw bytes, text form, JSON as the text form.
public protocol TailscalePublicKey: Hashable, Comparable, Sendable, Codable, LosslessStringConvertible {
    /// The text-form prefix, such as `"nodekey:"`.
    static var textPrefix: String { get }
    var raw: Key32 { get }
    init(raw: Key32)
}

extension TailscalePublicKey {
    /// Returns nil unless `rawRepresentation` is exactly 32 bytes.
    public init?<Bytes: Collection>(rawRepresentation: Bytes) where Bytes.Element == UInt8 {
        guard let raw = Key32(bytes: rawRepresentation) else { return nil }
        self.init(raw: raw)
    }

    public var rawRepresentation: [UInt8] { raw.bytes }
    public var isZero: Bool { raw.isZero }
    public var description: String { Self.textPrefix + raw.hex }

    /// Parses the text form (`prefix` + 64 hex digits).
    public init?(_ description: String) {
        guard let raw = Key32(text: description, prefix: Self.textPrefix) else { return nil }
        self.init(raw: raw)
    }

    /// Parses the text form, throwing ``KeyTextError`` on failure.
    public init(parsing text: some StringProtocol) throws {
        guard let raw = Key32(text: text, prefix: Self.textPrefix) else {
            throw KeyTextError(expectedPrefix: Self.textPrefix)
        }
        self.init(raw: raw)
    }

    /// Tailscale's debug form: the first five base64 digits in brackets, such as `[AbCdE]`.
    public var shortString: String {
        if isZero { return "" }
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
        let b = raw.bytes
        let indices = [b[0] >> 2, (b[0] & 0x03) << 4 | b[1] >> 4, (b[1] & 0x0F) << 2 | b[2] >> 6, b[2] & 0x3F, b[3] >> 2]
        return "[" + String(indices.map { alphabet[Int($0)] }) + "]"
    }

    public static func < (a: Self, b: Self) -> Bool { a.raw < b.raw }

    /// For `init(from:)`: decodes the text form from a single-value container.
    public static func decodeText(from decoder: any Decoder) throws -> Self {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let raw = Key32(text: text, prefix: textPrefix) else {
            throw DecodingError.dataCorruptedError(
                in: container, debugDescription: KeyTextError(expectedPrefix: textPrefix).description)
        }
        return Self(raw: raw)
    }

    /// For `encode(to:)`: encodes the text form.
    public func encodeText(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

/// Curve25519 arithmetic shared by the private key types.
enum X25519 {
    static func publicKey(of privateKey: Key32) -> Key32 {
        // The initialiser only fails for a wrong length, which Key32 rules out.
        guard let key = try? Curve25519.KeyAgreement.PrivateKey(rawRepresentation: privateKey.bytes) else {
            return .zero
        }
        return Key32(bytes: key.publicKey.rawRepresentation) ?? .zero
    }

    /// X25519(private, public). Throws for low-order public keys (an all-zero result).
    static func sharedSecret(privateKey: Key32, publicKey: Key32) throws -> [UInt8] {
        let key = try Curve25519.KeyAgreement.PrivateKey(rawRepresentation: privateKey.bytes)
        let peer = try Curve25519.KeyAgreement.PublicKey(rawRepresentation: publicKey.bytes)
        let secret = try key.sharedSecretFromKeyAgreement(with: peer)
        let bytes = secret.withUnsafeBytes { Array($0) }
        if bytes.allSatisfy({ $0 == 0 }) { throw KeyAgreementError.lowOrderPoint }
        return bytes
    }

    static func random(using generator: inout some RandomNumberGenerator, clamp: Bool) -> Key32 {
        var bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
        if clamp {
            bytes[0] &= 248
            bytes[31] = (bytes[31] & 127) | 64
        }
        return Key32(bytes: bytes) ?? .zero
    }
}

/// X25519 produced the all-zero secret: the peer's public key is a low-order point.
public enum KeyAgreementError: Error, Hashable, Sendable {
    case lowOrderPoint
}
