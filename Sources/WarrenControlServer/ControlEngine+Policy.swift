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
    }

    /// Tells the policy that node `id` changed (or went).
    func policyAffected(by id: Int64) -> PolicyFanOut {
        var fanOut = PolicyFanOut(affected: builder.policy.nodesChanged([id], in: snapshot))
        if nodes[id]?.advertisedRoutes.isEmpty == false || routeOwners.values.contains(id) {
            let before = routeOwners
            routeOwners = currentRouteOwners()
            var moved: Set<Int64> = []
            for (prefix, owner) in before where routeOwners[prefix] != owner { moved.insert(owner) }
            for (prefix, owner) in routeOwners where before[prefix] != owner { moved.insert(owner) }
            moved.remove(id)
            fanOut.newRouteOwners = moved.filter { nodes[$0] != nil }.sorted()
        }
        return fanOut
    }

    /// Each served subnet route's primary router (as NetworkMapBuilder.primaryRoutes decides).
    func currentRouteOwners() -> [IPPrefix: Int64] {
        let current = snapshot
        var owners: [IPPrefix: Int64] = [:]
        for node in nodes.values where node.authorized && !node.advertisedRoutes.isEmpty {
            for prefix in builder.policy.servedRoutes(of: node, in: current) where prefix.bits != 0 {
                if let owner = owners[prefix], owner < node.id { continue }
                owners[prefix] = node.id
            }
        }
        return owners
    }

    func pushPolicyResults(to fanOut: PolicyFanOut) {
        pushPolicyResults(to: fanOut.affected)
        for id in fanOut.newRouteOwners { broadcast(about: id, .full) }
    }

    /// Sends each session of the `affected` nodes (nil: every node) what the policy now gives it, where that
    /// differs from what the session has: nothing at all when nothing differs.
    func pushPolicyResults(to affected: Set<Int64>?) {
        if let affected, affected.isEmpty { return }
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
                let added = desired.subtracting(session.knownPeers).sorted()
                let removed = session.knownPeers.subtracting(desired).sorted()
                var upserts = added
                if filter != session.lastFilter || !added.isEmpty || !removed.isEmpty {
                    // Which subnet routes the viewer may use follows the same rules: resend the routers.
                    upserts += session.knownPeers.intersection(desired).filter { nodes[$0]?.advertisedRoutes.isEmpty == false }.sorted()
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
                session.knownPeers = desired
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
        routeOwners = currentRouteOwners()
        pushPolicyResults(to: affected)
        // A router whose served routes changed (autoApprovers): its peers need its new AllowedIPs.
        for id in affected.sorted() where nodes[id]?.advertisedRoutes.isEmpty == false {
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
        CompiledPolicy.tailnet(from: snapshot)
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
