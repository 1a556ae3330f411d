// The requests a client sends to control (over ts2021's HTTP/2) and the replies that are not the map.

import Foundation
import TailscaleKeys
import WarrenPacket

/// GET /key?v=<capver> (plain HTTPS, not Noise): the server's keys.
public struct OverTLSPublicKeyResponse: Codable, Hashable, Sendable {
    /// The old NaCl-era key; zero for new clients.
    public var legacyPublicKey: MachinePublic
    /// The Noise static key for ts2021.
    public var publicKey: MachinePublic

    public init(legacyPublicKey: MachinePublic = MachinePublic(raw: .zero), publicKey: MachinePublic) {
        self.legacyPublicKey = legacyPublicKey
        self.publicKey = publicKey
    }
}

/// The early payload JSON (see TailscaleControlProtocol's ControlEarlyPayload).
public struct EarlyNoise: Codable, Hashable, Sendable {
    public var nodeKeyChallenge: ChallengePublic

    public init(nodeKeyChallenge: ChallengePublic) { self.nodeKeyChallenge = nodeKeyChallenge }
}

public struct RegisterResponseAuth: Codable, Hashable, Sendable {
    public var authKey: String?
    /// Old Android clients only; kept raw.
    public var oauth2Token: JSONValue?

    public init(authKey: String? = nil) { self.authKey = authKey }

    enum CodingKeys: String, CodingKey { case authKey = "AuthKey", oauth2Token = "Oauth2Token" }
}

/// POST /machine/register.
public struct RegisterRequest: Codable, Hashable, Sendable {
    public var version: CapabilityVersion = 0
    public var nodeKey: NodePublic = NodePublic(raw: .zero)
    /// The key being rotated away from; zero if none.
    public var oldNodeKey: NodePublic = NodePublic(raw: .zero)
    /// Tailnet-lock key ("nlpub:..."), kept as text.
    public var nlKey: String?
    public var auth: RegisterResponseAuth?
    /// A time in the past (clients use 1970-01-01T00:02:03Z) means log out.
    public var expiry: TailcfgTime = .goZero
    /// The AuthURL to wait on (a long poll until the browser flow completes).
    public var followup: String = ""
    public var hostinfo: Hostinfo?
    public var ephemeral: Bool?
    public var nodeKeySignature: Data?
    public var signatureType: String?
    public var timestamp: TailcfgTime?
    public var deviceCert: Data?
    public var signature: Data?
    public var tailnet: String?

    public init() {}

    enum CodingKeys: String, CodingKey {
        case version = "Version", nodeKey = "NodeKey", oldNodeKey = "OldNodeKey", nlKey = "NLKey", auth = "Auth"
        case expiry = "Expiry", followup = "Followup", hostinfo = "Hostinfo", ephemeral = "Ephemeral"
        case nodeKeySignature = "NodeKeySignature", signatureType = "SignatureType", timestamp = "Timestamp"
        case deviceCert = "DeviceCert", signature = "Signature", tailnet = "Tailnet"
    }
}

public struct RegisterResponse: Codable, Hashable, Sendable {
    public var user: User = User()
    public var login: Login = Login()
    /// The node key must be replaced.
    public var nodeKeyExpired: Bool = false
    public var machineAuthorized: Bool = false
    /// If set, the user must visit it; the client re-registers with Followup set to it.
    public var authURL: String = ""
    public var nodeKeySignature: Data?
    public var error: String = ""

    public init() {}

    enum CodingKeys: String, CodingKey {
        case user = "User", login = "Login", nodeKeyExpired = "NodeKeyExpired", machineAuthorized = "MachineAuthorized"
        case authURL = "AuthURL", nodeKeySignature = "NodeKeySignature", error = "Error"
    }
}

/// How the client learnt an endpoint (MapRequest.EndpointTypes).
public enum EndpointType: Int, Codable, Hashable, Sendable {
    case unknown = 0, local = 1, stun = 2, portMapped = 3, stun4LocalPort = 4, explicitConfiguration = 5
}

/// POST /machine/map.
public struct MapRequest: Codable, Hashable, Sendable {
    public var version: CapabilityVersion = 0
    /// "zstd" or absent.
    public var compress: String?
    public var keepAlive: Bool?
    public var nodeKey: NodePublic = NodePublic(raw: .zero)
    public var discoKey: DiscoPublic = DiscoPublic(raw: .zero)
    /// Long poll: keep the response open and stream updates.
    public var stream: Bool?
    public var hostinfo: Hostinfo?
    public var mapSessionHandle: String?
    public var mapSessionSeq: Int64?
    public var endpoints: [AddrPort]?
    /// Parallel to ``endpoints``.
    public var endpointTypes: [Int]?
    public var tkaHead: String?
    public var readOnly: Bool?
    /// With Stream false: a "lite" update of endpoints/hostinfo; reply with an empty body.
    public var omitPeers: Bool?
    public var debugFlags: [String]?

    public init() {}

    enum CodingKeys: String, CodingKey {
        case version = "Version", compress = "Compress", keepAlive = "KeepAlive", nodeKey = "NodeKey"
        case discoKey = "DiscoKey", stream = "Stream", hostinfo = "Hostinfo", mapSessionHandle = "MapSessionHandle"
        case mapSessionSeq = "MapSessionSeq", endpoints = "Endpoints", endpointTypes = "EndpointTypes"
        case tkaHead = "TKAHead", readOnly = "ReadOnly", omitPeers = "OmitPeers", debugFlags = "DebugFlags"
    }
}
