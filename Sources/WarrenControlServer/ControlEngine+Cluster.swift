// Several warren-control instances on one database (PostgreSQL), any of which serves any client. Each engine keeps
// the tailnet in memory, as a single instance does; what another instance changes reaches it through the cluster
// link (``ControlCluster``): the records it wrote (the store's change feed, in commit order), and which nodes have a
// map stream open there (presence). The engine re-reads what changed and tells its own map sessions exactly as if
// the change had been made here. Its own writes come back on the feed too and are skipped (it acted on them when it
// made them). Ephemeral nodes are reaped by one instance at a time (a singleton), since a node's stream may end on
// one instance and resume on another; key expiry is announced by every instance to its own sessions (it follows
// from the clock and the records each has, and writes nothing, so there is nothing to run only once).

import Foundation
import TailscaleKeys
import WarrenControlStore
import WarrenTailcfg

extension ControlEngine {
    /// Links this engine to the other instances on its database and starts listening to them (what they change
    /// from here on is kept until followed). Call before ``load()``, then run
    /// ``followCluster(ephemeralSweepInterval:)``. `storedPolicy`: the policy comes from the store (false when the
    /// server runs a policy file: the store's versions are then not put in force). Throws when the database
    /// cannot be reached.
    public func attach(cluster: any ControlCluster, storedPolicy: Bool = true) async throws {
        self.cluster = cluster
        followsStoredPolicy = storedPolicy
        clusterEvents = try await cluster.events()
    }

    /// Follows the other instances until the calling task is cancelled: applies their changes and presence, and
    /// takes its turn at reaping ephemeral nodes. Throws when the link cannot be set up.
    public func followCluster(ephemeralSweepInterval: Duration? = nil) async throws {
        guard let cluster, let events = clusterEvents else { throw ClusterSetupError("followCluster: no cluster attached") }
        clusterEvents = nil
        let timeout = configuration.ephemeralInactivityTimeout
        let interval = ephemeralSweepInterval ?? min(max(timeout / 4, .milliseconds(100)), .seconds(5))
        let reaper = Task { [weak self] in
            await cluster.runSingleton(named: "ephemeral-reaper", onChange: { [weak self] held in
                Task { [weak self] in await self?.ephemeralReaperHeld(held) }
            }) { [weak self] in
                while !Task.isCancelled {
                    await self?.sweepEphemeral()
                    try? await Task.sleep(for: interval)
                }
            }
        }
        logger.info("following the other instances", metadata: ["instance": "\(cluster.instanceID)"])
        for await event in events {
            if Task.isCancelled { break }
            await apply(event, from: cluster)
        }
        reaper.cancel()
        await reaper.value
    }

    /// Whether this instance reaps ephemeral nodes now (tests).
    public var reapsEphemeralNodes: Bool { ephemeralReaper }

    private func ephemeralReaperHeld(_ held: Bool) {
        ephemeralReaper = held
        ephemeralOfflineSince = [:]
    }

    /// One pass of the ephemeral reaper: a node offline on every instance for `ephemeralInactivityTimeout` (as seen
    /// by this instance, counted from when it took the singleton at the earliest) is deleted.
    func sweepEphemeral() async {
        let clock = ContinuousClock()
        let timeout = configuration.ephemeralInactivityTimeout
        var due: [Int64] = []
        var seen = Set<Int64>()
        for node in nodes.values where node.ephemeral {
            seen.insert(node.id)
            if isOnlineAnywhere(node.id) {
                ephemeralOfflineSince[node.id] = nil
                continue
            }
            let since = ephemeralOfflineSince[node.id] ?? clock.now
            ephemeralOfflineSince[node.id] = since
            if since.duration(to: clock.now) >= timeout { due.append(node.id) }
        }
        for id in ephemeralOfflineSince.keys where !seen.contains(id) { ephemeralOfflineSince[id] = nil }
        for id in due.sorted() {
            guard let node = nodes[id], node.ephemeral, !isOnlineAnywhere(id) else { continue }
            do {
                try await deleteNode(id: id)
                ephemeralOfflineSince[id] = nil
                logger.info("ephemeral node removed after inactivity", metadata: ["node": "\(id)"])
            } catch {
                logger.warning("ephemeral node could not be removed", metadata: ["node": "\(id)", "error": "\(error)"])
            }
        }
    }

    /// Takes in one event. Records other instances changed are collected and applied by one drain at a time: what
    /// arrives while a drain reads the store is taken by its next round, all together (one read for all the nodes,
    /// their patches in one batch). Under load (a mass join or reconnect on another instance: one notification per
    /// transaction) this keeps the work per stream bounded instead of one urgent message per changed node.
    /// Re-reading a record gives its current state, so merging changes and taking them out of order is safe.
    func apply(_ event: ClusterEvent, from cluster: any ControlCluster) async {
        switch event {
        case .changes(let changes):
            for change in changes where change.origin != cluster.instanceID {
                switch change.kind {
                case "user": if let id = Int64(change.id) { clusterPending.users.insert(id) }
                case "node":
                    if let id = Int64(change.id), clusterPending.nodes.insert(id).inserted { clusterPending.nodeOrder.append(id) }
                case "registration": clusterPending.registrations.insert(change.id)
                case "policy": clusterPending.policy = true
                default: break  // keys: read from the store when used, nothing kept here
                }
            }
        case .resync(let reason):
            logger.warning("re-reading the tailnet from the store", metadata: ["reason": "\(reason)"])
            clusterPending = ClusterPending()
            clusterPending.resync = true
        case .presence(let elsewhere):
            applyPresence(elsewhere)
            return
        }
        guard !clusterPending.isEmpty, !clusterDraining else { return }
        clusterDraining = true
        // In a task of its own, so that this loop goes on taking events while the drain waits for the store.
        Task { [weak self] in await self?.drainClusterChanges() }
    }

    /// Applies what was collected, round after round, until nothing is left.
    private func drainClusterChanges() async {
        defer { clusterDraining = false }
        while !clusterPending.isEmpty {
            let work = clusterPending
            clusterPending = ClusterPending()
            if work.resync {
                await resync()
                continue
            }
            do {
                if !work.users.isEmpty { try await applyRemoteUsers(work.users.sorted()) }
                if !work.nodeOrder.isEmpty { try await applyRemoteNodes(work.nodeOrder) }
                if work.policy { try await applyStoredPolicy() }
                for id in work.registrations.sorted() { try await applyRemoteRegistration(id) }
            } catch {
                // A read failed (the database is away): everything is read again.
                logger.error("a change from another instance could not be applied; reloading", metadata: ["error": "\(error)"])
                clusterPending.resync = true
            }
        }
    }

    // MARK: Records

    private func applyRemoteUsers(_ ids: [Int64]) async throws {
        let before = users
        try await reloadUsers()
        let changed = Set(ids.filter { before[$0] != users[$0] })
        guard !changed.isEmpty else { return }
        // Their nodes' entries carry the user's profile (and the policy may name the user by e-mail).
        for node in nodes.values.sorted(by: { $0.id < $1.id }) where changed.contains(node.userID) {
            broadcast(about: node.id, .full)
        }
    }

    /// Re-reads the nodes another instance wrote, all in one read, then applies them one after the other without
    /// waiting in between: their patches go out together in the engine's next batch. (Read and applied one at a time,
    /// each node's urgent patch, an endpoint change, went out alone to every stream while the next was read: a mass
    /// reconnect on the other instance cost N messages per stream here, 257,393 for 1,000 streams on two instances.)
    func applyRemoteNodes(_ ids: [Int64]) async throws {
        guard let store = directory as? StoreDirectory else {
            for id in ids { try await applyRemoteNode(id) }
            return
        }
        let stored = try await store.nodes(ids: ids)
        for id in ids {
            if let node = stored[id] {
                try await applyRemoteNode(node)
            } else {
                dropNode(id)
            }
        }
    }

    /// Re-reads a node another instance wrote and tells this instance's sessions what changed.
    func applyRemoteNode(_ id: Int64) async throws {
        guard let node = try await directory.node(id: id) else {
            dropNode(id)
            return
        }
        try await applyRemoteNode(node)
    }

    /// A node as the store has it now (read by the caller).
    func applyRemoteNode(_ stored: ControlNode) async throws {
        var node = stored
        let id = node.id
        let before = nodes[id]
        if let live = before {
            if node.capabilityVersion == 0 { node.capabilityVersion = live.capabilityVersion }
            if node.homeDERP == 0 { node.homeDERP = live.homeDERP }
        }
        guard node != before else { return }
        if users[node.userID] == nil { try await reloadUsers() }
        index(node)
        // A node that joined elsewhere may be online there already (presence can arrive before its record).
        if remoteOnline.contains(id) { onlineNodes.insert(id) }
        let time = now()
        guard let before else {
            broadcast(about: id, .full)
            return
        }
        // What a client reports while connected (to the other instance) goes out as a patch; anything else as a new entry.
        var reportedOnly = before
        reportedOnly.endpoints = node.endpoints
        reportedOnly.discoKey = node.discoKey
        reportedOnly.homeDERP = node.homeDERP
        reportedOnly.lastSeen = node.lastSeen
        if reportedOnly == node {
            var patch = PeerChange(nodeID: id)
            if before.endpoints != node.endpoints { patch.endpoints = node.endpoints }
            if before.discoKey != node.discoKey { patch.discoKey = node.discoKey }
            if before.homeDERP != node.homeDERP { patch.derpRegion = node.homeDERP }
            if before.lastSeen != node.lastSeen, let seen = node.lastSeen { patch.lastSeen = seen }
            broadcast(about: id, .patch(patch))
        } else {
            broadcast(about: id, .full)
        }
        // Streams opened with a key the node no longer has (it rotated or logged in again elsewhere), or whose key
        // expired now, end: the client comes back with its current key.
        if before.nodeKey != node.nodeKey || (node.isExpired(at: time) && !before.isExpired(at: time)) {
            closeSessions(of: id)
        }
        if node.authorized, !before.authorized { resendFullMap(to: id) }
    }

    /// Puts the store's newest policy in force, unless it already is (or the server runs a policy file).
    private func applyStoredPolicy() async throws {
        guard followsStoredPolicy, let store = (directory as? StoreDirectory)?.store else { return }
        guard let stored = try await store.read({ try $0.currentPolicy() }) else { return }
        if let inForce = compiledPolicy?.policyVersion, inForce >= stored.version { return }
        do {
            let changed = try putStoredPolicyInForce(text: stored.text, version: stored.version)
            logger.info("policy from another instance in force", metadata: ["version": "\(stored.version)", "nodes changed": "\(changed)"])
        } catch {
            logger.error("the stored policy cannot be put in force", metadata: ["version": "\(stored.version)", "error": "\(error)"])
        }
    }

    /// A login waiting here was approved or refused on another instance: its Followup poll answers now.
    private func applyRemoteRegistration(_ authID: String) async throws {
        guard let login = pending[authID], login.isWaiting, let store = directory as? StoreDirectory else { return }
        if try await store.pendingLoginRecord(id: authID) == nil {
            // Refused there (`auth reject` drops the record), or forgotten once its time ran out.
            pendingLoginRejected(id: authID)
        } else {
            wakeLoginWaiters(authID)
        }
    }

    /// An interactive login, here or (with other instances) one another instance started: the device's register
    /// request may reach any instance, and so may the person approving it.
    func pendingLogin(_ authID: String) async -> PendingLogin? {
        if let login = pending[authID] { return login }
        guard cluster != nil, let store = directory as? StoreDirectory,
              let record = try? await store.pendingLoginRecord(id: authID) else { return nil }
        if let login = pending[authID] { return login }
        var request = RegisterRequest()
        request.nodeKey = record.nodeKey
        request.hostinfo = record.hostinfo.flatMap { try? TailcfgJSON.decode(Hostinfo.self, from: Array($0.utf8)) }
        if request.hostinfo == nil, !record.hostname.isEmpty {
            var hostinfo = Hostinfo(HostinfoFields())
            hostinfo.hostname = record.hostname
            request.hostinfo = hostinfo
        }
        request.ephemeral = record.ephemeral
        var login = PendingLogin(request: request, machineKey: record.machineKey, created: TailcfgTime(date: record.created),
                                 expires: TailcfgTime(date: record.expires))
        if let approved = record.approvedNodeID, let node = nodes[approved.rawValue] { login.completed = node }
        pending[authID] = login
        return login
    }

    /// Everything read again (the feed may have missed changes): users, nodes (those gone are dropped), the policy.
    func resync() async {
        statistics.clusterResyncs += 1
        do {
            try await reloadUsers()
            let stored = try await directory.nodes()
            let ids = Set(stored.map(\.id))
            for id in nodes.keys.sorted() where !ids.contains(id) { dropNode(id) }
            for node in stored { try await applyRemoteNode(node) }
            try await applyStoredPolicy()
            for (id, login) in pending where login.isWaiting { try await applyRemoteRegistration(id) }
        } catch {
            logger.error("re-reading the tailnet failed; the next change or resync tries again", metadata: ["error": "\(error)"])
        }
    }

    // MARK: Presence

    /// The nodes other live instances serve, as of now: those that came online elsewhere (and not here) are
    /// online for this instance's sessions; those that went (and are not here) offline, with what going offline
    /// does here (the route failover grace, then the election).
    func applyPresence(_ elsewhere: Set<Int64>) {
        let came = elsewhere.subtracting(remoteOnline)
        let went = remoteOnline.subtracting(elsewhere)
        remoteOnline = elsewhere
        for id in came.sorted() where nodes[id] != nil && !isOnline(id) {
            onlineNodes.insert(id)
            cancelRouteGrace(for: id)
            ephemeralOfflineSince[id] = nil
            var patch = PeerChange(nodeID: id)
            patch.online = true
            broadcast(about: id, .patch(patch))
        }
        for id in went.sorted() where !isOnline(id) {
            guard onlineNodes.remove(id) != nil, nodes[id] != nil else { continue }
            startRouteGrace(for: id)
            var patch = PeerChange(nodeID: id)
            patch.online = false
            patch.lastSeen = now()
            broadcast(about: id, .patch(patch))
        }
        if !came.isEmpty || !went.isEmpty {
            logger.debug("presence on other instances changed", metadata: ["came": "\(came.count)", "went": "\(went.count)"])
        }
    }
}

/// The cluster link was asked for without one.
public struct ClusterSetupError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// Records other instances changed, waiting to be applied (``ControlEngine/apply(_:from:)``).
struct ClusterPending {
    var users = Set<Int64>()
    var nodes = Set<Int64>()
    /// `nodes` in the order they first came.
    var nodeOrder: [Int64] = []
    var registrations = Set<String>()
    var policy = false
    /// Everything is to be read again (this supersedes the rest).
    var resync = false

    var isEmpty: Bool { users.isEmpty && nodeOrder.isEmpty && registrations.isEmpty && !policy && !resync }
}
