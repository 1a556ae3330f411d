import Foundation
import WarrenPacket

// The LocalAPI's JSON bodies. Field names are Tailscale's (ipn/ipnstate, apitype, net/netcheck) so that tools which
// read `tailscale status --json` read `warren status --json` too. Decoding is lenient: a missing or null field takes
// its zero value, as Go's encoding/json does.

/// The backend's state, as `BackendState` text. Unknown text decodes as `.noState`.
public enum BackendState: String, Codable, Sendable, CaseIterable {
    case noState = "NoState"
    case needsLogin = "NeedsLogin"
    case needsMachineAuth = "NeedsMachineAuth"
    case stopped = "Stopped"
    case starting = "Starting"
    case running = "Running"

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        self = BackendState(rawValue: text) ?? .noState
    }
}

/// One node (self or a peer) in the status: ipnstate.PeerStatus.
public struct PeerStatus: Codable, Sendable, Equatable {
    /// The node's stable ID (tailcfg.StableNodeID).
    public var id: String
    /// The node key, "nodekey:<64 hex>".
    public var publicKey: String
    /// The host name the node reported (not a DNS name).
    public var hostName: String
    /// MagicDNS name with the trailing dot ("host.tailnet.ts.net."), or "".
    public var dnsName: String
    public var os: String
    public var userID: Int64
    public var tailscaleIPs: [String]
    /// The prefixes routed to this peer (its addresses and approved routes); nil for self.
    public var allowedIPs: [String]?
    public var primaryRoutes: [String]?
    public var tags: [String]?
    /// Candidate UDP endpoints ("ip:port").
    public var addrs: [String]
    /// The direct UDP path in use ("ip:port"), or "" when there is none (traffic goes over DERP).
    public var curAddr: String
    /// The DERP region code of the peer's home relay (or ours, for self).
    public var relay: String
    /// A peer relay in use ("ip:port:vni:N"), or "".
    public var peerRelay: String
    public var rxBytes: Int64
    public var txBytes: Int64
    public var created: Date
    public var lastWrite: Date
    public var lastSeen: Date
    public var lastHandshake: Date
    public var online: Bool
    public var exitNode: Bool
    public var exitNodeOption: Bool
    /// Traffic was sent to or received from this peer recently.
    public var active: Bool
    public var inNetworkMap: Bool
    public var inMagicSock: Bool
    public var inEngine: Bool
    public var expired: Bool
    public var keyExpiry: Date?

    public init(
        id: String = "", publicKey: String = "", hostName: String = "", dnsName: String = "", os: String = "",
        userID: Int64 = 0, tailscaleIPs: [String] = [], allowedIPs: [String]? = nil, primaryRoutes: [String]? = nil,
        tags: [String]? = nil, addrs: [String] = [], curAddr: String = "", relay: String = "", peerRelay: String = "",
        rxBytes: Int64 = 0, txBytes: Int64 = 0, created: Date = .goZero, lastWrite: Date = .goZero,
        lastSeen: Date = .goZero, lastHandshake: Date = .goZero, online: Bool = false, exitNode: Bool = false,
        exitNodeOption: Bool = false, active: Bool = false, inNetworkMap: Bool = false, inMagicSock: Bool = false,
        inEngine: Bool = false, expired: Bool = false, keyExpiry: Date? = nil
    ) {
        self.id = id; self.publicKey = publicKey; self.hostName = hostName; self.dnsName = dnsName; self.os = os
        self.userID = userID; self.tailscaleIPs = tailscaleIPs; self.allowedIPs = allowedIPs
        self.primaryRoutes = primaryRoutes; self.tags = tags; self.addrs = addrs; self.curAddr = curAddr
        self.relay = relay; self.peerRelay = peerRelay; self.rxBytes = rxBytes; self.txBytes = txBytes
        self.created = created; self.lastWrite = lastWrite; self.lastSeen = lastSeen; self.lastHandshake = lastHandshake
        self.online = online; self.exitNode = exitNode; self.exitNodeOption = exitNodeOption; self.active = active
        self.inNetworkMap = inNetworkMap; self.inMagicSock = inMagicSock; self.inEngine = inEngine
        self.expired = expired; self.keyExpiry = keyExpiry
    }

    enum CodingKeys: String, CodingKey {
        case id = "ID", publicKey = "PublicKey", hostName = "HostName", dnsName = "DNSName", os = "OS"
        case userID = "UserID", tailscaleIPs = "TailscaleIPs", allowedIPs = "AllowedIPs"
        case primaryRoutes = "PrimaryRoutes", tags = "Tags", addrs = "Addrs", curAddr = "CurAddr", relay = "Relay"
        case peerRelay = "PeerRelay", rxBytes = "RxBytes", txBytes = "TxBytes", created = "Created"
        case lastWrite = "LastWrite", lastSeen = "LastSeen", lastHandshake = "LastHandshake", online = "Online"
        case exitNode = "ExitNode", exitNodeOption = "ExitNodeOption", active = "Active"
        case inNetworkMap = "InNetworkMap", inMagicSock = "InMagicSock", inEngine = "InEngine"
        case expired = "Expired", keyExpiry = "KeyExpiry"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            id: try c.value(.id, or: ""), publicKey: try c.value(.publicKey, or: ""),
            hostName: try c.value(.hostName, or: ""), dnsName: try c.value(.dnsName, or: ""), os: try c.value(.os, or: ""),
            userID: try c.value(.userID, or: 0), tailscaleIPs: try c.value(.tailscaleIPs, or: []),
            allowedIPs: try c.decodeIfPresent([String].self, forKey: .allowedIPs),
            primaryRoutes: try c.decodeIfPresent([String].self, forKey: .primaryRoutes),
            tags: try c.decodeIfPresent([String].self, forKey: .tags), addrs: try c.value(.addrs, or: []),
            curAddr: try c.value(.curAddr, or: ""), relay: try c.value(.relay, or: ""),
            peerRelay: try c.value(.peerRelay, or: ""), rxBytes: try c.value(.rxBytes, or: 0),
            txBytes: try c.value(.txBytes, or: 0), created: try c.value(.created, or: .goZero),
            lastWrite: try c.value(.lastWrite, or: .goZero), lastSeen: try c.value(.lastSeen, or: .goZero),
            lastHandshake: try c.value(.lastHandshake, or: .goZero), online: try c.value(.online, or: false),
            exitNode: try c.value(.exitNode, or: false), exitNodeOption: try c.value(.exitNodeOption, or: false),
            active: try c.value(.active, or: false), inNetworkMap: try c.value(.inNetworkMap, or: false),
            inMagicSock: try c.value(.inMagicSock, or: false), inEngine: try c.value(.inEngine, or: false),
            expired: try c.value(.expired, or: false), keyExpiry: try c.decodeIfPresent(Date.self, forKey: .keyExpiry))
    }

    /// Written like Go: the always-present fields, then the `omitempty` ones only when set.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(publicKey, forKey: .publicKey)
        try c.encode(hostName, forKey: .hostName)
        try c.encode(dnsName, forKey: .dnsName)
        try c.encode(os, forKey: .os)
        try c.encode(userID, forKey: .userID)
        try c.encode(tailscaleIPs, forKey: .tailscaleIPs)
        try c.encodeIfPresent(allowedIPs, forKey: .allowedIPs)
        try c.encodeIfPresent(primaryRoutes, forKey: .primaryRoutes)
        try c.encodeIfPresent(tags, forKey: .tags)
        try c.encode(addrs, forKey: .addrs)
        try c.encode(curAddr, forKey: .curAddr)
        try c.encode(relay, forKey: .relay)
        if !peerRelay.isEmpty { try c.encode(peerRelay, forKey: .peerRelay) }
        try c.encode(rxBytes, forKey: .rxBytes)
        try c.encode(txBytes, forKey: .txBytes)
        try c.encode(created, forKey: .created)
        try c.encode(lastWrite, forKey: .lastWrite)
        try c.encode(lastSeen, forKey: .lastSeen)
        try c.encode(lastHandshake, forKey: .lastHandshake)
        try c.encode(online, forKey: .online)
        try c.encode(exitNode, forKey: .exitNode)
        try c.encode(exitNodeOption, forKey: .exitNodeOption)
        try c.encode(active, forKey: .active)
        try c.encode(inNetworkMap, forKey: .inNetworkMap)
        try c.encode(inMagicSock, forKey: .inMagicSock)
        try c.encode(inEngine, forKey: .inEngine)
        if expired { try c.encode(expired, forKey: .expired) }
        try c.encodeIfPresent(keyExpiry, forKey: .keyExpiry)
    }

    /// The first label of the DNS name, else the host name: what `status` prints.
    public var shortName: String {
        let first = dnsName.split(separator: ".", maxSplits: 1).first.map(String.init) ?? ""
        return first.isEmpty ? hostName : first
    }
}

/// A user's profile: tailcfg.UserProfile.
public struct UserProfile: Codable, Sendable, Equatable {
    public var id: Int64
    public var loginName: String
    public var displayName: String
    public var profilePicURL: String

    public init(id: Int64, loginName: String, displayName: String = "", profilePicURL: String = "") {
        self.id = id; self.loginName = loginName; self.displayName = displayName; self.profilePicURL = profilePicURL
    }

    enum CodingKeys: String, CodingKey {
        case id = "ID", loginName = "LoginName", displayName = "DisplayName", profilePicURL = "ProfilePicURL"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(id: try c.value(.id, or: 0), loginName: try c.value(.loginName, or: ""),
                  displayName: try c.value(.displayName, or: ""), profilePicURL: try c.value(.profilePicURL, or: ""))
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(loginName, forKey: .loginName)
        try c.encode(displayName, forKey: .displayName)
        if !profilePicURL.isEmpty { try c.encode(profilePicURL, forKey: .profilePicURL) }
    }
}

/// ipnstate.TailnetStatus.
public struct TailnetStatus: Codable, Sendable, Equatable {
    public var name: String
    public var magicDNSSuffix: String
    public var magicDNSEnabled: Bool

    public init(name: String, magicDNSSuffix: String, magicDNSEnabled: Bool = true) {
        self.name = name; self.magicDNSSuffix = magicDNSSuffix; self.magicDNSEnabled = magicDNSEnabled
    }

    enum CodingKeys: String, CodingKey {
        case name = "Name", magicDNSSuffix = "MagicDNSSuffix", magicDNSEnabled = "MagicDNSEnabled"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(name: try c.value(.name, or: ""), magicDNSSuffix: try c.value(.magicDNSSuffix, or: ""),
                  magicDNSEnabled: try c.value(.magicDNSEnabled, or: false))
    }
}

/// The whole state: ipnstate.Status, the body of GET /localapi/v0/status.
public struct IPNStatus: Codable, Sendable, Equatable {
    public var version: String
    /// Whether the node uses a TUN device (false for userspace networking).
    public var tun: Bool
    public var backendState: BackendState
    public var haveNodeKey: Bool
    /// The URL to visit to log in, when the state is NeedsLogin and control gave one.
    public var authURL: String
    public var tailscaleIPs: [String]
    /// This node; nil before the first network map.
    public var selfStatus: PeerStatus?
    public var health: [String]
    public var magicDNSSuffix: String
    public var currentTailnet: TailnetStatus?
    /// Peers by node key text ("nodekey:<hex>").
    public var peer: [String: PeerStatus]
    /// Users by decimal user ID.
    public var user: [String: UserProfile]
    /// The exit node in use, when there is one.
    public var exitNodeStatus: ExitNodeStatus?

    public init(
        version: String = "", tun: Bool = true, backendState: BackendState = .noState, haveNodeKey: Bool = false,
        authURL: String = "", tailscaleIPs: [String] = [], selfStatus: PeerStatus? = nil, health: [String] = [],
        magicDNSSuffix: String = "", currentTailnet: TailnetStatus? = nil, peer: [String: PeerStatus] = [:],
        user: [String: UserProfile] = [:], exitNodeStatus: ExitNodeStatus? = nil
    ) {
        self.version = version; self.tun = tun; self.backendState = backendState; self.haveNodeKey = haveNodeKey
        self.authURL = authURL; self.tailscaleIPs = tailscaleIPs; self.selfStatus = selfStatus; self.health = health
        self.magicDNSSuffix = magicDNSSuffix; self.currentTailnet = currentTailnet; self.peer = peer; self.user = user
        self.exitNodeStatus = exitNodeStatus
    }

    enum CodingKeys: String, CodingKey {
        case version = "Version", tun = "TUN", backendState = "BackendState", haveNodeKey = "HaveNodeKey"
        case authURL = "AuthURL", tailscaleIPs = "TailscaleIPs", selfStatus = "Self", health = "Health"
        case magicDNSSuffix = "MagicDNSSuffix", currentTailnet = "CurrentTailnet", peer = "Peer", user = "User"
        case exitNodeStatus = "ExitNodeStatus"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            version: try c.value(.version, or: ""), tun: try c.value(.tun, or: false),
            backendState: try c.value(.backendState, or: .noState), haveNodeKey: try c.value(.haveNodeKey, or: false),
            authURL: try c.value(.authURL, or: ""), tailscaleIPs: try c.value(.tailscaleIPs, or: []),
            selfStatus: try c.decodeIfPresent(PeerStatus.self, forKey: .selfStatus), health: try c.value(.health, or: []),
            magicDNSSuffix: try c.value(.magicDNSSuffix, or: ""),
            currentTailnet: try c.decodeIfPresent(TailnetStatus.self, forKey: .currentTailnet),
            peer: try c.value(.peer, or: [:]), user: try c.value(.user, or: [:]),
            exitNodeStatus: try c.decodeIfPresent(ExitNodeStatus.self, forKey: .exitNodeStatus))
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(version, forKey: .version)
        try c.encode(tun, forKey: .tun)
        try c.encode(backendState, forKey: .backendState)
        if haveNodeKey { try c.encode(haveNodeKey, forKey: .haveNodeKey) }
        try c.encode(authURL, forKey: .authURL)
        try c.encode(tailscaleIPs, forKey: .tailscaleIPs)
        if let selfStatus { try c.encode(selfStatus, forKey: .selfStatus) } else { try c.encodeNil(forKey: .selfStatus) }
        try c.encode(health, forKey: .health)
        try c.encode(magicDNSSuffix, forKey: .magicDNSSuffix)
        if let currentTailnet { try c.encode(currentTailnet, forKey: .currentTailnet) } else { try c.encodeNil(forKey: .currentTailnet) }
        try c.encode(peer, forKey: .peer)
        try c.encode(user, forKey: .user)
        if let exitNodeStatus { try c.encode(exitNodeStatus, forKey: .exitNodeStatus) }
    }

    /// Peers in a stable order: by first Tailscale IP (numerically), then by key.
    public var sortedPeers: [PeerStatus] {
        peer.values.sorted { a, b in
            let ia = a.tailscaleIPs.first.flatMap { IPAddress($0) }, ib = b.tailscaleIPs.first.flatMap { IPAddress($0) }
            switch (ia, ib) {
            case let (x?, y?) where x != y: return x < y
            case (.some, .none): return true
            case (.none, .some): return false
            default: return a.publicKey < b.publicKey
            }
        }
    }
}

/// The exit node in use (ipnstate.ExitNodeStatus).
public struct ExitNodeStatus: Codable, Sendable, Equatable {
    /// Its stable node ID.
    public var id: String
    public var online: Bool
    /// Its Tailscale addresses as prefixes ("100.64.0.1/32").
    public var tailscaleIPs: [String]

    public init(id: String, online: Bool, tailscaleIPs: [String]) {
        self.id = id
        self.online = online
        self.tailscaleIPs = tailscaleIPs
    }

    enum CodingKeys: String, CodingKey {
        case id = "ID", online = "Online", tailscaleIPs = "TailscaleIPs"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(id: try c.value(.id, or: ""), online: try c.value(.online, or: false), tailscaleIPs: try c.value(.tailscaleIPs, or: []))
    }
}
