import WarrenPacket
import WarrenTailcfg

/// Where a compiled rule came from in the policy file.
public struct RuleOrigin: Hashable, Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable { case acl = "acls", grant = "grants" }
    public var kind: Kind
    public var index: Int
    public var position: SourcePosition

    public var description: String { "\(kind.rawValue)[\(index)] at line \(position.line)" }
}

/// What one node receives: its packet filter, SSH policy, visible peers, capabilities.
public struct NodePolicy: Sendable, Equatable {
    public var packetFilter: [FilterRule]
    public var sshPolicy: SSHPolicy?
    /// Names of the peers in the node's network map, sorted.
    public var peers: [String]
    /// Node capabilities from nodeAttrs (and tailnet options in the file); a bare attribute's value is nil (null).
    public var capabilities: NodeCapMap
    /// Advertised routes (including exit routes) that autoApprovers approve for this node.
    public var autoApprovedRoutes: [IPPrefix]
}

struct CompiledDestination: Sendable {
    var ip: String
    var set: IPSet
    var ports: PortRange
    /// Part of autogroup:internet: only exit nodes receive it.
    var isInternet = false
    /// The rule this destination came from (set when rules are merged).
    var origin: RuleOrigin?
}

struct CompiledCapGrant: Sendable {
    var dsts: [IPPrefix]
    var capMap: PeerCapMap?
}

struct CompiledRule: Sendable {
    var origin: RuleOrigin
    /// SrcIPs, unless `srcList` holds them (then empty).
    var srcIPs: [String]
    /// The sources as a set, for matching (danger-all is everything).
    var srcSet: IPSet
    var dsts: [CompiledDestination]
    var proto: [Int]?
    var capGrants: [CompiledCapGrant] = []
    /// The rule reaches autogroup:internet (exit nodes); never on the wire.
    var toInternet = false
    /// For a via rule: the router it was made for (only that router carries the traffic).
    var viaRouter: String?
    /// SrcIPs as node addresses, when the resolver keeps them as sets (strings made on demand).
    var srcList: SourceList?
    /// Which part of its unit the rule is: the index of its `ip` entry, or `capSlot` (+ companion index).
    var slot = 0

    static let capSlot = 10_000

    var isCapRule: Bool { !capGrants.isEmpty }

    /// SrcIPs as Tailscale writes them.
    var sourceStrings: [String] { srcList?.strings ?? srcIPs }

    var hasSources: Bool { srcList.map { !$0.isEmpty } ?? !srcIPs.isEmpty }

    /// Rules with equal keys (same sources, same protocols) are folded into one.
    var mergeKey: String {
        sourceStrings.joined(separator: ",") + "|" + (proto.map { $0.map(String.init).joined(separator: ",") } ?? "nil")
    }
}

/// One grant (or one destination of an ACL, as Tailscale splits them).
struct GrantUnit: Sendable {
    var origin: RuleOrigin
    var sources: [Alias]
    var destinations: [Alias]
    var ip: [ProtocolPorts]
    var app: PeerCapMap?
    var via: [String]
}

/// A grant unit compiled against the tailnet: its rules for everyone, and what it needs per node.
struct CompiledUnit: Sendable {
    var unit: GrantUnit
    var rules: [CompiledRule] = []
    /// Sources resolved one alias at a time (for autogroup:self and via).
    var resolvedSources: [IPSet] = []
    var hasSelf = false
    var isVia = false
    var viaSrcIPs: [String] = []
    var viaSrcSet = IPSet()
    var viaDsts: [IPPrefix] = []
    var viaInternet = false

    /// Whether a node is one of the routers that carry this via unit's traffic: it has one of the via tags and a
    /// subnet route overlapping one of the destinations. PolicyCompiler and PolicyEngine both ask this.
    func carriesVia(_ node: TailnetNode) -> Bool {
        isVia && unit.via.contains(where: node.tags.contains)
            && viaDsts.contains { d in node.subnetRoutes.contains { $0.overlaps(d) } }
    }

    /// Whether a node is among a via unit's sources (an address of its, or a route it serves, in them).
    func viaSource(_ node: TailnetNode) -> Bool {
        isVia && (node.addresses.contains(where: viaSrcSet.contains)
            || (!node.approvedRoutes.isEmpty && node.subnetRoutes.contains(where: viaSrcSet.overlaps)))
    }
}

public struct CompileOptions: Sendable {
    /// The control server URL that `check` SSH actions delegate to.
    public var controlURL: String

    /// Whether advertised routes that autoApprovers approve count as approved.
    public var applyAutoApprovers: Bool

    /// Whether the control server gives the policy its users' groups from the identity provider
    /// (``TailnetUser/providerGroups``, `oidc.groups_in_policy`). The compiler itself resolves whatever groups the
    /// users carry; this says whether the server fills them in.
    public var providerGroups: Bool

    public init(controlURL: String = "https://unused", applyAutoApprovers: Bool = true, providerGroups: Bool = false) {
        self.controlURL = controlURL
        self.applyAutoApprovers = applyAutoApprovers
        self.providerGroups = providerGroups
    }
}

/// Compiles a policy against a whole tailnet into what each node receives, in one pass and without indexes.
///
/// This is the reference: the test oracle that ``PolicyEngine`` (what the server, `policy check`, `policy compile`
/// and `policy explain` run) is checked against, capture by capture and on random tailnets. The semantics live in
/// the building blocks both use, so a fix lands once: grant units and their compilation (`grantUnits`,
/// `compile`), autogroup:self and via rules (`selfRules`, `viaRules`), reduction to one node (`reduce`), the wire
/// form (`wire`), capabilities (``PolicyCapabilities``), SSH actions and principals, and validation
/// (``PolicyValidator``). What stays written twice is only the bookkeeping: this type recomputes everything per
/// node, the engine keeps indexes and recomputes what a change touches.
public struct PolicyCompiler: Sendable {
    public let policy: Policy
    public let tailnet: Tailnet
    public let options: CompileOptions
    let resolver: Resolver
    let units: [CompiledUnit]
    let globalRules: [CompiledRule]
    let needsPerNode: Bool
    let indexByName: [String: Int]

    public init(policy: Policy, tailnet given: Tailnet, options: CompileOptions = CompileOptions()) {
        self.policy = policy
        self.options = options
        // Routes that autoApprovers approve count as approved, as they are the moment a node advertises them.
        var tailnet = given
        if options.applyAutoApprovers {
            let plain = Resolver(policy: policy, tailnet: given)
            for i in tailnet.nodes.indices {
                for r in Self.autoApprovedRoutes(for: tailnet.nodes[i], policy: policy, resolver: plain)
                where !tailnet.nodes[i].approvedRoutes.contains(r) {
                    tailnet.nodes[i].approvedRoutes.append(r)
                }
            }
        }
        self.tailnet = tailnet
        let resolver = Resolver(policy: policy, tailnet: tailnet)
        self.resolver = resolver
        var units: [CompiledUnit] = []
        for u in Self.grantUnits(policy) {
            units.append(Self.compile(u, resolver: resolver))
        }
        self.units = units
        self.needsPerNode = units.contains { $0.hasSelf || $0.isVia }
        self.globalRules = Self.merge(units.flatMap(\.rules))
        var idx: [String: Int] = [:]
        for (i, n) in tailnet.nodes.enumerated() { idx[n.name] = i }
        self.indexByName = idx
    }

    /// Grants first, then each ACL split into one unit per destination (autogroup:self last
    /// when the ACL also names other kinds of destination).
    static func grantUnits(_ policy: Policy) -> [GrantUnit] {
        var out: [GrantUnit] = []
        if !policy.hasAccessRules {
            // Without acls and grants, Tailscale allows everything: as `{"src": ["*"], "dst": ["*:*"]}`.
            return [GrantUnit(origin: RuleOrigin(kind: .acl, index: 0, position: SourcePosition(line: 1, column: 1)),
                              sources: [.wildcard], destinations: [.wildcard],
                              ip: [ProtocolPorts(proto: .any, ports: [.all])], app: nil, via: [])]
        }
        for (i, g) in policy.grants.enumerated() {
            out.append(GrantUnit(origin: RuleOrigin(kind: .grant, index: i, position: g.position),
                                 sources: g.sources.map(\.value), destinations: g.destinations.map(\.value),
                                 ip: g.ip, app: g.app, via: g.via))
        }
        for (i, acl) in policy.acls.enumerated() {
            let origin = RuleOrigin(kind: .acl, index: i, position: acl.position)
            let hasNonAutogroup = acl.destinations.contains { if case .autogroup = $0.alias { return false }; return true }
            var ordered = acl.destinations
            if hasNonAutogroup {
                ordered = acl.destinations.filter { !$0.alias.isAutogroupSelf } + acl.destinations.filter { $0.alias.isAutogroupSelf }
            }
            for d in ordered {
                out.append(GrantUnit(origin: origin, sources: acl.sources.map(\.value), destinations: [d.alias],
                                     ip: [ProtocolPorts(proto: acl.proto, ports: d.ports)], app: nil, via: []))
            }
        }
        return out
    }

    static func protoNumbers(_ spec: IPProtocolSpec) -> [Int]? {
        spec.numbers.isEmpty ? nil : spec.numbers
    }

    /// SrcIPs: each source alias's own strings, in order, each string once; a wildcard source
    /// also brings every approved subnet route. danger-all is "*".
    static func srcStrings<R: AliasResolving>(_ aliases: [Alias], resolver: R) -> [String] {
        if aliases.contains(.autogroup("autogroup:danger-all")) { return ["*"] }
        if !aliases.contains(.wildcard), let fast = resolver.nodeSources(aliases) { return fast.strings }
        var seen = Set<String>()
        var out: [String] = []
        func add(_ list: [String]) { for s in list where seen.insert(s).inserted { out.append(s) } }
        if aliases.contains(.wildcard) {
            add(KnownSets.wildcard.rangeStrings)
            add(resolver.approvedSubnetRoutes)
        }
        for a in aliases where a != .wildcard { add(resolver.sourceStrings(a)) }
        return out
    }

    static func compile<R: AliasResolving>(_ unit: GrantUnit, resolver: R) -> CompiledUnit {
        var cu = CompiledUnit(unit: unit)
        cu.resolvedSources = unit.sources.map { resolver.resolve($0) }
        let srcSet: IPSet
        if cu.resolvedSources.count == 1 {
            srcSet = cu.resolvedSources[0]
        } else {
            var srcBuilder = IPSetBuilder()
            for s in cu.resolvedSources { srcBuilder.add(s) }
            srcSet = srcBuilder.build()
        }
        let hasDangerAll = unit.sources.contains(.autogroup("autogroup:danger-all"))
        let matchSet = hasDangerAll ? KnownSets.everything : srcSet

        if !unit.via.isEmpty {
            // A via grant makes its sources and the routers that carry its destinations peers, with or without
            // `ip`; an app-only via grant sends no rule (its capabilities are not delivered through the router).
            guard !srcSet.isEmpty else { return cu }
            cu.isVia = true
            cu.viaSrcIPs = srcStrings(unit.sources, resolver: resolver)
            cu.viaSrcSet = matchSet
            for d in unit.destinations {
                if d == .autogroup("autogroup:internet") { cu.viaInternet = true; continue }
                cu.viaDsts += resolver.resolve(d).prefixes
            }
            return cu
        }

        guard !unit.sources.isEmpty, !unit.destinations.isEmpty else { return cu }
        let srcList = srcSet.isEmpty ? nil : resolver.nodeSources(unit.sources)
        let srcIPs = srcSet.isEmpty || srcList != nil ? [] : srcStrings(unit.sources, resolver: resolver)
        let hasSources = srcList.map { !$0.isEmpty } ?? !srcIPs.isEmpty
        let others = unit.destinations.filter { !$0.isAutogroupSelf }
        cu.hasSelf = others.count != unit.destinations.count

        if !others.isEmpty {
            for (slot, ipp) in unit.ip.enumerated() {
                var dsts: [CompiledDestination] = []
                var internet = false
                for d in others {
                    switch d {
                    case .wildcard:
                        for p in ipp.ports { dsts.append(CompiledDestination(ip: "*", set: KnownSets.everything, ports: p)) }
                    case .autogroup("autogroup:internet"):
                        internet = true
                        for text in KnownSets.internet.spanStrings {
                            for p in ipp.ports {
                                dsts.append(CompiledDestination(ip: text, set: KnownSets.internet, ports: p, isInternet: true))
                            }
                        }
                    default:
                        for prefix in resolver.resolve(d).prefixes {
                            let ip = prefix.isSingleAddress ? resolver.text(prefix.address) : prefix.description
                            let set = IPSet(prefixes: [prefix])
                            for p in ipp.ports { dsts.append(CompiledDestination(ip: ip, set: set, ports: p)) }
                        }
                    }
                }
                if (!dsts.isEmpty || internet) && hasSources {
                    var r = CompiledRule(origin: unit.origin, srcIPs: srcIPs, srcSet: matchSet, dsts: dsts,
                                         proto: protoNumbers(ipp.proto))
                    r.toInternet = internet
                    r.slot = slot
                    r.srcList = srcList
                    cu.rules.append(r)
                }
            }
            if let app = unit.app, !app.isEmpty {
                var capGrants: [CompiledCapGrant] = []
                var dstIPStrings: [String] = []
                for d in others {
                    let set = resolver.resolve(d)
                    capGrants.append(CompiledCapGrant(dsts: set.prefixes, capMap: app))
                    dstIPStrings += set.rangeStrings
                }
                if !capGrants.isEmpty {
                    var capRule = CompiledRule(origin: unit.origin, srcIPs: srcIPs, srcSet: matchSet, dsts: [],
                                               proto: nil, capGrants: capGrants)
                    capRule.srcList = srcList
                    capRule.slot = CompiledRule.capSlot
                    cu.rules.append(capRule)
                    if others.contains(.wildcard) { dstIPStrings += resolver.approvedSubnetRoutes }
                    cu.rules += companionRules(app: app, origin: unit.origin, dstIPStrings: dstIPStrings,
                                               srcPrefixes: cu.resolvedSources.flatMap(\.prefixes))
                }
            }
        }
        return cu
    }

    /// Some capabilities imply one in the other direction (a drive share needs the sharer's side): a rule from
    /// the grant's destinations to its sources with the companion capability (sent with a null value).
    static func companionRules(app: PeerCapMap, origin: RuleOrigin, dstIPStrings: [String],
                               srcPrefixes: [IPPrefix]) -> [CompiledRule] {
        var out: [CompiledRule] = []
        for (k, companionMap) in PolicyCapabilities.companionMaps(for: app) {
            var b = IPSetBuilder()
            for s in dstIPStrings { if let p = IPPrefix(s) { b.add(p) } else if let dash = s.firstIndex(of: "-"),
                let x = IPAddress(s[..<dash]), let y = IPAddress(s[s.index(after: dash)...]) { b.add(IPSet.fromRange(x, y)) } }
            var r = CompiledRule(origin: origin, srcIPs: dstIPStrings, srcSet: b.build(), dsts: [], proto: nil,
                                 capGrants: [CompiledCapGrant(dsts: srcPrefixes, capMap: companionMap)])
            r.slot = CompiledRule.capSlot + 1 + k
            out.append(r)
        }
        return out
    }

    /// Rules with the same sources and protocols are folded into one (capability rules stay apart).
    static func merge(_ rules: [CompiledRule]) -> [CompiledRule] {
        var out: [CompiledRule] = []
        var index: [String: Int] = [:]
        for var r in rules {
            for k in r.dsts.indices where r.dsts[k].origin == nil { r.dsts[k].origin = r.origin }
            if r.isCapRule { out.append(r); continue }
            let key = r.mergeKey
            if let i = index[key] {
                out[i].dsts += r.dsts
                out[i].toInternet = out[i].toInternet || r.toInternet
            } else {
                index[key] = out.count
                out.append(r)
            }
        }
        return out
    }

    // MARK: per node

    /// The rules of an autogroup:self unit for one user's nodes.
    func selfRules(_ cu: CompiledUnit, user: String) -> [CompiledRule] {
        Self.selfRules(cu, sameUser: (resolver.nodesByUser[user] ?? []).map { tailnet.nodes[$0] })
    }

    /// The rules of an autogroup:self unit for one user's nodes (given in name order).
    static func selfRules(_ cu: CompiledUnit, sameUser: [TailnetNode]) -> [CompiledRule] {
        guard !sameUser.isEmpty else { return [] }
        var srcBuilder = IPSetBuilder()
        for set in cu.resolvedSources {
            for n in sameUser where n.addresses.contains(where: set.contains) {
                for a in n.addresses { srcBuilder.add(a) }
            }
        }
        let srcSet = srcBuilder.build()
        guard !srcSet.isEmpty else { return [] }
        let srcList = SourceList(sorted: srcSet)
        var out: [CompiledRule] = []
        for ipp in cu.unit.ip {
            var dsts: [CompiledDestination] = []
            for n in sameUser {
                for p in ipp.ports {
                    for a in n.addresses {
                        dsts.append(CompiledDestination(ip: a.description, set: IPSet(addresses: [a]), ports: p))
                    }
                }
            }
            if !dsts.isEmpty {
                var r = CompiledRule(origin: cu.unit.origin, srcIPs: [], srcSet: srcSet, dsts: dsts,
                                     proto: Self.protoNumbers(ipp.proto))
                r.srcList = srcList
                out.append(r)
            }
        }
        if let app = cu.unit.app, !app.isEmpty {
            var capGrants: [CompiledCapGrant] = []
            var dstIPStrings: [String] = []
            for n in sameUser {
                capGrants.append(CompiledCapGrant(dsts: n.addresses.map { IPPrefix(host: $0) }, capMap: app))
                dstIPStrings += n.addresses.map(\.description)
            }
            var r = CompiledRule(origin: cu.unit.origin, srcIPs: [], srcSet: srcSet, dsts: [], proto: nil,
                                 capGrants: capGrants)
            r.srcList = srcList
            out.append(r)
            out += Self.companionRules(app: app, origin: cu.unit.origin, dstIPStrings: dstIPStrings,
                                       srcPrefixes: srcSet.prefixes)
        }
        return out
    }

    /// The rules of a via unit on one node (a router carrying one of the via tags).
    static func viaRules(_ cu: CompiledUnit, node: TailnetNode) -> [CompiledRule] {
        guard cu.carriesVia(node) else { return [] }
        let routes = node.subnetRoutes
        let prefixes = cu.viaDsts.filter { d in routes.contains { $0.overlaps(d) } }
        guard !prefixes.isEmpty else { return [] }
        var out: [CompiledRule] = []
        for ipp in cu.unit.ip {
            var dsts: [CompiledDestination] = []
            for prefix in prefixes {
                for p in ipp.ports {
                    dsts.append(CompiledDestination(ip: prefix.description, set: IPSet(prefixes: [prefix]), ports: p))
                }
            }
            var r = CompiledRule(origin: cu.unit.origin, srcIPs: cu.viaSrcIPs, srcSet: cu.viaSrcSet, dsts: dsts,
                                 proto: protoNumbers(ipp.proto))
            r.viaRouter = node.name
            out.append(r)
        }
        return out
    }

    /// All rules that concern a node before reduction, in policy order, merged.
    func unreducedRules(for node: TailnetNode) -> [CompiledRule] {
        guard needsPerNode else { return globalRules }
        var rules: [CompiledRule] = []
        for cu in units {
            rules += cu.rules
            if cu.hasSelf, !node.isTagged, let user = node.user { rules += selfRules(cu, user: user) }
            if cu.isVia { rules += Self.viaRules(cu, node: node) }
        }
        return Self.merge(rules)
    }

    /// Keeps only the destinations a node serves: its own addresses, its subnet routes.
    static func reduce(_ rules: [CompiledRule], for node: TailnetNode) -> [CompiledRule] {
        reduce(rules, view: NodeView(node))
    }

    static func reduce(_ rules: [CompiledRule], view: NodeView) -> [CompiledRule] {
        let node = view.node, routes = view.routes
        var out: [CompiledRule] = []
        for r in rules {
            if r.isCapRule {
                var grants: [CompiledCapGrant] = []
                for g in r.capGrants {
                    var matching: [IPPrefix] = []
                    for d in g.dsts {
                        if d.isSingleAddress {
                            if node.addresses.contains(d.address) { matching.append(d) }
                        } else {
                            for a in node.addresses where d.contains(a) { matching.append(IPPrefix(host: a)) }
                        }
                    }
                    for d in g.dsts { for route in routes where d.overlaps(route) { matching.append(d) } }
                    if !matching.isEmpty {
                        grants.append(CompiledCapGrant(dsts: Array(Set(matching)).sorted(), capMap: g.capMap))
                    }
                }
                if !grants.isEmpty {
                    var copy = r
                    copy.capGrants = grants
                    out.append(copy)
                }
                continue
            }
            let dsts = r.dsts.filter(view.matches)
            // Tailscale sends a rule to a node when one of its destinations holds an address of the node
            // (IPv4 or IPv6) or overlaps a route it serves.
            let selected = dsts.contains(where: view.selects)
            if selected && !dsts.isEmpty {
                var copy = r
                copy.dsts = dsts
                out.append(copy)
            }
        }
        return out
    }

    static func wire(_ r: CompiledRule) -> FilterRule {
        if r.isCapRule {
            return FilterRule(srcIPs: r.sourceStrings, capGrant: r.capGrants.map {
                CapGrant(dsts: $0.dsts.map(\.description), capMap: $0.capMap)
            })
        }
        return FilterRule(srcIPs: r.sourceStrings, dstPorts: r.dsts.map { NetPortRange(ip: $0.ip, ports: $0.ports) }, ipProto: r.proto)
    }

    /// The packet filter of one node, in Tailscale's wire form.
    public func packetFilter(for name: String) -> [FilterRule] {
        guard let i = indexByName[name] else { return [] }
        return packetFilter(node: tailnet.nodes[i])
    }

    func packetFilter(node: TailnetNode) -> [FilterRule] {
        return Self.reduce(unreducedRules(for: node), for: node).map(Self.wire)
    }
}

/// A node with what the filter reduction asks of it precomputed.
struct NodeView {
    let node: TailnetNode
    let routes: [IPPrefix]
    let exit: Bool
    /// The addresses by which a rule reaches the node: all of them, IPv4 and IPv6 alike (a destination
    /// covering only the node's IPv6 address, `fd7a:115c:a1e0::/64` say, brings its rule to the node).
    let selectors: [IPAddress]

    init(_ node: TailnetNode) {
        self.node = node
        routes = node.subnetRoutes
        exit = node.isExitNode
        selectors = node.addresses
    }

    /// Whether the node is among a rule's sources for peer visibility: by an address, or by a subnet route that
    /// overlaps them (a router speaks for its subnet). Shared by PolicyCompiler's and PolicyEngine's peer sets.
    func isSource(of set: IPSet) -> Bool {
        node.addresses.contains(where: set.contains) || routes.contains(where: set.overlaps)
    }

    /// Whether the node is among a rule's destinations for peer visibility: by an address, by an overlapping
    /// subnet route, or as an exit node when the rule reaches the internet.
    func isDestination(of set: IPSet, internet: Bool) -> Bool {
        selectors.contains(where: set.contains) || routes.contains(where: set.overlaps) || (internet && exit)
    }

    /// Whether a destination concerns the node (kept in its filter).
    func matches(_ d: CompiledDestination) -> Bool {
        if d.isInternet { return exit }
        return node.addresses.contains(where: d.set.contains) || routes.contains(where: d.set.overlaps)
            || (exit && KnownSets.internet.isSuperset(of: d.set))
    }

    /// Whether a destination brings its rule to the node.
    func selects(_ d: CompiledDestination) -> Bool {
        d.isInternet || selectors.contains(where: d.set.contains) || routes.contains(where: d.set.overlaps)
            || (exit && KnownSets.internet.isSuperset(of: d.set))
    }
}

extension IPPrefix {
    func overlaps(_ other: IPPrefix) -> Bool {
        guard address.version == other.address.version else { return false }
        return contains(other.address.masked(to: other.bits)) || other.contains(address.masked(to: bits))
    }
}
