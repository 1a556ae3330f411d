// The DERP login: ServerKey (S->C), ClientInfo (C->S), ServerInfo (S->C), as two small state machines.
// The NaCl box step is delegated to a ``DERPInfoSealer`` so that this module stays free of a box
// implementation and of randomness (the nonce): the I/O layer supplies one built on the node key.

import Foundation
import TailscaleKeys

/// Seals and opens the info JSON with NaCl box (crypto_box: X25519 + XSalsa20-Poly1305), the output
/// being the 24-byte nonce followed by the box, as Tailscale's `NodePrivate.SealTo`/`OpenFrom`.
public protocol DERPInfoSealer: Sendable {
    /// Boxes `plaintext` from our key to `peer` with a fresh random nonce.
    func seal(_ plaintext: [UInt8], to peer: NodePublic) throws -> [UInt8]
    /// Opens a nonce-prefixed box from `peer` to our key; throws if it does not authenticate.
    func open(_ sealed: [UInt8], from peer: NodePublic) throws -> [UInt8]
}

/// A 32-byte pre-shared key that lets DERP servers in a region mesh. JSON and text: 64 hex digits.
public struct DERPMeshKey: Sendable, Codable, Equatable, CustomStringConvertible {
    public let raw: Key32

    public init(raw: Key32) { self.raw = raw }

    /// Parses 64 hex digits, ignoring surrounding whitespace (as a key file would have).
    public init?(hex: String) {
        guard let raw = Key32(hex: hex.trimmingCharacters(in: .whitespacesAndNewlines)) else { return nil }
        self.raw = raw
    }

    public var isZero: Bool { raw.isZero }
    public static func == (a: Self, b: Self) -> Bool { a.raw.constantTimeEquals(b.raw) }
    public var description: String { "DERPMeshKey(redacted)" }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        guard let key = DERPMeshKey(hex: try container.decode(String.self)) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "mesh key must be 64 hex digits")
        }
        self = key
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(raw.hex)
    }
}

/// What a client tells the server about itself (derp_client.go ClientInfo).
public struct DERPClientInfo: Codable, Equatable, Sendable {
    /// Only for mesh peers and privileged clients.
    public var meshKey: DERPMeshKey?
    public var version: Int
    public var canAckPings: Bool
    public var isProber: Bool
    public var appName: String?

    public init(meshKey: DERPMeshKey? = nil, version: Int = DERPWire.protocolVersion, canAckPings: Bool = false,
                isProber: Bool = false, appName: String? = nil) {
        self.meshKey = meshKey
        self.version = version
        self.canAckPings = canAckPings
        self.isProber = isProber
        self.appName = appName
    }

    enum CodingKeys: String, CodingKey {
        case meshKey, version, canAckPings = "CanAckPings", isProber = "IsProber", appName = "AppName"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        // Older clients send `"meshKey": ""` when they have none.
        if let text = try c.decodeIfPresent(String.self, forKey: .meshKey), !text.isEmpty {
            guard let key = DERPMeshKey(hex: text) else {
                throw DecodingError.dataCorruptedError(forKey: .meshKey, in: c, debugDescription: "mesh key must be 64 hex digits")
            }
            meshKey = key
        } else {
            meshKey = nil
        }
        version = try c.decodeIfPresent(Int.self, forKey: .version) ?? 0
        canAckPings = try c.decodeIfPresent(Bool.self, forKey: .canAckPings) ?? false
        isProber = try c.decodeIfPresent(Bool.self, forKey: .isProber) ?? false
        appName = try c.decodeIfPresent(String.self, forKey: .appName)
    }

    /// Go's field options: meshKey omitted when zero, version/IsProber/AppName when empty.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        if let meshKey, !meshKey.isZero { try c.encode(meshKey, forKey: .meshKey) }
        if version != 0 { try c.encode(version, forKey: .version) }
        try c.encode(canAckPings, forKey: .canAckPings)
        if isProber { try c.encode(isProber, forKey: .isProber) }
        if let appName, !appName.isEmpty { try c.encode(appName, forKey: .appName) }
    }
}

/// What the server tells the client (derp.go ServerInfo).
public struct DERPServerInfo: Codable, Equatable, Sendable {
    public var version: Int
    /// A per-client send rate limit; zero means none.
    public var tokenBucketBytesPerSecond: Int
    public var tokenBucketBytesBurst: Int

    public init(version: Int = DERPWire.protocolVersion, tokenBucketBytesPerSecond: Int = 0, tokenBucketBytesBurst: Int = 0) {
        self.version = version
        self.tokenBucketBytesPerSecond = tokenBucketBytesPerSecond
        self.tokenBucketBytesBurst = tokenBucketBytesBurst
    }

    enum CodingKeys: String, CodingKey {
        case version, tokenBucketBytesPerSecond = "TokenBucketBytesPerSecond", tokenBucketBytesBurst = "TokenBucketBytesBurst"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        version = try c.decodeIfPresent(Int.self, forKey: .version) ?? 0
        tokenBucketBytesPerSecond = try c.decodeIfPresent(Int.self, forKey: .tokenBucketBytesPerSecond) ?? 0
        tokenBucketBytesBurst = try c.decodeIfPresent(Int.self, forKey: .tokenBucketBytesBurst) ?? 0
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        if version != 0 { try c.encode(version, forKey: .version) }
        if tokenBucketBytesPerSecond != 0 { try c.encode(tokenBucketBytesPerSecond, forKey: .tokenBucketBytesPerSecond) }
        if tokenBucketBytesBurst != 0 { try c.encode(tokenBucketBytesBurst, forKey: .tokenBucketBytesBurst) }
    }
}

enum DERPJSON {
    static func encode<T: Encodable>(_ value: T) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array(try encoder.encode(value))
    }

    static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> T {
        do { return try JSONDecoder().decode(type, from: Data(bytes)) } catch {
            throw DERPProtocolError(.invalidInfoJSON)
        }
    }
}

/// The server's side of the login.
///
/// ```
/// awaitingClientInfo --ClientInfo--> established(client key, info)   [action: send ServerInfo]
/// ```
public struct DERPServerHandshake: Sendable {
    public enum State: Equatable, Sendable {
        case awaitingClientInfo
        case established(client: NodePublic, info: DERPClientInfo)
    }

    public private(set) var state: State = .awaitingClientInfo
    public let serverKey: NodePublic

    public init(serverKey: NodePublic) { self.serverKey = serverKey }

    /// The first bytes to write after the HTTP 101 (or immediately, for a fast-start client).
    public var serverKeyFrame: [UInt8] {
        // A ServerKey frame always encodes.
        (try? DERPFrame.serverKey(serverKey).encoded()) ?? []
    }

    /// Handles the client's first frame. Returns the ServerInfo frame to write; afterwards ``state``
    /// holds the client's key and info (the caller then decides admission, for example by mesh key).
    public mutating func receive(_ frame: DERPFrame, sealer: some DERPInfoSealer,
                                 serverInfo: DERPServerInfo = DERPServerInfo()) throws -> [UInt8] {
        guard case .awaitingClientInfo = state else { throw DERPProtocolError(.unexpectedFrame(frame.type)) }
        guard case .clientInfo(let clientKey, let sealed) = frame else {
            throw DERPProtocolError(.unexpectedFrame(frame.type))
        }
        let json: [UInt8]
        do { json = try sealer.open(sealed, from: clientKey) } catch { throw DERPProtocolError(.boxOpenFailed) }
        let info = try DERPJSON.decode(DERPClientInfo.self, from: json)
        let reply = try DERPFrame.serverInfo(sealedInfo: sealer.seal(try DERPJSON.encode(serverInfo), to: clientKey)).encoded()
        state = .established(client: clientKey, info: info)
        return reply
    }
}

/// The client's side of the login.
///
/// ```
/// awaitingServerKey --ServerKey--> awaitingServerInfo --ServerInfo--> established
///        (or start in awaitingServerInfo when the key is known: fast start)
/// ```
public struct DERPClientHandshake: Sendable {
    public enum State: Equatable, Sendable {
        case awaitingServerKey
        case awaitingServerInfo(server: NodePublic)
        case established(server: NodePublic, info: DERPServerInfo)
    }

    public private(set) var state: State
    public let clientKey: NodePublic
    public var clientInfo: DERPClientInfo

    public init(clientKey: NodePublic, clientInfo: DERPClientInfo = DERPClientInfo()) {
        self.clientKey = clientKey
        self.clientInfo = clientInfo
        state = .awaitingServerKey
    }

    /// Fast start: the server key is already known (from the TLS meta certificate), so the ClientInfo
    /// frame can be sent at once. Returns that frame.
    public mutating func startKnowingServerKey(_ server: NodePublic, sealer: some DERPInfoSealer) throws -> [UInt8] {
        guard case .awaitingServerKey = state else { throw DERPProtocolError(.unexpectedFrame(DERPFrameType.serverKey.rawValue)) }
        let frame = try clientInfoFrame(to: server, sealer: sealer)
        state = .awaitingServerInfo(server: server)
        return frame
    }

    /// Handles a frame from the server. Returns bytes to write (the ClientInfo frame after ServerKey),
    /// or an empty array.
    public mutating func receive(_ frame: DERPFrame, sealer: some DERPInfoSealer) throws -> [UInt8] {
        switch (state, frame) {
        case (.awaitingServerKey, .serverKey(let server, _)):
            let reply = try clientInfoFrame(to: server, sealer: sealer)
            state = .awaitingServerInfo(server: server)
            return reply
        case (.awaitingServerInfo(let server), .serverInfo(let sealed)):
            let json: [UInt8]
            do { json = try sealer.open(sealed, from: server) } catch { throw DERPProtocolError(.boxOpenFailed) }
            state = .established(server: server, info: try DERPJSON.decode(DERPServerInfo.self, from: json))
            return []
        default:
            throw DERPProtocolError(.unexpectedFrame(frame.type))
        }
    }

    private func clientInfoFrame(to server: NodePublic, sealer: some DERPInfoSealer) throws -> [UInt8] {
        try DERPFrame.clientInfo(clientKey: clientKey, sealedInfo: sealer.seal(try DERPJSON.encode(clientInfo), to: server)).encoded()
    }
}
