// The store on PostgreSQL: see docs/control-server.md, "PostgreSQL".
import Dispatch
import Foundation
import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import Synchronization
import WarrenControlStore

/// The store on PostgreSQL, through postgres-nio, for one or several warren-control instances on one database.
///
/// Shape: `ControlStore` runs a synchronous closure inside a transaction; postgres-nio is asynchronous. Each
/// connection of the pool has a serial dispatch queue of its own (threads outside NIO's event loops and outside
/// Swift's cooperative pool); a transaction runs its closure there, and each statement blocks that thread on the
/// query's future. The async caller waits for a free connection, then for its queue.
///
/// Isolation: a write transaction is `BEGIN` (READ COMMITTED) followed by a transaction-scoped advisory lock
/// (`pg_advisory_xact_lock`) that every writer of every instance takes first: writers run one at a time across all
/// instances, as SQLite's single writer does in one process, and since the lock is taken before any read, each
/// read inside sees everything committed before it. So read-check-write sequences (unique names, the address
/// cursor, one-off keys) stay atomic across processes without serialization failures under load (SERIALIZABLE
/// would fail and retry every concurrent join on the cursor row). Reads run in `REPEATABLE READ READ ONLY`
/// snapshots and take no lock. A serialization failure or deadlock (possible only when something else writes the
/// same database) and a connection found dead before commit rerun the closure, a bounded number of times (closures
/// are store-only, so rerunning is safe; see `ControlStore`).
///
/// Durability is PostgreSQL's: a COMMIT that returned is on the server's disk (with its default
/// `synchronous_commit = on`).
public final class PostgresControlStore: ControlStore, @unchecked Sendable {
    public let settings: PostgresSettings
    let logger: Logger
    let group: MultiThreadedEventLoopGroup
    private let ownsGroup: Bool
    private let pool: ConnectionPool
    let connectionIDs = Atomic<Int>(0)
    private let groupShutDown = Atomic<Bool>(false)

    /// This store instance's identity in the change feed (`StoreChange.origin`): changes it wrote itself are
    /// already known to it.
    public let instanceID = UUID().uuidString.lowercased()
    /// The change feed's rows kept (the newest); a listener further behind than this resyncs.
    static let changesKept: Int64 = 10_000

    /// How many times a transaction runs at most (the first run and its reruns after a serialization failure,
    /// a deadlock or a connection lost before commit).
    public static let maximumAttempts = 5

    /// Advisory lock keys (the two-integer form; the first is Warren's class, "Warr").
    static let lockClass: Int32 = 0x5761_7272
    static let migrationLock: Int32 = 1
    static let writeLock: Int32 = 2

    /// Connects, checks that the database is Warren's (or empty), and migrates it to the current schema under an
    /// advisory lock. Throws `.corrupt` for a database of another program or one written by a newer version,
    /// `.io` when the server cannot be reached or refuses the login.
    public init(settings: PostgresSettings, logger: Logger? = nil, eventLoopGroup: MultiThreadedEventLoopGroup? = nil) async throws {
        do {
            try settings.validate()
        } catch let error as PostgresSettingsError {
            throw StoreError(.invalid, "database.postgres: \(error.description)")
        }
        self.settings = settings
        self.logger = logger ?? Logger(label: "warren.store.postgres", factory: { _ in SwiftLogNoOpLogHandler() })
        if let eventLoopGroup {
            group = eventLoopGroup
            ownsGroup = false
        } else {
            group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            ownsGroup = true
        }
        pool = ConnectionPool(size: settings.maxConnections)
        do {
            try await withSlot { slot in try self.migrate(slot) }
        } catch {
            await close()
            throw error
        }
    }

    /// A store dropped without `close()` (a caller that failed half-way) still closes its connections, on their
    /// queues, and then its event loop.
    deinit {
        let slots = pool.close()
        let closing = DispatchGroup()
        for slot in slots {
            closing.enter()
            slot.queue.async {
                slot.drop()
                closing.leave()
            }
        }
        if ownsGroup, !groupShutDown.exchange(true, ordering: .relaxed) {
            let group = self.group
            closing.notify(queue: .global()) { group.shutdownGracefully { _ in } }
        }
    }

    /// Closes every connection; later calls fail with `.io`.
    public func close() async {
        let slots = pool.close()
        for slot in slots {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                slot.queue.async {
                    slot.connection?.close()
                    slot.connection = nil
                    continuation.resume()
                }
            }
        }
        if ownsGroup, !groupShutDown.exchange(true, ordering: .relaxed) { try? await group.shutdownGracefully() }
    }

    // MARK: ControlStore

    public func read<T: Sendable>(_ body: @escaping @Sendable (any StoreReading) throws -> T) async throws -> T {
        try await withSlot { slot in try self.runTransaction(slot, write: false) { try body($0) } }
    }

    public func transaction<T: Sendable>(_ body: @escaping @Sendable (any StoreTransaction) throws -> T) async throws -> T {
        try await withSlot { slot in try self.runTransaction(slot, write: true) { try body($0) } }
    }

    /// A query in a read transaction, and the schema still the one this build knows (a newer instance may have
    /// migrated the database since: this one would then write rows the new schema does not expect).
    public func checkHealth() async throws {
        let version = try await withSlot { slot in
            try self.runTransaction(slot, write: false) { _ in try self.schemaVersion(slot.connected(self)) }
        }
        if version > PostgresSchema.latestVersion {
            throw StoreError(.corrupt, "the database's schema is version \(version), newer than this warren-control's "
                                     + "(\(PostgresSchema.latestVersion)): a newer instance migrated it; upgrade this one")
        }
    }

    // MARK: connections

    /// Runs `work` on a free connection slot's queue (blocking there is allowed), waiting for a slot first.
    func withSlot<T: Sendable>(_ work: @escaping @Sendable (ConnectionSlot) throws -> T) async throws -> T {
        let slot = try await pool.acquire()
        defer { pool.release(slot) }
        return try await withCheckedThrowingContinuation { continuation in
            slot.queue.async {
                continuation.resume(with: Result { try work(slot) })
            }
        }
    }

    /// A new connection (blocking; on a slot's queue only).
    func connect() throws -> BlockingConnection {
        let configuration: PostgresConnection.Configuration
        do {
            configuration = try settings.connectionConfiguration()
        } catch let error as PostgresSettingsError {
            throw StoreError(.invalid, "database.postgres: \(error.description)")
        }
        let id = connectionIDs.wrappingAdd(1, ordering: .relaxed).newValue
        do {
            let connection = try PostgresConnection.connect(on: group.next(), configuration: configuration, id: id, logger: logger).wait()
            return BlockingConnection(connection, logger: logger)
        } catch let error as PSQLError {
            throw StoreError(.io, "cannot connect to \(settings): \(BlockingConnection.describe(error))")
        } catch {
            throw StoreError(.io, "cannot connect to \(settings): \(error)")
        }
    }

    /// Runs `body` in a transaction on `slot` (on its queue), rerunning it after a serialization failure, a
    /// deadlock, or a connection that turned out dead before COMMIT.
    func runTransaction<T>(_ slot: ConnectionSlot, write: Bool, _ body: (PostgresTransaction) throws -> T) throws -> T {
        var lastError = StoreError(.io, "no attempt made")
        for _ in 0..<Self.maximumAttempts {
            let connection = try slot.connected(self)
            let tx = PostgresTransaction(connection)
            let result: T
            do {
                do {
                    try connection.run(write ? "BEGIN ISOLATION LEVEL READ COMMITTED" : "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    if write {
                        try connection.run("SELECT pg_advisory_xact_lock($1, $2)", [Self.lockClass, Self.writeLock])
                    }
                } catch {
                    throw Outcome.failed(error)
                }
                do {
                    result = try body(tx)
                } catch {
                    throw tx.failure.map(Outcome.failed) ?? Outcome.bodyThrew(error)
                }
                if let failure = tx.failure { throw Outcome.failed(failure) }
                if write {
                    do {
                        try tx.recordChanges(origin: instanceID, at: Date(), keeping: Self.changesKept)
                    } catch {
                        throw tx.failure.map(Outcome.failed) ?? Outcome.bodyThrew(error)
                    }
                }
                do {
                    try connection.run("COMMIT")
                } catch {
                    if error.connectionLost {
                        slot.drop()
                        throw StoreError(.io, "\(error.error.message); the connection was lost while committing, so the "
                                                  + "transaction may or may not have been applied")
                    }
                    throw Outcome.failed(error)
                }
                return result
            } catch let outcome as Outcome {
                switch outcome {
                case .bodyThrew(let error):
                    rollback(slot, connection)
                    throw error
                case .failed(let failure):
                    if failure.connectionLost {
                        slot.drop()
                    } else {
                        rollback(slot, connection)
                    }
                    guard failure.isRetryable || failure.connectionLost else { throw failure.error }
                    lastError = failure.error
                    logger.debug("PostgreSQL transaction rerun: \(failure.error)")
                }
            }
        }
        throw lastError
    }

    private enum Outcome: Error {
        case bodyThrew(any Error)
        case failed(StatementFailure)
    }

    private func rollback(_ slot: ConnectionSlot, _ connection: BlockingConnection) {
        do {
            try connection.run("ROLLBACK")
        } catch {
            slot.drop()
        }
    }

    // MARK: schema

    func schemaVersion(_ connection: BlockingConnection) throws -> Int64 {
        do {
            let rows = try connection.run("SELECT COALESCE(MAX(version), 0) AS version FROM \(PostgresSchema.migrationsTable)").rows
            guard let row = rows.first else { return 0 }
            return try PGColumns(row: row, table: PostgresSchema.migrationsTable).int("version")
        } catch let failure as StatementFailure {
            throw failure.error
        }
    }

    /// Brings the schema up to date under the migration lock (session-level: held across the migrations'
    /// transactions, released at the end or when the connection dies).
    private func migrate(_ slot: ConnectionSlot) throws {
        let connection = try slot.connected(self)
        func run(_ sql: String, _ arguments: [any SQLArgument] = []) throws -> [PostgresRandomAccessRow] {
            do {
                return try connection.run(sql, arguments).rows
            } catch {
                throw error.error
            }
        }
        _ = try run("SELECT pg_advisory_lock($1, $2)", [Self.lockClass, Self.migrationLock])
        defer { _ = try? run("SELECT pg_advisory_unlock($1, $2)", [Self.lockClass, Self.migrationLock]) }

        let present = try run("SELECT table_name::text AS name FROM information_schema.tables WHERE table_schema = current_schema()")
            .map { try PGColumns(row: $0, table: "information_schema.tables").string("name") }
        let tables = Set(present)
        if !tables.contains(PostgresSchema.migrationsTable) {
            let foreign = PostgresSchema.tables.filter(tables.contains)
            if !foreign.isEmpty {
                let headscale = Set(["users", "nodes", "pre_auth_keys"]).isSubset(of: tables)
                throw StoreError(.corrupt, "database \(settings.database) holds "
                    + (headscale ? "headscale's tables" : "another program's tables (\(foreign.prefix(6).joined(separator: ", ")))")
                    + "; Warren keeps its state in a database of its own: give database.postgres.name a new (empty) database")
            }
            _ = try run("""
                CREATE TABLE \(PostgresSchema.migrationsTable) (version BIGINT PRIMARY KEY, name TEXT NOT NULL, \
                applied DOUBLE PRECISION NOT NULL)
                """)
        }
        let applied = try run("SELECT version, name FROM \(PostgresSchema.migrationsTable) ORDER BY version").map { row in
            let c = PGColumns(row: row, table: PostgresSchema.migrationsTable)
            return (version: try c.int("version"), name: try c.string("name"))
        }
        let known = Dictionary(uniqueKeysWithValues: PostgresSchema.migrations.map { ($0.version, $0.name) })
        for migration in applied where known[migration.version] == nil {
            throw StoreError(.corrupt, "database \(settings.database) was written by a newer warren-control (unknown schema "
                                     + "migration \(migration.version): \(migration.name.debugDescription))")
        }
        let done = Set(applied.map(\.version))
        for migration in PostgresSchema.migrations where !done.contains(migration.version) {
            _ = try run("BEGIN")
            do {
                for statement in migration.statements { _ = try run(statement) }
                _ = try run("INSERT INTO \(PostgresSchema.migrationsTable) (version, name, applied) VALUES ($1, $2, $3)",
                            [migration.version, migration.name, Date().timeIntervalSinceReferenceDate])
                _ = try run("COMMIT")
            } catch {
                _ = try? run("ROLLBACK")
                throw error
            }
            logger.info("PostgreSQL store: applied schema migration \(migration.name)")
        }
    }
}

/// One connection of the pool and the queue its blocking work runs on. `connection` is touched only on `queue`.
final class ConnectionSlot: @unchecked Sendable {
    let queue: DispatchQueue
    var connection: BlockingConnection?

    init(index: Int) { queue = DispatchQueue(label: "warren.store.postgres.\(index)") }

    /// The slot's connection, (re)connecting when it has none or it closed.
    func connected(_ store: PostgresControlStore) throws -> BlockingConnection {
        if let connection, !connection.isClosed { return connection }
        connection?.close()
        connection = nil
        let fresh = try store.connect()
        connection = fresh
        return fresh
    }

    /// Forgets a connection that failed (closing it); the next use connects again.
    func drop() {
        connection?.close()
        connection = nil
    }
}

/// A fixed set of slots handed out one caller at a time; callers beyond the size wait in order.
final class ConnectionPool: Sendable {
    private struct State {
        var idle: [ConnectionSlot]
        var all: [ConnectionSlot]
        var waiters: [CheckedContinuation<ConnectionSlot, any Error>] = []
        var closed = false
    }

    private let state: Mutex<State>

    init(size: Int) {
        let slots = (0..<max(1, size)).map(ConnectionSlot.init(index:))
        state = Mutex(State(idle: slots, all: slots))
    }

    func acquire() async throws -> ConnectionSlot {
        try await withCheckedThrowingContinuation { continuation in
            let ready: Result<ConnectionSlot, any Error>? = state.withLock { state in
                if state.closed { return .failure(StoreError(.io, "the PostgreSQL store is closed")) }
                if let slot = state.idle.popLast() { return .success(slot) }
                state.waiters.append(continuation)
                return nil
            }
            if let ready { continuation.resume(with: ready) }
        }
    }

    func release(_ slot: ConnectionSlot) {
        let waiter: CheckedContinuation<ConnectionSlot, any Error>? = state.withLock { state in
            if !state.waiters.isEmpty { return state.waiters.removeFirst() }
            state.idle.append(slot)
            return nil
        }
        waiter?.resume(returning: slot)
    }

    /// Refuses new callers and fails the waiting ones; returns every slot (to close their connections).
    func close() -> [ConnectionSlot] {
        let (waiters, slots) = state.withLock { state in
            state.closed = true
            let waiters = state.waiters
            state.waiters = []
            return (waiters, state.all)
        }
        for waiter in waiters { waiter.resume(throwing: StoreError(.io, "the PostgreSQL store is closed")) }
        return slots
    }
}
