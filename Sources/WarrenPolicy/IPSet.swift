import WarrenPacket

/// A 128-bit unsigned value: an IPv6 address, or an IPv4 address in the low 32 bits.
struct U128: Hashable, Comparable, Sendable {
    var hi: UInt64
    var lo: UInt64

    static let zero = U128(hi: 0, lo: 0)

    static func < (a: U128, b: U128) -> Bool { (a.hi, a.lo) < (b.hi, b.lo) }

    /// The value plus one, or nil on overflow.
    var successor: U128? {
        if lo == .max { return hi == .max ? nil : U128(hi: hi + 1, lo: 0) }
        return U128(hi: hi, lo: lo + 1)
    }

    /// The value minus one, or nil below zero.
    var predecessor: U128? {
        if lo == 0 { return hi == 0 ? nil : U128(hi: hi - 1, lo: .max) }
        return U128(hi: hi, lo: lo - 1)
    }

    /// 2^k - 1 for k in 0...128.
    static func lowMask(_ k: Int) -> U128 {
        if k <= 0 { return .zero }
        if k >= 128 { return U128(hi: .max, lo: .max) }
        if k >= 64 { return U128(hi: k == 64 ? 0 : UInt64.max >> UInt64(128 - k), lo: .max) }
        return U128(hi: 0, lo: UInt64.max >> UInt64(64 - k))
    }

    static func & (a: U128, b: U128) -> U128 { U128(hi: a.hi & b.hi, lo: a.lo & b.lo) }
    static func | (a: U128, b: U128) -> U128 { U128(hi: a.hi | b.hi, lo: a.lo | b.lo) }
    static prefix func ~ (a: U128) -> U128 { U128(hi: ~a.hi, lo: ~a.lo) }
}

/// A set of IP addresses kept as sorted, disjoint, non-adjacent closed ranges per family,
/// in the manner of Go's netipx.IPSet (which Tailscale's control plane uses).
public struct IPSet: Hashable, Sendable {
    /// IPv4 ranges (values in the low 32 bits) and IPv6 ranges.
    var v4: [ClosedRange<U128>] = []
    var v6: [ClosedRange<U128>] = []

    public init() {}

    public var isEmpty: Bool { v4.isEmpty && v6.isEmpty }

    static func key(_ a: IPAddress) -> (isV6: Bool, U128) {
        switch a {
        case .v4(let v): return (false, U128(hi: 0, lo: UInt64(v)))
        case .v6(let h, let l): return (true, U128(hi: h, lo: l))
        }
    }

    static func address(_ k: U128, v6: Bool) -> IPAddress {
        v6 ? .v6(k.hi, k.lo) : .v4(UInt32(truncatingIfNeeded: k.lo))
    }

    static func range(of p: IPPrefix) -> (Bool, ClosedRange<U128>) {
        let (isV6, k) = key(p.address)
        let width = isV6 ? 128 : 32
        let host = U128.lowMask(width - p.bits)
        let first = k & ~host
        return (isV6, first...(first | host))
    }

    public init(prefixes: [IPPrefix]) {
        var b = IPSetBuilder()
        for p in prefixes { b.add(p) }
        self = b.build()
    }

    public init(addresses: [IPAddress]) {
        var b = IPSetBuilder()
        for a in addresses { b.add(a) }
        self = b.build()
    }

    public func contains(_ a: IPAddress) -> Bool {
        let (isV6, k) = Self.key(a)
        let ranges = isV6 ? v6 : v4
        var lo = 0, hi = ranges.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if ranges[mid].upperBound < k { lo = mid + 1 } else { hi = mid }
        }
        return lo < ranges.count && ranges[lo].lowerBound <= k
    }

    /// Whether some address of `p` is in the set.
    public func overlaps(_ p: IPPrefix) -> Bool {
        let (isV6, r) = Self.range(of: p)
        let ranges = isV6 ? v6 : v4
        var lo = 0, hi = ranges.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if ranges[mid].upperBound < r.lowerBound { lo = mid + 1 } else { hi = mid }
        }
        return lo < ranges.count && ranges[lo].lowerBound <= r.upperBound
    }

    /// Whether every address of `p` is in the set.
    public func containsAll(_ p: IPPrefix) -> Bool {
        let (isV6, r) = Self.range(of: p)
        let ranges = isV6 ? v6 : v4
        for x in ranges where x.lowerBound <= r.lowerBound && r.upperBound <= x.upperBound { return true }
        return false
    }

    public func overlaps(_ other: IPSet) -> Bool {
        func any(_ a: [ClosedRange<U128>], _ b: [ClosedRange<U128>]) -> Bool {
            var i = 0, j = 0
            while i < a.count && j < b.count {
                if a[i].overlaps(b[j]) { return true }
                if a[i].upperBound < b[j].upperBound { i += 1 } else { j += 1 }
            }
            return false
        }
        return any(v4, other.v4) || any(v6, other.v6)
    }

    /// Whether every address of `other` is in this set.
    public func isSuperset(of other: IPSet) -> Bool {
        func covers(_ a: [ClosedRange<U128>], _ b: [ClosedRange<U128>]) -> Bool {
            var i = 0
            for r in b {
                while i < a.count && a[i].upperBound < r.lowerBound { i += 1 }
                guard i < a.count, a[i].lowerBound <= r.lowerBound, r.upperBound <= a[i].upperBound else { return false }
            }
            return true
        }
        return covers(v4, other.v4) && covers(v6, other.v6)
    }

    public func union(_ other: IPSet) -> IPSet {
        var b = IPSetBuilder()
        b.add(self)
        b.add(other)
        return b.build()
    }

    /// The smallest list of CIDR prefixes that covers exactly this set, in address order.
    public var prefixes: [IPPrefix] {
        var out: [IPPrefix] = []
        for r in v4 { Self.decompose(r, v6: false, into: &out) }
        for r in v6 { Self.decompose(r, v6: true, into: &out) }
        return out
    }

    static func decompose(_ r: ClosedRange<U128>, v6: Bool, into out: inout [IPPrefix]) {
        let width = v6 ? 128 : 32
        var start = r.lowerBound
        while true {
            // Largest block aligned at `start` that ends inside the range.
            var k = width
            while k > 0 {
                let mask = U128.lowMask(k)
                if start & mask == .zero && (start | mask) <= r.upperBound { break }
                k -= 1
            }
            out.append(IPPrefix(address: address(start, v6: v6), bits: width - k)!)
            let end = start | U128.lowMask(k)
            if end >= r.upperBound { return }
            guard let next = end.successor else { return }
            start = next
        }
    }

    /// The ranges as Tailscale writes them in SrcIPs: a bare address, a CIDR prefix where a
    /// range is exactly one, and "first-last" otherwise.
    public var rangeStrings: [String] {
        var out: [String] = []
        for (ranges, isV6) in [(v4, false), (v6, true)] {
            for r in ranges {
                let a = Self.address(r.lowerBound, v6: isV6)
                if r.lowerBound == r.upperBound {
                    out.append(a.description)
                    continue
                }
                var parts: [IPPrefix] = []
                Self.decompose(r, v6: isV6, into: &parts)
                if parts.count == 1 {
                    out.append(parts[0].description)
                } else {
                    out.append("\(a)-\(Self.address(r.upperBound, v6: isV6))")
                }
            }
        }
        return out
    }

    /// Each range as "first-last", as Tailscale writes autogroup:internet destinations.
    public var spanStrings: [String] {
        var out: [String] = []
        for (ranges, isV6) in [(v4, false), (v6, true)] {
            for r in ranges {
                out.append("\(Self.address(r.lowerBound, v6: isV6))-\(Self.address(r.upperBound, v6: isV6))")
            }
        }
        return out
    }

    /// Every address, for small sets (single addresses of nodes); ranges are listed by their ends.
    public var addresses: [IPAddress] {
        var out: [IPAddress] = []
        for (ranges, isV6) in [(v4, false), (v6, true)] {
            for r in ranges {
                var k = r.lowerBound
                while true {
                    out.append(Self.address(k, v6: isV6))
                    if k >= r.upperBound || out.count > 1 << 16 { break }
                    guard let n = k.successor else { break }
                    k = n
                }
            }
        }
        return out
    }

    public func subtracting(_ other: IPSet) -> IPSet {
        func sub(_ a: [ClosedRange<U128>], _ b: [ClosedRange<U128>]) -> [ClosedRange<U128>] {
            var out: [ClosedRange<U128>] = []
            for r in a {
                var pieces = [r]
                for x in b where x.overlaps(r) {
                    var next: [ClosedRange<U128>] = []
                    for p in pieces {
                        guard p.overlaps(x) else { next.append(p); continue }
                        if p.lowerBound < x.lowerBound, let e = x.lowerBound.predecessor { next.append(p.lowerBound...e) }
                        if x.upperBound < p.upperBound, let s = x.upperBound.successor { next.append(s...p.upperBound) }
                    }
                    pieces = next
                }
                out += pieces
            }
            return out
        }
        var s = IPSet()
        s.v4 = sub(v4, other.v4)
        s.v6 = sub(v6, other.v6)
        return s
    }
}

/// Collects addresses and prefixes, then builds a normalized `IPSet`.
public struct IPSetBuilder: Sendable {
    var v4: [ClosedRange<U128>] = []
    var v6: [ClosedRange<U128>] = []

    public init() {}

    public mutating func add(_ a: IPAddress) {
        let (isV6, k) = IPSet.key(a)
        if isV6 { v6.append(k...k) } else { v4.append(k...k) }
    }

    public mutating func add(_ p: IPPrefix) {
        let (isV6, r) = IPSet.range(of: p)
        if isV6 { v6.append(r) } else { v4.append(r) }
    }

    public mutating func add(_ s: IPSet) {
        v4 += s.v4
        v6 += s.v6
    }

    static func normalize(_ rs: [ClosedRange<U128>]) -> [ClosedRange<U128>] {
        guard rs.count > 1 else { return rs }
        let sorted = rs.sorted { $0.lowerBound < $1.lowerBound }
        var out: [ClosedRange<U128>] = [sorted[0]]
        for r in sorted.dropFirst() {
            let last = out[out.count - 1]
            if let next = last.upperBound.successor, r.lowerBound > next {
                out.append(r)
            } else if r.upperBound > last.upperBound {
                out[out.count - 1] = last.lowerBound...r.upperBound
            }
        }
        return out
    }

    public func build() -> IPSet {
        var s = IPSet()
        s.v4 = Self.normalize(v4)
        s.v6 = Self.normalize(v6)
        return s
    }
}
