// The outbox as the map stream's writer uses it on its event loop (MapStreamWriter): poll, and a wake when there is
// something new. The same merging and pacing as the async writer (UrgentPacingTests), checked with an explicit clock.

import Foundation
import Synchronization
import WarrenTailcfg
import XCTest
@testable import WarrenControlServer

final class OutboxPollTests: XCTestCase {
    func ids(_ poll: MapSessionOutbox.Poll) -> [Int64]? {
        guard case .item(let item) = poll else { return nil }
        return item.message.peersChangedPatch?.map(\.nodeID)
    }

    func testPollPacesMergesAndLetsUrgentMessagesThrough() {
        let outbox = MapSessionOutbox(minimumInterval: .seconds(30))
        let wakes = Mutex(0)
        outbox.setWake { wakes.withLock { $0 += 1 } }
        XCTAssertEqual(wakes.withLock { $0 }, 1, "a new writer polls once at the start")
        let t0 = ContinuousClock.now
        guard case .idle = outbox.poll(now: t0) else { return XCTFail("nothing queued yet") }
        outbox.yield(UrgentPacingTests.patch(1))
        XCTAssertEqual(wakes.withLock { $0 }, 2)
        XCTAssertEqual(ids(outbox.poll(now: t0)), [1], "the first message after a quiet time goes at once")
        // Two more within the interval: one wake until the writer polls, then held back until the interval ends.
        outbox.yield(UrgentPacingTests.patch(2))
        outbox.yield(UrgentPacingTests.patch(3))
        XCTAssertEqual(wakes.withLock { $0 }, 3, "one wake for both")
        guard case .paced(let until) = outbox.poll(now: t0 + .seconds(1)) else { return XCTFail("paced") }
        XCTAssertEqual(until, t0 + .seconds(30))
        XCTAssertEqual(ids(outbox.poll(now: t0 + .seconds(30))), [2, 3], "merged into one message when the interval ended")
        // An urgent message ends the wait and carries what waited before it.
        outbox.yield(UrgentPacingTests.patch(4))
        guard case .paced = outbox.poll(now: t0 + .seconds(31)) else { return XCTFail("paced again") }
        outbox.yield(UrgentPacingTests.patch(5), urgent: true)
        XCTAssertEqual(ids(outbox.poll(now: t0 + .seconds(31))), [4, 5])
        // The engine ends the session: what is queued goes without waiting, then the end.
        outbox.yield(UrgentPacingTests.patch(6))
        outbox.finish()
        XCTAssertEqual(ids(outbox.poll(now: t0 + .seconds(32))), [6])
        guard case .end(finished: true) = outbox.poll(now: t0 + .seconds(32)) else { return XCTFail("finished") }
    }

    func testCancellingWakesTheWriterToEndAndLetsItsWakeGo() {
        final class Holder: Sendable {}
        let outbox = MapSessionOutbox(minimumInterval: .zero)
        let ended = Mutex(false)
        outbox.setOnTermination { ended.withLock { $0 = true } }
        weak var weakHolder: Holder?
        let wakes = Mutex(0)
        do {
            let holder = Holder()
            weakHolder = holder
            outbox.setWake { _ = holder; wakes.withLock { $0 += 1 } }
        }
        _ = outbox.poll()
        outbox.yield(UrgentPacingTests.patch(1))
        outbox.cancel()
        XCTAssertEqual(wakes.withLock { $0 }, 3, "woken to learn of the end (besides the wake for the message)")
        XCTAssertTrue(ended.withLock { $0 })
        guard case .end(finished: false) = outbox.poll() else { return XCTFail("cancelled") }
        XCTAssertNil(weakHolder, "the outbox no longer holds the writer")
        outbox.yield(UrgentPacingTests.patch(2))
        guard case .end(finished: false) = outbox.poll() else { return XCTFail("nothing after the end") }
    }
}
