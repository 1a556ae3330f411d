// The ts2021 Noise IK handshake as two pure state machines. Ephemeral keys are passed in (layer 0 reads
// no randomness); callers generate them with a cryptographically secure generator.
//
//   <- s                       (pre-message: the server's static key, learnt from GET /key)
//   -> e, es, s, ss            (initiation)
//   <- e, ee, se               (response)

internal import Crypto
import TailscaleKeys

/// A parsed handshake initiation message (still encrypted).
public struct ControlInitiation: Hashable, Sendable {
    public var protocolVersion: UInt16
    public var ephemeral: MachinePublic
    /// The client's machine key, encrypted (32 bytes + 16-byte tag).
    public var encryptedMachineKey: [UInt8]
    public var tag: [UInt8]

    /// Parses exactly ``ControlWire/initiationLength`` bytes.
    public init(bytes: some Collection<UInt8>) throws {
        let b = Array(bytes)
        guard b.count == ControlWire.initiationLength else { throw ControlProtocolError(.wrongInitiationLength) }
        guard b[2] == ControlMessageType.initiation.rawValue else { throw ControlProtocolError(.unexpectedMessageType(b[2])) }
        guard b.bigEndianUInt16(at: 3) == UInt16(ControlWire.initiationLength - ControlWire.initiationHeaderLength) else {
            throw ControlProtocolError(.wrongPayloadLength)
        }
        protocolVersion = b.bigEndianUInt16(at: 0) ?? 0
        // 32 bytes by construction.
        ephemeral = MachinePublic(rawRepresentation: b[5..<37])!
        encryptedMachineKey = Array(b[37..<85])
        tag = Array(b[85..<101])
    }

    init(protocolVersion: UInt16, ephemeral: MachinePublic, encryptedMachineKey: [UInt8], tag: [UInt8]) {
        self.protocolVersion = protocolVersion
        self.ephemeral = ephemeral
        self.encryptedMachineKey = encryptedMachineKey
        self.tag = tag
    }

    public var bytes: [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(ControlWire.initiationLength)
        out.appendBigEndian(protocolVersion)
        out.append(ControlMessageType.initiation.rawValue)
        out.appendBigEndian(UInt16(ControlWire.initiationLength - ControlWire.initiationHeaderLength))
        out += ephemeral.rawRepresentation + encryptedMachineKey + tag
        return out
    }
}

/// The result of a completed handshake: who the peer is and the two record ciphers.
public struct ControlSession: Sendable {
    /// The protocol version both sides mixed into the prologue (the client's capability version).
    public let protocolVersion: UInt16
    /// The peer's static key: the client's machine key on the server, the server key on the client.
    public let peer: MachinePublic
    /// The final Noise handshake hash, for channel binding.
    public let handshakeHash: [UInt8]
    public var sender: ControlRecordSender
    public var receiver: ControlRecordReceiver
}

/// Client side: build the initiation, then turn the server's response into a session.
public struct ControlClientHandshake: Sendable {
    private var state: NoiseSymmetricState
    private let machineKey: MachinePrivate
    private let ephemeral: MachinePrivate
    private let controlKey: MachinePublic
    public let protocolVersion: UInt16
    /// The initiation to send (base64 in the `X-Tailscale-Handshake` header, or raw on the stream).
    public let initiation: [UInt8]

    /// - Parameters:
    ///   - machineKey: this device's machine key.
    ///   - controlKey: the server's Noise key (`publicKey` from `GET /key`).
    ///   - protocolVersion: the capability version to announce.
    ///   - ephemeral: a fresh key for this handshake only.
    public init(machineKey: MachinePrivate, controlKey: MachinePublic, protocolVersion: UInt16,
                ephemeral: MachinePrivate) throws {
        var s = NoiseSymmetricState(protocolName: ControlWire.noiseProtocolName)
        s.mixHash(ControlWire.prologue(version: protocolVersion))
        s.mixHash(controlKey.rawRepresentation)
        let ephemeralPublic = ephemeral.publicKey
        s.mixHash(ephemeralPublic.rawRepresentation)
        let es = try s.mixDH(ephemeral, controlKey)
        let encryptedMachineKey = s.encryptAndHash(es, machineKey.publicKey.rawRepresentation)
        let ss = try s.mixDH(machineKey, controlKey)
        let tag = s.encryptAndHash(ss, [])
        self.state = s
        self.machineKey = machineKey
        self.ephemeral = ephemeral
        self.controlKey = controlKey
        self.protocolVersion = protocolVersion
        self.initiation = ControlInitiation(protocolVersion: protocolVersion, ephemeral: ephemeralPublic,
                                            encryptedMachineKey: encryptedMachineKey, tag: tag).bytes
    }

    /// Processes the server's reply: a ``ControlFrame`` of type response (or error, which throws
    /// ``ControlProtocolError/Code/serverError(_:)``).
    public func receiveResponse(_ frame: ControlFrame) throws -> ControlSession {
        switch frame.type {
        case ControlMessageType.response.rawValue:
            break
        case ControlMessageType.error.rawValue:
            throw ControlProtocolError(.serverError(String(decoding: frame.payload, as: UTF8.self)))
        default:
            throw ControlProtocolError(.unexpectedMessageType(frame.type))
        }
        guard frame.payload.count == ControlWire.responseLength - ControlWire.headerLength else {
            throw ControlProtocolError(.wrongPayloadLength)
        }
        var s = state
        // 32 bytes by the length check above.
        let serverEphemeral = MachinePublic(rawRepresentation: frame.payload[0..<32])!
        s.mixHash(serverEphemeral.rawRepresentation)
        _ = try s.mixDH(ephemeral, serverEphemeral)
        let se = try s.mixDH(machineKey, serverEphemeral)
        _ = try s.decryptAndHash(se, Array(frame.payload[32..<48]))
        let (initiatorKey, responderKey) = s.split()
        return ControlSession(protocolVersion: protocolVersion, peer: controlKey, handshakeHash: s.h,
                              sender: ControlRecordSender(key: initiatorKey),
                              receiver: ControlRecordReceiver(key: responderKey))
    }

    /// Convenience: parses the 51 response bytes (or an error message) and completes the handshake.
    public func receiveResponse(bytes: some Collection<UInt8>) throws -> ControlSession {
        var decoder = ControlFrameDecoder()
        decoder.append(bytes)
        guard let frame = try decoder.nextFrame() else { throw ControlProtocolError(.wrongPayloadLength) }
        return try receiveResponse(frame)
    }
}

/// Server side: answer an initiation with the server's static key.
public enum ControlServerHandshake {
    public struct Accepted: Sendable {
        /// The 51-byte response to write to the client (after the HTTP 101).
        public var response: [UInt8]
        public var session: ControlSession
        /// The client's machine key, authenticated by the handshake.
        public var machineKey: MachinePublic { session.peer }
    }

    /// Processes a 101-byte initiation. Throws ``ControlProtocolError`` for anything malformed or
    /// unauthentic; the caller may then send ``errorMessage(_:)`` (Tailscale does for framing errors).
    ///
    /// - Parameters:
    ///   - initiation: the bytes from the `X-Tailscale-Handshake` header (base64-decoded) or the stream.
    ///   - controlKey: the server's static Noise key.
    ///   - ephemeral: a fresh key for this handshake only.
    public static func respond(to initiation: some Collection<UInt8>, controlKey: MachinePrivate,
                               ephemeral: MachinePrivate) throws -> Accepted {
        let message = try ControlInitiation(bytes: initiation)
        var s = NoiseSymmetricState(protocolName: ControlWire.noiseProtocolName)
        s.mixHash(ControlWire.prologue(version: message.protocolVersion))
        s.mixHash(controlKey.publicKey.rawRepresentation)
        s.mixHash(message.ephemeral.rawRepresentation)
        let es = try s.mixDH(controlKey, message.ephemeral)
        let machineKeyBytes = try s.decryptAndHash(es, message.encryptedMachineKey)
        // 32 bytes: the ciphertext was 48 bytes and authenticated.
        guard let machineKey = MachinePublic(rawRepresentation: machineKeyBytes) else {
            throw ControlProtocolError(.decryptionFailed)
        }
        let ss = try s.mixDH(controlKey, machineKey)
        _ = try s.decryptAndHash(ss, message.tag)

        let ephemeralPublic = ephemeral.publicKey
        s.mixHash(ephemeralPublic.rawRepresentation)
        _ = try s.mixDH(ephemeral, message.ephemeral)
        let se = try s.mixDH(ephemeral, machineKey)
        let tag = s.encryptAndHash(se, [])
        let (initiatorKey, responderKey) = s.split()

        var response = [ControlMessageType.response.rawValue]
        response.appendBigEndian(UInt16(ControlWire.responseLength - ControlWire.headerLength))
        response += ephemeralPublic.rawRepresentation + tag
        let session = ControlSession(protocolVersion: message.protocolVersion, peer: machineKey, handshakeHash: s.h,
                                     sender: ControlRecordSender(key: responderKey),
                                     receiver: ControlRecordReceiver(key: initiatorKey))
        return Accepted(response: response, session: session)
    }

    /// An unauthenticated error message (type 0x03), truncated to what the 2-byte length can carry.
    public static func errorMessage(_ text: String) -> [UInt8] {
        let body = Array(Array(text.utf8).prefix(Int(UInt16.max)))
        var out = [ControlMessageType.error.rawValue]
        out.appendBigEndian(UInt16(body.count))
        return out + body
    }
}
