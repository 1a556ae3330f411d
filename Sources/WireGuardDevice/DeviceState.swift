public import WarrenPacket
public import WireGuardProtocol

/// Everything the threads share, guarded by the device's state lock.
struct DeviceState: Sendable {
    struct IndexEntry: Sendable {
        let peer: Peer
        /// Nil while the index belongs to a handshake in progress.
        var keypair: Keypair?
    }

    var privateKey: WireGuardPrivateKey?
    var publicKey: WireGuardPublicKey?
    var cookieChecker: CookieChecker?
    var listenPort: UInt16 = 0
    var fwmark: UInt32 = 0
    var peers: [WireGuardPublicKey: Peer] = [:]
    /// Peers in the order they were added (for `get`).
    var peerOrder: [WireGuardPublicKey] = []
    /// Our receiver indices: handshakes in progress and live keypairs.
    var indices: [UInt32: IndexEntry] = [:]
    var allowedIPs = AllowedIPsTable<Peer>()

    /// Handshake messages counted in the current one-second window, for under-load detection.
    var handshakeWindowStart: ContinuousClock.Instant?
    var handshakeMessagesInWindow = 0
    var underLoadUntil: ContinuousClock.Instant?

    /// An unused random receiver index, reserved for `peer`'s handshake.
    mutating func reserveIndex(for peer: Peer) -> UInt32 {
        var rng = SystemRandomNumberGenerator()
        while true {
            let index = UInt32.random(in: 1...UInt32.max, using: &rng)
            if indices[index] == nil {
                indices[index] = IndexEntry(peer: peer, keypair: nil)
                return index
            }
        }
    }

    /// Frees the index of `peer`'s handshake in progress, if it still has one.
    mutating func releaseHandshakeIndex(of peer: Peer) {
        guard let handshake = peer.handshake, handshake.state != .zeroed || handshake.localIndex != 0 else { return }
        let index = handshake.localIndex
        if let entry = indices[index], entry.peer === peer, entry.keypair == nil { indices[index] = nil }
    }

    mutating func release(_ keypair: Keypair?) {
        guard let keypair else { return }
        if let entry = indices[keypair.localIndex], entry.keypair === keypair { indices[keypair.localIndex] = nil }
    }

    /// Forgets every session of `peer` and any handshake in progress.
    mutating func clearSessions(of peer: Peer) {
        release(peer.current)
        release(peer.previous)
        release(peer.next)
        peer.current = nil
        peer.previous = nil
        peer.next = nil
        releaseHandshakeIndex(of: peer)
        peer.handshake?.clear()
    }

    mutating func removePeer(_ key: WireGuardPublicKey) {
        guard let peer = peers[key] else { return }
        clearSessions(of: peer)
        allowedIPs.removeAll(of: peer)
        peer.timers.stopAll()
        peer.staged = []
        peers[key] = nil
        peerOrder.removeAll { $0 == key }
    }

    /// Counts a handshake message and says whether the device is under load: more than
    /// `underLoadThreshold` handshake messages within a second, and for a second after that.
    mutating func countHandshakeMessage(now: ContinuousClock.Instant) -> Bool {
        if let start = handshakeWindowStart, now - start < .seconds(1) {
            handshakeMessagesInWindow += 1
        } else {
            handshakeWindowStart = now
            handshakeMessagesInWindow = 1
        }
        if handshakeMessagesInWindow > WireGuardDeviceConstants.underLoadHandshakesPerSecond {
            underLoadUntil = now + .seconds(1)
        }
        if let until = underLoadUntil, now < until { return true }
        return false
    }
}

/// The operations of one atomic configuration change (see `WireGuardDevice.configure`).
/// They follow wireguard-go's semantics for the UAPI `set` keys.
public struct DeviceConfigurator: Sendable {
    var state: DeviceState
    let now: ContinuousClock.Instant
    /// Keepalives to send once the change is applied.
    var outgoing: [(WireGuardEndpoint, [UInt8])] = []

    init(state: DeviceState, now: ContinuousClock.Instant) {
        self.state = state
        self.now = now
    }

    /// The device's private key (nil: none).
    public var privateKey: WireGuardPrivateKey? { state.privateKey }

    /// Sets the private key (nil removes it). Existing sessions end; a peer with the device's own
    /// public key is removed, as in wireguard-go.
    public mutating func setPrivateKey(_ key: WireGuardPrivateKey?) {
        if key == state.privateKey { return }
        state.privateKey = key
        state.publicKey = key?.publicKey
        state.cookieChecker = state.publicKey.map { CookieChecker(localPublicKey: $0) }
        if let own = state.publicKey, state.peers[own] != nil { state.removePeer(own) }
        for peer in state.peers.values {
            state.clearSessions(of: peer)
            peer.handshake = key.map { NoiseHandshake(localStatic: $0, remoteStatic: peer.publicKey, presharedKey: peer.presharedKey) }
        }
    }

    /// Removes every peer.
    public mutating func removeAllPeers() {
        for key in state.peerOrder { state.removePeer(key) }
    }

    public func hasPeer(_ key: WireGuardPublicKey) -> Bool { state.peers[key] != nil }

    /// Removes the peer if it exists.
    public mutating func removePeer(_ key: WireGuardPublicKey) { state.removePeer(key) }

    /// Adds a peer with no endpoint and no allowed IPs, unless it exists. Returns false for the
    /// device's own public key (ignored, as in wireguard-go).
    @discardableResult
    public mutating func addPeer(_ key: WireGuardPublicKey) -> Bool {
        if key == state.publicKey { return false }
        if state.peers[key] != nil { return true }
        let peer = Peer(publicKey: key)
        peer.handshake = state.privateKey.map { NoiseHandshake(localStatic: $0, remoteStatic: key) }
        state.peers[key] = peer
        state.peerOrder.append(key)
        return true
    }

    public mutating func setPresharedKey(_ psk: WireGuardPresharedKey, of key: WireGuardPublicKey) {
        guard let peer = state.peers[key] else { return }
        peer.presharedKey = psk
        peer.handshake?.presharedKey = psk
    }

    public mutating func setEndpoint(_ endpoint: WireGuardEndpoint, of key: WireGuardPublicKey) {
        state.peers[key]?.endpoint = endpoint
    }

    /// Sets the persistent keepalive interval (seconds, 0 = off). Turning it on sends a keepalive
    /// at once when a session exists, as wireguard-go does.
    public mutating func setPersistentKeepalive(_ seconds: UInt16, of key: WireGuardPublicKey) {
        guard let peer = state.peers[key] else { return }
        let wasOff = peer.timers.persistentKeepaliveInterval == 0
        peer.timers.setPersistentKeepalive(seconds, now: now)
        if wasOff && seconds > 0, let endpoint = peer.endpoint, let keypair = peer.current, keypair.canSend(now: now),
           let message = keypair.seal(packet: []) {
            peer.txBytes &+= UInt64(message.count)
            outgoing.append((endpoint, message))
        }
    }

    /// Removes all allowed IPs of the peer.
    public mutating func removeAllowedIPs(of key: WireGuardPublicKey) {
        guard let peer = state.peers[key] else { return }
        state.allowedIPs.removeAll(of: peer)
    }

    /// Adds an allowed IP prefix to the peer (taking it from any other peer).
    public mutating func addAllowedIP(_ prefix: IPPrefix, to key: WireGuardPublicKey) {
        guard let peer = state.peers[key] else { return }
        state.allowedIPs.insert(prefix, owner: peer)
    }
}
