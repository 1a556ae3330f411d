import WarrenPacket
import WarrenTailcfg

/// A name for a set of nodes or addresses, as written in a policy's `src`, `dst`,
/// `target`, owner and approver lists.
public enum Alias: Hashable, Sendable, CustomStringConvertible {
    /// `*`: every Tailscale address (and, as a source, every approved subnet route).
    case wildcard
    /// A user by login (`alice@example.com`, or `alice@` for a bare name).
    case user(String)
    /// Every user whose login is in a domain: `user:*@example.com` (the domain is stored).
    case userDomain(String)
    case group(String)
    case tag(String)
    /// A name from `hosts`.
    case host(String)
    /// An IP set from `ipsets` (`ipset:name`).
    case ipset(String)
    /// An address or CIDR prefix.
    case prefix(IPPrefix)
    /// An inclusive address range `first-last`.
    case range(IPAddress, IPAddress)
    case autogroup(String)

    public var description: String {
        switch self {
        case .wildcard: return "*"
        case .userDomain(let d): return "user:*@" + d
        case .user(let s), .group(let s), .tag(let s), .host(let s), .ipset(let s), .autogroup(let s): return s
        case .prefix(let p): return p.isSingleAddress ? p.address.description : p.description
        case .range(let a, let b): return "\(a)-\(b)"
        }
    }

    /// Parses an alias the way Tailscale reads it: an address or prefix first, then by prefix word.
    public static func parse(_ raw: String) -> Alias? {
        let s = raw.trimmingSpaces
        if let p = IPPrefix(s) { return .prefix(p) }
        if let dash = s.firstIndex(of: "-"), !s.contains(":") || s.contains("."),
           let a = IPAddress(s[..<dash]), let b = IPAddress(s[s.index(after: dash)...]), a.version == b.version {
            return .range(a, b)
        }
        if s.contains(":"), s.contains("-"), let dash = s.lastIndex(of: "-"),
           let a = IPAddress(s[..<dash]), let b = IPAddress(s[s.index(after: dash)...]), a.version == b.version {
            return .range(a, b)
        }
        if s == "*" { return .wildcard }
        if s.hasPrefix("user:") {
            let rest = s.dropFirst("user:".count)
            if rest.hasPrefix("*@") { return rest.count > 2 ? .userDomain(String(rest.dropFirst(2))) : nil }
            return rest.contains("@") ? .user(String(rest)) : nil
        }
        if s.contains("@") { return .user(s) }
        if s.hasPrefix("group:") { return .group(s) }
        if s.hasPrefix("tag:") { return .tag(s) }
        if s.hasPrefix("autogroup:") { return .autogroup(s) }
        if s.hasPrefix("ipset:") { return .ipset(s) }
        if !s.contains(":") && !s.isEmpty { return .host(s) }
        return nil
    }

    var isAutogroupSelf: Bool { self == .autogroup("autogroup:self") }
}

/// A value with where it was written.
public struct Located<Value: Sendable>: Sendable {
    public var value: Value
    public var position: SourcePosition

    public init(_ value: Value, at position: SourcePosition) {
        self.value = value
        self.position = position
    }
}

extension Located: Equatable where Value: Equatable {}
extension Located: Hashable where Value: Hashable {}

/// A protocol named in `proto` or a grant's `ip`: nil means all (TCP, UDP, ICMP).
public struct IPProtocolSpec: Hashable, Sendable {
    /// IANA numbers; empty means "any".
    public var numbers: [Int]
    public var name: String

    public static let any = IPProtocolSpec(numbers: [], name: "")

    static let names: [String: Int] = [
        "icmp": 1, "igmp": 2, "ipv4": 4, "ip-in-ip": 4, "tcp": 6, "egp": 8, "igp": 9, "udp": 17,
        "gre": 47, "esp": 50, "ah": 51, "ipv6-icmp": 58, "sctp": 132, "fc": 133,
    ]

    /// Whether the protocol has ports (only these may name specific ports).
    public var hasPorts: Bool { numbers.isEmpty || numbers.allSatisfy { [6, 17, 132].contains($0) } }

    static func parse(_ raw: String) -> IPProtocolSpec? {
        let s = raw.lowercased()
        if s.isEmpty || s == "*" { return .any }
        if let n = names[s] { return IPProtocolSpec(numbers: [n], name: s) }
        if let n = Int(s), n >= 0, n <= 255, !(s.count > 1 && s.hasPrefix("0")), s.allSatisfy(\.isASCII) {
            return IPProtocolSpec(numbers: [n], name: s)
        }
        return nil
    }
}

/// A destination with ports (`alias:ports`) in an ACL.
public struct ACLDestination: Hashable, Sendable {
    public var alias: Alias
    public var ports: [PortRange]
    public var text: String
    public var position: SourcePosition
}

public struct ACLRule: Sendable {
    public var action: String
    public var proto: IPProtocolSpec
    public var sources: [Located<Alias>]
    public var destinations: [ACLDestination]
    public var position: SourcePosition
}

/// One `ip` entry of a grant: a protocol and ports.
public struct ProtocolPorts: Hashable, Sendable {
    public var proto: IPProtocolSpec
    public var ports: [PortRange]
}

public struct GrantRule: Sendable {
    public var sources: [Located<Alias>]
    public var destinations: [Located<Alias>]
    public var ip: [ProtocolPorts]
    /// Capability name to its values (nil: written as null), nil when the grant has no `app`.
    public var app: PeerCapMap?
    public var via: [String]
    public var position: SourcePosition
}

public struct SSHPolicyRule: Sendable {
    public enum Action: String, Sendable { case accept, check }
    public var action: Action
    public var sources: [Located<Alias>]
    public var destinations: [Located<Alias>]
    public var users: [String]
    /// Seconds; nil when absent. `always` is 0.
    public var checkPeriod: Int?
    public var acceptEnv: [String]?
    public var position: SourcePosition
}

public struct NodeAttrRule: Sendable {
    public var targets: [Located<Alias>]
    public var attrs: [String]
    public var app: PeerCapMap?
    public var ipPool: [IPPrefix]
    public var position: SourcePosition
}

public struct PolicyTest: Sendable {
    public var source: String
    public var proto: String
    public var accept: [String]
    public var deny: [String]
    public var position: SourcePosition
}

public struct SSHPolicyTest: Sendable {
    public var source: String
    public var destinations: [String]
    public var accept: [String]
    public var check: [String]
    public var deny: [String]
    public var position: SourcePosition
}

/// Network-wide settings that live in the policy file: `randomizeClientPort` (nodes pick random
/// WireGuard ports; sent as the `randomize-client-port` node capability), `disableIPv4` (nodes get no
/// IPv4 address), `OneCGNATRoute` (how clients route 100.64.0.0/10) and `derpMap` (the tailnet's own
/// DERP map, merged into the default one by the server).
public struct TailnetOptions: Sendable, Equatable {
    public var randomizeClientPort = false
    public var disableIPv4 = false
    public var oneCGNATRoute: String?
    public var derpMap: JSONValue?

    public init() {}
}

/// A parsed and validated policy file.
public struct Policy: Sendable {
    public var groups: [String: [String]] = [:]
    public var hosts: [String: IPSet] = [:]
    public var hostIsSingleAddress: [String: Bool] = [:]
    public var ipsets: [String: IPSet] = [:]
    public var tagOwners: [String: [String]] = [:]
    public var acls: [ACLRule] = []
    public var grants: [GrantRule] = []
    public var ssh: [SSHPolicyRule] = []
    public var nodeAttrs: [NodeAttrRule] = []
    public var autoApproverRoutes: [(prefix: IPPrefix, approvers: [Alias])] = []
    public var autoApproverExitNode: [Alias] = []
    public var tests: [PolicyTest] = []
    public var sshTests: [SSHPolicyTest] = []
    public var randomizeClientPort = false
    /// The network-wide settings the file holds (not access control).
    public var options = TailnetOptions()
    /// Whether the file had `acls` or `grants` at all (without both, everything is allowed).
    public var hasAccessRules = false
    /// The source text the policy came from.
    public var source: String = ""
}

extension StringProtocol {
    var trimmingSpaces: String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" || f == "\n" || f == "\r" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" || l == "\n" || l == "\r" { s.removeLast() }
        return String(s)
    }
}
