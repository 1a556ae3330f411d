// A policy names a user as Tailscale and headscale do: by login, e-mail-like. A user with an e-mail address (given at
// `users create --email`, carried from headscale, or later from OIDC) is matched by that address
// (`alice@example.com`) and still by its name (`alice@`), as headscale v2 resolves a user token.

import Foundation
import TailscaleKeys
import WarrenControlStore
import WarrenPacket
import WarrenPolicy
import WarrenTailcfg
import XCTest
@testable import WarrenControlServer

final class UserEmailPolicyTests: XCTestCase {
    private func node(_ id: Int64, user: Int64) -> ControlNode { ControlNode.policyTestNode(id, user: user, seed: 40) }

    private func snapshot(aliceEmail: String) -> TailnetSnapshot {
        TailnetSnapshot(
            nodes: [1: node(1, user: 1), 2: node(2, user: 2), 3: node(3, user: 3)],
            users: [1: ControlUser(id: 1, name: "alice", email: aliceEmail), 2: ControlUser(id: 2, name: "bob"),
                    3: ControlUser(id: 3, name: "carol", email: "carol@example.com")],
            online: [])
    }

    /// The sources that may reach node 2 (bob's) on port 22 under a policy whose only source is `source`.
    private func sources(_ source: String, _ tailnet: TailnetSnapshot, policy: CompiledPolicy? = nil) throws -> Set<String> {
        let compiled = try policy ?? CompiledPolicy(text: """
            {"acls": [{"action": "accept", "src": ["\(source)"], "dst": ["*:22"]}]}
            """)
        let rules = compiled.filterRules(for: tailnet.nodes[2]!, in: tailnet)
        return Set(rules.flatMap(\.srcIPs))
    }

    private let alice: Set<String> = ["100.64.0.1", "fd7a:115c:a1e0::1"]

    func testAUserIsNamedByItsEmailAndByItsName() throws {
        let tailnet = snapshot(aliceEmail: "alice@example.com")
        XCTAssertEqual(try sources("alice@example.com", tailnet), alice)
        XCTAssertEqual(try sources("alice@", tailnet), alice)
        XCTAssertEqual(try sources("carol@example.com", tailnet), ["100.64.0.3", "fd7a:115c:a1e0::3"])
        // bob has no e-mail address: his name, as before.
        XCTAssertEqual(try sources("bob@", tailnet), ["100.64.0.2", "fd7a:115c:a1e0::2"])
        // An address nobody has names nobody.
        XCTAssertEqual(try sources("alice@other.example", tailnet), [])
        // The policy's tailnet: users by their logins.
        let users = CompiledPolicy.tailnet(from: tailnet).users
        XCTAssertEqual(users.map(\.email), ["alice@example.com", "bob", "carol@example.com"])
        XCTAssertEqual(users.map(\.name), ["alice", "bob", "carol"])
    }

    func testAChangedEmailIsFollowed() throws {
        let policy = try CompiledPolicy(text: """
            {"acls": [{"action": "accept", "src": ["alice@example.com"], "dst": ["*:22"]}]}
            """)
        let before = snapshot(aliceEmail: "")
        XCTAssertEqual(try sources("", before, policy: policy), [])
        // The same compiled policy, asked again once alice has the address: the users changed, so it recompiles.
        let after = snapshot(aliceEmail: "alice@example.com")
        XCTAssertNil(policy.nodesChanged([], in: after))
        XCTAssertEqual(try sources("", after, policy: policy), alice)
    }

    func testTheStoreDirectoryCarriesTheEmail() async throws {
        let store = MemoryControlStore()
        _ = try await store.transaction { try $0.createUser(name: "alice", email: "alice@example.com", now: Date()) }
        _ = try await store.transaction { try $0.createUser(name: "bob", now: Date()) }
        let configuration = ControlConfiguration(serverURL: "http://127.0.0.1:1")
        let directory = try StoreDirectory(store: store, ipv4Prefix: configuration.ipv4Prefix, ipv6Prefix: configuration.ipv6Prefix)
        let users = try await directory.users().sorted { $0.id < $1.id }
        XCTAssertEqual(users.map(\.email), ["alice@example.com", ""])
        XCTAssertEqual(users.map(\.loginName), ["alice@example.com", "bob"])
    }
}
