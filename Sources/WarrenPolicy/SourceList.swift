import Synchronization
import WarrenPacket

/// The SrcIPs of a rule whose sources name nodes, kept as address sets and written out as strings only
/// when a filter is put in wire form.
///
/// Tailscale lists a node-naming source alias as each of its node addresses on its own, in address order
/// (IPv4 first), alias after alias, each address once (where it first appears). Such a list is a sequence of
/// ascending runs of distinct addresses. A `SourceList` keeps its maximal ascending runs as sets, which makes it
/// canonical: two lists have the same strings exactly when they have the same runs. So lists compare and hash
/// by their ranges, never by their strings.
///
/// A list is immutable and shared (by every rule with the same sources, and by the merge-key table); a node
/// change makes new lists. The strings are built on first use and then kept; a list that replaces another
/// (the same aliases after a node change) takes the strings of the addresses the two have in common from it, and
/// a list of several aliases takes them from the lists of its aliases alone.
final class SourceList: Sendable {
    /// The maximal ascending runs, in order; none is empty.
    let runs: [IPSet]
    /// Every address of the list.
    let union: IPSet
    let hash: UInt64
    private let text = Mutex<Text?>(nil)
    /// Until this list's strings are made: the list it replaces, and current lists with some of its addresses
    /// (lists of one alias, which have no siblings themselves), whose strings it takes.
    private let donors = Mutex<Donors>(Donors())

    private struct Donors {
        var predecessor: SourceList?
        var siblings: [SourceList] = []
    }

    /// The strings in address order (of `union`) and in list order (the same array for a single run).
    private struct Text {
        var sorted: [String]
        var listed: [String]
    }

    /// A list of runs that are ascending and maximal (each run's last address above the next run's first).
    init(runs: [IPSet], union: IPSet) {
        self.runs = runs
        self.union = union
        // A summary (sizes and ends of each run) rather than every range: equal lists hash alike, and lists
        // that differ only inside are told apart by `==`.
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        func mix(_ w: UInt64) { h = (h ^ w) &* 0x0000_0100_0000_01B3; h ^= h >> 29 }
        func mix(_ r: ClosedRange<U128>?) {
            guard let r else { return mix(0x5A5A) }
            mix(r.lowerBound.hi); mix(r.lowerBound.lo); mix(r.upperBound.hi); mix(r.upperBound.lo)
        }
        mix(UInt64(runs.count))
        for run in runs {
            mix(UInt64(run.v4.count) << 32 | UInt64(run.v6.count))
            mix(run.v4.first); mix(run.v4.last); mix(run.v4.count > 2 ? run.v4[run.v4.count / 2] : nil)
            mix(run.v6.first); mix(run.v6.last); mix(run.v6.count > 2 ? run.v6[run.v6.count / 2] : nil)
        }
        self.hash = h
    }

    convenience init(sorted set: IPSet) {
        self.init(runs: set.isEmpty ? [] : [set], union: set)
    }

    /// The list of `sets` one after the other, each adding its addresses that no earlier set has.
    static func concatenating(_ sets: [IPSet]) -> SourceList {
        if sets.count == 1 { return SourceList(sorted: sets[0]) }
        var runs: [IPSet] = []
        var seen = IPSet()
        for set in sets {
            let piece = seen.isEmpty ? set : set.subtractingSorted(seen)
            guard let first = piece.firstKey else { continue }
            if let last = runs.last?.lastKey, last < first {
                runs[runs.count - 1] = runs[runs.count - 1].unionSorted(piece)
            } else {
                runs.append(piece)
            }
            seen = seen.unionSorted(piece)
        }
        return SourceList(runs: runs, union: seen)
    }

    /// The list that `strings` spell, when each is a single address written as Swift writes it, else nil.
    static func parsing(_ strings: [String]) -> SourceList? {
        var runs: [IPSet] = []
        var current: [IPAddress] = []
        var last: AddressKey?
        var all = IPSetBuilder()
        for s in strings {
            guard !s.contains("/"), let a = IPAddress(s), a.description == s else { return nil }
            let k = AddressKey(a)
            if let l = last, !(l < k) {
                runs.append(IPSet(addresses: current))
                current = []
            }
            current.append(a)
            all.add(a)
            last = k
        }
        if !current.isEmpty { runs.append(IPSet(addresses: current)) }
        return SourceList(runs: runs, union: all.build())
    }

    var isEmpty: Bool { runs.isEmpty }

    /// Lets this list take its strings from `old` (which it replaces) when it makes them. Only lists whose
    /// strings are made are kept for that, so a list holds at most one other alive.
    func inheritText(from old: SourceList) {
        guard old !== self else { return }
        let source: SourceList? = old.hasText ? old : old.donors.withLock { d -> SourceList? in d.predecessor }
        donors.withLock { $0.predecessor = source }
    }

    /// Lets this list take strings from `sibling` (a list of one of its aliases alone, itself without siblings),
    /// whose strings are made first if need be.
    func shareText(with sibling: SourceList) {
        guard sibling !== self else { return }
        donors.withLock { $0.siblings.append(sibling) }
    }

    var hasText: Bool { text.withLock { $0 != nil } }

    /// The SrcIPs strings.
    var strings: [String] {
        text.withLock { cached in
            if let cached { return cached.listed }
            let given = donors.withLock { d in
                defer { d = Donors() }
                return d
            }
            var reuse: [(union: IPSet, sorted: [String])] = []
            if let old = given.predecessor, let sorted = old.text.withLock({ $0?.sorted }) { reuse.append((old.union, sorted)) }
            for sibling in given.siblings {
                _ = sibling.strings
                if let sorted = sibling.text.withLock({ $0?.sorted }) { reuse.append((sibling.union, sorted)) }
            }
            let made = makeText(reusing: reuse)
            cached = made
            return made.listed
        }
    }

    /// Formats each address, or takes its string from another list (given as its union and strings in
    /// address order) that has it.
    private func makeText(reusing donors: [(union: IPSet, sorted: [String])]) -> Text {
        var keys: [AddressKey] = []
        var sorted: [String] = []
        let donorKeys = donors.map { d in
            var k: [AddressKey] = []
            d.union.forEachAddress { k.append(AddressKey($0)) }
            return k
        }
        var at = Array(repeating: 0, count: donors.count)
        union.forEachAddress { a in
            let k = AddressKey(a)
            keys.append(k)
            var found: String?
            for i in donors.indices where found == nil {
                while at[i] < donorKeys[i].count && donorKeys[i][at[i]] < k { at[i] += 1 }
                if at[i] < donorKeys[i].count, donorKeys[i][at[i]] == k, at[i] < donors[i].sorted.count {
                    found = donors[i].sorted[at[i]]
                }
            }
            sorted.append(found ?? a.description)
        }
        guard runs.count > 1 else { return Text(sorted: sorted, listed: sorted) }
        var listed: [String] = []
        listed.reserveCapacity(sorted.count)
        for run in runs {
            run.forEachAddress { a in
                // The address's place in `union` (every run address is in it).
                let k = AddressKey(a)
                var lo = 0, hi = keys.count
                while lo < hi {
                    let mid = (lo + hi) / 2
                    if keys[mid] < k { lo = mid + 1 } else { hi = mid }
                }
                listed.append(lo < sorted.count ? sorted[lo] : a.description)
            }
        }
        return Text(sorted: sorted, listed: listed)
    }
}

extension SourceList: Hashable {
    static func == (a: SourceList, b: SourceList) -> Bool {
        a === b || (a.hash == b.hash && a.runs == b.runs)
    }

    func hash(into hasher: inout Hasher) { hasher.combine(hash) }
}

/// An address's place in SrcIPs order: IPv4 before IPv6, then by value.
struct AddressKey: Comparable {
    var isV6: Bool
    var value: U128

    init(isV6: Bool, value: U128) {
        self.isV6 = isV6
        self.value = value
    }

    init(_ a: IPAddress) {
        let (v6, k) = IPSet.key(a)
        self.init(isV6: v6, value: k)
    }

    static func < (a: AddressKey, b: AddressKey) -> Bool {
        a.isV6 != b.isV6 ? !a.isV6 : a.value < b.value
    }
}

extension IPSet {
    var firstKey: AddressKey? {
        if let r = v4.first { return AddressKey(isV6: false, value: r.lowerBound) }
        if let r = v6.first { return AddressKey(isV6: true, value: r.lowerBound) }
        return nil
    }

    var lastKey: AddressKey? {
        if let r = v6.last { return AddressKey(isV6: true, value: r.upperBound) }
        if let r = v4.last { return AddressKey(isV6: false, value: r.upperBound) }
        return nil
    }

    /// The union, in one pass over both range lists.
    func unionSorted(_ other: IPSet) -> IPSet {
        var s = IPSet()
        s.v4 = Self.mergeRanges(v4, other.v4)
        s.v6 = Self.mergeRanges(v6, other.v6)
        return s
    }

    /// The addresses not in `other`, in one pass over both range lists.
    func subtractingSorted(_ other: IPSet) -> IPSet {
        var s = IPSet()
        s.v4 = Self.subtractRanges(v4, other.v4)
        s.v6 = Self.subtractRanges(v6, other.v6)
        return s
    }

    static func mergeRanges(_ a: [ClosedRange<U128>], _ b: [ClosedRange<U128>]) -> [ClosedRange<U128>] {
        if a.isEmpty { return b }
        if b.isEmpty { return a }
        var out: [ClosedRange<U128>] = []
        out.reserveCapacity(a.count + b.count)
        var i = 0, j = 0
        func push(_ r: ClosedRange<U128>) {
            if let last = out.last, last.upperBound.successor.map({ r.lowerBound <= $0 }) ?? true {
                if r.upperBound > last.upperBound { out[out.count - 1] = last.lowerBound...r.upperBound }
            } else {
                out.append(r)
            }
        }
        while i < a.count || j < b.count {
            if j == b.count || (i < a.count && a[i].lowerBound <= b[j].lowerBound) {
                push(a[i]); i += 1
            } else {
                push(b[j]); j += 1
            }
        }
        return out
    }

    static func subtractRanges(_ a: [ClosedRange<U128>], _ b: [ClosedRange<U128>]) -> [ClosedRange<U128>] {
        if a.isEmpty || b.isEmpty { return a }
        var out: [ClosedRange<U128>] = []
        var j = 0
        for r in a {
            var lower = r.lowerBound
            var done = false
            // Skip ranges of b that end before this range starts.
            while j < b.count && b[j].upperBound < lower { j += 1 }
            var k = j
            while k < b.count && b[k].lowerBound <= r.upperBound {
                let x = b[k]
                if x.lowerBound > lower, let e = x.lowerBound.predecessor { out.append(lower...e) }
                guard let next = x.upperBound.successor, x.upperBound < r.upperBound else { done = true; break }
                lower = max(lower, next)
                k += 1
            }
            if !done { out.append(lower...r.upperBound) }
        }
        return out
    }
}
