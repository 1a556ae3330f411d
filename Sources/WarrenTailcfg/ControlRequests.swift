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

// Go's encoding/json leaves out omitempty fields and accepts missing ones as zero values; these decoders
// do the same (the synthesized ones would require every non-optional key).

extension RegisterRequest {
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        version = try c.decodeIfPresent(CapabilityVersion.self, forKey: .version) ?? 0
        nodeKey = try c.decodeIfPresent(NodePublic.self, forKey: .nodeKey) ?? NodePublic(raw: .zero)
        oldNodeKey = try c.decodeIfPresent(NodePublic.self, forKey: .oldNodeKey) ?? NodePublic(raw: .zero)
        nlKey = try c.decodeIfPresent(String.self, forKey: .nlKey)
        auth = try c.decodeIfPresent(RegisterResponseAuth.self, forKey: .auth)
        expiry = try c.decodeIfPresent(TailcfgTime.self, forKey: .expiry) ?? .goZero
        followup = try c.decodeIfPresent(String.self, forKey: .followup) ?? ""
        hostinfo = try c.decodeIfPresent(Hostinfo.self, forKey: .hostinfo)
        ephemeral = try c.decodeIfPresent(Bool.self, forKey: .ephemeral)
        nodeKeySignature = try c.decodeIfPresent(Data.self, forKey: .nodeKeySignature)
        signatureType = try c.decodeIfPresent(String.self, forKey: .signatureType)
        timestamp = try c.decodeIfPresent(TailcfgTime.self, forKey: .timestamp)
        deviceCert = try c.decodeIfPresent(Data.self, forKey: .deviceCert)
        signature = try c.decodeIfPresent(Data.self, forKey: .signature)
        tailnet = try c.decodeIfPresent(String.self, forKey: .tailnet)
    }
}

extension RegisterResponse {
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        user = try c.decodeIfPresent(User.self, forKey: .user) ?? User()
        login = try c.decodeIfPresent(Login.self, forKey: .login) ?? Login()
        nodeKeyExpired = try c.decodeIfPresent(Bool.self, forKey: .nodeKeyExpired) ?? false
        machineAuthorized = try c.decodeIfPresent(Bool.self, forKey: .machineAuthorized) ?? false
        authURL = try c.decodeIfPresent(String.self, forKey: .authURL) ?? ""
        nodeKeySignature = try c.decodeIfPresent(Data.self, forKey: .nodeKeySignature)
        error = try c.decodeIfPresent(String.self, forKey: .error) ?? ""
    }
}

extension RegisterResponseAuth {
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        authKey = try c.decodeIfPresent(String.self, forKey: .authKey)
        oauth2Token = try c.decodeIfPresent(JSONValue.self, forKey: .oauth2Token)
    }
}

extension MapRequest {
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        version = try c.decodeIfPresent(CapabilityVersion.self, forKey: .version) ?? 0
        compress = try c.decodeIfPresent(String.self, forKey: .compress)
        keepAlive = try c.decodeIfPresent(Bool.self, forKey: .keepAlive)
        nodeKey = try c.decodeIfPresent(NodePublic.self, forKey: .nodeKey) ?? NodePublic(raw: .zero)
        discoKey = try c.decodeIfPresent(DiscoPublic.self, forKey: .discoKey) ?? DiscoPublic(raw: .zero)
        stream = try c.decodeIfPresent(Bool.self, forKey: .stream)
        hostinfo = try c.decodeIfPresent(Hostinfo.self, forKey: .hostinfo)
        mapSessionHandle = try c.decodeIfPresent(String.self, forKey: .mapSessionHandle)
        mapSessionSeq = try c.decodeIfPresent(Int64.self, forKey: .mapSessionSeq)
        endpoints = try c.decodeIfPresent([AddrPort].self, forKey: .endpoints)
        endpointTypes = try c.decodeIfPresent([Int].self, forKey: .endpointTypes)
        tkaHead = try c.decodeIfPresent(String.self, forKey: .tkaHead)
        readOnly = try c.decodeIfPresent(Bool.self, forKey: .readOnly)
        omitPeers = try c.decodeIfPresent(Bool.self, forKey: .omitPeers)
        debugFlags = try c.decodeIfPresent([String].self, forKey: .debugFlags)
    }
}
