// tailcfg.Node (a device in the tailnet, as the map sends it) and tailcfg.PeerChange (a light patch).

import Foundation
import TailscaleKeys
import WarrenPacket

/// Node attribute / capability name to its values (tailcfg.NodeCapMap). A nil list is JSON null.
public typealias NodeCapMap = [String: [JSONValue]?]

public struct Node: Codable, Hashable, Sendable {
    /// Positive; keep below 2^53 for JavaScript clients.
    public var id: Int64 = 0
    public var stableID: String = ""
    /// The MagicDNS FQDN with a trailing dot, such as "host.tailnet.ts.net.".
    public var name: String = ""
    public var user: Int64 = 0
    /// If set, the user who shared this node into the tailnet.
    public var sharer: Int64?
    public var key: NodePublic = NodePublic(raw: .zero)
    /// Nil: the key does not expire.
    public var keyExpiry: TailcfgTime?
    public var keySignature: Data?
    public var machine: MachinePublic?
    public var discoKey: DiscoPublic?
    /// The node's own Tailscale addresses (a /32 and a /128).
    public var addresses: [IPPrefix]?
    /// Routes to this node; nil means the same as ``addresses`` (capability version 112+).
    public var allowedIPs: [IPPrefix]?
    public var endpoints: [AddrPort]?
    /// Legacy home DERP as "127.3.3.40:<region>"; send alongside ``homeDERP`` for older clients.
    public var legacyDERP: String?
    public var homeDERP: Int?
    public var hostinfo: Hostinfo?
    public var created: TailcfgTime?
    /// The node's capability version, if known.
    public var cap: CapabilityVersion?
    public var tags: [String]?
    public var primaryRoutes: [IPPrefix]?
    public var lastSeen: TailcfgTime?
    public var online: Bool?
    public var machineAuthorized: Bool?
    /// Deprecated in favour of ``capMap``.
    public var capabilities: [String]?
    public var capMap: NodeCapMap?
    public var unsignedPeerAPIOnly: Bool?
    public var computedName: String?
    public var computedNameWithHost: String?
    public var dataPlaneAuditLogID: String?
    public var expired: Bool?
    public var selfNodeV4MasqAddrForThisPeer: IPAddress?
    public var selfNodeV6MasqAddrForThisPeer: IPAddress?
    public var isWireGuardOnly: Bool?
    public var isJailed: Bool?
    public var exitNodeDNSResolvers: [DNSResolver]?

    public init() {}

    enum CodingKeys: String, CodingKey {
        case id = "ID", stableID = "StableID", name = "Name", user = "User", sharer = "Sharer", key = "Key"
        case keyExpiry = "KeyExpiry", keySignature = "KeySignature", machine = "Machine", discoKey = "DiscoKey"
        case addresses = "Addresses", allowedIPs = "AllowedIPs", endpoints = "Endpoints", legacyDERP = "DERP"
        case homeDERP = "HomeDERP", hostinfo = "Hostinfo", created = "Created", cap = "Cap", tags = "Tags"
        case primaryRoutes = "PrimaryRoutes", lastSeen = "LastSeen", online = "Online"
        case machineAuthorized = "MachineAuthorized", capabilities = "Capabilities", capMap = "CapMap"
        case unsignedPeerAPIOnly = "UnsignedPeerAPIOnly", computedName = "ComputedName"
        case computedNameWithHost = "ComputedNameWithHost", dataPlaneAuditLogID = "DataPlaneAuditLogID"
        case expired = "Expired", selfNodeV4MasqAddrForThisPeer = "SelfNodeV4MasqAddrForThisPeer"
        case selfNodeV6MasqAddrForThisPeer = "SelfNodeV6MasqAddrForThisPeer", isWireGuardOnly = "IsWireGuardOnly"
        case isJailed = "IsJailed", exitNodeDNSResolvers = "ExitNodeDNSResolvers"
    }
}

/// A light update to one peer (MapResponse.PeersChangedPatch). Nil fields are unchanged.
public struct PeerChange: Codable, Hashable, Sendable {
    public var nodeID: Int64
    public var derpRegion: Int?
    public var cap: CapabilityVersion?
    public var capMap: NodeCapMap?
    public var endpoints: [AddrPort]?
    public var key: NodePublic?
    public var keySignature: Data?
    public var discoKey: DiscoPublic?
    public var online: Bool?
    public var lastSeen: TailcfgTime?
    public var keyExpiry: TailcfgTime?

    public init(nodeID: Int64) { self.nodeID = nodeID }

    enum CodingKeys: String, CodingKey {
        case nodeID = "NodeID", derpRegion = "DERPRegion", cap = "Cap", capMap = "CapMap", endpoints = "Endpoints"
        case key = "Key", keySignature = "KeySignature", discoKey = "DiscoKey", online = "Online"
        case lastSeen = "LastSeen", keyExpiry = "KeyExpiry"
    }
}

/// Display data for a user (tailcfg.UserProfile).
public struct UserProfile: Codable, Hashable, Sendable {
    public var id: Int64
    public var loginName: String
    public var displayName: String
    public var profilePicURL: String?
    public var groups: [String]?

    public init(id: Int64, loginName: String, displayName: String, profilePicURL: String? = nil) {
        self.id = id
        self.loginName = loginName
        self.displayName = displayName
        self.profilePicURL = profilePicURL
    }

    enum CodingKeys: String, CodingKey {
        case id = "ID", loginName = "LoginName", displayName = "DisplayName", profilePicURL = "ProfilePicURL", groups = "Groups"
    }
}

/// tailcfg.User.
public struct User: Codable, Hashable, Sendable {
    public var id: Int64 = 0
    public var displayName: String = ""
    public var profilePicURL: String?
    public var created: TailcfgTime?

    public init() {}

    enum CodingKeys: String, CodingKey {
        case id = "ID", displayName = "DisplayName", profilePicURL = "ProfilePicURL", created = "Created"
    }
}

/// tailcfg.Login: a user at one identity provider.
public struct Login: Codable, Hashable, Sendable {
    public var id: Int64 = 0
    public var provider: String = ""
    public var loginName: String = ""
    public var displayName: String = ""
    public var profilePicURL: String?

    public init() {}

    enum CodingKeys: String, CodingKey {
        case id = "ID", provider = "Provider", loginName = "LoginName", displayName = "DisplayName"
        case profilePicURL = "ProfilePicURL"
    }
}

// Lenient decoders, as Go's encoding/json: absent fields are zero values.

extension Node {
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decodeIfPresent(Int64.self, forKey: .id) ?? 0
        stableID = try c.decodeIfPresent(String.self, forKey: .stableID) ?? ""
        name = try c.decodeIfPresent(String.self, forKey: .name) ?? ""
        user = try c.decodeIfPresent(Int64.self, forKey: .user) ?? 0
        sharer = try c.decodeIfPresent(Int64.self, forKey: .sharer)
        key = try c.decodeIfPresent(NodePublic.self, forKey: .key) ?? NodePublic(raw: .zero)
        keyExpiry = try c.decodeIfPresent(TailcfgTime.self, forKey: .keyExpiry)
        keySignature = try c.decodeIfPresent(Data.self, forKey: .keySignature)
        machine = try c.decodeIfPresent(MachinePublic.self, forKey: .machine)
        discoKey = try c.decodeIfPresent(DiscoPublic.self, forKey: .discoKey)
        addresses = try c.decodeIfPresent([IPPrefix].self, forKey: .addresses)
        allowedIPs = try c.decodeIfPresent([IPPrefix].self, forKey: .allowedIPs)
        endpoints = try c.decodeIfPresent([AddrPort].self, forKey: .endpoints)
        legacyDERP = try c.decodeIfPresent(String.self, forKey: .legacyDERP)
        homeDERP = try c.decodeIfPresent(Int.self, forKey: .homeDERP)
        hostinfo = try c.decodeIfPresent(Hostinfo.self, forKey: .hostinfo)
        created = try c.decodeIfPresent(TailcfgTime.self, forKey: .created)
        cap = try c.decodeIfPresent(CapabilityVersion.self, forKey: .cap)
        tags = try c.decodeIfPresent([String].self, forKey: .tags)
        primaryRoutes = try c.decodeIfPresent([IPPrefix].self, forKey: .primaryRoutes)
        lastSeen = try c.decodeIfPresent(TailcfgTime.self, forKey: .lastSeen)
        online = try c.decodeIfPresent(Bool.self, forKey: .online)
        machineAuthorized = try c.decodeIfPresent(Bool.self, forKey: .machineAuthorized)
        capabilities = try c.decodeIfPresent([String].self, forKey: .capabilities)
        capMap = try c.decodeIfPresent(NodeCapMap.self, forKey: .capMap)
        unsignedPeerAPIOnly = try c.decodeIfPresent(Bool.self, forKey: .unsignedPeerAPIOnly)
        computedName = try c.decodeIfPresent(String.self, forKey: .computedName)
        computedNameWithHost = try c.decodeIfPresent(String.self, forKey: .computedNameWithHost)
        dataPlaneAuditLogID = try c.decodeIfPresent(String.self, forKey: .dataPlaneAuditLogID)
        expired = try c.decodeIfPresent(Bool.self, forKey: .expired)
        selfNodeV4MasqAddrForThisPeer = try c.decodeIfPresent(IPAddress.self, forKey: .selfNodeV4MasqAddrForThisPeer)
        selfNodeV6MasqAddrForThisPeer = try c.decodeIfPresent(IPAddress.self, forKey: .selfNodeV6MasqAddrForThisPeer)
        isWireGuardOnly = try c.decodeIfPresent(Bool.self, forKey: .isWireGuardOnly)
        isJailed = try c.decodeIfPresent(Bool.self, forKey: .isJailed)
        exitNodeDNSResolvers = try c.decodeIfPresent([DNSResolver].self, forKey: .exitNodeDNSResolvers)
    }
}

extension User {
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decodeIfPresent(Int64.self, forKey: .id) ?? 0
        displayName = try c.decodeIfPresent(String.self, forKey: .displayName) ?? ""
        profilePicURL = try c.decodeIfPresent(String.self, forKey: .profilePicURL)
        created = try c.decodeIfPresent(TailcfgTime.self, forKey: .created)
    }
}

extension Login {
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decodeIfPresent(Int64.self, forKey: .id) ?? 0
        provider = try c.decodeIfPresent(String.self, forKey: .provider) ?? ""
        loginName = try c.decodeIfPresent(String.self, forKey: .loginName) ?? ""
        displayName = try c.decodeIfPresent(String.self, forKey: .displayName) ?? ""
        profilePicURL = try c.decodeIfPresent(String.self, forKey: .profilePicURL)
    }
}

extension UserProfile {
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decodeIfPresent(Int64.self, forKey: .id) ?? 0
        loginName = try c.decodeIfPresent(String.self, forKey: .loginName) ?? ""
        displayName = try c.decodeIfPresent(String.self, forKey: .displayName) ?? ""
        profilePicURL = try c.decodeIfPresent(String.self, forKey: .profilePicURL)
        groups = try c.decodeIfPresent([String].self, forKey: .groups)
    }
}
