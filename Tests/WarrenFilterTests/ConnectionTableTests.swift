import XCTest
import WarrenFilter
import WarrenPacket

final class ConnectionTableTests: XCTestCase {
    func flow(_ n: Int) -> FlowKey {
        FlowKey(proto: .udp, src: .v4(0x6440_0000 + UInt32(n)), srcPort: 53, dst: .v4(0x6440_0001), dstPort: UInt16(n))
    }

    func testBoundAndLeastRecentlyUsedEviction() {
        var table = ConnectionTable(capacity: 3)
        for n in 0..<3 { XCTAssertNil(table.insert(flow(n), now: .seconds(n))) }
        XCTAssertEqual(table.count, 3)
        XCTAssertEqual(table.flowsByRecency, [flow(2), flow(1), flow(0)])
        // A hit makes flow 0 the most recent, so flow 1 goes next.
        XCTAssertTrue(table.lookup(flow(0), now: .seconds(3)))
        XCTAssertEqual(table.insert(flow(3), now: .seconds(4)), flow(1))
        XCTAssertEqual(table.count, 3)
        XCTAssertFalse(table.contains(flow(1)))
        XCTAssertFalse(table.lookup(flow(1), now: .seconds(5)))
        XCTAssertEqual(table.flowsByRecency, [flow(3), flow(0), flow(2)])
        // Re-inserting an existing flow refreshes it without evicting.
        XCTAssertNil(table.insert(flow(2), now: .seconds(6)))
        XCTAssertEqual(table.flowsByRecency, [flow(2), flow(3), flow(0)])
        table.removeAll()
        XCTAssertEqual(table.count, 0)
        XCTAssertEqual(table.flowsByRecency, [])
    }

    func testIdleTimeout() {
        var table = ConnectionTable(capacity: 4, idleTimeout: .seconds(30))
        table.insert(flow(1), now: .seconds(0))
        table.insert(flow(2), now: .seconds(0))
        table.insert(flow(3), now: .seconds(0))
        XCTAssertTrue(table.lookup(flow(1), now: .seconds(30)))
        XCTAssertTrue(table.lookup(flow(1), now: .seconds(60)))  // each use restarts the clock
        XCTAssertFalse(table.lookup(flow(2), now: .seconds(31)))
        XCTAssertEqual(table.count, 2)
        XCTAssertEqual(table.flowsByRecency, [flow(1), flow(3)])
        XCTAssertTrue(table.lookup(flow(1), now: .seconds(61)))
        XCTAssertFalse(table.lookup(flow(3), now: .seconds(61)))
        XCTAssertEqual(table.flowsByRecency, [flow(1)])
        table.insert(flow(4), now: .seconds(62))
        XCTAssertEqual(table.flowsByRecency, [flow(4), flow(1)])
    }

    func testFilterTableIsBounded() {
        var filter = PacketFilter(rules: [], localAddresses: [IPPrefix("100.64.0.1/32")!], connectionCapacity: 16)
        let me = IPAddress("100.64.0.1")!
        for n in 0..<100 {
            _ = filter.checkOutbound(packet: PacketBuilder.udp(src: me, dst: .v4(0x0808_0000 + UInt32(n)), srcPort: 40000, dstPort: 53), now: .seconds(n))
        }
        XCTAssertEqual(filter.connections.count, 16)
        XCTAssertEqual(filter.checkInbound(packet: PacketBuilder.udp(src: .v4(0x0808_0000 + 99), dst: me, srcPort: 53, dstPort: 40000), now: .seconds(100)), .accept(.trackedFlow))
        XCTAssertEqual(filter.checkInbound(packet: PacketBuilder.udp(src: .v4(0x0808_0000 + 84), dst: me, srcPort: 53, dstPort: 40000), now: .seconds(100)), .accept(.trackedFlow))
        XCTAssertEqual(filter.checkInbound(packet: PacketBuilder.udp(src: .v4(0x0808_0000 + 83), dst: me, srcPort: 53, dstPort: 40000), now: .seconds(100)), .drop(.noRuleMatched))
    }

    /// Random inserts and lookups against a plain array model of an LRU list.
    func testAgainstArrayModel() {
        var rng = SeededRNG(seed: 42)
        for capacity in [1, 2, 5, 17] {
            var table = ConnectionTable(capacity: capacity, idleTimeout: .seconds(50))
            var model: [(FlowKey, Int)] = []  // most recent first, with last use
            for step in 0..<5_000 {
                let key = flow(Int(rng.next() % 40))
                if rng.next() % 2 == 0 {
                    let evicted = table.insert(key, now: .seconds(step))
                    var expectedEviction: FlowKey?
                    if let at = model.firstIndex(where: { $0.0 == key }) {
                        model.remove(at: at)
                    } else if model.count == capacity {
                        expectedEviction = model.removeLast().0
                    }
                    model.insert((key, step), at: 0)
                    XCTAssertEqual(evicted, expectedEviction)
                } else {
                    var expected = false
                    if let at = model.firstIndex(where: { $0.0 == key }) {
                        if step - model[at].1 > 50 {
                            model.remove(at: at)
                        } else {
                            expected = true
                            model.remove(at: at)
                            model.insert((key, step), at: 0)
                        }
                    }
                    XCTAssertEqual(table.lookup(key, now: .seconds(step)), expected)
                }
                XCTAssertEqual(table.flowsByRecency, model.map(\.0))
                if table.flowsByRecency != model.map(\.0) { return }
            }
        }
    }
}

struct SeededRNG: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return state ^ (state >> 29)
    }
}
