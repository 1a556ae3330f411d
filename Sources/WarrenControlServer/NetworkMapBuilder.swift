// Building what one node is sent: itself, its peers, the packet filter, DNS and DERP. Pure: the engine
// passes in the nodes, the time and who is online.

import TailscaleKeys
import WarrenPacket
import WarrenTailcfg

/// The one place that decides who may talk to whom. Until a policy is configured every node may reach
/// every other (``AllowAllPolicy``); WarrenPolicy's compiler plugs in here.
public protocol PacketFilterPolicy: Sendable {
    /// The rules `node` enforces on inbound traffic (Tailscale sends each node the rules where it is a
    /// destination).
    func filterRules(for node: ControlNode, in tailnet: TailnetSnapshot) -> [FilterRule]
    /// Whether `peer` appears in `node`'s map at all.
    func canSee(_ node: ControlNode, _ peer: ControlNode, in tailnet: TailnetSnapshot) -> Bool
}

public struct AllowAllPolicy: PacketFilterPolicy {
    public init() {}

    public static let rules = [FilterRule(srcIPs: ["*"], dstPorts: [NetPortRange(ip: "*", ports: .all)])]

    public func filterRules(for node: ControlNode, in tailnet: TailnetSnapshot) -> [FilterRule] { Self.rules }
    public func canSee(_ node: ControlNode, _ peer: ControlNode, in tailnet: TailnetSnapshot) -> Bool { true }
}

/// The tailnet at one instant, as map building sees it.
public struct TailnetSnapshot: Sendable {
    public var nodes: [Int64: ControlNode]
    public var users: [Int64: ControlUser]
    public var online: Set<Int64>

    public init(nodes: [Int64: ControlNode], users: [Int64: ControlUser], online: Set<Int64>) {
        self.nodes = nodes
        self.users = users
        self.online = online
    }
}

public struct NetworkMapBuilder: Sendable {
    public var configuration: ControlConfiguration
    public var policy: any PacketFilterPolicy

    public init(configuration: ControlConfiguration, policy: any PacketFilterPolicy = AllowAllPolicy()) {
        self.configuration = configuration
        self.policy = policy
    }

    public func fqdn(_ node: ControlNode) -> String { "\(node.givenName).\(configuration.baseDomain)." }

    /// The wire form of `node` as seen by others (and by itself).
    public func wireNode(_ node: ControlNode, in tailnet: TailnetSnapshot, now: TailcfgTime) -> Node {
        var n = Node()
        n.id = node.id
        n.stableID = "n\(node.id)"
        n.name = fqdn(node)
        n.user = node.userID
        n.key = node.nodeKey
        n.keyExpiry = node.keyExpiry
        n.machine = node.machineKey
        n.discoKey = node.discoKey
        n.addresses = node.addresses.map { IPPrefix(host: $0) }
        n.allowedIPs = n.addresses
        n.endpoints = node.endpoints
        if node.homeDERP > 0 {
            n.homeDERP = node.homeDERP
            n.legacyDERP = LegacyDERP.string(region: node.homeDERP)
        }
        n.hostinfo = node.hostinfo
        n.created = node.created
        n.cap = node.capabilityVersion > 0 ? node.capabilityVersion : nil
        n.tags = node.tags.isEmpty ? nil : node.tags
        let online = tailnet.online.contains(node.id)
        n.online = online
        if !online, let seen = node.lastSeen { n.lastSeen = seen }
        n.machineAuthorized = node.authorized
        n.computedName = node.givenName
        n.computedNameWithHost = node.givenName
        if node.isExpired(at: now) { n.expired = true }
        return n
    }

    /// The IDs of the nodes `node` is sent as peers, sorted.
    public func peerIDs(of node: ControlNode, in tailnet: TailnetSnapshot) -> [Int64] {
        // A loop rather than filter/map: no array of copied nodes for a tailnet of thousands.
        var ids = [Int64]()
        ids.reserveCapacity(tailnet.nodes.count)
        for (id, other) in tailnet.nodes where id != node.id && other.authorized && policy.canSee(node, other, in: tailnet) {
            ids.append(id)
        }
        ids.sort()
        return ids
    }

    public func userProfiles(for ids: some Sequence<Int64>, in tailnet: TailnetSnapshot) -> [UserProfile] {
        Set(ids).sorted().compactMap { tailnet.users[$0] }.map {
            UserProfile(id: $0.id, loginName: $0.loginName, displayName: $0.displayName)
        }
    }

    public func dnsConfig() -> DNSConfig {
        let settings = configuration.dns
        var dns = DNSConfig()
        dns.proxied = settings.magicDNS
        var domains = [String]()
        var routes = [String: [DNSResolver]?]()
        if settings.magicDNS {
            domains.append(configuration.baseDomain)
            // An empty route means quad-100 answers the suffix itself.
            routes[configuration.baseDomain + "."] = [] as [DNSResolver]
        }
        domains += settings.searchDomains
        for (domain, servers) in settings.splitDNS {
            routes[domain.hasSuffix(".") ? domain : domain + "."] = servers.map { DNSResolver(addr: $0) }
        }
        if !settings.nameservers.isEmpty { dns.resolvers = settings.nameservers.map { DNSResolver(addr: $0) } }
        dns.domains = domains.isEmpty ? nil : domains
        dns.routes = routes.isEmpty ? nil : routes
        dns.extraRecords = settings.extraRecords.isEmpty ? nil : settings.extraRecords
        return dns
    }

    /// The complete map for `node` (the first message of a stream, or a one-shot request).
    public func fullMap(for node: ControlNode, in tailnet: TailnetSnapshot, now: TailcfgTime, omitPeers: Bool) -> MapResponse {
        var response = MapResponse()
        response.node = wireNode(node, in: tailnet, now: now)
        response.derpMap = configuration.derpMap
        let peerIDs = omitPeers ? [] : peerIDs(of: node, in: tailnet)
        var peers = [Node]()
        var userIDs: Set<Int64> = [node.userID]
        if !omitPeers {
            peers.reserveCapacity(peerIDs.count)
            for id in peerIDs {
                guard let peer = tailnet.nodes[id] else { continue }
                peers.append(wireNode(peer, in: tailnet, now: now))
                userIDs.insert(peer.userID)
            }
            response.peers = peers
        }
        response.dnsConfig = dnsConfig()
        response.domain = configuration.baseDomain
        response.collectServices = false
        response.packetFilter = policy.filterRules(for: node, in: tailnet)
        response.userProfiles = userProfiles(for: userIDs, in: tailnet)
        response.controlTime = now
        return response
    }
}
