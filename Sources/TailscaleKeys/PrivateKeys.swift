// What every private key role shares. A role is a small struct (its raw bytes, its public key
// type, whether fresh keys are clamped); these default implementations give it generation,
// the public key, X25519 agreement, constant-time equality and a description that never
// shows the secret. Machine and node keys add the persisted text form `privkey:<hex>`.

/// A private key of one role.
public protocol TailscalePrivateKey: Sendable, Equatable, CustomStringConvertible {
    /// The role's public key.
    associatedtype Public: TailscalePublicKey
    /// The public key type that `sharedSecret(with:)` agrees with (the role's own, except for
    /// the node-key challenge, which agrees with a node key).
    associatedtype Peer: TailscalePublicKey = Public
    /// Whether `generate(using:)` clamps the fresh key (RFC 7748 section 5).
    static var clampsGeneratedKeys: Bool { get }
    var raw: Key32 { get }
    init(raw: Key32)
}

extension TailscalePrivateKey {
    /// Returns nil unless `rawRepresentation` is exactly 32 bytes.
    public init?<Bytes: Collection>(rawRepresentation: Bytes) where Bytes.Element == UInt8 {
        guard let raw = Key32(bytes: rawRepresentation) else { return nil }
        self.init(raw: raw)
    }

    /// A fresh key from `generator` (pass a cryptographically secure one, such as
    /// `SystemRandomNumberGenerator`).
    public static func generate(using generator: inout some RandomNumberGenerator) -> Self {
        Self(raw: X25519.random(using: &generator, clamp: clampsGeneratedKeys))
    }

    public var rawRepresentation: [UInt8] { raw.bytes }
    public var publicKey: Public { Public(raw: X25519.publicKey(of: raw)) }

    /// X25519 with a peer's key.
    public func sharedSecret(with peer: Peer) throws -> [UInt8] {
        try X25519.sharedSecret(privateKey: raw, publicKey: peer.raw)
    }

    /// The type and the public key, never the secret.
    public var description: String { "\(Self.self)(\(publicKey))" }
    public static func == (a: Self, b: Self) -> Bool { a.raw.constantTimeEquals(b.raw) }
}

/// A private key that is persisted, as `privkey:<hex>` (machine and node keys), and is Codable
/// in that form.
public protocol TailscalePersistedPrivateKey: TailscalePrivateKey, Codable {}

extension TailscalePersistedPrivateKey {
    public static var textPrefix: String { "privkey:" }

    /// The persisted text form, `privkey:<hex>`. Handle with care: it is the secret.
    public var textRepresentation: String { Self.textPrefix + raw.hex }

    /// Parses the text form, throwing ``KeyTextError`` on failure.
    public init(parsing text: some StringProtocol) throws {
        guard let raw = Key32(text: text, prefix: Self.textPrefix) else { throw KeyTextError(expectedPrefix: Self.textPrefix) }
        self.init(raw: raw)
    }

    /// For `init(from:)`: decodes the text form from a single-value container.
    public static func decodeText(from decoder: any Decoder) throws -> Self {
        let container = try decoder.singleValueContainer()
        do { return try Self(parsing: try container.decode(String.self)) } catch let error as KeyTextError {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: error.description)
        }
    }

    /// For `encode(to:)`: encodes the text form.
    public func encodeText(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(textRepresentation)
    }
}
