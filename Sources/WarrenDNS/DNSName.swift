// Domain names (RFC 1035 §3.1): a sequence of labels, kept in wire form (length-prefixed labels
// ending with the zero-length root label). The case is kept as given, so that answers echo the
// question's case (RFC 4343), while comparison and hashing ignore ASCII case.

/// A domain name, stored in uncompressed wire form, compared case-insensitively.
public struct DNSName: Hashable, Sendable, CustomStringConvertible {
    /// Length-prefixed labels followed by the zero octet of the root label (at most 255 octets).
    public private(set) var wire: [UInt8]

    /// The longest wire form a name may have (RFC 1035 §2.3.4).
    public static let maximumWireLength = 255
    /// The longest label (RFC 1035 §2.3.4).
    public static let maximumLabelLength = 63

    /// The root name ".".
    public static let root = DNSName(uncheckedWire: [0])

    init(uncheckedWire: [UInt8]) { wire = uncheckedWire }

    /// Builds a name from labels (each 1...63 octets, in all at most 255 octets of wire form).
    public init(labels: [some Collection<UInt8>]) throws {
        var out: [UInt8] = []
        out.reserveCapacity(labels.reduce(1) { $0 + $1.count + 1 })
        for label in labels {
            guard !label.isEmpty else { throw DNSNameError.emptyLabel }
            guard label.count <= Self.maximumLabelLength else { throw DNSNameError.labelTooLong }
            out.append(UInt8(label.count))
            out.append(contentsOf: label)
        }
        out.append(0)
        guard out.count <= Self.maximumWireLength else { throw DNSNameError.nameTooLong }
        wire = out
    }

    /// Parses presentation form: "host.example.com" or "host.example.com." (both absolute), "." for
    /// the root; `\.` and `\\` escape a character and `\DDD` gives an octet in decimal.
    public init(_ text: some StringProtocol) throws {
        let utf8 = Array(text.utf8)
        if utf8.isEmpty || utf8 == [UInt8(ascii: ".")] {
            self = .root
            return
        }
        var labels: [[UInt8]] = []
        var current: [UInt8] = []
        var i = 0
        while i < utf8.count {
            let c = utf8[i]
            if c == UInt8(ascii: "\\") {
                guard i + 1 < utf8.count else { throw DNSNameError.badEscape }
                let next = utf8[i + 1]
                if (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(next) {
                    let digits = utf8[(i + 1)..<min(i + 4, utf8.count)]
                    guard digits.count == 3, digits.allSatisfy({ (48...57).contains($0) }) else {
                        throw DNSNameError.badEscape
                    }
                    let value = digits.reduce(0) { $0 * 10 + Int($1 - 48) }
                    guard value <= 255 else { throw DNSNameError.badEscape }
                    current.append(UInt8(value))
                    i += 4
                } else {
                    current.append(next)
                    i += 2
                }
            } else if c == UInt8(ascii: ".") {
                guard !current.isEmpty else { throw DNSNameError.emptyLabel }
                labels.append(current)
                current = []
                i += 1
            } else {
                current.append(c)
                i += 1
            }
        }
        if !current.isEmpty { labels.append(current) }
        try self.init(labels: labels)
    }

    /// The number of labels, not counting the root label.
    public var labelCount: Int {
        var count = 0, i = 0
        while wire[i] != 0 {
            count += 1
            i += Int(wire[i]) + 1
        }
        return count
    }

    public var isRoot: Bool { wire.count == 1 }

    /// The labels, most specific first (the root label is not included).
    public var labels: [ArraySlice<UInt8>] {
        var out: [ArraySlice<UInt8>] = []
        var i = 0
        while wire[i] != 0 {
            let length = Int(wire[i])
            out.append(wire[(i + 1)..<(i + 1 + length)])
            i += length + 1
        }
        return out
    }

    /// The first (leftmost) label, or nil for the root.
    public var firstLabel: ArraySlice<UInt8>? {
        isRoot ? nil : wire[1..<(1 + Int(wire[0]))]
    }

    /// The name without its first label (the root's parent is nil).
    public var parent: DNSName? {
        isRoot ? nil : DNSName(uncheckedWire: Array(wire[(Int(wire[0]) + 1)...]))
    }

    /// The same name in ASCII lower case.
    public func lowercased() -> DNSName {
        DNSName(uncheckedWire: wire.map(Self.lower))
    }

    /// This name with `label` put in front; nil if the result would be too long.
    public func prepending(_ label: some Collection<UInt8>) -> DNSName? {
        guard !label.isEmpty, label.count <= Self.maximumLabelLength,
              wire.count + label.count + 1 <= Self.maximumWireLength else { return nil }
        return DNSName(uncheckedWire: [UInt8(label.count)] + Array(label) + wire)
    }

    /// Whether this name equals `other` or lies below it (case-insensitive).
    public func isSubdomain(of other: DNSName) -> Bool {
        guard wire.count >= other.wire.count else { return false }
        let offset = wire.count - other.wire.count
        // The suffix must start on a label boundary.
        var i = 0
        while i < offset {
            i += Int(wire[i]) + 1
        }
        guard i == offset else { return false }
        for j in 0..<other.wire.count where Self.lower(wire[offset + j]) != Self.lower(other.wire[j]) {
            return false
        }
        return true
    }

    @inline(__always)
    static func lower(_ b: UInt8) -> UInt8 { b >= 65 && b <= 90 ? b | 0x20 : b }

    public static func == (a: DNSName, b: DNSName) -> Bool {
        guard a.wire.count == b.wire.count else { return false }
        for i in 0..<a.wire.count where lower(a.wire[i]) != lower(b.wire[i]) { return false }
        return true
    }

    public func hash(into hasher: inout Hasher) {
        for b in wire { hasher.combine(Self.lower(b)) }
    }

    /// Presentation form with a trailing dot; "." for the root.
    public var description: String {
        if isRoot { return "." }
        var out = ""
        for label in labels {
            for b in label {
                switch b {
                case UInt8(ascii: "."), UInt8(ascii: "\\"):
                    out.append("\\")
                    out.append(Character(Unicode.Scalar(b)))
                case 0x21...0x7E:
                    out.append(Character(Unicode.Scalar(b)))
                default:
                    let digits = String(b)
                    out.append("\\" + String(repeating: "0", count: 3 - digits.count) + digits)
                }
            }
            out.append(".")
        }
        return out
    }
}

/// Why text or labels do not make a domain name.
public enum DNSNameError: Error, Equatable, Sendable {
    case emptyLabel
    case labelTooLong
    case nameTooLong
    case badEscape
}
