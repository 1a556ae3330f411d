import WarrenPacket

/// A user of the tailnet.
public struct TailnetUser: Codable, Hashable, Sendable {
    public var id: Int
    public var name: String
    public var email: String

    public init(id: Int, name: String, email: String) {
        self.id = id
        self.name = name
        self.email = email
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
