import WarrenPacket

/// The nodes of a tailnet that changes one node at a time, kept in stable slots with the indexes
/// that alias resolution needs (by user, by tag, by address). Users are fixed.
///
/// Node addresses are taken to be unique within the tailnet (the control server allocates them), so a
/// node is in an alias's address set exactly when the alias names the node.
struct LiveTailnet: AliasResolving, Sendable {
    let policy: Policy
    let users: [TailnetUser]
    var userNamesByLogin: [String: [String]] = [:]
    var domainsByUserName: [String: [String]] = [:]
    /// Nodes by slot; nil for a free slot.
    var nodes: [TailnetNode?] = []
    var slotByName: [String: Int] = [:]
    var freeSlots: [Int] = []
    var nodesByUser: [String: Set<Int>] = [:]
    var nodesByTag: [String: Set<Int>] = [:]
    var untagged: Set<Int> = []
    var tagged: Set<Int> = []
    /// Nodes with an approved subnet route or an approved exit route.
    var routers: Set<Int> = []
    var slotsByAddress: [IPAddress: [Int]] = [:]
    /// Every node address in order, per family, with its slot: sets become range queries.
    var v4Keys: [U128] = [], v4Slots: [Int] = []
    var v6Keys: [U128] = [], v6Slots: [Int] = []
    private(set) var approvedSubnetRoutes: [String] = []
    /// Group names by member user name.
    var groupsByUserName: [String: Set<String>] = [:]
    /// Node-naming aliases the policy uses, resolved and kept up to date node by node.
    var aliasCache: [Alias: IPSet] = [:]
    /// Whether inserts and removals keep `aliasCache` current (off during a bulk load).
    var maintainsCache = true

    func nodeSources(_ aliases: [Alias]) -> SourceList? {
        guard maintainsCache, !aliases.isEmpty else { return nil }
        var sets: [IPSet] = []
        sets.reserveCapacity(aliases.count)
        for a in aliases {
            guard let set = aliasCache[a] else { return nil }
            sets.append(set)
        }
        return SourceList.concatenating(sets)
    }

    init(policy: Policy, users: [TailnetUser], cachedAliases: Set<Alias> = []) {
        self.policy = policy
        self.users = users
        for alias in cachedAliases where Self.namesNodes(alias) { aliasCache[alias] = IPSet() }
        for (g, members) in policy.groups {
            for m in members { for name in Self.userNames(m, in: users) { groupsByUserName[name, default: []].insert(g) } }
        }
        // Groups from the identity provider: declared groups only.
        for u in users {
            for g in u.providerGroups where policy.groups["group:" + g] != nil { groupsByUserName[u.name, default: []].insert("group:" + g) }
        }
        for u in users {
            userNamesByLogin[u.email, default: []].append(u.name)
            if u.name != u.email { userNamesByLogin[u.name, default: []].append(u.name) }
            if let at = u.email.lastIndex(of: "@") {
                domainsByUserName[u.name, default: []].append(u.email[u.email.index(after: at)...].lowercased())
            }
        }
    }

    var nodeCount: Int { slotByName.count }
    var slotCount: Int { nodes.count }
    var occupiedSlots: [Int] { Array(slotByName.values) }
    /// Node addresses as text (formatting IPv6 is not free).
    var addressText: [IPAddress: String] = [:]

    func text(_ a: IPAddress) -> String { addressText[a] ?? a.description }

    static func isRouter(_ n: TailnetNode) -> Bool { !n.subnetRoutes.isEmpty || n.isExitNode }

    /// Puts a node in its slot (its old slot when the name is known); returns the slot.
    @discardableResult
    mutating func insert(_ n: TailnetNode) -> Int {
        if let old = slotByName[n.name] { removeSlot(old, keepName: true) }
        let slot: Int
        if let s = slotByName[n.name] {
            slot = s
        } else if let s = freeSlots.popLast() {
            slot = s
        } else {
            slot = nodes.count
            nodes.append(nil)
        }
        slotByName[n.name] = slot
        nodes[slot] = n
        if n.isTagged {
            tagged.insert(slot)
            for t in n.tags { nodesByTag[t, default: []].insert(slot) }
        } else {
            untagged.insert(slot)
            if let u = n.user { nodesByUser[u, default: []].insert(slot) }
        }
        for a in n.addresses {
            slotsByAddress[a, default: []].append(slot)
            if addressText[a] == nil { addressText[a] = a.description }
            let (isV6, k) = IPSet.key(a)
            if isV6 { Self.indexInsert(k, slot, &v6Keys, &v6Slots) } else { Self.indexInsert(k, slot, &v4Keys, &v4Slots) }
        }
        if Self.isRouter(n) {
            routers.insert(slot)
            refreshRoutes()
        }
        if maintainsCache {
            // The aliases first: changing the cache while iterating it would copy it.
            let named = aliasCache.keys.filter { names($0, n) }
            for alias in named {
                for a in n.addresses { aliasCache[alias]!.insert(a) }
            }
        }
        return slot
    }

    mutating func remove(name: String) {
        guard let slot = slotByName[name] else { return }
        removeSlot(slot, keepName: false)
    }

    private mutating func removeSlot(_ slot: Int, keepName: Bool) {
        guard let n = nodes[slot] else { return }
        nodes[slot] = nil
        tagged.remove(slot)
        untagged.remove(slot)
        for t in n.tags { nodesByTag[t]?.remove(slot) }
        if let u = n.user { nodesByUser[u]?.remove(slot) }
        for a in n.addresses {
            let (isV6, k) = IPSet.key(a)
            if isV6 { Self.indexRemove(k, slot, &v6Keys, &v6Slots) } else { Self.indexRemove(k, slot, &v4Keys, &v4Slots) }
            slotsByAddress[a]?.removeAll { $0 == slot }
            if slotsByAddress[a]?.isEmpty == true {
                slotsByAddress[a] = nil
                addressText[a] = nil
            }
        }
        if routers.remove(slot) != nil { refreshRoutes() }
        if maintainsCache {
            let named = aliasCache.keys.filter { names($0, n) }
            for alias in named {
                for a in n.addresses where !(slotsByAddress[a] ?? []).contains(where: { names(alias, nodes[$0]!) }) {
                    aliasCache[alias]!.remove(a)
                }
            }
        }
        if !keepName {
            slotByName[n.name] = nil
            freeSlots.append(slot)
        }
    }

    private mutating func refreshRoutes() {
        var seen = Set<String>()
        var out: [String] = []
        for slot in routers.sorted(by: { nodes[$0]!.name < nodes[$1]!.name }) {
            for r in nodes[slot]!.subnetRoutes where seen.insert(r.description).inserted { out.append(r.description) }
        }
        approvedSubnetRoutes = out
    }

    /// Slots sorted by node name.
    func sortedByName<S: Sequence>(_ slots: S) -> [Int] where S.Element == Int {
        slots.sorted { nodes[$0]!.name < nodes[$1]!.name }
    }

    /// Fills every cached alias from the node table (after a bulk load).
    mutating func rebuildCaches() {
        for alias in Array(aliasCache.keys) { aliasCache[alias] = resolveUncached(alias) }
        maintainsCache = true
    }

    // MARK: aliases

    static func userNames(_ token: String, in users: [TailnetUser]) -> [String] {
        var t = token
        if t.hasSuffix("@") { t.removeLast() }
        var names: [String] = []
        for u in users {
            if u.email == t { names.append(u.name) }
            if u.name != u.email && u.name == t { names.append(u.name) }
        }
        return names.count == 1 ? names : []
    }

    func userNames(_ token: String) -> [String] {
        var t = token
        if t.hasSuffix("@") { t.removeLast() }
        let names = userNamesByLogin[t] ?? []
        return names.count == 1 ? names : []
    }

    /// Whether the alias names nodes (by owner, tag or kind) rather than addresses.
    static func namesNodes(_ a: Alias) -> Bool {
        switch a {
        case .user, .userDomain, .group, .tag: return true
        case .autogroup("autogroup:member"), .autogroup("autogroup:tagged"): return true
        default: return false
        }
    }

    func nodeSlots(for alias: Alias) -> [Int]? {
        switch alias {
        case .user(let u): return userNames(u).flatMap { nodesByUser[$0] ?? [] }
        case .userDomain(let domain):
            let d = domain.lowercased()
            var names = Set<String>()
            for u in users where domainsByUserName[u.name]?.contains(d) == true { names.insert(u.name) }
            return names.flatMap { nodesByUser[$0] ?? [] }
        case .group(let g):
            return policy.groupMemberNames(g, users: users, userNames: userNames).flatMap { nodesByUser[$0] ?? [] }
        case .tag(let t): return Array(nodesByTag[t] ?? [])
        case .autogroup("autogroup:member"): return Array(untagged)
        case .autogroup("autogroup:tagged"): return Array(tagged)
        default: return nil
        }
    }

    /// Whether a node-naming alias names `n`.
    func names(_ alias: Alias, _ n: TailnetNode) -> Bool {
        switch alias {
        case .user(let u):
            guard !n.isTagged, let owner = n.user else { return false }
            return userNames(u).contains(owner)
        case .userDomain(let domain):
            guard !n.isTagged, let owner = n.user else { return false }
            return domainsByUserName[owner]?.contains(domain.lowercased()) == true
        case .group(let g):
            guard !n.isTagged, let owner = n.user else { return false }
            return groupsByUserName[owner]?.contains(g) == true
        case .tag(let t): return n.tags.contains(t)
        case .autogroup("autogroup:member"): return !n.isTagged
        case .autogroup("autogroup:tagged"): return n.isTagged
        default: return false
        }
    }

    /// Whether the alias covers the node: names it, or holds one of its addresses.
    func contains(_ alias: Alias, _ n: TailnetNode) -> Bool {
        if Self.namesNodes(alias) { return names(alias, n) }
        var b = IPSetBuilder()
        Resolver.addAddressAlias(alias, policy: policy, to: &b)
        let set = b.build()
        return n.addresses.contains(where: set.contains)
    }

    func contains(_ aliases: [Alias], _ n: TailnetNode) -> Bool { aliases.contains { contains($0, n) } }

    func resolve(_ alias: Alias) -> IPSet {
        if let set = aliasCache[alias], maintainsCache { return set }
        return resolveUncached(alias)
    }

    func resolveUncached(_ alias: Alias) -> IPSet {
        var b = IPSetBuilder()
        if let slots = nodeSlots(for: alias) {
            for s in slots { for a in nodes[s]!.addresses { b.add(a) } }
        } else {
            Resolver.addAddressAlias(alias, policy: policy, to: &b)
        }
        return b.build()
    }

    func resolve(_ aliases: [Alias]) -> IPSet {
        var b = IPSetBuilder()
        for a in aliases { b.add(resolve(a)) }
        return b.build()
    }

    func sourceStrings(_ alias: Alias) -> [String] {
        if nodeSlots(for: alias) != nil { return resolve(alias).addresses.map(text) }
        return resolve(alias).rangeStrings
    }

    // MARK: sets to slots

    static func lowerBound(_ k: U128, _ keys: [U128]) -> Int {
        var lo = 0, hi = keys.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if keys[mid] < k { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    static func indexInsert(_ k: U128, _ slot: Int, _ keys: inout [U128], _ slots: inout [Int]) {
        let i = lowerBound(k, keys)
        keys.insert(k, at: i)
        slots.insert(slot, at: i)
    }

    static func indexRemove(_ k: U128, _ slot: Int, _ keys: inout [U128], _ slots: inout [Int]) {
        var i = lowerBound(k, keys)
        while i < keys.count && keys[i] == k {
            if slots[i] == slot {
                keys.remove(at: i)
                slots.remove(at: i)
                return
            }
            i += 1
        }
    }

    /// The slots with an address in `set` (a slot may appear once per matching address).
    func slots(in set: IPSet) -> [Int] {
        var out: [Int] = []
        for (ranges, keys, slots) in [(set.v4, v4Keys, v4Slots), (set.v6, v6Keys, v6Slots)] {
            for r in ranges {
                var i = Self.lowerBound(r.lowerBound, keys)
                while i < keys.count && keys[i] <= r.upperBound {
                    out.append(slots[i])
                    i += 1
                }
            }
        }
        return out
    }

    /// The slots whose addresses may lie in `set`, or nil when the set is too large to list
    /// (then every slot is a candidate). Routers are not included.
    func candidateSlots(_ set: IPSet) -> [Int]? { slots(in: set) }
}

extension IPSet {
    /// The number of addresses, or nil when above `limit`.
    func addressCount(limit: Int) -> Int? {
        var total = 0
        for r in v4 + v6 {
            let (hi, borrow) = r.upperBound.lo.subtractingReportingOverflow(r.lowerBound.lo)
            let hiDiff = r.upperBound.hi &- r.lowerBound.hi &- (borrow ? 1 : 0)
            guard hiDiff == 0, hi < UInt64(limit) else { return nil }
            total += Int(hi) + 1
            if total > limit { return nil }
        }
        return total
    }

    /// Calls `body` with every address (use only on sets that `addressCount` found small).
    func forEachAddress(_ body: (IPAddress) -> Void) {
        for (ranges, isV6) in [(v4, false), (v6, true)] {
            for r in ranges {
                var k = r.lowerBound
                while true {
                    body(Self.address(k, v6: isV6))
                    if k >= r.upperBound { break }
                    guard let n = k.successor else { break }
                    k = n
                }
            }
        }
    }

    /// The one address of a single-address set.
    var singleAddress: IPAddress? {
        if v4.count == 1, v6.isEmpty, v4[0].lowerBound == v4[0].upperBound { return Self.address(v4[0].lowerBound, v6: false) }
        if v6.count == 1, v4.isEmpty, v6[0].lowerBound == v6[0].upperBound { return Self.address(v6[0].lowerBound, v6: true) }
        return nil
    }
}
