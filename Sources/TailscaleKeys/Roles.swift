// The concrete key roles. Private keys compare in constant time, never print their bytes in
// `description`, and offer only the operations their role needs.

// MARK: Machine keys (identify a device to control; the Noise static keys of ts2021)

public struct MachinePublic: TailscalePublicKey {
    public static let textPrefix = "mkey:"
    public let raw: Key32
    public init(raw: Key32) { self.raw = raw }
    public init(from decoder: any Decoder) throws { self = try Self.decodeText(from: decoder) }
    public func encode(to encoder: any Encoder) throws { try encodeText(to: encoder) }
}

public struct MachinePrivate: Sendable, Equatable, Codable, CustomStringConvertible {
    public static let textPrefix = "privkey:"
    public let raw: Key32

    public init(raw: Key32) { self.raw = raw }

    public init?<Bytes: Collection>(rawRepresentation: Bytes) where Bytes.Element == UInt8 {
        guard let raw = Key32(bytes: rawRepresentation) else { return nil }
        self.raw = raw
    }

    /// A fresh key from `generator` (pass a cryptographically secure one, such as
    /// `SystemRandomNumberGenerator`). Noise keys are not clamped (X25519 clamps internally).
    public static func generate(using generator: inout some RandomNumberGenerator) -> MachinePrivate {
        MachinePrivate(raw: X25519.random(using: &generator, clamp: false))
    }

    public var rawRepresentation: [UInt8] { raw.bytes }
    public var publicKey: MachinePublic { MachinePublic(raw: X25519.publicKey(of: raw)) }

    /// X25519 with a peer's machine key.
    public func sharedSecret(with peer: MachinePublic) throws -> [UInt8] {
        try X25519.sharedSecret(privateKey: raw, publicKey: peer.raw)
    }

    /// The persisted text form, `privkey:<hex>`. Handle with care: it is the secret.
    public var textRepresentation: String { Self.textPrefix + raw.hex }

    public init(parsing text: some StringProtocol) throws {
        guard let raw = Key32(text: text, prefix: Self.textPrefix) else { throw KeyTextError(expectedPrefix: Self.textPrefix) }
        self.raw = raw
    }

    public var description: String { "MachinePrivate(\(publicKey))" }
    public static func == (a: Self, b: Self) -> Bool { a.raw.constantTimeEquals(b.raw) }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        do { try self.init(parsing: try container.decode(String.self)) } catch let error as KeyTextError {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: error.description)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(textRepresentation)
    }
}

// MARK: Node keys (WireGuard static keys; also the DERP identity)

public struct NodePublic: TailscalePublicKey {
    public static let textPrefix = "nodekey:"
    public let raw: Key32
    public init(raw: Key32) { self.raw = raw }
    public init(from decoder: any Decoder) throws { self = try Self.decodeText(from: decoder) }
    public func encode(to encoder: any Encoder) throws { try encodeText(to: encoder) }
}

public struct NodePrivate: Sendable, Equatable, Codable, CustomStringConvertible {
    public static let textPrefix = "privkey:"
    public let raw: Key32

    public init(raw: Key32) { self.raw = raw }

    public init?<Bytes: Collection>(rawRepresentation: Bytes) where Bytes.Element == UInt8 {
        guard let raw = Key32(bytes: rawRepresentation) else { return nil }
        self.raw = raw
    }

    /// A fresh, clamped key (node keys are also used for NaCl boxes, which need clamping).
    public static func generate(using generator: inout some RandomNumberGenerator) -> NodePrivate {
        NodePrivate(raw: X25519.random(using: &generator, clamp: true))
    }

    public var rawRepresentation: [UInt8] { raw.bytes }
    public var publicKey: NodePublic { NodePublic(raw: X25519.publicKey(of: raw)) }

    /// X25519 with a peer's node key (the input to NaCl box's key derivation).
    public func sharedSecret(with peer: NodePublic) throws -> [UInt8] {
        try X25519.sharedSecret(privateKey: raw, publicKey: peer.raw)
    }

    public var textRepresentation: String { Self.textPrefix + raw.hex }

    public init(parsing text: some StringProtocol) throws {
        guard let raw = Key32(text: text, prefix: Self.textPrefix) else { throw KeyTextError(expectedPrefix: Self.textPrefix) }
        self.raw = raw
    }

    public var description: String { "NodePrivate(\(publicKey))" }
    public static func == (a: Self, b: Self) -> Bool { a.raw.constantTimeEquals(b.raw) }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        do { try self.init(parsing: try container.decode(String.self)) } catch let error as KeyTextError {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: error.description)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(textRepresentation)
    }
}

// MARK: Disco keys (per-process keys for the disco NAT-traversal messages)

public struct DiscoPublic: TailscalePublicKey {
    public static let textPrefix = "discokey:"
    public let raw: Key32
    public init(raw: Key32) { self.raw = raw }
    public init(from decoder: any Decoder) throws { self = try Self.decodeText(from: decoder) }
    public func encode(to encoder: any Encoder) throws { try encodeText(to: encoder) }
}

/// A disco private key. It has no text form: Tailscale never persists or sends it.
public struct DiscoPrivate: Sendable, Equatable, CustomStringConvertible {
    public let raw: Key32

    public init(raw: Key32) { self.raw = raw }

    public init?<Bytes: Collection>(rawRepresentation: Bytes) where Bytes.Element == UInt8 {
        guard let raw = Key32(bytes: rawRepresentation) else { return nil }
        self.raw = raw
    }

    public static func generate(using generator: inout some RandomNumberGenerator) -> DiscoPrivate {
        DiscoPrivate(raw: X25519.random(using: &generator, clamp: true))
    }

    public var rawRepresentation: [UInt8] { raw.bytes }
    public var publicKey: DiscoPublic { DiscoPublic(raw: X25519.publicKey(of: raw)) }

    public func sharedSecret(with peer: DiscoPublic) throws -> [UInt8] {
        try X25519.sharedSecret(privateKey: raw, publicKey: peer.raw)
    }

    public var description: String { "DiscoPrivate(\(publicKey))" }
    public static func == (a: Self, b: Self) -> Bool { a.raw.constantTimeEquals(b.raw) }
}

// MARK: Challenge keys (the server's ephemeral key in the ts2021 early payload)

public struct ChallengePublic: TailscalePublicKey {
    public static let textPrefix = "chalpub:"
    public let raw: Key32
    public init(raw: Key32) { self.raw = raw }
    public init(from decoder: any Decoder) throws { self = try Self.decodeText(from: decoder) }
    public func encode(to encoder: any Encoder) throws { try encodeText(to: encoder) }
}

/// The server's private half of a node-key challenge. Never serialised.
public struct ChallengePrivate: Sendable, Equatable, CustomStringConvertible {
    public let raw: Key32

    public init(raw: Key32) { self.raw = raw }

    public static func generate(using generator: inout some RandomNumberGenerator) -> ChallengePrivate {
        ChallengePrivate(raw: X25519.random(using: &generator, clamp: true))
    }

    public var publicKey: ChallengePublic { ChallengePublic(raw: X25519.publicKey(of: raw)) }

    public func sharedSecret(with peer: NodePublic) throws -> [UInt8] {
        try X25519.sharedSecret(privateKey: raw, publicKey: peer.raw)
    }

    public var description: String { "ChallengePrivate(\(publicKey))" }
    public static func == (a: Self, b: Self) -> Bool { a.raw.constantTimeEquals(b.raw) }
}
