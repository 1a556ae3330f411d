import XCTest
import WarrenTestSupport
@testable import WireGuardProtocol

final class ReplayWindowTests: XCTestCase {
    func testInOrder() {
        var w = ReplayWindow()
        for c in UInt64(0)..<20_000 { XCTAssertTrue(w.accept(c), "\(c)") }
    }

    func testOutOfOrderWithinTheWindow() {
        var w = ReplayWindow()
        XCTAssertTrue(w.accept(5000))
        XCTAssertTrue(w.accept(10))
        XCTAssertTrue(w.accept(4999))
        XCTAssertTrue(w.accept(0))
        XCTAssertTrue(w.accept(5001))
        XCTAssertTrue(w.accept(3000))
    }

    func testTooOld() {
        var w = ReplayWindow()
        XCTAssertGreaterThanOrEqual(ReplayWindow.windowSize, 2048)
        XCTAssertTrue(w.accept(100_000))
        XCTAssertTrue(w.accept(100_000 - ReplayWindow.windowSize), "the oldest counter still in the window")
        XCTAssertFalse(w.accept(100_000 - ReplayWindow.windowSize - 1))
        XCTAssertFalse(w.accept(0))
        XCTAssertTrue(w.accept(100_000 - 2048))
    }

    func testDuplicate() {
        var w = ReplayWindow()
        XCTAssertTrue(w.accept(0))
        XCTAssertFalse(w.accept(0))
        XCTAssertTrue(w.accept(77))
        XCTAssertFalse(w.accept(77))
        XCTAssertTrue(w.accept(70_000))
        XCTAssertFalse(w.accept(70_000))
    }

    func testLimit() {
        var w = ReplayWindow()
        let limit = WireGuardConstants.rejectAfterMessages
        XCTAssertFalse(w.accept(limit))
        XCTAssertFalse(w.accept(UInt64.max))
        XCTAssertTrue(w.accept(limit - 1))
        XCTAssertFalse(w.accept(limit - 1))
        XCTAssertTrue(w.accept(limit - 2))
    }

    func testSlidingFarClearsEverything() {
        var w = ReplayWindow()
        for c in UInt64(0)..<9000 { XCTAssertTrue(w.accept(c)) }
        XCTAssertTrue(w.accept(1_000_000))
        for c in (1_000_000 - ReplayWindow.windowSize)..<1_000_000 { XCTAssertTrue(w.accept(c), "\(c)") }
    }

    /// A naive model: the set of accepted counters and the newest one.
    struct Model {
        var seen = Set<UInt64>()
        var newest: UInt64 = 0
        mutating func accept(_ c: UInt64) -> Bool {
            if c >= WireGuardConstants.rejectAfterMessages || seen.contains(c) { return false }
            if c > newest {
                newest = c
            } else if newest - c > ReplayWindow.windowSize {
                return false
            }
            seen.insert(c)
            return true
        }
    }

    func testRandomAgainstSetModel() {
        for seed in UInt64(1)...8 {
            var rng = SeededGenerator(seed: seed)
            var w = ReplayWindow()
            var m = Model()
            var frontier: UInt64 = seed == 8 ? WireGuardConstants.rejectAfterMessages - 20_000 : 0
            for step in 0..<30_000 {
                let c: UInt64
                switch Int.random(in: 0..<10, using: &rng) {
                case 0...3:
                    frontier &+= UInt64.random(in: 0...3, using: &rng)
                    c = frontier
                case 4...6:
                    c = frontier &- UInt64.random(in: 0...9000, using: &rng)
                case 7:
                    c = m.seen.randomElement(using: &rng) ?? 0
                case 8:
                    frontier &+= UInt64.random(in: 0...20_000, using: &rng)
                    c = frontier
                default:
                    c = frontier &+ UInt64.random(in: 0...200, using: &rng)
                }
                XCTAssertEqual(w.accept(c), m.accept(c), "seed \(seed) step \(step) counter \(c)")
            }
        }
    }
}
