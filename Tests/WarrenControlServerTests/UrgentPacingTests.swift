// Issue 13 §4, "pacing never delays reachability": a stream's writer batches changes, taking messages no more often
// than once per map_update_interval, but a message that lets the client reach a peer (a new node, its endpoints,
// disco key or home relay) ends the wait. Measured with official clients before this: the complete entry of a new
// peer arrived 0.22-0.25 s after the peer itself (one pacing interval), and a first packet sent in that gap was lost.
//
// The intervals here are 30 s and the deadlines 10 s: a message that waited out the interval misses the deadline by
// far, one that did not wait meets it by far.

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

final class UrgentPacingTests: XCTestCase {
    static func patch(_ id: Int64) -> MapResponse {
        var m = MapResponse()
        var p = PeerChange(nodeID: id)
        p.online = true
        m.peersChangedPatch = [p]
        return m
    }

    /// The next message, or nil when none came within `seconds`.
    static func next(_ outbox: MapSessionOutbox, within seconds: Double) async -> MapOutgoing? {
        await withTaskGroup(of: MapOutgoing?.self) { group in
            group.addTask { await outbox.nextOutgoing() }
            group.addTask {
                try? await Task.sleep(for: .seconds(seconds))
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }

    /// An urgent message after `seconds`: wakes a writer that a bug left waiting, so a failing test ends.
    static func nudge(_ outbox: MapSessionOutbox, after seconds: Double) -> Task<Void, Never> {
        Task {
            try? await Task.sleep(for: .seconds(seconds))
            outbox.yield(Self.patch(99), urgent: true)
        }
    }

    func testAnUrgentMessageEndsThePacingWaitAndCarriesWhatWaited() async {
        let outbox = MapSessionOutbox(minimumInterval: .seconds(30))
        outbox.yield(Self.patch(1))
        let first = await outbox.nextOutgoing()
        XCTAssertEqual(first?.message, Self.patch(1), "the first message after a quiet time goes at once")
        outbox.yield(Self.patch(2))
        let reader = Task { await outbox.nextOutgoing() }
        try? await Task.sleep(for: .milliseconds(200))
        outbox.yield(Self.patch(3), urgent: true)
        let deadline = Task {
            try? await Task.sleep(for: .seconds(10))
            reader.cancel()
        }
        let second = await reader.value
        deadline.cancel()
        XCTAssertEqual(second?.message.peersChangedPatch?.map(\.nodeID), [2, 3],
                       "the urgent message went out before the interval ended, with what waited before it")
    }

    func testOnlyUrgentMessagesSkipTheWait() async {
        let outbox = MapSessionOutbox(minimumInterval: .seconds(30))
        let sleeps = Mutex<[Duration]>([])
        let sleep: @Sendable (Duration) async throws -> Void = { d in sleeps.withLock { $0.append(d) } }
        outbox.yield(Self.patch(1))
        _ = await outbox.nextOutgoing(sleep: sleep)
        // Not urgent: the writer waits out the interval (the recording sleep returns at once).
        outbox.yield(Self.patch(2))
        _ = await outbox.nextOutgoing(sleep: sleep)
        XCTAssertEqual(sleeps.withLock { $0.count }, 1, "an online patch waits for the interval")
        // Urgent and already queued: no wait at all.
        outbox.yield(Self.patch(3), urgent: true)
        let third = await outbox.nextOutgoing(sleep: sleep)
        XCTAssertEqual(third?.message, Self.patch(3))
        XCTAssertEqual(sleeps.withLock { $0.count }, 1, "an urgent message does not wait")
        // After it, pacing is back.
        outbox.yield(Self.patch(4))
        _ = await outbox.nextOutgoing(sleep: sleep)
        XCTAssertEqual(sleeps.withLock { $0.count }, 2)
    }

    func testCancellingAWriterThatWaitsEndsTheSessionAtOnce() async {
        let outbox = MapSessionOutbox(minimumInterval: .seconds(30))
        let ended = Mutex(false)
        outbox.setOnTermination { ended.withLock { $0 = true } }
        outbox.yield(Self.patch(1))
        _ = await outbox.nextOutgoing()
        outbox.yield(Self.patch(2))
        let reader = Task { await outbox.nextOutgoing() }
        try? await Task.sleep(for: .milliseconds(200))
        reader.cancel()
        let watchdog = Self.nudge(outbox, after: 10)
        let result = await reader.value
        watchdog.cancel()
        XCTAssertNil(result, "a cancelled writer gets nothing")
        XCTAssertTrue(ended.withLock { $0 }, "and the session ended")
        let after = await Self.next(outbox, within: 1)
        XCTAssertNil(after?.message.peersChangedPatch, "nothing is delivered after the end")
    }

    func testFinishingDuringTheWaitDeliversWhatIsQueuedWithoutWaiting() async {
        let outbox = MapSessionOutbox(minimumInterval: .seconds(30))
        outbox.yield(Self.patch(1))
        _ = await outbox.nextOutgoing()
        outbox.yield(Self.patch(2))
        let reader = Task { await outbox.nextOutgoing() }
        try? await Task.sleep(for: .milliseconds(200))
        outbox.finish()
        let deadline = Task {
            try? await Task.sleep(for: .seconds(10))
            reader.cancel()
        }
        let last = await reader.value
        deadline.cancel()
        XCTAssertEqual(last?.message, Self.patch(2))
    }

    /// Through the engine: a session paced at 30 s gets a new peer, and then that peer's endpoints, at once; a
    /// second peer's coming online (not urgent) waits for the interval, the first one's going offline does not.
    func testANewPeerAndItsEndpointsReachAPacedSessionAtOnce() async throws {
        let fixture = try await InProcessEngine.start { $0.mapUpdateInterval = .seconds(30) }
        let engine = fixture.engine, authKey = fixture.authKey
        func register(_ c: ControlClient, _ name: String) async {
            let reply = await engine.register(c.registerRequest(authKey: authKey, hostname: name), machineKey: c.machineKey.publicKey)
            XCTAssertEqual(reply.error, "")
        }
        let a = ControlClient(port: 1, seed: 1), b = ControlClient(port: 1, seed: 2)
        await register(a, "a")
        guard case .stream(let outbox) = try await engine.map(a.mapRequest(stream: true), machineKey: a.machineKey.publicKey) else {
            return XCTFail("expected a stream")
        }
        let full = await Self.next(outbox, within: 10)
        XCTAssertNotNil(full?.message.peers, "a's full map")

        await register(b, "b")
        let joined = await Self.next(outbox, within: 10)
        XCTAssertEqual(joined?.message.peersChanged?.map(\.name).first?.hasPrefix("b."), true,
                       "the new peer arrived within the interval: \(String(describing: joined?.message))")

        let endpoint = AddrPort(address: IPAddress("198.51.100.7")!, port: 41641)
        guard case .stream(let bStream) = try await engine.map(b.mapRequest(stream: true, endpoints: [endpoint]),
                                                               machineKey: b.machineKey.publicKey) else {
            return XCTFail("expected b's stream")
        }
        let reach = await Self.next(outbox, within: 10)
        let carried = (reach?.message.peersChangedPatch ?? []).contains { $0.endpoints?.contains(endpoint) == true }
            || (reach?.message.peersChanged ?? []).contains { $0.endpoints?.contains(endpoint) == true }
        XCTAssertTrue(carried, "b's endpoints arrived within the interval: \(String(describing: reach?.message))")

        // c was registered before a's last message, so its stream opening is only an online patch: not urgent,
        // it waits for the interval (30 s, beyond this wait).
        let c = ControlClient(port: 1, seed: 3)
        await register(c, "c")
        let cJoined = await Self.next(outbox, within: 10)
        XCTAssertNotNil(cJoined?.message.peersChanged, "c's entry (urgent)")
        // A one-shot request first tells control c's disco key (urgent, it arrives at once), so that c's stream
        // opening below changes nothing but its being online.
        _ = try await engine.map(c.mapRequest(stream: false), machineKey: c.machineKey.publicKey)
        let cDisco = await Self.next(outbox, within: 10)
        XCTAssertEqual(cDisco?.message.peersChangedPatch?.first?.discoKey, c.discoKey, "c's disco key, at once")
        guard case .stream(let cStream) = try await engine.map(c.mapRequest(stream: true), machineKey: c.machineKey.publicKey) else {
            return XCTFail("expected c's stream")
        }
        // One writer's wait, left running: after 2 s it still has nothing (the online patch waits for the interval).
        let arrived = Mutex<MapOutgoing?>(nil)
        let reader = Task {
            let item = await outbox.nextOutgoing()
            arrived.withLock { $0 = item }
            return item
        }
        try await Task.sleep(for: .seconds(2))
        XCTAssertNil(arrived.withLock { $0 }, "coming online waits for the pacing interval")
        // b goes offline: urgent, it ends the wait at once and brings c's online patch that waited.
        bStream.cancel()
        let watchdog = Self.nudge(outbox, after: 10)
        let offline = await reader.value
        watchdog.cancel()
        let patches = offline?.message.peersChangedPatch ?? []
        XCTAssertTrue(patches.contains { $0.online == false }, "b's going offline arrived at once: \(String(describing: offline?.message))")
        XCTAssertTrue(patches.contains { $0.online == true }, "with c's online patch that waited")
        XCTAssertFalse(patches.contains { $0.nodeID == 99 }, "before the watchdog's nudge")
        cStream.cancel()
        outbox.cancel()
    }
}
