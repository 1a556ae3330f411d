import Foundation
public import WarrenPacket
public import WireGuardProtocol

/// I/O that a state change asks for, done after the state lock is released.
enum DeviceEffect {
    /// Send a handshake message (or a cookie reply); once sent, its bytes count for the peer, if any.
    case send([UInt8], WireGuardEndpoint, Peer?)
    /// Send the peer's staged packets with its current keypair; a keepalive when none are staged
    /// and `keepalive` is set; a handshake initiation when it has no usable keypair.
    case flush(Peer, keepalive: Bool)
}

/// What the clocks say when an event is handled: the monotonic instant for the protocol's
/// timers and the wall clock for TAI64N timestamps and `last_handshake_time`.
struct DeviceClock {
    let now: ContinuousClock.Instant
    let wall: (seconds: Int64, nanoseconds: Int64)

    static func read() -> DeviceClock {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return DeviceClock(now: .now, wall: (Int64(ts.tv_sec), Int64(ts.tv_nsec)))
    }

    var timestamp: TAI64N { TAI64N(sinceUnixEpoch: .seconds(wall.seconds) + .nanoseconds(wall.nanoseconds)) }
}

/// Everything the threads share, guarded by the device's state lock.
struct DeviceState: Sendable {
    var privateKey: WireGuardPrivateKey?
    /// The data-path AEAD for new keypairs.
    var cipher: any TransportCipher.Type = FastTransportCipher.self
    var publicKey: WireGuardPublicKey?
    var cookieChecker: CookieChecker?
    var listenPort: UInt16 = 0
    var fwmark: UInt32 = 0
    var peers: [WireGuardPublicKey: Peer] = [:]
    /// Peers in the order they were added (for `get`).
    var peerOrder: [WireGuardPublicKey] = []
    /// Our receiver indices (handshakes in progress and keypairs) and the peer each belongs to.
    var indices = IndexTable<Peer>()
    /// Cryptokey routing: inner prefixes to peers.
    var allowedIPs = AllowedIPs<Peer>()

    /// Handshake messages counted in the current one-second window, for under-load detection.
    var handshakeWindowStart: ContinuousClock.Instant?
    var handshakeMessagesInWindow = 0
    var underLoadUntil: ContinuousClock.Instant?

    /// A fresh random receiver index registered for `peer`.
    mutating func newIndex(for peer: Peer) -> UInt32 {
        var rng = SystemRandomNumberGenerator()
        return indices.allocate(for: peer, using: &rng)
    }

    /// Runs `body` on the peer's session (when the device has a private key), with a
    /// generator of new indices for that peer, then does the bookkeeping of the actions it returns
    /// and collects the I/O they ask for in `effects`.
    mutating func drive(_ peer: Peer, clock: DeviceClock, into effects: inout [DeviceEffect],
                        _ body: (inout Peer.Session, () -> UInt32) throws -> [PeerAction]) rethrows {
        guard peer.hasSession else { return }
        let actions: [PeerAction]
        do {
            actions = try body(&peer.session!, { self.newIndex(for: peer) })
        } catch {
            peer.syncFromSession()
            throw error
        }
        peer.syncFromSession()  // before the actions: they send to the (maybe new) endpoint
        apply(actions, of: peer, clock: clock, into: &effects)
    }

    /// Bookkeeping for `actions` of `peer`; the I/O goes to `effects`.
    mutating func apply(_ actions: [PeerAction], of peer: Peer, clock: DeviceClock, into effects: inout [DeviceEffect]) {
        for action in actions {
            switch action {
            case .sendHandshakeInitiation(let bytes), .sendHandshakeResponse(let bytes):
                guard let endpoint = peer.endpoint else { continue }
                effects.append(.send(bytes, endpoint, peer))
            case .sendKeepalive:
                effects.append(.flush(peer, keepalive: true))
            case .sendStagedPackets:
                effects.append(.flush(peer, keepalive: false))
            case .dropStagedPackets:
                peer.dropStaged()
            case .releaseIndex(let index):
                if indices[index] === peer { indices.remove(index) }
            case .handshakeCompleted:
                peer.lastHandshake = clock.wall
            case .clearEndpointSource:
                break  // endpoints carry no sticky source address here
            }
        }
    }

    /// Forgets every keypair and handshake of `peer` and frees their indices.
    mutating func clearSessions(of peer: Peer) {
        if peer.hasSession {
            _ = peer.session!.zeroAllKeys()
            peer.session!.stopTimers()
            peer.syncFromSession()
        }
        indices.removeAll { $0 === peer }
        peer.dropStaged()
    }

    mutating func removePeer(_ key: WireGuardPublicKey) {
        guard let peer = peers[key] else { return }
        clearSessions(of: peer)
        allowedIPs.removeAll(of: peer)
        peer.session = nil
        peer.syncFromSession()
        peers[key] = nil
        peerOrder.removeAll { $0 == key }
    }

    /// Counts a handshake message and says whether the device is under load: more than
    /// `underLoadHandshakesPerSecond` handshake messages within a second, and for a second after that.
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
public struct DeviceConfigurator {
    var state: DeviceState
    let clock: DeviceClock
    /// I/O to do once the change is applied.
    var effects: [DeviceEffect] = []

    init(state: DeviceState, clock: DeviceClock) {
        self.state = state
        self.clock = clock
    }

    /// The device's private key (nil: none).
    public var privateKey: WireGuardPrivateKey? { state.privateKey }

    /// Sets the private key (nil removes it), clamped as wireguard-go stores it, so that
    /// `status()` and UAPI `get` return the clamped form. Existing sessions end; a peer with the
    /// device's own public key is removed, as in wireguard-go.
    public mutating func setPrivateKey(_ key: WireGuardPrivateKey?) {
        let key = key?.clamped
        if key == state.privateKey { return }
        state.privateKey = key
        state.publicKey = key?.publicKey
        state.cookieChecker = state.publicKey.map { CookieChecker(localPublicKey: $0) }
        if let own = state.publicKey, state.peers[own] != nil { state.removePeer(own) }
        for key in state.peerOrder {
            guard let peer = state.peers[key] else { continue }
            state.clearSessions(of: peer)
            peer.resetSession(privateKey: state.privateKey, cipher: state.cipher)
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
        peer.resetSession(privateKey: state.privateKey, cipher: state.cipher)
        state.peers[key] = peer
        state.peerOrder.append(key)
        return true
    }

    public mutating func setPresharedKey(_ psk: WireGuardPresharedKey, of key: WireGuardPublicKey) {
        guard let peer = state.peers[key] else { return }
        peer.presharedKey = psk
        peer.session?.presharedKey = psk
    }

    public mutating func setEndpoint(_ endpoint: WireGuardEndpoint, of key: WireGuardPublicKey) {
        state.peers[key]?.endpoint = endpoint
    }

    /// Sets the persistent keepalive interval (seconds, 0 = off). Turning it on sends a keepalive
    /// at once (or starts a handshake when there is no session), as wireguard-go does.
    public mutating func setPersistentKeepalive(_ seconds: UInt16, of key: WireGuardPublicKey) {
        guard let peer = state.peers[key] else { return }
        let wasOff = peer.persistentKeepalive == 0
        peer.persistentKeepalive = seconds
        peer.session?.persistentKeepaliveInterval = peer.keepaliveInterval
        if wasOff && seconds > 0 && peer.hasSession { effects.append(.flush(peer, keepalive: true)) }
    }

    /// Removes all allowed IPs of the peer.
    public mutating func removeAllowedIPs(of key: WireGuardPublicKey) {
        guard let peer = state.peers[key] else { return }
        state.allowedIPs.removeAll(of: peer)
    }

    /// Adds an allowed IP prefix to the peer (taking it from any other peer).
    public mutating func addAllowedIP(_ prefix: IPPrefix, to key: WireGuardPublicKey) {
        guard let peer = state.peers[key] else { return }
        state.allowedIPs.insert(prefix.masked, peer: peer)
    }
}
