// Subnet router failover on liveness: when a route's primary router goes offline (its last map stream ends
// and no stream comes back within routeFailoverGrace), another online router of the route becomes primary
// and every peer is sent both routers' new AllowedIPs and PrimaryRoutes; the old primary coming back does
// not take the route back; with every router offline the last primary keeps it. In process (PolicyHarness:
// map streams opened on the engine, folded as a client folds them), and once over loopback TCP for the
// whole path from a closed connection to the peers' maps.

import Foundation
import Logging
import Synchronization
import TailscaleKeys
import WarrenControlClient
import WarrenControlStore
import WarrenPacket
import WarrenTailcfg
import XCTest
@testable import WarrenControlServer

extension PolicyHarness {
    /// Ends the node's map stream as its writer going away does (the client's connection closed).
    func dropStream(_ id: Int64) async throws {
        try XCTUnwrap(outboxes[id]).cancel()
        for _ in 0..<5000 {
            if await !engine.isOnline(id) { return }
            try await Task.sleep(for: .milliseconds(1))
        }
        XCTFail("node \(id) still online after its stream ended")
    }

    /// Opens a new map stream for a node that joined earlier (the client reconnecting).
    mutating func reconnect(_ id: Int64) async throws {
        let (machine, nodeKey) = try XCTUnwrap(keys[id])
        var map = MapRequest()
        map.version = 130
        map.nodeKey = nodeKey.publicKey
        map.stream = true
        guard case .stream(let stream) = try await engine.map(map, machineKey: machine.publicKey) else {
            throw TestClientError(description: "no stream")
        }
        let recorder = SessionRecorder()
        recorders[id] = recorder
        outboxes[id] = stream
        consumers.append(Task {
            for await message in stream { recorder.record(message) }
            recorder.state.withLock { $0.ended = true }
        })
    }

    /// The routers that `viewer` holds as the primary of `prefix` (PrimaryRoutes and AllowedIPs both carry it).
    func primaries(of prefix: IPPrefix, seenBy viewer: Int64, among routers: [Int64]) -> [Int64] {
        guard let peers = recorders[viewer]?.snapshot.peers else { return [] }
        return routers.filter { id in
            guard let peer = peers[id] else { return false }
            return peer.primaryRoutes?.contains(prefix) == true && peer.allowedIPs?.contains(prefix) == true
        }
    }

    /// Whether `viewer`'s AllowedIPs for `router` carry `prefix` at all (a router that is not primary must not).
    func carries(_ prefix: IPPrefix, seenBy viewer: Int64, router: Int64) -> Bool {
        recorders[viewer]?.snapshot.peers[router]?.allowedIPs?.contains(prefix) == true
    }

    /// Waits until the condition holds; fails after `limit` (a liveness bound, far above the grace).
    func eventually(_ what: String, limit: Duration = .seconds(10), file: StaticString = #filePath, line: UInt = #line,
                    _ condition: () async -> Bool) async {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            await settle(file: file, line: line)
            if await condition() { return }
            try? await Task.sleep(for: .milliseconds(5))
        }
        XCTFail("not within \(limit): \(what)", file: file, line: line)
    }
}

final class RouteFailoverTests: XCTestCase {
    let lan = IPPrefix("10.44.0.0/24")!

    /// A tailnet without a policy (everything allowed), routes approved by the admin, a short grace.
    func makeHarness(grace: Duration = .milliseconds(50)) async throws -> PolicyHarness {
        try await PolicyHarness(policyText: nil) { $0.routeFailoverGrace = grace }
    }

    /// Joins `count` routers advertising `lan` (approved by the admin) and one client; returns (routers, client).
    func joinRouters(_ h: inout PolicyHarness, count: Int) async throws -> ([Int64], Int64) {
        let key = try await h.preAuthKey(user: "alice@example.com")
        var routers: [Int64] = []
        for i in 1...count {
            routers.append(try await h.join(key: key, hostname: "router\(i)", routes: [lan]))
        }
        let client = try await h.join(key: key, hostname: "client")
        for r in routers { try await h.adminUpdate(r) { [lan] in $0.approvedRoutes = [lan] } }
        await h.settle()
        return (routers, client)
    }

    func testPrimaryGoingOfflineFailsOverAndThePeersMapsFollow() async throws {
        var h = try await makeHarness()
        defer { h.stop() }
        let (routers, client) = try await joinRouters(&h, count: 2)
        let (r1, r2) = (routers[0], routers[1])
        XCTAssertEqual(h.primaries(of: lan, seenBy: client, among: routers), [r1], "lowest ID first")
        XCTAssertFalse(h.carries(lan, seenBy: client, router: r2), "a standby router's AllowedIPs lack the route")
        XCTAssertEqual(h.recorders[r1]?.snapshot.selfNode?.primaryRoutes, [lan])
        XCTAssertNil(h.recorders[r2]?.snapshot.selfNode?.primaryRoutes)

        try await h.dropStream(r1)
        await h.eventually("r2 becomes primary in the client's map") {
            h.primaries(of: lan, seenBy: client, among: routers) == [r2]
        }
        let view = try XCTUnwrap(h.recorders[client]).snapshot
        XCTAssertEqual(view.peers[r1]?.online, false)
        XCTAssertFalse(view.peers[r1]?.allowedIPs?.contains(lan) == true, "the old primary's AllowedIPs lose the route")
        XCTAssertNil(view.peers[r1]?.primaryRoutes)
        XCTAssertEqual(view.peers[r2]?.primaryRoutes, [lan])
        XCTAssertEqual(h.recorders[r2]?.snapshot.selfNode?.primaryRoutes, [lan], "the new primary is told too")
        let owners = await h.engine.routeOwners
        XCTAssertEqual(owners[lan], r2)
    }

    func testAStreamThatComesBackWithinTheGraceKeepsTheRoute() async throws {
        var h = try await makeHarness(grace: .seconds(3600))
        defer { h.stop() }
        let (routers, client) = try await joinRouters(&h, count: 2)
        let r1 = routers[0]
        try await h.dropStream(r1)
        await h.settle()
        // Offline, but within its grace: still the primary, and the peers still route through it.
        XCTAssertEqual(h.recorders[client]?.snapshot.peers[r1]?.online, false)
        XCTAssertEqual(h.primaries(of: lan, seenBy: client, among: routers), [r1])
        try await h.reconnect(r1)
        await h.settle()
        XCTAssertEqual(h.recorders[client]?.snapshot.peers[r1]?.online, true)
        XCTAssertEqual(h.primaries(of: lan, seenBy: client, among: routers), [r1])
        let grace = await h.engine.routeGrace
        XCTAssertTrue(grace.isEmpty, "the reconnect ended the grace")
    }

    func testTheOldPrimaryReturningDoesNotTakeTheRouteBackUntilTheNewOneGoes() async throws {
        var h = try await makeHarness()
        defer { h.stop() }
        let (routers, client) = try await joinRouters(&h, count: 2)
        let (r1, r2) = (routers[0], routers[1])
        try await h.dropStream(r1)
        await h.eventually("failover to r2") { h.primaries(of: lan, seenBy: client, among: routers) == [r2] }

        try await h.reconnect(r1)
        await h.settle()
        XCTAssertEqual(h.recorders[client]?.snapshot.peers[r1]?.online, true)
        // Longer than the grace, and another change of r1 (its endpoints): r2 keeps the route.
        try await Task.sleep(for: .milliseconds(200))
        let (machine, nodeKey) = try XCTUnwrap(h.keys[r1])
        var lite = MapRequest()
        lite.version = 130
        lite.nodeKey = nodeKey.publicKey
        lite.omitPeers = true
        lite.endpoints = [AddrPort("192.0.2.1:41641")!]
        _ = try await h.engine.map(lite, machineKey: machine.publicKey)
        await h.settle()
        XCTAssertEqual(h.primaries(of: lan, seenBy: client, among: routers), [r2], "no flap back to r1")
        XCTAssertFalse(h.carries(lan, seenBy: client, router: r1))
        XCTAssertNil(h.recorders[r1]?.snapshot.selfNode?.primaryRoutes)

        // Now r2 goes: back to r1.
        try await h.dropStream(r2)
        await h.eventually("failover back to r1") { h.primaries(of: lan, seenBy: client, among: routers) == [r1] }
        XCTAssertFalse(h.carries(lan, seenBy: client, router: r2))
    }

    func testWithEveryRouterOfflineTheLastPrimaryKeepsTheRouteUntilAnotherReturns() async throws {
        var h = try await makeHarness()
        defer { h.stop() }
        let (routers, client) = try await joinRouters(&h, count: 2)
        let (r1, r2) = (routers[0], routers[1])
        try await h.dropStream(r1)
        await h.eventually("failover to r2") { h.primaries(of: lan, seenBy: client, among: routers) == [r2] }
        try await h.dropStream(r2)
        // Past r2's grace, nothing moves: the last primary keeps the route, offline.
        await h.eventually("r2's grace ends") { await h.engine.routeGrace.isEmpty }
        await h.settle()
        XCTAssertEqual(h.primaries(of: lan, seenBy: client, among: routers), [r2])
        XCTAssertEqual(h.recorders[client]?.snapshot.peers[r2]?.online, false)
        let owners = await h.engine.routeOwners
        XCTAssertEqual(owners[lan], r2)

        // r1 returns while r2 is still offline: an online router is preferred to the offline primary.
        try await h.reconnect(r1)
        await h.eventually("r1, online, takes the route") { h.primaries(of: lan, seenBy: client, among: routers) == [r1] }
        XCTAssertFalse(h.carries(lan, seenBy: client, router: r2))
        XCTAssertEqual(h.recorders[r1]?.snapshot.selfNode?.primaryRoutes, [lan])
    }

    func testRemovingThePrimarysApprovalFailsOverAtOnce() async throws {
        var h = try await makeHarness(grace: .seconds(3600))
        defer { h.stop() }
        let (routers, client) = try await joinRouters(&h, count: 2)
        let (r1, r2) = (routers[0], routers[1])
        try await h.adminUpdate(r1) { $0.approvedRoutes = [] }
        await h.settle()
        XCTAssertEqual(h.primaries(of: lan, seenBy: client, among: routers), [r2])
        XCTAssertFalse(h.carries(lan, seenBy: client, router: r1))
        // Approved again while r2 is online: r2 keeps it.
        try await h.adminUpdate(r1) { [lan] in $0.approvedRoutes = [lan] }
        await h.settle()
        XCTAssertEqual(h.primaries(of: lan, seenBy: client, among: routers), [r2])
        // r2 offline, within its (long) grace: still r2; its approval removed: r1 at once, no grace to wait.
        try await h.dropStream(r2)
        await h.settle()
        XCTAssertEqual(h.primaries(of: lan, seenBy: client, among: routers), [r2])
        try await h.adminUpdate(r2) { $0.approvedRoutes = [] }
        await h.settle()
        XCTAssertEqual(h.primaries(of: lan, seenBy: client, among: routers), [r1])
    }

    func testAThirdRouterTakesOverInIDOrderAmongTheOnlineOnes() async throws {
        var h = try await makeHarness()
        defer { h.stop() }
        let (routers, client) = try await joinRouters(&h, count: 3)
        let (r1, r2, r3) = (routers[0], routers[1], routers[2])
        XCTAssertEqual(h.primaries(of: lan, seenBy: client, among: routers), [r1])
        // r2 goes first: it was not primary, nothing moves.
        try await h.dropStream(r2)
        await h.eventually("r2's grace ends") { await h.engine.routeGrace.isEmpty }
        XCTAssertEqual(h.primaries(of: lan, seenBy: client, among: routers), [r1])
        // r1 goes: r3 is the only online router (r2, lower, is offline and is never chosen).
        try await h.dropStream(r1)
        await h.eventually("failover to r3") { h.primaries(of: lan, seenBy: client, among: routers) == [r3] }
        // Both come back: r3 keeps it.
        try await h.reconnect(r1)
        try await h.reconnect(r2)
        try await Task.sleep(for: .milliseconds(150))
        await h.settle()
        XCTAssertEqual(h.primaries(of: lan, seenBy: client, among: routers), [r3])
        // r3 goes: the lowest online ID, r1.
        try await h.dropStream(r3)
        await h.eventually("failover to r1") { h.primaries(of: lan, seenBy: client, among: routers) == [r1] }
        for r in [r2, r3] { XCTAssertFalse(h.carries(lan, seenBy: client, router: r)) }
        // Every router agrees on who is primary: each sees the same in its own map.
        XCTAssertEqual(h.primaries(of: lan, seenBy: r2, among: routers), [r1])
    }

    func testElectionIsDeterministicAndKeepsAnOnlinePrimary() {
        let a = IPPrefix("10.1.0.0/24")!, b = IPPrefix("10.2.0.0/24")!
        let routers: [Int64: [IPPrefix]] = [3: [a, b], 5: [a], 7: [b, IPPrefix("0.0.0.0/0")!]]
        // No history: the lowest online ID; exit routes are not elected.
        XCTAssertEqual(NetworkMapBuilder.electPrimaries(routers: routers, online: { _ in true }, previous: [:]), [a: 3, b: 3])
        XCTAssertEqual(NetworkMapBuilder.electPrimaries(routers: routers, online: { $0 != 3 }, previous: [:]), [a: 5, b: 7])
        // An online previous primary stays, even with a lower ID online.
        XCTAssertEqual(NetworkMapBuilder.electPrimaries(routers: routers, online: { _ in true }, previous: [a: 5, b: 7]), [a: 5, b: 7])
        // All offline: the previous primary stays; without one, the lowest ID.
        XCTAssertEqual(NetworkMapBuilder.electPrimaries(routers: routers, online: { _ in false }, previous: [a: 5]), [a: 5, b: 3])
        // A previous primary that no longer serves the prefix is replaced.
        XCTAssertEqual(NetworkMapBuilder.electPrimaries(routers: [5: [a]], online: { _ in false }, previous: [a: 3]), [a: 5])
    }

    // MARK: The whole path over loopback TCP

    /// What a client holds, folded from its map stream, with the time of each message.
    final class FoldedMap: Sendable {
        struct State {
            var peers: [Int64: WarrenTailcfg.Node] = [:]
            var log: [(at: ContinuousClock.Instant, primary: Int64?, online: [Int64: Bool])] = []
        }
        let state = Mutex(State())
        let prefix: IPPrefix
        init(prefix: IPPrefix) { self.prefix = prefix }

        func record(_ m: MapResponse) {
            state.withLock { s in
                if let peers = m.peers { s.peers = Dictionary(uniqueKeysWithValues: peers.map { ($0.id, $0) }) }
                for p in m.peersChanged ?? [] { s.peers[p.id] = p }
                for patch in m.peersChangedPatch ?? [] { if let online = patch.online { s.peers[patch.nodeID]?.online = online } }
                for id in m.peersRemoved ?? [] { s.peers[id] = nil }
                s.log.append((ContinuousClock.now, Self.primary(s.peers, prefix), s.peers.mapValues { $0.online ?? false }))
            }
        }

        static func primary(_ peers: [Int64: WarrenTailcfg.Node], _ prefix: IPPrefix) -> Int64? {
            let holders = peers.values.filter { $0.primaryRoutes?.contains(prefix) == true && $0.allowedIPs?.contains(prefix) == true }
            return holders.count == 1 ? holders[0].id : nil
        }

        var primary: Int64? { state.withLock { Self.primary($0.peers, prefix) } }
        func online(_ id: Int64) -> Bool? { state.withLock { $0.peers[id]?.online } }
        var log: [(at: ContinuousClock.Instant, primary: Int64?, online: [Int64: Bool])] { state.withLock { $0.log } }
    }

    func testOverLoopbackAClosedPrimaryConnectionReachesThePeersAsANewPrimaryAfterTheGrace() async throws {
        let grace = Duration.milliseconds(400)
        var configuration = ControlConfiguration(serverURL: "http://127.0.0.1:0")
        configuration.baseDomain = "lab.warren"
        configuration.routeFailoverGrace = grace
        let store = MemoryControlStore()
        let directory = try StoreDirectory(store: store, ipv4Prefix: configuration.ipv4Prefix, ipv6Prefix: configuration.ipv6Prefix)
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        let engine = ControlEngine(configuration: configuration, directory: directory, logger: logger)
        try await engine.load()
        var generator = TestGenerator(seed: 41)
        let controlKey = MachinePrivate.generate(using: &generator)
        let server = try await ControlHTTPServer.start(engine: engine, controlKey: controlKey,
                                                       options: ControlServerOptions(host: "127.0.0.1", port: 0), logger: logger)
        defer { Task { await server.close() } }
        let port = try XCTUnwrap(server.port)
        let authKey = try await store.transaction { tx in
            let owner = try tx.createUser(name: "alice", now: Date())
            var random = SystemRandomNumberGenerator()
            return try tx.createPreAuthKey(userID: owner.id, options: PreAuthKeyOptions(reusable: true), now: Date(), generator: &random).text
        }

        var drains: [Task<Void, Never>] = []
        defer { drains.forEach { $0.cancel() } }
        /// Registers a client (a router when `routes` is not empty) and opens its map stream, folded into `fold`.
        func start(seed: UInt64, hostname: String, routes: [IPPrefix], fold: FoldedMap?,
                   register: Bool = true) async throws -> (ControlClient, Int64) {
            let client = ControlClient(port: port, seed: seed)
            try await client.connect(controlKey: controlKey.publicKey)
            if register { try await registerClient(client, hostname: hostname, routes: routes) }
            let (status, messages) = try await client.map(client.mapRequest(stream: true))
            XCTAssertEqual(status, 200)
            drains.append(Task {
                do { for try await m in messages { fold?.record(m) } } catch {}
            })
            let all = await engine.allNodes()
            let id = try XCTUnwrap(all.first { $0.nodeKey == client.nodeKey.publicKey }?.id)
            return (client, id)
        }
        func registerClient(_ client: ControlClient, hostname: String, routes: [IPPrefix]) async throws {
            var request = client.registerRequest(authKey: authKey, hostname: hostname)
            var info = HostinfoFields()
            info.hostname = hostname
            info.os = "linux"
            if !routes.isEmpty { info.routableIPs = routes }
            request.hostinfo = Hostinfo(info)
            let response = try await client.register(request)
            XCTAssertEqual(response.error, "")
        }
        func waitFor(_ what: String, limit: Duration = .seconds(15), _ condition: () async -> Bool) async throws {
            let deadline = ContinuousClock.now + limit
            while ContinuousClock.now < deadline {
                if await condition() { return }
                try await Task.sleep(for: .milliseconds(5))
            }
            XCTFail("not within \(limit): \(what)")
            throw TestClientError(description: what)
        }

        let view = FoldedMap(prefix: lan)
        let (r1Client, r1) = try await start(seed: 1, hostname: "r1", routes: [lan], fold: nil)
        let (_, r2) = try await start(seed: 2, hostname: "r2", routes: [lan], fold: nil)
        let (_, _) = try await start(seed: 3, hostname: "c", routes: [], fold: view)
        let lan = self.lan
        for id in [r1, r2] {
            try await store.transaction { tx in
                guard var node = try tx.node(id: NodeID(id)) else { return }
                node.approvedRoutes = [lan]
                try tx.update(node)
            }
            _ = try await engine.reloadNode(id: id)
        }
        try await waitFor("r1 is the primary in c's map") { view.primary == r1 && view.online(r2) == true }

        // The router's process dies: its connection closes (what kill -9 does to its sockets).
        let closed = ContinuousClock.now
        await r1Client.close()
        try await waitFor("r2 is the primary in c's map") { view.primary == r2 }
        let log = view.log.filter { $0.at >= closed }
        // Order, as the peers see it: r1 offline first while still primary (the grace), then r2 primary,
        // with r1's route gone in the same message; never two primaries or none in between.
        let offlineAt = try XCTUnwrap(log.firstIndex { $0.online[r1] == false }, "c is told r1 went offline")
        XCTAssertEqual(log[offlineAt].primary, r1, "within the grace r1 still holds the route")
        let movedAt = try XCTUnwrap(log.firstIndex { $0.primary == r2 })
        XCTAssertGreaterThan(movedAt, offlineAt)
        XCTAssertTrue(log[..<movedAt].allSatisfy { $0.primary == r1 }, "no message left c without a primary")
        XCTAssertGreaterThanOrEqual(log[movedAt].at - closed, grace, "the failover waited for the grace")
        XCTAssertGreaterThanOrEqual(log[movedAt].at - log[offlineAt].at, grace - .milliseconds(50))

        // r1 comes back (same keys, new connection): online again, and r2 keeps the route past a grace.
        let (_, r1Again) = try await start(seed: 1, hostname: "r1", routes: [lan], fold: nil, register: false)
        XCTAssertEqual(r1Again, r1)
        try await waitFor("c sees r1 online again") { view.online(r1) == true }
        try await Task.sleep(for: grace * 2)
        XCTAssertEqual(view.primary, r2, "no flap back to r1")
    }
}

/// Exit nodes on the control side: the default routes are approved as a pair (by an admin or by
/// autoApprovers.exitNode), peers see them in the exit node's AllowedIPs only when the policy lets them reach
/// autogroup:internet (or `*`), and the exit node's packet filter carries the internet destinations.
final class ExitNodeControlTests: XCTestCase {
    static let policyText = """
        {
          "tagOwners": {"tag:exit": ["alice@example.com"]},
          "acls": [
            {"action": "accept", "src": ["bob@example.com"], "dst": ["autogroup:internet:*", "tag:exit:22"]},
            {"action": "accept", "src": ["carol@example.com"], "dst": ["tag:exit:22", "alice@example.com:22"]},
            {"action": "accept", "src": ["dave@example.com"], "dst": ["*:*"]},
          ],
          "autoApprovers": {"exitNode": ["tag:exit"], "routes": {"0.0.0.0/0": ["alice@example.com"]}},
        }
        """
    let v4Default = IPPrefix("0.0.0.0/0")!, v6Default = IPPrefix("::/0")!

    /// Whether a filter's destinations cover `address` ("*", an address, a prefix or a "first-last" range).
    static func covers(_ rules: [FilterRule], source: IPAddress, destination: IPAddress) -> Bool {
        rules.contains { rule in
            guard rule.srcIPs.contains(where: { $0 == "*" || $0 == source.description || (IPPrefix($0)?.contains(source) ?? false) })
            else { return false }
            return (rule.dstPorts ?? []).contains { d in
                if d.ip == "*" || d.ip == destination.description { return true }
                if let p = IPPrefix(d.ip) { return p.contains(destination) }
                let parts = d.ip.split(separator: "-")
                guard parts.count == 2, let lo = IPAddress(parts[0]), let hi = IPAddress(parts[1]),
                      lo.version == destination.version else { return false }
                return lo <= destination && destination <= hi
            }
        }
    }

    func testExitRoutesArePairedOfferedOnlyToInternetUsersAndFilteredOnTheExitNode() async throws {
        var h = try await PolicyHarness(policyText: Self.policyText)
        defer { h.stop() }
        let tagged = try await h.join(key: try await h.preAuthKey(user: "alice@example.com", tags: ["tag:exit"]),
                                      hostname: "exit1", routes: [v4Default, v6Default])
        let alicesExit = try await h.join(key: try await h.preAuthKey(user: "alice@example.com"), hostname: "exit2",
                                          routes: [v4Default, v6Default])
        let bob = try await h.join(key: try await h.preAuthKey(user: "bob@example.com"), hostname: "bob")
        let carol = try await h.join(key: try await h.preAuthKey(user: "carol@example.com"), hostname: "carol")
        let dave = try await h.join(key: try await h.preAuthKey(user: "dave@example.com"), hostname: "dave")
        await h.settle()

        // autoApprovers.exitNode approves the tagged node's pair; a `routes` entry for 0.0.0.0/0 approves nothing.
        let daveView = try XCTUnwrap(h.recorders[dave]).snapshot
        XCTAssertEqual(Set(daveView.peers[tagged]?.allowedIPs ?? []).isSuperset(of: [v4Default, v6Default]), true)
        XCTAssertNil(daveView.peers[tagged]?.primaryRoutes, "exit routes are not primary routes")
        XCTAssertFalse(daveView.peers[alicesExit]?.allowedIPs?.contains(v4Default) == true)
        XCTAssertFalse(daveView.peers[alicesExit]?.allowedIPs?.contains(v6Default) == true)

        // The admin approves only 0.0.0.0/0 (`nodes approve-routes 0.0.0.0/0`): both are served, as a pair.
        try await h.adminUpdate(alicesExit) { [v4Default] in $0.approvedRoutes = [v4Default] }
        await h.settle()
        let paired = try XCTUnwrap(h.recorders[dave]).snapshot.peers[alicesExit]?.allowedIPs ?? []
        XCTAssertTrue(paired.contains(v4Default) && paired.contains(v6Default), "\(paired)")
        XCTAssertEqual(Set(h.recorders[alicesExit]?.snapshot.selfNode?.allowedIPs ?? []).isSuperset(of: [v4Default, v6Default]), true)

        // bob may reach autogroup:internet: offered; carol sees the exit node (port 22) but may not use it.
        let bobView = try XCTUnwrap(h.recorders[bob]).snapshot
        XCTAssertEqual(Set(bobView.peers[tagged]?.allowedIPs ?? []).isSuperset(of: [v4Default, v6Default]), true)
        let carolView = try XCTUnwrap(h.recorders[carol]).snapshot
        XCTAssertNotNil(carolView.peers[tagged], "carol sees the exit node")
        XCTAssertFalse(carolView.peers[tagged]?.allowedIPs?.contains(v4Default) == true, "but is not offered its default routes")
        XCTAssertFalse(carolView.peers[tagged]?.allowedIPs?.contains(v6Default) == true)
        XCTAssertNotNil(carolView.peers[alicesExit])
        XCTAssertFalse(carolView.peers[alicesExit]?.allowedIPs?.contains(v4Default) == true)

        // The exit node's filter lets bob (and dave) out to the internet, not carol; a non-exit node's does not.
        let bobAddress = try XCTUnwrap(bobView.selfNode?.addresses?.first?.address)
        let carolAddress = try XCTUnwrap(carolView.selfNode?.addresses?.first?.address)
        let daveAddress = try XCTUnwrap(daveView.selfNode?.addresses?.first?.address)
        let exitFilter = try XCTUnwrap(h.recorders[tagged]?.snapshot.filter)
        let internetHost = IPAddress("8.8.8.8")!, internetHost6 = IPAddress("2001:4860:4860::8888")!
        XCTAssertTrue(Self.covers(exitFilter, source: bobAddress, destination: internetHost), "\(exitFilter)")
        XCTAssertTrue(Self.covers(exitFilter, source: bobAddress, destination: internetHost6))
        XCTAssertTrue(Self.covers(exitFilter, source: daveAddress, destination: internetHost))
        XCTAssertFalse(Self.covers(exitFilter, source: carolAddress, destination: internetHost))
        XCTAssertFalse(Self.covers(exitFilter, source: bobAddress, destination: IPAddress("100.64.99.99")!),
                       "autogroup:internet leaves the tailnet's range out")
        let bobFilter = try XCTUnwrap(h.recorders[carol]?.snapshot.filter)
        XCTAssertFalse(Self.covers(bobFilter, source: bobAddress, destination: internetHost), "only exit nodes carry it")
    }
}
