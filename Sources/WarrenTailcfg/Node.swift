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
