// Whole nodes in one process (see InProcessTailnet): join, full and incremental maps, a peer added
// and removed, traffic through the tunnel, the direct path, the packet filter from the policy,
// shields-up, restarts that need no new login, down and logout.

import Foundation
import TailscaleKeys
import WarrenControlServer
import WarrenControlStore
import WarrenLocalAPI
import WarrenNetMap
import WarrenNode
import WarrenPacket
import WarrenTailcfg
import WireGuardDevice
import XCTest

final class InProcessNodeTests: XCTestCase {
    func testThreeNodesJoinSeeEachOtherTalkDirectAndAPeerLeaves() async throws {
        let lab = try await InProcessTailnet()
        addTeardownBlock { await lab.close() }
        let key = try await lab.preAuthKey()
        let a = try await lab.makeNode("a", host: "10.5.0.1")
        let b = try await lab.makeNode("b", host: "10.5.0.2")
        var up = try await lab.up(a, authKey: key)
        XCTAssertEqual(up.backendState, .running)
        up = try await lab.up(b, authKey: key)
        XCTAssertEqual(up.backendState, .running)

        // Both have addresses in the tailnet's ranges, and the router got them and the routes.
        let maybeA = await InProcessTailnet.ipv4(a)
        let ipA = try XCTUnwrap(maybeA)
        XCTAssertTrue(IPPrefix("100.64.0.0/10")!.contains(ipA))
        XCTAssertTrue(a.router.settings.routes.contains(IPPrefix("100.64.0.0/10")!))
        XCTAssertTrue(a.router.settings.routes.contains(IPPrefix("fd7a:115c:a1e0::/48")!))
        XCTAssertTrue(a.router.settings.localAddresses.contains(IPPrefix(host: ipA)))

        // Each sees the other (the second join reached the first as an incremental update).
        let seen = await InProcessTailnet.eventually {
            let m1 = await a.node.currentNetworkMap; let m2 = await b.node.currentNetworkMap; return m1.peers.count == 1 && m2.peers.count == 1
        }
        XCTAssertTrue(seen)

        // Traffic crosses the tunnel both ways.
        let value1 = await InProcessTailnet.deliver(from: a, to: b)
        XCTAssertNotNil(value1, "a -> b")
        let value2 = await InProcessTailnet.deliver(from: b, to: a)
        XCTAssertNotNil(value2, "b -> a")

        // And ends on the direct path (the in-memory LAN), judged by magicsock and by `status`.
        let direct = await InProcessTailnet.eventually(20) {
            _ = await InProcessTailnet.deliver(from: a, to: b, attempts: 1)
            let status = await a.node.status()
            return status.peer.values.first?.curAddr == b.bind.localEndpoint.map { "\($0.address):\($0.port)" }
        }
        XCTAssertTrue(direct, "no direct path")
        let status = await a.node.status()
        XCTAssertEqual(status.backendState, .running)
        XCTAssertEqual(status.peer.count, 1)
        let peer = try XCTUnwrap(status.peer.values.first)
        XCTAssertEqual(peer.hostName, "b")
        XCTAssertTrue(peer.dnsName.hasPrefix("b."))
        XCTAssertGreaterThan(peer.txBytes, 0)
        XCTAssertGreaterThan(peer.rxBytes, 0)
        XCTAssertEqual(peer.relay, "lab")

        // A third node joins: both others get it, and it reaches them.
        let c = try await lab.makeNode("c", host: "10.5.0.3")
        _ = try await lab.up(c, authKey: key)
        let third = await InProcessTailnet.eventually {
            let m1 = await a.node.currentNetworkMap; let m2 = await b.node.currentNetworkMap; return m1.peers.count == 2 && m2.peers.count == 2
        }
        XCTAssertTrue(third)
        let value3 = await InProcessTailnet.deliver(from: c, to: a)
        XCTAssertNotNil(value3, "c -> a")

        // The administrator deletes c: the others drop it from their maps and their devices.
        let cMap = await c.node.currentNetworkMap
        let cID = try XCTUnwrap(cMap.selfNode?.id)
        try await lab.engine.deleteNode(id: cID)
        let gone = await InProcessTailnet.eventually {
            let m1 = await a.node.currentNetworkMap; let m2 = await b.node.currentNetworkMap; return m1.peer(id: cID) == nil && m2.peer(id: cID) == nil
        }
        XCTAssertTrue(gone)
        XCTAssertEqual(a.node.wireGuardDevice.status().peers.count, 1)
        let value4 = await InProcessTailnet.deliver(from: c, to: a, attempts: 5)
        XCTAssertNil(value4, "a deleted node still reaches a")
    }

    func testThePolicyIsEnforcedAtTheReceiverAndShieldsUpRefusesEverythingNew() async throws {
        let lab = try await InProcessTailnet(policy: """
            {"acls": [{"action": "accept", "src": ["alice@example.com"], "dst": ["bob@example.com:80"]}]}
            """)
        addTeardownBlock { await lab.close() }
        let a = try await lab.makeNode("a", host: "10.6.0.1")
        let b = try await lab.makeNode("b", host: "10.6.0.2")
        _ = try await lab.up(a, authKey: try await lab.preAuthKey(user: "alice@example.com"))
        _ = try await lab.up(b, authKey: try await lab.preAuthKey(user: "bob@example.com"))
        let peers = await InProcessTailnet.eventually {
            let m1 = await a.node.currentNetworkMap; let m2 = await b.node.currentNetworkMap; return m1.peers.count == 1 && m2.peers.count == 1
        }
        XCTAssertTrue(peers)
        // A may open TCP 80 on B; not 22; and B may open nothing on A.
        let value5 = await InProcessTailnet.deliver(from: a, to: b, proto: .tcp, port: 80)
        XCTAssertNotNil(value5, "a -> b:80 refused")
        let value6 = await InProcessTailnet.deliver(from: a, to: b, proto: .tcp, port: 22, attempts: 5)
        XCTAssertNil(value6, "a -> b:22 passed")
        let value7 = await InProcessTailnet.deliver(from: b, to: a, proto: .tcp, port: 80, attempts: 5)
        XCTAssertNil(value7, "b -> a:80 passed")
        XCTAssertGreaterThan(b.node.filteringTUN.dropped.load(ordering: .relaxed), 0)

        // Shields up on B: even port 80 is refused now.
        _ = try await lab.up(b, authKey: nil, shieldsUp: true)
        let value8 = await InProcessTailnet.deliver(from: a, to: b, proto: .tcp, port: 80, attempts: 5)
        XCTAssertNil(value8, "shields-up let a SYN in")
        // And down again.
        _ = try await lab.up(b, authKey: nil, shieldsUp: false)
        let value9 = await InProcessTailnet.deliver(from: a, to: b, proto: .tcp, port: 80)
        XCTAssertNotNil(value9, "a -> b:80 refused after shields down")
    }

    func testARestartedNodeKeepsItsAddressAndNeedsNoLogin() async throws {
        let lab = try await InProcessTailnet()
        addTeardownBlock { await lab.close() }
        let key = try await lab.preAuthKey(options: PreAuthKeyOptions(reusable: false))
        let state = "\(lab.directory)/restarting"
        let a = try await lab.makeNode("a", host: "10.7.0.1", stateDirectory: state)
        _ = try await lab.up(a, authKey: key)
        let maybeBefore = await InProcessTailnet.ipv4(a)
        let before = try XCTUnwrap(maybeBefore)
        let key1 = await a.node.nodeKey
        await a.node.shutdown()
        lab.nodes.removeAll { $0.name == "a" }

        // Same state directory: the same keys, no auth key needed (the one-off key is spent), Running again.
        let again = try await lab.makeNode("a2", host: "10.7.0.1", stateDirectory: state)
        let running = await InProcessTailnet.eventually { await again.node.backendState == .running }
        let stateNow = await again.node.backendState
        XCTAssertTrue(running, "restarted node is \(stateNow)")
        let value10 = await again.node.nodeKey
        XCTAssertEqual(value10, key1)
        let value11 = await InProcessTailnet.ipv4(again)
        XCTAssertEqual(value11, before)
    }

    func testStatusBeforeLoginDownAndLogout() async throws {
        let lab = try await InProcessTailnet()
        addTeardownBlock { await lab.close() }
        let a = try await lab.makeNode("a", host: "10.8.0.1")
        var status = await a.node.status()
        XCTAssertEqual(status.backendState, .noState)
        // up without a server is refused with a clear error.
        do {
            _ = try await a.node.up(UpRequest())
            XCTFail("up without --login-server succeeded")
        } catch let error as LocalAPIError {
            XCTAssertEqual(error.status, 400)
        }
        do {
            _ = try await a.node.up(UpRequest(loginServer: "ftp://nope"))
            XCTFail("a non-HTTP URL was accepted")
        } catch let error as LocalAPIError {
            XCTAssertEqual(error.status, 400)
        }
        _ = try await lab.up(a, authKey: try await lab.preAuthKey())
        status = await a.node.status()
        XCTAssertEqual(status.backendState, .running)
        XCTAssertEqual(status.tailscaleIPs.count, 2)
        try await a.node.down()
        status = await a.node.status()
        XCTAssertEqual(status.backendState, .stopped)
        XCTAssertTrue(a.router.settings.localAddresses.isEmpty)
        // Up again without a key: still registered.
        let up = try await lab.up(a, authKey: nil)
        XCTAssertEqual(up.backendState, .running)
        try await a.node.logout()
        status = await a.node.status()
        XCTAssertEqual(status.backendState, .needsLogin)
    }

    func testInteractiveLoginPrintsAURLAndRunsOnceApproved() async throws {
        let lab = try await InProcessTailnet()
        addTeardownBlock { await lab.close() }
        let a = try await lab.makeNode("a", host: "10.9.0.1")
        let up = try await lab.up(a, authKey: nil)
        XCTAssertEqual(up.backendState, .needsLogin)
        let url = try XCTUnwrap(up.authURL)
        XCTAssertTrue(url.hasPrefix(lab.serverURL), url)
        let id = String(try XCTUnwrap(url.split(separator: "/").last))
        let user = try await lab.store.transaction { tx in try tx.createUser(name: "carol@example.com", now: Date()) }
        _ = try await lab.engine.approveInteractiveLogin(id: id, userID: user.id.rawValue)
        let running = await InProcessTailnet.eventually(20) { await a.node.backendState == .running }
        XCTAssertTrue(running)
    }
    func testAnExpiredNodeKeyNeedsALoginAndANewKeyThenTrafficFlowsAgain() async throws {
        let lab = try await InProcessTailnet()
        addTeardownBlock { await lab.close() }
        let key = try await lab.preAuthKey()
        let a = try await lab.makeNode("a", host: "10.10.0.1")
        let b = try await lab.makeNode("b", host: "10.10.0.2")
        _ = try await lab.up(a, authKey: key)
        _ = try await lab.up(b, authKey: key)
        let delivered = await InProcessTailnet.deliver(from: a, to: b)
        XCTAssertNotNil(delivered)
        let oldKey = await a.node.nodeKey
        let map = await a.node.currentNetworkMap
        let id = try XCTUnwrap(map.selfNode?.id)
        try await lab.engine.expireNode(id: id)
        let needsLogin = await InProcessTailnet.eventually { await a.node.backendState == .needsLogin }
        XCTAssertTrue(needsLogin, "an expired node key did not lead to NeedsLogin")
        // Log in again: a new node key, and the peer reaches it under that key.
        let up = try await lab.up(a, authKey: key)
        XCTAssertEqual(up.backendState, .running)
        let newKey = await a.node.nodeKey
        XCTAssertNotEqual(newKey, oldKey)
        let peerSeesNewKey = await InProcessTailnet.eventually {
            await b.node.currentNetworkMap.peers.first?.key == newKey
        }
        XCTAssertTrue(peerSeesNewKey)
        // (The peer's first handshake may reach the relay before this node is back on it under the new
        // key, and is lost: WireGuard retries after 5 s.)
        let again = await InProcessTailnet.deliver(from: b, to: a, attempts: 100)
        XCTAssertNotNil(again, "no traffic after the re-login with a new key")
    }
}
