// Issue 13 §4: the work a change costs, counted (never timed). Without a policy file `warren-control serve` runs
// CompiledPolicy with no policy, and the engine asks it, per viewer per change, whether the viewer sees the changed node:
// a set of every node built per question made one join O(N²). Now a question is a lookup.

import Foundation
import Logging
import TailscaleKeys
import WarrenControlClient
import WarrenControlStore
import WarrenPacket
import WarrenTailcfg
import XCTest
@testable import WarrenControlServer

final class FanoutWorkTests: XCTestCase {
    func tailnet(_ count: Int) -> TailnetSnapshot {
        var nodes = [Int64: ControlNode]()
        for i in 1...count {
            let key = Key32(bigEndianWords: (UInt64(i), 7, 8, 9))
            var node = ControlNode(id: Int64(i), machineKey: MachinePublic(raw: key), nodeKey: NodePublic(raw: key), userID: 1,
                                   hostname: "h\(i)", givenName: "h\(i)", created: TailcfgTime(secondsSince1970: 1_700_000_000, nanoseconds: 0))
            node.authorized = true
            nodes[node.id] = node
        }
        return TailnetSnapshot(nodes: nodes, users: [1: ControlUser(id: 1, name: "alice")], online: Set(nodes.keys))
    }

    func testCanSeeWithoutAPolicyBuildsNoSetPerQuestion() {
        let snapshot = tailnet(200)
        let policy = CompiledPolicy(policy: nil)
        _ = policy.nodesChanged(Set(snapshot.nodes.keys), in: snapshot)
        let before = policy.peerSetsBuilt
        var seen = 0
        for viewer in snapshot.nodes.values {
            for peer in snapshot.nodes.values where policy.canSee(viewer, peer, in: snapshot) { seen += 1 }
        }
        XCTAssertEqual(seen, 200 * 199, "everyone sees everyone but themselves")
        XCTAssertEqual(policy.peerSetsBuilt - before, 0, "40,000 questions, no set of peers built for any of them")
        // A node the policy was not told of is not seen (the table decides, as the set did).
        var stranger = snapshot.nodes[1]!
        stranger.id = 999
        XCTAssertFalse(policy.canSee(snapshot.nodes[2]!, stranger, in: snapshot))
    }

    func testAJoinWithoutAPolicyCostsNoPeerSetPerViewer() async throws {
        var configuration = ControlConfiguration(serverURL: "http://127.0.0.1:1")
        configuration.mapUpdateInterval = .zero
        let store = MemoryControlStore()
        let directory = try StoreDirectory(store: store, ipv4Prefix: configuration.ipv4Prefix, ipv6Prefix: configuration.ipv6Prefix)
        let policy = CompiledPolicy(policy: nil)
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        let engine = ControlEngine(configuration: configuration, directory: directory, policy: policy, logger: logger)
        try await engine.load()
        let authKey = try await store.transaction { tx in
            let owner = try tx.createUser(name: "alice", now: Date())
            var generator = SystemRandomNumberGenerator()
            return try tx.createPreAuthKey(userID: owner.id, options: PreAuthKeyOptions(reusable: true), now: Date(),
                                           generator: &generator).text
        }
        let n = 150
        for i in 0..<n {
            let c = ControlClient(port: 1, seed: UInt64(20_000 + i))
            let reply = await engine.register(c.registerRequest(authKey: authKey, hostname: "v\(i)"), machineKey: c.machineKey.publicKey)
            XCTAssertEqual(reply.error, "")
            guard case .stream = try await engine.map(c.mapRequest(stream: true), machineKey: c.machineKey.publicKey) else {
                return XCTFail("expected a stream")
            }
        }
        let before = policy.peerSetsBuilt
        let joiner = ControlClient(port: 1, seed: 99)
        let reply = await engine.register(joiner.registerRequest(authKey: authKey, hostname: "joiner"), machineKey: joiner.machineKey.publicKey)
        XCTAssertEqual(reply.error, "")
        XCTAssertEqual(policy.peerSetsBuilt - before, 0, "the join asked about \(n) viewers without building a set of peers for any")
        // And every viewer's stream got the newcomer.
        for outbox in await engine.openOutboxes() {
            var got = false
            while outbox.pendingCount > 0, let item = await outbox.nextOutgoing(sleep: { _ in }) {
                let m = item.materialized
                if (m.peersChanged ?? []).contains(where: { $0.key == joiner.nodeKey.publicKey })
                    || (m.peers ?? []).contains(where: { $0.key == joiner.nodeKey.publicKey }) { got = true }
            }
            XCTAssertTrue(got)
        }
    }

    /// Batches of patches piled up for a writer that is behind merge to the message MapUpdateMerger makes of them.
    func testPatchBatchesMergeAsTheMergerMergesThem() {
        var messages = [MapResponse]()
        for batch in 0..<4 {
            var m = MapResponse()
            m.controlTime = TailcfgTime(secondsSince1970: 1_700_000_000 + Int64(batch), nanoseconds: 0)
            m.peersChangedPatch = (0..<50).map { i in
                var p = PeerChange(nodeID: Int64((i * 7 + batch * 13) % 60))
                if (i + batch) % 3 == 0 { p.online = batch % 2 == 0 }
                if (i + batch) % 4 == 0 { p.derpRegion = 900 + batch }
                if (i + batch) % 5 == 0 { p.endpoints = [AddrPort(address: .v4(0x0A00_0001 &+ UInt32(i)), port: UInt16(1000 + batch))] }
                return p
            }
            messages.append(m)
        }
        var keepAlive = MapResponse.keepAliveMessage
        keepAlive.controlTime = TailcfgTime(secondsSince1970: 1_800_000_000, nanoseconds: 0)
        messages.insert(keepAlive, at: 2)
        let expected = MapUpdateMerger.coalesce(messages)
        XCTAssertEqual(expected.count, 1)
        let merged = MapSessionOutbox.mergedPatches(messages.map { MapOutgoing(message: $0, shared: nil) })
        XCTAssertEqual(merged, expected.first)
        // Anything but patches is left to the merger.
        var upsert = MapResponse()
        upsert.peersRemoved = [3]
        XCTAssertNil(MapSessionOutbox.mergedPatches((messages + [upsert]).map { MapOutgoing(message: $0, shared: nil) }))
    }
}
