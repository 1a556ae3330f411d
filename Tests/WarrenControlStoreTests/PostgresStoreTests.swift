import Foundation
import TailscaleKeys
import WarrenControlPostgres
import WarrenControlStore
import WarrenPacket
import WarrenTestProbes
import WarrenTestSupport
import XCTest

/// What only the PostgreSQL store has to show (the contract tests run over it too, through `forEachBackend`):
/// reopening over TCP with a password, migrations (once, under a lock, refusing a newer schema or another program's
/// tables), two instances on one database (distinct addresses and names under concurrent joins, conflicts still
/// `.conflict`), recovery from lost connections, and clear errors for a wrong password or a server that is gone.
/// The server is the test process's own (PostgresTestServer: /tmp/warren-pgtest-*, removed at exit).
final class PostgresStoreTests: XCTestCase {
    func testEverythingSurvivesAReopenOverTCPWithAPassword() async throws {
        let server = try PostgresBackend.server()
        let database = try server.createDatabase()
        var keys = Keys(seed: 40)
        let (machine, nodeKey, otherMachine, otherKey) = (keys.machine(), keys.node(), keys.machine(), keys.node())
        let first = try await PostgresControlStore(settings: PostgresBackend.settings(server, database: database))
        let (node, keyText, apiText) = try await first.transaction { tx in
            let user = try tx.createUser(name: "alice", now: referenceNow)
            var generator = SeededGenerator(seed: 41)
            let key = try tx.createPreAuthKey(userID: user.id, options: PreAuthKeyOptions(reusable: true), now: referenceNow, generator: &generator)
            let api = try tx.createAPIKey(expiration: nil, now: referenceNow, generator: &generator)
            let node = try tx.registerNode(NodeRegistration(machineKey: machine, nodeKey: nodeKey, userID: user.id, hostname: "box", method: .authKey),
                                           allocator: defaultAllocator, now: referenceNow)
            _ = try tx.appendPolicy(text: "{}", created: referenceNow)
            return (node, key.text, api.text)
        }
        await first.close()

        let reopened = try await PostgresControlStore(settings: PostgresBackend.settings(server, database: database, tcp: true))
        let back = try await reopened.read { try $0.node(machineKey: machine) }
        XCTAssertEqual(back, node)
        _ = try await reopened.transaction { try $0.usePreAuthKey(keyText, now: referenceNow) }
        _ = try await reopened.read { try $0.validAPIKey(apiText, now: referenceNow) }
        let policy = try await reopened.read { try $0.currentPolicy()?.version }
        XCTAssertEqual(policy, 1)
        let next = try await reopened.transaction { tx in
            try tx.registerNode(NodeRegistration(machineKey: otherMachine, nodeKey: otherKey, userID: node.userID, hostname: "box", method: .cli),
                                allocator: defaultAllocator, now: referenceNow)
        }
        XCTAssertEqual(next.ipv4?.description, "100.64.0.2")
        XCTAssertEqual(next.givenName, "box-1")
        try await reopened.checkHealth()
        await reopened.close()
        await assertStoreError(.io, "closed") { try await reopened.read { try $0.users() } }
    }

    func testTwoInstancesStartingTogetherMigrateOnceAndANewerSchemaIsRefused() async throws {
        let server = try PostgresBackend.server()
        let database = try server.createDatabase()
        let settings = PostgresBackend.settings(server, database: database)
        async let a = PostgresControlStore(settings: settings)
        async let b = PostgresControlStore(settings: settings)
        let (one, two) = try await (a, b)
        let recorded = try server.psql("SELECT count(*), count(DISTINCT version) FROM warren_schema_migrations", database: database)
        let counts = recorded.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "|")
        XCTAssertEqual(counts.first, counts.last, "each migration recorded once: \(recorded)")
        XCTAssertNotEqual(counts.first, "0")
        try await one.checkHealth()

        // A newer warren-control migrated the database: the running instance's health check says so, and a restart
        // of this version is refused.
        try server.psql("INSERT INTO warren_schema_migrations (version, name, applied) VALUES (9999, 'from the future', 0)", database: database)
        await assertStoreError(.corrupt, "health after a newer migration") { try await two.checkHealth() }
        await one.close()
        await two.close()
        do {
            let refused = try await PostgresControlStore(settings: settings)
            await refused.close()
            XCTFail("a database with an unknown migration was opened")
        } catch let error as StoreError {
            XCTAssertEqual(error.code, .corrupt, "\(error)")
            XCTAssertTrue(error.message.contains("newer warren-control"), error.message)
        }
    }

    func testAnotherProgramsTablesAreRefused() async throws {
        let server = try PostgresBackend.server()
        let database = try server.createDatabase()
        try server.psql("CREATE TABLE users (id SERIAL PRIMARY KEY, name TEXT); CREATE TABLE nodes (id SERIAL PRIMARY KEY); "
                        + "CREATE TABLE pre_auth_keys (id SERIAL PRIMARY KEY)", database: database)
        do {
            let store = try await PostgresControlStore(settings: PostgresBackend.settings(server, database: database))
            await store.close()
            XCTFail("headscale's tables were taken for Warren's")
        } catch let error as StoreError {
            XCTAssertEqual(error.code, .corrupt, "\(error)")
            XCTAssertTrue(error.message.contains("headscale's tables"), error.message)
        }
        let untouched = try server.psql("SELECT count(*) FROM information_schema.tables WHERE table_name = 'warren_schema_migrations'",
                                        database: database)
        XCTAssertEqual(untouched.trimmingCharacters(in: .whitespacesAndNewlines), "0", "nothing of Warren's was written")
    }

    /// Two store instances on one database (as two warren-control processes would have), joins from both at once:
    /// no address or name is handed out twice, and a name taken on one instance is a `.conflict` on the other.
    func testConcurrentJoinsOnTwoInstancesNeverShareAnAddress() async throws {
        let server = try PostgresBackend.server()
        let database = try server.createDatabase()
        let a = try await PostgresControlStore(settings: PostgresBackend.settings(server, database: database))
        let b = try await PostgresControlStore(settings: PostgresBackend.settings(server, database: database, tcp: true))
        let user = try await a.transaction { try $0.createUser(name: "u", now: referenceNow) }
        var keys = Keys(seed: 42)
        let machines = (0..<60).map { _ in (keys.machine(), keys.node()) }
        let nodes = try await withThrowingTaskGroup(of: Node.self) { group in
            for (i, (machine, node)) in machines.enumerated() {
                let store: PostgresControlStore = i.isMultiple(of: 2) ? a : b
                group.addTask {
                    try await store.transaction { tx in
                        try tx.registerNode(NodeRegistration(machineKey: machine, nodeKey: node, userID: user.id, hostname: "same", method: .authKey),
                                            allocator: defaultAllocator, now: referenceNow)
                    }
                }
            }
            var all: [Node] = []
            for try await node in group { all.append(node) }
            return all
        }
        XCTAssertEqual(Set(nodes.compactMap(\.ipv4)).count, 60)
        XCTAssertEqual(Set(nodes.compactMap(\.ipv6)).count, 60)
        XCTAssertEqual(Set(nodes.map(\.givenName)), Set(["same"] + (1..<60).map { "same-\($0)" }))
        // The cursor is shared: the addresses are exactly the first 60.
        XCTAssertEqual(Set(nodes.compactMap { $0.ipv4?.description }), Set((1...60).map { "100.64.0.\($0)" }))

        // The same user name created on both instances at once, 20 times: each time one wins, the other is a conflict.
        for round in 0..<20 {
            async let onA = attempt { try await a.transaction { try $0.createUser(name: "race\(round)", now: referenceNow) } }
            async let onB = attempt { try await b.transaction { try $0.createUser(name: "race\(round)", now: referenceNow) } }
            let results = await [onA, onB]
            let wins = results.filter { if case .success = $0 { true } else { false } }.count
            XCTAssertEqual(wins, 1, "round \(round): \(results)")
            for case .failure(let error) in results {
                XCTAssertEqual((error as? StoreError)?.code, .conflict, "round \(round): \(error)")
            }
        }
        // A node's name taken through one instance cannot be taken through the other.
        let renamed = try await a.transaction { try $0.renameNode(id: nodes[0].id, to: "taken") }
        XCTAssertEqual(renamed.givenName, "taken")
        let other = nodes[1].id
        await assertStoreError(.conflict, "rename on the other instance") { try await b.transaction { try $0.renameNode(id: other, to: "TAKEN") } }
        await a.close()
        await b.close()
    }

    func testLostConnectionsAreReplacedAndTheTransactionRuns() async throws {
        let server = try PostgresBackend.server()
        let database = try server.createDatabase()
        let store = try await PostgresControlStore(settings: PostgresBackend.settings(server, database: database, maxConnections: 2))
        _ = try await store.transaction { try $0.createUser(name: "before", now: referenceNow) }
        // The server ends every session of this database (as a restart or a failover does).
        let ended = try server.psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '\(database)'",
                                    database: "postgres")
        XCTAssertNotEqual(ended.trimmingCharacters(in: .whitespacesAndNewlines), "0")
        try await Task.sleep(for: .milliseconds(200))
        _ = try await store.transaction { try $0.createUser(name: "after", now: referenceNow) }
        let names = try await store.read { try $0.users().map(\.name) }
        XCTAssertEqual(names, ["before", "after"])
        await store.close()
    }

    /// PostgreSQL ends a transaction at its first failed statement; a closure that swallows the error must not
    /// get a "success" that committed nothing.
    func testAFailureSwallowedInsideATransactionStillFailsIt() async throws {
        let server = try PostgresBackend.server()
        let store = try await PostgresControlStore(settings: PostgresBackend.settings(server, database: try server.createDatabase()))
        _ = try await store.transaction { try $0.createUser(name: "alice", now: referenceNow) }
        await assertStoreError(.conflict, "swallowed") {
            try await store.transaction { tx in
                _ = try? tx.insert(User(id: UserID(0), name: "alice", created: referenceNow))
                _ = try tx.createUser(name: "bob", now: referenceNow)
            }
        }
        let names = try await store.read { try $0.users().map(\.name) }
        XCTAssertEqual(names, ["alice"])
        await store.close()
    }

    func testAWrongPasswordAndAServerThatIsGoneAreClearErrors() async throws {
        let shared = try PostgresBackend.server()
        var wrong = PostgresBackend.settings(shared, database: "postgres", tcp: true)
        wrong.password = "not-the-password"
        do {
            let store = try await PostgresControlStore(settings: wrong)
            await store.close()
            XCTFail("logged in with a wrong password")
        } catch let error as StoreError {
            XCTAssertEqual(error.code, .io, "\(error)")
            XCTAssertTrue(error.message.contains("password authentication failed"), error.message)
            XCTAssertFalse(error.message.contains("not-the-password"), "no secret in the message: \(error.message)")
        }

        // A server of its own, stopped under a running store: the health check fails with .io, and no call hangs.
        let own = try PostgresTestServer.start()
        let store = try await PostgresControlStore(settings: PostgresBackend.settings(own, database: try own.createDatabase()))
        try await store.checkHealth()
        own.stop()
        let started = ContinuousClock.now
        await assertStoreError(.io, "health with the server gone") { try await store.checkHealth() }
        await assertStoreError(.io, "write with the server gone") { try await store.transaction { try $0.createUser(name: "x", now: referenceNow) } }
        XCTAssertLessThan(ContinuousClock.now - started, .seconds(30))
        await store.close()
    }
}

private func attempt<T: Sendable>(_ body: @Sendable () async throws -> T) async -> Result<T, any Error> {
    do {
        return .success(try await body())
    } catch {
        return .failure(error)
    }
}
