// The device's state as a `get=1` request reports it.

public import WarrenPacket
public import WireGuardProtocol

/// What `get=1` reports: the device's configuration and per-peer statistics.
public struct DeviceSnapshot: Equatable, Sendable {
    /// Omitted from the answer when nil or zero.
    public var privateKey: WireGuardPrivateKey?
    /// The port the device is bound to; omitted when 0 (not bound).
    public var listenPort: UInt16
    /// Omitted when 0.
    public var fwmark: UInt32
    public var peers: [PeerSnapshot]

    public init(privateKey: WireGuardPrivateKey? = nil, listenPort: UInt16 = 0, fwmark: UInt32 = 0, peers: [PeerSnapshot] = []) {
        self.privateKey = privateKey
        self.listenPort = listenPort
        self.fwmark = fwmark
        self.peers = peers
    }
}

/// One peer in a `get=1` answer.
public struct PeerSnapshot: Equatable, Sendable {
    public var publicKey: WireGuardPublicKey
    /// The zero key when the peer has none (wireguard-go always prints the line).
    public var presharedKey: WireGuardPresharedKey
    public var protocolVersion: Int
    /// Omitted when the peer has no endpoint yet.
    public var endpoint: UAPIEndpoint?
    /// Time of the last completed handshake since the Unix epoch; both 0 when there was none.
    public var lastHandshakeTimeSec: Int64
    public var lastHandshakeTimeNsec: Int64
    public var txBytes: UInt64
    public var rxBytes: UInt64
    /// Seconds; 0 = off.
    public var persistentKeepaliveInterval: UInt16
    /// Masked prefixes, in the order the device lists them.
    public var allowedIPs: [IPPrefix]

    public init(
        publicKey: WireGuardPublicKey, presharedKey: WireGuardPresharedKey = .zero, protocolVersion: Int = 1, endpoint: UAPIEndpoint? = nil,
        lastHandshakeTimeSec: Int64 = 0, lastHandshakeTimeNsec: Int64 = 0, txBytes: UInt64 = 0, rxBytes: UInt64 = 0,
        persistentKeepaliveInterval: UInt16 = 0, allowedIPs: [IPPrefix] = []
    ) {
        self.publicKey = publicKey
        self.presharedKey = presharedKey
        self.protocolVersion = protocolVersion
        self.endpoint = endpoint
        self.lastHandshakeTimeSec = lastHandshakeTimeSec
        self.lastHandshakeTimeNsec = lastHandshakeTimeNsec
        self.txBytes = txBytes
        self.rxBytes = rxBytes
        self.persistentKeepaliveInterval = persistentKeepaliveInterval
        self.allowedIPs = allowedIPs
    }
}
