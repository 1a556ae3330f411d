import Foundation
import WarrenTailcfg

/// The body of POST /localapi/v0/up: the `up` / `login` flags.
public struct UpRequest: Codable, Sendable, Equatable {
    /// Control server URL; nil keeps the current (or default) one.
    public var loginServer: String?
    /// A pre-authorized key (already read from its file by the CLI); nil for interactive login.
    public var authKey: String?
    public var hostname: String?
    public var shieldsUp: Bool
    public var acceptRoutes: Bool
    /// Reset unspecified settings to their defaults.
    public var reset: Bool
    /// Re-authenticate even when logged in.
    public var forceReauth: Bool
    /// When false the daemon answers as soon as it has started the login; when true (the default) it waits as
    /// described in `LocalBackend.up`.
    public var wait: Bool?
    /// Subnet routes to offer (`--advertise-routes`), as prefixes in text.
    public var advertiseRoutes: [String]
    /// Offer this node as an exit node (`--advertise-exit-node`: 0.0.0.0/0 and ::/0).
    public var advertiseExitNode: Bool
    /// The exit node to use (`--exit-node`): a Tailscale IP, a node name, `auto:any`, or "" for none.
    public var exitNode: String
    public var exitNodeAllowLANAccess: Bool
    /// Masquerade traffic forwarded to advertised routes (`--snat-subnet-routes`, on by default).
    public var snatSubnetRoutes: Bool
    /// Use the tailnet's DNS settings (`--accept-dns`, on by default).
    public var acceptDNS: Bool

    public init(loginServer: String? = nil, authKey: String? = nil, hostname: String? = nil, shieldsUp: Bool = false,
                acceptRoutes: Bool = false, reset: Bool = false, forceReauth: Bool = false, wait: Bool? = nil,
                advertiseRoutes: [String] = [], advertiseExitNode: Bool = false, exitNode: String = "",
                exitNodeAllowLANAccess: Bool = false, snatSubnetRoutes: Bool = true, acceptDNS: Bool = true) {
        self.loginServer = loginServer; self.authKey = authKey; self.hostname = hostname; self.shieldsUp = shieldsUp
        self.acceptRoutes = acceptRoutes; self.reset = reset; self.forceReauth = forceReauth; self.wait = wait
        self.advertiseRoutes = advertiseRoutes; self.advertiseExitNode = advertiseExitNode; self.exitNode = exitNode
        self.exitNodeAllowLANAccess = exitNodeAllowLANAccess; self.snatSubnetRoutes = snatSubnetRoutes
        self.acceptDNS = acceptDNS
    }

    enum CodingKeys: String, CodingKey {
        case loginServer = "LoginServer", authKey = "AuthKey", hostname = "Hostname", shieldsUp = "ShieldsUp"
        case acceptRoutes = "AcceptRoutes", reset = "Reset", forceReauth = "ForceReauth", wait = "Wait"
        case advertiseRoutes = "AdvertiseRoutes", advertiseExitNode = "AdvertiseExitNode", exitNode = "ExitNode"
        case exitNodeAllowLANAccess = "ExitNodeAllowLANAccess", snatSubnetRoutes = "SNATSubnetRoutes"
        case acceptDNS = "AcceptDNS"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            loginServer: try c.decodeIfPresent(String.self, forKey: .loginServer),
            authKey: try c.decodeIfPresent(String.self, forKey: .authKey),
            hostname: try c.decodeIfPresent(String.self, forKey: .hostname),
            shieldsUp: try c.value(.shieldsUp, or: false), acceptRoutes: try c.value(.acceptRoutes, or: false),
            reset: try c.value(.reset, or: false), forceReauth: try c.value(.forceReauth, or: false),
            wait: try c.decodeIfPresent(Bool.self, forKey: .wait),
            advertiseRoutes: try c.value(.advertiseRoutes, or: []), advertiseExitNode: try c.value(.advertiseExitNode, or: false),
            exitNode: try c.value(.exitNode, or: ""), exitNodeAllowLANAccess: try c.value(.exitNodeAllowLANAccess, or: false),
            snatSubnetRoutes: try c.value(.snatSubnetRoutes, or: true), acceptDNS: try c.value(.acceptDNS, or: true))
    }
}

/// The answer to POST /localapi/v0/up.
public struct UpResponse: Codable, Sendable, Equatable {
    public var backendState: BackendState
    /// Set when the user must visit a URL to log in.
    public var authURL: String?

    public init(backendState: BackendState, authURL: String? = nil) {
        self.backendState = backendState
        self.authURL = authURL
    }

    enum CodingKeys: String, CodingKey { case backendState = "BackendState", authURL = "AuthURL" }
}

/// The kinds of ping (tailcfg.PingType).
public enum PingType: String, Codable, Sendable, CaseIterable {
    /// Disco ping through magicsock (shows the path: direct or DERP).
    case disco
    /// Tailscale message protocol ping inside WireGuard.
    case tsmp = "TSMP"
    /// ICMP echo inside WireGuard.
    case icmp = "ICMP"
    /// HTTP to the peer's PeerAPI.
    case peerAPI = "peerapi"

    /// Parses "disco", "TSMP", "ICMP", "peerapi" (case-insensitive).
    public init?(text: String) {
        guard let match = Self.allCases.first(where: { $0.rawValue.lowercased() == text.lowercased() }) else { return nil }
        self = match
    }
}

/// The result of one ping: ipnstate.PingResult. A ping that got no answer is not an HTTP error: `err` says why.
public struct PingResult: Codable, Sendable, Equatable {
    /// The IP pinged.
    public var ip: String
    /// The pinged node's Tailscale IP (same family as `ip`).
    public var nodeIP: String
    /// The pinged node's name (its first DNS label or host name).
    public var nodeName: String
    /// Why there was no pong; "" on success.
    public var err: String
    public var latencySeconds: Double
    /// The direct UDP endpoint ("ip:port") the pong came from; "" when it came over DERP.
    public var endpoint: String
    /// The peer relay ("ip:port:vni:N") the pong came through, or "".
    public var peerRelay: String
    /// The DERP region the pong came through (when `endpoint` is ""), or 0.
    public var derpRegionID: Int
    public var derpRegionCode: String
    public var peerAPIPort: UInt16
    public var peerAPIURL: String
    /// The target is one of this node's own IPs.
    public var isLocalIP: Bool

    public init(ip: String, nodeIP: String = "", nodeName: String = "", err: String = "", latencySeconds: Double = 0,
                endpoint: String = "", peerRelay: String = "", derpRegionID: Int = 0, derpRegionCode: String = "",
                peerAPIPort: UInt16 = 0, peerAPIURL: String = "", isLocalIP: Bool = false) {
        self.ip = ip; self.nodeIP = nodeIP; self.nodeName = nodeName; self.err = err
        self.latencySeconds = latencySeconds; self.endpoint = endpoint; self.peerRelay = peerRelay
        self.derpRegionID = derpRegionID; self.derpRegionCode = derpRegionCode; self.peerAPIPort = peerAPIPort
        self.peerAPIURL = peerAPIURL; self.isLocalIP = isLocalIP
    }

    enum CodingKeys: String, CodingKey {
        case ip = "IP", nodeIP = "NodeIP", nodeName = "NodeName", err = "Err", latencySeconds = "LatencySeconds"
        case endpoint = "Endpoint", peerRelay = "PeerRelay", derpRegionID = "DERPRegionID"
        case derpRegionCode = "DERPRegionCode", peerAPIPort = "PeerAPIPort", peerAPIURL = "PeerAPIURL"
        case isLocalIP = "IsLocalIP"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            ip: try c.value(.ip, or: ""), nodeIP: try c.value(.nodeIP, or: ""), nodeName: try c.value(.nodeName, or: ""),
            err: try c.value(.err, or: ""), latencySeconds: try c.value(.latencySeconds, or: 0),
            endpoint: try c.value(.endpoint, or: ""), peerRelay: try c.value(.peerRelay, or: ""),
            derpRegionID: try c.value(.derpRegionID, or: 0), derpRegionCode: try c.value(.derpRegionCode, or: ""),
            peerAPIPort: try c.value(.peerAPIPort, or: 0), peerAPIURL: try c.value(.peerAPIURL, or: ""),
            isLocalIP: try c.value(.isLocalIP, or: false))
    }

    /// Go's `omitempty`: IP always, the rest only when set.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(ip, forKey: .ip)
        if !nodeIP.isEmpty { try c.encode(nodeIP, forKey: .nodeIP) }
        if !nodeName.isEmpty { try c.encode(nodeName, forKey: .nodeName) }
        if !err.isEmpty { try c.encode(err, forKey: .err) }
        if latencySeconds != 0 { try c.encode(latencySeconds, forKey: .latencySeconds) }
        if !endpoint.isEmpty { try c.encode(endpoint, forKey: .endpoint) }
        if !peerRelay.isEmpty { try c.encode(peerRelay, forKey: .peerRelay) }
        if derpRegionID != 0 { try c.encode(derpRegionID, forKey: .derpRegionID) }
        if !derpRegionCode.isEmpty { try c.encode(derpRegionCode, forKey: .derpRegionCode) }
        if peerAPIPort != 0 { try c.encode(peerAPIPort, forKey: .peerAPIPort) }
        if !peerAPIURL.isEmpty { try c.encode(peerAPIURL, forKey: .peerAPIURL) }
        if isLocalIP { try c.encode(isLocalIP, forKey: .isLocalIP) }
    }
}

/// The node part of a WhoIs answer: a subset of tailcfg.Node.
public struct WhoIsNode: Codable, Sendable, Equatable {
    public var id: Int64
    public var stableID: String
    /// MagicDNS FQDN with the trailing dot.
    public var name: String
    public var user: Int64
    /// "nodekey:<hex>".
    public var key: String
    /// The node's Tailscale addresses as prefixes ("100.64.0.1/32").
    public var addresses: [String]
    public var allowedIPs: [String]
    public var tags: [String]?
    public var computedName: String?
    public var online: Bool?

    public init(id: Int64, stableID: String = "", name: String, user: Int64 = 0, key: String, addresses: [String],
                allowedIPs: [String] = [], tags: [String]? = nil, computedName: String? = nil, online: Bool? = nil) {
        self.id = id; self.stableID = stableID; self.name = name; self.user = user; self.key = key
        self.addresses = addresses; self.allowedIPs = allowedIPs; self.tags = tags; self.computedName = computedName
        self.online = online
    }

    enum CodingKeys: String, CodingKey {
        case id = "ID", stableID = "StableID", name = "Name", user = "User", key = "Key", addresses = "Addresses"
        case allowedIPs = "AllowedIPs", tags = "Tags", computedName = "ComputedName", online = "Online"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            id: try c.value(.id, or: 0), stableID: try c.value(.stableID, or: ""), name: try c.value(.name, or: ""),
            user: try c.value(.user, or: 0), key: try c.value(.key, or: ""), addresses: try c.value(.addresses, or: []),
            allowedIPs: try c.value(.allowedIPs, or: []), tags: try c.decodeIfPresent([String].self, forKey: .tags),
            computedName: try c.decodeIfPresent(String.self, forKey: .computedName),
            online: try c.decodeIfPresent(Bool.self, forKey: .online))
    }
}

/// The answer to GET /localapi/v0/whois: apitype.WhoIsResponse.
public struct WhoIsResponse: Codable, Sendable, Equatable {
    public var node: WhoIsNode
    public var userProfile: UserProfile
    /// Peer capabilities granted to that node by this node's policy (capability name -> raw JSON values).
    public var capMap: [String: [JSONValue]]?

    public init(node: WhoIsNode, userProfile: UserProfile, capMap: [String: [JSONValue]]? = nil) {
        self.node = node; self.userProfile = userProfile; self.capMap = capMap
    }

    enum CodingKeys: String, CodingKey { case node = "Node", userProfile = "UserProfile", capMap = "CapMap" }
}

/// A netcheck report: a subset of net/netcheck.Report. `RegionLatency` is in seconds (Go writes nanoseconds; this
/// report is only read by `warren netcheck`), keyed by decimal region ID; `RegionCodes` (Warren's addition) names them.
public struct NetcheckReport: Codable, Sendable, Equatable {
    public var udp: Bool
    public var ipv4: Bool
    public var ipv6: Bool
    public var ipv4CanSend: Bool
    public var ipv6CanSend: Bool
    public var osHasIPv6: Bool
    /// nil when unknown (Go's opt.Bool).
    public var mappingVariesByDestIP: Bool?
    public var hairPinning: Bool?
    public var upnp: Bool?
    public var pmp: Bool?
    public var pcp: Bool?
    /// Home DERP region ID, 0 if none.
    public var preferredDERP: Int
    public var regionLatency: [String: Double]
    public var regionCodes: [String: String]
    /// "ip:port" as seen by STUN, or "".
    public var globalV4: String
    public var globalV6: String
    public var captivePortal: Bool?

    public init(udp: Bool = false, ipv4: Bool = false, ipv6: Bool = false, ipv4CanSend: Bool = false,
                ipv6CanSend: Bool = false, osHasIPv6: Bool = false, mappingVariesByDestIP: Bool? = nil,
                hairPinning: Bool? = nil, upnp: Bool? = nil, pmp: Bool? = nil, pcp: Bool? = nil, preferredDERP: Int = 0,
                regionLatency: [String: Double] = [:], regionCodes: [String: String] = [:], globalV4: String = "",
                globalV6: String = "", captivePortal: Bool? = nil) {
        self.udp = udp; self.ipv4 = ipv4; self.ipv6 = ipv6; self.ipv4CanSend = ipv4CanSend
        self.ipv6CanSend = ipv6CanSend; self.osHasIPv6 = osHasIPv6; self.mappingVariesByDestIP = mappingVariesByDestIP
        self.hairPinning = hairPinning; self.upnp = upnp; self.pmp = pmp; self.pcp = pcp
        self.preferredDERP = preferredDERP; self.regionLatency = regionLatency; self.regionCodes = regionCodes
        self.globalV4 = globalV4; self.globalV6 = globalV6; self.captivePortal = captivePortal
    }

    enum CodingKeys: String, CodingKey {
        case udp = "UDP", ipv4 = "IPv4", ipv6 = "IPv6", ipv4CanSend = "IPv4CanSend", ipv6CanSend = "IPv6CanSend"
        case osHasIPv6 = "OSHasIPv6", mappingVariesByDestIP = "MappingVariesByDestIP", hairPinning = "HairPinning"
        case upnp = "UPnP", pmp = "PMP", pcp = "PCP", preferredDERP = "PreferredDERP"
        case regionLatency = "RegionLatency", regionCodes = "RegionCodes", globalV4 = "GlobalV4"
        case globalV6 = "GlobalV6", captivePortal = "CaptivePortal"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            udp: try c.value(.udp, or: false), ipv4: try c.value(.ipv4, or: false), ipv6: try c.value(.ipv6, or: false),
            ipv4CanSend: try c.value(.ipv4CanSend, or: false), ipv6CanSend: try c.value(.ipv6CanSend, or: false),
            osHasIPv6: try c.value(.osHasIPv6, or: false),
            mappingVariesByDestIP: try c.decodeIfPresent(Bool.self, forKey: .mappingVariesByDestIP),
            hairPinning: try c.decodeIfPresent(Bool.self, forKey: .hairPinning),
            upnp: try c.decodeIfPresent(Bool.self, forKey: .upnp), pmp: try c.decodeIfPresent(Bool.self, forKey: .pmp),
            pcp: try c.decodeIfPresent(Bool.self, forKey: .pcp), preferredDERP: try c.value(.preferredDERP, or: 0),
            regionLatency: try c.value(.regionLatency, or: [:]), regionCodes: try c.value(.regionCodes, or: [:]),
            globalV4: try c.value(.globalV4, or: ""), globalV6: try c.value(.globalV6, or: ""),
            captivePortal: try c.decodeIfPresent(Bool.self, forKey: .captivePortal))
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(udp, forKey: .udp)
        try c.encode(ipv4, forKey: .ipv4)
        try c.encode(ipv6, forKey: .ipv6)
        try c.encode(ipv4CanSend, forKey: .ipv4CanSend)
        try c.encode(ipv6CanSend, forKey: .ipv6CanSend)
        try c.encode(osHasIPv6, forKey: .osHasIPv6)
        // opt.Bool: null when unknown.
        for (value, key) in [(mappingVariesByDestIP, CodingKeys.mappingVariesByDestIP), (hairPinning, .hairPinning),
                             (upnp, .upnp), (pmp, .pmp), (pcp, .pcp), (captivePortal, .captivePortal)] {
            if let value { try c.encode(value, forKey: key) } else { try c.encodeNil(forKey: key) }
        }
        try c.encode(preferredDERP, forKey: .preferredDERP)
        try c.encode(regionLatency, forKey: .regionLatency)
        if !regionCodes.isEmpty { try c.encode(regionCodes, forKey: .regionCodes) }
        try c.encode(globalV4, forKey: .globalV4)
        try c.encode(globalV6, forKey: .globalV6)
    }
}

/// The body of every error answer: `{"error": "..."}`.
public struct LocalAPIErrorBody: Codable, Sendable, Equatable {
    public var error: String
    public init(error: String) { self.error = error }
}

/// The answer to GET /localapi/v0/suggest-exit-node (Tailscale's apitype.ExitNodeSuggestionResponse).
public struct ExitNodeSuggestion: Codable, Sendable, Equatable {
    /// The node's stable ID.
    public var id: String
    /// Its MagicDNS name (or host name when it has none).
    public var name: String

    public init(id: String, name: String) {
        self.id = id
        self.name = name
    }

    enum CodingKeys: String, CodingKey {
        case id = "ID", name = "Name"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(id: try c.value(.id, or: ""), name: try c.value(.name, or: ""))
    }
}

/// The answer to GET /localapi/v0/dns-query (Tailscale's: the raw DNS response, and which resolvers
/// the query would be forwarded to when MagicDNS does not answer it).
public struct DNSQueryResponse: Codable, Sendable, Equatable {
    /// The DNS response message as sent on the wire (base64 in JSON, as Go encodes []byte).
    public var bytes: Data
    /// The upstreams, "ip:port" (empty when MagicDNS answered it).
    public var resolvers: [String]

    public init(bytes: Data, resolvers: [String]) {
        self.bytes = bytes
        self.resolvers = resolvers
    }

    enum CodingKeys: String, CodingKey {
        case bytes = "Bytes", resolvers = "Resolvers"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(bytes: try c.value(.bytes, or: Data()), resolvers: try c.value(.resolvers, or: []))
    }
}

/// The answer to GET /localapi/v0/dns-status: what `warren dns status` prints.
public struct DNSStatus: Codable, Sendable, Equatable {
    /// Whether the node uses the tailnet's DNS settings (`--accept-dns`).
    public var acceptDNS: Bool
    /// MagicDNS is on in the tailnet (control's DNSConfig.Proxied).
    public var magicDNS: Bool
    /// The tailnet's domain, without the final dot.
    public var tailnetDomain: String
    /// Where MagicDNS listens ("100.100.100.100:53", ...); empty when it is not running.
    public var listening: [String]
    /// Control's global resolvers.
    public var resolvers: [String]
    /// Split DNS: domain to resolvers (an empty list: answered by MagicDNS).
    public var splitDNSRoutes: [String: [String]]
    public var searchDomains: [String]
    /// Names of the extra records control added.
    public var extraRecords: [String]
    /// The host's resolvers from before Warren (the fallback upstreams).
    public var hostResolvers: [String]
    /// How the host is configured ("direct /etc/resolv.conf", "systemd-resolved (link warren0)", ...).
    public var hostMode: String
    /// What the host was told: nameservers, search and match domains; nil when the host is left alone.
    public var osNameservers: [String]?
    public var osSearchDomains: [String]?
    public var osMatchDomains: [String]?

    public init(acceptDNS: Bool = true, magicDNS: Bool = false, tailnetDomain: String = "", listening: [String] = [],
                resolvers: [String] = [], splitDNSRoutes: [String: [String]] = [:], searchDomains: [String] = [],
                extraRecords: [String] = [], hostResolvers: [String] = [], hostMode: String = "",
                osNameservers: [String]? = nil, osSearchDomains: [String]? = nil, osMatchDomains: [String]? = nil) {
        self.acceptDNS = acceptDNS; self.magicDNS = magicDNS; self.tailnetDomain = tailnetDomain; self.listening = listening
        self.resolvers = resolvers; self.splitDNSRoutes = splitDNSRoutes; self.searchDomains = searchDomains
        self.extraRecords = extraRecords; self.hostResolvers = hostResolvers; self.hostMode = hostMode
        self.osNameservers = osNameservers; self.osSearchDomains = osSearchDomains; self.osMatchDomains = osMatchDomains
    }

    enum CodingKeys: String, CodingKey {
        case acceptDNS = "AcceptDNS", magicDNS = "MagicDNS", tailnetDomain = "TailnetDomain", listening = "Listening"
        case resolvers = "Resolvers", splitDNSRoutes = "SplitDNSRoutes", searchDomains = "SearchDomains"
        case extraRecords = "ExtraRecords", hostResolvers = "HostResolvers", hostMode = "HostMode"
        case osNameservers = "OSNameservers", osSearchDomains = "OSSearchDomains", osMatchDomains = "OSMatchDomains"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            acceptDNS: try c.value(.acceptDNS, or: true), magicDNS: try c.value(.magicDNS, or: false),
            tailnetDomain: try c.value(.tailnetDomain, or: ""), listening: try c.value(.listening, or: []),
            resolvers: try c.value(.resolvers, or: []), splitDNSRoutes: try c.value(.splitDNSRoutes, or: [:]),
            searchDomains: try c.value(.searchDomains, or: []), extraRecords: try c.value(.extraRecords, or: []),
            hostResolvers: try c.value(.hostResolvers, or: []), hostMode: try c.value(.hostMode, or: ""),
            osNameservers: try c.decodeIfPresent([String].self, forKey: .osNameservers),
            osSearchDomains: try c.decodeIfPresent([String].self, forKey: .osSearchDomains),
            osMatchDomains: try c.decodeIfPresent([String].self, forKey: .osMatchDomains))
    }
}
