// The contents of one `set=1` request: what to change on the device, in the order given.

public import WarrenPacket
public import WireGuardProtocol

/// A change to the device's configuration, parsed from one `set=1` request.
///
/// Only the fields that the request named are non-nil. Apply it in this order:
/// 1. `privateKey` (a zero key removes the device's identity; a non-zero one is already clamped),
/// 2. `listenPort` (0 means "pick any free port"; rebind; EADDRINUSE if that fails),
/// 3. `fwmark` (0 removes the mark; EADDRINUSE if the socket refuses it, as wireguard-go says),
/// 4. `replacePeers` (remove every existing peer),
/// 5. `peers`, one after another: the same public key may occur more than once, each occurrence
///    works on the peer as the previous ones left it.
///
/// In wireguard-go those device lines take effect in the order they appear; this value keeps only
/// the last value of each, which is the same end state because none of them depends on another.
/// One exception worth knowing: a peer whose public key equals the device's own public key (after
/// the private key of this same update is applied) is ignored, as wireguard-go does.
public struct DeviceConfigUpdate: Equatable, Sendable {
    public var privateKey: WireGuardPrivateKey?
    public var listenPort: UInt16?
    public var fwmark: UInt32?
    /// `replace_peers=true`: remove all peers before applying `peers`.
    public var replacePeers: Bool
    public var peers: [PeerConfigUpdate]

    public init(
        privateKey: WireGuardPrivateKey? = nil, listenPort: UInt16? = nil, fwmark: UInt32? = nil,
        replacePeers: Bool = false, peers: [PeerConfigUpdate] = []
    ) {
        self.privateKey = privateKey
        self.listenPort = listenPort
        self.fwmark = fwmark
        self.replacePeers = replacePeers
        self.peers = peers
    }
}

/// The lines of a `set=1` request that follow one `public_key=` line.
///
/// How a device applies it, matching wireguard-go:
/// - `remove`: delete the peer if it exists; nothing else in this value applies (the parser leaves
///   every other field empty in that case).
/// - otherwise, if no peer has this key: create it unless `updateOnly` is set (then do nothing).
/// - then set `presharedKey` (the zero key means "none"), `endpoint`, `persistentKeepaliveInterval`
///   (seconds, 0 = off; turning it on from off sends a keepalive at once), and if
///   `replaceAllowedIPs` remove the peer's allowed IPs; then add each of `allowedIPs` (taking a
///   prefix away from any other peer that had it).
public struct PeerConfigUpdate: Equatable, Sendable {
    public var publicKey: WireGuardPublicKey
    public var remove: Bool
    public var updateOnly: Bool
    public var presharedKey: WireGuardPresharedKey?
    public var endpoint: UAPIEndpoint?
    public var persistentKeepaliveInterval: UInt16?
    /// Remove the peer's allowed IPs before adding `allowedIPs`. When a request has
    /// `replace_allowed_ips=true` after some `allowed_ip=` lines, those earlier lines are already
    /// dropped from `allowedIPs` by the parser, so the order in the request is respected.
    public var replaceAllowedIPs: Bool
    /// The prefixes to add, as written (not masked: mask them when inserting).
    public var allowedIPs: [IPPrefix]
    /// The `protocol_version=` value; only 1 exists.
    public var protocolVersion: Int?

    public init(
        publicKey: WireGuardPublicKey, remove: Bool = false, updateOnly: Bool = false, presharedKey: WireGuardPresharedKey? = nil,
        endpoint: UAPIEndpoint? = nil, persistentKeepaliveInterval: UInt16? = nil,
        replaceAllowedIPs: Bool = false, allowedIPs: [IPPrefix] = [], protocolVersion: Int? = nil
    ) {
        self.publicKey = publicKey
        self.remove = remove
        self.updateOnly = updateOnly
        self.presharedKey = presharedKey
        self.endpoint = endpoint
        self.persistentKeepaliveInterval = persistentKeepaliveInterval
        self.replaceAllowedIPs = replaceAllowedIPs
        self.allowedIPs = allowedIPs
        self.protocolVersion = protocolVersion
    }
}
