// One peer's whole protocol state: handshake, cookies, keypairs, timers and endpoint, driven by
// events from the device and answering with actions (wireguard-go device/peer.go, send.go,
// receive.go and timers.go, without the I/O). The device keeps one `PeerSession` per peer behind a
// lock, does the actions, and calls `tick` at `nextDeadline`.
//
// Sending data:     keypairForSending -> (encrypt, send) -> transportSent
// Receiving data:   keypair(forLocalIndex:) -> open + acceptCounter -> transportReceived
// Handshakes:       initiateHandshake / receivedInitiation / receivedResponse / receivedCookieReply
// Time:             tick at nextDeadline

/// What the device must do after an event.
public enum PeerAction: Hashable, Sendable {
    /// Send this handshake initiation (148 bytes, MACs filled in) to the peer's endpoint.
    case sendHandshakeInitiation([UInt8])
    /// Send this handshake response (92 bytes, MACs filled in) to the peer's endpoint.
    case sendHandshakeResponse([UInt8])
    /// Send the staged packets with the current keypair, or a keepalive (an empty transport
    /// message) if none are staged (wireguard-go `SendKeepalive`).
    case sendKeepalive
    /// A keypair just became usable: send the staged packets (`keypairForSending`).
    case sendStagedPackets
    /// Drop the staged packets: the handshake was given up or the keys were erased.
    case dropStagedPackets
    /// Remove this index from the device's index table (its handshake or keypair is gone).
    case releaseIndex(UInt32)
    /// A handshake completed (record the time for `last_handshake_time`).
    case handshakeCompleted
    /// Forget the cached local source address of the endpoint (it may be the trouble).
    case clearEndpointSource
}

/// The protocol state of one peer. `Endpoint` is the device's UDP address type.
public struct PeerSession<Endpoint: Hashable & Sendable>: Sendable {
    public let remoteStatic: WireGuardPublicKey
    public private(set) var handshake: NoiseHandshake
    public private(set) var cookies: CookieGenerator
    public private(set) var keypairs = KeypairSet()
    public private(set) var timers: PeerTimers
    /// Where to send: configured, then the source of the last authenticated packet (roaming).
    public var endpoint: Endpoint?
    /// When the last initiation was sent (at most one per REKEY_TIMEOUT).
    public private(set) var lastSentHandshake: ContinuousClock.Instant?
    /// The index registered for the handshake in progress, if any.
    public private(set) var handshakeIndex: UInt32?
    /// The data-path AEAD of the keypairs this session derives.
    public let cipher: any TransportCipher.Type

    /// A session with the peer `remoteStatic` for the device key `localStatic`.
    public init(localStatic: WireGuardPrivateKey, remoteStatic: WireGuardPublicKey,
                presharedKey: WireGuardPresharedKey = .zero, endpoint: Endpoint? = nil,
                persistentKeepaliveInterval: Duration? = nil,
                cipher: any TransportCipher.Type = ChaChaPolyTransportCipher.self) {
        self.remoteStatic = remoteStatic
        self.cipher = cipher
        handshake = NoiseHandshake(localStatic: localStatic, remoteStatic: remoteStatic, presharedKey: presharedKey)
        cookies = CookieGenerator(remotePublicKey: remoteStatic)
        timers = PeerTimers(persistentKeepaliveInterval: persistentKeepaliveInterval)
        self.endpoint = endpoint
    }

    /// The preshared key mixed into future handshakes.
    public var presharedKey: WireGuardPresharedKey {
        get { handshake.presharedKey }
        set { handshake.presharedKey = newValue }
    }

    /// The persistent keepalive interval (nil or zero: off). Takes effect at the next packet.
    public var persistentKeepaliveInterval: Duration? {
        get { timers.persistentKeepaliveInterval }
        set { timers.persistentKeepaliveInterval = newValue }
    }

    /// When `tick` must be called next (nil: no timer armed).
    public var nextDeadline: ContinuousClock.Instant? { timers.nextDeadline }

    /// The keypair with local index `index`, for decrypting a transport message addressed to it.
    /// Check `canReceive(now:)`, decrypt, `acceptCounter`, then call `transportReceived`.
    public func keypair(forLocalIndex index: UInt32) -> Keypair? {
        keypairs.keypair(forLocalIndex: index)
    }

    // MARK: Handshake

    /// Sends a handshake initiation unless one went out less than REKEY_TIMEOUT ago.
    /// `isRetry` keeps the retry count (only the retransmit timer retries); `timestamp` is the wall
    /// clock now; `newIndex` must return an index unused in the device (and register it for this peer).
    public mutating func initiateHandshake(isRetry: Bool = false, now: ContinuousClock.Instant, timestamp: TAI64N,
                                           using rng: inout some RandomNumberGenerator,
                                           newIndex: () -> UInt32) -> [PeerAction] {
        if !isRetry { timers.resetHandshakeAttempts() }
        if let last = lastSentHandshake, now - last < WireGuardConstants.rekeyTimeout { return [] }
        lastSentHandshake = now
        var actions: [PeerAction] = []
        if let old = handshakeIndex { actions.append(.releaseIndex(old)) }
        handshakeIndex = nil
        let index = newIndex()
        guard let message = try? handshake.createInitiation(senderIndex: index, timestamp: timestamp, using: &rng) else {
            actions.append(.releaseIndex(index))
            return actions
        }
        handshakeIndex = index
        var bytes = message.bytes
        cookies.addMACs(to: &bytes, now: now)
        timers.anyAuthenticatedPacketTraversal(now: now)
        timers.anyAuthenticatedPacketSent()
        actions.append(.sendHandshakeInitiation(bytes))
        timers.handshakeInitiated(now: now, using: &rng)
        return actions
    }

    /// An initiation from this peer (MAC1, and MAC2 when under load, already checked; the peer found
    /// by `received.initiatorStatic`). Throws when it is refused (replay, flood, bad timestamp);
    /// otherwise answers with a response and holds the new keypair as `next`.
    public mutating func receivedInitiation(_ received: ReceivedInitiation, from source: Endpoint,
                                            now: ContinuousClock.Instant,
                                            using rng: inout some RandomNumberGenerator,
                                            newIndex: () -> UInt32) throws -> [PeerAction] {
        try handshake.consumeInitiation(received, now: now)
        timers.anyAuthenticatedPacketTraversal(now: now)
        timers.anyAuthenticatedPacketReceived()
        endpoint = source
        var actions: [PeerAction] = []
        if let old = handshakeIndex { actions.append(.releaseIndex(old)) }
        handshakeIndex = nil
        let index = newIndex()
        let response: HandshakeResponse
        let keypair: Keypair
        do {
            response = try handshake.createResponse(senderIndex: index, using: &rng)
            keypair = try handshake.deriveKeypair(now: now, cipher: cipher)
        } catch {
            handshake.clear()
            actions.append(.releaseIndex(index))
            return actions
        }
        var bytes = response.bytes
        cookies.addMACs(to: &bytes, now: now)
        for k in keypairs.install(keypair) { actions.append(.releaseIndex(k.localIndex)) }
        timers.sessionDerived(now: now)
        timers.anyAuthenticatedPacketTraversal(now: now)
        timers.anyAuthenticatedPacketSent()
        actions.append(.sendHandshakeResponse(bytes))
        return actions
    }

    /// A response addressed to our handshake index (MAC1, and MAC2 when under load, already checked).
    /// Throws when it does not fit the initiation we sent; otherwise the new keypair becomes current
    /// and a keepalive (or the staged packets) confirms it to the responder.
    public mutating func receivedResponse(_ response: HandshakeResponse, from source: Endpoint,
                                          now: ContinuousClock.Instant) throws -> [PeerAction] {
        try handshake.consumeResponse(response)
        endpoint = source
        timers.anyAuthenticatedPacketTraversal(now: now)
        timers.anyAuthenticatedPacketReceived()
        var actions: [PeerAction] = []
        let keypair: Keypair
        do {
            keypair = try handshake.deriveKeypair(now: now, cipher: cipher)
        } catch {
            return actions
        }
        handshakeIndex = nil  // now the keypair's index
        for k in keypairs.install(keypair) { actions.append(.releaseIndex(k.localIndex)) }
        timers.sessionDerived(now: now)
        timers.handshakeComplete()
        actions.append(.handshakeCompleted)
        actions.append(.sendKeepalive)
        return actions
    }

    /// A cookie reply addressed to one of this peer's indices. True when it decrypted: the next
    /// handshake message carries MAC2.
    @discardableResult
    public mutating func receivedCookieReply(_ reply: CookieReply, now: ContinuousClock.Instant) -> Bool {
        cookies.consume(reply, now: now)
    }

    // MARK: Transport

    /// The keypair to encrypt staged packets with, or nil when there is none usable (too old, or
    /// out of counters): then keep the packets staged and do the actions (a handshake initiation).
    public mutating func keypairForSending(now: ContinuousClock.Instant, timestamp: TAI64N,
                                           using rng: inout some RandomNumberGenerator,
                                           newIndex: () -> UInt32) -> (keypair: Keypair?, actions: [PeerAction]) {
        if let k = keypairs.current, k.canSend(now: now) { return (k, []) }
        return (nil, initiateHandshake(now: now, timestamp: timestamp, using: &rng, newIndex: newIndex))
    }

    /// After transport messages were sent. `containsData` is false when all were keepalives.
    /// May start a rekey (REKEY_AFTER_MESSAGES, or REKEY_AFTER_TIME for the initiator).
    public mutating func transportSent(containsData: Bool, now: ContinuousClock.Instant, timestamp: TAI64N,
                                       using rng: inout some RandomNumberGenerator,
                                       newIndex: () -> UInt32) -> [PeerAction] {
        timers.anyAuthenticatedPacketTraversal(now: now)
        timers.anyAuthenticatedPacketSent()
        if containsData { timers.dataSent(now: now, using: &rng) }
        guard let k = keypairs.current else { return [] }
        if k.sendCounterValue > WireGuardConstants.rekeyAfterMessages
            || (k.isInitiator && now - k.createdAt > WireGuardConstants.rekeyAfterTime) {
            return initiateHandshake(now: now, timestamp: timestamp, using: &rng, newIndex: newIndex)
        }
        return []
    }

    /// After a transport message decrypted with `keypair` and passed the replay window, from `source`.
    /// `containsData` is false for a keepalive. Confirms a responder's `next` keypair, follows the
    /// peer's endpoint, and may start the initiator's last-minute rekey.
    /// (Check the inner source address with `AllowedIPs` separately.)
    public mutating func transportReceived(with keypair: Keypair, containsData: Bool, from source: Endpoint,
                                           now: ContinuousClock.Instant, timestamp: TAI64N,
                                           using rng: inout some RandomNumberGenerator,
                                           newIndex: () -> UInt32) -> [PeerAction] {
        var actions: [PeerAction] = []
        let (promoted, dropped) = keypairs.received(with: keypair)
        if let dropped { actions.append(.releaseIndex(dropped.localIndex)) }
        endpoint = source
        if promoted {
            timers.handshakeComplete()
            actions.append(.handshakeCompleted)
            actions.append(.sendStagedPackets)
        }
        if !timers.sentLastMinuteHandshake, let current = keypairs.current, current.isInitiator,
           now - current.createdAt > WireGuardConstants.rejectAfterTime - WireGuardConstants.keepaliveTimeout
            - WireGuardConstants.rekeyTimeout {
            timers.sentLastMinuteHandshake = true
            actions += initiateHandshake(now: now, timestamp: timestamp, using: &rng, newIndex: newIndex)
        }
        timers.anyAuthenticatedPacketTraversal(now: now)
        timers.anyAuthenticatedPacketReceived()
        if containsData { timers.dataReceived(now: now) }
        return actions
    }

    // MARK: Time

    /// Runs the timers due at `now` and returns what they ask for.
    public mutating func tick(now: ContinuousClock.Instant, timestamp: TAI64N,
                              using rng: inout some RandomNumberGenerator,
                              newIndex: () -> UInt32) -> [PeerAction] {
        var actions: [PeerAction] = []
        for event in timers.expire(now: now) {
            switch event {
            case .retransmitHandshake:
                actions.append(.clearEndpointSource)
                actions += initiateHandshake(isRetry: true, now: now, timestamp: timestamp, using: &rng, newIndex: newIndex)
            case .handshakeGaveUp:
                actions.append(.dropStagedPackets)
            case .sendKeepalive, .persistentKeepalive:
                actions.append(.sendKeepalive)
            case .newHandshake:
                actions.append(.clearEndpointSource)
                actions += initiateHandshake(now: now, timestamp: timestamp, using: &rng, newIndex: newIndex)
            case .zeroKeyMaterial:
                actions += zeroAllKeys()
            }
        }
        return actions
    }

    /// Erases every keypair and any handshake in progress, and drops staged packets
    /// (wireguard-go `ZeroAndFlushAll`). The replay and flood limits of initiations are kept.
    public mutating func zeroAllKeys() -> [PeerAction] {
        var actions = keypairs.removeAll().map { PeerAction.releaseIndex($0.localIndex) }
        if let i = handshakeIndex { actions.append(.releaseIndex(i)) }
        handshakeIndex = nil
        handshake.clear()
        actions.append(.dropStagedPackets)
        return actions
    }

    /// Stops every timer (the device goes down or the peer is removed).
    public mutating func stopTimers() {
        timers.stopAll()
    }
}
