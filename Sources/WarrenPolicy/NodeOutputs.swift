import WarrenPacket
import WarrenTailcfg

/// A set of node indexes (or slots) as a bit vector; it grows as needed.
struct NodeBits: Sendable, Equatable {
    var words: [UInt64]

    init(count: Int) { words = Array(repeating: 0, count: (count + 63) / 64) }

    mutating func insert(_ i: Int) {
        if i >> 6 >= words.count { words += Array(repeating: 0, count: (i >> 6) + 1 - words.count) }
        words[i >> 6] |= 1 << UInt64(i & 63)
    }

    mutating func remove(_ i: Int) {
        guard i >> 6 < words.count else { return }
        words[i >> 6] &= ~(1 << UInt64(i & 63))
    }

    mutating func set(_ i: Int, _ on: Bool) { if on { insert(i) } else { remove(i) } }

    /// The same bits in storage of their own (not shared with `self`).
    func copy() -> NodeBits {
        var out = NodeBits(count: 0)
        out.words = words.withUnsafeBufferPointer { Array($0) }
        return out
    }

    func contains(_ i: Int) -> Bool { i >> 6 < words.count && words[i >> 6] & (1 << UInt64(i & 63)) != 0 }

    mutating func formUnion(_ o: NodeBits) {
        if o.words.count > words.count { words += Array(repeating: 0, count: o.words.count - words.count) }
        for k in o.words.indices { words[k] |= o.words[k] }
    }

    mutating func formUnion<S: Sequence>(_ slots: S) where S.Element == Int { for s in slots { insert(s) } }

    var isEmpty: Bool { words.allSatisfy { $0 == 0 } }

    var members: [Int] {
        var out: [Int] = []
        for (k, w) in words.enumerated() where w != 0 {
            var x = w
            while x != 0 {
                let t = x.trailingZeroBitCount
                out.append(k * 64 + t)
                x &= x - 1
            }
        }
        return out
    }

    /// Members of exactly one of the two sets.
    func symmetricDifference(_ o: NodeBits) -> NodeBits {
        var out = NodeBits(count: max(words.count, o.words.count) * 64)
        for k in out.words.indices {
            out.words[k] = (k < words.count ? words[k] : 0) ^ (k < o.words.count ? o.words[k] : 0)
        }
        return out
    }
}

extension PolicyCompiler {
    /// Every rule that can connect two nodes: global rules, every user's autogroup:self rules,
    /// every router's via rules. Capability rules make peers too.
    func allMatchers() -> [CompiledRule] {
        var out: [CompiledRule] = []
        for cu in units {
            out += cu.rules
            if cu.hasSelf {
                for user in resolver.nodesByUser.keys.sorted() { out += selfRules(cu, user: user) }
            }
            if cu.isVia {
                for n in tailnet.nodes where n.tags.contains(where: cu.unit.via.contains) { out += Self.viaRules(cu, node: n) }
            }
        }
        return out
    }

    /// For each node, the set of peers it sees: nodes it may reach or that may reach it.
    func peerBits() -> [NodeBits] {
        let n = tailnet.nodes.count
        var peers = Array(repeating: NodeBits(count: n), count: n)
        let views = tailnet.nodes.map(NodeView.init)
        for m in allMatchers() {
            var src = NodeBits(count: n), dst = NodeBits(count: n)
            var dstSetBuilder = IPSetBuilder()
            for d in m.dsts { dstSetBuilder.add(d.set) }
            for g in m.capGrants { for p in g.dsts { dstSetBuilder.add(p) } }
            let dstSet = dstSetBuilder.build()
            let dstIsInternet = m.toInternet || dstSet.isSuperset(of: KnownSets.internet)
            var srcList: [Int] = [], dstList: [Int] = []
            for (i, view) in views.enumerated() {
                if view.isSource(of: m.srcSet) { src.insert(i); srcList.append(i) }
                if let router = m.viaRouter {
                    if view.node.name == router { dst.insert(i); dstList.append(i) }
                } else if view.isDestination(of: dstSet, internet: dstIsInternet) {
                    dst.insert(i); dstList.append(i)
                }
            }
            for i in srcList { peers[i].formUnion(dst) }
            for i in dstList { peers[i].formUnion(src) }
        }
        // Via grants: sources and the routers that carry them see each other, whether or not the grant has rules.
        for cu in units where cu.isVia {
            var src = NodeBits(count: n), routers = NodeBits(count: n)
            for (i, node) in tailnet.nodes.enumerated() {
                if cu.viaSource(node) { src.insert(i) }
                if cu.carriesVia(node) { routers.insert(i) }
            }
            for (i, _) in tailnet.nodes.enumerated() {
                if src.contains(i) { peers[i].formUnion(routers) }
                if routers.contains(i) { peers[i].formUnion(src) }
            }
        }
        return peers
    }

    /// The SSH policy a node receives; nil when the policy has no `ssh` section.
    public func sshPolicy(for name: String) -> SSHPolicy? {
        guard let i = indexByName[name] else { return nil }
        return sshPolicy(node: tailnet.nodes[i])
    }

    func sshPolicy(node: TailnetNode) -> SSHPolicy? {
        guard !policy.ssh.isEmpty else { return nil }
        var rules: [(check: Bool, rule: SSHRule)] = []
        let userIDs = Dictionary(tailnet.users.map { ($0.name, $0.id) }, uniquingKeysWith: { a, _ in a })
        for rule in policy.ssh {
            let selfDsts = rule.destinations.filter { $0.value.isAutogroupSelf }
            let otherDsts = rule.destinations.filter { !$0.value.isAutogroupSelf }
            let srcSet = resolver.resolve(rule.sources.map(\.value))
            guard !srcSet.isEmpty else { continue }
            let action = PolicyCapabilities.sshAction(rule.action, controlURL: options.controlURL)
            let hasLocalpart = rule.users.contains { Self.localpartDomain($0) != nil }
            let baseUsers = PolicyCapabilities.sshBaseUsers(rule.users)
            let localpartByUser = PolicyCapabilities.sshLocalparts(rule.users, tailnetUsers: tailnet.users)
            // Sources grouped by owner; tagged nodes listed once per tag, as Tailscale does.
            var byUser: [String: IPSetBuilder] = [:]
            var tagged: [SSHPrincipal] = []
            for n in tailnet.nodes where n.addresses.contains(where: srcSet.contains) {
                if n.isTagged {
                    for _ in n.tags { tagged += n.addresses.map { SSHPrincipal(nodeIP: $0.description) } }
                } else if let u = n.user {
                    for a in n.addresses { byUser[u, default: IPSetBuilder()].add(a) }
                }
            }
            var principalsByUser: [String: [SSHPrincipal]] = [:]
            for (u, b) in byUser { principalsByUser[u] = b.build().addresses.map { SSHPrincipal(nodeIP: $0.description) } }
            let users = principalsByUser.keys.sorted { (userIDs[$0] ?? 0, $0) < (userIDs[$1] ?? 0, $1) }

            func append(_ principals: [SSHPrincipal], user: String?) {
                rules.append((rule.action == .check, SSHRule(principals: principals, sshUsers: baseUsers, action: action,
                                                              acceptEnv: rule.acceptEnv)))
                if let user, let lp = localpartByUser[user] {
                    rules.append((rule.action == .check, SSHRule(principals: principals, sshUsers: [lp: lp], action: action,
                                                                  acceptEnv: rule.acceptEnv)))
                }
            }

            if !selfDsts.isEmpty, !node.isTagged, let u = node.user, let p = principalsByUser[u], !p.isEmpty {
                append(p, user: u)
            }
            if !otherDsts.isEmpty {
                let dstSet = resolver.resolve(otherDsts.map(\.value))
                if node.addresses.contains(where: dstSet.contains) {
                    if hasLocalpart {
                        for u in users { append(principalsByUser[u] ?? [], user: u) }
                        if !tagged.isEmpty { append(tagged, user: nil) }
                    } else {
                        let all = users.flatMap { principalsByUser[$0] ?? [] } + tagged
                        if !all.isEmpty { append(all, user: nil) }
                    }
                } else if hasLocalpart && node.addresses.contains(where: srcSet.contains) {
                    if node.isTagged {
                        append(node.addresses.map { SSHPrincipal(nodeIP: $0.description) }, user: nil)
                    } else if let u = node.user, let p = principalsByUser[u], !p.isEmpty {
                        append(p, user: u)
                    }
                }
            }
        }
        let sorted = rules.filter(\.check) + rules.filter { !$0.check }
        return SSHPolicy(rules: sorted.map(\.rule))
    }

    static func localpartDomain(_ user: String) -> String? {
        guard user.hasPrefix("localpart:") else { return nil }
        let pattern = user.dropFirst("localpart:".count)
        guard let at = pattern.lastIndex(of: "@"), pattern[..<at] == "*" else { return nil }
        let domain = String(pattern[pattern.index(after: at)...])
        return domain.isEmpty ? nil : domain
    }

    /// Node capabilities from nodeAttrs (and randomizeClientPort).
    public func capabilities(for node: TailnetNode) -> NodeCapMap {
        PolicyCapabilities.nodeCapabilities(policy) { attr in
            let set = resolver.resolve(attr.targets.map(\.value))
            return node.addresses.contains(where: set.contains)
        }
    }

    /// The node's advertised routes that autoApprovers approve.
    public func autoApprovedRoutes(for node: TailnetNode) -> [IPPrefix] {
        Self.autoApprovedRoutes(for: node, policy: policy, resolver: resolver)
    }

    static func autoApprovedRoutes(for node: TailnetNode, policy: Policy, resolver: Resolver) -> [IPPrefix] {
        var out: [IPPrefix] = []
        for route in node.advertisedRoutes {
            if TailnetNode.isExitRoute(route) {
                let set = resolver.resolve(policy.autoApproverExitNode)
                // Exit routes need an exitNode approver; a routes entry for 0.0.0.0/0 does not approve them.
                if node.addresses.contains(where: set.contains) { out.append(route) }
                continue
            }
            for (prefix, approvers) in policy.autoApproverRoutes where prefix.masked.contains(route) {
                let set = resolver.resolve(approvers)
                if node.addresses.contains(where: set.contains) { out.append(route); break }
            }
        }
        return out
    }

    /// Everything each node receives, keyed by node name.
    public func compileAll() -> [String: NodePolicy] {
        let peers = peerBits()
        var out: [String: NodePolicy] = [:]
        for (i, node) in tailnet.nodes.enumerated() {
            out[node.name] = NodePolicy(
                packetFilter: packetFilter(node: node),
                sshPolicy: sshPolicy(node: node),
                peers: peers[i].members.filter { $0 != i }.map { tailnet.nodes[$0].name }.sorted(),
                capabilities: capabilities(for: node),
                autoApprovedRoutes: autoApprovedRoutes(for: node))
        }
        return out
    }
}
