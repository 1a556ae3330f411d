// What the policy decides reaches the map: SSH policy (sent when it changes), the self node's capabilities
// from nodeAttrs, and routes (approved subnet routes in a router's AllowedIPs and PrimaryRoutes for the peers
// allowed to use them; an approved exit node's default routes).

import Foundation
import WarrenControlStore
import WarrenPacket
import WarrenPolicy
import WarrenTailcfg
import XCTest
@testable import WarrenControlServer

final class PolicyMapContentTests: XCTestCase {
    static let policyText = """
        {
          "tagOwners": {"tag:web": ["alice@example.com"], "tag:router": ["alice@example.com"]},
          "acls": [
            {"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]},
            {"action": "accept", "src": ["bob@example.com"], "dst": ["10.1.0.0/16:*", "tag:router:22", "autogroup:internet:*"]},
            {"action": "accept", "src": ["alice@example.com"], "dst": ["tag:web:443"]},
          ],
          "autoApprovers": {"routes": {"10.1.2.0/24": ["tag:router"]}},
          "ssh": [{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self"], "users": ["autogroup:nonroot"]}],
          "nodeAttrs": [{"target": ["tag:web"], "attr": ["funnel", "drive:share"]}],
        }
        """

    func testSelfNodeCarriesNodeAttrsAndARetagSendsTheNewCapabilities() async throws {
        var h = try await PolicyHarness(policyText: Self.policyText)
        defer { h.stop() }
        let web = try await h.join(key: try await h.preAuthKey(user: "alice@example.com", tags: ["tag:web"]), hostname: "web")
        let laptop = try await h.join(key: try await h.preAuthKey(user: "alice@example.com"), hostname: "laptop")
        await h.settle()
        let webState = try XCTUnwrap(h.recorders[web]).snapshot
        let ssh = "https://tailscale.com/cap/ssh"
        // Bare attributes (and the baseline) carry no arguments: null, as Tailscale sends them.
        let webCaps: NodeCapMap = ["funnel": nil, "drive:share": nil, ssh: nil]
        let baseline: NodeCapMap = [ssh: nil]
        XCTAssertEqual(webState.selfNode?.capMap, webCaps)
        XCTAssertEqual(try XCTUnwrap(h.recorders[laptop]).snapshot.selfNode?.capMap, baseline, "the baseline only")
        // Peers do not carry another node's attributes.
        XCTAssertNil(try XCTUnwrap(h.recorders[laptop]).snapshot.peers[web]?.capMap)

        try await h.adminUpdate(web) { $0.tags = [] }
        await h.settle()
        let after = try XCTUnwrap(h.recorders[web]).snapshot
        XCTAssertEqual(after.selfNode?.capMap, baseline, "the attributes went with the tag")
    }

    func testSSHPolicyIsSentFirstAndAgainOnlyWhenItChanges() async throws {
        var h = try await PolicyHarness(policyText: Self.policyText)
        defer { h.stop() }
        let aliceKey = try await h.preAuthKey(user: "alice@example.com")
        let a1 = try await h.join(key: aliceKey, hostname: "a1")
        await h.settle()
        let first = try XCTUnwrap(h.recorders[a1]).snapshot.ssh
        XCTAssertEqual(first?.rules.first?.principals.compactMap(\.nodeIP).count, 2, "a1 may reach itself")
        let sent = try XCTUnwrap(h.recorders[a1]).snapshot.messages
        // A second device of alice's: a1's SSH rule now lists its addresses too.
        let a2 = try await h.join(key: aliceKey, hostname: "a2")
        await h.settle()
        let a2Addresses = try XCTUnwrap(h.recorders[a2]).snapshot.selfNode?.addresses?.map { $0.address.description } ?? []
        let second = try XCTUnwrap(h.recorders[a1]).snapshot.ssh
        XCTAssertEqual(Set(second?.rules.first?.principals.compactMap(\.nodeIP) ?? []).isSuperset(of: a2Addresses), true)
        XCTAssertGreaterThan(try XCTUnwrap(h.recorders[a1]).snapshot.messages, sent)
        // carol joining changes nothing for alice's devices: no message at all.
        let before = try XCTUnwrap(h.recorders[a1]).snapshot.messages
        _ = try await h.join(key: try await h.preAuthKey(user: "carol@example.com"), hostname: "c1")
        await h.settle()
        XCTAssertEqual(try XCTUnwrap(h.recorders[a1]).snapshot.messages, before, "a node the change does not concern receives nothing")
    }

    func testApprovedSubnetRoutesReachOnlyPeersAllowedToUseThemAndExitNodesOfferDefaultRoutes() async throws {
        var h = try await PolicyHarness(policyText: Self.policyText)
        defer { h.stop() }
        let aliceKey = try await h.preAuthKey(user: "alice@example.com")
        let bobKey = try await h.preAuthKey(user: "bob@example.com")
        let routerKey = try await h.preAuthKey(user: "alice@example.com", tags: ["tag:router"])
        let subnet = IPPrefix("10.1.1.0/24")!
        let auto = IPPrefix("10.1.2.0/24")!
        let v4Default = IPPrefix("0.0.0.0/0")!, v6Default = IPPrefix("::/0")!

        // alice's own router (seen by her laptop through autogroup:self, but alice may not use 10.1/16).
        let aliceRouter = try await h.join(key: aliceKey, hostname: "alice-router", routes: [subnet])
        let aliceLaptop = try await h.join(key: aliceKey, hostname: "alice-laptop")
        // A tagged router bob may reach on port 22, advertising the same subnet and an auto-approved one.
        let router = try await h.join(key: routerKey, hostname: "router", routes: [subnet, auto])
        let bob = try await h.join(key: bobKey, hostname: "bob")
        let bobExit = try await h.join(key: bobKey, hostname: "bob-exit", routes: [v4Default, v6Default])
        await h.settle()

        // Nothing approved by an admin yet: only the auto-approved route is served.
        var bobView = try XCTUnwrap(h.recorders[bob]).snapshot
        XCTAssertEqual(bobView.peers[router]?.primaryRoutes, [auto])
        XCTAssertTrue(bobView.peers[router]?.allowedIPs?.contains(auto) == true)
        XCTAssertFalse(bobView.peers[router]?.allowedIPs?.contains(subnet) == true)
        XCTAssertNil(bobView.peers[bobExit]?.primaryRoutes)
        XCTAssertFalse(bobView.peers[bobExit]?.allowedIPs?.contains(v4Default) == true, "the exit node is not approved yet")

        // The admin approves alice's router's subnet (`nodes approve-routes`): it is the primary (lowest ID).
        try await h.adminUpdate(aliceRouter) { $0.approvedRoutes = [subnet] }
        try await h.adminUpdate(router) { $0.approvedRoutes = [subnet] }
        try await h.adminUpdate(bobExit) { $0.approvedRoutes = [v4Default, v6Default] }
        await h.settle()
        let aliceView = try XCTUnwrap(h.recorders[aliceLaptop]).snapshot
        XCTAssertNotNil(aliceView.peers[aliceRouter], "alice sees her own router")
        XCTAssertNil(aliceView.peers[aliceRouter]?.primaryRoutes, "alice may not use 10.1.1.0/24")
        XCTAssertFalse(aliceView.peers[aliceRouter]?.allowedIPs?.contains(subnet) == true)
        XCTAssertEqual(try XCTUnwrap(h.recorders[aliceRouter]).snapshot.selfNode?.primaryRoutes, [subnet])

        bobView = try XCTUnwrap(h.recorders[bob]).snapshot
        XCTAssertEqual(bobView.peers[router]?.primaryRoutes, [auto], "alice's router is the subnet's primary")
        XCTAssertTrue(bobView.peers[bobExit]?.allowedIPs?.contains(v4Default) == true)
        XCTAssertTrue(bobView.peers[bobExit]?.allowedIPs?.contains(v6Default) == true)
        XCTAssertNil(bobView.peers[bobExit]?.primaryRoutes, "exit routes are not primary routes")

        // alice's router goes: the tagged router becomes the subnet's primary and bob is told.
        try await h.engine.deleteNode(id: aliceRouter)
        await h.settle()
        bobView = try XCTUnwrap(h.recorders[bob]).snapshot
        XCTAssertEqual(Set(bobView.peers[router]?.primaryRoutes ?? []), [subnet, auto])
        XCTAssertTrue(bobView.peers[router]?.allowedIPs?.contains(subnet) == true)
    }
}
