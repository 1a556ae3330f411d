// The change fan-out in process, with ControlEngine and no sockets: bursts of joins and streams opening,
// each session's messages applied to a model of Tailscale's client (``ClientModel``), compared with the
// full map a fresh request gets at the end.

import Foundation
import Logging
import Synchronization
import TailscaleKeys
import WarrenControlClient
import WarrenControlStore
import WarrenTailcfg
import WarrenControlTransport
import XCTest
@testable import WarrenControlServer

final class ControlFanoutTests: XCTestCase {
    struct Tailnet {
        var engine: ControlEngine
        var authKey: String
    }

    func makeEngine(interval: Duration? = nil) async throws -> Tailnet {
        let fixture = try await InProcessEngine.start { if let interval { $0.mapUpdateInterval = interval } }
        return Tailnet(engine: fixture.engine, authKey: fixture.authKey)
    }

    /// A node's requests (ControlClient only builds them here; nothing is connected).
    func member(_ seed: Int) -> ControlClient { ControlClient(port: 1, seed: UInt64(seed)) }

    func register(_ c: ControlClient, in t: Tailnet) async throws {
        let reply = await t.engine.register(c.registerRequest(authKey: t.authKey, hostname: "node-\(c.discoKey.raw.hex.prefix(8))"),
                                            machineKey: c.machineKey.publicKey)
        XCTAssertEqual(reply.error, "")
    }

    func openStream(_ c: ControlClient, in t: Tailnet) async throws -> MapSessionOutbox {
        guard case .stream(let outbox) = try await t.engine.map(c.mapRequest(stream: true), machineKey: c.machineKey.publicKey) else {
            throw TestClientError(description: "expected a stream")
        }
        return outbox
    }

    /// The full map a one-shot request gets now: what every session should have converged to.
    func truth(_ c: ControlClient, in t: Tailnet) async throws -> MapResponse {
        guard case .single(let full?) = try await t.engine.map(c.mapRequest(stream: false), machineKey: c.machineKey.publicKey) else {
            throw TestClientError(description: "expected a full map")
        }
        return full
    }

    func model(from full: MapResponse) -> [Int64: WarrenTailcfg.Node] {
        Dictionary(uniqueKeysWithValues: (full.peers ?? []).map { ($0.id, $0) })
    }

    func testBurstOfJoinsGivesEachWaitingSessionEveryPeerExactlyOnceInOneMergedMessage() async throws {
        let t = try await makeEngine()
        let first = (1...12).map(member)
        var outboxes = [MapSessionOutbox]()
        for c in first {
            try await register(c, in: t)
            outboxes.append(try await openStream(c, in: t))
        }
        // Nobody reads while 20 more join, 8 of them opening streams too.
        let joiners = (100..<120).map(member)
        for (i, c) in joiners.enumerated() {
            try await register(c, in: t)
            if i % 5 < 2 { _ = try await openStream(c, in: t) }
        }
        for (i, c) in first.enumerated() {
            let outbox = outboxes[i]
            var client = ClientModel()
            let full = await outbox.next()
            XCTAssertNotNil(full?.peers, "the first message is the full map")
            full.map { client.apply($0) }
            let next = await outbox.next()
            client.apply(try XCTUnwrap(next))
            // Everything that piled up came as one message.
            let counts = outbox.counts
            XCTAssertEqual(counts.delivered, 2)
            XCTAssertGreaterThan(counts.appended, 20, "at least one queued message per joiner")
            let expected = model(from: try await truth(c, in: t))
            XCTAssertEqual(client.peers, expected, "session \(i) converged to the full map")
            XCTAssertEqual(client.peers.count, first.count - 1 + joiners.count)
            XCTAssertEqual(Set(client.upserts.values), [1], "session \(i): each peer arrived exactly once")
        }
    }

    func testSessionsReadingWhileStreamsOpenConvergeAndSeeEachPeerOnce() async throws {
        let t = try await makeEngine()
        let members = (1...40).map(member)
        for c in members { try await register(c, in: t) }
        // Each stream's reader runs concurrently with the other streams opening (like a server restart).
        let models = SharedModels()
        var readers = [Task<Void, Never>]()
        var outboxes = [MapSessionOutbox]()
        for (i, c) in members.enumerated() {
            let outbox = try await openStream(c, in: t)
            outboxes.append(outbox)
            readers.append(Task {
                for await message in outbox {
                    models.state.withLock { $0[i, default: ClientModel()].apply(message) }
                }
            })
        }
        // All streams are open and the engine has queued everything: wait until every reader caught up
        // (bounded by a generous number of checks, not by a time the test asserts on).
        var truths = [[Int64: WarrenTailcfg.Node]]()
        for c in members { truths.append(model(from: try await truth(c, in: t))) }
        for _ in 0..<2_000 {
            let converged = models.state.withLock { m in truths.indices.allSatisfy { m[$0]?.peers == truths[$0] } }
            if converged { break }
            try await Task.sleep(for: .milliseconds(5))
        }
        var totalDelivered = 0, totalAppended = 0
        for i in members.indices {
            let expected = truths[i]
            let seen = models.state.withLock { $0[i] ?? ClientModel() }
            XCTAssertEqual(seen.peers, expected, "session \(i)")
            XCTAssertTrue(seen.peers.values.allSatisfy { $0.online == true })
            XCTAssertEqual(Set(seen.upserts.values), [1], "session \(i): each peer arrived exactly once")
            totalDelivered += outboxes[i].counts.delivered
            totalAppended += outboxes[i].counts.appended
        }
        // Each stream's opening tells the others its disco key (urgent: sent as soon as the engine is free, in a batch
        // with whatever else was made meanwhile), so at most one message per earlier stream and opening.
        XCTAssertLessThanOrEqual(totalAppended, members.count + members.count * (members.count - 1) / 2,
                                 "one full map each, and at most one batch per earlier stream and opening")
        XCTAssertLessThanOrEqual(totalDelivered, totalAppended)
        for r in readers { r.cancel() }
        for r in readers { await r.value }
    }

    func testAJoinIsEncodedOnceForAllTheSessionsThatGetIt() async throws {
        let t = try await makeEngine(interval: .zero)
        let members = (1...3).map(member)
        var outboxes = [MapSessionOutbox]()
        for c in members { try await register(c, in: t) }
        for c in members { outboxes.append(try await openStream(c, in: t)) }
        // Read each session up to date: the full map, then the batch of the later streams' patches (sent here rather
        // than by the engine's own task). Everything is queued then, so "nothing pending" is final.
        await t.engine.flushPeerChanges()
        for outbox in outboxes {
            repeat { _ = await outbox.nextOutgoing() } while outbox.pendingCount > 0
        }
        let joiner = member(50)
        try await register(joiner, in: t)
        var items = [MapOutgoing]()
        for outbox in outboxes {
            let item = await outbox.nextOutgoing()
            items.append(try XCTUnwrap(item))
        }
        let shared = try XCTUnwrap(items[0].shared)
        XCTAssertTrue(items.allSatisfy { $0.shared === shared }, "one shared message for every session")
        XCTAssertEqual(shared.message.peersChanged?.map(\.key), [joiner.nodeKey.publicKey])
        // The shared bytes are exactly what encoding the message for this session would give.
        for compress in [false, true] {
            let bytes = try items[1].framed(compress: compress)
            XCTAssertEqual(bytes, try items[2].framed(compress: compress))
            var decoder = MapStreamDecoder()
            decoder.append(bytes)
            guard case .message(let body) = try decoder.parseStep() else { return XCTFail("no frame") }
            let json = compress ? try Zstd.decompress(body, maximumSize: 1 << 20) : body
            XCTAssertEqual(try TailcfgJSON.decode(MapResponse.self, from: json), shared.message)
        }
    }

    func testClosingTheWriterEndsTheSessionAndThePeersSeeItGoOffline() async throws {
        let t = try await makeEngine()
        let a = member(1), b = member(2)
        try await register(a, in: t)
        try await register(b, in: t)
        let outA = try await openStream(a, in: t)
        let outB = try await openStream(b, in: t)
        var client = ClientModel()
        let full = await outA.next()
        client.apply(try XCTUnwrap(full))
        let online = await outA.next()
        client.apply(try XCTUnwrap(online))
        let bID = try XCTUnwrap(client.peers.keys.first)
        XCTAssertEqual(client.peers[bID]?.online, true)
        // b's writer goes away (its connection closed): the engine ends the session.
        outB.cancel()
        for _ in 0..<2_000 {
            if await !t.engine.isOnline(bID) { break }
            try await Task.sleep(for: .milliseconds(5))
        }
        let offline = await t.engine.isOnline(bID)
        XCTAssertFalse(offline)
        let gone = await outA.next()
        client.apply(try XCTUnwrap(gone))
        XCTAssertEqual(client.peers[bID]?.online, false)
        XCTAssertNotNil(client.peers[bID]?.lastSeen)
    }
}

final class SharedModels: Sendable {
    let state = Mutex([Int: ClientModel]())
}

final class MapSessionOutboxTests: XCTestCase {
    func patch(_ id: Int64) -> MapResponse {
        var m = MapResponse()
        var p = PeerChange(nodeID: id)
        p.online = true
        m.peersChangedPatch = [p]
        return m
    }

    func testMessagesQueuedBeforeTheWriterReadsAreMergedInOrderAroundOthers() async {
        let outbox = MapSessionOutbox()
        var full = MapResponse()
        full.peers = []
        outbox.yield(full)
        for id in 1...5 { outbox.yield(patch(Int64(id))) }
        let first = await outbox.next()
        XCTAssertEqual(first, full)
        let second = await outbox.next()
        XCTAssertEqual(second?.peersChangedPatch?.map(\.nodeID), [1, 2, 3, 4, 5])
        XCTAssertEqual(outbox.counts.appended, 6)
        XCTAssertEqual(outbox.counts.delivered, 2)
        XCTAssertEqual(outbox.pendingCount, 0)
    }

    func testAWaitingWriterGetsTheMessageAsItIs() async {
        let outbox = MapSessionOutbox()
        let reader = Task { await outbox.next() }
        await Task.yield()
        outbox.yield(patch(9))
        let got = await reader.value
        XCTAssertEqual(got, patch(9))
    }

    func testFinishDeliversWhatIsQueuedThenEndsAndTerminatesOnce() async {
        let outbox = MapSessionOutbox()
        let terminations = Mutex(0)
        outbox.setOnTermination { terminations.withLock { $0 += 1 } }
        var dns = MapResponse()
        dns.domain = "example"
        outbox.yield(dns)
        outbox.yield(patch(1))
        outbox.finish()
        XCTAssertEqual(terminations.withLock { $0 }, 1)
        outbox.yield(patch(2))
        let a = await outbox.next()
        let b = await outbox.next()
        let c = await outbox.next()
        XCTAssertEqual(a, dns)
        XCTAssertEqual(b, patch(1))
        XCTAssertNil(c)
        outbox.cancel()
        XCTAssertEqual(terminations.withLock { $0 }, 1)
    }

    func testPacingWaitsOutTheIntervalAndMergesWhatArrivedMeanwhile() async {
        let outbox = MapSessionOutbox(minimumInterval: .seconds(30))
        let sleeps = Mutex<[Duration]>([])
        let sleep: @Sendable (Duration) async throws -> Void = { d in sleeps.withLock { $0.append(d) } }
        outbox.yield(patch(1))
        let first = await outbox.nextOutgoing(sleep: sleep)
        XCTAssertEqual(first?.message, patch(1))
        XCTAssertEqual(sleeps.withLock { $0 }, [], "the first message after a quiet time goes at once")
        outbox.yield(patch(2))
        outbox.yield(patch(3))
        let second = await outbox.nextOutgoing(sleep: sleep)
        XCTAssertEqual(second?.message.peersChangedPatch?.map(\.nodeID), [2, 3])
        let waited = sleeps.withLock { $0 }
        XCTAssertEqual(waited.count, 1)
        XCTAssertTrue(waited.allSatisfy { $0 > .zero && $0 <= .seconds(30) }, "\(waited)")
    }

    func testCancellingTheWritersTaskEndsTheSession() async {
        let outbox = MapSessionOutbox()
        let terminations = Mutex(0)
        outbox.setOnTermination { terminations.withLock { $0 += 1 } }
        let reader = Task { () -> Int in
            var n = 0
            for await _ in outbox { n += 1 }
            return n
        }
        outbox.yield(patch(1))
        reader.cancel()
        let read = await reader.value
        XCTAssertLessThanOrEqual(read, 1)
        XCTAssertEqual(terminations.withLock { $0 }, 1)
        outbox.yield(patch(2))
        let after = await outbox.next()
        XCTAssertNil(after, "nothing is queued once the writer is gone")
    }
}
