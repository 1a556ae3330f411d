// WireGuard's handshake: Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s (paper section 5.4), one value per
// peer holding whichever side of the exchange is in progress (as wireguard-go's `Handshake`).
//
// Initiator                                         Responder
//   createInitiation ──── message 1 ────▶  readInitiation (finds the peer) + consumeInitiation
//   consumeResponse  ◀─── message 2 ─────  createResponse
//   deriveKeypair                           deriveKeypair
//
// MAC1/MAC2 are not handled here: see `CookieGenerator` (adds them) and `CookieChecker` (checks them).

import WarrenCrypto

/// Why a handshake message was refused or could not be made.
public struct HandshakeError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Code: Hashable, Sendable {
        /// The peer's public key gives an all-zero shared secret.
        case invalidPublicKey
        /// An AEAD field did not authenticate, or a key exchange failed.
        case decryptionFailed
        /// The initiation was sent by a different peer than this handshake is for.
        case wrongPeer
        /// The timestamp is not newer than the last accepted initiation from this peer.
        case replayedTimestamp
        /// An initiation came less than `HandshakeLimits.initiationInterval` after the last accepted one.
        case flood
        /// The message does not fit the handshake's state (e.g. a response with no initiation sent).
        case wrongState
        /// The index in the message does not belong to this handshake.
        case wrongIndex
    }

    public let code: Code
    public init(_ code: Code) { self.code = code }
    public var description: String { "HandshakeError(\(code))" }
}

/// Rate limits of the handshake.
public enum HandshakeLimits {
    /// wireguard-go accepts at most one initiation per peer every 20 ms (`HandshakeInitationRate`).
    public static let initiationInterval: Duration = .milliseconds(20)
}

/// The first half of reading a handshake initiation: the responder's static key was enough to learn
/// who sent it. Look the peer up by `initiatorStatic`, then pass this to that peer's
/// `NoiseHandshake.consumeInitiation`.
public struct ReceivedInitiation: Sendable {
    /// The static public key of the initiator (authenticated by the AEAD, not yet by the timestamp).
    public let initiatorStatic: WireGuardPublicKey
    public let message: HandshakeInitiation
    let hash: [UInt8]
    let chainingKey: [UInt8]
}

/// One peer's handshake state (both roles).
public struct NoiseHandshake: Sendable {
    public enum State: Hashable, Sendable {
        case zeroed
        case initiationCreated
        case initiationConsumed
        case responseCreated
        case responseConsumed
    }

    public private(set) var state: State = .zeroed
    public let localStatic: WireGuardPrivateKey
    public let localStaticPublic: WireGuardPublicKey
    public let remoteStatic: WireGuardPublicKey
    public var presharedKey: WireGuardPresharedKey
    /// DH(local static, remote static), nil when the remote key is invalid.
    let precomputedStaticStatic: [UInt8]?

    var hash: [UInt8] = []
    var chainingKey: [UInt8] = []
    var localEphemeral: WireGuardPrivateKey?
    var remoteEphemeral: WireGuardPublicKey?
    /// Our index for this exchange (the sender index of the message we sent).
    public private(set) var localIndex: UInt32 = 0
    /// The other side's index (the sender index of the message we received).
    public private(set) var remoteIndex: UInt32 = 0
    /// The newest timestamp accepted from this peer; only a newer one is accepted next.
    public private(set) var lastTimestamp: TAI64N = .zero
    /// When the last initiation from this peer was accepted (for the flood limit).
    public private(set) var lastInitiationConsumption: ContinuousClock.Instant?

    /// A handshake between our `localStatic` and the peer's `remoteStatic`.
    public init(localStatic: WireGuardPrivateKey, remoteStatic: WireGuardPublicKey,
                presharedKey: WireGuardPresharedKey = .zero) {
        self.localStatic = localStatic
        self.localStaticPublic = localStatic.publicKey
        self.remoteStatic = remoteStatic
        self.presharedKey = presharedKey
        self.precomputedStaticStatic = try? localStatic.sharedSecret(with: remoteStatic)
    }

    // MARK: Initiator

    /// Builds message 1 (MAC fields zero: pass its bytes through `CookieGenerator.addMACs`).
    /// `senderIndex` must be unique among the device's live indices; `timestamp` is the wall clock now.
    public mutating func createInitiation(senderIndex: UInt32, timestamp: TAI64N,
                                          using rng: inout some RandomNumberGenerator) throws -> HandshakeInitiation {
        guard let ss = precomputedStaticStatic else { throw HandshakeError(.invalidPublicKey) }
        var h = Noise.initialHash
        var ck = Noise.initialChainingKey
        Noise.mixHash(&h, remoteStatic.rawRepresentation)

        let ephemeral = WireGuardPrivateKey(using: &rng)
        let ephemeralPublic = ephemeral.publicKey.rawRepresentation
        ck = Noise.kdf1(ck, ephemeralPublic)
        Noise.mixHash(&h, ephemeralPublic)

        let es = try ephemeral.sharedSecret(with: remoteStatic)
        var key: [UInt8]
        (ck, key) = Noise.kdf2(ck, es)
        let encryptedStatic = Noise.seal(key: key, counter: 0, plaintext: localStaticPublic.rawRepresentation, aad: h)
        Noise.mixHash(&h, encryptedStatic)

        (ck, key) = Noise.kdf2(ck, ss)
        let encryptedTimestamp = Noise.seal(key: key, counter: 0, plaintext: timestamp.bytes, aad: h)
        Noise.mixHash(&h, encryptedTimestamp)

        hash = h
        chainingKey = ck
        localEphemeral = ephemeral
        remoteEphemeral = nil
        localIndex = senderIndex
        state = .initiationCreated
        return HandshakeInitiation(senderIndex: senderIndex, ephemeral: ephemeralPublic,
                                   encryptedStatic: encryptedStatic, encryptedTimestamp: encryptedTimestamp)
    }

    /// Reads message 2 sent in answer to our initiation.
    public mutating func consumeResponse(_ msg: HandshakeResponse) throws {
        guard state == .initiationCreated, let ephemeral = localEphemeral else { throw HandshakeError(.wrongState) }
        guard msg.receiverIndex == localIndex else { throw HandshakeError(.wrongIndex) }
        guard let remoteEphemeralKey = try? WireGuardPublicKey(rawRepresentation: msg.ephemeral) else {
            throw HandshakeError(.decryptionFailed)
        }
        var h = hash
        var ck = chainingKey
        Noise.mixHash(&h, msg.ephemeral)
        ck = Noise.kdf1(ck, msg.ephemeral)
        guard let ee = try? ephemeral.sharedSecret(with: remoteEphemeralKey),
              let se = try? localStatic.sharedSecret(with: remoteEphemeralKey)
        else { throw HandshakeError(.decryptionFailed) }
        ck = Noise.kdf1(ck, ee)
        ck = Noise.kdf1(ck, se)
        let (ck2, tau, key) = Noise.kdf3(ck, presharedKey.rawRepresentation)
        ck = ck2
        Noise.mixHash(&h, tau)
        guard Noise.open(key: key, counter: 0, ciphertext: msg.encryptedNothing, aad: h) != nil else {
            throw HandshakeError(.decryptionFailed)
        }
        Noise.mixHash(&h, msg.encryptedNothing)
        hash = h
        chainingKey = ck
        remoteIndex = msg.senderIndex
        state = .responseConsumed
    }

    // MARK: Responder

    /// Decrypts the initiator's static key from message 1 with our static key alone.
    /// Returns nil when the message does not authenticate.
    public static func readInitiation(_ msg: HandshakeInitiation, localStatic: WireGuardPrivateKey) -> ReceivedInitiation? {
        guard let ephemeral = try? WireGuardPublicKey(rawRepresentation: msg.ephemeral) else { return nil }
        var h = Noise.initialHash
        Noise.mixHash(&h, localStatic.publicKey.rawRepresentation)
        Noise.mixHash(&h, msg.ephemeral)
        var ck = Noise.kdf1(Noise.initialChainingKey, msg.ephemeral)
        guard let es = try? localStatic.sharedSecret(with: ephemeral) else { return nil }
        let key: [UInt8]
        (ck, key) = Noise.kdf2(ck, es)
        guard let staticBytes = Noise.open(key: key, counter: 0, ciphertext: msg.encryptedStatic, aad: h),
              let initiator = try? WireGuardPublicKey(rawRepresentation: staticBytes)
        else { return nil }
        Noise.mixHash(&h, msg.encryptedStatic)
        return ReceivedInitiation(initiatorStatic: initiator, message: msg, hash: h, chainingKey: ck)
    }

    /// Finishes reading message 1 for this peer: checks the timestamp (must be newer than the last
    /// accepted one) and the flood limit, then moves to `initiationConsumed`. Returns the timestamp.
    @discardableResult
    public mutating func consumeInitiation(_ received: ReceivedInitiation, now: ContinuousClock.Instant) throws -> TAI64N {
        guard received.initiatorStatic == remoteStatic else { throw HandshakeError(.wrongPeer) }
        guard let ss = precomputedStaticStatic else { throw HandshakeError(.invalidPublicKey) }
        var h = received.hash
        let (ck, key) = Noise.kdf2(received.chainingKey, ss)
        guard let stampBytes = Noise.open(key: key, counter: 0, ciphertext: received.message.encryptedTimestamp, aad: h),
              let stamp = TAI64N(bytes: stampBytes)
        else { throw HandshakeError(.decryptionFailed) }
        Noise.mixHash(&h, received.message.encryptedTimestamp)
        guard stamp > lastTimestamp else { throw HandshakeError(.replayedTimestamp) }
        if let last = lastInitiationConsumption, now - last <= HandshakeLimits.initiationInterval {
            throw HandshakeError(.flood)
        }
        hash = h
        chainingKey = ck
        remoteIndex = received.message.senderIndex
        // Checked when it was read.
        remoteEphemeral = try? WireGuardPublicKey(rawRepresentation: received.message.ephemeral)
        lastTimestamp = stamp
        if lastInitiationConsumption.map({ now > $0 }) ?? true { lastInitiationConsumption = now }
        state = .initiationConsumed
        return stamp
    }

    /// Builds message 2 (MAC fields zero: pass its bytes through `CookieGenerator.addMACs`).
    public mutating func createResponse(senderIndex: UInt32,
                                        using rng: inout some RandomNumberGenerator) throws -> HandshakeResponse {
        guard state == .initiationConsumed, let remoteEphemeral else { throw HandshakeError(.wrongState) }
        var h = hash
        var ck = chainingKey
        let ephemeral = WireGuardPrivateKey(using: &rng)
        let ephemeralPublic = ephemeral.publicKey.rawRepresentation
        Noise.mixHash(&h, ephemeralPublic)
        ck = Noise.kdf1(ck, ephemeralPublic)
        let ee = try ephemeral.sharedSecret(with: remoteEphemeral)
        ck = Noise.kdf1(ck, ee)
        let se = try ephemeral.sharedSecret(with: remoteStatic)
        ck = Noise.kdf1(ck, se)
        let (ck2, tau, key) = Noise.kdf3(ck, presharedKey.rawRepresentation)
        ck = ck2
        Noise.mixHash(&h, tau)
        let encryptedNothing = Noise.seal(key: key, counter: 0, plaintext: [], aad: h)
        Noise.mixHash(&h, encryptedNothing)
        hash = h
        chainingKey = ck
        localEphemeral = ephemeral
        localIndex = senderIndex
        state = .responseCreated
        return HandshakeResponse(senderIndex: senderIndex, receiverIndex: remoteIndex,
                                 ephemeral: ephemeralPublic, encryptedNothing: encryptedNothing)
    }

    // MARK: Both

    /// Derives the transport keys once the handshake is done (initiator: after `consumeResponse`;
    /// responder: after `createResponse`) and forgets the handshake's secrets.
    /// The keypair's `localIndex` is this handshake's local index.
    public mutating func deriveKeypair(now: ContinuousClock.Instant,
                                       cipher: any TransportCipher.Type = ChaChaPolyTransportCipher.self) throws -> Keypair {
        let sendKey: [UInt8], receiveKey: [UInt8], initiator: Bool
        switch state {
        case .responseConsumed:
            (sendKey, receiveKey) = Noise.kdf2(chainingKey, [])
            initiator = true
        case .responseCreated:
            (receiveKey, sendKey) = Noise.kdf2(chainingKey, [])
            initiator = false
        default:
            throw HandshakeError(.wrongState)
        }
        let keypair = Keypair(sendKey: sendKey, receiveKey: receiveKey, localIndex: localIndex,
                              remoteIndex: remoteIndex, createdAt: now, isInitiator: initiator, cipher: cipher)
        clear()
        return keypair
    }

    /// Forgets any exchange in progress (keeps the replay and flood state).
    public mutating func clear() {
        hash = []
        chainingKey = []
        localEphemeral = nil
        remoteEphemeral = nil
        state = .zeroed
    }
}
