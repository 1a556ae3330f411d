// Several warren-control instances on one PostgreSQL database: the change feed, presence and singletons behind
// the engine's `ControlCluster` (see docs/control-server.md, "Several instances").
import Foundation
import Logging
import NIOCore
import PostgresNIO
import Synchronization
import WarrenControlStore

/// The cluster link of one instance.
///
/// Presence: which nodes have a map stream open on which instance is runtime state, changed at every connect and
/// disconnect, so it is kept out of the store's records, its write lock and its change log. Each instance holds a
/// session advisory lock of its own (class "Warp", a random positive key) on a dedicated connection, and on that
/// connection writes `presence` rows (node, its key), in batches, followed by `NOTIFY warren_presence`. An instance
/// is live exactly while its lock is held: PostgreSQL releases it when the process dies (`kill -9`: the kernel closes
/// the socket) or its connection breaks, so the rows of a dead instance stop counting at once, without waiting for a
/// heartbeat to time out, and whichever instance notices deletes them. Every instance reads the rows of the other
/// live instances after each notification and every `pollInterval` (which also catches deaths, which notify
/// nobody), and hands the whole set to the engine, which compares it with what it had.
///
/// After its own connection was lost (its lock with it, so others may have deleted its rows), an instance takes a
/// lock again and writes its whole presence anew.
public final class PostgresCluster: ControlCluster, Sendable {
    public let store: PostgresControlStore
    public var instanceID: String { store.instanceID }
    let pollInterval: Duration
    let retryInterval: Duration
    let logger: Logger

    static let presenceChannel = "warren_presence"
    static let instanceLockClass: Int32 = 0x5761_7270

    private struct State {
        /// The nodes this instance has a stream of (what the table should say).
        var local: Set<Int64> = []
        /// What the table says for this instance, on the current connection (empty after a reconnect).
        var written: Set<Int64> = []
        /// The lock key this instance holds now (nil between connections).
        var key: Int32?
        var flushWanted = false
        var refreshWanted = false
    }
    private let state = Mutex(State())
    /// The link's tasks (``stop()`` ends them and waits).
    private let tasks = Mutex<[Task<Void, Never>]>([])
    /// Wakes the presence loop (a flush, a refresh, or a poll is due).
    private let kick: AsyncStream<Void>.Continuation
    private let kicks: AsyncStream<Void>

    public init(store: PostgresControlStore, pollInterval: Duration = .seconds(2), retryInterval: Duration = .milliseconds(500)) {
        self.store = store
        self.pollInterval = pollInterval
        self.retryInterval = retryInterval
        self.logger = store.logger
        (kicks, kick) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// The lock key this instance holds (tests).
    public var instanceKey: Int32? { state.withLock { $0.key } }

    public func setPresence(node: Int64, online: Bool) {
        state.withLock { s in
            if online { s.local.insert(node) } else { s.local.remove(node) }
            s.flushWanted = true
        }
        kick.yield()
    }

    public func runSingleton(named name: String, onChange: @escaping @Sendable (Bool) -> Void,
                             _ body: @escaping @Sendable () async -> Void) async {
        await PostgresSingleton(store: store, name: name, retryInterval: retryInterval).run(onChange: onChange, body)
    }

    public func events() async throws -> AsyncStream<ClusterEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: ClusterEvent.self, bufferingPolicy: .unbounded)
        let (feed, feedTask) = try await store.changeFeedAndTask(retryInterval: retryInterval)
        let first = try await store.dedicatedConnection(purpose: "presence")
        let tasks = [
            Task {
                for await event in feed {
                    switch event {
                    case .changes(let changes): continuation.yield(.changes(changes))
                    case .resync(let reason): continuation.yield(.resync(reason: reason))
                    }
                }
            },
            Task { await self.runPresence(first: first, to: continuation) },
            Task { await self.runPresenceListener() },
            Task { [pollInterval, kick] in
                while !Task.isCancelled {
                    try? await Task.sleep(for: pollInterval)
                    self.state.withLock { $0.refreshWanted = true }
                    kick.yield()
                }
            },
        ]
        self.tasks.withLock { $0 += tasks + [feedTask] }
        continuation.onTermination = { _ in for task in tasks { task.cancel() } }
        state.withLock { $0.refreshWanted = true }
        kick.yield()
        return stream
    }

    /// Leaves the cluster: ends the link's tasks and waits until their connections are closed (call before
    /// closing the store, whose event loop they run on).
    public func stop() async {
        let running = tasks.withLock { tasks in
            defer { tasks = [] }
            return tasks
        }
        for task in running { task.cancel() }
        for task in running { await task.value }
    }

    // MARK: Presence

    /// Holds this instance's lock and writes its presence; reads the others' when asked.
    private func runPresence(first: PostgresConnection, to events: AsyncStream<ClusterEvent>.Continuation) async {
        var connection: PostgresConnection? = first
        var iterator = kicks.makeAsyncIterator()
        while !Task.isCancelled {
            if connection == nil {
                connection = try? await store.dedicatedConnection(purpose: "presence")
                if connection == nil {
                    try? await Task.sleep(for: retryInterval)
                    continue
                }
            }
            guard let live = connection else { continue }
            do {
                let key = try await takeInstanceLock(live)
                state.withLock { s in
                    s.key = key
                    s.written = []
                    s.flushWanted = true
                    s.refreshWanted = true
                }
                logger.info("cluster: joined", metadata: ["instance": "\(instanceID)", "key": "\(key)"])
                // Rows a former holder of this key left (it died) are not this instance's.
                _ = try await live.query("DELETE FROM presence WHERE instance_key = \(key)", logger: logger)
                while !Task.isCancelled {
                    let (flush, refresh) = state.withLock { s in
                        defer { s.flushWanted = false; s.refreshWanted = false }
                        return (s.flushWanted, s.refreshWanted)
                    }
                    if flush { try await flushPresence(live, key: key) }
                    if refresh { events.yield(.presence(try await readPresence(live, key: key))) }
                    if state.withLock({ $0.flushWanted || $0.refreshWanted }) { continue }
                    guard await iterator.next() != nil else { break }
                }
            } catch {
                if Task.isCancelled { break }
                logger.warning("cluster: the presence connection failed; reconnecting", metadata: ["error": "\(error)"])
            }
            state.withLock { $0.key = nil }
            _ = try? await live.close()
            connection = nil
            try? await Task.sleep(for: retryInterval)
        }
        if let connection { _ = try? await connection.close() }
    }

    /// Takes a free instance key (a positive random one: the lock table shows keys as unsigned object ids).
    private func takeInstanceLock(_ connection: PostgresConnection) async throws -> Int32 {
        for _ in 0..<64 {
            let key = Int32.random(in: 1...Int32.max)
            let rows = try await connection.query("SELECT pg_try_advisory_lock(\(Self.instanceLockClass), \(key))", logger: logger)
            for try await held in rows.decode(Bool.self) where held { return key }
        }
        throw StoreError(.io, "no free instance lock after 64 tries")
    }

    /// Writes the difference between what this instance has and what the table says, then notifies.
    private func flushPresence(_ connection: PostgresConnection, key: Int32) async throws {
        let (added, removed) = state.withLock { s -> ([Int64], [Int64]) in
            let added = s.local.subtracting(s.written)
            let removed = s.written.subtracting(s.local)
            return (Array(added), Array(removed))
        }
        guard !added.isEmpty || !removed.isEmpty else { return }
        let since = Date().timeIntervalSinceReferenceDate
        if !added.isEmpty {
            _ = try await connection.query("""
                INSERT INTO presence (node_id, instance_key, since) SELECT n, \(key), \(since) FROM unnest(\(added)::bigint[]) AS n \
                ON CONFLICT DO NOTHING
                """, logger: logger)
        }
        if !removed.isEmpty {
            _ = try await connection.query("DELETE FROM presence WHERE instance_key = \(key) AND node_id = ANY(\(removed)::bigint[])",
                                           logger: logger)
        }
        state.withLock { s in
            s.written.formUnion(added)
            s.written.subtract(removed)
        }
        _ = try await connection.query("SELECT pg_notify(\(Self.presenceChannel), \(String(key)))", logger: logger)
    }

    /// The advisory locks held on this database under the instance class: the live instances' keys.
    private static let liveKeys = """
        SELECT l.objid::bigint FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 \
        AND l.classid::bigint = \(Int64(instanceLockClass)) \
        AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        """

    /// The nodes on other live instances; deletes the rows of dead ones (and tells the others).
    private func readPresence(_ connection: PostgresConnection, key: Int32) async throws -> Set<Int64> {
        let dead = try await connection.query(PostgresQuery(unsafeSQL: """
            DELETE FROM presence WHERE instance_key::bigint NOT IN (\(Self.liveKeys)) RETURNING node_id
            """), logger: logger)
        var reaped = 0
        for try await _ in dead.decode(Int64.self) { reaped += 1 }
        if reaped > 0 {
            logger.info("cluster: presence of instances that are gone removed", metadata: ["nodes": "\(reaped)"])
            _ = try await connection.query("SELECT pg_notify(\(Self.presenceChannel), \(String(key)))", logger: logger)
        }
        let rows = try await connection.query(PostgresQuery(unsafeSQL: """
            SELECT DISTINCT node_id FROM presence WHERE instance_key <> \(key) AND instance_key::bigint IN (\(Self.liveKeys))
            """), logger: logger)
        var nodes = Set<Int64>()
        for try await node in rows.decode(Int64.self) { nodes.insert(node) }
        return nodes
    }

    /// Listens for other instances' presence notifications and asks the presence loop to read again.
    private func runPresenceListener() async {
        while !Task.isCancelled {
            var open: PostgresConnection?
            do {
                let connection = try await store.dedicatedConnection(purpose: "presence listener")
                open = connection
                try await connection.listen(on: Self.presenceChannel) { notifications in
                    // Anything missed while not listening: read once now.
                    self.state.withLock { $0.refreshWanted = true }
                    self.kick.yield()
                    for try await notification in notifications {
                        let own = self.state.withLock { s in s.key.map(String.init) == notification.payload }
                        if own { continue }
                        self.state.withLock { $0.refreshWanted = true }
                        self.kick.yield()
                    }
                }
            } catch {
                if !Task.isCancelled {
                    logger.debug("cluster: presence listener lost its connection", metadata: ["error": "\(error)"])
                }
            }
            if let open { _ = try? await open.close() }
            if Task.isCancelled { return }
            try? await Task.sleep(for: retryInterval)
        }
    }
}
