import Foundation
import TailscaleKeys
import WarrenPacket

/// The storage of warren-control: users, nodes, keys, pending logins, policy history and the address cursor.
///
/// Shape: `async` at the edge, synchronous inside a transaction. The server calls `read` or `transaction` from
/// its async code; the closure runs on the store's own thread (SQLite: GRDB's serial writer queue) with a
/// `StoreTransaction` whose calls are plain synchronous functions. A transaction cannot suspend halfway, so no
/// other writer can interleave with it: read-check-write sequences (unique names, address allocation, one-off
/// keys) are atomic. If the closure throws, nothing it wrote is kept. Keep closures short: no network I/O inside.
///
/// Closures are store-only: they read and write through the transaction and return a value; they have no other
/// effect (no I/O, no shared state, no counters). A store may therefore run a closure more than once: the
/// PostgreSQL store reruns it, a bounded number of times, after a serialization failure or a deadlock, or when
/// its connection turned out dead before COMMIT; only the last run's writes are kept. A closure must also not
/// catch a store error and carry on: PostgreSQL ends a transaction at its first failed statement, so the store
/// then fails the whole transaction with that error.
///
/// Implementations: `MemoryControlStore` (this module, the twin for tests), `SQLiteControlStore`
/// (`WarrenControlSQLite`) and `PostgresControlStore` (`WarrenControlPostgres`). All pass the same contract tests.
public protocol ControlStore: Sendable {
    /// Runs `body` in a read-only snapshot.
    func read<T: Sendable>(_ body: @escaping @Sendable (any StoreReading) throws -> T) async throws -> T
    /// Runs `body` in a read-write transaction, committed when it returns, rolled back when it throws.
    func transaction<T: Sendable>(_ body: @escaping @Sendable (any StoreTransaction) throws -> T) async throws -> T
    /// Checks that the storage answers now: a read in a transaction, plus what the implementation can check of its
    /// medium (SQLite: that the file in use is still the file at its path, and still a database). Throws a
    /// `StoreError` that says what is wrong.
    func checkHealth() async throws
}

extension ControlStore {
    /// A read in a transaction.
    public func checkHealth() async throws {
        _ = try await read { try $0.users().count }
    }
}

/// Lookups. Lists come back ordered by id.
public protocol StoreReading {
    func users() throws -> [User]
    func user(id: UserID) throws -> User?
    func user(named name: String) throws -> User?

    func nodes() throws -> [Node]
    func nodes(userID: UserID) throws -> [Node]
    func node(id: NodeID) throws -> Node?
    func node(machineKey: MachinePublic) throws -> Node?
    func node(nodeKey: NodePublic) throws -> Node?
    /// Case-insensitive.
    func node(givenName: String) throws -> Node?

    /// All keys, or one user's.
    func preAuthKeys(userID: UserID?) throws -> [PreAuthKey]
    func preAuthKey(id: PreAuthKeyID) throws -> PreAuthKey?
    func preAuthKey(prefix: String) throws -> PreAuthKey?

    func apiKeys() throws -> [APIKey]
    func apiKey(id: APIKeyID) throws -> APIKey?
    func apiKey(prefix: String) throws -> APIKey?

    /// Ordered by creation.
    func pendingRegistrations() throws -> [PendingRegistration]
    func pendingRegistration(id: String) throws -> PendingRegistration?

    /// All versions, oldest first.
    func policyHistory() throws -> [PolicyVersion]
    /// The version in force (the highest), if any.
    func currentPolicy() throws -> PolicyVersion?

    /// The last address handed out in a family (the allocator's cursor).
    func addressCursor(_ version: IPVersion) throws -> IPAddress?
    /// Whether `address` was ever handed out (to any node, deleted or not).
    func wasEverAllocated(_ address: IPAddress) throws -> Bool

    /// The newest `limit` audit entries at or after `since` (all kept ones when nil), oldest first.
    func auditEntries(since: Date?, limit: Int) throws -> [AuditEntry]

    /// How many OIDC sign-ins are started and not finished (expired ones included until pruned).
    func oidcSignInCount() throws -> Int
}

/// Writes. Inserts ignore the `id` of their argument and return the stored record with its new id. Uniqueness
/// rules (user name; node machine key, node key, given name (case-insensitive), IPv4, IPv6; key prefixes) are
/// enforced by every implementation and break with `StoreError.conflict`. Updates and deletes of a missing record
/// throw `.notFound`.
public protocol StoreTransaction: StoreReading {
    func insert(_ user: User) throws -> User
    func update(_ user: User) throws
    /// Throws `.conflict` while the user still owns nodes; deletes the user's pre-auth keys.
    func deleteUser(id: UserID) throws

    /// Records the node's addresses as allocated (never to be handed out again).
    func insert(_ node: Node) throws -> Node
    func update(_ node: Node) throws
    func deleteNode(id: NodeID) throws

    func insert(_ key: PreAuthKey) throws -> PreAuthKey
    func update(_ key: PreAuthKey) throws
    func deletePreAuthKey(id: PreAuthKeyID) throws

    func insert(_ key: APIKey) throws -> APIKey
    func update(_ key: APIKey) throws
    func deleteAPIKey(id: APIKeyID) throws

    /// Inserts or replaces by id.
    func save(_ registration: PendingRegistration) throws
    func deletePendingRegistration(id: String) throws

    /// Appends a version (numbered one above the highest) and returns it.
    func appendPolicy(text: String, created: Date) throws -> PolicyVersion

    func setAddressCursor(_ version: IPVersion, _ address: IPAddress) throws
    /// Marks an address as handed out (done by `insert(_: Node)` and `update(_: Node)` for the node's addresses).
    func markAllocated(_ address: IPAddress) throws

    /// Appends an audit entry (numbered one above the last) and drops all but the newest `keeping` entries.
    func appendAudit(_ entry: AuditEntry, keeping: Int) throws -> AuditEntry

    /// Records a started sign-in; `.conflict` when one with its id exists.
    func insert(_ signIn: OIDCSignIn) throws
    /// Reads and deletes the sign-in with this id (nil when there is none: unknown, already taken, or pruned).
    func takeOIDCSignIn(id: String) throws -> OIDCSignIn?
    /// Deletes the sign-ins created before `createdBefore`, then the oldest beyond the newest `keeping`.
    func pruneOIDCSignIns(createdBefore: Date, keeping: Int) throws
}
