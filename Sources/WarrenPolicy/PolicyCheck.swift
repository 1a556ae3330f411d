import WarrenPacket
import WarrenTailcfg

/// A policy read, validated and tested against a tailnet, as Tailscale's service does on save.
public struct PolicyCheck: Sendable {
    public let policy: Policy
    /// Problems found by the policy's `tests` and `sshTests` (empty when all pass).
    public let testFailures: [PolicyError]

    /// Parses and validates `text`, then runs its tests against `tailnet`.
    /// Throws the first problem; failing tests throw "test(s) failed" at the first failing test.
    public init(text: String, tailnet: Tailnet) throws(PolicyError) {
        let policy = try PolicyParser.parse(text, tailnetDomain: tailnet.domain)
        self.policy = policy
        let failures = PolicyTestRunner(policy: policy, tailnet: tailnet).run()
        self.testFailures = failures
        if let first = failures.first {
            throw PolicyError("test(s) failed", line: first.line, column: first.column)
        }
    }
}

/// Runs a policy's `tests` and `sshTests` against a tailnet: each test names a source and
/// destinations that must (accept) or must not (deny) be reachable.
public struct PolicyTestRunner: Sendable {
    public var policy: Policy
    public var tailnet: Tailnet

    public init(policy: Policy, tailnet: Tailnet) {
        self.policy = policy
        self.tailnet = tailnet
    }

    /// One problem per failing test, located at the test, evaluated on ``PolicyEngine``: the compiler the server
    /// runs, so a policy's tests judge what nodes will receive.
    public func run() -> [PolicyError] {
        guard !policy.tests.isEmpty || !policy.sshTests.isEmpty else { return [] }
        return run(on: PolicyEngine(policy: policy, tailnet: tailnet))
    }

    /// The same tests judged by the reference compiler (``PolicyCompiler``): the conformance suite checks that both
    /// judge every capture's tests alike.
    public func runOnReference() -> [PolicyError] {
        guard !policy.tests.isEmpty || !policy.sshTests.isEmpty else { return [] }
        return run(on: PolicyCompiler(policy: policy, tailnet: tailnet))
    }

    /// The same tests evaluated on another compiler of the same semantics (``PolicyCompiler``, the test oracle).
    func run(on compiler: some PolicySemantics) -> [PolicyError] {
        var failures: [PolicyError] = []
        if !policy.tests.isEmpty {
            let matchers = compiler.allMatchers()
            for (i, t) in policy.tests.enumerated() {
                if let problem = runTest(t, matchers: matchers, compiler: compiler) {
                    failures.append(PolicyError("test \(i): \(problem)", line: t.position.line, column: t.position.column))
                }
            }
        }
        for (i, t) in policy.sshTests.enumerated() {
            if let problem = runSSHTest(t, compiler: compiler) {
                failures.append(PolicyError("sshTest \(i): \(problem)", line: t.position.line, column: t.position.column))
            }
        }
        return failures
    }

    /// The addresses a test's `src` stands for; nil when it names nothing known.
    func sourceAddresses(_ text: String, compiler: some PolicySemantics) -> (Alias, [IPAddress])? {
        guard let alias = Alias.parse(text), !text.isEmpty else { return nil }
        switch alias {
        case .tag(let t) where policy.tagOwners[t] == nil: return nil
        case .group(let g) where policy.groups[g] == nil: return nil
        case .host(let h) where policy.hosts[h] == nil: return nil
        case .autogroup(let g) where !["autogroup:member", "autogroup:tagged"].contains(g): return nil
        case .wildcard, .ipset: return nil
        case .prefix(let p) where !p.isSingleAddress: return nil
        default: break
        }
        let set = compiler.resolve(alias)
        return (alias, set.addresses.count <= 1 << 16 ? set.addresses : [])
    }

    func runTest(_ t: PolicyTest, matchers: [CompiledRule], compiler: some PolicySemantics) -> String? {
        if t.accept.isEmpty && t.deny.isEmpty { return "test must have at least one of \"accept\" or \"deny\"" }
        guard let (srcAlias, srcIPs) = sourceAddresses(t.source, compiler: compiler) else {
            return "unknown or invalid src \"\(t.source)\""
        }
        let proto: Int
        if t.proto.isEmpty {
            proto = 6
        } else if let spec = IPProtocolSpec.parse(t.proto), spec.numbers.count == 1, [6, 17, 132].contains(spec.numbers[0]) {
            proto = spec.numbers[0]
        } else {
            return "test protocol must be tcp, udp, sctp, or empty: \"\(t.proto)\""
        }
        for (list, wantAllowed) in [(t.accept, true), (t.deny, false)] {
            for dst in list {
                guard let (ips, port) = destination(dst, source: srcAlias, compiler: compiler) else {
                    return "invalid destination \"\(dst)\""
                }
                let allowed = !srcIPs.isEmpty && !ips.isEmpty && srcIPs.allSatisfy { s in
                    ips.allSatisfy { d in Self.allows(matchers, from: s, to: d, port: port, proto: proto) }
                }
                if allowed != wantAllowed {
                    return "\(wantAllowed ? "accept" : "deny") \"\(dst)\" from \"\(t.source)\" failed"
                }
            }
        }
        return nil
    }

    /// A test destination: one host (or a user's, tag's or autogroup:self's nodes) and one port.
    func destination(_ text: String, source: Alias, compiler: some PolicySemantics) -> ([IPAddress], UInt16)? {
        guard let (host, portText) = PolicyParser.splitHostPort(text.trimmingSpaces),
              let port = UInt16(portText), port > 0, portText.allSatisfy({ $0.isASCII && $0.isNumber }),
              !host.contains("/"), let alias = Alias.parse(host) else { return nil }
        switch alias {
        case .wildcard, .autogroup("autogroup:internet"), .ipset, .range: return nil
        case .tag(let t) where policy.tagOwners[t] == nil: return nil
        case .group(let g) where policy.groups[g] == nil: return nil
        case .host(let h):
            guard policy.hostIsSingleAddress[h] == true, let set = policy.hosts[h] else { return nil }
            return (set.addresses, port)
        case .autogroup("autogroup:self"):
            return (compiler.resolve(source).addresses, port)
        default:
            return (compiler.resolve(alias).addresses, port)
        }
    }

    static func allows(_ rules: [CompiledRule], from src: IPAddress, to dst: IPAddress, port: UInt16, proto: Int) -> Bool {
        for r in rules where !r.isCapRule && r.srcSet.contains(src) {
            if let p = r.proto, !p.contains(proto) { continue }
            if r.proto == nil && ![6, 17, 1, 58].contains(proto) { continue }
            for d in r.dsts where d.ports.first <= port && port <= d.ports.last && d.set.contains(dst) {
                return true
            }
        }
        return false
    }

    func runSSHTest(_ t: SSHPolicyTest, compiler: some PolicySemantics) -> String? {
        if t.accept.isEmpty && t.check.isEmpty && t.deny.isEmpty {
            return "SSH test must have at least one of \"accept\", \"check\" or \"deny\""
        }
        guard let (_, srcIPs) = sourceAddresses(t.source, compiler: compiler), !srcIPs.isEmpty else {
            return "unknown or invalid src \"\(t.source)\""
        }
        guard !t.destinations.isEmpty else { return "SSH test must have at least one dst" }
        var dstNodes: [TailnetNode] = []
        for d in t.destinations {
            guard let alias = Alias.parse(d) else { return "invalid dst \"\(d)\"" }
            let set = compiler.resolve(alias)
            let nodes = compiler.allNodes.filter { $0.addresses.contains(where: set.contains) }
            if nodes.isEmpty { return "dst \"\(d)\" matches no node" }
            dstNodes += nodes
        }
        for (users, want) in [(t.accept, true), (t.check, true), (t.deny, false)] {
            for user in users {
                if user.isEmpty { return "user \"\" is not valid" }
                let allowed = dstNodes.allSatisfy { node in
                    let rules = compiler.sshPolicy(node: node)?.rules ?? []
                    return srcIPs.allSatisfy { ip in Self.sshAllows(rules, from: ip, user: user) }
                }
                if allowed != want { return "\(want ? "accept" : "deny") \"\(user)\" from \"\(t.source)\" failed" }
            }
        }
        return nil
    }

    /// Whether the first rule that names the source and the login lets it in.
    static func sshAllows(_ rules: [SSHRule], from ip: IPAddress, user: String) -> Bool {
        for r in rules where r.principals.contains(where: { $0.nodeIP == ip.description || $0.any == true }) {
            if let mapped = r.sshUsers[user] ?? r.sshUsers["*"] {
                if mapped.isEmpty { continue }
                return r.action?.reject != true
            }
        }
        return false
    }
}

/// What evaluating a policy's tests and explaining a flow need from a compiler. ``PolicyEngine`` (what the server
/// and the CLI run) and ``PolicyCompiler`` (the whole-tailnet reference, kept as a test oracle) both provide it
/// from the same building blocks (``PolicyCompiler/compile(_:resolver:)``, `selfRules`, `viaRules`, `reduce`).
protocol PolicySemantics {
    /// The addresses an alias stands for in the current tailnet.
    func resolve(_ alias: Alias) -> IPSet
    /// Every rule of the policy, before it is reduced to one node (autogroup:self and via rules for every owner).
    func allMatchers() -> [CompiledRule]
    /// The SSH policy one node receives.
    func sshPolicy(node: TailnetNode) -> SSHPolicy?
    /// The rules one node's packet filter holds, with their origins.
    func reducedRules(for node: TailnetNode) -> [CompiledRule]
    var allNodes: [TailnetNode] { get }
}

extension PolicyCompiler: PolicySemantics {
    func resolve(_ alias: Alias) -> IPSet { resolver.resolve(alias) }
    func reducedRules(for node: TailnetNode) -> [CompiledRule] { Self.reduce(unreducedRules(for: node), for: node) }
    var allNodes: [TailnetNode] { tailnet.nodes }
}

extension PolicyEngine: PolicySemantics {
    func resolve(_ alias: Alias) -> IPSet { live.resolve(alias) }
    func reducedRules(for node: TailnetNode) -> [CompiledRule] { reducedRules(node) }
    var allNodes: [TailnetNode] { live.sortedByName(live.nodes.indices.filter { live.nodes[$0] != nil }).map { live.nodes[$0]! } }

    func allMatchers() -> [CompiledRule] {
        var out: [CompiledRule] = []
        for cu in units {
            out += cu.rules
            if cu.hasSelf {
                for user in live.nodesByUser.keys.sorted() {
                    let same = live.sortedByName(live.nodesByUser[user] ?? []).map { live.nodes[$0]! }
                    out += PolicyCompiler.selfRules(cu, sameUser: same)
                }
            }
            if cu.isVia {
                for n in allNodes where n.tags.contains(where: cu.unit.via.contains) { out += PolicyCompiler.viaRules(cu, node: n) }
            }
        }
        return out
    }
}
