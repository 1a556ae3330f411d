import Foundation
import Synchronization
import WarrenControlPostgres
import WarrenControlStore
import WarrenPacket
import WarrenTestSupport
import XCTest

/// The ground for several instances on one database: the change feed (a write through one store instance reaches
/// a listener on another within 1 s, in commit order, with its origin; a lost connection ends in `.resync` and the
/// feed goes on) and singletons on an advisory lock (one holder at a time; the lock moves when its holder's session
/// dies or its instance stops).
final class PostgresChangeFeedTests: XCTestCase {
    func testAWriteOnOneInstanceReachesTheOthersFeedWithinASecond() async throws {
        let server = try PostgresBackend.server()
        let database = try server.createDatabase()
        let writer = try await PostgresControlStore(settings: PostgresBackend.settings(server, database: database))
        let listener = try await PostgresControlStore(settings: PostgresBackend.settings(server, database: database, tcp: true))
        let events = Events(try await listener.changeFeed(retryInterval: .milliseconds(100)))

        let started = ContinuousClock.now
        let user = try await writer.transaction { try $0.createUser(name: "alice", now: referenceNow) }
        guard case .changes(let first)? = await events.next() else { return XCTFail("no change arrived") }
        XCTAssertLessThan(ContinuousClock.now - started, .seconds(1))
        XCTAssertEqual(first.map(\.kind), ["user"])
        XCTAssertEqual(first.first?.id, String(user.id.rawValue))
        XCTAssertEqual(first.first?.origin, writer.instanceID)
        XCTAssertNotEqual(writer.instanceID, listener.instanceID)

        // A join: the node (once, though registration wrote it and its addresses in several statements).
        var keys = Keys(seed: 60)
        let (machine, nodeKey) = (keys.machine(), keys.node())
        let node = try await writer.transaction { tx in
            try tx.registerNode(NodeRegistration(machineKey: machine, nodeKey: nodeKey, userID: user.id, hostname: "box", method: .authKey),
                                allocator: defaultAllocator, now: referenceNow)
        }
        guard case .changes(let joined)? = await events.next() else { return XCTFail("the join did not arrive") }
        XCTAssertEqual(joined.map(\.kind), ["node"])
        XCTAssertEqual(joined.first?.id, String(node.id.rawValue))
        XCTAssertGreaterThan(joined[0].sequence, first[0].sequence)

        // A policy set, a rolled-back transaction (nothing), and reads (nothing), then a key: in commit order.
        _ = try await writer.transaction { try $0.appendPolicy(text: "{}", created: referenceNow) }
        struct Abort: Error {}
        _ = try? await writer.transaction { tx -> Int in
            _ = try tx.createUser(name: "ghost", now: referenceNow)
            throw Abort()
        }
        _ = try await writer.read { try $0.users() }
        _ = try await listener.transaction { tx in
            var generator = SeededGenerator(seed: 61)
            return try tx.createPreAuthKey(userID: user.id, options: PreAuthKeyOptions(), now: referenceNow, generator: &generator).key
        }
        var kinds: [String] = []
        var origins: [String] = []
        while kinds.count < 2, let event = await events.next() {
            guard case .changes(let changes) = event else { return XCTFail("unexpected \(event)") }
            kinds += changes.map(\.kind)
            origins += changes.map(\.origin)
        }
        XCTAssertEqual(kinds, ["policy", "preauthkey"])
        XCTAssertEqual(origins, [writer.instanceID, listener.instanceID])
        await writer.close()
        await listener.close()
    }

    func testALostFeedConnectionEndsInAResyncAndTheFeedGoesOn() async throws {
        let server = try PostgresBackend.server()
        let database = try server.createDatabase()
        let store = try await PostgresControlStore(settings: PostgresBackend.settings(server, database: database))
        let events = Events(try await store.changeFeed(retryInterval: .milliseconds(100)))
        _ = try await store.transaction { try $0.createUser(name: "before", now: referenceNow) }
        guard case .changes? = await events.next() else { return XCTFail("no change before the cut") }

        // The server ends the listening session (the store's pool connections are idle; they reconnect too).
        try server.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '\(database)' AND application_name = 'warren-control change feed'",
                        database: "postgres")
        _ = try await store.transaction { try $0.createUser(name: "during", now: referenceNow) }
        var sawResync = false
        var createdAfter = false
        var names: [String] = []
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline, !(sawResync && names.contains("after")) {
            if sawResync, !createdAfter {
                _ = try await store.transaction { try $0.createUser(name: "after", now: referenceNow) }
                createdAfter = true
            }
            guard let event = await events.next(timeout: .seconds(2)) else { continue }
            switch event {
            case .resync(let reason):
                sawResync = true
                XCTAssertTrue(reason.contains("lost"), reason)
            case .changes(let changes):
                for change in changes where change.kind == "user" {
                    let name = try await store.read { try $0.user(id: UserID(Int64(change.id)!))?.name }
                    if let name { names.append(name) }
                }
            }
        }
        XCTAssertTrue(sawResync, "no resync after the lost connection")
        XCTAssertTrue(names.contains("after"), "no change after the resync: \(names)")
        await store.close()
    }

    func testASingletonRunsOnOneInstanceAndMovesWhenItsHolderDies() async throws {
        let server = try PostgresBackend.server()
        let database = try server.createDatabase()
        let a = try await PostgresControlStore(settings: PostgresBackend.settings(server, database: database))
        let b = try await PostgresControlStore(settings: PostgresBackend.settings(server, database: database, tcp: true))
        let record = Holders()
        func start(_ store: PostgresControlStore, _ name: String) -> Task<Void, Never> {
            let singleton = PostgresSingleton(store: store, name: "ephemeral-reaper", retryInterval: .milliseconds(100),
                                              checkInterval: .milliseconds(200))
            return Task {
                await singleton.run {
                    record.enter(name)
                    while !Task.isCancelled { try? await Task.sleep(for: .milliseconds(20)) }
                    record.leave(name)
                }
            }
        }
        let runA = start(a, "a")
        let runB = start(b, "b")
        let first = try await record.waitForHolder(within: .seconds(5))
        // Steady state: one holder, the other never enters.
        try await Task.sleep(for: .seconds(1))
        XCTAssertEqual(record.active, [first])
        XCTAssertEqual(record.maximumAtOnce, 1)

        // The holder's session dies (its connection cut by the server): the other instance takes over, and the
        // old holder stops its work once it notices.
        let lockClass = 0x5761_7273
        try server.psql("""
            SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = \(lockClass) \
            AND database = (SELECT oid FROM pg_database WHERE datname = '\(database)')
            """, database: "postgres")
        let second = try await record.waitForHolder(within: .seconds(10), other: first)
        XCTAssertNotEqual(second, first)
        try await Task.sleep(for: .seconds(1))
        XCTAssertEqual(record.active, [second], "the old holder stopped")

        // The new holder's instance stops: the lock moves back.
        (second == "a" ? runA : runB).cancel()
        let third = try await record.waitForHolder(within: .seconds(10), other: second)
        XCTAssertEqual(third, first)
        runA.cancel()
        runB.cancel()
        await a.close()
        await b.close()
    }
}

/// Who runs the singleton's work now, and the most that ever ran it at once.
private final class Holders: Sendable {
    private let state = Mutex<(active: Set<String>, maximum: Int)>(([], 0))

    func enter(_ name: String) {
        state.withLock { state in
            state.active.insert(name)
            state.maximum = max(state.maximum, state.active.count)
        }
    }

    func leave(_ name: String) { state.withLock { _ = $0.active.remove(name) } }
    var active: Set<String> { state.withLock { $0.active } }
    var maximumAtOnce: Int { state.withLock { $0.maximum } }

    /// The single holder, once there is exactly one (other than `other`).
    func waitForHolder(within limit: Duration, other: String? = nil) async throws -> String {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline {
            let now = active
            if now.count == 1, let holder = now.first, holder != other { return holder }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw StoreError(.io, "no single holder within \(limit) (active: \(active))")
    }
}

/// The feed's events as they come, read by one task for the whole test (cancelling a wait for an AsyncStream's
/// next element would end the stream).
private final class Events: Sendable {
    private final class Buffer: Sendable {
        let state = Mutex<(events: [StoreChangeEvent], read: Int)>(([], 0))
    }

    private let buffer: Buffer
    private let reader: Task<Void, Never>

    init(_ stream: AsyncStream<StoreChangeEvent>) {
        let buffer = Buffer()
        self.buffer = buffer
        reader = Task {
            for await event in stream { buffer.state.withLock { $0.events.append(event) } }
        }
    }

    deinit { reader.cancel() }

    /// The next event not read yet, or nil after `timeout`.
    func next(timeout: Duration = .seconds(5)) async -> StoreChangeEvent? {
        let deadline = ContinuousClock.now + timeout
        while true {
            let event: StoreChangeEvent? = buffer.state.withLock { state in
                guard state.read < state.events.count else { return nil }
                state.read += 1
                return state.events[state.read - 1]
            }
            if let event { return event }
            if ContinuousClock.now >= deadline { return nil }
            try? await Task.sleep(for: .milliseconds(5))
        }
    }
}
