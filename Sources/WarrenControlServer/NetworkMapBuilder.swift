// Building what one node is sent: itself, its peers, the packet filter, DNS and DERP. Pure: the engine
// passes in the nodes, the time and who is online.

import Synchronization
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

    // The rest has defaults (no SSH policy, no capabilities, admin-approved routes, every route usable):
    // a policy that decides more implements them. See ``CompiledPolicy``.

    /// The IDs `node` may see (before the authorized check), if the policy keeps them; nil: ask ``canSee``.
    func peerIDs(of node: ControlNode, in tailnet: TailnetSnapshot) -> Set<Int64>?
    /// The SSH policy the node's SSH server enforces; nil: none (SSH closed).
    func sshPolicy(for node: ControlNode, in tailnet: TailnetSnapshot) -> SSHPolicy?
    /// Node attributes (`nodeAttrs`) for the node's own CapMap; a bare attribute's value is nil (sent as null).
    func capabilities(for node: ControlNode, in tailnet: TailnetSnapshot) -> NodeCapMap
    /// Advertised routes that are approved (by an admin or by autoApprovers), exit routes included.
    func servedRoutes(of node: ControlNode, in tailnet: TailnetSnapshot) -> [IPPrefix]
    /// Whether `viewer` may use a subnet route (it then appears in the router's AllowedIPs in its map), or,
    /// for an exit route (a /0), whether it may use the exit node (the policy lets it reach autogroup:internet).
    func canAccessRoute(_ viewer: ControlNode, _ route: IPPrefix, in tailnet: TailnetSnapshot) -> Bool
    /// The tailnet changed at these nodes (changed, added or removed); returns the IDs of the nodes whose
    /// results may have changed, nil: possibly all. Called by the engine before it sends the change.
    func nodesChanged(_ ids: Set<Int64>, in tailnet: TailnetSnapshot) -> Set<Int64>?
}

extension PacketFilterPolicy {
    public func peerIDs(of node: ControlNode, in tailnet: TailnetSnapshot) -> Set<Int64>? { nil }
    public func sshPolicy(for node: ControlNode, in tailnet: TailnetSnapshot) -> SSHPolicy? { nil }
    public func capabilities(for node: ControlNode, in tailnet: TailnetSnapshot) -> NodeCapMap { [:] }
    public func servedRoutes(of node: ControlNode, in tailnet: TailnetSnapshot) -> [IPPrefix] {
        NetworkMapBuilder.served(advertised: node.advertisedRoutes, approved: node.approvedRoutes.map(\.masked))
    }
    public func canAccessRoute(_ viewer: ControlNode, _ route: IPPrefix, in tailnet: TailnetSnapshot) -> Bool { true }
    public func nodesChanged(_ ids: Set<Int64>, in tailnet: TailnetSnapshot) -> Set<Int64>? { [] }
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
    /// The primary router of each subnet route, as the engine elected it (it remembers earlier choices and
    /// who went offline: ``NetworkMapBuilder/electPrimaries(routers:online:previous:)``); nil: elected here
    /// from this snapshot alone.
    public var routeOwners: [IPPrefix: Int64]?
    /// When the engine's ``OnlineNodes`` made `online`: a stamp per run of node IDs (``PeerChunks``) that changes
    /// whenever a node of the run comes online or goes offline, so that a run of peers built earlier is known current
    /// without looking at each of them. Nil (a snapshot made elsewhere): each peer is looked at.
    public var onlineStamps: [Int64: UInt64]?

    public init(nodes: [Int64: ControlNode], users: [Int64: ControlUser], online: Set<Int64>,
                routeOwners: [IPPrefix: Int64]? = nil, onlineStamps: [Int64: UInt64]? = nil) {
        self.nodes = nodes
        self.users = users
        self.online = online
        self.routeOwners = routeOwners
        self.onlineStamps = onlineStamps
    }
}

public struct NetworkMapBuilder: Sendable {
    public var configuration: ControlConfiguration
    public var policy: any PacketFilterPolicy
    /// The DERP map in force: `configuration.derpMap` until ``ControlEngine/setDERPMap(_:)`` replaces it.
    public let derpMap: DERPMapCell

    public init(configuration: ControlConfiguration, policy: any PacketFilterPolicy = AllowAllPolicy()) {
        self.configuration = configuration
        self.policy = policy
        derpMap = DERPMapCell(configuration.derpMap)
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
    /// A node waiting for device approval sees no peers.
    public func peerIDs(of node: ControlNode, in tailnet: TailnetSnapshot) -> [Int64] {
        guard node.authorized else { return [] }
        if let ids = policy.peerIDs(of: node, in: tailnet) {
            return ids.filter { $0 != node.id && tailnet.nodes[$0]?.authorized == true }.sorted()
        }
        // A loop rather than filter/map: no array of copied nodes for a tailnet of thousands.
        var ids = [Int64]()
        ids.reserveCapacity(tailnet.nodes.count)
        for (id, other) in tailnet.nodes where id != node.id && other.authorized && policy.canSee(node, other, in: tailnet) {
            ids.append(id)
        }
        ids.sort()
        return ids
    }

    // MARK: Routes, capabilities, SSH

    /// The node's served subnet routes for which it is the primary router. The engine's election
    /// (``TailnetSnapshot/routeOwners``) when the snapshot carries one; otherwise one made from this snapshot
    /// with no history (online routers first, then the lowest ID).
    public func primaryRoutes(of node: ControlNode, in tailnet: TailnetSnapshot) -> [IPPrefix] {
        let subnets = policy.servedRoutes(of: node, in: tailnet).filter { $0.bits != 0 }
        guard !subnets.isEmpty else { return [] }
        if let owners = tailnet.routeOwners {
            return subnets.filter { owners[$0] == node.id }
        }
        let rivals = tailnet.nodes.values.filter { $0.id != node.id && $0.authorized && !$0.advertisedRoutes.isEmpty }
        guard !rivals.isEmpty else { return subnets }
        let online = tailnet.online.contains(node.id)
        return subnets.filter { prefix in
            !rivals.contains { rival in
                let rivalOnline = tailnet.online.contains(rival.id)
                // A rival beats this node when it is online and this node is not, or, alike, has a lower ID.
                guard rivalOnline == online ? rival.id < node.id : rivalOnline else { return false }
                return policy.servedRoutes(of: rival, in: tailnet).contains(prefix)
            }
        }
    }

    /// Elects the primary router of each subnet route from the authorized routers and the subnet routes each
    /// serves. For each prefix: the previous primary while it serves the prefix and is online (it keeps the
    /// route: no flap back when an earlier primary returns); otherwise the online router with the lowest ID;
    /// when none serving it is online, the previous primary if it still serves it (as headscale's failover
    /// kept it), else the lowest ID. Exit routes (/0) are not elected: every exit node serves them.
    public static func electPrimaries(routers: [Int64: [IPPrefix]], online: (Int64) -> Bool,
                                      previous: [IPPrefix: Int64]) -> [IPPrefix: Int64] {
        var candidates: [IPPrefix: [Int64]] = [:]
        for (id, routes) in routers {
            for prefix in Set(routes) where prefix.bits != 0 { candidates[prefix, default: []].append(id) }
        }
        var owners: [IPPrefix: Int64] = [:]
        owners.reserveCapacity(candidates.count)
        for (prefix, ids) in candidates {
            let sorted = ids.sorted()
            if let current = previous[prefix], sorted.contains(current), online(current) {
                owners[prefix] = current
            } else if let first = sorted.first(where: online) {
                owners[prefix] = first
            } else if let current = previous[prefix], sorted.contains(current) {
                owners[prefix] = current
            } else {
                owners[prefix] = sorted[0]
            }
        }
        return owners
    }

    /// The advertised routes that are approved, each once and in the advertised order. Exit routes go
    /// together: a node advertising both 0.0.0.0/0 and ::/0 with either approved serves both (Tailscale
    /// approves an exit node as one; its clients advertise the pair).
    public static func served(advertised: [IPPrefix], approved: [IPPrefix]) -> [IPPrefix] {
        let exitApproved = approved.contains { $0.bits == 0 && advertised.contains($0) }
        var out: [IPPrefix] = []
        for route in advertised where !out.contains(route) && (approved.contains(route) || (route.bits == 0 && exitApproved)) {
            out.append(route)
        }
        return out
    }

    /// The exit routes (0.0.0.0/0, ::/0) the node serves.
    public func exitRoutes(of node: ControlNode, in tailnet: TailnetSnapshot) -> [IPPrefix] {
        policy.servedRoutes(of: node, in: tailnet).filter { $0.bits == 0 }
    }

    /// `node` as `viewer` sees it: its AllowedIPs carry its primary subnet routes that the viewer may use
    /// (PrimaryRoutes lists them) and, for an exit node, the default routes when the policy lets the viewer
    /// use an exit node (reach autogroup:internet); the client chooses whether to use it.
    public func peerNode(_ node: ControlNode, for viewer: ControlNode, in tailnet: TailnetSnapshot, now: TailcfgTime) -> Node {
        var n = wireNode(node, in: tailnet, now: now)
        guard !node.advertisedRoutes.isEmpty else { return n }
        let primaries = primaryRoutes(of: node, in: tailnet).filter { policy.canAccessRoute(viewer, $0, in: tailnet) }
        let exits = exitRoutes(of: node, in: tailnet).filter { policy.canAccessRoute(viewer, $0, in: tailnet) }
        let routes = primaries + exits
        if !routes.isEmpty { n.allowedIPs = (n.allowedIPs ?? []) + routes }
        if !primaries.isEmpty { n.primaryRoutes = primaries }
        return n
    }

    /// The node as it sees itself: its routes, and its capabilities from the policy's nodeAttrs (CapMap from
    /// capability version 74; the plain Capabilities list before).
    public func selfNode(_ node: ControlNode, in tailnet: TailnetSnapshot, now: TailcfgTime) -> Node {
        var n = wireNode(node, in: tailnet, now: now)
        if !node.advertisedRoutes.isEmpty {
            let primaries = primaryRoutes(of: node, in: tailnet)
            let routes = primaries + exitRoutes(of: node, in: tailnet)
            if !routes.isEmpty { n.allowedIPs = (n.allowedIPs ?? []) + routes }
            if !primaries.isEmpty { n.primaryRoutes = primaries }
        }
        var caps = policy.capabilities(for: node, in: tailnet)
        // Baseline capabilities carry no arguments: null, as Tailscale sends them.
        for cap in Self.baselineCapabilities where caps[cap] == nil { caps[cap] = .some(nil) }
        if !caps.isEmpty {
            if node.capabilityVersion == 0 || node.capabilityVersion >= Self.capMapVersion {
                n.capMap = caps
            } else {
                n.capabilities = caps.keys.sorted()
            }
        }
        return n
    }

    /// Capabilities every node gets, whatever the policy: `tailscale up --ssh` refuses to start the SSH server
    /// unless the self node has tailcfg.CapabilitySSH (ipnlocal's checkSSHPrefsLocked); who may connect is
    /// still the SSHPolicy's decision (none: nobody).
    public static let baselineCapabilities = ["https://tailscale.com/cap/ssh"]

    /// Clients understand Node.CapMap from capability version 74 (tailcfg's version history).
    public static let capMapVersion: CapabilityVersion = 74

    /// The SSH policy in MapResponse form; an absent policy is sent as no rules (SSH closed).
    public func sshPolicyValue(for node: ControlNode, in tailnet: TailnetSnapshot) -> JSONValue {
        Self.sshValue(policy.sshPolicy(for: node, in: tailnet))
    }

    static func sshValue(_ policy: SSHPolicy?) -> JSONValue {
        let value = policy ?? SSHPolicy(rules: [])
        guard let bytes = try? TailcfgJSON.encode(value), let json = try? TailcfgJSON.decode(JSONValue.self, from: bytes) else {
            return .object(["rules": .array([])])
        }
        return json
    }

    public func userProfiles(for ids: some Sequence<Int64>, in tailnet: TailnetSnapshot) -> [UserProfile] {
        Set(ids).sorted().compactMap { tailnet.users[$0] }.map {
            UserProfile(id: $0.id, loginName: $0.loginName, displayName: $0.displayName,
                        profilePicURL: $0.pictureURL.isEmpty ? nil : $0.pictureURL)
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
    public func fullMap(for node: ControlNode, in tailnet: TailnetSnapshot, now: TailcfgTime, omitPeers: Bool,
                        cache: PeerCache = PeerCache()) -> MapResponse {
        var (map, peers) = fullMapPlan(for: node, in: tailnet, now: now, omitPeers: omitPeers, cache: cache)
        if let peers { map.peers = peers.map(\.node) }
        return map
    }
}

// MARK: Peers shared by every viewer's full map

/// One peer's wire form as (nearly) every viewer sees it, with its JSON, built once and referenced by every full map
/// that carries it: a stream opening in a tailnet of N nodes costs N references, not N `Node`s built and encoded (and
/// the stream writers compress runs of these references once for all viewers: ``MapMessageEncoder``).
public final class CachedPeer: Sendable {
    public let node: Node
    /// What it was built from (the engine's record, whether it was online and expired): a lookup whose record and
    /// state equal these reuses it.
    let source: ControlNode?
    let online: Bool
    let expired: Bool
    /// The record's key expiry and user, read on the engine's fast path without copying the record.
    let keyExpiry: TailcfgTime?
    let userID: Int64
    private let encoded = Mutex<[UInt8]?>(nil)

    init(node: Node, source: ControlNode?, online: Bool, expired: Bool) {
        self.node = node
        self.source = source
        self.online = online
        self.expired = expired
        keyExpiry = source?.keyExpiry
        userID = node.user
    }

    /// Whether the entry still says the right thing about expiry at `now` (``ControlNode/isExpired(at:)``).
    func expiryHolds(at now: TailcfgTime) -> Bool {
        guard let keyExpiry, !keyExpiry.isGoZero else { return !expired }
        return expired == (keyExpiry <= now)
    }

    /// Bytes of the JSON when written (0 before).
    var encodedCount: Int { encoded.withLock { $0?.count ?? 0 } }

    /// The peer's JSON, written once.
    public func json() throws -> [UInt8] {
        try encoded.withLock { cached in
            if let cached { return cached }
            let bytes = try TailcfgJSON.write(node, reservingCapacity: 1024)
            cached = bytes
            return bytes
        }
    }
}

/// The engine's cache of ``CachedPeer``s by node ID (used on the engine's actor only).
public final class PeerCache: @unchecked Sendable {
    var entries: [Int64: CachedPeer] = [:]
    /// The owner drops an entry whenever the node's record changes (the engine does): entries are then reused without
    /// comparing records. Without it (a cache used across snapshots of unknown history), records are compared.
    let trustsRecords: Bool
    public init(trustsRecords: Bool = false) { self.trustsRecords = trustsRecords }
    public var count: Int { entries.count }
    /// Bytes of JSON the entries hold once written (for the memory account).
    public var jsonBytes: Int { entries.values.reduce(0) { $0 + $1.encodedCount } }
    /// The authorized nodes' IDs, sorted (what an allow-all policy gives every authorized viewer, but itself).
    private var authorized: [Int64]?

    /// The authorized IDs cut into runs of ``PeerChunks/size`` by ID: (run index, range in `authorized`).
    private var authorizedRuns: [(index: Int64, range: Range<Int>)]?
    /// Runs of entries shared by every viewer outside them (``PeerChunks``), by run index.
    var chunks = PeerChunks()

    /// The node's record changed (or it was deleted): its entry and its run go. `membership`: whether it may have been
    /// added, deleted, or authorized or unauthorized (which changes who is among the peers).
    func remove(_ id: Int64, membership: Bool = true) {
        entries[id] = nil
        chunks.recordChanged(id)
        if membership {
            authorized = nil
            authorizedRuns = nil
        }
    }

    func removeAll() {
        entries = [:]
        authorized = nil
        authorizedRuns = nil
        chunks = PeerChunks()
    }

    func authorizedIDs(in tailnet: TailnetSnapshot) -> [Int64] {
        if let authorized { return authorized }
        let ids = tailnet.nodes.compactMap { $0.value.authorized ? $0.key : nil }.sorted()
        authorized = ids
        authorizedRuns = nil
        return ids
    }

    func authorizedRuns(in tailnet: TailnetSnapshot) -> (ids: [Int64], runs: [(index: Int64, range: Range<Int>)]) {
        let ids = authorizedIDs(in: tailnet)
        if let authorizedRuns { return (ids, authorizedRuns) }
        var runs = [(index: Int64, range: Range<Int>)]()
        var i = 0
        while i < ids.count {
            let index = PeerChunks.index(of: ids[i])
            var j = i + 1
            while j < ids.count, PeerChunks.index(of: ids[j]) == index { j += 1 }
            runs.append((index, i..<j))
            i = j
        }
        authorizedRuns = runs
        return (ids, runs)
    }
}

/// Runs of peers by node ID (`id / size`, the runs the stream writers compress once for every viewer:
/// ``MapMessageEncoder/chunkSize``), each kept as the array of entries every viewer outside it gets, with the users
/// they belong to. A viewer's full map in a tailnet where everyone sees everyone is then a concatenation of runs (an
/// array copy each) instead of a lookup per peer: at 10,000 nodes the per-peer plan was 5 ms of the engine's time per
/// stream opening, most of what a mass reconnect cost the engine.
///
/// A run is current while no record in it changed (``PeerCache/remove(_:membership:)``), no node in it came online or
/// went offline (the snapshot's ``TailnetSnapshot/onlineStamps``) and no key in it expired since it was made.
struct PeerChunks {
    static let size = MapMessageEncoder.chunkSize

    static func index(of id: Int64) -> Int64 { id >= 0 ? id / size : (id + 1) / size - 1 }

    final class Run {
        let peers: [CachedPeer]
        let userIDs: Set<Int64>
        let recordStamp: UInt64
        let onlineStamp: UInt64
        /// The first moment a key of the run expires after the run was made (nil: none will).
        let validUntil: TailcfgTime?

        init(peers: [CachedPeer], userIDs: Set<Int64>, recordStamp: UInt64, onlineStamp: UInt64, validUntil: TailcfgTime?) {
            self.peers = peers
            self.userIDs = userIDs
            self.recordStamp = recordStamp
            self.onlineStamp = onlineStamp
            self.validUntil = validUntil
        }
    }

    private(set) var runs: [Int64: Run] = [:]
    private var recordStamps: [Int64: UInt64] = [:]
    private var counter: UInt64 = 0

    mutating func recordChanged(_ id: Int64) {
        let index = Self.index(of: id)
        counter &+= 1
        recordStamps[index] = counter
        runs[index] = nil
    }

    /// The run if it is still current.
    func current(_ index: Int64, onlineStamp: UInt64, now: TailcfgTime) -> Run? {
        guard let run = runs[index], run.recordStamp == recordStamps[index, default: 0], run.onlineStamp == onlineStamp
        else { return nil }
        if let until = run.validUntil, !(now < until) { return nil }
        return run
    }

    func recordStamp(_ index: Int64) -> UInt64 { recordStamps[index, default: 0] }

    mutating func keep(_ run: Run, at index: Int64) { runs[index] = run }
}

/// The engine's online nodes, with a stamp per run of node IDs that changes whenever one of the run's nodes comes
/// online or goes offline (``TailnetSnapshot/onlineStamps``). Used like the set it wraps.
struct OnlineNodes {
    private(set) var members: Set<Int64> = []
    private(set) var stamps: [Int64: UInt64] = [:]
    private var counter: UInt64 = 0

    func contains(_ id: Int64) -> Bool { members.contains(id) }

    @discardableResult
    mutating func insert(_ id: Int64) -> (inserted: Bool, memberAfterInsert: Int64) {
        let result = members.insert(id)
        if result.inserted { stamp(id) }
        return result
    }

    @discardableResult
    mutating func remove(_ id: Int64) -> Int64? {
        let removed = members.remove(id)
        if removed != nil { stamp(id) }
        return removed
    }

    private mutating func stamp(_ id: Int64) {
        counter &+= 1
        stamps[PeerChunks.index(of: id)] = counter
    }
}

extension NetworkMapBuilder {
    /// `peer` as `viewer` sees it, from `cache` when its record and online state are unchanged. A subnet router's
    /// entry depends on the viewer (which routes it may use): built for the viewer, never cached.
    func cachedPeer(_ peer: ControlNode, for viewer: ControlNode, in tailnet: TailnetSnapshot, now: TailcfgTime,
                    cache: PeerCache) -> CachedPeer {
        let online = tailnet.online.contains(peer.id)
        let expired = peer.isExpired(at: now)
        guard peer.advertisedRoutes.isEmpty else {
            return CachedPeer(node: peerNode(peer, for: viewer, in: tailnet, now: now), source: nil, online: online, expired: expired)
        }
        // The engine drops a node's entry whenever its record changes (``PeerCache/remove(_:)``); comparing the records
        // here instead would cost more than the entry saves (a Hostinfo is compared field by field).
        if let cached = cache.entries[peer.id], cached.online == online, cached.expired == expired,
           cache.trustsRecords || cached.source == peer {
            return cached
        }
        let fresh = CachedPeer(node: wireNode(peer, in: tailnet, now: now), source: peer, online: online, expired: expired)
        cache.entries[peer.id] = fresh
        return fresh
    }

    /// Node `id`'s entry for `viewer`: the cached one while it is right about online and expiry (the engine's cache
    /// drops an entry whenever its record changes), else one made now.
    private func peerEntry(_ id: Int64, for viewer: ControlNode, in tailnet: TailnetSnapshot, now: TailcfgTime,
                           cache: PeerCache) -> CachedPeer? {
        if cache.trustsRecords, let cached = cache.entries[id], cached.online == tailnet.online.contains(id),
           cached.expiryHolds(at: now) {
            return cached
        }
        guard let peer = tailnet.nodes[id] else { return nil }
        return cachedPeer(peer, for: viewer, in: tailnet, now: now, cache: cache)
    }

    /// Every authorized node but `node`, in ID order, from the cache's runs (``PeerChunks``): a current run is copied
    /// as it is; a stale one is made again from the entries. A run holding a subnet router (whose entry depends on the
    /// viewer) is never kept.
    private func chunkedPeers(for node: ControlNode, in tailnet: TailnetSnapshot, stamps: [Int64: UInt64], now: TailcfgTime,
                              cache: PeerCache, userIDs: inout Set<Int64>) -> [CachedPeer] {
        let (ids, runs) = cache.authorizedRuns(in: tailnet)
        var list = [CachedPeer]()
        list.reserveCapacity(ids.count)
        for (index, range) in runs {
            let onlineStamp = stamps[index, default: 0]
            let run: PeerChunks.Run
            if let current = cache.chunks.current(index, onlineStamp: onlineStamp, now: now) {
                run = current
            } else {
                var entries = [CachedPeer](), users = Set<Int64>(), shareable = true
                var validUntil: TailcfgTime?
                entries.reserveCapacity(range.count)
                for id in ids[range] {
                    // Made for a viewer other than the run's own nodes when this viewer is in the run: an entry never
                    // depends on the viewer but a router's, and those runs are not kept.
                    guard let entry = peerEntry(id, for: node, in: tailnet, now: now, cache: cache) else { continue }
                    if entry.source == nil { shareable = false }
                    if let expiry = entry.keyExpiry, !expiry.isGoZero, now < expiry, validUntil.map({ expiry < $0 }) ?? true {
                        validUntil = expiry
                    }
                    entries.append(entry)
                    users.insert(entry.userID)
                }
                run = PeerChunks.Run(peers: entries, userIDs: users, recordStamp: cache.chunks.recordStamp(index),
                                     onlineStamp: onlineStamp, validUntil: validUntil)
                if shareable { cache.chunks.keep(run, at: index) }
            }
            if PeerChunks.index(of: node.id) == index {
                for entry in run.peers where entry.node.id != node.id { list.append(entry) }
            } else {
                list.append(contentsOf: run.peers)
            }
            userIDs.formUnion(run.userIDs)
        }
        return list
    }

    /// The full map for `node` with its peers as references (``CachedPeer``), in the order ``fullMap`` gives them;
    /// the map itself has `peers` empty (nil when `omitPeers`).
    public func fullMapPlan(for node: ControlNode, in tailnet: TailnetSnapshot, now: TailcfgTime, omitPeers: Bool,
                            cache: PeerCache) -> (map: MapResponse, peers: [CachedPeer]?) {
        var response = MapResponse()
        response.node = selfNode(node, in: tailnet, now: now)
        response.derpMap = derpMap.current
        var peers: [CachedPeer]?
        var userIDs: Set<Int64> = [node.userID]
        if !omitPeers {
            // The engine's cache follows every record change: with a policy that lets everyone see everyone, the
            // peers are the authorized nodes but the viewer, and an entry still right about online and expiry is
            // used as it is (no record copied per peer: at 10,000 nodes that copying was most of a stream's cost).
            let trusted = cache.trustsRecords
            let everyone = trusted && node.authorized && (policy is AllowAllPolicy || (policy as? CompiledPolicy)?.policy == nil)
            if everyone, let stamps = tailnet.onlineStamps {
                peers = chunkedPeers(for: node, in: tailnet, stamps: stamps, now: now, cache: cache, userIDs: &userIDs)
            } else {
                let ids = everyone ? cache.authorizedIDs(in: tailnet).filter { $0 != node.id } : peerIDs(of: node, in: tailnet)
                var list = [CachedPeer]()
                list.reserveCapacity(ids.count)
                for id in ids {
                    guard let entry = peerEntry(id, for: node, in: tailnet, now: now, cache: cache) else { continue }
                    list.append(entry)
                    userIDs.insert(entry.userID)
                }
                peers = list
            }
            response.peers = []
        }
        response.dnsConfig = dnsConfig()
        response.domain = configuration.baseDomain
        response.collectServices = false
        response.packetFilter = policy.filterRules(for: node, in: tailnet)
        if let ssh = policy.sshPolicy(for: node, in: tailnet) { response.sshPolicy = Self.sshValue(ssh) }
        response.userProfiles = userProfiles(for: userIDs, in: tailnet)
        response.controlTime = now
        return (response, peers)
    }
}
