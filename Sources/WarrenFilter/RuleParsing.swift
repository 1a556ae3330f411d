import WarrenPacket
import WarrenTailcfg

/// A problem with one entry of one filter rule. As in Tailscale, a bad entry is skipped and
/// the rest of the rule and the other rules still apply.
public struct FilterRuleIssue: Error, Hashable, Sendable, CustomStringConvertible {
    public var ruleIndex: Int
    /// "SrcIPs", "DstPorts" or "CapGrant".
    public var field: String
    public var entry: String
    public var message: String

    public var description: String { "rule \(ruleIndex) \(field) \"\(entry)\": \(message)" }
}

struct EntryError: Error {
    var message: String
    init(_ message: String) { self.message = message }
}

/// What one SrcIPs or DstPorts IP entry denotes.
enum IPSetEntry: Equatable {
    /// Inclusive ranges, each of one family.
    case ranges([(IPVersion, AddressRange)])
    /// "cap:<name>": sources holding a node capability.
    case capability(String)

    static func == (a: IPSetEntry, b: IPSetEntry) -> Bool {
        switch (a, b) {
        case (.capability(let x), .capability(let y)): return x == y
        case (.ranges(let x), .ranges(let y)): return x.elementsEqual(y) { $0.0 == $1.0 && $0.1 == $1.1 }
        default: return false
        }
    }

    /// Parses the forms tailcfg.FilterRule documents for SrcIPs (and DstPorts' IP):
    /// an address, "*" (every IPv4 and IPv6 address), a CIDR with no host bits set, an
    /// inclusive range "a-b" of one family, or "cap:<capability>".
    static func parse(_ text: String) -> Result<IPSetEntry, EntryError> {
        if text == "*" {
            return .success(.ranges([
                (.v4, AddressRange(first: AddressKey(hi: 0, lo: 0), last: AddressKey(hi: 0, lo: 0xFFFF_FFFF))),
                (.v6, AddressRange(first: AddressKey(hi: 0, lo: 0), last: AddressKey(hi: .max, lo: .max))),
            ]))
        }
        if text.hasPrefix("cap:") {
            return .success(.capability(String(text.dropFirst(4))))
        }
        if text.contains("/") {
            guard let prefix = IPPrefix(text) else { return .failure(EntryError("invalid CIDR")) }
            guard prefix.address == prefix.address.masked(to: prefix.bits) else {
                return .failure(EntryError("contains non-network bits set"))
            }
            return .success(.ranges([(prefix.address.version, AddressRange(prefix))]))
        }
        let dashes = text.filter { $0 == "-" }.count
        if dashes == 1, let dash = text.firstIndex(of: "-") {
            guard let first = IPAddress(text[..<dash]), let last = IPAddress(text[text.index(after: dash)...]) else {
                return .failure(EntryError("invalid IP range"))
            }
            guard first.version == last.version, first <= last else { return .failure(EntryError("invalid IP range")) }
            return .success(.ranges([(first.version, AddressRange(first: AddressKey(first), last: AddressKey(last)))]))
        }
        guard let address = IPAddress(text) else { return .failure(EntryError("invalid IP address")) }
        let key = AddressKey(address)
        return .success(.ranges([(address.version, AddressRange(first: key, last: key))]))
    }
}

/// A set of IP protocol numbers (0 to 255).
struct ProtocolSet: Hashable, Sendable {
    var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)

    /// TCP, UDP, ICMPv4 and ICMPv6: what an empty IPProto means.
    static let defaults: ProtocolSet = {
        var set = ProtocolSet()
        for p in [IPProtocol.tcp, .udp, .icmpv4, .icmpv6] { set.insert(p.rawValue) }
        return set
    }()

    /// From a rule's IPProto: nil or empty gives the defaults; numbers outside 0...255 are ignored.
    init(ipProto: [Int]?) {
        guard let list = ipProto, !list.isEmpty else {
            self = .defaults
            return
        }
        for n in list where (0...255).contains(n) { insert(UInt8(n)) }
    }

    init() {}

    mutating func insert(_ p: UInt8) {
        let bit = UInt64(1) << UInt64(p & 63)
        switch p >> 6 {
        case 0: words.0 |= bit
        case 1: words.1 |= bit
        case 2: words.2 |= bit
        default: words.3 |= bit
        }
    }

    @inline(__always)
    func contains(_ p: UInt8) -> Bool {
        let word: UInt64
        switch p >> 6 {
        case 0: word = words.0
        case 1: word = words.1
        case 2: word = words.2
        default: word = words.3
        }
        return word >> UInt64(p & 63) & 1 != 0
    }

    static func == (a: ProtocolSet, b: ProtocolSet) -> Bool { a.words == b.words }
    func hash(into hasher: inout Hasher) {
        hasher.combine(words.0); hasher.combine(words.1); hasher.combine(words.2); hasher.combine(words.3)
    }
}
