// The coordination engine: registration, map sessions and the change fan-out. One actor owns the live
// tailnet (nodes, who is online, open map streams); the directory persists it. Map messages leave the
// actor as values and are encoded by each stream's writer, so JSON and zstd work is spread out.

import Foundation
import Logging
import TailscaleKeys
import WarrenControlStore
import WarrenPacket
import WarrenTailcfg

/// A map request the server will not serve, with the HTTP status and text to answer.
public struct MapRefusal: Error, Hashable, Sendable, CustomStringConvertible {
    public var status: Int
    public var description: String
    public init(status: Int, _ text: String) {
        self.status = status
        description = text
    }
}

public actor ControlEngine {
    public enum MapReply: Sendable {
        /// One response (nil: an empty body, for lite updates).
        case single(MapResponse?)
        /// A long poll: messages until the stream finishes (changes that pile up are merged).
        case stream(MapSessionOutbox)
    }

    /// One open map stream. A class: the fan-out changes thousands of them per event, in place.
    final class Session {
        let outbox: MapSessionOutbox
        var knownPeers: PeerIDSet
        var lastFilter: [FilterRule]
        var keepAlive: Task<Void, Never>?
        /// What the policy gave this session last (ControlEngine+Policy.swift sends only changes).
        var lastSSH: SSHPolicy?
        var lastCaps: NodeCapMap
        /// The engine's ``PeerChangeBatch/sequence`` when this session's full map was built: batched changes up to
        /// it are already in that map.
        var openedAt: Int

        init(outbox: MapSessionOutbox, knownPeers: PeerIDSet, lastFilter: [FilterRule], keepAlive: Task<Void, Never>?,
             lastSSH: SSHPolicy? = nil, lastCaps: NodeCapMap = [:], openedAt: Int = 0) {
            self.outbox = outbox
            self.knownPeers = knownPeers
            self.lastFilter = lastFilter
            self.keepAlive = keepAlive
            self.lastSSH = lastSSH
            self.lastCaps = lastCaps
            self.openedAt = openedAt
        }
    }

    struct PendingLogin {
        var request: RegisterRequest
        var machineKey: MachinePublic
        var created: TailcfgTime
        var expires: TailcfgTime
        /// The client's address (for the per-source cap), if the listener told.
        var source: String?
        var completed: ControlNode?
        /// An admin refused the login: its Followup poll is answered with a refusal, never with a node.
        var rejected = false
        /// Neither completed nor refused.
        var isWaiting: Bool { completed == nil && !rejected }
    }

    enum PeerUpdate {
        case full
        case patch(PeerChange)
        case removed
    }

    public private(set) var configuration: ControlConfiguration
    public nonisolated let builder: NetworkMapBuilder
    let directory: any ControlDirectory
    let logger: Logger
    let now: @Sendable () -> TailcfgTime

    var users: [Int64: ControlUser] = [:]
    var nodes: [Int64: ControlNode] = [:] { didSet { metrics.record(nodes: nodes.count) } }
    var byNodeKey: [NodePublic: Int64] = [:]
    var byMachineKey: [MachinePublic: Int64] = [:]
    var sessions: [Int64: [Int: Session]] = [:]
    /// The nodes with at least one open map stream (kept with `sessions`, so a snapshot costs nothing per node).
    var onlineNodes = OnlineNodes()
    /// Each node's wire form as its peers see it, shared by every full map (``CachedPeer``).
    let peerCache = PeerCache(trustsRecords: true)
    /// Each node's MagicDNS label, lowercased (new names are checked against it without a pass over every node).
    var labels: [String: Int64] = [:]
    /// Peer patches waiting to go to every stream in one message (ControlEngine+Batching.swift).
    var peerChangeBatch = PeerChangeBatch()
    private var nextSessionID = 1
    private var openSessions = 0
    var pending: [String: PendingLogin] = [:]
    /// Followup long polls waiting on a pending login, woken when it is approved or forgotten.
    private var loginWaiters: [String: [Int: CheckedContinuation<Void, Never>]] = [:]
    private var nextWaiterID = 0
    private var ephemeralReapers: [Int64: Task<Void, Never>] = [:]
    /// Several instances on one database (ControlEngine+Cluster.swift): the link to the others, and the nodes with
    /// a map stream open on another instance (they count as online here too).
    var cluster: (any ControlCluster)?
    /// The link's events, from ``attach(cluster:storedPolicy:)`` (before the tailnet is loaded) until followed.
    var clusterEvents: AsyncStream<ClusterEvent>?
    /// Records other instances changed, not applied yet, and whether a drain is applying them (ControlEngine+Cluster.swift).
    var clusterPending = ClusterPending()
    var clusterDraining = false
    var remoteOnline: Set<Int64> = []
    /// With a cluster, ephemeral nodes are reaped by one instance (a singleton): since when it saw each offline.
    var ephemeralOfflineSince: [Int64: ContinuousClock.Instant] = [:]
    /// This instance holds the ephemeral reaper's singleton now.
    var ephemeralReaper = false
    /// Policy versions other instances store are put in force (not when this server runs a policy file).
    var followsStoredPolicy = true
    /// The primary router of each subnet route (ControlEngine+Policy.swift).
    var routeOwners: [IPPrefix: Int64] = [:]
    /// Routers whose last map stream ended within `routeFailoverGrace`, with the task that fails their
    /// routes over when it ends (ControlEngine+Policy.swift).
    var routeGrace: [Int64: RouteGrace] = [:]
    var nextRouteGraceToken = 0
    struct RouteGrace {
        var token: Int
        var task: Task<Void, Never>
    }

    /// Counters for tests, metrics and benchmarks.
    public internal(set) var statistics = Statistics() { didSet { metrics.record(from: oldValue, to: statistics) } }
    public nonisolated let metrics: ControlMetrics
    /// Encodes every map message the streams send (hand-written JSON, peers cached across messages).
    public nonisolated let mapEncoder: MapMessageEncoder

    public struct Statistics: Sendable, Hashable {
        public var fullMapsSent = 0
        public var incrementalUpdatesSent = 0
        public var keepAlivesSent = 0
        public var registrations = 0
        /// Times the tailnet was read again because the cluster's change feed may have missed changes.
        public var clusterResyncs = 0
    }

    public init(configuration: ControlConfiguration, directory: any ControlDirectory,
                policy: any PacketFilterPolicy = AllowAllPolicy(), logger: Logger = Logger(label: "warren.control"),
                now: @escaping @Sendable () -> TailcfgTime = { TailcfgTime(date: Date()) },
                metrics: ControlMetrics = ControlMetrics()) {
        self.configuration = configuration
        self.metrics = metrics
        self.mapEncoder = MapMessageEncoder(metrics: metrics)
        self.builder = NetworkMapBuilder(configuration: configuration, policy: policy)
        self.directory = directory
        self.logger = logger
        self.now = now
    }

    /// Loads the tailnet from the directory. Call once before serving.
    public func load() async throws {
        users = Dictionary(uniqueKeysWithValues: try await directory.users().map { ($0.id, $0) })
        nodes = [:]
        peerCache.removeAll()
        labels = [:]
        byNodeKey = [:]
        byMachineKey = [:]
        for node in try await directory.nodes() { index(node) }
        routeOwners = electRouteOwners(previous: [:])
        // Pending logins live in memory; rows left by an earlier run are orphans (their long polls are gone). With
        // other instances on the database, the rows may be theirs: only those whose time ran out go.
        if let store = directory as? StoreDirectory {
            let cutoff = cluster == nil ? now().adding(.seconds(365 * 24 * 3600)) : now()
            let dropped = try await store.deleteExpiredPendingLogins(now: cutoff)
            if dropped > 0 { logger.info("pending logins of an earlier run forgotten", metadata: ["count": "\(dropped)"]) }
        }
        logger.info("loaded tailnet", metadata: ["users": "\(users.count)", "nodes": "\(nodes.count)"])
    }

    func index(_ node: ControlNode) {
        let old = nodes[node.id]
        if let old {
            byNodeKey[old.nodeKey] = nil
            byMachineKey[old.machineKey] = nil
            if labels[old.givenName.lowercased()] == old.id { labels[old.givenName.lowercased()] = nil }
        }
        peerCache.remove(node.id, membership: old?.authorized != node.authorized)
        nodes[node.id] = node
        labels[node.givenName.lowercased()] = node.id
        byNodeKey[node.nodeKey] = node.id
        byMachineKey[node.machineKey] = node.id
    }

    var snapshot: TailnetSnapshot {
        TailnetSnapshot(nodes: nodes, users: users, online: onlineNodes.members, routeOwners: routeOwners,
                        onlineStamps: onlineNodes.stamps)
    }

    // MARK: Queries for the admin side

    public func allNodes() -> [ControlNode] { nodes.values.sorted { $0.id < $1.id } }
    /// Whether this instance has a map stream of the node open.
    public func isOnline(_ id: Int64) -> Bool { !(sessions[id]?.isEmpty ?? true) }
    /// Whether any instance has (this one, or another on the same database).
    public func isOnlineAnywhere(_ id: Int64) -> Bool { isOnline(id) || remoteOnline.contains(id) }
    public func pendingLoginIDs() -> [String] {
        let time = now()
        return pending.filter { $0.value.isWaiting && $0.value.expires > time }.keys.sorted()
    }
    /// Whether `id` is an interactive login still waiting for an admin (the `/register/<id>` page).
    public func isWaitingLogin(id: String) async -> Bool {
        guard let login = await pendingLogin(id) else { return false }
        return login.isWaiting && login.expires > now()
    }
    /// The node whose current node key is `key` (DERP admission).
    public func node(withNodeKey key: NodePublic) -> ControlNode? { byNodeKey[key].flatMap { nodes[$0] } }
    /// The engine's clock (injected in tests).
    public nonisolated func currentTime() -> TailcfgTime { now() }

    /// Users may have been added by the admin side; refresh before looking one up.
    public func reloadUsers() async throws {
        users = Dictionary(uniqueKeysWithValues: try await directory.users().map { ($0.id, $0) })
    }

    // MARK: Registration

    /// `source`: the client's address, for the per-source cap on pending interactive logins.
    public func register(_ request: RegisterRequest, machineKey: MachinePublic, source: String? = nil) async -> RegisterResponse {
        statistics.registrations += 1
        do {
            var request = request
            if let hostinfo = request.hostinfo { request.hostinfo = try ClientInputLimits.sanitize(hostinfo) }
            let response = try await registerOrRefuse(request, machineKey: machineKey, source: source)
            metrics.record(register: response.authURL.isEmpty ? .ok : .authURL)
            return response
        } catch let refusal as ClientInputRefusal {
            metrics.record(register: .refused)
            logger.notice("registration refused", metadata: ["machine": "\(machineKey)", "reason": "\(refusal)"])
            var response = RegisterResponse()
            response.error = refusal.description
            return response
        } catch let refusal as RegistrationRefusal {
            metrics.record(register: .refused)
            logger.notice("registration refused", metadata: ["machine": "\(machineKey)", "reason": "\(refusal)"])
            var response = RegisterResponse()
            response.error = refusal.description
            return response
        } catch {
            metrics.record(register: .error)
            // The details (database paths, system errors) stay in the log; the client learns only that it failed.
            logger.error("registration failed", metadata: ["machine": "\(machineKey)", "error": "\(error)"])
            var response = RegisterResponse()
            response.error = "internal server error; try again later"
            return response
        }
    }

    private func registerOrRefuse(_ request: RegisterRequest, machineKey: MachinePublic, source: String?) async throws -> RegisterResponse {
        guard request.version >= CapabilityVersions.minimumSupported else {
            throw RegistrationRefusal("client capability version \(request.version) is too old; this server needs "
                                      + "\(CapabilityVersions.minimumSupported) (Tailscale 1.80) or newer")
        }
        guard !request.nodeKey.raw.isZero else { throw RegistrationRefusal("register request carries no node key") }
        let time = now()

        // Logout: an expiry in the past.
        if !request.expiry.isGoZero && request.expiry < time {
            return try await logout(request, machineKey: machineKey, at: time)
        }
        if !request.followup.isEmpty {
            return try await followup(request, machineKey: machineKey)
        }
        let authKey = request.auth?.authKey ?? ""
        if let id = byNodeKey[request.nodeKey], let node = nodes[id] {
            guard node.machineKey == machineKey else {
                throw RegistrationRefusal("this node key is registered to another machine")
            }
            if authKey.isEmpty {
                if node.isExpired(at: time) {
                    var response = registerResponse(for: node, at: time)
                    response.nodeKeyExpired = true
                    return response
                }
                var updated = node
                if let hostinfo = request.hostinfo { updated.hostinfo = hostinfo }
                updated.capabilityVersion = request.version
                if updated != node { try await save(updated, fields: .hostinfo, update: .full) }
                return registerResponse(for: updated, at: time)
            }
        }
        if !request.oldNodeKey.raw.isZero, authKey.isEmpty, let id = byNodeKey[request.oldNodeKey], let node = nodes[id],
           node.machineKey == machineKey, !node.isExpired(at: time) {
            // Key rotation: same node, new key, fresh expiry.
            var rotated = node
            rotated.nodeKey = request.nodeKey
            rotated.keyExpiry = expiry(tags: node.tags, at: time)
            if let hostinfo = request.hostinfo { rotated.hostinfo = hostinfo }
            try await save(rotated, fields: [.nodeKey, .expiry, .hostinfo], update: .full)
            logger.info("node key rotated", metadata: ["node": "\(rotated.id)"])
            return registerResponse(for: rotated, at: time)
        }
        if !authKey.isEmpty {
            return try await admitWithPreAuthKey(authKey, request: request, machineKey: machineKey, at: time)
        }
        // Interactive login: the client shows the URL and comes back with Followup.
        try await forgetExpiredLogins(at: time)
        // The same machine asking again (a client restarted, a lost reply) gets the login it already has.
        if let (id, _) = pending.first(where: { $0.value.machineKey == machineKey && $0.value.request.nodeKey == request.nodeKey
                                                && $0.value.isWaiting }) {
            var response = RegisterResponse()
            response.authURL = authURL(id)
            return response
        }
        let waiting = pending.values.filter(\.isWaiting)
        guard waiting.count < configuration.maxPendingLogins else {
            logger.warning("interactive login refused: too many pending logins", metadata: ["limit": "\(configuration.maxPendingLogins)"])
            throw RegistrationRefusal("too many interactive logins are waiting for approval (at most \(configuration.maxPendingLogins)); "
                                      + "try again later or use a pre-auth key")
        }
        if let source, waiting.count(where: { $0.source == source }) >= configuration.maxPendingLoginsPerSource {
            logger.notice("interactive login refused: too many pending logins from one address", metadata: ["source": "\(source)"])
            throw RegistrationRefusal("too many interactive logins from \(source) are waiting for approval (at most "
                                      + "\(configuration.maxPendingLoginsPerSource)); try again later")
        }
        let authID = Self.randomID()
        let expires = time.adding(configuration.pendingLoginLifetime)
        try await directory.savePendingLogin(id: authID, request: request, machineKey: machineKey, created: time, expires: expires)
        pending[authID] = PendingLogin(request: request, machineKey: machineKey, created: time, expires: expires, source: source)
        var response = RegisterResponse()
        response.authURL = authURL(authID)
        logger.info("interactive login started", metadata: ["id": "\(authID)"])
        return response
    }

    /// Drops the interactive logins older than `pendingLoginLifetime` (here and in the store) and wakes their
    /// Followup polls.
    private func forgetExpiredLogins(at time: TailcfgTime) async throws {
        let expired = pending.filter { $0.value.expires <= time }.map(\.key)
        guard !expired.isEmpty else { return }
        for id in expired {
            pending[id] = nil
            wakeLoginWaiters(id)
        }
        try await directory.deletePendingLogins(ids: expired)
        logger.info("expired interactive logins forgotten", metadata: ["count": "\(expired.count)"])
    }

    /// Redeems the key and creates (or logs in again) the node in one transaction: a failure in between
    /// leaves the key unspent. A client repeating a request whose reply it lost (same machine key, node key and
    /// one-off key) gets its node back.
    private func admitWithPreAuthKey(_ authKey: String, request: RegisterRequest, machineKey: MachinePublic,
                                     at time: TailcfgTime) async throws -> RegisterResponse {
        if users.isEmpty { try await reloadUsers() }
        let existing = byMachineKey[machineKey].flatMap { nodes[$0] }
        let labels = labels, existingID = existing?.id
        let taken: @Sendable (String) -> Bool = { label in labels[label].map { owner in owner != existingID } ?? false }
        let configuration = configuration
        let result = try await directory.admitWithPreAuthKey(authKey, machineKey: machineKey, nodeKey: request.nodeKey, now: time) { grant in
            Self.draftAdmission(request, machineKey: machineKey, existing: existing, takenLabels: taken, grant: grant,
                                configuration: configuration, at: time)
        }
        if result.replayed {
            logger.info("registration repeated with a spent one-off key; node returned", metadata: ["node": "\(result.node.id)"])
            if let live = nodes[result.node.id] { return registerResponse(for: live, at: time) }
        }
        var node = result.node
        if let live = nodes[node.id] {
            node.homeDERP = live.homeDERP
            node.endpoints = live.endpoints
        }
        node.capabilityVersion = request.version
        if users[node.userID] == nil { try await reloadUsers() }
        index(node)
        logger.info(existing == nil ? "node registered" : "node logged in again",
                    metadata: ["node": "\(node.id)", "name": "\(node.givenName)", "ipv4": "\(node.ipv4.map { "\($0)" } ?? "-")"])
        broadcast(about: node.id, .full)
        return registerResponse(for: node, at: time)
    }

    /// The node a pre-auth key admits: the machine's existing node logged in again (with the fields to write), or a
    /// new one (fields nil).
    nonisolated static func draftAdmission(_ request: RegisterRequest, machineKey: MachinePublic, existing: ControlNode?,
                                           takenLabels: (String) -> Bool, grant: PreAuthGrant, configuration: ControlConfiguration,
                                           at time: TailcfgTime) -> (node: ControlNode, fields: NodeFields?) {
        let hostname = request.hostinfo?.hostname ?? ""
        let tags = grant.tags.sorted()
        let authorized = !configuration.requireDeviceApproval || grant.preApproved
        let expiry: TailcfgTime? = tags.isEmpty ? configuration.nodeKeyExpiry.map { time.adding($0) } : nil
        let ephemeral = grant.ephemeral || request.ephemeral == true
        if var node = existing {
            node.nodeKey = request.nodeKey
            node.userID = grant.userID
            node.hostinfo = request.hostinfo ?? node.hostinfo
            node.ephemeral = ephemeral
            node.tags = tags
            node.authorized = authorized || node.authorized
            node.keyExpiry = expiry
            node.capabilityVersion = request.version
            var fields: NodeFields = [.nodeKey, .hostinfo, .owner, .expiry, .authorized]
            if node.hostname != hostname, !hostname.isEmpty {
                node.hostname = hostname
                node.givenName = Self.uniqueLabel(MagicDNSLabel.sanitize(hostname), taken: takenLabels)
                fields.insert(.names)
            }
            return (node, fields)
        }
        var draft = ControlNode(id: 0, machineKey: machineKey, nodeKey: request.nodeKey, userID: grant.userID, hostname: hostname,
                                givenName: Self.uniqueLabel(MagicDNSLabel.sanitize(hostname), taken: takenLabels), created: time)
        draft.hostinfo = request.hostinfo
        draft.ephemeral = ephemeral
        draft.tags = tags
        draft.authorized = authorized
        draft.keyExpiry = expiry
        draft.capabilityVersion = request.version
        return (draft, nil)
    }

    /// Sets the URL clients use, once the listener knows its port.
    public func setServerURL(_ url: String) { configuration.serverURL = url }

    public func authURL(_ id: String) -> String {
        var base = configuration.serverURL
        while base.hasSuffix("/") { base.removeLast() }
        return "\(base)/register/\(id)"
    }

    private func logout(_ request: RegisterRequest, machineKey: MachinePublic, at time: TailcfgTime) async throws -> RegisterResponse {
        guard let id = byNodeKey[request.nodeKey], var node = nodes[id], node.machineKey == machineKey else {
            throw RegistrationRefusal("cannot log out: this node key is not registered")
        }
        var response = registerResponse(for: node, at: time)
        response.nodeKeyExpired = true
        if node.ephemeral {
            try await deleteNode(id: id)
            logger.info("ephemeral node logged out and deleted", metadata: ["node": "\(id)"])
        } else {
            node.keyExpiry = time
            try await save(node, fields: .expiry, update: .full)
            closeSessions(of: id)
            logger.info("node logged out", metadata: ["node": "\(id)"])
        }
        return response
    }

    private func followup(_ request: RegisterRequest, machineKey: MachinePublic) async throws -> RegisterResponse {
        guard let authID = request.followup.split(separator: "/").last.map(String.init), let login = await pendingLogin(authID) else {
            throw RegistrationRefusal("unknown or expired login URL; start the login again")
        }
        guard login.machineKey == machineKey else { throw RegistrationRefusal("this login URL belongs to another machine") }
        if login.rejected { throw answerRejected(authID) }
        guard login.expires > now() else {
            try await forgetExpiredLogins(at: now())
            throw RegistrationRefusal("unknown or expired login URL; start the login again")
        }
        guard let node = await waitForLogin(authID) else {
            if pending[authID]?.rejected == true { throw answerRejected(authID) }
            var response = RegisterResponse()
            response.authURL = request.followup
            return response
        }
        pending[authID] = nil
        return registerResponse(for: nodes[node.id] ?? node, at: now())
    }

    /// Waits until the login is approved here (``approveInteractiveLogin(id:userID:)``) or by an admin command
    /// (``pendingLoginApproved(id:)``), for at most `interactiveLoginWait`. No polling: the store is read once
    /// at the start and once per wake-up.
    private func waitForLogin(_ authID: String) async -> ControlNode? {
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: configuration.interactiveLoginWait)
        while true {
            if let done = pending[authID]?.completed { return done }
            if pending[authID] == nil || pending[authID]?.rejected == true { return nil }
            if let id = try? await directory.approvedNodeID(forPendingLogin: authID) {
                if let node = try? await reloadNode(id: id) {
                    pending[authID]?.completed = node
                    return node
                }
            }
            guard clock.now < deadline, !Task.isCancelled else { return nil }
            await sleepUntilWoken(authID, deadline: deadline)
        }
    }

    /// Suspends until ``wakeLoginWaiters(_:)`` for this login, the deadline, or cancellation.
    private func sleepUntilWoken(_ authID: String, deadline: ContinuousClock.Instant) async {
        let token = nextWaiterID
        nextWaiterID += 1
        let timer = Task { [weak self] in
            try? await Task.sleep(until: deadline, clock: .continuous)
            await self?.resumeWaiter(authID, token)
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                if Task.isCancelled {
                    continuation.resume()
                } else {
                    loginWaiters[authID, default: [:]][token] = continuation
                }
            }
        } onCancel: {
            Task { await self.resumeWaiter(authID, token) }
        }
        timer.cancel()
    }

    private func resumeWaiter(_ authID: String, _ token: Int) {
        guard let continuation = loginWaiters[authID]?.removeValue(forKey: token) else { return }
        if loginWaiters[authID]?.isEmpty == true { loginWaiters[authID] = nil }
        continuation.resume()
    }

    func wakeLoginWaiters(_ authID: String) {
        guard let waiters = loginWaiters.removeValue(forKey: authID) else { return }
        for continuation in waiters.values { continuation.resume() }
    }

    /// An admin approved a pending login through the store (`nodes register`): its Followup poll answers now.
    public func pendingLoginApproved(id authID: String) {
        wakeLoginWaiters(authID)
    }

    /// An admin refused a pending login (`auth reject`; the admin side already dropped its row from the store): the
    /// client's Followup poll is answered with a refusal now, and any later poll for it too. Returns false when no
    /// such login waits here.
    @discardableResult
    public func pendingLoginRejected(id authID: String) -> Bool {
        guard var login = pending[authID], login.isWaiting else { return false }
        login.rejected = true
        pending[authID] = login
        wakeLoginWaiters(authID)
        logger.info("interactive login rejected", metadata: ["id": "\(authID)"])
        return true
    }

    /// The refusal a rejected login's client gets; the login is forgotten once told.
    private func answerRejected(_ authID: String) -> RegistrationRefusal {
        pending[authID] = nil
        return RegistrationRefusal("the login was rejected by an administrator of this tailnet")
    }

    /// Followup polls waiting now (tests).
    var loginWaiterCount: Int { loginWaiters.values.reduce(0) { $0 + $1.count } }

    /// Re-reads a node the admin side changed in the store (rename, tags, expiry, approval, deletion) and
    /// tells every node concerned. Returns the node, or nil if it is gone.
    @discardableResult
    public func reloadNode(id: Int64) async throws -> ControlNode? {
        guard var node = try await directory.node(id: id) else {
            if nodes[id] != nil { try await deleteNode(id: id) }
            return nil
        }
        let before = nodes[id]
        if let live = before {
            node.homeDERP = live.homeDERP
            if node.capabilityVersion == 0 { node.capabilityVersion = live.capabilityVersion }
            if node.hostinfo == nil { node.hostinfo = live.hostinfo }
        }
        if users[node.userID] == nil { try await reloadUsers() }
        index(node)
        broadcast(about: id, .full)
        let time = now()
        if node.isExpired(at: time), !(before?.isExpired(at: time) ?? false) { closeSessions(of: id) }
        if node.authorized, before?.authorized == false { resendFullMap(to: id) }
        return node
    }

    /// Completes an interactive login for `userName` (what `nodes register --user U --key ID` does).
    @discardableResult
    public func approveInteractiveLogin(id authID: String, userID: Int64) async throws -> ControlNode {
        guard var login = await pendingLogin(authID), !login.rejected, login.expires > now() || login.completed != nil else {
            throw RegistrationRefusal("no pending login with key \(authID)")
        }
        if let done = login.completed { return done }
        try await reloadUsers()
        guard users[userID] != nil else { throw RegistrationRefusal("no user with ID \(userID)") }
        let time = now()
        let node = try await admit(login.request, machineKey: login.machineKey, userID: userID,
                                   ephemeral: login.request.ephemeral == true, tags: [],
                                   authorized: true, at: time)
        login.completed = node
        pending[authID] = login
        try await directory.markPendingLogin(id: authID, approvedNode: node.id)
        wakeLoginWaiters(authID)
        logger.info("interactive login approved", metadata: ["id": "\(authID)", "node": "\(node.id)"])
        return node
    }

    private func expiry(tags: [String], at time: TailcfgTime) -> TailcfgTime? {
        guard tags.isEmpty, let period = configuration.nodeKeyExpiry else { return nil }
        return time.adding(period)
    }

    /// Creates the node, or re-logs in the machine's existing node (keeping its ID, addresses and name).
    private func admit(_ request: RegisterRequest, machineKey: MachinePublic, userID: Int64, ephemeral: Bool,
                       tags: [String], authorized: Bool, at time: TailcfgTime) async throws -> ControlNode {
        if users[userID] == nil { try await reloadUsers() }
        let hostname = request.hostinfo?.hostname ?? ""
        let requestedTags = tags.isEmpty ? [] : tags.sorted()
        if let id = byMachineKey[machineKey], var node = nodes[id] {
            node.nodeKey = request.nodeKey
            node.userID = userID
            node.hostinfo = request.hostinfo ?? node.hostinfo
            node.ephemeral = ephemeral
            node.tags = requestedTags
            node.authorized = authorized || node.authorized
            node.keyExpiry = expiry(tags: requestedTags, at: time)
            node.capabilityVersion = request.version
            var fields: NodeFields = [.nodeKey, .hostinfo, .owner, .expiry, .authorized]
            if node.hostname != hostname, !hostname.isEmpty {
                node.hostname = hostname
                node.givenName = uniqueLabel(for: hostname, excluding: id)
                fields.insert(.names)
            }
            try await save(node, fields: fields, update: .full)
            logger.info("node logged in again", metadata: ["node": "\(id)", "name": "\(node.givenName)"])
            return node
        }
        var draft = ControlNode(id: 0, machineKey: machineKey, nodeKey: request.nodeKey, userID: userID,
                                hostname: hostname, givenName: uniqueLabel(for: hostname, excluding: nil), created: time)
        draft.hostinfo = request.hostinfo
        draft.ephemeral = ephemeral
        draft.tags = requestedTags
        draft.authorized = authorized
        draft.keyExpiry = expiry(tags: requestedTags, at: time)
        draft.capabilityVersion = request.version
        let node = try await directory.createNode(draft)
        index(node)
        logger.info("node registered", metadata: ["node": "\(node.id)", "name": "\(node.givenName)",
                                                  "ipv4": "\(node.ipv4.map { "\($0)" } ?? "-")"])
        broadcast(about: node.id, .full)
        return node
    }

    private func uniqueLabel(for hostname: String, excluding id: Int64?) -> String {
        Self.uniqueLabel(MagicDNSLabel.sanitize(hostname), taken: { label in self.labels[label].map { owner in owner != id } ?? false })
    }

    /// `base`, or with a suffix when `taken` (asked about lowercased labels) says it is someone else's: the store's
    /// rule (``MagicDNSLabel``), asked of the engine's label index instead of a set of every node's label.
    nonisolated static func uniqueLabel(_ base: String, taken: (String) -> Bool) -> String {
        (try? DNSLabel.unique(base) { taken($0.lowercased()) }) ?? base
    }

    private func registerResponse(for node: ControlNode, at time: TailcfgTime) -> RegisterResponse {
        var response = RegisterResponse()
        let user = users[node.userID] ?? ControlUser(id: node.userID, name: "user\(node.userID)")
        response.user.id = user.id
        response.user.displayName = user.displayName
        response.login.id = user.id
        response.login.provider = "warren"
        response.login.loginName = user.loginName
        response.login.displayName = user.displayName
        response.machineAuthorized = node.authorized
        response.nodeKeyExpired = node.isExpired(at: time)
        return response
    }

    // MARK: Map

    /// Serves a map request. Errors are ``MapRefusal``s whose text is safe to send to the client (internal errors
    /// are logged and answered with a plain 500).
    public func map(_ request: MapRequest, machineKey: MachinePublic) async throws -> MapReply {
        do {
            var request = request
            if let hostinfo = request.hostinfo { request.hostinfo = try ClientInputLimits.sanitize(hostinfo) }
            try ClientInputLimits.checkEndpoints(request.endpoints, types: request.endpointTypes)
            return try await mapOrRefuse(request, machineKey: machineKey)
        } catch let refusal as MapRefusal {
            throw refusal
        } catch let refusal as ClientInputRefusal {
            throw MapRefusal(status: 400, refusal.description)
        } catch {
            logger.error("map request failed", metadata: ["machine": "\(machineKey)", "error": "\(error)"])
            throw MapRefusal(status: 500, "internal server error; try again later")
        }
    }

    private func mapOrRefuse(_ request: MapRequest, machineKey: MachinePublic) async throws -> MapReply {
        guard request.version >= CapabilityVersions.minimumSupported else {
            throw MapRefusal(status: 400, "client capability version \(request.version) is too old; this server needs "
                             + "\(CapabilityVersions.minimumSupported) or newer")
        }
        guard let id = byNodeKey[request.nodeKey], var node = nodes[id] else {
            throw MapRefusal(status: 403, "node key not registered; log in first")
        }
        guard node.machineKey == machineKey else { throw MapRefusal(status: 403, "node key belongs to another machine") }
        let time = now()
        guard !node.isExpired(at: time) else { throw MapRefusal(status: 403, "node key expired; log in again") }

        // Endpoints, disco key and host details, from any request that carries them.
        let before = node
        if !request.discoKey.raw.isZero { node.discoKey = request.discoKey }
        if let endpoints = request.endpoints, !(request.stream == true && endpoints.isEmpty) { node.endpoints = endpoints }
        if let hostinfo = request.hostinfo {
            node.hostinfo = hostinfo
            if let derp = hostinfo.netInfo?.preferredDERP, derp > 0 { node.homeDERP = derp }
        }
        node.capabilityVersion = request.version
        var update: PeerUpdate?
        if node != before {
            let lightOnly = before.nodeKey == node.nodeKey && before.hostinfo == node.hostinfo
            var patch = PeerChange(nodeID: id)
            if before.endpoints != node.endpoints { patch.endpoints = node.endpoints }
            if before.discoKey != node.discoKey { patch.discoKey = node.discoKey }
            if before.homeDERP != node.homeDERP { patch.derpRegion = node.homeDERP }
            if before.capabilityVersion != node.capabilityVersion { patch.cap = node.capabilityVersion }
            try await directory.updateNode(node, fields: .reported)
            index(node)
            update = lightOnly ? .patch(patch) : .full
        }

        guard request.stream == true else {
            if let update { broadcast(about: id, update) }
            if request.omitPeers == true { return .single(nil) }
            statistics.fullMapsSent += 1
            return .single(builder.fullMap(for: node, in: snapshot, now: time, omitPeers: false, cache: peerCache))
        }

        let wasOnline = isOnlineAnywhere(id)
        if !isOnline(id) { cluster?.setPresence(node: id, online: true) }
        // A node has few streams open at once (one, and a second while it reconnects): past the cap the oldest
        // is closed, so a client that leaks streams cannot hold unbounded server state.
        if let open = sessions[id], open.count >= max(1, configuration.maxMapStreamsPerNode) {
            for oldest in open.keys.sorted().prefix(open.count - max(1, configuration.maxMapStreamsPerNode) + 1) {
                guard let session = sessions[id]?.removeValue(forKey: oldest) else { continue }
                session.keepAlive?.cancel()
                session.outbox.finish()
                openSessions -= 1
                logger.notice("map stream closed: too many streams for one node",
                              metadata: ["node": "\(id)", "session": "\(oldest)", "limit": "\(configuration.maxMapStreamsPerNode)"])
            }
        }
        let outbox = MapSessionOutbox(minimumInterval: configuration.mapUpdateInterval)
        let sessionID = nextSessionID
        nextSessionID += 1
        ephemeralReapers.removeValue(forKey: id)?.cancel()
        cancelRouteGrace(for: id)
        // Online from here: its own map, and every map built from now on, show it online.
        onlineNodes.insert(id)
        let current = snapshot
        let (full, fullPeers) = builder.fullMapPlan(for: node, in: current, now: time, omitPeers: request.omitPeers == true,
                                                    cache: peerCache)
        if let fullPeers { outbox.yield(full, peers: fullPeers) } else { outbox.yield(full) }
        statistics.fullMapsSent += 1
        let interval = configuration.keepAliveInterval
        let keepAlive = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                guard !Task.isCancelled else { return }
                await self?.sendKeepAlive(node: id, session: sessionID)
            }
        }
        sessions[id, default: [:]][sessionID] = Session(
            outbox: outbox, knownPeers: PeerIDSet(fullPeers?.map(\.node.id) ?? []),
            lastFilter: full.packetFilter ?? [], keepAlive: keepAlive,
            lastSSH: builder.policy.sshPolicy(for: node, in: current), lastCaps: builder.policy.capabilities(for: node, in: current),
            openedAt: peerChangeBatch.sequence)
        openSessions += 1
        metrics.record(online: sessions.count, sessions: openSessions)
        outbox.setOnTermination { [weak self] in
            Task { await self?.endSession(node: id, session: sessionID) }
        }
        // One change to the peers for everything this request changed, coming online included. A patch waits in the
        // batch (ControlEngine+Batching.swift): a mass reconnect costs each stream one message, not one per peer.
        switch (update, wasOnline) {
        case (.patch(var patch)?, false):
            patch.online = true
            broadcast(about: id, .patch(patch))
        case (nil, false):
            var patch = PeerChange(nodeID: id)
            patch.online = true
            broadcast(about: id, .patch(patch))
        case (let update?, _):
            broadcast(about: id, update)
        case (nil, true):
            break
        }
        // Its own patch just made is about itself: the batch need not come to this stream for it.
        sessions[id]?[sessionID]?.openedAt = peerChangeBatch.sequence
        logger.debug("map stream opened", metadata: ["node": "\(id)", "session": "\(sessionID)"])
        return .stream(outbox)
    }

    private func sendKeepAlive(node id: Int64, session: Int) {
        guard let s = sessions[id]?[session] else { return }
        var message = MapResponse.keepAliveMessage
        message.controlTime = now()
        s.outbox.yield(message)
        statistics.keepAlivesSent += 1
    }

    private func endSession(node id: Int64, session sessionID: Int) async {
        guard let session = sessions[id]?.removeValue(forKey: sessionID) else { return }
        session.keepAlive?.cancel()
        openSessions -= 1
        defer { metrics.record(online: sessions.count, sessions: openSessions) }
        guard sessions[id]?.isEmpty ?? true else { return }
        sessions[id] = nil
        cluster?.setPresence(node: id, online: false)
        // Still served by another instance: online for everyone, routes and all.
        if remoteOnline.contains(id) { return }
        onlineNodes.remove(id)
        // A router keeps its routes for a grace first: from here (before any suspension), every election
        // still counts it online until the grace ends or a stream comes back.
        startRouteGrace(for: id)
        guard var node = nodes[id] else { return }
        let time = now()
        node.lastSeen = time
        peerCache.remove(id, membership: false)
        nodes[id] = node
        try? await directory.updateNode(node, fields: .lastSeen)
        var patch = PeerChange(nodeID: id)
        patch.online = false
        patch.lastSeen = time
        broadcast(about: id, .patch(patch))
        logger.debug("node went offline", metadata: ["node": "\(id)"])
        if node.ephemeral && cluster == nil {
            let timeout = configuration.ephemeralInactivityTimeout
            ephemeralReapers[id]?.cancel()
            ephemeralReapers[id] = Task { [weak self] in
                try? await Task.sleep(for: timeout)
                guard !Task.isCancelled else { return }
                await self?.reapEphemeral(id)
            }
        }
    }

    private func reapEphemeral(_ id: Int64) async {
        ephemeralReapers[id] = nil
        guard let node = nodes[id], node.ephemeral, !isOnlineAnywhere(id) else { return }
        try? await deleteNode(id: id)
        logger.info("ephemeral node removed after inactivity", metadata: ["node": "\(id)"])
    }

    func closeSessions(of id: Int64) {
        for session in (sessions[id] ?? [:]).values { session.outbox.finish() }
    }

    /// A node's key expired (the clock passed it, see ``NodeKeyExpiryWatcher``): its peers get it with its
    /// key expiry and `Expired`; the node gets its own expired `Node`, then its map streams end.
    public func announceExpiry(of id: Int64) {
        guard let node = nodes[id], node.isExpired(at: now()) else { return }
        broadcast(about: id, .full)
        closeSessions(of: id)
    }

    /// Sends each open stream of the node a new full map (an admin approved the device: its peers appear).
    func resendFullMap(to id: Int64) {
        guard let node = nodes[id], let open = sessions[id] else { return }
        flushPeerChanges()
        let current = snapshot
        let time = now()
        for session in open.values {
            let full = builder.fullMap(for: node, in: current, now: time, omitPeers: false, cache: peerCache)
            session.knownPeers = PeerIDSet(full.peers?.map(\.id) ?? [])
            session.lastFilter = full.packetFilter ?? []
            session.lastSSH = builder.policy.sshPolicy(for: node, in: current)
            session.lastCaps = builder.policy.capabilities(for: node, in: current)
            session.outbox.yield(full)
            statistics.fullMapsSent += 1
        }
    }

    // MARK: Admin changes

    public func deleteNode(id: Int64) async throws {
        guard unindex(id) != nil else { return }
        try await directory.deleteNode(id: id)
        dropped(id)
    }

    /// Forgets a node the store no longer has (another instance deleted it) and tells everyone.
    func dropNode(_ id: Int64) {
        guard unindex(id) != nil else { return }
        if !isOnline(id) { onlineNodes.remove(id) }
        dropped(id)
    }

    private func unindex(_ id: Int64) -> ControlNode? {
        guard let node = nodes.removeValue(forKey: id) else { return nil }
        peerCache.remove(id)
        if labels[node.givenName.lowercased()] == id { labels[node.givenName.lowercased()] = nil }
        byNodeKey[node.nodeKey] = nil
        byMachineKey[node.machineKey] = nil
        return node
    }

    private func dropped(_ id: Int64) {
        cancelRouteGrace(for: id)
        closeSessions(of: id)
        broadcast(about: id, .removed)
    }

    /// Expires a node's key now (`nodes expire`): it must log in again; peers see it as expired.
    public func expireNode(id: Int64) async throws {
        guard var node = nodes[id] else { return }
        node.keyExpiry = now()
        try await save(node, fields: .expiry, update: .full)
        closeSessions(of: id)
    }

    /// Replaces a node record changed by the admin side (rename, tags, approval) and tells everyone.
    public func nodeChanged(_ node: ControlNode) async throws {
        try await save(node, fields: .all, update: .full)
    }

    /// Writes the `fields` the engine owns in this change (NodeFields), then tells everyone concerned.
    private func save(_ node: ControlNode, fields: NodeFields, update: PeerUpdate) async throws {
        try await directory.updateNode(node, fields: fields)
        index(node)
        broadcast(about: node.id, update)
    }

    // MARK: Fan-out

    /// Sends each session the part of the change it should see: the node itself gets its new `Node`;
    /// each peer that sees it gets a patch, an upsert or a removal.
    ///
    /// O(sessions) per change: the changed node's wire form, user profile and the messages peers get are
    /// the same for every viewer and are built once (and encoded once, ``SharedMapMessage``); sessions
    /// are objects changed in place (a copied session would copy its set of known peers on the first
    /// insert: O(N) per viewer, O(N^2) per join). Each writer merges what piles up (``MapSessionOutbox``).
    /// A subnet router is the exception: which of its routes a peer may use depends on the peer, so its
    /// upsert is built per viewer.
    func broadcast(about id: Int64, _ update: PeerUpdate) {
        // The policy learns of the change first; the nodes whose results moved get them after the loop.
        let affected = policyAffected(by: id)
        var update = update
        // A router that came online and took a route (no other router was online): peers need its AllowedIPs.
        if affected.ownRoutesMoved, case .patch = update, nodes[id] != nil { update = .full }
        // A patch joins the batch every stream gets as one message; anything else goes now, after what is batched
        // (the streams see the changes in the order they happened).
        if case .patch(let patch) = update {
            enqueuePeerChange(patch)
            pushPolicyResults(to: affected)
            return
        }
        flushPeerChanges()
        let current = snapshot
        let time = now()
        let changed = nodes[id]
        let profiles = changed.map { builder.userProfiles(for: [$0.userID], in: current) }
        // The messages a peer can get are the same for every peer (but a router's upsert): built, and
        // later encoded, once.
        let upsert = changed.flatMap { node -> SharedMapMessage? in
            guard node.advertisedRoutes.isEmpty else { return nil }
            var m = MapResponse()
            m.peersChanged = [builder.wireNode(node, in: current, now: time)]
            m.userProfiles = profiles
            return SharedMapMessage(m)
        }
        // A new or rewritten entry lets peers reach the node: it goes out past the streams' pacing (patches are
        // judged in ``isUrgent(_:)``).
        let urgent: Bool
        switch update {
        case .full: urgent = true
        case .patch, .removed: urgent = false
        }
        var removal = MapResponse()
        removal.peersRemoved = [id]
        let removed = SharedMapMessage(removal)
        var sent = 0
        for (viewerID, viewerSessions) in sessions {
            guard let viewer = nodes[viewerID] else { continue }
            // A device waiting for approval sees no one, and no one sees it.
            let visible = viewerID != id
                && (changed.map { viewer.authorized && $0.authorized && builder.policy.canSee(viewer, $0, in: current) } ?? false)
            for session in viewerSessions.values {
                var shared: SharedMapMessage?
                var message = MapResponse()
                if viewerID == id {
                    guard case .full = update, let changed else { continue }
                    message.node = builder.selfNode(changed, in: current, now: time)
                } else if !visible {
                    guard session.knownPeers.remove(id) != nil else { continue }
                    shared = removed
                } else if let changed, let profiles {
                    session.knownPeers.insert(id)
                    if let upsert {
                        shared = upsert
                    } else {
                        message.peersChanged = [builder.peerNode(changed, for: viewer, in: current, now: time)]
                        message.userProfiles = profiles
                    }
                } else {
                    continue
                }
                let removal = shared === removed
                if let shared {
                    session.outbox.yield(shared, urgent: urgent && !removal)
                } else {
                    session.outbox.yield(message, urgent: urgent)
                }
                sent += 1
            }
        }
        statistics.incrementalUpdatesSent += sent
        pushPolicyResults(to: affected)
    }

    static func randomID() -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz234567")
        var generator = SystemRandomNumberGenerator()
        return String((0..<24).map { _ in alphabet[Int(generator.next() % UInt64(alphabet.count))] })
    }
}

extension TailcfgTime {
    public func adding(_ duration: Duration) -> TailcfgTime {
        let (s, attos) = duration.components
        var seconds = secondsSince1970 &+ s
        var nanos = Int64(nanoseconds) + attos / 1_000_000_000
        if nanos >= 1_000_000_000 { seconds += 1; nanos -= 1_000_000_000 }
        if nanos < 0 { seconds -= 1; nanos += 1_000_000_000 }
        return TailcfgTime(secondsSince1970: seconds, nanoseconds: Int32(nanos))
    }
}
