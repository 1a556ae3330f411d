// WarrenPolicy's engine behind the control engine's policy hook: a HuJSON policy and the live tailnet in,
// each node's packet filter, peers, SSH policy, capabilities and served routes out.
//
// The compiled state follows the tailnet one node at a time: ``nodesChanged(_:in:)`` applies each changed
// node to the PolicyEngine as a NodeChange and answers which nodes' results changed, so the control engine
// re-sends only those. Results are cached per node and dropped when the node is among the changed.
// Without a policy (`policy: nil`) everything is allowed, as on a tailnet that never set one.

import Synchronization
import WarrenPacket
import WarrenPolicy
import WarrenTailcfg

public final class CompiledPolicy: PacketFilterPolicy {
    private struct State {
        var policy: Policy?
        /// The store version of `policy` when one was given (a replacement by an older version is ignored).
        var version: Int64 = 0
        var engine: PolicyEngine?
        var built = false
        /// What the engine was last told, by node ID.
        var known: [Int64: TailnetNode] = [:]
        var idByName: [String: Int64] = [:]
        /// The users the engine was built with, as the policy sees them (a change of name or e-mail rebuilds it).
        var users: [Int64: TailnetUser] = [:]
        var filters: [Int64: [FilterRule]] = [:]
        var peers: [Int64: Set<Int64>] = [:]
        var ssh: [Int64: SSHPolicy?] = [:]
        var caps: [Int64: NodeCapMap] = [:]
        /// Sets of peer IDs built (work counted for tests: one per node per policy, not one per question).
        var peerSetsBuilt = 0
        /// Changes found by a query's own check, still to be reported by ``nodesChanged(_:in:)`` (nil: all).
        var unreported: Set<Int64>? = []

        mutating func dropCaches(_ ids: some Sequence<Int64>) {
            for id in ids {
                filters[id] = nil
                peers[id] = nil
                ssh[id] = nil
                caps[id] = nil
            }
        }
    }

    private let state: Mutex<State>
    private let options: CompileOptions

    /// Sets of peer IDs built so far (tests).
    var peerSetsBuilt: Int { state.withLock { $0.peerSetsBuilt } }

    /// The policy in force; nil: allow all.
    public var policy: Policy? { state.withLock { $0.policy } }
    /// The store version of the policy in force (0: none given).
    public var policyVersion: Int64 { state.withLock { $0.version } }

    public init(policy: Policy?, options: CompileOptions = CompileOptions()) {
        state = Mutex(State(policy: policy))
        self.options = options
    }

    /// Parses a policy file's text (HuJSON); throws WarrenPolicy's error with line and column.
    public convenience init(text: String) throws {
        self.init(policy: try PolicyParser.parse(text))
    }

    // MARK: Following the tailnet

    static func tailnetNode(_ node: ControlNode, users: [Int64: ControlUser]) -> TailnetNode {
        TailnetNode(name: node.givenName, user: node.tags.isEmpty ? users[node.userID]?.name : nil, tags: node.tags,
                    addresses: node.addresses, advertisedRoutes: node.advertisedRoutes,
                    approvedRoutes: node.approvedRoutes.map(\.masked))
    }

    /// The tailnet a snapshot describes, as the policy sees it (with the users' groups from the identity provider
    /// when `providerGroups`: `oidc.groups_in_policy`).
    public static func tailnet(from snapshot: TailnetSnapshot, providerGroups: Bool = false) -> Tailnet {
        Tailnet(users: tailnetUsers(snapshot, providerGroups: providerGroups).values.sorted { $0.id < $1.id },
                nodes: snapshot.nodes.values.map { tailnetNode($0, users: snapshot.users) })
    }

    /// The users as the policy sees them: a user is named by its e-mail address (`alice@example.com`) when it has one
    /// and by its name (`alice@`) in any case, as headscale resolves a user token (by e-mail or by name; WarrenPolicy
    /// matches a token against both when they differ).
    /// With `providerGroups` (`oidc.groups_in_policy`), a user also carries the groups its identity provider gave it,
    /// which the policy's groups of those names include; a change of them compiles the policy again.
    static func tailnetUsers(_ snapshot: TailnetSnapshot, providerGroups: Bool = false) -> [Int64: TailnetUser] {
        snapshot.users.mapValues {
            TailnetUser(id: Int($0.id), name: $0.name, email: $0.loginName, providerGroups: providerGroups ? $0.providerGroups : [])
        }
    }

    /// Whether `group:NAME` includes the users whose identity provider puts them in NAME (`oidc.groups_in_policy`).
    public var providerGroupsInPolicy: Bool { options.providerGroups }

    private func build(_ s: inout State, _ snapshot: TailnetSnapshot) {
        s.known = snapshot.nodes.mapValues { Self.tailnetNode($0, users: snapshot.users) }
        s.idByName = Dictionary(s.known.map { ($0.value.name, $0.key) }, uniquingKeysWith: { a, _ in a })
        s.users = Self.tailnetUsers(snapshot, providerGroups: options.providerGroups)
        s.filters = [:]; s.peers = [:]; s.ssh = [:]; s.caps = [:]
        s.built = true
        guard let policy = s.policy else { s.engine = nil; return }
        let users = s.users.values.sorted { $0.id < $1.id }
        s.engine = PolicyEngine(policy: policy, tailnet: Tailnet(users: users, nodes: Array(s.known.values)), options: options)
    }

    /// Applies the nodes (changed, added or gone from `snapshot`) and returns the IDs of the nodes whose
    /// results may have changed; nil when everything was compiled again (a first build, or users changed).
    private func apply(_ s: inout State, _ ids: some Sequence<Int64>, _ snapshot: TailnetSnapshot) -> Set<Int64>? {
        guard s.built, s.users == Self.tailnetUsers(snapshot, providerGroups: options.providerGroups) else {
            build(&s, snapshot)
            return nil
        }
        var removals: [(Int64, TailnetNode)] = []
        var upserts: [(Int64, TailnetNode)] = []
        for id in Set(ids) {
            let new = snapshot.nodes[id].map { Self.tailnetNode($0, users: snapshot.users) }
            let old = s.known[id]
            guard new != old else { continue }
            if let old, new == nil || new?.name != old.name { removals.append((id, old)) }
            if let new { upserts.append((id, new)) }
        }
        var changedNames: Set<String> = []
        var changed: Set<Int64> = []
        for (id, old) in removals {
            changedNames.formUnion(s.engine?.apply(.remove(name: old.name)) ?? [])
            if s.idByName[old.name] == id { s.idByName[old.name] = nil }
            s.known[id] = nil
            changed.insert(id)
        }
        for (id, new) in upserts {
            changedNames.formUnion(s.engine?.apply(.upsert(new)) ?? [])
            s.known[id] = new
            s.idByName[new.name] = id
            changed.insert(id)
        }
        for name in changedNames { if let id = s.idByName[name] { changed.insert(id) } }
        s.dropCaches(changed)
        return changed
    }

    /// Makes sure the compiled state describes `snapshot` before a query about `node`: a cheap check, and a
    /// whole diff when it fails (a caller that did not report its changes).
    private func ensure(_ s: inout State, _ node: ControlNode, _ snapshot: TailnetSnapshot) {
        if s.built, s.known.count == snapshot.nodes.count, s.known[node.id] == Self.tailnetNode(node, users: snapshot.users) {
            return
        }
        let found = apply(&s, Set(s.known.keys).union(snapshot.nodes.keys), snapshot)
        if let found, let before = s.unreported { s.unreported = before.union(found) } else { s.unreported = nil }
    }

    public func nodesChanged(_ ids: Set<Int64>, in snapshot: TailnetSnapshot) -> Set<Int64>? {
        state.withLock { s in
            let found = apply(&s, ids, snapshot)
            let earlier = s.unreported
            s.unreported = []
            // Allow-all: results never depend on other nodes (the table is kept current for a later policy).
            if s.policy == nil { return [] }
            guard let found, let earlier else { return nil }
            return found.union(earlier)
        }
    }

    /// Replaces the policy (nil: allow all) and returns the IDs of the nodes whose filter, peers, SSH policy,
    /// capabilities or served routes changed. With a store `version`, a version older than the one in force
    /// changes nothing (two `policy set` calls racing: the newest stored version wins).
    public func replace(with policy: Policy?, version: Int64? = nil, in snapshot: TailnetSnapshot) -> Set<Int64> {
        state.withLock { s in
            if let version {
                guard version > s.version else { return [] }
                s.version = version
            }
            if !s.built { build(&s, snapshot) } else { _ = apply(&s, Set(s.known.keys).union(snapshot.nodes.keys), snapshot) }
            let ids = snapshot.nodes.keys
            let before = Dictionary(uniqueKeysWithValues: ids.map { ($0, results(&s, $0, snapshot)) })
            s.policy = policy
            build(&s, snapshot)
            s.unreported = []
            var changed: Set<Int64> = []
            for id in ids where results(&s, id, snapshot) != before[id] { changed.insert(id) }
            return changed
        }
    }

    private struct Results: Equatable {
        var filter: [FilterRule]
        var peers: Set<Int64>
        var ssh: SSHPolicy?
        var caps: NodeCapMap
        var routes: [IPPrefix]
    }

    private func results(_ s: inout State, _ id: Int64, _ snapshot: TailnetSnapshot) -> Results? {
        guard let node = snapshot.nodes[id] else { return nil }
        return Results(filter: filter(&s, node), peers: peers(&s, node), ssh: ssh(&s, node), caps: caps(&s, node),
                       routes: served(s, node))
    }

    // MARK: Results per node (state current)

    private func filter(_ s: inout State, _ node: ControlNode) -> [FilterRule] {
        guard let engine = s.engine else { return AllowAllPolicy.rules }
        if let cached = s.filters[node.id] { return cached }
        let rules = engine.packetFilter(for: node.givenName)
        s.filters[node.id] = rules
        return rules
    }

    private func peers(_ s: inout State, _ node: ControlNode) -> Set<Int64> {
        guard let engine = s.engine else {
            s.peerSetsBuilt += 1
            return Set(s.known.keys).subtracting([node.id])
        }
        if let cached = s.peers[node.id] { return cached }
        s.peerSetsBuilt += 1
        let ids = Set(engine.peers(for: node.givenName).compactMap { s.idByName[$0] })
        s.peers[node.id] = ids
        return ids
    }

    private func ssh(_ s: inout State, _ node: ControlNode) -> SSHPolicy? {
        guard let engine = s.engine else { return nil }
        if let cached = s.ssh[node.id] { return cached }
        let policy = engine.sshPolicy(for: node.givenName)
        s.ssh[node.id] = .some(policy)
        return policy
    }

    private func caps(_ s: inout State, _ node: ControlNode) -> NodeCapMap {
        guard let engine = s.engine, let tailnetNode = engine.node(named: node.givenName) else { return [:] }
        if let cached = s.caps[node.id] { return cached }
        let caps = engine.capabilities(for: tailnetNode)
        s.caps[node.id] = caps
        return caps
    }

    private func served(_ s: State, _ node: ControlNode) -> [IPPrefix] {
        let approved = s.engine?.effectiveApprovedRoutes(for: node.givenName) ?? node.approvedRoutes.map(\.masked)
        return NetworkMapBuilder.served(advertised: node.advertisedRoutes, approved: approved)
    }

    // MARK: PacketFilterPolicy

    public func filterRules(for node: ControlNode, in tailnet: TailnetSnapshot) -> [FilterRule] {
        state.withLock { s in
            ensure(&s, node, tailnet)
            return filter(&s, node)
        }
    }

    public func canSee(_ node: ControlNode, _ peer: ControlNode, in tailnet: TailnetSnapshot) -> Bool {
        state.withLock { s in
            ensure(&s, node, tailnet)
            // Without a policy everyone sees everyone the tailnet has: asked of the table, not of a set of every node
            // built per call (the engine asks once per viewer per change: that made a join's fan-out O(N²)).
            guard s.engine != nil else { return peer.id != node.id && s.known[peer.id] != nil }
            return peers(&s, node).contains(peer.id)
        }
    }

    public func peerIDs(of node: ControlNode, in tailnet: TailnetSnapshot) -> Set<Int64>? {
        state.withLock { s in
            ensure(&s, node, tailnet)
            return peers(&s, node)
        }
    }

    public func sshPolicy(for node: ControlNode, in tailnet: TailnetSnapshot) -> SSHPolicy? {
        state.withLock { s in
            ensure(&s, node, tailnet)
            return ssh(&s, node)
        }
    }

    public func capabilities(for node: ControlNode, in tailnet: TailnetSnapshot) -> NodeCapMap {
        state.withLock { s in
            ensure(&s, node, tailnet)
            return caps(&s, node)
        }
    }

    public func servedRoutes(of node: ControlNode, in tailnet: TailnetSnapshot) -> [IPPrefix] {
        state.withLock { s in
            ensure(&s, node, tailnet)
            return served(s, node)
        }
    }

    public func canAccessRoute(_ viewer: ControlNode, _ route: IPPrefix, in tailnet: TailnetSnapshot) -> Bool {
        state.withLock { s in
            ensure(&s, viewer, tailnet)
            guard let engine = s.engine else { return true }
            return engine.canAccessRoute(viewer.givenName, route)
        }
    }
}
