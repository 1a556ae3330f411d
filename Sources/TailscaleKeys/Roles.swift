// The concrete key roles. Private keys compare in constant time, never print their bytes in
// `description`, and offer only the operations their role needs; the shared bodies are the
// default implementations of `TailscalePrivateKey` and `TailscalePersistedPrivateKey`
// (PrivateKeys.swift).

// MARK: Machine keys (identify a device to control; the Noise static keys of ts2021)

public struct MachinePublic: TailscalePublicKey {
    public static let textPrefix = "mkey:"
    public let raw: Key32
    public init(raw: Key32) { self.raw = raw }
    public init(from decoder: any Decoder) throws { self = try Self.decodeText(from: decoder) }
    public func encode(to encoder: any Encoder) throws { try encodeText(to: encoder) }
}

/// A machine private key, persisted as `privkey:<hex>`. Noise keys are not clamped when
/// generated (X25519 clamps internally).
public struct MachinePrivate: TailscalePersistedPrivateKey {
    public typealias Public = MachinePublic
    public static let clampsGeneratedKeys = false
    public let raw: Key32
    public init(raw: Key32) { self.raw = raw }
    public init(from decoder: any Decoder) throws { self = try Self.decodeText(from: decoder) }
    public func encode(to encoder: any Encoder) throws { try encodeText(to: encoder) }
}

// MARK: Node keys (WireGuard static keys; also the DERP identity)

public struct NodePublic: TailscalePublicKey {
    public static let textPrefix = "nodekey:"
    public let raw: Key32
    public init(raw: Key32) { self.raw = raw }
    public init(from decoder: any Decoder) throws { self = try Self.decodeText(from: decoder) }
    public func encode(to encoder: any Encoder) throws { try encodeText(to: encoder) }
}

/// A node private key, persisted as `privkey:<hex>`. Generated keys are clamped (node keys are
/// also used for NaCl boxes, which need clamping).
public struct NodePrivate: TailscalePersistedPrivateKey {
    public typealias Public = NodePublic
    public static let clampsGeneratedKeys = true
    public let raw: Key32
    public init(raw: Key32) { self.raw = raw }
    public init(from decoder: any Decoder) throws { self = try Self.decodeText(from: decoder) }
    public func encode(to encoder: any Encoder) throws { try encodeText(to: encoder) }
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
public struct DiscoPrivate: TailscalePrivateKey {
    public typealias Public = DiscoPublic
    public static let clampsGeneratedKeys = true
    public let raw: Key32
    public init(raw: Key32) { self.raw = raw }
}

// MARK: Challenge keys (the server's ephemeral key in the ts2021 early payload)

public struct ChallengePublic: TailscalePublicKey {
    public static let textPrefix = "chalpub:"
    public let raw: Key32
    public init(raw: Key32) { self.raw = raw }
    public init(from decoder: any Decoder) throws { self = try Self.decodeText(from: decoder) }
    public func encode(to encoder: any Encoder) throws { try encodeText(to: encoder) }
}

/// The server's private half of a node-key challenge: agreement runs against the node's key.
/// Never serialised.
public struct ChallengePrivate: TailscalePrivateKey {
    public typealias Public = ChallengePublic
    public typealias Peer = NodePublic
    public static let clampsGeneratedKeys = true
    public let raw: Key32
    public init(raw: Key32) { self.raw = raw }
}
