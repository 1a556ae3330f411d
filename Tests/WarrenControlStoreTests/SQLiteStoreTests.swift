import Foundation
import GRDB
import TailscaleKeys
import WarrenControlSQLite
import WarrenControlStore
import WarrenPacket
import WarrenTestSupport
import XCTest

/// What only the SQLite store has to show: persistence across restarts and `kill -9`, refusal of foreign or
/// damaged files, and safe reading of damaged rows.
final class SQLiteStoreTests: XCTestCase {
    func testEverythingSurvivesARestart() async throws {
        let path = try TemporaryDirectory.make() + "/control.sqlite"
        var keys = Keys(seed: 20)
        let (machine, nodeKey, otherMachine, otherKey) = (keys.machine(), keys.node(), keys.machine(), keys.node())
        let (node, keyText, apiText) = try await {
            let store = try SQLiteControlStore(path: path)
            let result = try await store.transaction { tx in
                let user = try tx.createUser(name: "alice", now: referenceNow)
                var generator = SeededGenerator(seed: 21)
                let key = try tx.createPreAuthKey(userID: user.id, options: PreAuthKeyOptions(reusable: true), now: referenceNow, generator: &generator)
                let api = try tx.createAPIKey(expiration: nil, now: referenceNow, generator: &generator)
                let node = try tx.registerNode(NodeRegistration(machineKey: machine, nodeKey: nodeKey, userID: user.id, hostname: "box", method: .authKey),
                                               allocator: defaultAllocator, now: referenceNow)
                _ = try tx.appendPolicy(text: "{}", created: referenceNow)
                return (node, key.text, api.text)
            }
            try store.close()
            return result
        }()

        let reopened = try SQLiteControlStore(path: path)
        let back = try await reopened.read { try $0.node(machineKey: machine) }
        XCTAssertEqual(back, node)
        _ = try await reopened.transaction { try $0.usePreAuthKey(keyText, now: referenceNow) }
        _ = try await reopened.read { try $0.validAPIKey(apiText, now: referenceNow) }
        let policy = try await reopened.read { try $0.currentPolicy()?.version }
        XCTAssertEqual(policy, 1)
        // The address cursor survived too: the next machine gets the next address, not the first one again.
        let next = try await reopened.transaction { tx in
            try tx.registerNode(NodeRegistration(machineKey: otherMachine, nodeKey: otherKey, userID: node.userID, hostname: "box", method: .cli),
                                allocator: defaultAllocator, now: referenceNow)
        }
        XCTAssertEqual(next.ipv4?.description, "100.64.0.2")
        XCTAssertEqual(next.givenName, "box-1")
    }

    func testWALWithFullSynchronousCommits() async throws {
        let store = try SQLiteControlStore(path: try TemporaryDirectory.make() + "/control.sqlite")
        let settings = try await store.durabilitySettings()
        XCTAssertEqual(settings.journalMode, "wal")
        XCTAssertEqual(settings.writerSynchronous, 2, "synchronous=FULL")
        XCTAssertEqual(settings.readerSynchronous, 2, "synchronous=FULL")
    }

    func testDatabaseFilesAreOwnerOnly() throws {
        let path = try TemporaryDirectory.make() + "/control.sqlite"
        _ = try SQLiteControlStore(path: path)
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        let mode = try XCTUnwrap(attributes[.posixPermissions] as? NSNumber).intValue
        XCTAssertEqual(mode & 0o077, 0, String(mode, radix: 8))
    }

    func testADatabaseFromANewerVersionIsRefused() throws {
        let path = try TemporaryDirectory.make() + "/control.sqlite"
        do {
            let store = try SQLiteControlStore(path: path)
            try store.close()
        }
        let queue = try DatabaseQueue(path: path)
        try queue.write { try $0.execute(sql: "INSERT INTO grdb_migrations (identifier) VALUES ('v99: from the future')") }
        try queue.close()
        XCTAssertThrowsError(try SQLiteControlStore(path: path)) { error in
            XCTAssertEqual((error as? StoreError)?.code, .corrupt, "\(error)")
        }
    }

    func testAFileThatIsNotADatabaseIsRefused() throws {
        let path = try TemporaryDirectory.make() + "/control.sqlite"
        try Data("this is not a database, just some text that is long enough to have a header".utf8).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try SQLiteControlStore(path: path)) { error in
            XCTAssertNotNil(error as? StoreError, "\(error)")
        }
    }

    func testDamagedRowsAreReportedNotTrapped() async throws {
        let path = try TemporaryDirectory.make() + "/control.sqlite"
        var keys = Keys(seed: 22)
        let (machine, nodeKey) = (keys.machine(), keys.node())
        do {
            let store = try SQLiteControlStore(path: path)
            _ = try await store.transaction { tx in
                let user = try tx.createUser(name: "alice", now: referenceNow)
                return try tx.registerNode(NodeRegistration(machineKey: machine, nodeKey: nodeKey, userID: user.id, hostname: "box", method: .cli),
                                           allocator: defaultAllocator, now: referenceNow)
            }
            try store.close()
        }
        let damages = [
            "UPDATE nodes SET machine_key = x'0102'",
            "UPDATE nodes SET ipv4 = 'not an address'",
            "UPDATE nodes SET tags = '{\"not\":\"a list\"}'",
            "UPDATE nodes SET approved_routes = '[\"10.0.0.0/99\"]'",
            "UPDATE nodes SET register_method = 'telepathy'",
            "UPDATE nodes SET ephemeral = 7",
            "UPDATE nodes SET created = 'yesterday'",
            "UPDATE nodes SET hostname = x'00ff'",
            "UPDATE users SET name = x'00'",
        ]
        for damage in damages {
            let copy = try TemporaryDirectory.make() + "/control.sqlite"
            try FileManager.default.copyItem(atPath: path, toPath: copy)
            let queue = try DatabaseQueue(path: copy)
            try await queue.write { try $0.execute(sql: damage) }
            try queue.close()
            let store = try SQLiteControlStore(path: copy)
            await assertStoreError(.corrupt, damage) {
                try await store.read { tx in (try tx.users(), try tx.nodes()) }
            }
        }
    }

    /// Mutated database files: opening and reading them must end in a StoreError or in data, never in a crash.
    func testFuzzMutatedDatabaseFiles() async throws {
        let directory = try TemporaryDirectory.make()
        let path = directory + "/seed.sqlite"
        var keys = Keys(seed: 23)
        let registrations = (0..<5).map { _ in (keys.machine(), keys.node()) }
        do {
            let store = try SQLiteControlStore(path: path)
            _ = try await store.transaction { tx in
                let user = try tx.createUser(name: "alice", now: referenceNow)
                var generator = SeededGenerator(seed: 24)
                _ = try tx.createPreAuthKey(userID: user.id, options: PreAuthKeyOptions(tags: ["tag:x"]), now: referenceNow, generator: &generator)
                for (m, k) in registrations {
                    _ = try tx.registerNode(NodeRegistration(machineKey: m, nodeKey: k, userID: user.id, hostname: "h", method: .cli),
                                           allocator: defaultAllocator, now: referenceNow)
                }
            }
            try store.close()
        }
        let seed = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        var opened = 0, refused = 0
        let fuzzer = MutationFuzzer(seeds: [seed], iterations: 150, maximumLength: seed.count + 4096, seed: 0xDB)
        var index = 0
        var cases: [[UInt8]] = []
        fuzzer.run { cases.append($0) }
        for bytes in cases {
            index += 1
            let file = directory + "/case-\(index).sqlite"
            try Data(bytes).write(to: URL(fileURLWithPath: file))
            do {
                let store = try SQLiteControlStore(path: file)
                _ = try await store.read { tx in
                    (try tx.users(), try tx.nodes(), try tx.preAuthKeys(userID: nil), try tx.apiKeys(), try tx.policyHistory(),
                     try tx.pendingRegistrations(), try tx.addressCursor(.v4))
                }
                opened += 1
            } catch is StoreError {
                refused += 1
            }
            for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: file + suffix) }
        }
        XCTAssertEqual(opened + refused, cases.count)
        // Both outcomes occur: small mutations often leave a readable database, large ones do not.
        XCTAssertGreaterThan(opened, 0)
        XCTAssertGreaterThan(refused, 0)
    }
}
