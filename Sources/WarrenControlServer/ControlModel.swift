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

    public init(id: Int64, name: String, displayName: String? = nil) {
        self.id = id
        self.name = name
        self.displayName = displayName ?? name
    }

    public var loginName: String { name }
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
        self.authorized = true
        self.capabilityVersion = 0
    }

    public var addresses: [IPAddress] { [ipv4, ipv6].compactMap { $0 } }

    public func isExpired(at now: TailcfgTime) -> Bool {
        guard let keyExpiry, !keyExpiry.isGoZero else { return false }
        return keyExpiry <= now
    }
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
    func updateNode(_ node: ControlNode) async throws
    func deleteNode(id: Int64) async throws
    func node(id: Int64) async throws -> ControlNode?
    /// Records an interactive login waiting for `nodes register` (so an admin command in another process
    /// can approve it).
    func savePendingLogin(id: String, request: RegisterRequest, machineKey: MachinePublic, created: TailcfgTime,
                          expires: TailcfgTime) async throws
    /// The node an admin registered for a pending login, once approved.
    func approvedNodeID(forPendingLogin id: String) async throws -> Int64?
    func markPendingLogin(id: String, approvedNode nodeID: Int64) async throws
}
