import WarrenPacket

/// A user of the tailnet.
public struct TailnetUser: Codable, Hashable, Sendable {
    public var id: Int
    public var name: String
    public var email: String
    /// The groups the identity provider puts the user in (the control server fills them in only when
    /// `oidc.groups_in_policy` is on): a policy's `group:NAME` includes the user when NAME is among them, in addition
    /// to its listed members. The group must be declared in the policy (it may list no one: `"group:eng": []`).
    public var providerGroups: [String]

    public init(id: Int, name: String, email: String, providerGroups: [String] = []) {
        self.id = id
        self.name = name
        self.email = email
        self.providerGroups = providerGroups
    }

    enum CodingKeys: String, CodingKey { case id, name, email, providerGroups = "provider_groups" }

    /// Topology files without provider groups read as none.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(id: try c.decode(Int.self, forKey: .id), name: try c.decode(String.self, forKey: .name),
                  email: try c.decode(String.self, forKey: .email),
                  providerGroups: try c.decodeIfPresent([String].self, forKey: .providerGroups) ?? [])
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(name, forKey: .name)
        try c.encode(email, forKey: .email)
        if !providerGroups.isEmpty { try c.encode(providerGroups, forKey: .providerGroups) }
    }

    /// Whether the identity provider puts the user in the policy group `group` ("group:eng": provider group "eng").
    public func isInProviderGroup(_ group: String) -> Bool {
        guard !providerGroups.isEmpty, group.hasPrefix("group:") else { return false }
        let name = group.dropFirst("group:".count)
        return providerGroups.contains { $0 == name }
    }
}

extension Policy {
    /// The names of the users in a group: its listed members (each a login token, resolved by `userNames`) and the
    /// users whose identity provider puts them in it (``TailnetUser/providerGroups``). An undeclared group has none.
    func groupMemberNames(_ group: String, users: [TailnetUser], userNames: (String) -> [String]) -> Set<String> {
        guard let members = groups[group] else { return [] }
        var names = Set(members.flatMap(userNames))
        for u in users where u.isInProviderGroup(group) { names.insert(u.name) }
        return names
    }
}

/// A node as the policy sees it: owner or tags, addresses and routes.
public struct TailnetNode: Hashable, Sendable {
    public var name: String
    /// The owning user's name; nil for tagged nodes.
    public var user: String?
    public var tags: [String]
    public var addresses: [IPAddress]
    public var advertisedRoutes: [IPPrefix]
    public var approvedRoutes: [IPPrefix]

    public init(name: String, user: String?, tags: [String], addresses: [IPAddress],
                advertisedRoutes: [IPPrefix] = [], approvedRoutes: [IPPrefix] = []) {
        self.name = name
        self.user = user
        self.tags = tags
        self.addresses = addresses
        self.advertisedRoutes = advertisedRoutes
        self.approvedRoutes = approvedRoutes
    }

    public var isTagged: Bool { !tags.isEmpty }

    static func isExitRoute(_ p: IPPrefix) -> Bool { p.bits == 0 }

    /// Approved, advertised routes other than the default routes.
    public var subnetRoutes: [IPPrefix] {
        approvedRoutes.filter { !Self.isExitRoute($0) && advertisedRoutes.contains($0) }
    }

    /// Whether the node offers itself as an exit node and is approved as one.
    public var isExitNode: Bool {
        approvedRoutes.contains { Self.isExitRoute($0) && advertisedRoutes.contains($0) }
    }
}

/// The users and nodes a policy is compiled against.
public struct Tailnet: Sendable {
    public var users: [TailnetUser]
    public var nodes: [TailnetNode]

    public init(users: [TailnetUser], nodes: [TailnetNode]) {
        self.users = users
        self.nodes = nodes.sorted { $0.name < $1.name }
    }

    /// The domain of the tailnet's first user (its owner), against which `localpart:*@domain` is checked.
    public var domain: String? {
        guard let owner = users.min(by: { $0.id < $1.id }), let at = owner.email.lastIndex(of: "@") else { return nil }
        return String(owner.email[owner.email.index(after: at)...])
    }
}

/// The topology file shape: `{"users": [...], "nodes": {"name": {...}}}` as in the conformance captures.
public struct Topology: Codable, Sendable {
    public struct Node: Codable, Sendable {
        public var hostname: String?
        public var user: String?
        public var tags: [String]?
        public var ipv4: String?
        public var ipv6: String?
        public var routable_ips: [String]?
        public var approved_routes: [String]?
    }

    public var users: [TailnetUser]
    public var nodes: [String: Node]

    /// The tailnet, or an error naming the first unreadable address or route.
    public func tailnet() throws(PolicyError) -> Tailnet {
        var nodes: [TailnetNode] = []
        for (name, n) in self.nodes {
            var addresses: [IPAddress] = []
            for text in [n.ipv4, n.ipv6].compactMap({ $0 }) {
                guard let a = IPAddress(text) else { throw PolicyError("node \"\(name)\": invalid address \"\(text)\"") }
                addresses.append(a)
            }
            func prefixes(_ list: [String]?) throws(PolicyError) -> [IPPrefix] {
                var out: [IPPrefix] = []
                for text in list ?? [] {
                    guard let p = IPPrefix(text) else { throw PolicyError("node \"\(name)\": invalid route \"\(text)\"") }
                    out.append(p.masked)
                }
                return out
            }
            let tags = n.tags ?? []
            nodes.append(TailnetNode(name: name, user: tags.isEmpty ? n.user : nil, tags: tags, addresses: addresses,
                                     advertisedRoutes: try prefixes(n.routable_ips),
                                     approvedRoutes: try prefixes(n.approved_routes)))
        }
        return Tailnet(users: users, nodes: nodes)
    }
}
