import Foundation
import Synchronization
import TailscaleKeys
import WarrenPacket

/// The in-memory twin of the SQLite store: the same rules, no persistence. Transactions run one at a time under a
/// lock on a copy of the state, which replaces the state only when the closure returns.
public final class MemoryControlStore: ControlStore {
    struct State: Sendable {
        var users: [UserID: User] = [:]
        var nodes: [NodeID: Node] = [:]
        /// Lookup indexes over `nodes`, kept up to date by every node write (a large twin stays fast to query).
        var byMachineKey: [MachinePublic: NodeID] = [:]
        var byNodeKey: [NodePublic: NodeID] = [:]
        var byGivenName: [String: NodeID] = [:]
        var byAddress: [IPAddress: NodeID] = [:]

        mutating func unindex(_ node: Node) {
            byMachineKey[node.machineKey] = nil
            byNodeKey[node.nodeKey] = nil
            byGivenName[node.givenName.lowercased()] = nil
            for address in [node.ipv4, node.ipv6].compactMap({ $0 }) { byAddress[address] = nil }
        }

        mutating func index(_ node: Node) {
            byMachineKey[node.machineKey] = node.id
            byNodeKey[node.nodeKey] = node.id
            byGivenName[node.givenName.lowercased()] = node.id
            for address in [node.ipv4, node.ipv6].compactMap({ $0 }) { byAddress[address] = node.id }
        }
        var preAuthKeys: [PreAuthKeyID: PreAuthKey] = [:]
        var apiKeys: [APIKeyID: APIKey] = [:]
        var pending: [String: PendingRegistration] = [:]
        var policies: [PolicyVersion] = []
        var cursors: [IPVersion: IPAddress] = [:]
        var allocated: Set<IPAddress> = []
        var lastID: Int64 = 0
        var audit: [AuditEntry] = []
        var lastAuditID: Int64 = 0
        var signIns: [String: OIDCSignIn] = [:]
    }

    private let state = Mutex(State())

    public init() {}

    public func read<T: Sendable>(_ body: @escaping @Sendable (any StoreReading) throws -> T) async throws -> T {
        let snapshot = state.withLock { $0 }
        return try body(MemoryTransaction(snapshot))
    }

    public func transaction<T: Sendable>(_ body: @escaping @Sendable (any StoreTransaction) throws -> T) async throws -> T {
        try state.withLock { current in
            let tx = MemoryTransaction(current)
            let result = try body(tx)
            current = tx.state
            return result
        }
    }
}

final class MemoryTransaction: StoreTransaction {
    var state: MemoryControlStore.State

    init(_ state: MemoryControlStore.State) { self.state = state }

    private func nextID() -> Int64 {
        state.lastID += 1
        return state.lastID
    }

    // MARK: reading

    func users() throws -> [User] { state.users.values.sorted { $0.id < $1.id } }
    func user(id: UserID) throws -> User? { state.users[id] }
    func user(named name: String) throws -> User? { state.users.values.first { $0.name == name } }

    func nodes() throws -> [Node] { state.nodes.values.sorted { $0.id < $1.id } }
    func nodes(userID: UserID) throws -> [Node] { try nodes().filter { $0.userID == userID } }
    func node(id: NodeID) throws -> Node? { state.nodes[id] }
    func node(machineKey: MachinePublic) throws -> Node? { state.byMachineKey[machineKey].flatMap { state.nodes[$0] } }
    func node(nodeKey: NodePublic) throws -> Node? { state.byNodeKey[nodeKey].flatMap { state.nodes[$0] } }
    func node(givenName: String) throws -> Node? { state.byGivenName[givenName.lowercased()].flatMap { state.nodes[$0] } }

    func preAuthKeys(userID: UserID?) throws -> [PreAuthKey] {
        state.preAuthKeys.values.filter { userID == nil || $0.userID == userID }.sorted { $0.id < $1.id }
    }
    func preAuthKey(id: PreAuthKeyID) throws -> PreAuthKey? { state.preAuthKeys[id] }
    func preAuthKey(prefix: String) throws -> PreAuthKey? { state.preAuthKeys.values.first { $0.prefix == prefix } }

    func apiKeys() throws -> [APIKey] { state.apiKeys.values.sorted { $0.id < $1.id } }
    func apiKey(id: APIKeyID) throws -> APIKey? { state.apiKeys[id] }
    func apiKey(prefix: String) throws -> APIKey? { state.apiKeys.values.first { $0.prefix == prefix } }

    func pendingRegistrations() throws -> [PendingRegistration] {
        state.pending.values.sorted { ($0.created, $0.id) < ($1.created, $1.id) }
    }
    func pendingRegistration(id: String) throws -> PendingRegistration? { state.pending[id] }

    func policyHistory() throws -> [PolicyVersion] { state.policies }
    func currentPolicy() throws -> PolicyVersion? { state.policies.last }

    func addressCursor(_ version: IPVersion) throws -> IPAddress? { state.cursors[version] }
    func wasEverAllocated(_ address: IPAddress) throws -> Bool { state.allocated.contains(address) }

    func auditEntries(since: Date?, limit: Int) throws -> [AuditEntry] {
        let matching = since.map { since in state.audit.filter { $0.time >= since } } ?? state.audit
        return Array(matching.suffix(max(0, limit)))
    }

    func oidcSignInCount() throws -> Int { state.signIns.count }

    // MARK: writing

    func insert(_ user: User) throws -> User {
        try checkUnique(user, id: nil)
        var stored = user
        stored.id = UserID(nextID())
        state.users[stored.id] = stored
        return stored
    }

    func update(_ user: User) throws {
        guard state.users[user.id] != nil else { throw StoreError(.notFound, "no user with id \(user.id)") }
        try checkUnique(user, id: user.id)
        state.users[user.id] = user
    }

    func deleteUser(id: UserID) throws {
        guard state.users[id] != nil else { throw StoreError(.notFound, "no user with id \(id)") }
        if state.nodes.values.contains(where: { $0.userID == id }) {
            throw StoreError(.conflict, "the user still has nodes; delete them first")
        }
        state.users[id] = nil
        state.preAuthKeys = state.preAuthKeys.filter { $0.value.userID != id }
    }

    func insert(_ node: Node) throws -> Node {
        try checkNode(node, id: nil)
        var stored = node
        stored.id = NodeID(nextID())
        state.nodes[stored.id] = stored
        state.index(stored)
        for address in [node.ipv4, node.ipv6].compactMap({ $0 }) { state.allocated.insert(address) }
        return stored
    }

    func update(_ node: Node) throws {
        guard state.nodes[node.id] != nil else { throw StoreError(.notFound, "no node with id \(node.id)") }
        try checkNode(node, id: node.id)
        if let old = state.nodes[node.id] { state.unindex(old) }
        state.nodes[node.id] = node
        state.index(node)
        for address in [node.ipv4, node.ipv6].compactMap({ $0 }) { state.allocated.insert(address) }
    }

    func deleteNode(id: NodeID) throws {
        guard let old = state.nodes.removeValue(forKey: id) else { throw StoreError(.notFound, "no node with id \(id)") }
        state.unindex(old)
    }

    func insert(_ key: PreAuthKey) throws -> PreAuthKey {
        guard state.users[key.userID] != nil else { throw StoreError(.notFound, "no user with id \(key.userID)") }
        if state.preAuthKeys.values.contains(where: { $0.prefix == key.prefix }) {
            throw StoreError(.conflict, "a pre-auth key with this prefix exists")
        }
        var stored = key
        stored.id = PreAuthKeyID(nextID())
        state.preAuthKeys[stored.id] = stored
        return stored
    }

    func update(_ key: PreAuthKey) throws {
        guard state.preAuthKeys[key.id] != nil else { throw StoreError(.notFound, "no pre-auth key with id \(key.id)") }
        if state.preAuthKeys.values.contains(where: { $0.prefix == key.prefix && $0.id != key.id }) {
            throw StoreError(.conflict, "a pre-auth key with this prefix exists")
        }
        state.preAuthKeys[key.id] = key
    }

    func deletePreAuthKey(id: PreAuthKeyID) throws {
        guard state.preAuthKeys.removeValue(forKey: id) != nil else { throw StoreError(.notFound, "no pre-auth key with id \(id)") }
    }

    func insert(_ key: APIKey) throws -> APIKey {
        if state.apiKeys.values.contains(where: { $0.prefix == key.prefix }) {
            throw StoreError(.conflict, "an API key with this prefix exists")
        }
        var stored = key
        stored.id = APIKeyID(nextID())
        state.apiKeys[stored.id] = stored
        return stored
    }

    func update(_ key: APIKey) throws {
        guard state.apiKeys[key.id] != nil else { throw StoreError(.notFound, "no API key with id \(key.id)") }
        if state.apiKeys.values.contains(where: { $0.prefix == key.prefix && $0.id != key.id }) {
            throw StoreError(.conflict, "an API key with this prefix exists")
        }
        state.apiKeys[key.id] = key
    }

    func deleteAPIKey(id: APIKeyID) throws {
        guard state.apiKeys.removeValue(forKey: id) != nil else { throw StoreError(.notFound, "no API key with id \(id)") }
    }

    func save(_ registration: PendingRegistration) throws {
        state.pending[registration.id] = registration
    }

    func deletePendingRegistration(id: String) throws {
        guard state.pending.removeValue(forKey: id) != nil else { throw StoreError(.notFound, "no pending registration \(id)") }
    }

    func appendPolicy(text: String, created: Date) throws -> PolicyVersion {
        let version = PolicyVersion(version: (state.policies.last?.version ?? 0) + 1, text: text, created: created)
        state.policies.append(version)
        return version
    }

    func setAddressCursor(_ version: IPVersion, _ address: IPAddress) throws {
        guard address.version == version else { throw StoreError(.invalid, "\(address) is not an \(version) address") }
        state.cursors[version] = address
    }

    func markAllocated(_ address: IPAddress) throws { state.allocated.insert(address) }

    func appendAudit(_ entry: AuditEntry, keeping: Int) throws -> AuditEntry {
        state.lastAuditID += 1
        var stored = entry
        stored.id = state.lastAuditID
        state.audit.append(stored)
        if state.audit.count > max(1, keeping) { state.audit.removeFirst(state.audit.count - max(1, keeping)) }
        return stored
    }

    func insert(_ signIn: OIDCSignIn) throws {
        guard state.signIns[signIn.id] == nil else { throw StoreError(.conflict, "a sign-in with this state exists") }
        state.signIns[signIn.id] = signIn
    }

    func takeOIDCSignIn(id: String) throws -> OIDCSignIn? { state.signIns.removeValue(forKey: id) }

    func pruneOIDCSignIns(createdBefore: Date, keeping: Int) throws {
        state.signIns = state.signIns.filter { $0.value.created >= createdBefore }
        let excess = state.signIns.count - max(0, keeping)
        guard excess > 0 else { return }
        let oldest = state.signIns.values.sorted { ($0.created, $0.id) < ($1.created, $1.id) }.prefix(excess)
        for signIn in oldest { state.signIns[signIn.id] = nil }
    }

    // MARK: rules

    private func checkUnique(_ user: User, id: UserID?) throws {
        if state.users.values.contains(where: { $0.name == user.name && $0.id != id }) {
            throw StoreError(.conflict, "a user named \(user.name.debugDescription) already exists")
        }
    }

    private func checkNode(_ node: Node, id: NodeID?) throws {
        guard state.users[node.userID] != nil else { throw StoreError(.notFound, "no user with id \(node.userID)") }
        if let v4 = node.ipv4, v4.version != .v4 { throw StoreError(.invalid, "\(v4) is not an IPv4 address") }
        if let v6 = node.ipv6, v6.version != .v6 { throw StoreError(.invalid, "\(v6) is not an IPv6 address") }
        let name = node.givenName.lowercased()
        if let holder = state.byMachineKey[node.machineKey], holder != id { throw StoreError(.conflict, "another node has this machine key") }
        if let holder = state.byNodeKey[node.nodeKey], holder != id { throw StoreError(.conflict, "another node has this node key") }
        if let holder = state.byGivenName[name], holder != id { throw StoreError(.conflict, "another node is named \(name.debugDescription)") }
        for address in [node.ipv4, node.ipv6].compactMap({ $0 }) {
            if let holder = state.byAddress[address], holder != id { throw StoreError(.conflict, "another node has the address \(address)") }
        }
    }
}
