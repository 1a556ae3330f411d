// Issue 13 §2, several instances: two engines on one PostgreSQL database, each with its own store and its own map
// sessions, linked by the cluster (change feed + presence + singletons). What one instance does reaches the other's
// sessions: a join, a policy, a rename, an approval of a login waiting on the other, streams opening and closing, an
// instance going away. The PostgreSQL server is the test process's own (PostgresTestServer). The real processes
// behind a load balancer, killed with -9, are ClusterFailoverTests.

import Foundation
import Logging
import Synchronization
import TailscaleKeys
import WarrenControlClient
import WarrenControlPostgres
import WarrenControlStore
import WarrenPacket
import WarrenPolicy
import WarrenTailcfg
import WarrenTestProbes
import XCTest
@testable import WarrenControlServer

final class ClusterSyncTests: XCTestCase {
    /// One instance: its store, cluster link, engine, and the task that follows the others.
    final class Instance: @unchecked Sendable {
        let store: PostgresControlStore
        let cluster: PostgresCluster
        let engine: ControlEngine
        var follower: Task<Void, Never>?

        init(store: PostgresControlStore, cluster: PostgresCluster, engine: ControlEngine) {
            self.store = store
            self.cluster = cluster
            self.engine = engine
        }

        /// Leaves the cluster as a dead process would: its link's connections close, its locks go.
        func stop() async {
            follower?.cancel()
            await follower?.value
            follower = nil
            await cluster.stop()
            await store.close()
        }
    }

    /// A client's view, filled by a task that reads its stream.
    final class Viewer: Sendable {
        let client: ControlClient
        final class Model: Sendable {
            let state = Mutex(ClientModel())
        }
        let model = Model()
        let reader: Task<Void, Never>
        let outbox: MapSessionOutbox

        init(client: ControlClient, outbox: MapSessionOutbox) {
            self.client = client
            self.outbox = outbox
            let model = self.model
            reader = Task {
                for await message in outbox { model.state.withLock { $0.apply(message) } }
            }
        }

        deinit { close() }
        /// The client goes away: its stream ends.
        func close() {
            outbox.cancel()
            reader.cancel()
        }
        var peers: [Int64: WarrenTailcfg.Node] { model.state.withLock { $0.peers } }
        var selfNode: WarrenTailcfg.Node? { model.state.withLock { $0.selfNode } }
    }

    var instances: [Instance] = []

    override func tearDown() async throws {
        for instance in instances { await instance.stop() }
        instances = []
    }

    func server() throws -> PostgresTestServer {
        do {
            return try PostgresTestServer.shared()
        } catch let error as PostgresTestServer.Unavailable where !error.required {
            throw XCTSkip(error.description)
        }
    }

    func settings(_ server: PostgresTestServer, database: String) -> PostgresSettings {
        PostgresSettings(host: server.socketDirectory, port: server.port, database: database, user: server.user, maxConnections: 4)
    }

    /// `count` instances on one fresh database, each loaded and following the others.
    var database = ""

    func cluster(_ count: Int, retry: Duration = .milliseconds(100),
                 configure: (inout ControlConfiguration) -> Void = { _ in }) async throws -> [Instance] {
        let server = try server()
        database = try server.createDatabase(prefix: "wcclu")
        var configuration = ControlConfiguration(serverURL: "http://127.0.0.1:1")
        configuration.mapUpdateInterval = .milliseconds(5)
        configure(&configuration)
        var logger = Logger(label: "cluster-test")
        logger.logLevel = .warning
        for _ in 0..<count {
            let store = try await PostgresControlStore(settings: settings(server, database: database))
            let directory = try StoreDirectory(store: store, ipv4Prefix: configuration.ipv4Prefix, ipv6Prefix: configuration.ipv6Prefix)
            let engine = ControlEngine(configuration: configuration, directory: directory,
                                       policy: CompiledPolicy(policy: nil, options: CompileOptions(controlURL: configuration.serverURL)),
                                       logger: logger)
            let link = PostgresCluster(store: store, pollInterval: .milliseconds(300), retryInterval: retry)
            try await engine.attach(cluster: link)
            try await engine.load()
            let instance = Instance(store: store, cluster: link, engine: engine)
            instance.follower = Task { try? await engine.followCluster(ephemeralSweepInterval: .milliseconds(50)) }
            instances.append(instance)
        }
        return instances
    }

    func createKey(_ store: any ControlStore, user: String = "alice", ephemeral: Bool = false) async throws -> (UserID, String) {
        try await store.transaction { tx in
            let owner = try tx.user(named: user) ?? tx.createUser(name: user, now: Date())
            var generator = SystemRandomNumberGenerator()
            let key = try tx.createPreAuthKey(userID: owner.id, options: PreAuthKeyOptions(reusable: true, ephemeral: ephemeral),
                                              now: Date(), generator: &generator).text
            return (owner.id, key)
        }
    }

    /// Registers a client with the key on `engine` and opens its stream there.
    func join(_ engine: ControlEngine, key: String, hostname: String, seed: UInt64) async throws -> Viewer {
        let client = ControlClient(port: 1, seed: seed)
        let reply = await engine.register(client.registerRequest(authKey: key, hostname: hostname), machineKey: client.machineKey.publicKey)
        XCTAssertEqual(reply.error, "", "register \(hostname)")
        return try await open(engine, client)
    }

    func open(_ engine: ControlEngine, _ client: ControlClient) async throws -> Viewer {
        let endpoint = AddrPort(address: .v4(0xC633_6400 &+ UInt32(client.machineKey.publicKey.raw.bytes[0])), port: 41641)
        guard case .stream(let outbox) = try await engine.map(client.mapRequest(stream: true, endpoints: [endpoint]),
                                                              machineKey: client.machineKey.publicKey) else {
            throw TestClientError(description: "expected a stream")
        }
        return Viewer(client: client, outbox: outbox)
    }

    /// Waits (polling, up to `limit`) until `condition` holds; returns how long it took, or fails.
    @discardableResult
    func eventually(_ what: String, limit: Duration = .seconds(10), file: StaticString = #filePath, line: UInt = #line,
                    _ condition: () async -> Bool) async -> Duration? {
        let clock = ContinuousClock()
        let start = clock.now
        while clock.now - start < limit {
            if await condition() { return clock.now - start }
            try? await Task.sleep(for: .milliseconds(5))
        }
        XCTFail("not within \(limit): \(what)", file: file, line: line)
        return nil
    }

    func nodeID(_ viewer: Viewer) -> Int64? { viewer.selfNode?.id }

    // MARK: Tests

    func testAJoinOnOneInstanceReachesTheOthersStreamsOnlineAndBack() async throws {
        let pair = try await cluster(2)
        let (a, b) = (pair[0], pair[1])
        let (_, key) = try await createKey(a.store)
        let alpha = try await join(a.engine, key: key, hostname: "alpha", seed: 1)
        await eventually("alpha has its own node") { self.nodeID(alpha) != nil }
        let beta = try await join(b.engine, key: key, hostname: "beta", seed: 2)
        await eventually("beta has its own node") { self.nodeID(beta) != nil }
        let (alphaID, betaID) = (nodeID(alpha)!, nodeID(beta)!)
        // The join through B reaches A's stream, online, with its endpoints.
        let reached = await eventually("alpha sees beta online") { alpha.peers[betaID]?.online == true && alpha.peers[betaID]?.endpoints?.isEmpty == false }
        if let reached { print("cluster: a join through one instance reached the other's stream in \(reached)") }
        // B knew alpha from the store, and online from the presence A published.
        await eventually("beta sees alpha online") { beta.peers[alphaID]?.online == true }
        // Its capability version (its peers' Cap) comes from the store: B never saw a request of alpha's.
        XCTAssertEqual(beta.peers[alphaID]?.cap, 130)
        // Addresses: one each, distinct, the same on both sides.
        XCTAssertNotEqual(alpha.selfNode?.addresses, beta.selfNode?.addresses)
        await eventually("both instances know both nodes") {
            let (onA, onB) = (await a.engine.allNodes().map(\.id), await b.engine.allNodes().map(\.id))
            return onA == [alphaID, betaID].sorted() && onB == [alphaID, betaID].sorted()
        }

        // Beta's stream ends on B: A's session sees it offline.
        beta.close()
        let went = await eventually("alpha sees beta offline") { alpha.peers[betaID]?.online == false }
        if let went { print("cluster: a stream ending on one instance showed offline on the other in \(went)") }
        // It comes back on A (as after a reconnect through the balancer): online again, no new node.
        let again = try await open(a.engine, beta.client)
        await eventually("alpha sees beta online again") { alpha.peers[betaID]?.online == true }
        await eventually("beta, now on A, sees alpha") { again.peers[alphaID] != nil }
        let ids = await b.engine.allNodes().map(\.id)
        XCTAssertEqual(ids, [alphaID, betaID].sorted())
    }

    func testAPolicyAndARenameThroughOneInstanceReachTheOther() async throws {
        let pair = try await cluster(2)
        let (a, b) = (pair[0], pair[1])
        let (_, aliceKey) = try await createKey(a.store, user: "alice")
        let (_, bobKey) = try await createKey(a.store, user: "bob")
        let alpha = try await join(a.engine, key: aliceKey, hostname: "alpha", seed: 11)
        let beta = try await join(b.engine, key: bobKey, hostname: "beta", seed: 12)
        await eventually("both have their nodes") { self.nodeID(alpha) != nil && self.nodeID(beta) != nil }
        let (alphaID, betaID) = (nodeID(alpha)!, nodeID(beta)!)
        await eventually("beta sees alpha") { beta.peers[alphaID] != nil }

        // A policy stored and put in force through A (what `policy set` does there): alice reaches only herself.
        let text = #"{"acls": [{"action": "accept", "src": ["alice@"], "dst": ["alice@:*"]}]}"#
        _ = try await a.engine.checkPolicy(text)
        let version = try await a.store.transaction { try $0.appendPolicy(text: text, created: Date()) }.version
        _ = try await a.engine.putStoredPolicyInForce(text: text, version: version)
        let cut = await eventually("beta, on B, loses alpha") { beta.peers[alphaID] == nil }
        if let cut { print("cluster: a policy set through one instance reached the other's stream in \(cut)") }
        let inForce = await b.engine.compiledPolicy?.policyVersion
        XCTAssertEqual(inForce, version)

        // Back to allow-all through B, then a rename of beta through A: beta's own stream (on B) gets its new name.
        let open = #"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#
        let next = try await b.store.transaction { try $0.appendPolicy(text: open, created: Date()) }.version
        _ = try await b.engine.putStoredPolicyInForce(text: open, version: next)
        await eventually("alpha, on A, sees beta again") { alpha.peers[betaID] != nil }
        guard var renamed = await a.engine.allNodes().first(where: { $0.id == betaID }) else { return XCTFail("A does not know beta") }
        renamed.givenName = "beta-renamed"
        try await a.engine.nodeChanged(renamed)
        await eventually("beta's own stream on B has its new name") { beta.selfNode?.name.hasPrefix("beta-renamed.") == true }
    }

    func testALoginWaitingOnOneInstanceIsApprovedOnTheOther() async throws {
        let pair = try await cluster(2) { $0.interactiveLoginWait = .seconds(20) }
        let (a, b) = (pair[0], pair[1])
        let (owner, _) = try await createKey(a.store)
        let client = ControlClient(port: 1, seed: 21)
        let first = await a.engine.register(client.registerRequest(authKey: nil, hostname: "gamma"), machineKey: client.machineKey.publicKey)
        XCTAssertFalse(first.authURL.isEmpty)
        let loginID = String(first.authURL.split(separator: "/").last ?? "")
        // The device polls A; the person opens the link on B (through the balancer).
        let waiting = await b.engine.isWaitingLogin(id: loginID)
        XCTAssertTrue(waiting, "B does not see the login waiting on A")
        var followup = client.registerRequest(authKey: nil, hostname: "gamma")
        followup.followup = first.authURL
        let request = followup
        let poll = Task { await a.engine.register(request, machineKey: client.machineKey.publicKey) }
        try await Task.sleep(for: .milliseconds(100))
        let node = try await b.engine.approveInteractiveLogin(id: loginID, userID: owner.rawValue)
        let answer = await poll.value
        XCTAssertEqual(answer.error, "")
        XCTAssertTrue(answer.authURL.isEmpty)
        XCTAssertTrue(answer.machineAuthorized)
        let known = await a.engine.allNodes().map(\.id)
        XCTAssertEqual(known, [node.id])

        // A second login waiting on A, refused on B (the record dropped, as `auth reject` does): A's poll is refused.
        let other = ControlClient(port: 1, seed: 22)
        let second = await a.engine.register(other.registerRequest(authKey: nil, hostname: "delta"), machineKey: other.machineKey.publicKey)
        let secondID = String(second.authURL.split(separator: "/").last ?? "")
        var again = other.registerRequest(authKey: nil, hostname: "delta")
        again.followup = second.authURL
        let request2 = again
        let poll2 = Task { await a.engine.register(request2, machineKey: other.machineKey.publicKey) }
        try await Task.sleep(for: .milliseconds(100))
        try await b.store.transaction { try $0.deletePendingRegistration(id: secondID) }
        let refused = await poll2.value
        XCTAssertTrue(refused.error.contains("rejected"), refused.error)
    }

    func testConcurrentJoinsOnBothInstancesGetDistinctAddresses() async throws {
        let pair = try await cluster(2)
        let (_, key) = try await createKey(pair[0].store)
        let perInstance = 20
        let replies = await withTaskGroup(of: (Int, String).self) { group in
            for i in 0..<(2 * perInstance) {
                let engine = pair[i % 2].engine
                group.addTask {
                    let c = ControlClient(port: 1, seed: UInt64(100 + i))
                    let reply = await engine.register(c.registerRequest(authKey: key, hostname: "n"), machineKey: c.machineKey.publicKey)
                    return (i, reply.error)
                }
            }
            var out: [(Int, String)] = []
            for await reply in group { out.append(reply) }
            return out
        }
        XCTAssertEqual(replies.filter { !$0.1.isEmpty }.map(\.1), [])
        let stored = try await pair[0].store.read { try $0.nodes() }
        XCTAssertEqual(stored.count, 2 * perInstance)
        XCTAssertEqual(Set(stored.compactMap(\.ipv4)).count, 2 * perInstance, "an IPv4 address handed out twice")
        XCTAssertEqual(Set(stored.compactMap(\.ipv6)).count, 2 * perInstance, "an IPv6 address handed out twice")
        XCTAssertEqual(Set(stored.map { $0.givenName.lowercased() }).count, 2 * perInstance, "a name handed out twice")
        for instance in pair {
            await eventually("every instance knows every node") { await instance.engine.allNodes().count == 2 * perInstance }
        }
    }

    func testAnInstanceThatGoesAwayTakesItsStreamsOffline() async throws {
        let pair = try await cluster(2)
        let (a, b) = (pair[0], pair[1])
        let (_, key) = try await createKey(a.store)
        let alpha = try await join(a.engine, key: key, hostname: "alpha", seed: 31)
        let beta = try await join(b.engine, key: key, hostname: "beta", seed: 32)
        await eventually("both have their nodes") { self.nodeID(alpha) != nil && self.nodeID(beta) != nil }
        let alphaID = nodeID(alpha)!
        await eventually("beta sees alpha online") { beta.peers[alphaID]?.online == true }
        // A's connections close without it ending its streams (as when the process dies): its lock goes with them.
        await a.stop()
        let went = await eventually("beta sees alpha offline") { beta.peers[alphaID]?.online == false }
        if let went { print("cluster: an instance gone showed its nodes offline on the other in \(went)") }
    }

    func testAnEphemeralNodeIsReapedOnceWhenOffline() async throws {
        let pair = try await cluster(2) { $0.ephemeralInactivityTimeout = .milliseconds(300) }
        let (a, b) = (pair[0], pair[1])
        await eventually("one instance reaps") {
            let held = [await a.engine.reapsEphemeralNodes, await b.engine.reapsEphemeralNodes]
            return held.filter { $0 }.count == 1
        }
        let (_, key) = try await createKey(a.store, ephemeral: true)
        let (_, keep) = try await createKey(a.store, user: "bob")
        let watcher = try await join(b.engine, key: keep, hostname: "watcher", seed: 41)
        let eph = try await join(a.engine, key: key, hostname: "eph", seed: 42)
        await eventually("eph registered") { self.nodeID(eph) != nil }
        let ephID = nodeID(eph)!
        await eventually("the watcher sees eph online") { watcher.peers[ephID]?.online == true }
        // Online on one instance: never reaped, however long.
        try await Task.sleep(for: .milliseconds(600))
        let still = try await a.store.read { try $0.node(id: NodeID(ephID)) }
        XCTAssertNotNil(still, "an ephemeral node with an open stream was reaped")
        eph.close()
        await eventually("eph deleted from the store") { (try? await a.store.read { try $0.node(id: NodeID(ephID)) }) == .some(nil) }
        await eventually("the watcher's stream loses eph") { watcher.peers[ephID] == nil }
        for instance in pair {
            await eventually("every instance forgot eph") { await !instance.engine.allNodes().contains { $0.id == ephID } }
        }
    }

    func testChangesMadeWhileTheFeedIsAwayArriveByAResync() async throws {
        let pair = try await cluster(2, retry: .seconds(1))
        let (a, b) = (pair[0], pair[1])
        let (_, key) = try await createKey(a.store)
        let target = try await join(a.engine, key: key, hostname: "target", seed: 51)
        let watcher = try await join(b.engine, key: key, hostname: "watcher", seed: 52)
        await eventually("both have their nodes") { self.nodeID(target) != nil && self.nodeID(watcher) != nil }
        let targetID = nodeID(target)!
        await eventually("the watcher sees the target") { watcher.peers[targetID] != nil }
        let before = await b.engine.statistics.clusterResyncs
        // Both feeds' sessions end; while they are away (they reconnect after a second), a third writer on the
        // database (another instance, an admin tool) renames the target. No notification reaches anyone.
        let server = try server()
        _ = try server.psql("""
            SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '\(database)' \
            AND application_name = 'warren-control change feed'
            """, database: database)
        let third = try await PostgresControlStore(settings: settings(server, database: database))
        _ = try await third.transaction { try $0.renameNode(id: NodeID(targetID), to: "target-renamed") }
        await third.close()
        await eventually("the watcher's stream on B has the new name") {
            watcher.peers[targetID]?.name.hasPrefix("target-renamed.") == true
        }
        await eventually("the target's own stream on A has it") { target.selfNode?.name.hasPrefix("target-renamed.") == true }
        let after = await b.engine.statistics.clusterResyncs
        XCTAssertGreaterThan(after, before, "B caught up without a resync: the test did not test the resync")
    }

    func testManyNodesChangedAtOnceElsewhereCostEachStreamABatchNotOneMessageEach() async throws {
        let pair = try await cluster(2)
        let (a, b) = (pair[0], pair[1])
        let (_, key) = try await createKey(a.store)
        let count = 20
        // Movers registered through A (no streams); watchers streaming from B, each holding every mover.
        var movers: [Int64] = []
        for i in 0..<count {
            let c = ControlClient(port: 1, seed: UInt64(600 + i))
            let reply = await a.engine.register(c.registerRequest(authKey: key, hostname: "mover\(i)"), machineKey: c.machineKey.publicKey)
            XCTAssertEqual(reply.error, "")
            if let id = await a.engine.node(withNodeKey: c.nodeKey.publicKey)?.id { movers.append(id) }
        }
        XCTAssertEqual(movers.count, count)
        var watchers: [Viewer] = []
        for i in 0..<count { watchers.append(try await join(b.engine, key: key, hostname: "watcher\(i)", seed: UInt64(700 + i))) }
        for watcher in watchers {
            await eventually("a watcher holds every mover") { movers.allSatisfy { watcher.peers[$0] != nil } }
        }
        try await Task.sleep(for: .milliseconds(400))
        let before = await b.engine.statistics.incrementalUpdatesSent
        // Another writer changes every mover's endpoints in one transaction: one event on B's feed with `count` nodes.
        let moved = movers
        let third = try await PostgresControlStore(settings: settings(try server(), database: database))
        try await third.transaction { tx in
            for (i, id) in moved.enumerated() {
                guard var node = try tx.node(id: NodeID(id)) else { continue }
                node.endpoints = ["198.51.100.\(i + 1):41641"]
                try tx.update(node)
            }
        }
        await third.close()
        for watcher in watchers {
            await eventually("a watcher has every mover's new endpoint") {
                moved.enumerated().allSatisfy { i, id in
                    watcher.peers[id]?.endpoints?.map(\.description) == ["198.51.100.\(i + 1):41641"]
                }
            }
        }
        let sent = await b.engine.statistics.incrementalUpdatesSent - before
        print("cluster: \(count) nodes changed elsewhere at once cost B \(sent) messages for \(count) streams")
        // One batch per stream (a second if the presence poll lands in between); one message per node per stream
        // (count x count) before.
        XCTAssertLessThanOrEqual(sent, 3 * count)
    }

    func testAMassReconnectSplitOverTwoInstancesCostsEachStreamFewMessages() async throws {
        let pair = try await cluster(2) { $0.mapUpdateInterval = .milliseconds(250) }
        let (_, key) = try await createKey(pair[0].store)
        let perInstance = 60
        // Registered (with endpoints) through their own instance, no streams yet: a restarted tailnet.
        var clients: [(ControlClient, ControlEngine)] = []
        for i in 0..<(2 * perInstance) {
            let engine = pair[i % 2].engine
            let c = ControlClient(port: 1, seed: UInt64(900 + i))
            let reply = await engine.register(c.registerRequest(authKey: key, hostname: "m\(i)"), machineKey: c.machineKey.publicKey)
            XCTAssertEqual(reply.error, "")
            let endpoint = AddrPort(address: .v4(0xC633_6400 &+ UInt32(i)), port: 41641)
            _ = try await engine.map(c.mapRequest(stream: false, omitPeers: true, endpoints: [endpoint]), machineKey: c.machineKey.publicKey)
            clients.append((c, engine))
        }
        for instance in pair {
            await eventually("every instance knows every node") { await instance.engine.allNodes().count == 2 * perInstance }
        }
        try await Task.sleep(for: .milliseconds(500))
        let before = [await pair[0].engine.statistics.incrementalUpdatesSent, await pair[1].engine.statistics.incrementalUpdatesSent]
        // Every stream opens at once, half on each instance.
        let viewers = try await withThrowingTaskGroup(of: Viewer.self) { group in
            for (c, engine) in clients {
                group.addTask {
                    guard case .stream(let outbox) = try await engine.map(c.mapRequest(stream: true), machineKey: c.machineKey.publicKey) else {
                        throw TestClientError(description: "expected a stream")
                    }
                    return Viewer(client: c, outbox: outbox)
                }
            }
            var out: [Viewer] = []
            for try await viewer in group { out.append(viewer) }
            return out
        }
        for viewer in viewers {
            await eventually("every stream sees every peer online", limit: .seconds(20)) {
                let peers = viewer.peers
                return peers.count == 2 * perInstance - 1 && peers.values.allSatisfy { $0.online == true }
            }
        }
        // Settled: nothing more goes out (no presence flapping between the instances).
        try await Task.sleep(for: .seconds(2))
        let after = [await pair[0].engine.statistics.incrementalUpdatesSent, await pair[1].engine.statistics.incrementalUpdatesSent]
        let sent = (after[0] - before[0]) + (after[1] - before[1])
        print("cluster: \(2 * perInstance) streams opening at once over two instances: \(sent) messages besides the full maps")
        XCTAssertLessThanOrEqual(sent, 8 * 2 * perInstance)
    }
}
