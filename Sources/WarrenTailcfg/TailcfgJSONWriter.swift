// A hand-written JSON writer for the tailcfg types the map stream carries. It writes the same bytes as
// `TailcfgJSON.encoder()` (Foundation's JSONEncoder with sorted keys and unescaped slashes) does for the
// same value, about ten times faster, because the map for one node of a large tailnet is megabytes of
// JSON and Foundation's encoder builds a tree of boxed values before writing any of it.
//
// What "the same bytes" means, rule by rule:
// - Object members in ascending order of the UTF-8 bytes of their names (what JSONEncoder's
//   `.sortedKeys` does on Linux). Struct fields are written in that order by hand; dictionaries are
//   sorted at run time.
// - Nil optional fields are left out; non-optional ones are always written (empty arrays as `[]`).
// - Strings (RFC 8259 section 7): `"` and `\` escaped, U+0008, U+0009, U+000A, U+000C and U+000D as
//   `\b \t \n \f \r`, the other code points below U+0020 as `\u00XX` (lowercase hex); everything else,
//   `/` and non-ASCII included, as its UTF-8 bytes.
// - Integers in decimal; doubles as Swift's `description` without a trailing ".0" (`1e+20`, `0.5`,
//   `-0`); a non-finite double throws (as JSONEncoder's default strategy does).
// - Times as Go's RFC 3339 (``TailcfgTime``); years outside 0...9999 throw.
// - `Data`/`[UInt8]` as standard base64 with padding; keys, IP addresses, prefixes and address:port
//   pairs as their text forms.

import TailscaleKeys
import WarrenPacket

/// A value that writes itself with ``TailcfgJSONWriter``, producing what its `Encodable` conformance
/// produces through `TailcfgJSON.encoder()`.
public protocol TailcfgJSONWritable {
    func writeJSON(to writer: inout TailcfgJSONWriter) throws
}

/// What the writer throws: a double that JSON cannot hold, or a time outside years 0...9999.
public struct TailcfgJSONWriterError: Error, Hashable, Sendable, CustomStringConvertible {
    public var description: String
}

/// Appends JSON to a byte buffer. Commas are placed automatically: every value or key knows whether
/// something came before it at the same level.
public struct TailcfgJSONWriter {
    public private(set) var bytes: [UInt8]
    /// Whether the next value or key at this level needs a comma before it.
    private var needsComma = false
    /// Open objects and arrays.
    private var depth = 0
    /// Members to merge, in name order, into the object open at `extrasDepth` (see
    /// ``writeObject(mergingSortedMembers:_:)``).
    private var extras: [(name: String, value: JSONValue)] = []
    private var extrasNext = 0
    private var extrasDepth = -1
    /// What writing an extra member threw (raised again when the merged object is done).
    private var extrasError: TailcfgJSONWriterError?

    public init(reservingCapacity capacity: Int = 4096) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    /// Everything written so far, leaving the writer empty.
    public mutating func takeBytes() -> [UInt8] {
        defer {
            bytes = []
            needsComma = false
        }
        return bytes
    }

    // MARK: Structure

    @inline(__always)
    private mutating func separate() {
        if needsComma { bytes.append(UInt8(ascii: ",")) }
    }

    public mutating func beginObject() {
        separate()
        bytes.append(UInt8(ascii: "{"))
        needsComma = false
        depth += 1
    }

    public mutating func endObject() {
        if depth == extrasDepth { flushExtras(before: nil) }
        bytes.append(UInt8(ascii: "}"))
        needsComma = true
        depth -= 1
    }

    public mutating func beginArray() {
        separate()
        bytes.append(UInt8(ascii: "["))
        needsComma = false
        depth += 1
    }

    public mutating func endArray() {
        bytes.append(UInt8(ascii: "]"))
        needsComma = true
        depth -= 1
    }

    /// A member name that needs no escaping (a Go field name). Struct writers call this in ascending
    /// order of the names' UTF-8 bytes.
    public mutating func key(_ name: StaticString) {
        if depth == extrasDepth { flushExtras(before: name) }
        separate()
        bytes.append(UInt8(ascii: "\""))
        name.withUTF8Buffer { bytes.append(contentsOf: $0) }
        bytes.append(UInt8(ascii: "\""))
        bytes.append(UInt8(ascii: ":"))
        needsComma = false
    }

    /// A member name from data (a dictionary key), escaped like any string.
    public mutating func key(_ name: String) {
        string(name)
        bytes.append(UInt8(ascii: ":"))
        needsComma = false
    }

    /// A complete JSON value written earlier by this writer (a cached fragment).
    public mutating func rawValue(_ fragment: [UInt8]) {
        separate()
        bytes.append(contentsOf: fragment)
        needsComma = true
    }

    /// Starts a value whose bytes (without the comma before it) are wanted afterwards, to be reused
    /// later through ``rawValue(_:)``: write the value, then call ``captured(since:)`` with the result.
    public mutating func beginCapture() -> Int {
        separate()
        needsComma = false
        return bytes.count
    }

    /// What was written since ``beginCapture()`` returned `start`.
    public func captured(since start: Int) -> [UInt8] { Array(bytes[start...]) }

    /// Runs `body`, which writes one object, and merges `members` (sorted by the UTF-8 bytes of their
    /// names, none equal to a name `body` writes) into it so that all names stay in order: how a struct
    /// with its known fields and a dictionary of unknown ones comes out as one sorted object.
    public mutating func writeObject(mergingSortedMembers members: [(name: String, value: JSONValue)],
                                     _ body: (inout TailcfgJSONWriter) throws -> Void) throws {
        let saved = (extras, extrasNext, extrasDepth)
        extras = members
        extrasNext = 0
        extrasDepth = depth + 1
        defer { (extras, extrasNext, extrasDepth) = saved }
        try body(&self)
        if let error = extrasError {
            extrasError = nil
            throw error
        }
    }

    /// Writes the pending extra members that sort before `name` (all of them when nil).
    private mutating func flushExtras(before name: StaticString?) {
        while extrasNext < extras.count {
            let member = extras[extrasNext]
            if let name {
                let precedes = name.withUTF8Buffer { member.name.utf8.lexicographicallyPrecedes($0) }
                guard precedes else { return }
            }
            extrasNext += 1
            key(member.name)
            do {
                try member.value.writeJSON(to: &self)
            } catch {
                // Only a non-finite number can fail; the output is abandoned when writeObject throws.
                extrasError = error as? TailcfgJSONWriterError ?? TailcfgJSONWriterError(description: "\(error)")
                null()
            }
        }
    }

    // MARK: Scalars

    public mutating func null() {
        separate()
        ascii("null")
        needsComma = true
    }

    public mutating func bool(_ value: Bool) {
        separate()
        ascii(value ? "true" : "false")
        needsComma = true
    }

    public mutating func integer(_ value: Int64) {
        separate()
        appendDecimal(value.magnitude, negative: value < 0)
        needsComma = true
    }

    public mutating func integer(_ value: Int) { integer(Int64(value)) }

    public mutating func integer(_ value: UInt64) {
        separate()
        appendDecimal(value, negative: false)
        needsComma = true
    }

    /// A double as JSONEncoder writes it; throws for NaN and infinities.
    public mutating func double(_ value: Double) throws {
        guard value.isFinite else { throw TailcfgJSONWriterError(description: "cannot write \(value) as JSON") }
        var text = value.description
        if text.hasSuffix(".0") { text.removeLast(2) }
        separate()
        text.withUTF8 { bytes.append(contentsOf: $0) }
        needsComma = true
    }

    /// A string, escaped per RFC 8259.
    public mutating func string(_ value: String) {
        separate()
        bytes.append(UInt8(ascii: "\""))
        var text = value
        text.withUTF8 { appendEscaped($0) }
        bytes.append(UInt8(ascii: "\""))
        needsComma = true
    }

    /// Standard base64 with padding, as Go (and JSONEncoder for `Data`) writes bytes.
    public mutating func base64(_ data: some Collection<UInt8>) {
        separate()
        bytes.append(UInt8(ascii: "\""))
        var pending: (UInt8, UInt8, UInt8) = (0, 0, 0)
        var n = 0
        for byte in data {
            switch n {
            case 0: pending.0 = byte
            case 1: pending.1 = byte
            default: pending.2 = byte
            }
            n += 1
            if n == 3 {
                appendBase64Quantum(pending, count: 3)
                n = 0
            }
        }
        if n > 0 {
            if n == 1 { pending.1 = 0 }
            pending.2 = 0
            appendBase64Quantum(pending, count: n)
        }
        bytes.append(UInt8(ascii: "\""))
        needsComma = true
    }

    /// A time as Go's RFC 3339 (trailing zeros of the fraction dropped).
    public mutating func time(_ value: TailcfgTime) throws {
        let seconds = value.secondsSince1970
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let secondOfDay = seconds - days * 86_400
        let (year, month, day) = TailcfgTime.civil(days: days)
        guard (0...9999).contains(year) else {
            throw TailcfgJSONWriterError(description: "time \(value) has a year outside of range [0,9999]")
        }
        separate()
        bytes.append(UInt8(ascii: "\""))
        appendPadded(UInt64(year), width: 4)
        bytes.append(UInt8(ascii: "-"))
        appendPadded(UInt64(month), width: 2)
        bytes.append(UInt8(ascii: "-"))
        appendPadded(UInt64(day), width: 2)
        bytes.append(UInt8(ascii: "T"))
        appendPadded(UInt64(secondOfDay / 3600), width: 2)
        bytes.append(UInt8(ascii: ":"))
        appendPadded(UInt64(secondOfDay / 60 % 60), width: 2)
        bytes.append(UInt8(ascii: ":"))
        appendPadded(UInt64(secondOfDay % 60), width: 2)
        if value.nanoseconds > 0 {
            var fraction = UInt64(value.nanoseconds)
            var digits = 9
            while fraction % 10 == 0 {
                fraction /= 10
                digits -= 1
            }
            bytes.append(UInt8(ascii: "."))
            appendPadded(fraction, width: digits)
        }
        bytes.append(UInt8(ascii: "Z"))
        bytes.append(UInt8(ascii: "\""))
        needsComma = true
    }

    /// A typed public key in its text form, such as `"nodekey:<64 hex digits>"`.
    public mutating func publicKey<K: TailscalePublicKey>(_ key: K) {
        separate()
        bytes.append(UInt8(ascii: "\""))
        var prefix = K.textPrefix
        prefix.withUTF8 { bytes.append(contentsOf: $0) }
        let words = key.raw.bigEndianWords
        appendHexWord(words.0)
        appendHexWord(words.1)
        appendHexWord(words.2)
        appendHexWord(words.3)
        bytes.append(UInt8(ascii: "\""))
        needsComma = true
    }

    /// An address in its usual text form (RFC 5952 for IPv6), as `IPAddress.description`.
    public mutating func ipAddress(_ address: IPAddress) {
        separate()
        bytes.append(UInt8(ascii: "\""))
        appendAddress(address)
        bytes.append(UInt8(ascii: "\""))
        needsComma = true
    }

    /// "address/bits".
    public mutating func ipPrefix(_ prefix: IPPrefix) {
        separate()
        bytes.append(UInt8(ascii: "\""))
        appendAddress(prefix.address)
        bytes.append(UInt8(ascii: "/"))
        appendDecimal(UInt64(prefix.bits.magnitude), negative: prefix.bits < 0)
        bytes.append(UInt8(ascii: "\""))
        needsComma = true
    }

    /// "1.2.3.4:port" or "[v6]:port".
    public mutating func addrPort(_ value: AddrPort) {
        separate()
        bytes.append(UInt8(ascii: "\""))
        if value.address.version == .v4 {
            appendAddress(value.address)
        } else {
            bytes.append(UInt8(ascii: "["))
            appendAddress(value.address)
            bytes.append(UInt8(ascii: "]"))
        }
        bytes.append(UInt8(ascii: ":"))
        appendDecimal(UInt64(value.port), negative: false)
        bytes.append(UInt8(ascii: "\""))
        needsComma = true
    }

    /// Any writable value (also as an array element).
    public mutating func value(_ value: some TailcfgJSONWritable) throws {
        try value.writeJSON(to: &self)
    }

    // MARK: Members

    /// A member that is always written.
    public mutating func field(_ name: StaticString, _ value: some TailcfgJSONWritable) throws {
        key(name)
        try value.writeJSON(to: &self)
    }

    /// A member written only when `value` is not nil (what `encodeIfPresent` does).
    public mutating func fieldIfPresent<T: TailcfgJSONWritable>(_ name: StaticString, _ value: T?) throws {
        guard let value else { return }
        key(name)
        try value.writeJSON(to: &self)
    }

    // MARK: Bytes

    /// The lowercase hex digit of `nibble` (0...15).
    @inline(__always)
    static func hexDigit(_ nibble: UInt8) -> UInt8 { nibble < 10 ? nibble &+ 0x30 : nibble &+ 0x57 }

    /// The 16 hex digits of `word`, appended at once.
    private mutating func appendHexWord(_ word: UInt64) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 16) { buffer in
            var rest = word
            for i in stride(from: 15, through: 0, by: -1) {
                buffer[i] = Self.hexDigit(UInt8(truncatingIfNeeded: rest) & 0xF)
                rest >>= 4
            }
            bytes.append(contentsOf: UnsafeBufferPointer(buffer))
        }
    }
    private static let base64Alphabet: [UInt8] =
        Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    @inline(__always)
    private mutating func ascii(_ text: StaticString) {
        text.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }

    private mutating func appendBase64Quantum(_ b: (UInt8, UInt8, UInt8), count: Int) {
        let alphabet = Self.base64Alphabet
        bytes.append(alphabet[Int(b.0 >> 2)])
        bytes.append(alphabet[Int((b.0 & 0x03) << 4 | b.1 >> 4)])
        bytes.append(count > 1 ? alphabet[Int((b.1 & 0x0F) << 2 | b.2 >> 6)] : UInt8(ascii: "="))
        bytes.append(count > 2 ? alphabet[Int(b.2 & 0x3F)] : UInt8(ascii: "="))
    }

    private mutating func appendDecimal(_ magnitude: UInt64, negative: Bool) {
        if negative { bytes.append(UInt8(ascii: "-")) }
        if magnitude < 10 {
            bytes.append(UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: magnitude))
            return
        }
        // Up to 20 digits, written backwards into a small buffer.
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { buffer in
            var i = 20
            var rest = magnitude
            while rest > 0 {
                i -= 1
                buffer[i] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: rest % 10)
                rest /= 10
            }
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[i..<20]))
        }
    }

    /// `value` in decimal with leading zeros up to `width` digits (never truncated).
    private mutating func appendPadded(_ value: UInt64, width: Int) {
        var digits = 1
        var probe = value
        while probe >= 10 {
            probe /= 10
            digits += 1
        }
        for _ in digits..<max(digits, width) { bytes.append(UInt8(ascii: "0")) }
        appendDecimal(value, negative: false)
    }

    private mutating func appendHexGroup(_ group: UInt16) {
        var started = false
        var shift = 12
        while shift >= 0 {
            let nibble = Int(group >> UInt16(shift) & 0xF)
            if nibble != 0 || started || shift == 0 {
                bytes.append(Self.hexDigit(UInt8(nibble)))
                started = true
            }
            shift -= 4
        }
    }

    private mutating func appendAddress(_ address: IPAddress) {
        switch address {
        case .v4(let v):
            appendDecimal(UInt64(v >> 24), negative: false)
            bytes.append(UInt8(ascii: "."))
            appendDecimal(UInt64(v >> 16 & 0xFF), negative: false)
            bytes.append(UInt8(ascii: "."))
            appendDecimal(UInt64(v >> 8 & 0xFF), negative: false)
            bytes.append(UInt8(ascii: "."))
            appendDecimal(UInt64(v & 0xFF), negative: false)
        case .v6(let hi, let lo):
            if hi == 0, lo >> 32 == 0xFFFF {
                ascii("::ffff:")
                appendAddress(.v4(UInt32(truncatingIfNeeded: lo)))
                return
            }
            func group(_ i: Int) -> UInt16 {
                let word = i < 4 ? hi : lo
                return UInt16(truncatingIfNeeded: word >> UInt64(48 - 16 * (i & 3)))
            }
            // RFC 5952 section 4.2: the longest run of two or more zero groups (the first on a tie)
            // becomes "::".
            var bestStart = -1, bestLength = 0, i = 0
            while i < 8 {
                if group(i) == 0 {
                    var j = i
                    while j < 8 && group(j) == 0 { j += 1 }
                    if j - i > bestLength {
                        bestStart = i
                        bestLength = j - i
                    }
                    i = j
                } else {
                    i += 1
                }
            }
            if bestLength < 2 { bestStart = 8 }
            var g = 0
            while g < 8 {
                if g == bestStart {
                    ascii("::")
                    g += bestLength
                    continue
                }
                if g > 0 && g != bestStart + bestLength { bytes.append(UInt8(ascii: ":")) }
                appendHexGroup(group(g))
                g += 1
            }
        }
    }

    /// The UTF-8 of a string with the RFC 8259 escapes; runs of plain bytes are copied at once.
    private mutating func appendEscaped(_ utf8: UnsafeBufferPointer<UInt8>) {
        var start = 0
        var i = 0
        let n = utf8.count
        while i < n {
            let byte = utf8[i]
            guard byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") else {
                i += 1
                continue
            }
            if i > start { bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[start..<i])) }
            bytes.append(UInt8(ascii: "\\"))
            switch byte {
            case UInt8(ascii: "\""): bytes.append(UInt8(ascii: "\""))
            case UInt8(ascii: "\\"): bytes.append(UInt8(ascii: "\\"))
            case 0x08: bytes.append(UInt8(ascii: "b"))
            case 0x09: bytes.append(UInt8(ascii: "t"))
            case 0x0A: bytes.append(UInt8(ascii: "n"))
            case 0x0C: bytes.append(UInt8(ascii: "f"))
            case 0x0D: bytes.append(UInt8(ascii: "r"))
            default:
                ascii("u00")
                bytes.append(Self.hexDigit(byte >> 4))
                bytes.append(Self.hexDigit(byte & 0xF))
            }
            i += 1
            start = i
        }
        if n > start { bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[start..<n])) }
    }
}

// MARK: Building blocks

extension String: TailcfgJSONWritable {
    public func writeJSON(to writer: inout TailcfgJSONWriter) { writer.string(self) }
}

extension Bool: TailcfgJSONWritable {
    public func writeJSON(to writer: inout TailcfgJSONWriter) { writer.bool(self) }
}

extension Int: TailcfgJSONWritable {
    public func writeJSON(to writer: inout TailcfgJSONWriter) { writer.integer(self) }
}

extension Int64: TailcfgJSONWritable {
    public func writeJSON(to writer: inout TailcfgJSONWriter) { writer.integer(self) }
}

extension UInt16: TailcfgJSONWritable {
    public func writeJSON(to writer: inout TailcfgJSONWriter) { writer.integer(Int64(self)) }
}

extension Double: TailcfgJSONWritable {
    public func writeJSON(to writer: inout TailcfgJSONWriter) throws { try writer.double(self) }
}

extension TailcfgTime: TailcfgJSONWritable {
    public func writeJSON(to writer: inout TailcfgJSONWriter) throws { try writer.time(self) }
}

extension IPAddress: TailcfgJSONWritable {
    public func writeJSON(to writer: inout TailcfgJSONWriter) { writer.ipAddress(self) }
}

extension IPPrefix: TailcfgJSONWritable {
    public func writeJSON(to writer: inout TailcfgJSONWriter) { writer.ipPrefix(self) }
}

extension AddrPort: TailcfgJSONWritable {
    public func writeJSON(to writer: inout TailcfgJSONWriter) { writer.addrPort(self) }
}

extension NodePublic: TailcfgJSONWritable {
    public func writeJSON(to writer: inout TailcfgJSONWriter) { writer.publicKey(self) }
}

extension MachinePublic: TailcfgJSONWritable {
    public func writeJSON(to writer: inout TailcfgJSONWriter) { writer.publicKey(self) }
}

extension DiscoPublic: TailcfgJSONWritable {
    public func writeJSON(to writer: inout TailcfgJSONWriter) { writer.publicKey(self) }
}

/// A nil element (in a dictionary of optionals) is `null`, as JSONEncoder writes it.
extension Optional: TailcfgJSONWritable where Wrapped: TailcfgJSONWritable {
    public func writeJSON(to writer: inout TailcfgJSONWriter) throws {
        if let self { try self.writeJSON(to: &writer) } else { writer.null() }
    }
}

extension Array: TailcfgJSONWritable where Element: TailcfgJSONWritable {
    public func writeJSON(to writer: inout TailcfgJSONWriter) throws {
        writer.beginArray()
        for element in self { try element.writeJSON(to: &writer) }
        writer.endArray()
    }
}

/// Members sorted by the UTF-8 bytes of their names, as JSONEncoder's `.sortedKeys`.
extension Dictionary: TailcfgJSONWritable where Key == String, Value: TailcfgJSONWritable {
    public func writeJSON(to writer: inout TailcfgJSONWriter) throws {
        writer.beginObject()
        for (name, value) in sorted(by: { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }) {
            writer.key(name)
            try value.writeJSON(to: &writer)
        }
        writer.endObject()
    }
}

extension JSONValue: TailcfgJSONWritable {
    public func writeJSON(to writer: inout TailcfgJSONWriter) throws {
        switch self {
        case .null: writer.null()
        case .bool(let b): writer.bool(b)
        case .number(let n): try writer.double(n)
        case .string(let s): writer.string(s)
        case .array(let a): try a.writeJSON(to: &writer)
        case .object(let o): try o.writeJSON(to: &writer)
        }
    }
}

extension TailcfgJSON {
    /// `value` as JSON through the hand-written writer: the bytes ``encode(_:)`` produces, faster.
    public static func write(_ value: some TailcfgJSONWritable, reservingCapacity capacity: Int = 4096) throws -> [UInt8] {
        var writer = TailcfgJSONWriter(reservingCapacity: capacity)
        try value.writeJSON(to: &writer)
        return writer.takeBytes()
    }
}
