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

    /// Where an alias stands: Tailscale words a mistake differently in each place.
    enum Place {
        case aclSource, aclDestination, grantSource, grantDestination, sshSource, sshDestination, nodeAttrTarget
    }

    /// An alias that names something the policy does not define, with Tailscale's message for its place.
    ///
    /// Unknown tags: an ACL source says `src=tag not found: "tag:x"` (Tailscale's own message, quoted in
    /// tailscale/terraform-provider-tailscale#380), an ACL destination `dst="tag:x": tag not found: "tag:x"`,
    /// grant destinations, SSH rules and nodeAttrs targets `tag not found: "tag:x"`; a grant source as an ACL
    /// source. Unknown groups and hosts read `group not defined in policy: "group:x"` and
    /// `host not defined in policy: "x"` (headscale v2's validate), except that an undefined host is an invalid dst
    /// in SSH and, as a nodeAttrs target, an address that does not parse (`"x": invalid address`, Tailscale's).
    func checkReference(_ a: Located<Alias>, in place: Place) throws(PolicyError) {
        switch a.value {
        case .tag(let t) where policy.tagOwners[t] == nil:
            switch place {
            case .aclSource, .grantSource: throw fail("src=tag not found: \"\(t)\"", a.position)
            case .aclDestination: throw fail("dst=\"\(t)\": tag not found: \"\(t)\"", a.position)
            case .grantDestination, .sshSource, .sshDestination, .nodeAttrTarget:
                throw fail("tag not found: \"\(t)\"", a.position)
            }
        case .group(let g) where policy.groups[g] == nil:
            throw fail("group not defined in policy: \"\(g)\"", a.position)
        case .host(let h) where policy.hosts[h] == nil:
            switch place {
            case .sshDestination: throw fail("invalid dst \"\(h)\"", a.position)
            case .nodeAttrTarget:
                // A nodeAttrs target that is no other kind of alias and no defined host is read as an address;
                // one that does not parse is refused as such (Tailscale: `"%bogus%": invalid address`).
                throw fail("\"\(h)\": invalid address", a.position)
            default: throw fail("host not defined in policy: \"\(h)\"", a.position)
            }
        case .ipset(let s) where policy.ipsets[s] == nil:
            throw fail("ipset not found: \"\(s)\"", a.position)
        case .autogroup(let g) where !Self.knownAutogroups.contains(g):
            throw fail("autogroup \"\(g)\" is not valid", a.position)
        case .userDomain(let domain):
            // `user:*@domain` names the users of one of the tailnet's domains; another domain is refused, compared
            // as written (Tailscale's check is case-sensitive), with the message it gives for `localpart:*@domain`.
            // In an SSH rule Tailscale puts its section's tag in front ("[ssh] example.org is not associated ...").
            if let tailnetDomain, domain != tailnetDomain {
                let section = place == .sshSource || place == .sshDestination ? "[ssh] " : ""
                throw fail("\(section)\(domain) is not associated with this Tailnet and cannot be used in user:*@<domain> expressions", a.position)
            }
        default: break
        }
    }

    static let cgnat = IPPrefix("100.64.0.0/10")!
    static let reservedPoolRanges = [IPPrefix("100.100.100.0/24")!, IPPrefix("100.115.92.0/23")!]

    static let knownAutogroups: Set<String> = [
        "autogroup:internet", "autogroup:member", "autogroup:self", "autogroup:tagged",
        "autogroup:danger-all", "autogroup:nonroot", "autogroup:shared", "autogroup:admin",
        "autogroup:owner", "autogroup:it-admin", "autogroup:network-admin", "autogroup:billing-admin",
        "autogroup:auditor",
    ]

    func checkSources(_ sources: [Located<Alias>], in place: Place) throws(PolicyError) {
        for s in sources {
            if s.value.isAutogroupSelf { throw fail("\"autogroup:self\" not valid on the src side of a rule", s.position) }
            if s.value == .autogroup("autogroup:internet") {
                throw fail("autogroup:internet can only be used in ACL destinations", s.position)
            }
            try checkReference(s, in: place)
        }
    }

    func checkDestinations(_ dsts: [Located<Alias>], in place: Place) throws(PolicyError) {
        for d in dsts {
            if d.value == .autogroup("autogroup:danger-all") { throw fail("cannot use autogroup:danger-all as a dst", d.position) }
            try checkReference(d, in: place)
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

    /// SSH connects identities, not addresses: a source is a user, a group, a tag, `user:*@domain`, or
    /// autogroup:member or autogroup:tagged. Addresses, hosts, IP sets and `*` name no identity and are refused
    /// (headscale v2's SSHSrcAliases; the wording follows Tailscale's `invalid dst` for a destination).
    func checkSSHSourceKind(_ s: Located<Alias>) throws(PolicyError) {
        switch s.value {
        case .user, .userDomain, .group, .tag: return
        case .autogroup(let g):
            if g == "autogroup:self" { throw fail("\"autogroup:self\" not valid on the src side of a rule", s.position) }
            guard Self.knownAutogroups.contains(g) else { return }   // unknown ones get checkReference's message
            if !Self.sshSourceAutogroups.contains(g) { throw fail("invalid src \"\(g)\"", s.position) }
        default:
            throw fail("invalid src \"\(s.value)\"", s.position)
        }
    }

    /// An SSH destination is a node set with an owner: a tag, a user (see ``checkSSHCombination``),
    /// `user:*@domain`, or autogroup:self, autogroup:member or autogroup:tagged. Hosts are refused as Tailscale
    /// refuses them (`invalid dst "srv"`, captured), and so are addresses, groups, IP sets and `*` (headscale v2's
    /// SSHDstAliases refuses the same kinds; the wording is Tailscale's for hosts).
    func checkSSHDestinationKind(_ d: Located<Alias>) throws(PolicyError) {
        switch d.value {
        case .user, .userDomain, .tag: return
        case .autogroup(let g):
            guard Self.knownAutogroups.contains(g) else { return }
            if !Self.sshDestinationAutogroups.contains(g) { throw fail("invalid dst \"\(g)\"", d.position) }
        default:
            throw fail("invalid dst \"\(d.value)\"", d.position)
        }
    }

    static let nodeAttrRefusedAutogroups: Set<String> = [
        "autogroup:internet", "autogroup:danger-all", "autogroup:nonroot", "autogroup:shared",
    ]
    static let sshSourceAutogroups: Set<String> = ["autogroup:member", "autogroup:tagged"]
    static let sshDestinationAutogroups: Set<String> = ["autogroup:self", "autogroup:member", "autogroup:tagged"]

    /// Tailscale SSH's ownership rule: a tagged source has no human behind it, so it may reach tagged nodes only;
    /// a user's devices are reached as that user alone (anyone else goes through autogroup:self). The checks and
    /// their wording are headscale v2's validateSSHSrcDstCombination; no capture of Tailscale's own text exists.
    func checkSSHCombination(_ rule: SSHPolicyRule) throws(PolicyError) {
        var tagged = false, groups = false
        var users = Set<String>()
        for s in rule.sources {
            switch s.value {
            case .tag, .autogroup("autogroup:tagged"): tagged = true
            case .group, .autogroup("autogroup:member"), .userDomain: groups = true
            case .user(let u): users.insert(u)
            default: break
            }
        }
        for d in rule.destinations {
            switch d.value {
            case .user(let u):
                if tagged {
                    throw fail("tags in SSH source cannot access user-owned devices (\(u)); use autogroup:tagged or specific tags as destinations instead", d.position)
                }
                if groups || users != [u] {
                    throw fail("user destination requires source to contain only that same user \"\(u)\"; use autogroup:self instead for same-user SSH access", d.position)
                }
            case .userDomain where tagged:
                throw fail("tags in SSH source cannot access user-owned devices (\(d.value)); use autogroup:tagged or specific tags as destinations instead", d.position)
            case .autogroup("autogroup:self") where tagged:
                throw fail("autogroup:self destination requires source to contain only users or groups, not tags or autogroup:tagged", d.position)
            case .autogroup("autogroup:member") where tagged:
                throw fail("tags in SSH source cannot access autogroup:member (user-owned devices)", d.position)
            default: break
            }
        }
    }

    func validate() throws(PolicyError) {
        for rule in policy.acls {
            try checkSources(rule.sources, in: .aclSource)
            let dsts = rule.destinations.map { Located($0.alias, at: $0.position) }
            try checkDestinations(dsts, in: .aclDestination)
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
            try checkSources(g.sources, in: .grantSource)
            try checkDestinations(g.destinations, in: .grantDestination)
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
                try checkSSHSourceKind(s)
                try checkReference(s, in: .sshSource)
            }
            for d in rule.destinations {
                try checkSSHDestinationKind(d)
                try checkReference(d, in: .sshDestination)
            }
            try checkSSHCombination(rule)
            // checkPeriod says how long a check lasts: it means nothing on an accept rule.
            if rule.checkPeriod != nil, rule.action != .check {
                throw fail("checkPeriod is only valid with action \"check\"", rule.position)
            }
            // acceptEnv names environment variables (with * and ? wildcards); an empty name is refused.
            if let env = rule.acceptEnv, env.contains(where: \.isEmpty) {
                throw fail("acceptEnv values cannot be empty", rule.position)
            }
            // Only the canonical `localpart:*@<domain>` (a `*` before the last `@`, a domain after it) is the
            // localpart form; any other string, `localpart:*@` included, is a literal login name, sent as written.
            for u in rule.users {
                guard let domain = PolicyCompiler.localpartDomain(u) else { continue }
                if let tailnetDomain, domain != tailnetDomain {
                    throw fail("\(domain) is not associated with this Tailnet and cannot be used in user:*@<domain> expressions", rule.position)
                }
            }
        }
        for n in policy.nodeAttrs {
            for t in n.targets {
                if t.value.isAutogroupSelf { throw fail("internal server error", t.position) }
                // A node attribute attaches to nodes or their owners: autogroups that name no stable set of nodes
                // (the internet, every address, SSH login names, shared-in nodes) are refused. Tailscale accepts
                // the role autogroups (admin, owner, ...), as captures show, so only these are refused here
                // (headscale v2's validateAutogroupForNodeAttrs refuses them too; the wording is headscale's).
                if case .autogroup(let g) = t.value, Self.nodeAttrRefusedAutogroups.contains(g) {
                    throw fail("nodeAttrs target does not support this autogroup: \"\(g)\"", t.position)
                }
                try checkReference(t, in: .nodeAttrTarget)
            }
            // An ipPool hands out node addresses: it must lie in Tailscale's CGNAT range and keep clear of the
            // ranges Tailscale reserves there (100.100.100.0/24 for its service address, 100.115.92.0/23 for
            // ChromeOS VMs), as headscale v2's validateNodeAttrIPPool checks.
            for pool in n.ipPool {
                let masked = pool.masked
                guard pool.address.version == .v4, masked.bits >= 10, Self.cgnat.contains(masked.address) else {
                    throw fail("nodeAttrs ipPool must be within 100.64.0.0/10: \"\(pool)\"", n.position)
                }
                for reserved in Self.reservedPoolRanges where masked.overlaps(reserved) {
                    throw fail("IPPool(\(pool)): network within reserved range", n.position)
                }
            }
        }
        for test in policy.sshTests {
            if test.source.trimmingSpaces.isEmpty {
                throw fail("SSH tests entry must have a non-empty src", test.position)
            }
            if test.destinations.isEmpty {
                throw fail("SSH tests entry must have at least one dst", test.position)
            }
            for d in test.destinations {
                let a = Alias.parse(d)
                switch a {
                case nil:
                    // Not an alias at all (an address with a port, say): it names no SSH host.
                    throw fail("SSH tests dst contains disallowed element \"\(d)\"", test.position)
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
