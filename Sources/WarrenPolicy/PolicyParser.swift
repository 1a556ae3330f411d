import WarrenPacket
import WarrenTailcfg

/// Reads a policy file (HuJSON) into a `Policy`, rejecting what Tailscale's service rejects
/// with the message it gives. Validation that needs the tailnet (user domains) takes it.
public enum PolicyParser {
    /// Top-level fields Tailscale documents for the policy file (matched case-insensitively).
    static let topLevelFields: Set<String> = [
        "acls", "grants", "groups", "hosts", "tagowners", "tests", "sshtests", "ssh", "nodeattrs",
        "autoapprovers", "ipsets", "postures", "defaultsrcposture", "derpmap", "disableipv4",
        "onecgnatroute", "randomizeclientport", "attrconfig",
    ]

    public static func parse(_ text: String, tailnetDomain: String? = nil) throws(PolicyError) -> Policy {
        let root = try HuJSON.parse(text)
        var p = try parse(root, tailnetDomain: tailnetDomain)
        p.source = text
        return p
    }

    static func fail(_ message: String, _ at: SourcePosition) -> PolicyError {
        PolicyError(message, line: at.line, column: at.column)
    }

    /// A tag owner or an auto approver: a user (a login with `@`), a group or tag the policy defines, or an
    /// autogroup. Anything else (an address, a host name, `*`) is refused as headscale v2's parseOwner and
    /// parseAutoApprover refuse it, with their wording (`invalid owner format`, `invalid auto approver format`).
    static func checkOwnerLike(_ s: Located<String>, kind: String, tags: [String: [String]],
                               groups: [String: [String]]) throws(PolicyError) {
        let v = s.value
        if v.hasPrefix("group:") {
            guard groups[v] != nil else { throw fail("group not defined in policy: \"\(v)\"", s.position) }
        } else if v.hasPrefix("tag:") {
            guard tags[v] != nil else { throw fail("tag not found: \"\(v)\"", s.position) }
        } else if v.hasPrefix("autogroup:") || v.contains("@") {
            return
        } else {
            throw fail("invalid \(kind) format: \"\(v)\"", s.position)
        }
    }

    static func strings(_ node: HuJSONNode, field: String) throws(PolicyError) -> [String] {
        if node.isNull { return [] }
        guard let items = node.array else {
            throw fail("\(field): expected an array of strings", node.position)
        }
        var out: [String] = []
        for item in items {
            guard let s = item.string else { throw fail("\(field): expected a string", item.position) }
            out.append(s)
        }
        return out
    }

    static func locatedStrings(_ node: HuJSONNode, field: String) throws(PolicyError) -> [Located<String>] {
        if node.isNull { return [] }
        guard let items = node.array else {
            throw fail("\(field): expected an array of strings", node.position)
        }
        var out: [Located<String>] = []
        for item in items {
            guard let s = item.string else { throw fail("\(field): expected a string", item.position) }
            out.append(Located(s, at: item.position))
        }
        return out
    }

    /// The object's members by lower-cased name, with `#`-comment keys dropped and unknown names refused.
    static func fields(_ node: HuJSONNode, allowed: Set<String>, context: String) throws(PolicyError) -> [String: HuJSONNode] {
        guard let members = node.members else { throw fail("\(context): expected an object", node.position) }
        var out: [String: HuJSONNode] = [:]
        for m in members where !m.key.hasPrefix("#") {
            let k = m.key.lowercased()
            guard allowed.contains(k) else { throw fail("unknown field \"\(m.key)\"", m.keyPosition) }
            out[k] = m.value
        }
        return out
    }

    static func parseAliases(_ node: HuJSONNode?, field: String) throws(PolicyError) -> [Located<Alias>] {
        guard let node else { return [] }
        var out: [Located<Alias>] = []
        for s in try locatedStrings(node, field: field) {
            guard let a = Alias.parse(s.value) else {
                throw fail("\(field)=\"\(s.value)\": invalid alias", s.position)
            }
            out.append(Located(a, at: s.position))
        }
        return out
    }

    /// Ports: `*`, or a comma-separated list of `N` and `N-M`.
    static func parsePorts(_ text: String) -> Result<[PortRange], PolicyError> {
        if text == "*" { return .success([.all]) }
        var out: [PortRange] = []
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let bounds = part.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
            guard let first = UInt16(bounds[0]), bounds[0].allSatisfy({ $0.isASCII && $0.isNumber }) else {
                return .failure(PolicyError("port range \"\(text)\": invalid first integer"))
            }
            var last = first
            if bounds.count == 2 {
                guard let l = UInt16(bounds[1]), bounds[1].allSatisfy({ $0.isASCII && $0.isNumber }) else {
                    return .failure(PolicyError("port range \"\(text)\": invalid last integer"))
                }
                last = l
            }
            if first == 0 {
                return .failure(PolicyError("port range \"\(text)\": first port must be >0, or use '*' for wildcard"))
            }
            if last < first {
                return .failure(PolicyError("port range \"\(text)\": last port must be >= first port"))
            }
            out.append(PortRange(first: first, last: last))
        }
        return .success(out)
    }

    /// Splits `alias:ports` at the last colon (IPv6 addresses keep theirs).
    static func splitHostPort(_ s: String) -> (String, String)? {
        guard let colon = s.lastIndex(of: ":") else { return nil }
        var host = String(s[..<colon])
        let ports = String(s[s.index(after: colon)...])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host, ports)
    }

    static func parse(_ root: HuJSONNode, tailnetDomain: String?) throws(PolicyError) -> Policy {
        guard let members = root.members else { throw fail("policy: expected an object", root.position) }
        var p = Policy()
        var byName: [String: HuJSONNode] = [:]
        for m in members where !m.key.hasPrefix("#") {
            let k = m.key.lowercased()
            guard topLevelFields.contains(k) else { throw fail("unknown field \"\(m.key)\"", m.keyPosition) }
            byName[k] = m.value
        }

        // groups
        if let g = byName["groups"], !g.isNull {
            guard let gm = g.members else { throw fail("groups: expected an object", g.position) }
            for m in gm where !m.key.hasPrefix("#") {
                guard m.key.hasPrefix("group:") else {
                    throw fail("group \"\(m.key)\" must start with \"group:\"", m.keyPosition)
                }
                p.groups[m.key] = try strings(m.value, field: "groups[\"\(m.key)\"]")
            }
            // Groups may not contain groups; Tailscale reports the last group (by name) that does.
            for key in p.groups.keys.sorted(by: >) {
                for u in p.groups[key] ?? [] where u.hasPrefix("group:") {
                    throw fail("groups[\"\(key)\"]: \"\(u)\": group members cannot be recursive", g.position)
                }
            }
        }

        // hosts
        if let h = byName["hosts"], !h.isNull {
            guard let hm = h.members else { throw fail("hosts: expected an object", h.position) }
            for m in hm where !m.key.hasPrefix("#") {
                guard let v = m.value.string else { throw fail("hosts[\"\(m.key)\"]: expected a string", m.value.position) }
                guard let prefix = IPPrefix(v.trimmingSpaces) else {
                    throw fail("hosts[\"\(m.key)\"]: invalid IP address or prefix \"\(v)\"", m.value.position)
                }
                p.hosts[m.key] = IPSet(prefixes: [prefix])
                p.hostIsSingleAddress[m.key] = prefix.isSingleAddress
            }
        }

        // ipsets: lists of addresses, prefixes, ranges, hosts or other ipsets.
        if let s = byName["ipsets"], !s.isNull {
            guard let sm = s.members else { throw fail("ipsets: expected an object", s.position) }
            for m in sm where !m.key.hasPrefix("#") {
                var b = IPSetBuilder()
                for item in try locatedStrings(m.value, field: "ipsets[\"\(m.key)\"]") {
                    switch Alias.parse(item.value) {
                    case .prefix(let pr): b.add(pr)
                    case .range(let a, let c): b.add(IPSet.fromRange(a, c))
                    case .host(let name) where p.hosts[name] != nil: b.add(p.hosts[name]!)
                    case .ipset(let name) where p.ipsets[name] != nil: b.add(p.ipsets[name]!)
                    default: throw fail("ipsets[\"\(m.key)\"]: invalid element \"\(item.value)\"", item.position)
                    }
                }
                p.ipsets[m.key] = b.build()
            }
        }

        // tagOwners
        if let t = byName["tagowners"], !t.isNull {
            guard let tm = t.members else { throw fail("tagOwners: expected an object", t.position) }
            for m in tm where !m.key.hasPrefix("#") {
                guard m.key.hasPrefix("tag:") else { throw fail("tagOwners: \"\(m.key)\": tag must start with \"tag:\"", m.keyPosition) }
                let rest = m.key.dropFirst(4)
                guard let first = rest.first, first.isASCII, first.isLetter else {
                    throw fail("tagOwners[\"\(m.key)\"]: tag names must start with a letter, after 'tag:'", m.keyPosition)
                }
                p.tagOwners[m.key] = try strings(m.value, field: "tagOwners[\"\(m.key)\"]")
            }
            // An owner is a user, a group, another tag or an autogroup (Tailscale's own example owns tags with
            // autogroup:admin); what it names must exist. The checks are headscale v2's parseOwner and validate,
            // with its wording, and are made once every tag is known.
            for m in tm where !m.key.hasPrefix("#") {
                for owner in try locatedStrings(m.value, field: "tagOwners[\"\(m.key)\"]") {
                    try checkOwnerLike(owner, kind: "owner", tags: p.tagOwners, groups: p.groups)
                }
            }
        }

        // Network-wide options.
        func flag(_ key: String, _ name: String) throws(PolicyError) -> Bool {
            guard let n = byName[key], !n.isNull else { return false }
            guard case .bool(let b) = n.value else { throw fail("\(name): expected a boolean", n.position) }
            return b
        }
        p.randomizeClientPort = try flag("randomizeclientport", "randomizeClientPort")
        p.options.randomizeClientPort = p.randomizeClientPort
        p.options.disableIPv4 = try flag("disableipv4", "disableIPv4")
        if let n = byName["onecgnatroute"], !n.isNull {
            guard let v = n.string else { throw fail("OneCGNATRoute: expected a string", n.position) }
            p.options.oneCGNATRoute = v
        }
        if let n = byName["derpmap"], !n.isNull {
            guard n.members != nil else { throw fail("derpMap: expected an object", n.position) }
            p.options.derpMap = JSONValue(node: n)
        }
        p.hasAccessRules = byName["acls"] != nil || byName["grants"] != nil

        // acls
        if let a = byName["acls"], !a.isNull {
            guard let items = a.array else { throw fail("acls: expected an array", a.position) }
            for item in items {
                p.acls.append(try parseACL(item))
            }
        }

        // grants
        if let g = byName["grants"], !g.isNull {
            guard let items = g.array else { throw fail("grants: expected an array", g.position) }
            for item in items {
                p.grants.append(try parseGrant(item))
            }
        }

        // ssh
        if let s = byName["ssh"], !s.isNull {
            guard let items = s.array else { throw fail("ssh: expected an array", s.position) }
            for item in items {
                p.ssh.append(try parseSSH(item))
            }
        }

        // nodeAttrs
        if let n = byName["nodeattrs"], !n.isNull {
            guard let items = n.array else { throw fail("nodeAttrs: expected an array", n.position) }
            for item in items {
                let f = try fields(item, allowed: ["target", "attr", "app", "ippool"], context: "nodeAttrs")
                var rule = NodeAttrRule(targets: try parseAliases(f["target"], field: "target"),
                                        attrs: try f["attr"].map { n throws(PolicyError) in try strings(n, field: "attr") } ?? [],
                                        app: nil, ipPool: [], position: item.position)
                if let app = f["app"], !app.isNull { rule.app = try parseCapMap(app) }
                if let pool = f["ippool"] {
                    for s in try locatedStrings(pool, field: "ipPool") {
                        guard let pr = IPPrefix(s.value) else { throw fail("ipPool: invalid prefix \"\(s.value)\"", s.position) }
                        rule.ipPool.append(pr)
                    }
                }
                p.nodeAttrs.append(rule)
            }
        }

        // autoApprovers
        if let aa = byName["autoapprovers"], !aa.isNull {
            let f = try fields(aa, allowed: ["routes", "exitnode", "services"], context: "autoApprovers")
            if let routes = f["routes"], !routes.isNull {
                guard let rm = routes.members else { throw fail("autoApprovers.routes: expected an object", routes.position) }
                for m in rm where !m.key.hasPrefix("#") {
                    guard let prefix = IPPrefix(m.key) else {
                        throw fail("autoApprovers.routes: invalid prefix \"\(m.key)\"", m.keyPosition)
                    }
                    for approver in try locatedStrings(m.value, field: "autoApprovers.routes[\"\(m.key)\"]") {
                        try checkOwnerLike(approver, kind: "auto approver", tags: p.tagOwners, groups: p.groups)
                    }
                    let approvers = try parseAliases(m.value, field: "autoApprovers.routes[\"\(m.key)\"]").map(\.value)
                    p.autoApproverRoutes.append((prefix, approvers))
                }
            }
            if let exit = f["exitnode"] {
                for approver in try locatedStrings(exit, field: "autoApprovers.exitNode") {
                    try checkOwnerLike(approver, kind: "auto approver", tags: p.tagOwners, groups: p.groups)
                }
                p.autoApproverExitNode = try parseAliases(exit, field: "autoApprovers.exitNode").map(\.value)
            }
        }

        // tests
        if let t = byName["tests"], !t.isNull {
            guard let items = t.array else { throw fail("tests: expected an array", t.position) }
            for item in items {
                let f = try fields(item, allowed: ["src", "srcpostureattrs", "proto", "accept", "deny"], context: "tests")
                p.tests.append(PolicyTest(
                    source: f["src"]?.string ?? "",
                    proto: f["proto"]?.string ?? "",
                    accept: try f["accept"].map { n throws(PolicyError) in try strings(n, field: "accept") } ?? [],
                    deny: try f["deny"].map { n throws(PolicyError) in try strings(n, field: "deny") } ?? [],
                    position: item.position))
            }
        }

        // sshTests
        if let t = byName["sshtests"], !t.isNull {
            guard let items = t.array else { throw fail("sshTests: expected an array", t.position) }
            for item in items {
                let f = try fields(item, allowed: ["src", "srcpostureattrs", "dst", "accept", "check", "deny"], context: "sshTests")
                p.sshTests.append(SSHPolicyTest(
                    source: f["src"]?.string ?? "",
                    destinations: try f["dst"].map { n throws(PolicyError) in try strings(n, field: "dst") } ?? [],
                    accept: try f["accept"].map { n throws(PolicyError) in try strings(n, field: "accept") } ?? [],
                    check: try f["check"].map { n throws(PolicyError) in try strings(n, field: "check") } ?? [],
                    deny: try f["deny"].map { n throws(PolicyError) in try strings(n, field: "deny") } ?? [],
                    position: item.position))
            }
        }

        try PolicyValidator(policy: p, tailnetDomain: tailnetDomain).validate()
        return p
    }

    static func parseACL(_ item: HuJSONNode) throws(PolicyError) -> ACLRule {
        let f = try fields(item, allowed: ["action", "proto", "src", "dst", "users", "ports", "srcposture"], context: "acls")
        let actionText = f["action"]?.string ?? ""
        if actionText != "accept" {
            throw fail("action=\"\(actionText)\" is not supported", f["action"]?.position ?? item.position)
        }
        var proto = IPProtocolSpec.any
        if let pn = f["proto"], let ps = pn.string {
            guard let spec = IPProtocolSpec.parse(ps) else { throw fail("proto=\"\(ps)\": unknown protocol", pn.position) }
            proto = spec
        }
        let srcNode = f["src"] ?? f["users"]
        let sources = try parseAliases(srcNode, field: "src")
        var dsts: [ACLDestination] = []
        let dstNode = f["dst"] ?? f["ports"]
        for s in try dstNode.map { n throws(PolicyError) in try locatedStrings(n, field: "dst") } ?? [] {
            let text = s.value.trimmingSpaces
            guard let (host, portText) = splitHostPort(text) else {
                throw fail("dst=\"\(s.value)\": missing port", s.position)
            }
            let ports: [PortRange]
            switch parsePorts(portText) {
            case .success(let pr): ports = pr
            case .failure(let e): throw fail("dst=\"\(s.value)\": \(e.message)", s.position)
            }
            guard let alias = Alias.parse(host) else { throw fail("dst=\"\(s.value)\": invalid alias", s.position) }
            dsts.append(ACLDestination(alias: alias, ports: ports, text: s.value, position: s.position))
        }
        return ACLRule(action: actionText, proto: proto, sources: sources, destinations: dsts, position: item.position)
    }

    /// An `app` object: capability name to its values as written (null stays null, `[]` stays `[]`).
    static func parseCapMap(_ node: HuJSONNode) throws(PolicyError) -> PeerCapMap {
        guard let members = node.members else { throw fail("app: expected an object", node.position) }
        var out: PeerCapMap = [:]
        for m in members {
            guard let values = m.value.array else {
                if m.value.isNull { out[m.key] = .some(nil); continue }
                throw fail("app[\"\(m.key)\"]: expected an array", m.value.position)
            }
            out[m.key] = values.map(JSONValue.init(node:))
        }
        return out
    }

    static func parseGrant(_ item: HuJSONNode) throws(PolicyError) -> GrantRule {
        let f = try fields(item, allowed: ["src", "dst", "ip", "app", "via", "srcposture"], context: "grants")
        var ip: [ProtocolPorts] = []
        for s in try f["ip"].map { n throws(PolicyError) in try locatedStrings(n, field: "ip") } ?? [] {
            let text = s.value
            if text == "*" {
                ip.append(ProtocolPorts(proto: .any, ports: [.all]))
                continue
            }
            let parts = text.split(separator: ":", omittingEmptySubsequences: false)
            var proto = IPProtocolSpec.any
            var portText = text
            if parts.count == 2 {
                guard let spec = IPProtocolSpec.parse(String(parts[0])), String(parts[0]) != "*" else {
                    throw fail("proto \"\(parts[0])\" not known", s.position)
                }
                proto = spec
                portText = String(parts[1])
            } else if parts.count > 2 {
                throw fail("expected only one colon in Internet protocol and port type", s.position)
            }
            switch parsePorts(portText) {
            case .success(let pr): ip.append(ProtocolPorts(proto: proto, ports: pr))
            case .failure(let e): throw fail(e.message, s.position)
            }
        }
        var via: [String] = []
        for s in try f["via"].map { n throws(PolicyError) in try locatedStrings(n, field: "via") } ?? [] {
            guard s.value.hasPrefix("tag:") else { throw fail("via can only be a tag", s.position) }
            via.append(s.value)
        }
        var app: PeerCapMap?
        if let a = f["app"], !a.isNull { app = try parseCapMap(a) }
        return GrantRule(sources: try parseAliases(f["src"], field: "src"),
                         destinations: try parseAliases(f["dst"], field: "dst"),
                         ip: ip, app: app, via: via, position: item.position)
    }

    static func parseSSH(_ item: HuJSONNode) throws(PolicyError) -> SSHPolicyRule {
        let f = try fields(item, allowed: ["action", "src", "dst", "users", "checkperiod", "acceptenv", "srcposture"], context: "ssh")
        let actionText = (f["action"]?.string ?? "").trimmingSpaces
        let action: SSHPolicyRule.Action
        switch actionText {
        case "": throw fail("action must be specified", item.position)
        case "accept": action = .accept
        case "check": action = .check
        default: throw fail("\"\(actionText)\" is not a valid action", f["action"]?.position ?? item.position)
        }
        var users: [String] = []
        if let u = f["users"], !u.isNull {
            users = try strings(u, field: "users").map { $0.trimmingSpaces }
        }
        if users.isEmpty { throw fail("users must be specified", item.position) }
        for u in users where u.isEmpty || u == "*" {
            throw fail("user \"\(u)\" is not valid", f["users"]?.position ?? item.position)
        }
        var checkPeriod: Int?
        if let cp = f["checkperiod"], let text = cp.string {
            if text == "always" {
                checkPeriod = 0
            } else {
                guard let seconds = GoDuration.parseSeconds(text) else {
                    throw fail("time: invalid duration \"\(text)\"", cp.position)
                }
                if seconds < 0 {
                    throw fail("checkPeriod \(GoDuration.format(seconds)) must be a positive duration", cp.position)
                }
                if seconds > 168 * 3600 {
                    throw fail("checkPeriod \(GoDuration.format(seconds)) is above the max (168h)", cp.position)
                }
                checkPeriod = seconds
            }
        }
        var acceptEnv: [String]?
        if let e = f["acceptenv"], !e.isNull { acceptEnv = try strings(e, field: "acceptEnv") }
        let sources = try parseAliases(f["src"], field: "src")
        var dsts: [Located<Alias>] = []
        for s in try f["dst"].map { n throws(PolicyError) in try locatedStrings(n, field: "dst") } ?? [] {
            guard let a = Alias.parse(s.value) else { throw fail("invalid dst \"\(s.value)\"", s.position) }
            dsts.append(Located(a, at: s.position))
        }
        return SSHPolicyRule(action: action, sources: sources, destinations: dsts, users: users,
                             checkPeriod: checkPeriod, acceptEnv: acceptEnv, position: item.position)
    }
}

extension JSONValue {
    init(node: HuJSONNode) {
        switch node.value {
        case .null: self = .null
        case .bool(let b): self = .bool(b)
        case .number(let n): self = .number(Double(n) ?? 0)
        case .string(let s): self = .string(s)
        case .array(let a): self = .array(a.map(JSONValue.init(node:)))
        case .object(let m): self = .object(Dictionary(m.map { ($0.key, JSONValue(node: $0.value)) }, uniquingKeysWith: { a, _ in a }))
        }
    }
}

extension IPSet {
    static func fromRange(_ a: IPAddress, _ b: IPAddress) -> IPSet {
        let (va, ka) = key(a), (vb, kb) = key(b)
        var s = IPSet()
        guard va == vb, ka <= kb else { return s }
        if va { s.v6 = [ka...kb] } else { s.v4 = [ka...kb] }
        return s
    }
}

/// Go's time.ParseDuration for whole seconds, and time.Duration's String for printing.
enum GoDuration {
    static func parseSeconds(_ text: String) -> Int? {
        var s = Substring(text)
        var negative = false
        if s.first == "-" || s.first == "+" { negative = s.first == "-"; s.removeFirst() }
        if s == "0" { return 0 }
        guard !s.isEmpty else { return nil }
        var totalNanos: Double = 0
        while !s.isEmpty {
            var number = ""
            while let c = s.first, c.isASCII, c.isNumber || c == "." { number.append(c); s.removeFirst() }
            guard !number.isEmpty, let v = Double(number) else { return nil }
            var unit = ""
            while let c = s.first, !(c.isASCII && (c.isNumber || c == ".")) { unit.append(c); s.removeFirst() }
            let scale: Double
            switch unit {
            case "ns": scale = 1
            case "us", "µs", "μs": scale = 1e3
            case "ms": scale = 1e6
            case "s": scale = 1e9
            case "m": scale = 60e9
            case "h": scale = 3600e9
            default: return nil
            }
            totalNanos += v * scale
            guard totalNanos < 9.3e18 else { return nil }
        }
        let seconds = Int((totalNanos / 1e9).rounded(.down))
        return negative ? -seconds : seconds
    }

    static func format(_ seconds: Int) -> String {
        if seconds == 0 { return "0s" }
        let sign = seconds < 0 ? "-" : ""
        let a = abs(seconds)
        let h = a / 3600, m = (a % 3600) / 60, s = a % 60
        if h > 0 { return "\(sign)\(h)h\(m)m\(s)s" }
        if m > 0 { return "\(sign)\(m)m\(s)s" }
        return "\(sign)\(s)s"
    }
}
