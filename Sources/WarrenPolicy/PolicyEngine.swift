import WarrenPacket
import WarrenTailcfg

/// A change to a tailnet's nodes.
public enum NodeChange: Sendable, Equatable {
    /// A node joins, or the node of that name changes (tags, owner, addresses, routes).
    case upsert(TailnetNode)
    case remove(name: String)
}

/// The policy compiled against a tailnet that changes one node at a time.
///
/// A full build compiles every grant and ACL unit, indexes every destination by address and computes
/// every node's peers. `apply(_:)` then recomputes only what a node's join, change or removal touches:
/// the units whose aliases name the node (or that list subnet routes, when the node's routes change),
/// the destination index entries of those units, the node's membership in each rule, and the peer
/// relations of the node and of routers. Packet filters and SSH policies are read per node from the shared
/// compiled rules. SrcIPs made of node addresses are kept as address sets (`SourceList`, one per list of
/// source aliases, shared by every rule with those sources) and become strings only when a filter is read.
/// The result equals a fresh build (`compileAll()` of each is the same), which the property tests hold on
/// random tailnets; filter rule order is the node's own (rules are accept rules, so their order carries no
/// meaning).
public struct PolicyEngine: Sendable {
    public let policy: Policy
    public let options: CompileOptions
    var live: LiveTailnet
    let grantUnits: [GrantUnit]
    var units: [CompiledUnit] = []
    /// Per unit, per global rule: merge key, destination set (filter and capability), reaches the internet.
    var keys: [[Int]] = []
    /// Merge keys by the rule's sources and protocols.
    var keyTable: [MergeKey: Int] = [:]
    /// How many global rules use each merge key, and the key (unused keys are dropped).
    var keyUses: [Int: (count: Int, key: MergeKey)] = [:]
    /// The aliases that grant units name (each once), the units' destinations and source lists as indexes into
    /// it (units with the same sources share a source list), so a node change tests each alias once.
    let aliasTable: [Alias]
    let unitDestinations: [[Int]]
    let unitSourceList: [Int]
    let sourceListAliases: [[Int]]
    /// The source list of each alias that is a unit's only source (its strings serve longer lists).
    let singleAliasList: [Int: Int]
    /// The shared SrcIPs of each source list of node-naming aliases (one instance each, so its strings are
    /// made once); a node change drops the lists whose aliases name the node.
    var sourceLists: [SourceList?] = []
    /// Per source list, the list a node change dropped, until its successor is made (which takes its strings).
    var retiredLists: [SourceList?] = []
    var nextKey = 0
    var dstSets: [[IPSet]] = []
    var toInternet: [[Bool]] = []
    /// Per unit, per global rule: the slots in its sources and in its destinations (for peers).
    var srcBits: [[NodeBits]] = []
    var dstBits: [[NodeBits]] = []
    /// Per via unit: the slots in its sources.
    var viaSrcBits: [NodeBits?] = []
    /// Single-address filter destinations by address; the others per unit.
    var byAddress: [IPAddress: [DstRef]] = [:]
    var wide: [[DstRef]] = []
    /// Peers by slot.
    var peers: [NodeBits] = []
    /// Per SSH rule: its sources, resolved.
    var sshSources: [SSHSources] = []
    let sshStatic: [SSHStatic]
    /// Users' order in SSH principal lists: by id, then name.
    let userRank: [String: (Int, String)]

    /// What rules merge on: the same SrcIPs and the same protocols. Node-address SrcIPs compare as address
    /// runs (`SourceList`), so no strings are made or hashed for them.
    struct MergeKey: Hashable, Sendable {
        enum Sources: Hashable, Sendable {
            case list(SourceList)
            case strings([String])
        }

        var sources: Sources
        var proto: [Int]?

        init(_ r: CompiledRule) {
            sources = Self.sources(r)
            proto = r.proto
        }

        static func sources(_ r: CompiledRule) -> Sources {
            if let list = r.srcList { return .list(list) }
            if let list = SourceList.parsing(r.srcIPs) { return .list(list) }
            return .strings(r.srcIPs)
        }
    }

    struct DstRef: Hashable, Sendable {
        var unit: Int32
        var rule: Int32
        var dst: Int32
    }

    /// An SSH rule's sources as the nodes receiving it list them.
    struct SSHSources: Sendable {
        var empty = true
        var members: Set<Int> = []
        /// Tagged members in name order.
        var taggedMembers: [Int] = []
        var principalsByUser: [String: [SSHPrincipal]] = [:]
        var users: [String] = []
        var tagged: [SSHPrincipal] = []
    }

    /// What an SSH rule gives regardless of nodes.
    struct SSHStatic: Sendable {
        var action: SSHAction
        var baseUsers: [String: String]
        var localpartByUser: [String: String]
        var hasLocalpart: Bool
        var sources: [Alias]
        var selfDsts: Bool
        var otherDsts: [Alias]
    }

    // MARK: building

    public init(policy: Policy, tailnet: Tailnet, options: CompileOptions = CompileOptions()) {
        self.policy = policy
        self.options = options
        let grantUnits = PolicyCompiler.grantUnits(policy)
        var aliases = Set<Alias>()
        for g in grantUnits { aliases.formUnion(g.sources); aliases.formUnion(g.destinations) }
        for r in policy.ssh { aliases.formUnion(r.sources.map(\.value)) }
        var live = LiveTailnet(policy: policy, users: tailnet.users, cachedAliases: aliases)
        self.grantUnits = grantUnits
        var aliasIndex: [Alias: Int] = [:]
        var table: [Alias] = []
        func index(_ a: Alias) -> Int {
            if let i = aliasIndex[a] { return i }
            aliasIndex[a] = table.count
            table.append(a)
            return table.count - 1
        }
        var listIndex: [[Alias]: Int] = [:]
        var lists: [[Int]] = []
        var unitLists: [Int] = []
        for g in grantUnits {
            if let i = listIndex[g.sources] {
                unitLists.append(i)
            } else {
                listIndex[g.sources] = lists.count
                unitLists.append(lists.count)
                lists.append(g.sources.map(index))
            }
        }
        self.unitDestinations = grantUnits.map { $0.destinations.map(index) }
        self.aliasTable = table
        self.unitSourceList = unitLists
        self.sourceListAliases = lists
        var single: [Int: Int] = [:]
        for (l, aliases) in lists.enumerated() where aliases.count == 1 { single[aliases[0]] = l }
        self.singleAliasList = single
        self.sshStatic = policy.ssh.map { Self.sshStatic($0, users: tailnet.users, options: options) }
        var rank: [String: (Int, String)] = [:]
        for u in tailnet.users where rank[u.name] == nil { rank[u.name] = (u.id, u.name) }
        self.userRank = rank
        live.maintainsCache = false
        for n in tailnet.nodes {
            live.insert(Self.normalize(n, policy: policy, live: live, options: options))
        }
        live.rebuildCaches()
        self.live = live
        rebuildAll()
    }

    /// Routes that autoApprovers approve count as approved, as they are the moment a node advertises them.
    static func normalize(_ n: TailnetNode, policy: Policy, live: LiveTailnet, options: CompileOptions) -> TailnetNode {
        guard options.applyAutoApprovers else { return n }
        var out = n
        for r in autoApproved(n, policy: policy, live: live) where !out.approvedRoutes.contains(r) {
            out.approvedRoutes.append(r)
        }
        return out
    }

    static func autoApproved(_ n: TailnetNode, policy: Policy, live: LiveTailnet) -> [IPPrefix] {
        var out: [IPPrefix] = []
        for route in n.advertisedRoutes {
            if TailnetNode.isExitRoute(route) {
                if live.contains(policy.autoApproverExitNode, n) { out.append(route) }
                continue
            }
            for (prefix, approvers) in policy.autoApproverRoutes where prefix.masked.contains(route) {
                if live.contains(approvers, n) { out.append(route); break }
            }
        }
        return out
    }

    static func sshStatic(_ rule: SSHPolicyRule, users: [TailnetUser], options: CompileOptions) -> SSHStatic {
        return SSHStatic(action: PolicyCapabilities.sshAction(rule.action, controlURL: options.controlURL),
                         baseUsers: PolicyCapabilities.sshBaseUsers(rule.users),
                         localpartByUser: PolicyCapabilities.sshLocalparts(rule.users, tailnetUsers: users),
                         hasLocalpart: rule.users.contains { PolicyCompiler.localpartDomain($0) != nil }, sources: rule.sources.map(\.value),
                         selfDsts: rule.destinations.contains { $0.value.isAutogroupSelf },
                         otherDsts: rule.destinations.map(\.value).filter { !$0.isAutogroupSelf })
    }

    mutating func rebuildAll() {
        units = grantUnits.map { PolicyCompiler.compile($0, resolver: live) }
        sourceLists = Array(repeating: nil, count: sourceListAliases.count)
        retiredLists = sourceLists
        // Lists of one alias first: longer lists take strings from them.
        for u in units.indices where sourceListAliases[unitSourceList[u]].count == 1 { shareSourceLists(u) }
        for u in units.indices where sourceListAliases[unitSourceList[u]].count != 1 { shareSourceLists(u) }
        keys = []; dstSets = []; toInternet = []; srcBits = []; dstBits = []; viaSrcBits = []
        byAddress = [:]; wide = Array(repeating: [], count: units.count)
        var srcCache: [IPSet: NodeBits] = [:]
        var dstCache: [IPSet: NodeBits] = [:]
        for u in units.indices {
            deriveRuleData(u)
            addToIndex(u)
            var sb: [NodeBits] = [], db: [NodeBits] = []
            for j in units[u].rules.indices {
                let r = units[u].rules[j]
                // Rules with the same sets start from one computation but own their bits (a join writes them;
                // shared bits would be copied then).
                if let c = srcCache[r.srcSet] { sb.append(c.copy()) } else {
                    let b = computeSrcBits(r.srcSet); srcCache[r.srcSet] = b; sb.append(b)
                }
                if !toInternet[u][j], let c = dstCache[dstSets[u][j]] { db.append(c.copy()) } else {
                    let b = computeDstBits(dstSets[u][j], internet: toInternet[u][j])
                    if !toInternet[u][j] { dstCache[dstSets[u][j]] = b }
                    db.append(b)
                }
            }
            srcBits.append(sb); dstBits.append(db)
            viaSrcBits.append(units[u].isVia ? computeSrcBits(units[u].viaSrcSet) : nil)
        }
        rebuildAllPeers()
        sshSources = policy.ssh.indices.map { computeSSHSources($0) }
    }

    mutating func internKey(_ r: CompiledRule) -> Int {
        let key = MergeKey(r)
        let id: Int
        if let known = keyTable[key] {
            id = known
        } else {
            nextKey += 1
            id = nextKey
            keyTable[key] = id
        }
        keyUses[id, default: (0, key)].count += 1
        return id
    }

    mutating func releaseKey(_ id: Int) {
        guard let use = keyUses[id] else { return }
        if use.count > 1 {
            keyUses[id]!.count -= 1
            return
        }
        keyUses[id] = nil
        keyTable[use.key] = nil
    }

    mutating func install(_ list: SourceList, at l: Int) {
        if let old = retiredLists[l] {
            list.inheritText(from: old)
            retiredLists[l] = nil
        }
        if sourceListAliases[l].count > 1 {
            for a in sourceListAliases[l] {
                guard let m = singleAliasList[a], m != l, let sibling = sourceLists[m] ?? retiredLists[m] else { continue }
                list.shareText(with: sibling)
            }
        }
        sourceLists[l] = list
    }

    /// Makes the unit's rules share the source list of their aliases (one instance per alias list).
    mutating func shareSourceLists(_ u: Int) {
        let l = unitSourceList[u]
        for j in units[u].rules.indices {
            guard let list = units[u].rules[j].srcList else { continue }
            if let known = sourceLists[l], known == list {
                units[u].rules[j].srcList = known
            } else {
                install(list, at: l)
            }
        }
    }

    /// Merge keys, destination sets and internet flags of a unit's global rules.
    mutating func deriveRuleData(_ u: Int) {
        if u < keys.count { for id in keys[u] where id != 0 { releaseKey(id) } }
        var k: [Int] = [], d: [IPSet] = [], t: [Bool] = []
        for r in units[u].rules {
            k.append(r.isCapRule ? 0 : internKey(r))
            var b = IPSetBuilder()
            for x in r.dsts { b.add(x.set) }
            for g in r.capGrants { for p in g.dsts { b.add(p) } }
            let set = b.build()
            d.append(set)
            t.append(r.toInternet || set.isSuperset(of: KnownSets.internet))
        }
        if u < keys.count {
            keys[u] = k; dstSets[u] = d; toInternet[u] = t
        } else {
            keys.append(k); dstSets.append(d); toInternet.append(t)
        }
    }

    mutating func addToIndex(_ u: Int) {
        for (j, r) in units[u].rules.enumerated() where !r.isCapRule {
            for (k, d) in r.dsts.enumerated() {
                let ref = DstRef(unit: Int32(u), rule: Int32(j), dst: Int32(k))
                if !d.isInternet, let a = d.set.singleAddress {
                    byAddress[a, default: []].append(ref)
                } else {
                    wide[u].append(ref)
                }
            }
        }
    }

    mutating func removeFromIndex(_ u: Int) {
        for r in units[u].rules where !r.isCapRule {
            for d in r.dsts where !d.isInternet {
                guard let a = d.set.singleAddress else { continue }
                byAddress[a]?.removeAll { $0.unit == Int32(u) }
                if byAddress[a]?.isEmpty == true { byAddress[a] = nil }
            }
        }
        wide[u] = []
    }

    // MARK: membership

    /// ``NodeView/isSource(of:)`` without building the view (a node without approved routes has no subnet routes).
    func srcMember(_ set: IPSet, _ n: TailnetNode) -> Bool {
        n.addresses.contains(where: set.contains) || (!n.approvedRoutes.isEmpty && n.subnetRoutes.contains(where: set.overlaps))
    }

    func srcMember(_ set: IPSet, _ view: NodeView) -> Bool { view.isSource(of: set) }

    func dstMember(_ set: IPSet, internet: Bool, _ view: NodeView) -> Bool { view.isDestination(of: set, internet: internet) }

    func computeSrcBits(_ set: IPSet) -> NodeBits {
        var b = NodeBits(count: live.slotCount)
        let candidates = live.candidateSlots(set) ?? live.occupiedSlots
        for s in candidates { if let n = live.nodes[s], srcMember(set, n) { b.insert(s) } }
        for s in live.routers { if srcMember(set, live.nodes[s]!) { b.insert(s) } }
        return b
    }

    func computeDstBits(_ set: IPSet, internet: Bool) -> NodeBits {
        var b = NodeBits(count: live.slotCount)
        let candidates = live.candidateSlots(set) ?? live.occupiedSlots
        for s in candidates { if let n = live.nodes[s], dstMember(set, internet: internet, NodeView(n)) { b.insert(s) } }
        for s in live.routers { if dstMember(set, internet: internet, NodeView(live.nodes[s]!)) { b.insert(s) } }
        return b
    }

    /// The routers that carry a via unit's traffic.
    func viaRouters(_ u: Int) -> [Int] {
        let cu = units[u]
        guard cu.isVia else { return [] }
        return live.routers.sorted().filter { s in cu.carriesVia(live.nodes[s]!) }
    }

    /// The members of an autogroup:self unit's sources among a user's nodes.
    func selfSources(_ u: Int, user: String) -> [Int] {
        let sets = units[u].resolvedSources
        return (live.nodesByUser[user] ?? []).filter { s in
            let n = live.nodes[s]!
            return sets.contains { set in n.addresses.contains(where: set.contains) }
        }
    }

    /// One node's peers from its memberships (the relation is symmetric).
    func computePeers(_ s: Int) -> NodeBits {
        var p = NodeBits(count: live.slotCount)
        guard let node = live.nodes[s] else { return p }
        for u in units.indices {
            for j in units[u].rules.indices {
                if srcBits[u][j].contains(s) { p.formUnion(dstBits[u][j]) }
                if dstBits[u][j].contains(s) { p.formUnion(srcBits[u][j]) }
            }
        }
        addLocalPeers(s, node: node, into: &p)
        p.remove(s)
        return p
    }

    /// The address sets of an autogroup:self unit's rules for one user: the sources (the user's nodes among the
    /// unit's sources, by slot and as addresses) and the destinations (every node of the user); nil without sources.
    func selfSets(_ u: Int, user: String) -> (slots: [Int], src: IPSet, dst: IPSet)? {
        let slots = selfSources(u, user: user)
        guard !slots.isEmpty else { return nil }
        var sb = IPSetBuilder(), db = IPSetBuilder()
        for x in slots { for a in live.nodes[x]!.addresses { sb.add(a) } }
        for x in live.nodesByUser[user] ?? [] { for a in live.nodes[x]!.addresses { db.add(a) } }
        return (slots, sb.build(), db.build())
    }

    /// Peers through autogroup:self (within the node's user) and via (sources and routers).
    ///
    /// A user's autogroup:self rules are rules like any other for the routers whose subnet routes cover the user's
    /// addresses (a route over the tailnet's own range, say): a router covering the sources sees the user's nodes,
    /// one covering the destinations sees the sources, as headscale's per-node matchers and PolicyCompiler make them.
    func addLocalPeers(_ s: Int, node: TailnetNode, into p: inout NodeBits) {
        let routes = node.subnetRoutes
        for u in units.indices {
            if units[u].hasSelf, !node.isTagged, let user = node.user {
                let src = selfSources(u, user: user)
                if !src.isEmpty {
                    for x in src { p.insert(x) }
                    if src.contains(s) { for x in live.nodesByUser[user] ?? [] { p.insert(x) } }
                }
            }
            if units[u].hasSelf, !live.routers.isEmpty {
                var users: Set<String> = []
                if !node.isTagged, let user = node.user { users.insert(user) }
                if !routes.isEmpty { users.formUnion(live.nodesByUser.keys) }
                let view = NodeView(node)
                for user in users {
                    guard let sets = selfSets(u, user: user) else { continue }
                    let inSrc = node.addresses.contains(where: sets.src.contains) || routes.contains(where: sets.src.overlaps)
                    let inDst = view.selectors.contains(where: sets.dst.contains) || routes.contains(where: sets.dst.overlaps)
                    if inSrc {
                        for x in live.nodesByUser[user] ?? [] { p.insert(x) }
                        for r in live.routers where live.nodes[r]!.subnetRoutes.contains(where: sets.dst.overlaps) { p.insert(r) }
                    }
                    if inDst {
                        for x in sets.slots { p.insert(x) }
                        for r in live.routers where live.nodes[r]!.subnetRoutes.contains(where: sets.src.overlaps) { p.insert(r) }
                    }
                }
            }
            if let via = viaSrcBits[u] {
                let routers = viaRouters(u)
                if via.contains(s) { for x in routers { p.insert(x) } }
                if routers.contains(s) { p.formUnion(via) }
            }
        }
    }

    /// Every node's peers: nodes with the same memberships share the work.
    mutating func rebuildAllPeers() {
        let slots = live.slotCount
        peers = Array(repeating: NodeBits(count: slots), count: slots)
        var flat: [(Int, Int)] = []
        for u in units.indices { for j in units[u].rules.indices { flat.append((u, j)) } }
        var bySignature: [[UInt64]: NodeBits] = [:]
        for s in live.occupiedSlots {
            var sig = Array(repeating: UInt64(0), count: (2 * flat.count + 63) / 64)
            for (i, (u, j)) in flat.enumerated() {
                if srcBits[u][j].contains(s) { sig[(2 * i) >> 6] |= 1 << UInt64((2 * i) & 63) }
                if dstBits[u][j].contains(s) { sig[(2 * i + 1) >> 6] |= 1 << UInt64((2 * i + 1) & 63) }
            }
            var p: NodeBits
            if let known = bySignature[sig] {
                p = known
            } else {
                p = NodeBits(count: slots)
                for (i, (u, j)) in flat.enumerated() {
                    if sig[(2 * i) >> 6] & (1 << UInt64((2 * i) & 63)) != 0 { p.formUnion(dstBits[u][j]) }
                    if sig[(2 * i + 1) >> 6] & (1 << UInt64((2 * i + 1) & 63)) != 0 { p.formUnion(srcBits[u][j]) }
                }
                bySignature[sig] = p
            }
            addLocalPeers(s, node: live.nodes[s]!, into: &p)
            p.remove(s)
            peers[s] = p
        }
    }

    func sshSourcesEmpty(_ i: Int) -> Bool { sshStatic[i].sources.allSatisfy { live.resolve($0).isEmpty } }

    func computeSSHSources(_ i: Int) -> SSHSources {
        var out = SSHSources()
        guard !sshSourcesEmpty(i) else { return out }
        out.empty = false
        let set = live.resolve(sshStatic[i].sources)
        let candidates = Set(live.candidateSlots(set) ?? live.occupiedSlots)
        out.members = candidates.filter { live.nodes[$0]!.addresses.contains(where: set.contains) }
        out.taggedMembers = live.sortedByName(out.members.filter { live.nodes[$0]!.isTagged })
        var users = Set<String>()
        for s in out.members { if let n = live.nodes[s], !n.isTagged, let u = n.user { users.insert(u) } }
        for u in users { refreshPrincipals(&out, user: u) }
        refreshOrder(&out)
        return out
    }

    /// A user's principals: the addresses of the user's member nodes, in address order.
    func refreshPrincipals(_ out: inout SSHSources, user: String) {
        var b = IPSetBuilder()
        for s in live.nodesByUser[user] ?? [] where out.members.contains(s) { for a in live.nodes[s]!.addresses { b.add(a) } }
        let set = b.build()
        out.principalsByUser[user] = set.isEmpty ? nil : set.addresses.map { SSHPrincipal(nodeIP: $0.description) }
    }

    /// Users by id, and tagged principals (once per tag, as Tailscale lists them) in node-name order.
    func refreshOrder(_ out: inout SSHSources) {
        out.users = out.principalsByUser.keys.sorted { (userRank[$0] ?? (0, $0)) < (userRank[$1] ?? (0, $1)) }
        refreshTagged(&out)
    }

    func refreshTagged(_ out: inout SSHSources) {
        out.tagged = []
        for s in out.taggedMembers {
            let n = live.nodes[s]!
            for _ in n.tags { out.tagged += n.addresses.map { SSHPrincipal(nodeIP: $0.description) } }
        }
    }

    /// Updates an SSH rule's sources for one node's change (its slot, before and after).
    mutating func updateSSHSources(_ i: Int, slot: Int, old: TailnetNode?, new: TailnetNode?) {
        var src = sshSources[i]
        if sshSourcesEmpty(i) { sshSources[i] = SSHSources(); return }
        src.empty = false
        var users = Set<String>()
        if let old, src.members.remove(slot) != nil {
            src.taggedMembers.removeAll { $0 == slot }
            if !old.isTagged, let u = old.user { users.insert(u) }
        }
        if let new, live.contains(sshStatic[i].sources, new) {
            src.members.insert(slot)
            if new.isTagged {
                let at = src.taggedMembers.firstIndex { live.nodes[$0]!.name > new.name } ?? src.taggedMembers.count
                src.taggedMembers.insert(slot, at: at)
            } else if let u = new.user {
                users.insert(u)
            }
        }
        for u in users {
            refreshPrincipals(&src, user: u)
            // Keep the users in order: take the user out, and put it back where it belongs if it still has principals.
            src.users.removeAll { $0 == u }
            if src.principalsByUser[u] != nil {
                let rank = userRank[u] ?? (0, u)
                let at = src.users.firstIndex { (userRank[$0] ?? (0, $0)) > rank } ?? src.users.count
                src.users.insert(u, at: at)
            }
        }
        if old?.isTagged == true || new?.isTagged == true { refreshTagged(&src) }
        sshSources[i] = src
    }

    // MARK: changes

    /// Applies one node change and returns the names of the nodes whose results may have changed
    /// (a superset of those that did; nodes outside it keep exactly what they had).
    @discardableResult
    public mutating func apply(_ change: NodeChange) -> Set<String> {
        let name: String
        var newNode: TailnetNode?
        switch change {
        case .upsert(let n):
            name = n.name
            newNode = Self.normalize(n, policy: policy, live: live, options: options)
        case .remove(let n):
            name = n
        }
        let oldSlot = live.slotByName[name]
        let oldNode = oldSlot.flatMap { live.nodes[$0] }
        guard oldNode != newNode else { return [] }
        let involved = [oldNode, newNode].compactMap { $0 }
        var changedSlots = NodeBits(count: live.slotCount)
        var changedNames: Set<String> = [name]

        let routesBefore = live.approvedSubnetRoutes
        let routersBefore = live.routers
        var sharers = Set<Int>()
        for n in involved { for a in n.addresses { sharers.formUnion(live.slotsByAddress[a] ?? []) } }
        // Nodes that received the SSH rules this node is a source of, before the change.
        // Plain loops: a closure here would copy the node table, and the insert below would then copy it again.
        var sshTouched: [Int] = []
        for i in policy.ssh.indices {
            for n in involved where live.contains(sshStatic[i].sources, n) { sshTouched.append(i); break }
        }
        for i in sshTouched where sshStatic[i].hasLocalpart { changedSlots.formUnion(sshSources[i].members) }

        // The node table.
        let slot: Int?
        if let newNode { slot = live.insert(newNode) } else { live.remove(name: name); slot = nil }
        let xSlot = slot ?? oldSlot!
        let routesChanged = live.approvedSubnetRoutes != routesBefore
        // The aliases that name the node (before or after); source lists that hold its addresses are made again
        // when a unit needs them.
        var named = Array(repeating: false, count: aliasTable.count)
        for (i, a) in aliasTable.enumerated() where LiveTailnet.namesNodes(a) {
            named[i] = involved.contains { live.names(a, $0) }
        }
        for l in sourceLists.indices where sourceListAliases[l].contains(where: { named[$0] }) {
            if let old = sourceLists[l] { retiredLists[l] = old }
            sourceLists[l] = nil
        }
        let routers = live.routers.union(routersBefore)
        // autogroup:self rules (filters and SSH) list the user's nodes.
        let hasSelf = units.contains(where: \.hasSelf) || sshTouched.contains { sshStatic[$0].selfDsts }
        for n in involved where hasSelf {
            if !n.isTagged, let u = n.user { changedSlots.formUnion(live.nodesByUser[u] ?? []) }
        }

        // Units whose compiled rules depend on the node.
        var recompiled = Set<Int>()
        let wildcard = aliasTable.firstIndex(of: .wildcard)
        func names(_ aliases: [Int]) -> Bool {
            aliases.contains { named[$0] || (routesChanged && $0 == wildcard) }
        }
        for u in units.indices {
            let dstDepends = names(unitDestinations[u])
            guard dstDepends || names(sourceListAliases[unitSourceList[u]]) else { continue }
            let oldRules = units[u].rules
            if dstDepends || !recompileSources(u) { recompile(u) }
            recompiled.insert(u)
            changedReceivers(unit: u, old: oldRules, new: units[u].rules, into: &changedSlots)
            if !grantUnits[u].via.isEmpty { changedSlots.formUnion(routers) }
        }

        // Memberships of the node, of nodes sharing its addresses and of routers (whose routes may meet them);
        // when the node's routes change, also of nodes inside those routes.
        var touched = sharers
        touched.insert(xSlot)
        let xAddresses = involved.flatMap(\.addresses)
        for s in routers {
            guard let n = live.nodes[s] else { touched.insert(s); continue }
            if routesChanged || n.isExitNode || n.subnetRoutes.contains(where: { r in xAddresses.contains(where: r.contains) }) {
                touched.insert(s)
            }
        }
        if routesChanged {
            // The address index answers which nodes have an address inside the routes.
            let routes = involved.flatMap(\.subnetRoutes)
            if !routes.isEmpty { touched.formUnion(live.slots(in: IPSet(prefixes: routes))) }
        }
        // In a rule whose sets did not change, only the changed node's own membership can have moved.
        // Each node's view is made once (views allocate).
        let touchedViews = touched.sorted().map { s in (slot: s, view: live.nodes[s].map(NodeView.init)) }
        let xOnly = [(slot: xSlot, view: live.nodes[xSlot].map(NodeView.init))]
        for u in units.indices {
            let update = recompiled.contains(u) ? touchedViews : xOnly
            for j in units[u].rules.indices {
                let set = units[u].rules[j].srcSet, dst = dstSets[u][j], internet = toInternet[u][j]
                for (s, view) in update {
                    guard let view else { srcBits[u][j].remove(s); dstBits[u][j].remove(s); continue }
                    srcBits[u][j].set(s, srcMember(set, view))
                    dstBits[u][j].set(s, dstMember(dst, internet: internet, view))
                }
            }
            if viaSrcBits[u] != nil {
                let set = units[u].viaSrcSet
                for (s, view) in update {
                    if let view { viaSrcBits[u]!.set(s, srcMember(set, view)) } else { viaSrcBits[u]!.remove(s) }
                }
            }
        }

        // Peers: only relations that involve a touched node can change; update both ends.
        while peers.count < live.slotCount { peers.append(NodeBits(count: live.slotCount)) }
        for s in touched.sorted() {
            let fresh = computePeers(s)
            let diff = peers[s].symmetricDifference(fresh)
            guard !diff.isEmpty else { continue }
            changedSlots.insert(s)
            for other in diff.members where other < peers.count {
                peers[other].set(s, fresh.contains(other))
                changedSlots.insert(other)
            }
            peers[s] = fresh
        }

        // SSH sources that list the node.
        for i in sshTouched {
            if sshSources[i].empty {
                sshSources[i] = computeSSHSources(i)
            } else {
                updateSSHSources(i, slot: xSlot, old: oldNode, new: newNode)
            }
            if sshStatic[i].hasLocalpart { changedSlots.formUnion(sshSources[i].members) }
            // The rule's destinations (addresses are unique, so the alias sets name exactly these nodes).
            changedSlots.formUnion(live.slots(in: live.resolve(sshStatic[i].otherDsts)))
        }

        let changedList = changedSlots.members
        changedNames.reserveCapacity(changedList.count + 1)
        for s in changedList { if let n = live.nodes[s] { changedNames.insert(n.name) } }
        return changedNames
    }

    /// Adds the nodes whose filters a unit's recompilation can change: all that a rule reaches when its
    /// sources or protocols changed (or it came or went), else those that the added or removed
    /// destinations reach.
    func changedReceivers(unit u: Int, old: [CompiledRule], new: [CompiledRule], into out: inout NodeBits) {
        var delta = IPSetBuilder()
        var any = false
        let sameDsts = Self.sameDestinations(old, new)
        func whole(_ r: CompiledRule) {
            for d in r.dsts { delta.add(d.set) }
            for g in r.capGrants { for p in g.dsts { delta.add(p) } }
            any = true
        }
        for r in new where !old.contains(where: { $0.slot == r.slot }) { whole(r) }
        for (j, o) in old.enumerated() {
            guard let r = new.first(where: { $0.slot == o.slot }) else { whole(o); continue }
            if Self.differentSources(o, r) || o.proto != r.proto || o.capGrants.map(\.capMap) != r.capGrants.map(\.capMap) {
                if sameDsts {
                    // The destination set is the same before and after. A filter rule reaches the nodes that
                    // one of its destinations selects (an address of theirs in it: in its destination
                    // memberships, current but for the changed node, which the caller lists) and routers.
                    if o.isCapRule { delta.add(dstSets[u][j]) } else { out.formUnion(dstBits[u][j]) }
                    any = true
                } else {
                    whole(o); whole(r)
                }
                continue
            }
            if sameDsts { continue }
            struct Entry: Hashable { var ip: String; var first: Int; var last: Int; var internet: Bool; var grant: Int }
            func entries(_ x: CompiledRule) -> [Entry: IPSet] {
                var m: [Entry: IPSet] = [:]
                for d in x.dsts {
                    m[Entry(ip: d.ip, first: Int(d.ports.first), last: Int(d.ports.last), internet: d.isInternet, grant: -1)] = d.set
                }
                for (i, g) in x.capGrants.enumerated() {
                    for p in g.dsts { m[Entry(ip: p.description, first: 0, last: 0, internet: false, grant: i)] = IPSet(prefixes: [p]) }
                }
                return m
            }
            let a = entries(o), b = entries(r)
            for (k, set) in a where b[k] == nil { delta.add(set); any = true }
            for (k, set) in b where a[k] == nil { delta.add(set); any = true }
        }
        guard any else { return }
        out.formUnion(live.slots(in: delta.build()))
        out.formUnion(live.routers)
    }

    /// Whether two rules' SrcIPs differ (node-address lists compare as address runs, not strings).
    static func differentSources(_ a: CompiledRule, _ b: CompiledRule) -> Bool {
        if let x = a.srcList, let y = b.srcList { return x != y }
        return MergeKey.sources(a) != MergeKey.sources(b)
    }

    /// Whether two compilations of a unit have the same rules in the same places with the same destinations
    /// (then index entries and destination sets stay valid).
    static func sameDestinations(_ a: [CompiledRule], _ b: [CompiledRule]) -> Bool {
        guard a.count == b.count else { return false }
        for (x, y) in zip(a, b) {
            guard x.slot == y.slot, x.dsts.count == y.dsts.count, x.toInternet == y.toInternet,
                  x.capGrants.count == y.capGrants.count else { return false }
            for (d, e) in zip(x.dsts, y.dsts) where d.ip != e.ip || d.ports != e.ports || d.isInternet != e.isInternet {
                return false
            }
            for (g, h) in zip(x.capGrants, y.capGrants) where g.dsts != h.dsts { return false }
        }
        return true
    }

    /// Recompiles only a unit's sources when its destinations did not change: the rules keep their destinations
    /// (and index entries, destination sets and memberships) and take the new SrcIPs. Returns false, changing
    /// nothing, when the unit needs a full compile (via, capabilities, wildcard sources, no rules before or after).
    mutating func recompileSources(_ u: Int) -> Bool {
        let unit = grantUnits[u]
        guard unit.via.isEmpty, unit.app?.isEmpty ?? true, !units[u].isVia, !units[u].rules.isEmpty,
              !unit.sources.contains(.wildcard), !unit.sources.contains(.autogroup("autogroup:danger-all")),
              !units[u].rules.contains(where: \.isCapRule) else { return false }
        let resolved = unit.sources.map { live.resolve($0) }
        var list = sourceLists[unitSourceList[u]]
        if list == nil, let made = live.nodeSources(unit.sources) {
            list = made
            install(made, at: unitSourceList[u])
        }
        let srcSet: IPSet
        if let list {
            srcSet = list.union
        } else if resolved.count == 1 {
            srcSet = resolved[0]
        } else {
            var b = IPSetBuilder()
            for x in resolved { b.add(x) }
            srcSet = b.build()
        }
        guard !srcSet.isEmpty else { return false }
        let srcIPs = list == nil ? PolicyCompiler.srcStrings(unit.sources, resolver: live) : []
        guard list != nil || !srcIPs.isEmpty else { return false }
        for id in keys[u] where id != 0 { releaseKey(id) }
        units[u].resolvedSources = resolved
        for j in units[u].rules.indices {
            units[u].rules[j].srcIPs = srcIPs
            units[u].rules[j].srcSet = srcSet
            units[u].rules[j].srcList = list
        }
        keys[u] = units[u].rules.map { internKey($0) }
        return true
    }

    /// Compiles a unit again and refreshes its index entries and memberships. Memberships of a rule
    /// that existed before are kept: only the changed node (and routers) can have moved, and the
    /// caller re-evaluates those.
    mutating func recompile(_ u: Int) {
        let oldRules = units[u].rules
        let oldSrc = srcBits[u], oldDst = dstBits[u]
        let wasVia = units[u].isVia
        let fresh = PolicyCompiler.compile(grantUnits[u], resolver: live)
        if Self.sameDestinations(oldRules, fresh.rules) {
            // Sources changed only: new merge keys; index entries, destination sets and memberships stay.
            units[u] = fresh
            shareSourceLists(u)
            for id in keys[u] where id != 0 { releaseKey(id) }
            keys[u] = units[u].rules.map { $0.isCapRule ? 0 : internKey($0) }
            if units[u].isVia, !wasVia || viaSrcBits[u] == nil { viaSrcBits[u] = computeSrcBits(units[u].viaSrcSet) }
            if !units[u].isVia { viaSrcBits[u] = nil }
            return
        }
        removeFromIndex(u)
        units[u] = fresh
        shareSourceLists(u)
        deriveRuleData(u)
        addToIndex(u)
        var sb: [NodeBits] = [], db: [NodeBits] = []
        for (j, r) in units[u].rules.enumerated() {
            if let k = oldRules.firstIndex(where: { $0.slot == r.slot }) {
                sb.append(oldSrc[k]); db.append(oldDst[k])
            } else {
                sb.append(computeSrcBits(r.srcSet))
                db.append(computeDstBits(dstSets[u][j], internet: toInternet[u][j]))
            }
        }
        srcBits[u] = sb
        dstBits[u] = db
        if units[u].isVia {
            if !wasVia || viaSrcBits[u] == nil { viaSrcBits[u] = computeSrcBits(units[u].viaSrcSet) }
        } else {
            viaSrcBits[u] = nil
        }
    }

    // MARK: reading results

    public var nodeNames: [String] { live.slotByName.keys.sorted() }

    public func node(named name: String) -> TailnetNode? { live.slotByName[name].flatMap { live.nodes[$0] } }

    /// The packet filter of one node, in Tailscale's wire form.
    public func packetFilter(for name: String) -> [FilterRule] {
        guard let s = live.slotByName[name], let node = live.nodes[s] else { return [] }
        return reducedRules(node).map(PolicyCompiler.wire)
    }

    /// The node's rules, reduced to what concerns it and merged, in the order of their first part.
    func reducedRules(_ node: TailnetNode) -> [CompiledRule] {
        let view = NodeView(node)
        struct Part { var pos: Int; var key: Int?; var rule: CompiledRule; var dsts: [CompiledDestination]; var selected: Bool }
        var parts: [Part] = []
        let stride = 1 << 16
        var localKeys: [MergeKey: Int] = [:]
        func key(_ r: CompiledRule) -> Int {
            let k = MergeKey(r)
            if let known = keyTable[k] { return known }
            if let local = localKeys[k] { return local }
            localKeys[k] = -(localKeys.count + 1)
            return -localKeys.count
        }

        func addFiltered(_ r: CompiledRule, pos: Int, key: Int) {
            let dsts = r.dsts.filter(view.matches)
            if !dsts.isEmpty { parts.append(Part(pos: pos, key: key, rule: r, dsts: dsts, selected: dsts.contains(where: view.selects))) }
        }
        func addCap(_ r: CompiledRule, pos: Int) {
            if let reduced = PolicyCompiler.reduce([r], view: view).first {
                parts.append(Part(pos: pos, key: nil, rule: reduced, dsts: [], selected: true))
            }
        }

        // Global rules through the destination index (routers and exit nodes look at every destination).
        var refs: [DstRef] = []
        if view.routes.isEmpty && !view.exit {
            for a in node.addresses { refs += byAddress[a] ?? [] }
            for w in wide { refs += w }
        } else {
            for u in units.indices {
                for (j, r) in units[u].rules.enumerated() where !r.isCapRule {
                    for k in r.dsts.indices { refs.append(DstRef(unit: Int32(u), rule: Int32(j), dst: Int32(k))) }
                }
            }
        }
        refs.sort { ($0.unit, $0.rule, $0.dst) < ($1.unit, $1.rule, $1.dst) }
        var i = 0
        while i < refs.count {
            let u = Int(refs[i].unit), j = Int(refs[i].rule)
            var dsts: [CompiledDestination] = []
            let r = units[u].rules[j]
            while i < refs.count && refs[i].unit == Int32(u) && refs[i].rule == Int32(j) {
                let d = r.dsts[Int(refs[i].dst)]
                if view.matches(d) { dsts.append(d) }
                i += 1
            }
            if !dsts.isEmpty {
                parts.append(Part(pos: u * stride + j, key: keys[u][j], rule: r, dsts: dsts, selected: dsts.contains(where: view.selects)))
            }
        }
        for u in units.indices {
            for (j, r) in units[u].rules.enumerated() where r.isCapRule { addCap(r, pos: u * stride + j) }
            if units[u].hasSelf, !node.isTagged, let user = node.user {
                let same = live.sortedByName(live.nodesByUser[user] ?? []).map { live.nodes[$0]! }
                for (j, r) in PolicyCompiler.selfRules(units[u], sameUser: same).enumerated() {
                    if r.isCapRule { addCap(r, pos: u * stride + 20_000 + j) } else { addFiltered(r, pos: u * stride + 20_000 + j, key: key(r)) }
                }
            }
            if units[u].isVia {
                for (j, r) in PolicyCompiler.viaRules(units[u], node: node).enumerated() {
                    addFiltered(r, pos: u * stride + 40_000 + j, key: key(r))
                }
            }
        }
        parts.sort { $0.pos < $1.pos }
        var out: [(rule: CompiledRule, selected: Bool)] = []
        var groupIndex: [Int: Int] = [:]
        for p in parts {
            guard let key = p.key else { out.append((p.rule, true)); continue }
            if let g = groupIndex[key] {
                out[g].rule.dsts += p.dsts
                out[g].selected = out[g].selected || p.selected
            } else {
                groupIndex[key] = out.count
                var r = p.rule
                r.dsts = p.dsts
                out.append((r, p.selected))
            }
        }
        return out.filter(\.selected).map(\.rule)
    }

    /// The SSH policy a node receives; nil when the policy has no `ssh` section.
    public func sshPolicy(for name: String) -> SSHPolicy? {
        guard let s = live.slotByName[name], let node = live.nodes[s] else { return nil }
        return sshPolicy(node: node)
    }

    func sshPolicy(node: TailnetNode) -> SSHPolicy? {
        guard !policy.ssh.isEmpty else { return nil }
        var rules: [(check: Bool, rule: SSHRule)] = []
        for (i, rule) in policy.ssh.enumerated() {
            let st = sshStatic[i], src = sshSources[i]
            guard !src.empty else { continue }
            let isCheck = rule.action == .check
            func append(_ principals: [SSHPrincipal], user: String?) {
                rules.append((isCheck, SSHRule(principals: principals, sshUsers: st.baseUsers, action: st.action,
                                                acceptEnv: rule.acceptEnv)))
                if let user, let lp = st.localpartByUser[user] {
                    rules.append((isCheck, SSHRule(principals: principals, sshUsers: [lp: lp], action: st.action,
                                                    acceptEnv: rule.acceptEnv)))
                }
            }
            if st.selfDsts, !node.isTagged, let u = node.user, let p = src.principalsByUser[u], !p.isEmpty {
                append(p, user: u)
            }
            guard !st.otherDsts.isEmpty else { continue }
            if live.contains(st.otherDsts, node) {
                if st.hasLocalpart {
                    for u in src.users { append(src.principalsByUser[u] ?? [], user: u) }
                    if !src.tagged.isEmpty { append(src.tagged, user: nil) }
                } else {
                    let all = src.users.flatMap { src.principalsByUser[$0] ?? [] } + src.tagged
                    if !all.isEmpty { append(all, user: nil) }
                }
            } else if st.hasLocalpart && live.contains(st.sources, node) {
                if node.isTagged {
                    append(node.addresses.map { SSHPrincipal(nodeIP: $0.description) }, user: nil)
                } else if let u = node.user, let p = src.principalsByUser[u], !p.isEmpty {
                    append(p, user: u)
                }
            }
        }
        let sorted = rules.filter(\.check) + rules.filter { !$0.check }
        return SSHPolicy(rules: sorted.map(\.rule))
    }

    /// How many peers the node has.
    public func peerCount(for name: String) -> Int {
        guard let s = live.slotByName[name], s < peers.count else { return 0 }
        return peers[s].members.count
    }

    /// Names of the node's peers, sorted.
    public func peers(for name: String) -> [String] {
        guard let s = live.slotByName[name], s < peers.count else { return [] }
        return peers[s].members.compactMap { live.nodes[$0]?.name }.sorted()
    }

    public func capabilities(for node: TailnetNode) -> NodeCapMap {
        PolicyCapabilities.nodeCapabilities(policy) { live.contains($0.targets.map(\.value), node) }
    }

    /// Everything one node receives.
    public func nodePolicy(for name: String) -> NodePolicy? {
        guard let s = live.slotByName[name], let node = live.nodes[s] else { return nil }
        return NodePolicy(packetFilter: reducedRules(node).map(PolicyCompiler.wire), sshPolicy: sshPolicy(node: node),
                          peers: peers(for: name), capabilities: capabilities(for: node),
                          autoApprovedRoutes: Self.autoApproved(node, policy: policy, live: live))
    }

    /// Everything each node receives, keyed by node name.
    public func compileAll() -> [String: NodePolicy] {
        var out: [String: NodePolicy] = [:]
        for name in live.slotByName.keys { out[name] = nodePolicy(for: name) }
        return out
    }
}
