// Users' e-mail and identity-provider fields, and keys' hash schemes (headscale's bcrypt beside Warren's SHA-256), in
// both stores: kept as written, changed by an update, across a restart (SQLite), and added to a database written
// before they existed (schema v3) with the values that mean "none" and "Warren's SHA-256".

import Foundation
import GRDB
import TailscaleKeys
@testable import WarrenControlSQLite
import WarrenControlStore
import WarrenPacket
import WarrenTestSupport
import XCTest

final class UserIdentityStoreTests: XCTestCase {
    /// A bcrypt text (the hash's form is all a store sees).
    static let bcryptText = "$2a$10$abcdefghijklmnopqrstuuMBkOc5cTnW9NKKZSZJNn8qBJaMjh9cm"

    private func stores() throws -> [(String, any ControlStore)] {
        [("memory", MemoryControlStore()), ("sqlite", try SQLiteControlStore(path: try TemporaryDirectory.make() + "/control.sqlite"))]
    }

    func testEmailProviderAndHashSchemesAreKeptAndUpdated() async throws {
        for (name, store) in try stores() {
            let (alice, bob, key, api) = try await store.transaction { tx in
                let alice = try tx.insert(User(id: UserID(0), name: "alice", displayName: "Alice", created: referenceNow,
                                               email: "alice@example.com", providerID: "https://idp.example/a1", provider: "oidc"))
                let bob = try tx.createUser(name: "bob", email: "bob@example.org", now: referenceNow)
                let key = try tx.insert(PreAuthKey(prefix: "Ab-_cdEFgh12", secretHash: Array(Self.bcryptText.utf8), hashScheme: .bcrypt,
                                                   userID: alice.id, reusable: true, created: referenceNow))
                let api = try tx.insert(APIKey(prefix: "AbC_-12", secretHash: Array(Self.bcryptText.utf8), hashScheme: .bcrypt, created: referenceNow))
                return (alice, bob, key, api)
            }
            let back = try await store.read { tx in
                (try tx.user(id: alice.id), try tx.user(named: "bob"), try tx.preAuthKey(prefix: "Ab-_cdEFgh12"), try tx.apiKey(prefix: "AbC_-12"))
            }
            XCTAssertEqual(back.0, alice, name)
            XCTAssertEqual(back.0?.providerID, "https://idp.example/a1", name)
            XCTAssertEqual(back.1, bob, name)
            XCTAssertEqual([back.1?.email, back.1?.provider], ["bob@example.org", ""], name)
            XCTAssertNil(back.1?.providerID, name)
            XCTAssertEqual(back.2, key, name)
            XCTAssertEqual(back.2?.hashScheme, .bcrypt, name)
            XCTAssertEqual(back.3, api, name)
            XCTAssertEqual(back.3?.hashScheme, .bcrypt, name)

            // Updates write every field, including going back to none.
            var changed = alice
            changed.email = "a@example.net"
            changed.providerID = nil
            changed.provider = ""
            var rehashed = key
            rehashed.hashScheme = .sha256
            rehashed.secretHash = Array(repeating: 7, count: 32)
            let (newUser, newKey) = (changed, rehashed)
            try await store.transaction { tx in
                try tx.update(newUser)
                try tx.update(newKey)
            }
            let after = try await store.read { tx in (try tx.user(id: alice.id), try tx.preAuthKey(id: key.id)) }
            XCTAssertEqual(after.0, changed, name)
            XCTAssertEqual(after.1, rehashed, name)

            // A bad e-mail address is refused when a user is created.
            for bad in ["no-at-sign", "two@@example.com", "@example.com", "alice@", "al ice@example.com", "a\u{7}@example.com",
                        String(repeating: "a", count: 250) + "@example.com"] {
                do {
                    _ = try await store.transaction { try $0.createUser(name: "carol", email: bad, now: referenceNow) }
                    XCTFail("\(name): \(bad.debugDescription) accepted")
                } catch let error as StoreError {
                    XCTAssertEqual(error.code, .invalid, "\(name): \(bad.debugDescription)")
                }
            }
            let carol = try await store.read { try $0.user(named: "carol") }
            XCTAssertNil(carol, name)
            if let sqlite = store as? SQLiteControlStore { try sqlite.close() }
        }
    }

    func testFieldsSurviveARestart() async throws {
        let path = try TemporaryDirectory.make() + "/control.sqlite"
        let store = try SQLiteControlStore(path: path)
        let alice = try await store.transaction { tx in
            try tx.insert(User(id: UserID(0), name: "alice", created: referenceNow, email: "alice@example.com",
                               providerID: "https://idp.example/a1", provider: "oidc"))
        }
        try store.close()
        let reopened = try SQLiteControlStore(path: path)
        let back = try await reopened.read { try $0.users() }
        XCTAssertEqual(back, [alice])
        try reopened.close()
    }

    func testADatabaseOfSchemaV3GetsTheNewColumnsWithTheirNoneValues() async throws {
        let path = try TemporaryDirectory.make() + "/control.sqlite"
        // A database as a warren-control of schema v3 left it: a user and one key of each kind.
        let queue = try DatabaseQueue(path: path)
        try Schema.migrator.migrate(queue, upTo: "v3: audit_log (admin actions)")
        let sha = Data(repeating: 1, count: 32)
        try await queue.write { db in
            XCTAssertFalse(try db.columns(in: "users").contains { $0.name == "email" }, "v3 has no e-mail column")
            try db.execute(sql: "INSERT INTO users (name, display_name, created) VALUES ('alice', 'Alice', 1.5)")
            try db.execute(sql: """
                INSERT INTO pre_auth_keys (prefix, secret_hash, user_id, reusable, ephemeral, pre_approved, created)
                VALUES ('abcdefghijkl', ?, 1, 1, 0, 0, 1.5)
                """, arguments: [sha])
            try db.execute(sql: "INSERT INTO api_keys (prefix, secret_hash, created) VALUES ('mnopqrstuvwx', ?, 1.5)", arguments: [sha])
        }
        try queue.close()

        let store = try SQLiteControlStore(path: path)
        let (users, keys, apiKeys) = try await store.read { tx in (try tx.users(), try tx.preAuthKeys(userID: nil), try tx.apiKeys()) }
        XCTAssertEqual(users.map(\.name), ["alice"])
        XCTAssertEqual(users.first?.email, "")
        XCTAssertEqual(users.first?.provider, "")
        XCTAssertNil(users.first?.providerID)
        XCTAssertEqual(keys.map(\.hashScheme), [.sha256])
        XCTAssertEqual(apiKeys.map(\.hashScheme), [.sha256])
        XCTAssertEqual(keys.first?.secretHash, Array(sha))
        try store.close()

        // A hash scheme this build does not know is a damaged row, said as such.
        let raw = try DatabaseQueue(path: path)
        try await raw.write { try $0.execute(sql: "UPDATE api_keys SET hash_scheme = 'md5'") }
        try raw.close()
        let damaged = try SQLiteControlStore(path: path)
        do {
            _ = try await damaged.read { try $0.apiKeys() }
            XCTFail("an unknown hash scheme was read")
        } catch let error as StoreError {
            XCTAssertEqual(error.code, .corrupt)
            XCTAssertTrue(error.message.contains("api_keys.hash_scheme"), error.message)
        }
        try damaged.close()
    }
}
