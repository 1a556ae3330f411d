// From (network map, preferences, now) to the whole desired state of each engine: WireGuard peers,
// the router (addresses and routes) and the packet filter. The node reconciles its engines to these
// values; nothing here is an edit. The rules follow Tailscale's wgengine/wgcfg/nmcfg.

import TailscaleKeys
import WarrenDNS
import WarrenPacket
import WarrenTailcfg

/// The user's preferences that shape the desired configuration (a pure value; persisting and
/// editing them is the daemon's business).
public struct Prefs: Codable, Hashable, Sendable {
    public var wantRunning: Bool
    /// Use subnet routes that peers advertise (`--accept-routes`, Tailscale's RouteAll).
    public var acceptRoutes: Bool
    /// The stable ID of the peer to use as exit node (`--exit-node`); nil: none.
    public var exitNodeID: String?
    /// The exit node by Tailscale IP, when the user named it so and its ID is not known yet.
    public var exitNodeIP: IPAddress?
    public var exitNodeAllowLANAccess: Bool
    /// Refuse every new inbound flow, whatever the packet filter says.
    public var shieldsUp: Bool
    /// Use the tailnet's DNS settings (`--accept-dns`, Tailscale's CorpDNS).
    public var acceptDNS: Bool
    public var hostname: String
    /// Subnet routes (and 0.0.0.0/0, ::/0 for an exit node) this node offers.
    public var advertiseRoutes: [IPPrefix]
    public var advertiseTags: [String]
    public var loginServer: String
    public var runSSH: Bool
    /// Do not masquerade traffic forwarded to advertised subnets (`--snat-subnet-routes=false`).
    public var noSNAT: Bool
    /// `--exit-node=auto:any`: the node picks the exit node itself (kept in ``exitNodeID``) and moves to
    /// another when it goes offline.
    public var autoExitNode: Bool

    public static let defaultLoginServer = "https://controlplane.tailscale.com"

    public init(wantRunning: Bool = false, acceptRoutes: Bool = false, exitNodeID: String? = nil,
                exitNodeIP: IPAddress? = nil, exitNodeAllowLANAccess: Bool = false, shieldsUp: Bool = false,
                acceptDNS: Bool = true, hostname: String = "", advertiseRoutes: [IPPrefix] = [],
                advertiseTags: [String] = [], loginServer: String = Prefs.defaultLoginServer,
                runSSH: Bool = false, noSNAT: Bool = false, autoExitNode: Bool = false) {
        self.wantRunning = wantRunning
        self.acceptRoutes = acceptRoutes
        self.exitNodeID = exitNodeID
        self.exitNodeIP = exitNodeIP
        self.exitNodeAllowLANAccess = exitNodeAllowLANAccess
        self.shieldsUp = shieldsUp
        self.acceptDNS = acceptDNS
        self.hostname = hostname
        self.advertiseRoutes = advertiseRoutes
        self.advertiseTags = advertiseTags
        self.loginServer = loginServer
        self.runSSH = runSSH
        self.noSNAT = noSNAT
        self.autoExitNode = autoExitNode
    }

    enum CodingKeys: String, CodingKey {
        case wantRunning, acceptRoutes, exitNodeID, exitNodeIP, exitNodeAllowLANAccess, shieldsUp, acceptDNS, hostname
        case advertiseRoutes, advertiseTags, loginServer, runSSH, noSNAT, autoExitNode
    }

    /// Reads preferences written by any version: a missing field takes its default.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = Prefs()
        self.init(
            wantRunning: try c.decodeIfPresent(Bool.self, forKey: .wantRunning) ?? d.wantRunning,
            acceptRoutes: try c.decodeIfPresent(Bool.self, forKey: .acceptRoutes) ?? d.acceptRoutes,
            exitNodeID: try c.decodeIfPresent(String.self, forKey: .exitNodeID),
            exitNodeIP: try c.decodeIfPresent(IPAddress.self, forKey: .exitNodeIP),
            exitNodeAllowLANAccess: try c.decodeIfPresent(Bool.self, forKey: .exitNodeAllowLANAccess) ?? d.exitNodeAllowLANAccess,
            shieldsUp: try c.decodeIfPresent(Bool.self, forKey: .shieldsUp) ?? d.shieldsUp,
            acceptDNS: try c.decodeIfPresent(Bool.self, forKey: .acceptDNS) ?? d.acceptDNS,
            hostname: try c.decodeIfPresent(String.self, forKey: .hostname) ?? d.hostname,
            advertiseRoutes: try c.decodeIfPresent([IPPrefix].self, forKey: .advertiseRoutes) ?? d.advertiseRoutes,
            advertiseTags: try c.decodeIfPresent([String].self, forKey: .advertiseTags) ?? d.advertiseTags,
            loginServer: try c.decodeIfPresent(String.self, forKey: .loginServer) ?? d.loginServer,
            runSSH: try c.decodeIfPresent(Bool.self, forKey: .runSSH) ?? d.runSSH,
            noSNAT: try c.decodeIfPresent(Bool.self, forKey: .noSNAT) ?? d.noSNAT,
            autoExitNode: try c.decodeIfPresent(Bool.self, forKey: .autoExitNode) ?? d.autoExitNode)
    }

    /// Whether these preferences offer this node as an exit node (both default routes advertised).
    public var advertisesExitNode: Bool { advertiseRoutes.contains(.defaultRouteV4) || advertiseRoutes.contains(.defaultRouteV6) }

    /// Whether an exit node is chosen (by ID, by IP, or automatically).
    public var usesExitNode: Bool { !(exitNodeID ?? "").isEmpty || exitNodeIP != nil || autoExitNode }

    /// Whether `node` is the exit node these preferences select.
    public func selectsExitNode(_ node: Node) -> Bool {
        if let id = exitNodeID, !id.isEmpty { return node.stableID == id }
        if let ip = exitNodeIP { return (node.addresses ?? []).contains { $0.isSingleAddress && $0.address == ip } }
        return false
    }
}

/// One WireGuard peer as the device should have it.
public struct WireGuardPeerConfig: Hashable, Sendable {
    public var nodeID: Int64
    public var key: NodePublic
    public var discoKey: DiscoPublic?
    /// Sorted, deduplicated.
    public var allowedIPs: [IPPrefix]
    public var endpoints: [AddrPort]
    /// The peer's home DERP region (0: none).
    public var homeDERP: Int
    /// A plain WireGuard peer (no disco): send to its endpoints directly.
    public var isWireGuardOnly: Bool

    public init(nodeID: Int64, key: NodePublic, discoKey: DiscoPublic?, allowedIPs: [IPPrefix],
                endpoints: [AddrPort], homeDERP: Int, isWireGuardOnly: Bool) {
        self.nodeID = nodeID
        self.key = key
        self.discoKey = discoKey
        self.allowedIPs = allowedIPs
        self.endpoints = endpoints
        self.homeDERP = homeDERP
        self.isWireGuardOnly = isWireGuardOnly
    }
}

/// The WireGuard device's desired state.
public struct WireGuardConfig: Hashable, Sendable {
    /// This node's addresses.
    public var addresses: [IPPrefix]
    /// Sorted by node ID.
    public var peers: [WireGuardPeerConfig]
    /// Peers left out because their key has expired (for logs and status).
    public var skippedExpired: [Int64]
    /// Peers left out because they have no key, or neither a disco key nor a home DERP region.
    public var skippedUnreachable: [Int64]

    public init(addresses: [IPPrefix] = [], peers: [WireGuardPeerConfig] = [], skippedExpired: [Int64] = [],
                skippedUnreachable: [Int64] = []) {
        self.addresses = addresses
        self.peers = peers
        self.skippedExpired = skippedExpired
        self.skippedUnreachable = skippedUnreachable
    }
}

/// The OS router's desired state.
public struct RouterConfig: Hashable, Sendable {
    /// This node's Tailscale addresses, to put on the TUN interface.
    public var localAddresses: [IPPrefix]
    /// Routes into the TUN: the tailnet ranges, accepted subnet routes and, with an exit node, the
    /// default routes. Sorted, deduplicated.
    public var routes: [IPPrefix]
    /// Prefixes kept out of the tunnel although a route above covers them (the local LANs while an exit
    /// node is used with LAN access). Sorted, deduplicated.
    public var localRoutes: [IPPrefix]
    /// The subnets this node offers (forwarding and, unless ``snatSubnetRoutes`` is off, masquerade).
    public var subnetRoutes: [IPPrefix]
    /// Whether this node offers itself as an exit node (forwarding and masquerade to anywhere).
    public var exitNode: Bool
    public var snatSubnetRoutes: Bool
    /// Addresses of local services (MagicDNS's 100.100.100.100 and fd7a:115c:a1e0::53), put on the
    /// loopback interface: local to this host, and never chosen as the source of packets into the
    /// tunnel (a reply to them would end at the peer, which owns the same addresses).
    public var serviceAddresses: [IPPrefix] = []

    public init(localAddresses: [IPPrefix] = [], routes: [IPPrefix] = [], localRoutes: [IPPrefix] = [],
                subnetRoutes: [IPPrefix] = [], exitNode: Bool = false, snatSubnetRoutes: Bool = true) {
        self.localAddresses = localAddresses
        self.routes = routes
        self.localRoutes = localRoutes
        self.subnetRoutes = subnetRoutes
        self.exitNode = exitNode
        self.snatSubnetRoutes = snatSubnetRoutes
    }

    /// Whether the node forwards traffic from the tailnet at all.
    public var forwards: Bool { exitNode || !subnetRoutes.isEmpty }
}

/// The packet filter's desired state.
public struct FilterConfig: Hashable, Sendable {
    /// The rules, concatenated in filter-name order; empty means nothing inbound is allowed.
    public var rules: [FilterRule]
    /// The destinations the filter guards: this node's addresses and the subnets it offers.
    public var localAddresses: [IPPrefix]
    /// No new inbound flows at all (replies to outbound flows still pass).
    public var shieldsUp: Bool

    public init(rules: [FilterRule] = [], localAddresses: [IPPrefix] = [], shieldsUp: Bool = false) {
        self.rules = rules
        self.localAddresses = localAddresses
        self.shieldsUp = shieldsUp
    }
}

extension IPPrefix {
    /// 100.64.0.0/10: Tailscale's IPv4 range (CGNAT).
    public static let tailscaleIPv4Range = TailnetAddresses.ipv4Range
    /// fd7a:115c:a1e0::/48: Tailscale's IPv6 ULA range.
    public static let tailscaleIPv6Range = TailnetAddresses.ipv6Range
    public static let defaultRouteV4 = IPPrefix("0.0.0.0/0")!
    public static let defaultRouteV6 = IPPrefix("::/0")!

    /// 0.0.0.0/0 or ::/0.
    public var isDefaultRoute: Bool { bits == 0 }
}

extension NetworkMap {
    /// The WireGuard peers to configure at `now`.
    ///
    /// A peer is left out when its key is zero, when it has neither a disco key nor a home DERP
    /// region (unless it is WireGuard-only), or when it is expired (``Node/expired`` or a key expiry
    /// before `now`). Its allowed IPs are ``Node/allowedIPs`` (nil: ``Node/addresses``) filtered:
    /// single addresses always; 0.0.0.0/0 and ::/0 only for the selected exit node; other prefixes
    /// (subnet routes) only with ``Prefs/acceptRoutes``.
    public func wireGuardConfig(prefs: Prefs, now: TailcfgTime) -> WireGuardConfig {
        var config = WireGuardConfig(addresses: (selfNode?.addresses ?? []).sortedUnique())
        for peer in peers {
            let homeDERP = peer.homeDERP ?? 0
            let isWireGuardOnly = peer.isWireGuardOnly ?? false
            if peer.key.isZero || ((peer.discoKey?.isZero ?? true) && homeDERP == 0 && !isWireGuardOnly) {
                config.skippedUnreachable.append(peer.id)
                continue
            }
            if Self.isExpired(peer, now: now) {
                config.skippedExpired.append(peer.id)
                continue
            }
            let isExitNode = prefs.selectsExitNode(peer)
            let allowed = (peer.allowedIPs ?? peer.addresses ?? []).filter { prefix in
                if prefix.isDefaultRoute { return isExitNode }
                if prefix.isSingleAddress { return true }
                return prefs.acceptRoutes
            }
            config.peers.append(WireGuardPeerConfig(
                nodeID: peer.id, key: peer.key, discoKey: peer.discoKey, allowedIPs: allowed.sortedUnique(),
                endpoints: peer.endpoints ?? [], homeDERP: homeDERP, isWireGuardOnly: isWireGuardOnly))
        }
        return config
    }

    /// Whether `node` is expired at `now`: control marked it so, or its key expiry has passed
    /// (a nil or Go-zero expiry never expires).
    public static func isExpired(_ node: Node, now: TailcfgTime) -> Bool {
        if node.expired == true { return true }
        guard let expiry = node.keyExpiry, !expiry.isGoZero else { return false }
        return expiry < now
    }

    /// The router's desired state: this node's addresses; routes for both Tailscale ranges always,
    /// plus every non-address prefix that ``wireGuardConfig(prefs:now:)`` lets through (accepted
    /// subnet routes and an exit node's default routes) and any single address outside the ranges.
    /// With an exit node in use and ``Prefs/exitNodeAllowLANAccess``, the networks of `hostPrefixes` (the
    /// host's interfaces) stay out of the tunnel, as Tailscale's LocalRoutes on Linux. Accepted subnet
    /// routes that overlap the host's own networks win over them (table 52 comes first), as on Tailscale.
    public func routerConfig(prefs: Prefs, now: TailcfgTime, hostPrefixes: [IPPrefix] = []) -> RouterConfig {
        var routes: [IPPrefix] = [.tailscaleIPv4Range, .tailscaleIPv6Range]
        for peer in wireGuardConfig(prefs: prefs, now: now).peers {
            for prefix in peer.allowedIPs {
                if prefix.isSingleAddress,
                   IPPrefix.tailscaleIPv4Range.contains(prefix) || IPPrefix.tailscaleIPv6Range.contains(prefix) {
                    continue
                }
                routes.append(prefix)
            }
        }
        let usingExit = routes.contains { $0.isDefaultRoute }
        let lan = usingExit && prefs.exitNodeAllowLANAccess ? hostPrefixes.filter { !$0.isSingleAddress }.map(\.masked) : []
        return RouterConfig(localAddresses: (selfNode?.addresses ?? []).sortedUnique(),
                            routes: routes.map(\.masked).sortedUnique(),
                            localRoutes: lan.sortedUnique(),
                            subnetRoutes: prefs.advertiseRoutes.filter { !$0.isDefaultRoute }.map(\.masked).sortedUnique(),
                            exitNode: prefs.advertisesExitNode,
                            snatSubnetRoutes: !prefs.noSNAT)
    }

    /// The packet filter's desired state: the map's rules, guarding this node's addresses and the
    /// subnets it offers; shields-up from the preferences. An exit node guards the default routes less
    /// the host's own networks (`hostPrefixes`), as Tailscale's shrinkDefaultRoute: the internet and the
    /// host's own addresses are offered, the LANs it sits on only when advertised as subnet routes.
    public func filterConfig(prefs: Prefs, hostPrefixes: [IPPrefix] = []) -> FilterConfig {
        var local = (selfNode?.addresses ?? []) + prefs.advertiseRoutes.filter { !$0.isDefaultRoute }.map(\.masked)
        let exclude = hostPrefixes + [.tailscaleIPv4Range, .tailscaleIPv6Range]
        for route in prefs.advertiseRoutes where route.isDefaultRoute {
            // The host's own addresses stay reachable through it, not the networks they are on.
            local += route.masked.subtracting(exclude)
                + hostPrefixes.filter { $0.address.version == route.address.version }.map { IPPrefix(host: $0.address) }
        }
        return FilterConfig(rules: packetFilterRules, localAddresses: local.sortedUnique(), shieldsUp: prefs.shieldsUp)
    }

    /// The peer these preferences select as exit node, if it is in the map.
    public func exitNode(prefs: Prefs) -> Node? { peers.first { prefs.selectsExitNode($0) } }
}

extension Array where Element == IPPrefix {
    func sortedUnique() -> [IPPrefix] {
        var out: [IPPrefix] = []
        for prefix in sorted() where out.last != prefix { out.append(prefix) }
        return out
    }
}
