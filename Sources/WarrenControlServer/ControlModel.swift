// The control server's view of the tailnet: users, nodes and pre-auth keys as the engine needs them.
// Persistence is behind ``ControlDirectory`` (the store module implements it; ``InMemoryDirectory`` is
// the twin for tests and for running without a database).

import TailscaleKeys
import WarrenPacket
import WarrenTailcfg

public struct ControlUser: Hashable, Sendable {
    public var id: Int64
    public var name: String
    public var displayName: String
    /// The user's e-mail address ("" = none): given at `users create --email`, carried from headscale or an identity
    /// provider. A policy names the user by it (`alice@example.com`) as well as by name (`alice@`).
    public var email: String
    /// The profile picture URL ("" = none), sent to clients as the user profile's ProfilePicURL.
    public var pictureURL: String
    /// The groups the identity provider gave the user at their last sign-in; the policy's groups include them when
    /// `oidc.groups_in_policy` is on (``CompiledPolicy``).
    public var providerGroups: [String]

    public init(id: Int64, name: String, displayName: String? = nil, email: String = "", pictureURL: String = "",
                providerGroups: [String] = []) {
        self.id = id
        self.name = name
        self.displayName = displayName ?? name
        self.email = email
        self.pictureURL = pictureURL
        self.providerGroups = providerGroups
    }

    /// The user's login, as clients show it (UserProfile.LoginName, RegisterResponse.Login) and as the policy sees it
    /// (Tailscale's users are logins, e-mail-like): the e-mail address when there is one, else the name, which
    /// `name@` in a policy names. headscale's `User.Username()` makes the same choice.
    public var loginName: String { email.isEmpty ? name : email }
}

/// A device known to control.
public struct ControlNode: Hashable, Sendable {
    public var id: Int64
    public var machineKey: MachinePublic
    public var nodeKey: NodePublic
    public var discoKey: DiscoPublic
    public var userID: Int64
    /// The hostname the client reported.
    public var hostname: String
    /// The unique DNS label (hostname, sanitized, with a suffix on collision).
    public var givenName: String
    public var ipv4: IPAddress?
    public var ipv6: IPAddress?
    public var hostinfo: Hostinfo?
    public var endpoints: [AddrPort]
    public var homeDERP: Int
    public var created: TailcfgTime
    public var lastSeen: TailcfgTime?
    /// Nil: never expires (tagged nodes).
    public var keyExpiry: TailcfgTime?
    public var ephemeral: Bool
    public var tags: [String]
    /// Subnet and exit routes an admin approved (`nodes approve-routes`); served when also advertised.
    public var approvedRoutes: [IPPrefix]
    public var authorized: Bool
    /// The capability version of the client's last request.
    public var capabilityVersion: CapabilityVersion

    public init(id: Int64, machineKey: MachinePublic, nodeKey: NodePublic, userID: Int64, hostname: String,
                givenName: String, created: TailcfgTime) {
        self.id = id
        self.machineKey = machineKey
        self.nodeKey = nodeKey
        self.discoKey = DiscoPublic(raw: .zero)
        self.userID = userID
        self.hostname = hostname
        self.givenName = givenName
        self.endpoints = []
        self.homeDERP = 0
        self.created = created
        self.ephemeral = false
        self.tags = []
        self.approvedRoutes = []
        self.authorized = true
        self.capabilityVersion = 0
    }

    public var addresses: [IPAddress] { [ipv4, ipv6].compactMap { $0 } }

    /// The routes the node advertises (Hostinfo.RoutableIPs), masked.
    public var advertisedRoutes: [IPPrefix] { (hostinfo?.routableIPs ?? []).map(\.masked) }

    public func isExpired(at now: TailcfgTime) -> Bool {
        guard let keyExpiry, !keyExpiry.isGoZero else { return false }
        return keyExpiry <= now
    }
}

/// The parts of a node record one write touches. The engine writes only the parts it owns at that moment (what a
/// node reports about itself, its key, its expiry), so that an admin's edit made in the store meanwhile (name,
/// tags, approved routes) is not overwritten by the engine's older copy.
public struct NodeFields: OptionSet, Sendable, Hashable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }

    /// The node key (and the machine key).
    public static let nodeKey = NodeFields(rawValue: 1 << 0)
    public static let discoKey = NodeFields(rawValue: 1 << 1)
    public static let endpoints = NodeFields(rawValue: 1 << 2)
    /// Hostinfo and the routes it advertises.
    public static let hostinfo = NodeFields(rawValue: 1 << 3)
    public static let lastSeen = NodeFields(rawValue: 1 << 4)
    public static let expiry = NodeFields(rawValue: 1 << 5)
    /// The owner, tags and ephemeral flag.
    public static let owner = NodeFields(rawValue: 1 << 6)
    /// Hostname and MagicDNS name.
    public static let names = NodeFields(rawValue: 1 << 7)
    /// Approved routes (only an admin sets them).
    public static let approvedRoutes = NodeFields(rawValue: 1 << 8)
    /// Device approval.
    public static let authorized = NodeFields(rawValue: 1 << 9)
    /// The capability version of the client's last map request.
    public static let capability = NodeFields(rawValue: 1 << 10)

    public static let all: NodeFields = [.nodeKey, .discoKey, .endpoints, .hostinfo, .lastSeen, .expiry, .owner, .names, .approvedRoutes,
                                         .authorized, .capability]
    /// What a connected node reports about itself in map requests.
    public static let reported: NodeFields = [.discoKey, .endpoints, .hostinfo, .capability]
}

/// What a valid pre-auth key grants a registering node.
public struct PreAuthGrant: Hashable, Sendable {
    public var userID: Int64
    public var ephemeral: Bool
    public var tags: [String]
    /// Skips device approval.
    public var preApproved: Bool

    public init(userID: Int64, ephemeral: Bool = false, tags: [String] = [], preApproved: Bool = false) {
        self.userID = userID
        self.ephemeral = ephemeral
        self.tags = tags
        self.preApproved = preApproved
    }
}

/// A registration refused, with the text the client shows.
public struct RegistrationRefusal: Error, Hashable, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ text: String) { description = text }
}

/// The engine's persistence. Every method is one transaction.
public protocol ControlDirectory: Sendable {
    func users() async throws -> [ControlUser]
    func nodes() async throws -> [ControlNode]
    /// Checks a pre-auth key and, for a one-off key, marks it used, atomically. Throws
    /// ``RegistrationRefusal`` with a clear text when the key is unknown, expired or used up.
    func redeemPreAuthKey(_ key: String, machineKey: MachinePublic, now: TailcfgTime) async throws -> PreAuthGrant
    /// Stores a new node, assigning its ID and addresses (never handed out before). The node's `id`,
    /// `ipv4` and `ipv6` are ignored on input.
    func createNode(_ node: ControlNode) async throws -> ControlNode
    /// Writes the `fields` of the node's record from `node`, leaving the others as stored.
    func updateNode(_ node: ControlNode, fields: NodeFields) async throws
    func deleteNode(id: Int64) async throws
    func node(id: Int64) async throws -> ControlNode?
    /// Records an interactive login waiting for `nodes register` (so an admin command in another process
    /// can approve it).
    func savePendingLogin(id: String, request: RegisterRequest, machineKey: MachinePublic, created: TailcfgTime,
                          expires: TailcfgTime) async throws
    /// The node an admin registered for a pending login, once approved.
    func approvedNodeID(forPendingLogin id: String) async throws -> Int64?
    func markPendingLogin(id: String, approvedNode nodeID: Int64) async throws
    /// Forgets pending logins (expired ones).
    func deletePendingLogins(ids: [String]) async throws
    /// Registration with a pre-auth key, in ONE transaction: checks the key, builds the node from what it grants
    /// (`draft`: the node and the fields to write when the machine is known, nil fields for a new node), stores it
    /// with the key's id, and records the key's use. If anything fails, the key is not spent. A one-off key already
    /// spent on this same machine and node key (a client repeating a request whose reply it lost) gives that node
    /// back (`replayed`). Refusals are ``RegistrationRefusal``s.
    func admitWithPreAuthKey(_ key: String, machineKey: MachinePublic, nodeKey: NodePublic, now: TailcfgTime,
                             draft: @escaping @Sendable (PreAuthGrant) -> (node: ControlNode, fields: NodeFields?)) async throws -> PreAuthAdmission
}

/// What ``ControlDirectory/admitWithPreAuthKey(_:machineKey:nodeKey:now:draft:)`` stored.
public struct PreAuthAdmission: Sendable, Hashable {
    public var node: ControlNode
    /// The key had already been spent on this node (a repeated request): nothing was written.
    public var replayed: Bool
    public init(node: ControlNode, replayed: Bool) {
        self.node = node
        self.replayed = replayed
    }
}

extension ControlDirectory {
    /// Writes the whole record.
    public func updateNode(_ node: ControlNode) async throws {
        try await updateNode(node, fields: .all)
    }
}
