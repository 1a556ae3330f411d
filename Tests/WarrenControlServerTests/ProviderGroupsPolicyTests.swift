// A groups claim feeds policy groups (oidc.groups_in_policy): `group:NAME` includes, besides its listed members, the
// users whose identity provider put them in NAME at their last sign-in; a sign-in that drops the group takes the
// access away, and the change recompiles the policy for everyone (the engine re-sends peers and filters).

import Foundation
import TailscaleKeys
import WarrenControlAdmin
import WarrenControlStore
import WarrenPacket
import WarrenPolicy
import WarrenTailcfg
import XCTest
@testable import WarrenControlServer

final class ProviderGroupsPolicyTests: XCTestCase {
    private func node(_ id: Int64, user: Int64) -> ControlNode { ControlNode.policyTestNode(id, user: user, seed: 70) }

    /// alice (node 1) with the provider groups given, bob (node 2, the server), carol (node 3, listed in group:eng).
    private func snapshot(aliceGroups: [String]) -> TailnetSnapshot {
        TailnetSnapshot(
            nodes: [1: node(1, user: 1), 2: node(2, user: 2), 3: node(3, user: 3)],
            users: [1: ControlUser(id: 1, name: "alice", email: "alice@example.com", providerGroups: aliceGroups),
                    2: ControlUser(id: 2, name: "bob"),
                    3: ControlUser(id: 3, name: "carol", email: "carol@example.com")],
            online: [])
    }

    private static let text = """
        {
          "groups": {"group:eng": ["carol@example.com"], "group:ops": []},
          "acls": [
            {"action": "accept", "src": ["group:eng"], "dst": ["bob@:22"]},
            {"action": "accept", "src": ["group:ops"], "dst": ["bob@:80"]}
          ]
        }
        """

    private func policy(groupsInPolicy: Bool) throws -> CompiledPolicy {
        CompiledPolicy(policy: try PolicyParser.parse(Self.text), options: CompileOptions(providerGroups: groupsInPolicy))
    }

    /// The sources that may reach bob's node on `port`.
    private func sources(_ policy: CompiledPolicy, _ tailnet: TailnetSnapshot, port: UInt16) -> Set<String> {
        let rules = policy.filterRules(for: tailnet.nodes[2]!, in: tailnet)
        return Set(rules.filter { ($0.dstPorts ?? []).contains { $0.ports.first <= port && port <= $0.ports.last } }.flatMap(\.srcIPs))
    }

    private let alice: Set<String> = ["100.64.0.1", "fd7a:115c:a1e0::1"]
    private let carol: Set<String> = ["100.64.0.3", "fd7a:115c:a1e0::3"]

    func testAUserInAProviderGroupReachesWhatThePolicyGroupMayAndLosesItWhenTheGroupIsDropped() throws {
        let policy = try policy(groupsInPolicy: true)
        let signedIn = snapshot(aliceGroups: ["eng", "unknown-group"])
        XCTAssertEqual(sources(policy, signedIn, port: 22), alice.union(carol), "listed members and the provider's")
        XCTAssertEqual(sources(policy, signedIn, port: 80), [], "alice is not in ops")
        XCTAssertEqual(policy.peerIDs(of: signedIn.nodes[2]!, in: signedIn), [1, 3])
        XCTAssertTrue(policy.canSee(signedIn.nodes[1]!, signedIn.nodes[2]!, in: signedIn))

        // The next sign-in says ops, not eng: everything is compiled again (the engine then re-sends every node what
        // changed), and alice reaches port 80, not 22.
        _ = policy.nodesChanged([], in: signedIn)
        XCTAssertEqual(policy.nodesChanged([], in: signedIn), [], "nothing changed")
        let moved = snapshot(aliceGroups: ["ops"])
        XCTAssertNil(policy.nodesChanged([], in: moved), "a change of a user's groups recompiles the policy")
        XCTAssertEqual(sources(policy, moved, port: 22), carol)
        XCTAssertEqual(sources(policy, moved, port: 80), alice)

        // No groups at the last sign-in: alice is in neither group, and bob's node no longer has her as a peer.
        let dropped = snapshot(aliceGroups: [])
        XCTAssertNil(policy.nodesChanged([], in: dropped))
        XCTAssertEqual(sources(policy, dropped, port: 22), carol)
        XCTAssertEqual(sources(policy, dropped, port: 80), [])
        XCTAssertEqual(policy.peerIDs(of: dropped.nodes[2]!, in: dropped), [3])
        XCTAssertFalse(policy.canSee(dropped.nodes[1]!, dropped.nodes[2]!, in: dropped))
    }

    func testProviderGroupsCountOnlyWhenTurnedOn() throws {
        let policy = try policy(groupsInPolicy: false)
        let tailnet = snapshot(aliceGroups: ["eng"])
        XCTAssertEqual(sources(policy, tailnet, port: 22), carol, "without oidc.groups_in_policy only listed members count")
        // Groups changed while off: nothing to recompile (after the first build has been reported).
        _ = policy.nodesChanged([], in: tailnet)
        XCTAssertEqual(policy.nodesChanged([], in: snapshot(aliceGroups: ["ops"])), [])
        XCTAssertEqual(CompiledPolicy.tailnet(from: tailnet).users.map(\.providerGroups), [[], [], []])
        XCTAssertEqual(CompiledPolicy.tailnet(from: tailnet, providerGroups: true).users.map(\.providerGroups), [["eng"], [], []])
    }

    /// The reference compiler (the oracle the engine is checked against) resolves provider groups the same way.
    func testTheReferenceCompilerAgrees() throws {
        let parsed = try PolicyParser.parse(Self.text)
        for groups in [["eng"], ["ops"], [], ["eng", "ops"]] {
            let tailnet = CompiledPolicy.tailnet(from: snapshot(aliceGroups: groups), providerGroups: true)
            let reference = PolicyCompiler(policy: parsed, tailnet: tailnet).packetFilter(for: "n2")
            let engine = PolicyEngine(policy: parsed, tailnet: tailnet).packetFilter(for: "n2")
            XCTAssertEqual(Set(reference.flatMap(\.srcIPs)), Set(engine.flatMap(\.srcIPs)), "\(groups)")
            XCTAssertEqual(Set(engine.flatMap(\.srcIPs)).isSuperset(of: alice), !groups.isEmpty, "\(groups)")
        }
    }

    func testTheStoreDirectoryCarriesTheProviderGroups() async throws {
        let store = MemoryControlStore()
        var user = try await store.transaction { try $0.createUser(name: "alice", now: Date()) }
        user.providerGroups = ["eng"]
        let changed = user
        try await store.transaction { try $0.update(changed) }
        let configuration = ControlConfiguration(serverURL: "http://127.0.0.1:1")
        let directory = try StoreDirectory(store: store, ipv4Prefix: configuration.ipv4Prefix, ipv6Prefix: configuration.ipv6Prefix)
        let users = try await directory.users()
        XCTAssertEqual(users.map(\.providerGroups), [["eng"]])
        // The admin API shows them (`users list -o json`), and reads a server's answer without them as none.
        let shown = UserJSON(changed)
        XCTAssertEqual(shown.providerGroups, ["eng"])
        let encoded = try JSONEncoder().encode(shown)
        XCTAssertEqual(try JSONDecoder().decode(UserJSON.self, from: encoded), shown)
        let older = try JSONDecoder().decode(UserJSON.self, from: Data(#"{"id":1,"name":"a","displayName":"","created":"x"}"#.utf8))
        XCTAssertEqual(older.providerGroups, [])
    }
}
