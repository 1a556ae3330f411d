// The policy side of the engine's fan-out: after a node changes (or the policy is replaced), the nodes whose
// policy results moved receive what moved (packet filter, peers added or removed, SSH policy, their own
// capabilities, routers whose AllowedIPs depend on what they may reach), and no one else receives anything.

import WarrenPacket
import WarrenPolicy
import WarrenTailcfg

/// `policy set` on a server whose policy cannot change at run time.
public struct PolicyChangeRefusal: Error, Hashable, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ text: String) { description = text }
}

extension ControlEngine {
    /// What a node's change means beyond the node itself.
    struct PolicyFanOut {
        /// The nodes whose policy results may have moved (nil: all).
        var affected: Set<Int64>?
        /// Other routers that became or stopped being the primary router of a route: their peers need their
        /// new AllowedIPs.
        var newRouteOwners: [Int64] = []
        /// The changed node itself became or stopped being a primary router: its peers need its whole node
        /// (a patch, such as coming online, does not carry AllowedIPs).
        var ownRoutesMoved = false
    }

    /// Tells the policy that node `id` changed (or went).
    func policyAffected(by id: Int64) -> PolicyFanOut {
        var fanOut = PolicyFanOut(affected: builder.policy.nodesChanged([id], in: snapshot))
        if nodes[id]?.advertisedRoutes.isEmpty == false || routeOwners.values.contains(id) {
            var moved = reelectRouteOwners()
            fanOut.ownRoutesMoved = moved.remove(id) != nil
            fanOut.newRouteOwners = moved.sorted()
        }
        return fanOut
    }

    /// Whether the node counts as online for the primary election: a map stream is open, or its last one
    /// ended less than `routeFailoverGrace` ago (a client reconnecting its stream keeps its routes).
    func onlineForRoutes(_ id: Int64) -> Bool {
        isOnlineAnywhere(id) || routeGrace[id] != nil
    }

    /// Each served subnet route's primary router, elected from the current routers with the current
    /// primaries as history (``NetworkMapBuilder/electPrimaries(routers:online:previous:)``).
    func electRouteOwners(previous: [IPPrefix: Int64]) -> [IPPrefix: Int64] {
        let current = snapshot
        var routers: [Int64: [IPPrefix]] = [:]
        for node in nodes.values where node.authorized && !node.advertisedRoutes.isEmpty {
            let subnets = builder.policy.servedRoutes(of: node, in: current).filter { $0.bits != 0 }
            if !subnets.isEmpty { routers[node.id] = subnets }
        }
        return NetworkMapBuilder.electPrimaries(routers: routers, online: onlineForRoutes, previous: previous)
    }

    /// Elects again; returns the (still existing) routers that gained or lost a primary route.
    func reelectRouteOwners() -> Set<Int64> {
        let before = routeOwners
        routeOwners = electRouteOwners(previous: before)
        var moved: Set<Int64> = []
        for (prefix, owner) in before where routeOwners[prefix] != owner { moved.insert(owner) }
        for (prefix, owner) in routeOwners where before[prefix] != owner { moved.insert(owner) }
        if !moved.isEmpty {
            logger.info("primary routers changed", metadata: [
                "routes": "\(routeOwners.filter { before[$0.key] != $0.value }.map { "\($0.key)=\($0.value)" }.sorted())",
                "removed": "\(before.keys.filter { routeOwners[$0] == nil }.map(\.description).sorted())"])
        }
        return moved.filter { nodes[$0] != nil }
    }

    /// The node's last map stream is ending (call before its peers are told): for `routeFailoverGrace` it
    /// still counts as online for the election; then, if no stream came back, the routes it was primary
    /// for fail over to an online router. With no grace, the offline broadcast itself elects again.
    func startRouteGrace(for id: Int64) {
        cancelRouteGrace(for: id)
        guard nodes[id]?.advertisedRoutes.isEmpty == false || routeOwners.values.contains(id) else { return }
        let grace = configuration.routeFailoverGrace
        guard grace > .zero else { return }
        nextRouteGraceToken += 1
        let token = nextRouteGraceToken
        let task = Task { [weak self] in
            try? await Task.sleep(for: grace)
            guard !Task.isCancelled else { return }
            await self?.routeGraceEnded(id, token: token)
        }
        routeGrace[id] = RouteGrace(token: token, task: task)
    }

    /// A map stream of the node opened (or the node went): its grace ends without a failover.
    func cancelRouteGrace(for id: Int64) {
        routeGrace.removeValue(forKey: id)?.task.cancel()
    }

    private func routeGraceEnded(_ id: Int64, token: Int) {
        // A grace cancelled (and perhaps started again) meanwhile is not this one.
        guard routeGrace[id]?.token == token else { return }
        routeGrace[id] = nil
        routeFailover(after: id)
    }

    /// The node is offline for the election: elect again and send every router that gained or lost a
    /// route (the node itself included) to its peers, which update their AllowedIPs and PrimaryRoutes.
    private func routeFailover(after id: Int64) {
        guard !isOnlineAnywhere(id) else { return }
        sendRouters(reelectRouteOwners().sorted())
    }

    /// Sends routers whose primary routes moved (their records unchanged) to everyone who sees them, all in
    /// one message per session: a peer never holds the route on both routers, or on neither, in between.
    /// Each router also gets its own node (its PrimaryRoutes).
    func sendRouters(_ ids: [Int64]) {
        let routers = ids.compactMap { nodes[$0] }
        guard !routers.isEmpty else { return }
        // Batched patches first (a router's going offline before its routes' new primary).
        flushPeerChanges()
        let current = snapshot
        let time = now()
        var sent = 0
        for (viewerID, viewerSessions) in sessions {
            guard let viewer = nodes[viewerID] else { continue }
            let visible = routers.filter {
                $0.id != viewerID && viewer.authorized && $0.authorized && builder.policy.canSee(viewer, $0, in: current)
            }
            let own = routers.first { $0.id == viewerID }
            guard !visible.isEmpty || own != nil else { continue }
            let peers = visible.map { builder.peerNode($0, for: viewer, in: current, now: time) }
            let selfNode = own.map { builder.selfNode($0, in: current, now: time) }
            for session in viewerSessions.values {
                var message = MapResponse()
                message.node = selfNode
                if !peers.isEmpty {
                    let added = visible.filter { session.knownPeers.insert($0.id).inserted }
                    message.peersChanged = peers
                    if !added.isEmpty { message.userProfiles = builder.userProfiles(for: added.map(\.userID), in: current) }
                }
                session.outbox.yield(message)
                sent += 1
            }
        }
        statistics.incrementalUpdatesSent += sent
    }

    func pushPolicyResults(to fanOut: PolicyFanOut) {
        pushPolicyResults(to: fanOut.affected)
        sendRouters(fanOut.newRouteOwners)
    }

    /// Sends each session of the `affected` nodes (nil: every node) what the policy now gives it, where that
    /// differs from what the session has: nothing at all when nothing differs.
    func pushPolicyResults(to affected: Set<Int64>?) {
        if let affected, affected.isEmpty { return }
        flushPeerChanges()
        let current = snapshot
        let time = now()
        let policy = builder.policy
        for viewerID in affected ?? Set(sessions.keys) {
            guard let viewer = nodes[viewerID], let viewerSessions = sessions[viewerID], !viewerSessions.isEmpty else { continue }
            let filter = policy.filterRules(for: viewer, in: current)
            let ssh = policy.sshPolicy(for: viewer, in: current)
            let caps = policy.capabilities(for: viewer, in: current)
            let desired = Set(builder.peerIDs(of: viewer, in: current))
            for session in viewerSessions.values {
                var message = MapResponse()
                var changed = false
                let added = desired.filter { !session.knownPeers.contains($0) }.sorted()
                let removed = session.knownPeers.filter { !desired.contains($0) }
                var upserts = added
                if filter != session.lastFilter || !added.isEmpty || !removed.isEmpty {
                    // Which subnet routes the viewer may use follows the same rules: resend the routers.
                    upserts += desired.filter { session.knownPeers.contains($0) && nodes[$0]?.advertisedRoutes.isEmpty == false }.sorted()
                }
                if !upserts.isEmpty {
                    let peers = upserts.compactMap { nodes[$0] }
                    message.peersChanged = peers.map { builder.peerNode($0, for: viewer, in: current, now: time) }
                    if !added.isEmpty {
                        message.userProfiles = builder.userProfiles(for: added.compactMap { nodes[$0]?.userID }, in: current)
                    }
                    changed = true
                }
                if !removed.isEmpty {
                    message.peersRemoved = removed
                    changed = true
                }
                session.knownPeers = PeerIDSet(desired)
                if filter != session.lastFilter {
                    message.packetFilter = filter
                    session.lastFilter = filter
                    changed = true
                }
                if ssh != session.lastSSH {
                    message.sshPolicy = NetworkMapBuilder.sshValue(ssh)
                    session.lastSSH = ssh
                    changed = true
                }
                if caps != session.lastCaps {
                    message.node = builder.selfNode(viewer, in: current, now: time)
                    session.lastCaps = caps
                    changed = true
                }
                guard changed else { continue }
                session.outbox.yield(message)
                statistics.incrementalUpdatesSent += 1
            }
        }
    }

    /// Puts a new policy in force (nil: allow all) and sends the nodes whose results changed what changed;
    /// the others receive nothing. Returns the IDs of the nodes that changed.
    @discardableResult
    public func replacePolicy(_ policy: Policy?, version: Int64? = nil) throws -> Set<Int64> {
        guard let compiled = builder.policy as? CompiledPolicy else {
            throw PolicyChangeRefusal("this server's policy hook cannot be replaced at run time")
        }
        let affected = compiled.replace(with: policy, version: version, in: snapshot)
        let moved = reelectRouteOwners()
        pushPolicyResults(to: affected)
        // A router whose served routes changed (autoApprovers): its peers need its new AllowedIPs.
        for id in affected.union(moved).sorted() where nodes[id]?.advertisedRoutes.isEmpty == false {
            broadcast(about: id, .full)
        }
        logger.info("policy replaced", metadata: ["nodes changed": "\(affected.count)"])
        return affected
    }

    /// The policy in force, if the engine runs a replaceable one.
    public var compiledPolicy: CompiledPolicy? { builder.policy as? CompiledPolicy }
}

/// A policy text that may not be put in force: it does not parse or validate, or its tests fail.
public struct PolicyRejection: Error, Sendable, Equatable {
    /// One per problem, with line and column where known.
    public var problems: [PolicyError]
    public init(_ problems: [PolicyError]) { self.problems = problems }
}

extension ControlEngine {
    /// The live tailnet as the policy sees it (for a policy's tests).
    public func policyTailnet() -> Tailnet {
        CompiledPolicy.tailnet(from: snapshot, providerGroups: compiledPolicy?.providerGroupsInPolicy ?? false)
    }

    /// Parses and validates a policy text and runs its `tests` and `sshTests` against the live tailnet.
    public func checkPolicy(_ text: String) throws(PolicyRejection) -> Policy {
        let tailnet = policyTailnet()
        let policy: Policy
        do {
            policy = try PolicyParser.parse(text, tailnetDomain: tailnet.domain)
        } catch {
            throw PolicyRejection([error])
        }
        let failures = PolicyTestRunner(policy: policy, tailnet: tailnet).run()
        guard failures.isEmpty else { throw PolicyRejection(failures) }
        return policy
    }

    /// Checks a text and puts it in force; the number of nodes whose results changed.
    public func setPolicy(text: String) throws -> Int {
        try replacePolicy(try checkPolicy(text)).count
    }

    /// Puts a text already checked (``checkPolicy(_:)``) and stored as `version` in force, unless a newer
    /// version already is; the number of nodes whose results changed.
    public func putStoredPolicyInForce(text: String, version: Int64) throws -> Int {
        let policy = try PolicyParser.parse(text, tailnetDomain: policyTailnet().domain)
        return try replacePolicy(policy, version: version).count
    }
}
