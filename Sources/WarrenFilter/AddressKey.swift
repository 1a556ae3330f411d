import WarrenPacket

/// An address of one family as an ordered 128-bit key: IPv4 in the low 32 bits. Keys of the
/// two families never meet: each family has its own tables.
struct AddressKey: Comparable, Hashable, Sendable {
    var hi: UInt64
    var lo: UInt64

    @inline(__always)
    init(hi: UInt64, lo: UInt64) {
        self.hi = hi
        self.lo = lo
    }

    @inline(__always)
    init(_ address: IPAddress) {
        switch address {
        case .v4(let v): hi = 0; lo = UInt64(v)
        case .v6(let h, let l): hi = h; lo = l
        }
    }

    @inline(__always)
    static func < (a: AddressKey, b: AddressKey) -> Bool {
        a.hi < b.hi || (a.hi == b.hi && a.lo < b.lo)
    }

    /// The last address of `prefix` (its host bits set).
    static func last(of prefix: IPPrefix) -> AddressKey {
        let first = AddressKey(prefix.address.masked(to: prefix.bits))
        switch prefix.address {
        case .v4:
            let host: UInt64 = prefix.bits >= 32 ? 0 : (UInt64(1) << UInt64(32 - prefix.bits)) - 1
            return AddressKey(hi: 0, lo: first.lo | host)
        case .v6:
            let bits = prefix.bits
            let hiHost: UInt64 = bits >= 64 ? 0 : (bits == 0 ? .max : UInt64.max >> UInt64(bits))
            let loHost: UInt64 = bits <= 64 ? .max : (bits >= 128 ? 0 : UInt64.max >> UInt64(bits - 64))
            return AddressKey(hi: first.hi | hiHost, lo: first.lo | loHost)
        }
    }
}

/// An inclusive range of addresses of one family.
struct AddressRange: Hashable, Sendable {
    var first: AddressKey
    var last: AddressKey

    init(first: AddressKey, last: AddressKey) {
        self.first = first
        self.last = last
    }

    init(_ prefix: IPPrefix) {
        first = AddressKey(prefix.address.masked(to: prefix.bits))
        last = AddressKey.last(of: prefix)
    }

    @inline(__always)
    func contains(_ key: AddressKey) -> Bool { !(key < first) && !(last < key) }

    func overlaps(_ other: AddressRange) -> Bool { !(last < other.first) && !(other.last < first) }

    /// Sorts and merges overlapping or adjacent ranges.
    static func normalized(_ ranges: [AddressRange]) -> [AddressRange] {
        let sorted = ranges.sorted { $0.first < $1.first }
        var out: [AddressRange] = []
        out.reserveCapacity(sorted.count)
        for range in sorted {
            if var lastRange = out.last, !(lastRange.last < range.first) || lastRange.last.isPredecessor(of: range.first) {
                if lastRange.last < range.last { lastRange.last = range.last }
                out[out.count - 1] = lastRange
            } else {
                out.append(range)
            }
        }
        return out
    }
}

extension AddressKey {
    /// Whether `self + 1 == other` (128-bit).
    func isPredecessor(of other: AddressKey) -> Bool {
        if lo == .max { return hi != .max && other.hi == hi + 1 && other.lo == 0 }
        return other.hi == hi && other.lo == lo + 1
    }
}

/// A set of addresses of one family: sorted, merged, disjoint ranges searched by bisection.
struct AddressSet: Sendable {
    private(set) var firsts: [AddressKey] = []
    private(set) var lasts: [AddressKey] = []

    init(_ ranges: [AddressRange] = []) {
        for range in AddressRange.normalized(ranges) {
            firsts.append(range.first)
            lasts.append(range.last)
        }
    }

    var isEmpty: Bool { firsts.isEmpty }

    func contains(_ key: AddressKey) -> Bool {
        firsts.withUnsafeBufferPointer { f in
            lasts.withUnsafeBufferPointer { l in Self.contains(key, firsts: f, lasts: l) }
        }
    }

    /// Bisection over sorted disjoint ranges: find the last range starting at or before `key`.
    @inline(__always)
    static func contains(_ key: AddressKey, firsts: UnsafeBufferPointer<AddressKey>,
                         lasts: UnsafeBufferPointer<AddressKey>) -> Bool {
        var low = 0, high = firsts.count
        while low < high {
            let mid = (low + high) >> 1
            if key < firsts[mid] { high = mid } else { low = mid + 1 }
        }
        return low > 0 && !(lasts[low - 1] < key)
    }

    func overlaps(_ range: AddressRange) -> Bool {
        for i in firsts.indices where range.overlaps(AddressRange(first: firsts[i], last: lasts[i])) { return true }
        return false
    }
}
