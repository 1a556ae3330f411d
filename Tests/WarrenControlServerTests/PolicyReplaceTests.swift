// Replacing the policy of a running engine (what `policy set` ends in): the nodes whose filter, peers or SSH
// policy changed receive exactly that; the others receive nothing; a policy that is refused changes nothing.

import Foundation
import WarrenPolicy
import WarrenTailcfg
import XCTest
@testable import WarrenControlServer

final class PolicyReplaceTests: XCTestCase {
    static let before = """
        {"acls": [{"action": "accept", "src": ["alice@example.com"], "dst": ["bob@example.com:80"]}]}
        """
    static let after = """
        {
          "acls": [
            {"action": "accept", "src": ["alice@example.com"], "dst": ["bob@example.com:80"]},
            {"action": "accept", "src": ["carol@example.com"], "dst": ["bob@example.com:22"]},
          ],
        }
        """

    func testOnlyNodesWhoseResultsChangeReceiveAnUpdateAndARefusedPolicyChangesNothing() async throws {
        var h = try await PolicyHarness(policyText: Self.before)
        defer { h.stop() }
        let alice = try await h.join(key: try await h.preAuthKey(user: "alice@example.com"), hostname: "alice")
        let bob = try await h.join(key: try await h.preAuthKey(user: "bob@example.com"), hostname: "bob")
        let carol = try await h.join(key: try await h.preAuthKey(user: "carol@example.com"), hostname: "carol")
        let dave = try await h.join(key: try await h.preAuthKey(user: "dave@example.com"), hostname: "dave")
        await h.settle()
        func counts() -> [Int64: Int] { h.recorders.mapValues { $0.snapshot.messages } }
        let start = counts()
        XCTAssertNil(h.recorders[carol]?.snapshot.peers[bob])

        let changed = try await h.engine.setPolicy(text: Self.after)
        await h.settle()
        XCTAssertEqual(changed, 2, "bob (filter and peers) and carol (peers)")
        let now = counts()
        XCTAssertEqual(now[alice], start[alice], "alice's results did not change: nothing sent")
        XCTAssertEqual(now[dave], start[dave], "dave's results did not change: nothing sent")
        XCTAssertEqual(now[bob], (start[bob] ?? 0) + 1)
        XCTAssertEqual(now[carol], (start[carol] ?? 0) + 1)
        let carolView = try XCTUnwrap(h.recorders[carol]).snapshot
        XCTAssertNotNil(carolView.peers[bob], "carol now sees bob")
        let bobView = try XCTUnwrap(h.recorders[bob]).snapshot
        let carolAddresses = Set(carolView.selfNode?.addresses?.map { $0.address.description } ?? [])
        XCTAssertTrue(bobView.filter?.contains { Set($0.srcIPs) == carolAddresses && $0.dstPorts?.first?.ports == PortRange(first: 22, last: 22) } == true)
        let fresh = try await h.freshCompile()
        for (id, recorder) in h.recorders {
            XCTAssertEqual(recorder.snapshot.filter, fresh[id]?.packetFilter)
        }

        // Refused: a syntax error (with line and column) and a failing test; nothing is sent, the policy stays.
        do {
            _ = try await h.engine.setPolicy(text: "{\n  \"acls\": [\n    {\"action\": \"accept\",, }\n  ]\n}")
            XCTFail("a broken policy was accepted")
        } catch let rejection as PolicyRejection {
            XCTAssertEqual(rejection.problems.first?.line, 3)
            XCTAssertNotNil(rejection.problems.first?.column)
        }
        do {
            _ = try await h.engine.setPolicy(text: """
                {
                  "acls": [],
                  "tests": [{"src": "alice@example.com", "accept": ["bob@example.com:80"]}],
                }
                """)
            XCTFail("a policy whose test fails was accepted")
        } catch let rejection as PolicyRejection {
            XCTAssertEqual(rejection.problems.count, 1)
            XCTAssertEqual(rejection.problems.first?.line, 3)
        }
        await h.settle()
        XCTAssertEqual(counts(), now, "a refused policy sends nothing")
        XCTAssertEqual(h.policy.policy?.source, Self.after)
    }

    /// Two `policy set` calls racing: each stores a version, then puts it in force; the newest stored version
    /// wins whatever order the two arrive in.
    func testAnOlderStoredVersionArrivingLateChangesNothing() async throws {
        var h = try await PolicyHarness(policyText: Self.before)
        defer { h.stop() }
        _ = try await h.join(key: try await h.preAuthKey(user: "bob@example.com"), hostname: "bob")
        _ = try await h.join(key: try await h.preAuthKey(user: "carol@example.com"), hostname: "carol")
        let newer = try await h.engine.putStoredPolicyInForce(text: Self.after, version: 8)
        XCTAssertEqual(newer, 2)
        let older = try await h.engine.putStoredPolicyInForce(text: Self.before, version: 7)
        XCTAssertEqual(older, 0)
        XCTAssertEqual(h.policy.policy?.source, Self.after)
    }
}
