// The server's incremental policy against a fresh whole compile: after every step of a random sequence of
// joins, retags, renames, route approvals and removals, what each open map session holds (packet filter, peers, SSH policy) equals
// what PolicyEngine compiled from scratch gives that node.

import Foundation
import WarrenControlStore
import WarrenPacket
import WarrenPolicy
import WarrenTailcfg
import WarrenTestSupport
import XCTest
@testable import WarrenControlServer

final class IncrementalPolicyServerTests: XCTestCase {
    static let policyText = """
        {
          "groups": {"group:eng": ["alice@example.com"]},
          "tagOwners": {"tag:web": ["alice@example.com"], "tag:db": ["alice@example.com"], "tag:router": ["alice@example.com"]},
          "acls": [
            {"action": "accept", "src": ["group:eng"], "dst": ["tag:web:80,443"]},
            {"action": "accept", "src": ["tag:web"], "dst": ["tag:db:5432"]},
            {"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]},
            {"action": "accept", "src": ["bob@example.com"], "dst": ["10.1.0.0/16:*"]},
          ],
          "autoApprovers": {"routes": {"10.1.0.0/16": ["tag:router"]}},
          "ssh": [
            {"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self"], "users": ["autogroup:nonroot"]},
            {"action": "accept", "src": ["group:eng"], "dst": ["tag:web"], "users": ["root"]},
          ],
          "nodeAttrs": [{"target": ["tag:web"], "attr": ["funnel"]}],
        }
        """

    /// Each live session against the fresh compile.
    func assertSessionsMatchFreshCompile(_ h: PolicyHarness, step: String) async throws {
        await h.settle()
        let expected = try await h.freshCompile()
        let nodes = Dictionary(uniqueKeysWithValues: await h.engine.allNodes().map { ($0.id, $0) })
        for (id, recorder) in h.recorders {
            let got = recorder.snapshot
            guard let node = nodes[id] else {
                // The stream was finished; its reader sees the end after the messages before it.
                var ended = got.ended
                for _ in 0..<5_000 where !ended {
                    try await Task.sleep(for: .milliseconds(1))
                    ended = recorder.snapshot.ended
                }
                XCTAssertTrue(ended, "\(step): the session of removed node \(id) is closed")
                continue
            }
            let want = try XCTUnwrap(expected[id])
            XCTAssertEqual(got.filter, want.packetFilter, "\(step): filter of \(node.givenName)")
            XCTAssertEqual(got.peers.values.compactMap { (n: WarrenTailcfg.Node) in n.computedName }.sorted(), want.peers,
                           "\(step): peers of \(node.givenName)")
            XCTAssertEqual(got.ssh ?? SSHPolicy(rules: []), want.sshPolicy ?? SSHPolicy(rules: []),
                           "\(step): SSH policy of \(node.givenName)")
        }
    }

    func testIncrementalServerOutputEqualsAFreshCompileAfterRandomJoinsRetagsRenamesApprovalsAndRemovals() async throws {
        for seed in [UInt64(2026), 7, 99] { try await run(seed: seed) }
    }

    func run(seed: UInt64) async throws {
        var h = try await PolicyHarness(policyText: Self.policyText)
        defer { h.stop() }
        let keys = [
            try await h.preAuthKey(user: "alice@example.com"),
            try await h.preAuthKey(user: "bob@example.com"),
            try await h.preAuthKey(user: "carol@example.com"),
            try await h.preAuthKey(user: "alice@example.com", tags: ["tag:web"]),
            try await h.preAuthKey(user: "alice@example.com", tags: ["tag:db"]),
        ]
        let tagChoices: [[String]] = [[], ["tag:web"], ["tag:db"], ["tag:router"], ["tag:web", "tag:db"]]
        var random = SeededGenerator(seed: seed)
        var joined = 0
        for step in 0..<40 {
            let live = await h.engine.allNodes().map(\.id)
            let roll = Int(random.next() % 10)
            if live.count < 3 || roll < 5 {
                let key = keys[Int(random.next() % UInt64(keys.count))]
                let routes = random.next() % 3 == 0 ? [IPPrefix("10.1.\(random.next() % 4).0/24")!] : []
                joined += 1
                try await h.join(key: key, hostname: "node\(joined)", routes: routes)
            } else if roll < 7 {
                let id = live[Int(random.next() % UInt64(live.count))]
                let tags = tagChoices[Int(random.next() % UInt64(tagChoices.count))]
                try await h.adminUpdate(id) { $0.tags = tags }
            } else if roll < 8 {
                // An admin renames a node, or approves what it advertises.
                let id = live[Int(random.next() % UInt64(live.count))]
                if random.next() % 2 == 0 {
                    let name = "renamed\(step)"
                    try await h.adminUpdate(id) { $0.givenName = name }
                } else {
                    try await h.adminUpdate(id) { $0.approvedRoutes = $0.advertisedRoutes }
                }
            } else {
                let id = live[Int(random.next() % UInt64(live.count))]
                try await h.engine.deleteNode(id: id)
            }
            try await assertSessionsMatchFreshCompile(h, step: "seed \(seed) step \(step)")
        }
        XCTAssertGreaterThan(h.recorders.count, 10)
    }
}
