// Issue 13 §4, "a mass reconnect is cheap": when N map streams open at once (as after a restart of the server),
// online state goes out in batches, one message per stream, not one patch per pair (N(N-1)/2 before: 499,500
// messages for 1,000 streams). Counted through the sessions' outboxes and the engine's statistics; no clocks.

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

final class MassReconnectTests: XCTestCase {
    struct Member {
        let client: ControlClient
        var outbox: MapSessionOutbox?
        var model = ClientModel()
    }

    /// `count` registered nodes whose disco keys and endpoints the server already knows (a one-shot map request
    /// each, before any stream is open): what a restarted server has in its store.
    func registeredTailnet(_ fixture: InProcessEngine, count: Int) async throws -> [Member] {
        var members = [Member]()
        for i in 0..<count {
            let c = ControlClient(port: 1, seed: UInt64(10_000 + i))
            let reply = await fixture.engine.register(c.registerRequest(authKey: fixture.authKey, hostname: "m\(i)"),
                                                      machineKey: c.machineKey.publicKey)
            XCTAssertEqual(reply.error, "")
            let endpoint = AddrPort(address: .v4(0xC633_6400 &+ UInt32(i)), port: 41641)
            _ = try await fixture.engine.map(c.mapRequest(stream: false, omitPeers: true, endpoints: [endpoint]),
                                             machineKey: c.machineKey.publicKey)
            members.append(Member(client: c))
        }
        return members
    }

    /// Opens every member's stream at once (concurrent requests, as reconnecting clients make them).
    func openAll(_ members: inout [Member], engine: ControlEngine) async throws {
        let clients = members.map(\.client)
        let outboxes = try await withThrowingTaskGroup(of: (Int, MapSessionOutbox).self) { group in
            for (i, c) in clients.enumerated() {
                group.addTask {
                    guard case .stream(let outbox) = try await engine.map(c.mapRequest(stream: true), machineKey: c.machineKey.publicKey) else {
                        throw TestClientError(description: "expected a stream")
                    }
                    return (i, outbox)
                }
            }
            var out = [Int: MapSessionOutbox]()
            for try await (i, outbox) in group { out[i] = outbox }
            return out
        }
        for i in members.indices { members[i].outbox = outboxes[i] }
    }

    /// Applies everything queued on the member's stream (pacing skipped: the sleep returns at once).
    func drain(_ member: inout Member) async {
        guard let outbox = member.outbox else { return }
        while outbox.pendingCount > 0, let item = await outbox.nextOutgoing(sleep: { _ in }) {
            member.model.apply(item.materialized)
        }
    }

    func testAMassReconnectCostsEachStreamOneMessageOfOnlineState() async throws {
        let n = 300
        // An interval far beyond the test: the batch of online changes goes only when the test sends it.
        let fixture = try await InProcessEngine.start { $0.mapUpdateInterval = .seconds(3600) }
        let engine = fixture.engine
        var members = try await registeredTailnet(fixture, count: n)
        // What the lite updates queued reached no stream (none was open).
        await engine.flushPeerChanges()
        let before = await engine.statistics

        try await openAll(&members, engine: engine)
        let queuedWhileOpening = members.reduce(0) { $0 + ($1.outbox?.counts.appended ?? 0) }
        XCTAssertEqual(queuedWhileOpening, n, "while the streams open, each gets its full map and nothing else "
                       + "(one patch per pair would be \(n * (n - 1) / 2) more)")
        let pending = await engine.batchedPeerChangeCount
        XCTAssertEqual(pending, n, "every node's coming online waits in one batch")

        let sent = await engine.flushPeerChanges()
        let after = await engine.statistics
        XCTAssertLessThan(sent, n, "at most one message per stream (the last stream to open needs none)")
        XCTAssertEqual(after.incrementalUpdatesSent - before.incrementalUpdatesSent, sent)
        XCTAssertEqual(after.fullMapsSent - before.fullMapsSent, n)
        let total = members.reduce(0) { $0 + ($1.outbox?.counts.appended ?? 0) }
        XCTAssertLessThanOrEqual(total, 2 * n, "O(N) messages in all, not O(N²)")

        // Every stream ends up holding every peer, each online, with its endpoints.
        for i in members.indices { await drain(&members[i]) }
        for (i, member) in members.enumerated() {
            XCTAssertEqual(member.model.peers.count, n - 1, "member \(i) holds every peer")
            let offline = member.model.peers.values.filter { $0.online != true }.map(\.id)
            XCTAssertEqual(offline, [], "member \(i) sees every peer online")
            XCTAssertFalse(member.model.peers.values.contains { $0.endpoints?.isEmpty ?? true }, "with endpoints")
        }
        for member in members { member.outbox?.cancel() }
    }

    /// The batch goes by itself after the pacing interval: real pacing and a short interval, no send by hand.
    func testTheBatchGoesOutAfterTheInterval() async throws {
        let n = 40
        let fixture = try await InProcessEngine.start { $0.mapUpdateInterval = .milliseconds(20) }
        let engine = fixture.engine
        var members = try await registeredTailnet(fixture, count: n)
        try await openAll(&members, engine: engine)
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(30)
        for i in members.indices {
            guard let outbox = members[i].outbox else { continue }
            while members[i].model.peers.count < n - 1 || members[i].model.peers.values.contains(where: { $0.online != true }) {
                guard clock.now < deadline else { return XCTFail("member \(i) did not learn everyone online within 30 s") }
                let next = await UrgentPacingTests.next(outbox, within: 1)
                if let next { members[i].model.apply(next.materialized) }
            }
        }
        let leftover = await engine.batchedPeerChangeCount
        XCTAssertEqual(leftover, 0)
        for member in members { member.outbox?.cancel() }
    }

    /// A node that comes online and goes offline again before the batch goes is seen offline (with its last-seen
    /// time), and at once: going offline does not wait for the interval.
    func testOnlineThenOfflineInOneBatchEndsOffline() async throws {
        let fixture = try await InProcessEngine.start { $0.mapUpdateInterval = .seconds(3600) }
        let engine = fixture.engine
        var members = try await registeredTailnet(fixture, count: 2)
        await engine.flushPeerChanges()
        guard case .stream(let a) = try await engine.map(members[0].client.mapRequest(stream: true),
                                                         machineKey: members[0].client.machineKey.publicKey) else {
            return XCTFail("expected a stream")
        }
        members[0].outbox = a
        await drain(&members[0])
        let b = members[1].client
        guard case .stream(let bStream) = try await engine.map(b.mapRequest(stream: true), machineKey: b.machineKey.publicKey) else {
            return XCTFail("expected b's stream")
        }
        XCTAssertEqual(a.pendingCount, 0, "b's coming online waits in the batch")
        bStream.cancel()
        // The offline is urgent: the engine sends the batch by itself, without waiting for the hour.
        let message = await UrgentPacingTests.next(a, within: 10)
        // (The batch also carries a's own coming online, which a's client ignores: a is not its own peer.)
        let patches = message?.message.peersChangedPatch ?? []
        let offline = patches.filter { $0.online == false }
        XCTAssertEqual(offline.count, 1, "b offline: \(String(describing: message?.message))")
        XCTAssertNotNil(offline.first?.lastSeen)
        XCTAssertFalse(patches.contains { $0.nodeID == offline.first?.nodeID && $0.online == true }, "one patch for b")
        a.cancel()
    }
}
