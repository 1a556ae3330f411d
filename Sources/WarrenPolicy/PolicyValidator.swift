import WarrenPacket
import WarrenTailcfg

/// The checks Tailscale's service makes on a parsed policy, with its wording.
struct PolicyValidator {
    var policy: Policy
    var tailnetDomain: String?

    static let tailscaleCapabilityAllowlist: Set<String> = [
        "tailscale.com/cap/drive", "tailscale.com/cap/relay", "tailscale.com/cap/webui",
        "tailscale.com/cap/kubernetes", "tailscale.com/cap/tsidp", "tailscale.com/cap/secrets",
    ]

    func fail(_ message: String, _ at: SourcePosition) -> PolicyError {
        PolicyError(message, line: at.line, column: at.column)
    }

    func checkReference(_ a: Located<Alias>) throws(PolicyError) {
        switch a.value {
        case .tag(let t) where policy.tagOwners[t] == nil:
            throw fail("tag not found: \"\(t)\"", a.position)
        case .group(let g) where policy.groups[g] == nil:
            throw fail("group not found: \"\(g)\"", a.position)
        case .host(let h) where policy.hosts[h] == nil:
            throw fail("host not found: \"\(h)\"", a.position)
        case .ipset(let s) where policy.ipsets[s] == nil:
            throw fail("ipset not found: \"\(s)\"", a.position)
        case .autogroup(let g) where !Self.knownAutogroups.contains(g):
            throw fail("autogroup \"\(g)\" is not valid", a.position)
        default: break
        }
    }

    static let knownAutogroups: Set<String> = [
        "autogroup:internet", "autogroup:member", "autogroup:self", "autogroup:tagged",
        "autogroup:danger-all", "autogroup:nonroot", "autogroup:shared", "autogroup:admin",
        "autogroup:owner", "autogroup:it-admin", "autogroup:network-admin", "autogroup:billing-admin",
        "autogroup:auditor",
    ]

    func checkSources(_ sources: [Located<Alias>]) throws(PolicyError) {
        for s in sources {
            if s.value.isAutogroupSelf { throw fail("\"autogroup:self\" not valid on the src side of a rule", s.position) }
            if s.value == .autogroup("autogroup:internet") {
                throw fail("autogroup:internet can only be used in ACL destinations", s.position)
            }
            try checkReference(s)
        }
    }

    func checkDestinations(_ dsts: [Located<Alias>]) throws(PolicyError) {
        for d in dsts {
            if d.value == .autogroup("autogroup:danger-all") { throw fail("cannot use autogroup:danger-all as a dst", d.position) }
            try checkReference(d)
        }
    }

    /// autogroup:self as a destination needs sources made of users, groups and autogroup:member.
    func checkSelf(sources: [Located<Alias>], destinations: [Located<Alias>], wildcardAllowed: Bool) throws(PolicyError) {
        guard let selfDst = destinations.first(where: { $0.value.isAutogroupSelf }) else { return }
        for s in sources {
            switch s.value {
            case .user, .group: continue
            case .autogroup("autogroup:member"): continue
            case .wildcard where wildcardAllowed: continue
            default:
                throw fail("autogroup:self can only be used with users, groups, or supported autogroups", selfDst.position)
            }
        }
    }

    func validate() throws(PolicyError) {
        for rule in policy.acls {
            try checkSources(rule.sources)
            let dsts = rule.destinations.map { Located($0.alias, at: $0.position) }
            try checkDestinations(dsts)
            if !rule.proto.hasPorts {
                for d in rule.destinations where d.ports != [.all] {
                    throw fail("dst=\"\(d.text)\": protocol \"\(rule.proto.name)\" does not support specific ports, only \"*\" is allowed", d.position)
                }
            }
            try checkSelf(sources: rule.sources, destinations: dsts, wildcardAllowed: true)
        }
        for g in policy.grants {
            if g.ip.isEmpty && (g.app ?? [:]).isEmpty { throw fail("ip and app can not both be empty", g.position) }
            for name in (g.app ?? [:]).keys.sorted() {
                if name.contains("://") || !name.contains("/") {
                    throw fail("capability name must have the form {domain}/{path}", g.position)
                }
                if name.hasPrefix("tailscale.com/") && !Self.tailscaleCapabilityAllowlist.contains(name) {
                    throw fail("capability name must not be in the tailscale.com domain", g.position)
                }
            }
            if !(g.app ?? [:]).isEmpty, g.destinations.contains(where: { $0.value == .autogroup("autogroup:internet") }) {
                throw fail("cannot use app grants with autogroup:internet", g.position)
            }
            for d in g.destinations {
                if case .prefix(let p) = d.value, p.bits == 0 {
                    throw fail("dst \"\(p)\": to allow all IP addresses, use \"*\" or \"autogroup:internet\"", d.position)
                }
            }
            try checkSources(g.sources)
            try checkDestinations(g.destinations)
            for v in g.via where policy.tagOwners[v] == nil {
                throw fail("tag \"\(v)\" not found", g.position)
            }
            try checkSelf(sources: g.sources, destinations: g.destinations, wildcardAllowed: false)
        }
        for rule in policy.ssh {
            for s in rule.sources {
                if s.value == .autogroup("autogroup:internet") {
                    throw fail("autogroup:internet can only be used in ACL destinations", s.position)
                }
                try checkReference(s)
            }
            for d in rule.destinations {
                if case .host(let h) = d.value { throw fail("invalid dst \"\(h)\"", d.position) }
                try checkReference(d)
            }
            for u in rule.users where u.hasPrefix("localpart:") {
                let pattern = u.dropFirst("localpart:".count)
                guard pattern.hasPrefix("*@") else { continue }
                let domain = String(pattern.dropFirst(2))
                if let tailnetDomain, domain != tailnetDomain {
                    throw fail("\(domain) is not associated with this Tailnet and cannot be used in user:*@<domain> expressions", rule.position)
                }
            }
        }
        for n in policy.nodeAttrs {
            for t in n.targets {
                if t.value.isAutogroupSelf { throw fail("internal server error", t.position) }
                if case .tag(let tag) = t.value, policy.tagOwners[tag] == nil {
                    throw fail("tag not found: \"\(tag)\"", t.position)
                }
                try checkReference(t)
            }
        }
        for test in policy.sshTests {
            for d in test.destinations {
                let a = Alias.parse(d)
                switch a {
                case .autogroup("autogroup:internet"):
                    throw fail("SSH tests dst contains disallowed element \"\(d)\"", test.position)
                case .prefix(let p) where !p.isSingleAddress:
                    throw fail("SSH tests dst contains disallowed element \"\(d)\"", test.position)
                case .tag(let t) where policy.tagOwners[t] == nil:
                    throw fail("SSH tests dst contains unknown tag \"\(d)\"", test.position)
                case .host(let h) where policy.hostIsSingleAddress[h] == false:
                    throw fail("SSH tests dst contains disallowed element \"\(d)\"", test.position)
                default: break
                }
            }
        }
    }
}
