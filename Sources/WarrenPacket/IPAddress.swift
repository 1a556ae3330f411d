// IP addresses and prefixes: parsed from and printed as the usual text forms
// (dotted quad; RFC 5952 for IPv6), compared and matched without allocation.

/// An IPv4 or IPv6 address.
public enum IPAddress: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// Host-order value of the four octets.
    case v4(UInt32)
    /// The sixteen octets as two big-endian halves (high, low), in host order.
    case v6(UInt64, UInt64)

    public var version: IPVersion {
        if case .v4 = self { return .v4 }
        return .v6
    }

    /// Bit length of the address: 32 or 128.
    public var bitCount: Int { version == .v4 ? 32 : 128 }

    public init(v4 bytes: (UInt8, UInt8, UInt8, UInt8)) {
        self = .v4(UInt32(bytes.0) << 24 | UInt32(bytes.1) << 16 | UInt32(bytes.2) << 8 | UInt32(bytes.3))
    }

    /// Reads 4 or 16 bytes in network order.
    public init?<Bytes: Collection>(bytes: Bytes) where Bytes.Element == UInt8 {
        switch bytes.count {
        case 4:
            self = .v4(bytes.reduce(0) { $0 << 8 | UInt32($1) })
        case 16:
            var hi: UInt64 = 0, lo: UInt64 = 0
            for (i, b) in bytes.enumerated() {
                if i < 8 { hi = hi << 8 | UInt64(b) } else { lo = lo << 8 | UInt64(b) }
            }
            self = .v6(hi, lo)
        default:
            return nil
        }
    }

    /// The address in network byte order (4 or 16 bytes).
    public var bytes: [UInt8] {
        switch self {
        case .v4(let v):
            return (0..<4).map { UInt8(truncatingIfNeeded: v >> (24 - 8 * UInt32($0))) }
        case .v6(let hi, let lo):
            return (0..<8).map { UInt8(truncatingIfNeeded: hi >> (56 - 8 * UInt64($0))) }
                + (0..<8).map { UInt8(truncatingIfNeeded: lo >> (56 - 8 * UInt64($0))) }
        }
    }

    /// Parses "192.0.2.1", "2001:db8::1" or "::ffff:192.0.2.1" (no zone, no brackets).
    public init?(_ text: some StringProtocol) {
        if text.contains(":") {
            guard let v = Self.parseV6(Substring(text)) else { return nil }
            self = v
        } else {
            guard let v = Self.parseV4(Substring(text)) else { return nil }
            self = .v4(v)
        }
    }

    private static func parseV4(_ text: Substring) -> UInt32? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var value: UInt32 = 0
        for part in parts {
            guard (1...3).contains(part.count), part.allSatisfy({ $0.isASCII && $0.isNumber }),
                  part.count == 1 || part.first != "0",
                  let octet = UInt32(part), octet <= 255 else { return nil }
            value = value << 8 | octet
        }
        return value
    }

    private static func parseV6(_ text: Substring) -> IPAddress? {
        // Split at "::" (at most once), parse both sides, fill the gap with zeros.
        func groups(_ part: Substring, allowV4Tail: Bool) -> [UInt16]? {
            if part.isEmpty { return [] }
            let pieces = part.split(separator: ":", omittingEmptySubsequences: false)
            var out: [UInt16] = []
            for (index, piece) in pieces.enumerated() {
                if piece.contains(".") {
                    guard allowV4Tail, index == pieces.count - 1, let v4 = parseV4(piece) else { return nil }
                    out.append(UInt16(v4 >> 16))
                    out.append(UInt16(v4 & 0xFFFF))
                } else {
                    guard (1...4).contains(piece.count), piece.allSatisfy({ $0.isHexDigit }),
                          let g = UInt16(piece, radix: 16) else { return nil }
                    out.append(g)
                }
            }
            return out
        }
        var all: [UInt16]
        if let gap = text.firstRange(of: "::") {
            let tail = text[gap.upperBound...]
            guard !tail.contains("::"),
                  let left = groups(text[..<gap.lowerBound], allowV4Tail: false),
                  let right = groups(tail, allowV4Tail: true),
                  left.count + right.count < 8 else { return nil }
            all = left + [UInt16](repeating: 0, count: 8 - left.count - right.count) + right
        } else {
            guard let g = groups(text, allowV4Tail: true), g.count == 8 else { return nil }
            all = g
        }
        let hi = all[0..<4].reduce(UInt64(0)) { $0 << 16 | UInt64($1) }
        let lo = all[4..<8].reduce(UInt64(0)) { $0 << 16 | UInt64($1) }
        return .v6(hi, lo)
    }

    public var description: String {
        switch self {
        case .v4(let v):
            return "\(v >> 24).\(v >> 16 & 0xFF).\(v >> 8 & 0xFF).\(v & 0xFF)"
        case .v6(let hi, let lo):
            let groups = (0..<4).map { UInt16(truncatingIfNeeded: hi >> (48 - 16 * UInt64($0))) }
                + (0..<4).map { UInt16(truncatingIfNeeded: lo >> (48 - 16 * UInt64($0))) }
            if hi == 0, lo >> 32 == 0xFFFF {
                return "::ffff:" + IPAddress.v4(UInt32(truncatingIfNeeded: lo)).description
            }
            // RFC 5952: compress the longest run (leftmost on a tie) of two or more zero groups.
            var bestStart = -1, bestLength = 0, i = 0
            while i < 8 {
                if groups[i] == 0 {
                    var j = i
                    while j < 8 && groups[j] == 0 { j += 1 }
                    if j - i > bestLength { bestStart = i; bestLength = j - i }
                    i = j
                } else {
                    i += 1
                }
            }
            func hex(_ range: Range<Int>) -> String {
                groups[range].map { String($0, radix: 16) }.joined(separator: ":")
            }
            if bestLength >= 2 {
                return hex(0..<bestStart) + "::" + hex((bestStart + bestLength)..<8)
            }
            return hex(0..<8)
        }
    }

    public static func < (a: IPAddress, b: IPAddress) -> Bool {
        switch (a, b) {
        case (.v4(let x), .v4(let y)): return x < y
        case (.v6(let xh, let xl), .v6(let yh, let yl)): return (xh, xl) < (yh, yl)
        case (.v4, .v6): return true
        case (.v6, .v4): return false
        }
    }

    /// The address with every bit after the first `bits` cleared.
    public func masked(to bits: Int) -> IPAddress {
        switch self {
        case .v4(let v):
            return .v4(bits <= 0 ? 0 : bits >= 32 ? v : v & ~(UInt32.max >> UInt32(bits)))
        case .v6(let hi, let lo):
            if bits <= 0 { return .v6(0, 0) }
            if bits <= 64 { return .v6(bits == 64 ? hi : hi & ~(UInt64.max >> UInt64(bits)), 0) }
            if bits >= 128 { return self }
            return .v6(hi, lo & ~(UInt64.max >> UInt64(bits - 64)))
        }
    }
}

/// An address prefix such as 10.0.0.0/8 or fd7a:115c:a1e0::/48.
public struct IPPrefix: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The address as given (not necessarily masked; see `masked`).
    public var address: IPAddress
    public var bits: Int

    public init?(address: IPAddress, bits: Int) {
        guard (0...address.bitCount).contains(bits) else { return nil }
        self.address = address
        self.bits = bits
    }

    /// A single-address prefix (/32 or /128).
    public init(host: IPAddress) {
        address = host
        bits = host.bitCount
    }

    /// Parses "10.0.0.0/8", or a bare address as a host prefix.
    public init?(_ text: some StringProtocol) {
        if let slash = text.firstIndex(of: "/") {
            let lengthText = text[text.index(after: slash)...]
            guard let address = IPAddress(text[..<slash]),
                  !lengthText.isEmpty, lengthText.allSatisfy({ $0.isASCII && $0.isNumber }), lengthText.count <= 3,
                  let bits = Int(lengthText) else { return nil }
            self.init(address: address, bits: bits)
        } else {
            guard let address = IPAddress(text) else { return nil }
            self.init(host: address)
        }
    }

    /// The prefix with host bits cleared.
    public var masked: IPPrefix { IPPrefix(address: address.masked(to: bits), bits: bits)! }

    public var isSingleAddress: Bool { bits == address.bitCount }

    public func contains(_ other: IPAddress) -> Bool {
        other.version == address.version && other.masked(to: bits) == address.masked(to: bits)
    }

    /// Whether every address of `other` lies in this prefix.
    public func contains(_ other: IPPrefix) -> Bool {
        other.bits >= bits && contains(other.address)
    }

    public var description: String { "\(address)/\(bits)" }

    public static func < (a: IPPrefix, b: IPPrefix) -> Bool {
        (a.address, a.bits) < (b.address, b.bits)
    }
}
