// The ground for several warren-control instances on one database: a change feed (what other instances wrote, as
// it commits) and singletons (work that runs on one instance at a time, and moves when that instance dies).
import Foundation
import Logging
import NIOCore
import PostgresNIO
import Synchronization
import WarrenControlStore

/// The feed's notification channel and its reading.
///
/// Why LISTEN/NOTIFY over a change log, and both: a write transaction appends its changes to the `changes` table
/// and sends `NOTIFY warren_changes` with the last sequence number. PostgreSQL delivers the notification when
/// (and only when) the transaction commits, to every listening session, within milliseconds, so no instance
/// polls. The table makes the notification's content reliable: a listener reads every row after the last one it
/// saw, so notifications merged or delivered late lose nothing, and the order is the commit order (writers take
/// their numbers under the store's write lock). A listener that lost its connection cannot know what it missed
/// while away, so it gets `.resync` after reconnecting.
enum PostgresChangeFeed {
    static let channel = "warren_changes"
    /// Rows read per query while catching up.
    static let batch = 1_000
}

extension PostgresControlStore {
    /// A connection of its own (outside the pool), for a listener or a singleton's lock.
    func dedicatedConnection(purpose: String) async throws -> PostgresConnection {
        let configuration: PostgresConnection.Configuration
        do {
            configuration = try settings.connectionConfiguration(purpose: purpose)
        } catch let error as PostgresSettingsError {
            throw StoreError(.invalid, "database.postgres: \(error.description)")
        }
        do {
            return try await PostgresConnection.connect(on: group.next(), configuration: configuration,
                                                        id: connectionIDs.wrappingAdd(1, ordering: .relaxed).newValue, logger: logger)
        } catch let error as PSQLError {
            throw StoreError(.io, "cannot connect to \(settings): \(BlockingConnection.describe(error))")
        }
    }

    /// The change feed: every change committed by any instance on this database after this call returns (this
    /// instance's own included; compare `origin` with `instanceID`), as it commits. Returns once the feed listens;
    /// throws `.io` when it cannot connect. After a lost connection it reconnects (every `retryInterval`) and
    /// sends `.resync` first. Ends when the caller stops iterating (the stream is dropped or its task cancelled).
    public func changeFeed(retryInterval: Duration = .milliseconds(500)) async throws -> AsyncStream<StoreChangeEvent> {
        try await changeFeedAndTask(retryInterval: retryInterval).stream
    }

    /// The feed, and the task that reads it (ended by dropping the stream; awaited to know its connection is closed).
    func changeFeedAndTask(retryInterval: Duration) async throws -> (stream: AsyncStream<StoreChangeEvent>, task: Task<Void, Never>) {
        let (stream, continuation) = AsyncStream.makeStream(of: StoreChangeEvent.self, bufferingPolicy: .unbounded)
        let first = try await dedicatedConnection(purpose: "change feed")
        let started = AsyncStream.makeStream(of: Result<Void, any Error>.self)
        let task = Task {
            await self.runFeed(first: first, retryInterval: retryInterval, continuation: continuation, started: started.continuation)
        }
        continuation.onTermination = { _ in task.cancel() }
        for await result in started.stream {
            if case .failure(let error) = result {
                task.cancel()
                throw error
            }
            break
        }
        return (stream, task)
    }

    private func runFeed(first: PostgresConnection, retryInterval: Duration, continuation: AsyncStream<StoreChangeEvent>.Continuation,
                         started: AsyncStream<Result<Void, any Error>>.Continuation) async {
        var connection: PostgresConnection? = first
        var position: Int64?
        var lostReason: String?
        while !Task.isCancelled {
            if connection == nil {
                do {
                    connection = try await dedicatedConnection(purpose: "change feed")
                } catch {
                    if lostReason == nil { lostReason = "\(error)" }
                    try? await Task.sleep(for: retryInterval)
                    continue
                }
            }
            guard let live = connection else { continue }
            do {
                try await live.listen(on: PostgresChangeFeed.channel) { notifications in
                    // Listening now: anything committed from here on is either read below or notified.
                    let current = try await Self.lastSequence(live, logger: logger)
                    if position == nil {
                        started.yield(.success(()))
                        started.finish()
                    } else if let reason = lostReason {
                        continuation.yield(.resync(reason: "the change feed's connection was lost (\(reason)); changes may have been missed"))
                    }
                    lostReason = nil
                    position = current
                    for try await _ in notifications {
                        guard let from = position else { break }
                        position = try await Self.deliver(after: from, on: live, logger: logger, to: continuation)
                    }
                }
                lostReason = lostReason ?? "the server ended the session"
            } catch {
                if Task.isCancelled { break }
                if position == nil {
                    started.yield(.failure(StoreError(.io, "the change feed cannot listen: \(error)")))
                    started.finish()
                    _ = try? await live.close()
                    continuation.finish()
                    return
                }
                lostReason = lostReason ?? Self.describe(error)
            }
            _ = try? await live.close()
            connection = nil
            if !Task.isCancelled { try? await Task.sleep(for: retryInterval) }
        }
        if let connection { _ = try? await connection.close() }
        started.finish()
        continuation.finish()
    }

    private static func describe(_ error: any Error) -> String {
        (error as? PSQLError).map(BlockingConnection.describe) ?? "\(error)"
    }

    private static func lastSequence(_ connection: PostgresConnection, logger: Logger) async throws -> Int64 {
        let rows = try await connection.query("SELECT COALESCE(MAX(seq), 0) AS seq FROM changes", logger: logger)
        for try await (seq) in rows.decode(Int64.self) { return seq }
        return 0
    }

    /// Reads and yields the changes after `from`; returns the new position. Yields `.resync` when rows after `from`
    /// were already pruned.
    private static func deliver(after from: Int64, on connection: PostgresConnection, logger: Logger,
                                to continuation: AsyncStream<StoreChangeEvent>.Continuation) async throws -> Int64 {
        var position = from
        while true {
            let rows = try await connection.query("""
                SELECT seq, kind, object, origin, (SELECT MIN(seq) FROM changes) AS oldest FROM changes WHERE seq > \(position) \
                ORDER BY seq LIMIT \(PostgresChangeFeed.batch)
                """, logger: logger)
            var changes: [StoreChange] = []
            var oldest: Int64?
            for try await (seq, kind, object, origin, first) in rows.decode((Int64, String, String, String, Int64?).self) {
                oldest = oldest ?? first
                changes.append(StoreChange(sequence: seq, kind: kind, id: object, origin: origin))
            }
            if let oldest, oldest > position + 1, changes.first?.sequence != position + 1 {
                continuation.yield(.resync(reason: "the change feed fell behind the \(PostgresControlStore.changesKept) changes kept"))
            }
            guard let last = changes.last else { return position }
            continuation.yield(.changes(changes))
            position = last.sequence
            if changes.count < PostgresChangeFeed.batch { return position }
        }
    }
}

/// Work that must run on one instance at a time (key expiry, ephemeral reaping): held under a session-level
/// advisory lock (`pg_try_advisory_lock`) on a connection of its own. The lock goes with that session: when the
/// holding process dies or its connection breaks, the server releases it, and another instance, trying every
/// `retryInterval`, takes it over. The holder checks its connection every `checkInterval` and stops its work as
/// soon as it finds it gone (so two holders overlap by at most about that long, when the old one's connection
/// was cut while the process lived on).
public final class PostgresSingleton: Sendable {
    public let name: String
    private let store: PostgresControlStore
    private let retryInterval: Duration
    private let checkInterval: Duration
    /// The lock's two keys: Warren's singleton class ("Wars"), and a stable hash of the name (FNV-1a).
    static let lockClass: Int32 = 0x5761_7273

    public init(store: PostgresControlStore, name: String, retryInterval: Duration = .seconds(1), checkInterval: Duration = .seconds(1)) {
        self.store = store
        self.name = name
        self.retryInterval = retryInterval
        self.checkInterval = checkInterval
    }

    var lockKey: Int32 {
        var hash: UInt32 = 2_166_136_261
        for byte in name.utf8 {
            hash ^= UInt32(byte)
            hash = hash &* 16_777_619
        }
        return Int32(bitPattern: hash)
    }

    /// Runs until the calling task is cancelled or `body` returns: whenever this instance holds the lock, `body`
    /// runs; it is cancelled when the lock is lost (and started again when it is regained). `onChange` hears
    /// whether this instance holds the lock, at each change.
    public func run(onChange: @escaping @Sendable (Bool) -> Void = { _ in }, _ body: @escaping @Sendable () async -> Void) async {
        let logger = store.logger
        while !Task.isCancelled {
            let connection: PostgresConnection
            do {
                connection = try await store.dedicatedConnection(purpose: "singleton \(name)")
            } catch {
                logger.debug("singleton \(name): cannot connect: \(error)")
                try? await Task.sleep(for: retryInterval)
                continue
            }
            var finished = false
            while !Task.isCancelled {
                let held: Bool
                do {
                    held = try await tryLock(connection)
                } catch {
                    break
                }
                guard held else {
                    try? await Task.sleep(for: retryInterval)
                    continue
                }
                onChange(true)
                logger.info("singleton \(name): this instance holds it now")
                let bodyEnded = await withTaskGroup(of: Bool.self) { group in
                    group.addTask {
                        await body()
                        return true
                    }
                    group.addTask { [checkInterval] in
                        while !Task.isCancelled {
                            try? await Task.sleep(for: checkInterval)
                            if Task.isCancelled { break }
                            guard await Self.answers(connection, within: checkInterval * 3, logger: logger) else { return false }
                        }
                        return false
                    }
                    let first = await group.next() ?? false
                    group.cancelAll()
                    return first
                }
                onChange(false)
                if bodyEnded || Task.isCancelled {
                    _ = try? await connection.query("SELECT pg_advisory_unlock(\(Self.lockClass), \(lockKey))", logger: logger)
                    finished = true
                } else {
                    logger.warning("singleton \(name): the lock's connection was lost; stopped here, another instance may take over")
                }
                break
            }
            _ = try? await connection.close()
            if finished { return }
            if !Task.isCancelled { try? await Task.sleep(for: retryInterval) }
        }
    }

    /// Whether the session still answers a query within `limit` (a cut network can leave a query hanging, so the
    /// query is not awaited past the limit).
    static func answers(_ connection: PostgresConnection, within limit: Duration, logger: Logger) async -> Bool {
        if connection.isClosed { return false }
        let answered = Mutex(false)
        return await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            let finish: @Sendable (Bool) -> Void = { result in
                let first = answered.withLock { done in
                    defer { done = true }
                    return !done
                }
                if first { continuation.resume(returning: result) }
            }
            let future: EventLoopFuture<PostgresQueryResult> = connection.query("SELECT 1", logger: logger)
            future.whenComplete { result in
                if case .success = result { finish(true) } else { finish(false) }
            }
            let nanoseconds = limit.components.seconds * 1_000_000_000 + limit.components.attoseconds / 1_000_000_000
            connection.eventLoop.scheduleTask(in: .nanoseconds(nanoseconds)) { finish(false) }
        }
    }

    private func tryLock(_ connection: PostgresConnection) async throws -> Bool {
        let rows = try await connection.query("SELECT pg_try_advisory_lock(\(Self.lockClass), \(lockKey))", logger: store.logger)
        for try await held in rows.decode(Bool.self) { return held }
        return false
    }
}
