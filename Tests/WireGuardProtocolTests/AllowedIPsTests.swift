import XCTest
import WarrenPacket
import WarrenTestSupport
@testable import WireGuardProtocol

final class AllowedIPsTests: XCTestCase {
    func p(_ s: String) -> IPPrefix { IPPrefix(s)! }
    func a(_ s: String) -> IPAddress { IPAddress(s)! }

    func testLongestPrefixWins() {
        var t = AllowedIPs<String>()
        t.insert(p("0.0.0.0/0"), peer: "default")
        t.insert(p("10.0.0.0/8"), peer: "ten")
        t.insert(p("10.1.0.0/16"), peer: "ten-one")
        t.insert(p("10.1.2.3/32"), peer: "host")
        t.insert(p("fd7a:115c:a1e0::/48"), peer: "ts")
        t.insert(p("fd7a:115c:a1e0::1/128"), peer: "ts-host")
        XCTAssertEqual(t.lookup(a("10.1.2.3")), "host")
        XCTAssertEqual(t.lookup(a("10.1.2.4")), "ten-one")
        XCTAssertEqual(t.lookup(a("10.2.0.1")), "ten")
        XCTAssertEqual(t.lookup(a("192.168.0.1")), "default")
        XCTAssertEqual(t.lookup(a("fd7a:115c:a1e0::1")), "ts-host")
        XCTAssertEqual(t.lookup(a("fd7a:115c:a1e0::2")), "ts")
        XCTAssertNil(t.lookup(a("2001:db8::1")), "no IPv6 default")
        XCTAssertEqual(t.count, 6)
    }

    func testReinsertMovesRemoveAndList() {
        var t = AllowedIPs<Int>()
        t.insert(p("10.0.0.0/8"), peer: 1)
        t.insert(p("10.0.0.7/8"), peer: 2)  // host bits ignored: same prefix, moves to 2
        XCTAssertEqual(t.lookup(a("10.9.9.9")), 2)
        XCTAssertEqual(t.count, 1)
        t.insert(p("192.168.1.0/24"), peer: 1)
        t.insert(p("192.168.0.0/16"), peer: 2)
        XCTAssertEqual(t.prefixes(of: 2), [p("10.0.0.0/8"), p("192.168.0.0/16")])
        XCTAssertEqual(t.remove(p("192.168.1.0/24")), 1)
        XCTAssertEqual(t.lookup(a("192.168.1.1")), 2)
        XCTAssertNil(t.remove(p("192.168.1.0/24")))
        t.removeAll(of: 2)
        XCTAssertEqual(t.count, 0)
        XCTAssertNil(t.lookup(a("10.1.1.1")))
        XCTAssertTrue(t.entries.isEmpty)
    }

    func testLookupFromPacketBytes() {
        var t = AllowedIPs<String>()
        t.insert(p("100.64.0.0/10"), peer: "cgnat")
        t.insert(p("100.100.1.2/32"), peer: "one")
        t.insert(p("fd00::/8"), peer: "ula")
        var v4 = [UInt8](repeating: 0, count: 20)
        v4[0] = 0x45
        v4.replaceSubrange(12..<16, with: [100, 100, 1, 2])   // source
        v4.replaceSubrange(16..<20, with: [100, 64, 9, 9])    // destination
        XCTAssertEqual(t.lookupSource(packet: v4), "one")
        XCTAssertEqual(t.lookupDestination(packet: v4), "cgnat")
        XCTAssertNil(t.lookupDestination(packet: Array(v4.prefix(19))), "short packet")
        var v6 = [UInt8](repeating: 0, count: 40)
        v6[0] = 0x60
        v6[8] = 0xFD
        v6[24] = 0x20
        XCTAssertEqual(t.lookupSource(packet: v6), "ula")
        XCTAssertNil(t.lookupDestination(packet: v6))
        XCTAssertNil(t.lookupSource(packet: []))
        XCTAssertNil(t.lookupSource(packet: [0x50] + v4.dropFirst()))
    }

    /// Random prefixes drawn from a narrow universe (so they nest and overlap), random inserts and
    /// removals, checked against a linear longest-prefix scan.
    func testAgainstLinearScan() {
        for seed in UInt64(1)...6 {
            var rng = SeededGenerator(seed: seed)
            var t = AllowedIPs<Int>()
            var model: [IPPrefix: Int] = [:]
            func randomAddress(v6: Bool) -> IPAddress {
                if v6 {
                    let hi = 0xFD00_0000_0000_0000 | (UInt64.random(in: 0...0xF, using: &rng) << 52)
                        | (UInt64.random(in: 0...3, using: &rng) << 20)
                    return .v6(hi, UInt64.random(in: 0...3, using: &rng) | (UInt64.random(in: 0...1, using: &rng) << 63))
                }
                return .v4(0x0A00_0000 | UInt32.random(in: 0...0x3F, using: &rng) << 18
                           | UInt32.random(in: 0...3, using: &rng) << 8 | UInt32.random(in: 0...3, using: &rng))
            }
            func randomPrefix() -> IPPrefix {
                let v6 = Bool.random(using: &rng)
                let addr = randomAddress(v6: v6)
                return IPPrefix(address: addr, bits: Int.random(in: 0...(v6 ? 128 : 32), using: &rng))!.masked
            }
            func naive(_ address: IPAddress) -> Int? {
                model.filter { $0.key.contains(address) }.max { $0.key.bits < $1.key.bits }?.value
            }
            for step in 0..<1500 {
                switch Int.random(in: 0..<10, using: &rng) {
                case 0...5:
                    let prefix = randomPrefix()
                    let peer = Int.random(in: 0..<6, using: &rng)
                    t.insert(prefix, peer: peer)
                    model[prefix] = peer
                case 6, 7:
                    let prefix = model.keys.randomElement(using: &rng) ?? randomPrefix()
                    XCTAssertEqual(t.remove(prefix), model.removeValue(forKey: prefix), "seed \(seed) step \(step)")
                case 8 where step % 7 == 0:
                    let peer = Int.random(in: 0..<6, using: &rng)
                    t.removeAll(of: peer)
                    model = model.filter { $0.value != peer }
                default:
                    break
                }
                XCTAssertEqual(t.count, model.count)
                for _ in 0..<8 {
                    let address = randomAddress(v6: Bool.random(using: &rng))
                    XCTAssertEqual(t.lookup(address), naive(address), "seed \(seed) step \(step) \(address)")
                }
            }
            for peer in 0..<6 {
                XCTAssertEqual(t.prefixes(of: peer), model.filter { $0.value == peer }.keys.sorted())
            }
        }
    }
}
