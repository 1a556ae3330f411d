import WarrenPacket
@testable import WarrenPolicy
import WarrenTestSupport
import XCTest

/// `SourceList` keeps node-address SrcIPs as address runs. These tests hold it against the string form it
/// replaces (each set's addresses in order, each string once, first occurrence kept) on random sets.
final class SourceListTests: XCTestCase {
    /// SrcIPs as the reference compiler writes them for a list of node-naming aliases.
    static func referenceStrings(_ sets: [IPSet]) -> [String] {
        var seen = Set<String>()
        var out: [String] = []
        for set in sets { for a in set.addresses where seen.insert(a.description).inserted { out.append(a.description) } }
        return out
    }

    /// A random small set of node-like addresses (IPv4 in 100.64.0.0/24, IPv6 in fd7a:115c:a1e0::/120),
    /// with runs of neighbours so that ranges form.
    static func randomSet(_ rng: inout SeededGenerator) -> IPSet {
        var b = IPSetBuilder()
        for _ in 0..<Int.random(in: 0...12, using: &rng) {
            let k = UInt32.random(in: 0...250, using: &rng)
            for d in 0..<UInt32.random(in: 1...4, using: &rng) {
                if Bool.random(using: &rng) { b.add(IPAddress.v4(0x6440_0000 | (k + d))) }
                if Bool.random(using: &rng) { b.add(IPAddress.v6(0xFD7A_115C_A1E0_0000, UInt64(k + d))) }
            }
        }
        return b.build()
    }

    func testConcatenationSpellsTheReferenceStrings() {
        var rng = SeededGenerator(seed: 41)
        for round in 0..<500 {
            let sets = (0..<Int.random(in: 1...4, using: &rng)).map { _ in Self.randomSet(&rng) }
            let list = SourceList.concatenating(sets)
            let want = Self.referenceStrings(sets)
            XCTAssertEqual(list.strings, want, "round \(round)")
            XCTAssertEqual(list.isEmpty, want.isEmpty, "round \(round)")
            var union = IPSetBuilder()
            for s in sets { union.add(s) }
            XCTAssertEqual(list.union, union.build(), "round \(round)")
            // The strings parse back to the same list.
            XCTAssertEqual(SourceList.parsing(want), list, "round \(round)")
        }
    }

    func testAListThatReplacesAnotherSpellsItsOwnStrings() {
        var rng = SeededGenerator(seed: 5)
        for round in 0..<300 {
            let older = (0..<Int.random(in: 1...3, using: &rng)).map { _ in Self.randomSet(&rng) }
            let old = SourceList.concatenating(older)
            if Bool.random(using: &rng) { _ = old.strings }
            // The next versions: each set with some addresses added or dropped.
            func next(_ sets: [IPSet]) -> [IPSet] {
                sets.map { set in
                    let extra = Self.randomSet(&rng)
                    return Bool.random(using: &rng) ? set.union(extra) : set.subtracting(extra)
                }
            }
            let middle = next(older), newer = next(middle)
            let mid = SourceList.concatenating(middle)
            mid.inheritText(from: old)
            if Bool.random(using: &rng) { XCTAssertEqual(mid.strings, Self.referenceStrings(middle), "round \(round)") }
            let new = SourceList.concatenating(newer)
            new.inheritText(from: mid)
            XCTAssertEqual(new.strings, Self.referenceStrings(newer), "round \(round)")
            XCTAssertEqual(mid.strings, Self.referenceStrings(middle), "round \(round)")
        }
    }

    func testAListTakesStringsFromTheListsOfItsAliases() {
        var rng = SeededGenerator(seed: 12)
        for round in 0..<300 {
            let sets = (0..<Int.random(in: 2...4, using: &rng)).map { _ in Self.randomSet(&rng) }
            let singles = sets.map { SourceList.concatenating([$0]) }
            // Some made before, some made by the longer list, one an older version of its set.
            for s in singles where Bool.random(using: &rng) { _ = s.strings }
            let stale = SourceList.concatenating([sets[0].union(Self.randomSet(&rng))])
            if Bool.random(using: &rng) { _ = stale.strings }
            let list = SourceList.concatenating(sets)
            list.inheritText(from: stale)
            for s in singles.dropFirst() { list.shareText(with: s) }
            XCTAssertEqual(list.strings, Self.referenceStrings(sets), "round \(round)")
            for (s, set) in zip(singles, sets) { XCTAssertEqual(s.strings, Self.referenceStrings([set]), "round \(round)") }
        }
    }

    func testListsAreEqualExactlyWhenTheirStringsAre() {
        var rng = SeededGenerator(seed: 7)
        // Few distinct values, so that equal lists from different sets come up often.
        func small() -> IPSet {
            var b = IPSetBuilder()
            for k in 0..<4 where Bool.random(using: &rng) { b.add(IPAddress.v4(0x6440_0000 | UInt32(k))) }
            if Bool.random(using: &rng) { b.add(IPAddress.v6(0xFD7A_115C_A1E0_0000, 1)) }
            return b.build()
        }
        var equalPairs = 0
        for round in 0..<2000 {
            let a = (0..<Int.random(in: 1...3, using: &rng)).map { _ in small() }
            var b = (0..<Int.random(in: 1...3, using: &rng)).map { _ in small() }
            switch Int.random(in: 0..<4, using: &rng) {
            case 0:
                // Same strings from other sets: a's first set split in two (low part, then the rest), and
                // a set that adds nothing new at the end.
                let first = a[0].addresses
                let cut = Int.random(in: 0...first.count, using: &rng)
                b = [IPSet(addresses: Array(first[..<cut])), IPSet(addresses: Array(first[cut...]))] + a.dropFirst()
                b.append(IPSet(addresses: a.flatMap(\.addresses).filter { _ in Bool.random(using: &rng) }))
            case 1:
                // The same sets in another order.
                b = a.shuffled(using: &rng)
            default:
                break
            }
            let x = SourceList.concatenating(a), y = SourceList.concatenating(b)
            let same = Self.referenceStrings(a) == Self.referenceStrings(b)
            XCTAssertEqual(x == y, same, "round \(round): \(Self.referenceStrings(a)) vs \(Self.referenceStrings(b))")
            if same {
                equalPairs += 1
                XCTAssertEqual(x.hashValue, y.hashValue, "round \(round)")
            }
        }
        XCTAssertGreaterThan(equalPairs, 400, "the generator should give equal lists from different sets")
    }

    func testParsingTakesOnlyAddressesAsSwiftWritesThem() {
        XCTAssertNil(SourceList.parsing(["100.64.0.0/10"]))
        XCTAssertNil(SourceList.parsing(["100.64.0.1-100.64.0.9"]))
        XCTAssertNil(SourceList.parsing(["*"]))
        XCTAssertNil(SourceList.parsing(["fd7a:115c:a1e0:0::1"]), "not in RFC 5952 form: its strings would differ")
        let list = SourceList.parsing(["100.64.0.2", "100.64.0.1", "fd7a:115c:a1e0::1", "100.64.0.1"])
        XCTAssertEqual(list?.runs.count, 3)
        XCTAssertEqual(list?.strings, ["100.64.0.2", "100.64.0.1", "fd7a:115c:a1e0::1", "100.64.0.1"])
    }

    func testSortedUnionAndSubtractionMatchTheBuilder() {
        var rng = SeededGenerator(seed: 99)
        for round in 0..<1000 {
            let a = Self.randomSet(&rng), b = Self.randomSet(&rng)
            XCTAssertEqual(a.unionSorted(b), a.union(b), "round \(round)")
            XCTAssertEqual(a.subtractingSorted(b), a.subtracting(b), "round \(round)")
            let want = IPSet(addresses: a.addresses.filter { !b.contains($0) })
            XCTAssertEqual(a.subtractingSorted(b), want, "round \(round)")
        }
        // Ranges at the ends of the address space.
        let all = IPSet(prefixes: [IPPrefix("0.0.0.0/0")!, IPPrefix("::/0")!])
        let top = IPSet(prefixes: [IPPrefix("255.255.255.255/32")!, IPPrefix("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128")!])
        XCTAssertEqual(all.subtractingSorted(top), all.subtracting(top))
        XCTAssertEqual(top.unionSorted(all), all)
        XCTAssertTrue(all.subtractingSorted(all).isEmpty)
    }
}
