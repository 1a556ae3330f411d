import WarrenPacket

/// Well-known address sets.
enum KnownSets {
    /// `*`: Tailscale's CGNAT range without the ChromeOS VM range, and Tailscale's ULA range.
    static let wildcard: IPSet = {
        var b = IPSetBuilder()
        b.add(IPPrefix("100.64.0.0/10")!)
        b.add(IPPrefix("fd7a:115c:a1e0::/48")!)
        return b.build().subtracting(IPSet(prefixes: [IPPrefix("100.115.92.0/23")!]))
    }()

    static let everything = IPSet(prefixes: [IPPrefix("0.0.0.0/0")!, IPPrefix("::/0")!])

    /// The public internet as Tailscale's exit nodes serve it: IPv4 but the private, shared (CGNAT)
    /// and link-local ranges, and IPv6 global unicast (2000::/3).
    static let internet: IPSet = {
        let excluded = ["10.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16"]
        return IPSet(prefixes: [IPPrefix("0.0.0.0/0")!, IPPrefix("2000::/3")!])
            .subtracting(IPSet(prefixes: excluded.compactMap { IPPrefix($0) }))
    }()
}

/// What unit compilation asks of a tailnet: alias resolution and the approved subnet routes.
protocol AliasResolving {
    func resolve(_ alias: Alias) -> IPSet
    func sourceStrings(_ alias: Alias) -> [String]
    /// Approved subnet routes of every node, each once, in node-name order.
    var approvedSubnetRoutes: [String] { get }
    /// SrcIPs of a list of node-naming aliases (each address once, first occurrence kept) as address sets,
    /// when the resolver keeps the aliases' sets at hand; nil otherwise.
    func nodeSources(_ aliases: [Alias]) -> SourceList?
    /// An address as text.
    func text(_ a: IPAddress) -> String
}

extension AliasResolving {
    func text(_ a: IPAddress) -> String { a.description }
    func nodeSources(_ aliases: [Alias]) -> SourceList? { nil }
}

/// Resolves aliases to address sets against one tailnet, with indexes by user and tag.
struct Resolver: AliasResolving, Sendable {
    let policy: Policy
    let tailnet: Tailnet
    /// Node indexes by owning user's name, by tag; untagged and tagged node indexes.
    var nodesByUser: [String: [Int]] = [:]
    var nodesByTag: [String: [Int]] = [:]
    var untagged: [Int] = []
    var tagged: [Int] = []
    var userNamesByLogin: [String: [String]] = [:]

    init(policy: Policy, tailnet: Tailnet) {
        self.policy = policy
        self.tailnet = tailnet
        for (i, n) in tailnet.nodes.enumerated() {
            if n.isTagged {
                tagged.append(i)
                for t in n.tags { nodesByTag[t, default: []].append(i) }
            } else {
                untagged.append(i)
                if let u = n.user { nodesByUser[u, default: []].append(i) }
            }
        }
        for u in tailnet.users {
            userNamesByLogin[u.email, default: []].append(u.name)
            if u.name != u.email { userNamesByLogin[u.name, default: []].append(u.name) }
        }
    }

    /// The user names a login token names (`alice@example.com`, `alice@`).
    func userNames(_ token: String) -> [String] {
        var t = token
        if t.hasSuffix("@") { t.removeLast() }
        let names = userNamesByLogin[t] ?? []
        return names.count == 1 ? names : []
    }

    func nodeIndexes(for alias: Alias) -> [Int]? {
        switch alias {
        case .user(let u): return userNames(u).flatMap { nodesByUser[$0] ?? [] }
        case .userDomain(let domain):
            var out: [Int] = []
            for u in tailnet.users {
                guard let at = u.email.lastIndex(of: "@"), u.email[u.email.index(after: at)...].lowercased() == domain.lowercased()
                else { continue }
                out += nodesByUser[u.name] ?? []
            }
            return out
        case .group(let g):
            return policy.groupMemberNames(g, users: tailnet.users, userNames: userNames).flatMap { nodesByUser[$0] ?? [] }
        case .tag(let t): return nodesByTag[t] ?? []
        case .autogroup("autogroup:member"): return untagged
        case .autogroup("autogroup:tagged"): return tagged
        default: return nil
        }
    }

    func add(nodes: [Int], to b: inout IPSetBuilder) {
        for i in nodes { for a in tailnet.nodes[i].addresses { b.add(a) } }
    }

    func add(_ alias: Alias, to b: inout IPSetBuilder) {
        if let nodes = nodeIndexes(for: alias) {
            add(nodes: nodes, to: &b)
            return
        }
        Self.addAddressAlias(alias, policy: policy, to: &b)
    }

    /// Adds an alias that names addresses rather than nodes (hosts, ipsets, prefixes, ranges, `*`, ...).
    static func addAddressAlias(_ alias: Alias, policy: Policy, to b: inout IPSetBuilder) {
        switch alias {
        case .wildcard: b.add(KnownSets.wildcard)
        case .host(let h): if let s = policy.hosts[h] { b.add(s) }
        case .ipset(let s): if let set = policy.ipsets[s] { b.add(set) }
        case .prefix(let p): b.add(p)
        case .range(let x, let y): b.add(IPSet.fromRange(x, y))
        case .autogroup("autogroup:danger-all"): b.add(KnownSets.everything)
        case .autogroup("autogroup:internet"): b.add(KnownSets.internet)
        default: break
        }
    }

    /// The alias as Tailscale lists it in SrcIPs: each node address on its own, other sets as ranges.
    func sourceStrings(_ alias: Alias) -> [String] {
        if let nodes = nodeIndexes(for: alias) {
            var b = IPSetBuilder()
            add(nodes: nodes, to: &b)
            return b.build().addresses.map(\.description)
        }
        return resolve(alias).rangeStrings
    }

    func resolve(_ alias: Alias) -> IPSet {
        var b = IPSetBuilder()
        add(alias, to: &b)
        return b.build()
    }

    func resolve(_ aliases: [Alias]) -> IPSet {
        var b = IPSetBuilder()
        for a in aliases { add(a, to: &b) }
        return b.build()
    }

    /// Approved subnet routes of every node, each once, in node order.
    var approvedSubnetRoutes: [String] {
        var seen = Set<String>()
        var out: [String] = []
        for n in tailnet.nodes {
            for r in n.subnetRoutes where seen.insert(r.description).inserted { out.append(r.description) }
        }
        return out
    }
}
