// headscale's hashed keys and its users' identity across `import headscale`: a headscale v0.29 database (laid out by
// HeadscaleFixture) holding pre-auth keys and API keys as headscale 0.28+ writes them (a prefix and a bcrypt hash, made
// here at headscale's cost 10 for key texts the test knows), and users with e-mail and identity-provider fields, is
// imported into a SQLite store; then the original key texts authenticate through the real paths: registration over
// ts2021 (pre-auth keys), and the admin API over the network on Warren's and headscale's routes (API keys as Bearer).
// Wrong secrets under a right prefix are refused. The users' fields show in headscale's user shape, in Warren's, and
// in `warren-control users list`.

import Foundation
import HummingbirdBcrypt
import Logging
import TailscaleKeys
import WarrenControlAdmin
import WarrenControlSQLite
import WarrenControlStore
import WarrenPacket
import XCTest
@testable import WarrenControlServer

final class HeadscaleImportKeysTests: XCTestCase {
    /// bcrypt.DefaultCost, which headscale uses for both kinds of keys.
    static let headscaleCost: UInt8 = 10

    private var directory = ""

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("hs-keys-\(getpid())-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// `count` characters of `alphabet` from the system's generator.
    private func random(_ count: Int, _ alphabet: String = "0123456789abcdef") -> String {
        let characters = Array(alphabet)
        return String((0..<count).map { _ in characters.randomElement()! })
    }

    /// The key texts the test gives headscale's rows, and the rows' ids.
    struct Keys {
        var reusable = "", oneOff = "", apiKey = "", legacyAPIKey = "", expiredAPIKey = ""
        var reusableID: Int64 = 0, oneOffID: Int64 = 0
    }

    /// Writes the headscale database: alice (from an identity provider), bob (local), two hashed pre-auth keys, two
    /// live API keys (0.28+ and legacy form) and an expired one; reads, plans and applies the import into a new store.
    private func importedStore() throws -> (SQLiteControlStore, Keys, HeadscaleImportPlan) {
        let path = directory + "/headscale.sqlite"
        let hs = try HeadscaleFixture(path: path, layout: .v029)
        let now = Date()
        let alice = try hs.user(name: "alice", displayName: "Alice Liddell", email: "alice@example.com",
                                providerIdentifier: "https://idp.example/a1b2c3", provider: "oidc")
        let bob = try hs.user(name: "bob", displayName: "Bob")
        var keys = Keys()
        // 0.28+ pre-auth key: "hskey-auth-" + 12 hex (prefix) + "-" + 64 hex (secret); headscale hashes the secret.
        let reusablePrefix = random(12), reusableSecret = random(64)
        keys.reusable = "hskey-auth-\(reusablePrefix)-\(reusableSecret)"
        keys.reusableID = try hs.preAuthKey(prefix: reusablePrefix, hash: Bcrypt.hash(reusableSecret, cost: Self.headscaleCost),
                                            userID: alice, reusable: true, expiration: now.addingTimeInterval(3600))
        // A one-off key whose prefix and secret use the rest of the base64 URL-safe alphabet (0.28's earliest keys),
        // "-" inside the prefix included: headscale splits by position, so must Warren.
        let urlSafe = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        let oneOffPrefix = "Ab-" + random(8, urlSafe) + "_", oneOffSecret = random(64, urlSafe)
        keys.oneOff = "hskey-auth-\(oneOffPrefix)-\(oneOffSecret)"
        keys.oneOffID = try hs.preAuthKey(prefix: oneOffPrefix, hash: Bcrypt.hash(oneOffSecret, cost: Self.headscaleCost),
                                          userID: bob, expiration: now.addingTimeInterval(3600))
        // API keys: "hskey-api-<12>-<64>", and the legacy "<7>.<secret>"; both bcrypt of the secret.
        let apiPrefix = random(12), apiSecret = random(64)
        keys.apiKey = "hskey-api-\(apiPrefix)-\(apiSecret)"
        try hs.apiKey(prefix: apiPrefix, hash: Bcrypt.hash(apiSecret, cost: Self.headscaleCost), expiration: now.addingTimeInterval(86_400))
        let legacyPrefix = random(7, urlSafe), legacySecret = random(32, urlSafe)
        keys.legacyAPIKey = "\(legacyPrefix).\(legacySecret)"
        try hs.apiKey(prefix: legacyPrefix, hash: Bcrypt.hash(legacySecret, cost: Self.headscaleCost), expiration: nil)
        let expiredPrefix = random(12), expiredSecret = random(64)
        keys.expiredAPIKey = "hskey-api-\(expiredPrefix)-\(expiredSecret)"
        try hs.apiKey(prefix: expiredPrefix, hash: Bcrypt.hash(expiredSecret, cost: Self.headscaleCost), expiration: now.addingTimeInterval(-60))
        try hs.close()

        let plan = try HeadscaleImport.plan(try HeadscaleImport.read(path: path), now: now)
        let store = try SQLiteControlStore(path: directory + "/warren.sqlite")
        _ = try store.transactionSync { try HeadscaleImport.apply(plan, to: $0) }
        return (store, keys, plan)
    }

    /// The same key text with the last character of its secret changed.
    private func wrongSecret(_ text: String) -> String {
        String(text.dropLast()) + (text.last == "0" ? "1" : "0")
    }

    // MARK: pre-auth keys at registration

    func testImportedBcryptPreAuthKeysRegisterAndWrongSecretsAreRefused() async throws {
        let (store, keys, plan) = try importedStore()
        XCTAssertEqual(Set(plan.preAuthKeys.map(\.headscaleID)), [keys.reusableID, keys.oneOffID])
        XCTAssertEqual(try store.transactionSync { try $0.preAuthKeys(userID: nil).map(\.hashScheme) }, [.bcrypt, .bcrypt])

        var configuration = ControlConfiguration(serverURL: "http://127.0.0.1:0")
        configuration.baseDomain = "import.warren"
        let directory = try StoreDirectory(store: store, ipv4Prefix: configuration.ipv4Prefix, ipv6Prefix: configuration.ipv6Prefix)
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        let engine = ControlEngine(configuration: configuration, directory: directory, policy: AllowAllPolicy(), logger: logger)
        try await engine.load()
        var generator = TestGenerator(seed: 28)
        let controlKey = MachinePrivate.generate(using: &generator)
        let server = try await ControlHTTPServer.start(engine: engine, controlKey: controlKey,
                                                       options: ControlServerOptions(host: "127.0.0.1", port: 0), logger: logger)
        let port = try XCTUnwrap(server.port)
        await engine.setServerURL("http://127.0.0.1:\(port)")

        let a = TestControlClient(port: port, seed: 1)
        try await a.connect(controlKey: controlKey.publicKey)
        // A wrong secret under the right prefix first (nothing remembered yet), then the key as headscale printed it.
        let wrong = try await a.register(a.registerRequest(authKey: wrongSecret(keys.reusable), hostname: "laptop"))
        XCTAssertEqual(wrong.error, "invalid pre-auth key")
        let ra = try await a.register(a.registerRequest(authKey: keys.reusable, hostname: "laptop"))
        XCTAssertEqual(ra.error, "")
        XCTAssertTrue(ra.machineAuthorized)
        // alice came from headscale with an e-mail address: she logs in as it (headscale's Username()).
        XCTAssertEqual(ra.login.loginName, "alice@example.com")
        // After a success, the wrong secret is still refused (the remembered check is per secret).
        let b = TestControlClient(port: port, seed: 2)
        try await b.connect(controlKey: controlKey.publicKey)
        let wrongAgain = try await b.register(b.registerRequest(authKey: wrongSecret(keys.reusable), hostname: "desk"))
        XCTAssertEqual(wrongAgain.error, "invalid pre-auth key")
        let rb = try await b.register(b.registerRequest(authKey: keys.reusable, hostname: "desk"))
        XCTAssertEqual(rb.error, "", "a reusable key, again")
        // The one-off key with "-" and "_" in prefix and secret: once, then spent, as on headscale.
        let c = TestControlClient(port: port, seed: 3)
        try await c.connect(controlKey: controlKey.publicKey)
        let wrongOneOff = try await c.register(c.registerRequest(authKey: wrongSecret(keys.oneOff), hostname: "phone"))
        XCTAssertEqual(wrongOneOff.error, "invalid pre-auth key")
        let rc = try await c.register(c.registerRequest(authKey: keys.oneOff, hostname: "phone"))
        XCTAssertEqual(rc.error, "")
        XCTAssertEqual(rc.login.loginName, "bob")
        let d = TestControlClient(port: port, seed: 4)
        try await d.connect(controlKey: controlKey.publicKey)
        let spent = try await d.register(d.registerRequest(authKey: keys.oneOff, hostname: "tablet"))
        XCTAssertTrue(spent.error.contains("already been used"), spent.error)

        let nodes = try await store.read { try $0.nodes() }
        XCTAssertEqual(Set(nodes.map(\.hostname)), ["laptop", "desk", "phone"])
        let keyIDs = try await store.read { try $0.preAuthKeys(userID: nil) }
        let reusable = try XCTUnwrap(keyIDs.first { $0.reusable })
        XCTAssertEqual(reusable.useCount, 2)
        XCTAssertEqual(reusable.hashScheme, .bcrypt, "the imported hash is kept as it is (no re-hash on use)")
        for client in [a, b, c, d] { await client.close() }
        await server.close()
        try store.close()
    }

    // MARK: API keys on both route sets

    private func call(_ api: AdminAPI, _ method: String, _ target: String, key: String?, body: String? = nil) async -> AdminResponse {
        let (path, query) = AdminRequest.splitTarget(target)
        let request = AdminRequest(method: method, path: path, query: query, authorization: key.map { "Bearer " + $0 },
                                   body: Array((body ?? "").utf8))
        return await api.handle(request, via: .network)
    }

    private func json(_ response: AdminResponse) throws -> Any {
        try JSONSerialization.jsonObject(with: Data(response.body))
    }

    func testImportedAPIKeysAuthenticateOnWarrensAndHeadscalesRoutes() async throws {
        let (store, keys, plan) = try importedStore()
        XCTAssertEqual(plan.apiKeys.count, 2)
        XCTAssertTrue(plan.leftBehind.contains { $0.contains("API key 3") && $0.contains("expired") }, "\(plan.leftBehind)")
        let api = AdminAPI(store: store, allocator: try AddressAllocator())
        for (name, key) in [("0.28+ form", keys.apiKey), ("legacy form", keys.legacyAPIKey)] {
            for route in ["/api/v1/users", "/api/v1/user"] {
                let wrong = await call(api, "GET", route, key: wrongSecret(key))
                XCTAssertEqual(wrong.status, 401, "\(name) \(route) with a wrong secret: \(String(decoding: wrong.body, as: UTF8.self))")
                let good = await call(api, "GET", route, key: key)
                XCTAssertEqual(good.status, 200, "\(name) \(route): \(String(decoding: good.body, as: UTF8.self))")
                let again = await call(api, "GET", route, key: wrongSecret(key))
                XCTAssertEqual(again.status, 401, "\(name) \(route): a wrong secret after a right one")
            }
        }
        let expired = await call(api, "GET", "/api/v1/user", key: keys.expiredAPIKey)
        XCTAssertEqual(expired.status, 401, "an expired key is not carried")
        let noKey = await call(api, "GET", "/api/v1/user", key: nil)
        XCTAssertEqual(noKey.status, 401)
        // Forms that are not keys never reach a record.
        for bogus in ["hskey-api-", keys.apiKey + "0", "hskey-api-" + String(repeating: "a", count: 12) + "." + String(repeating: "b", count: 64),
                      ".", String(keys.legacyAPIKey.prefix(7)) + ".", "hskey-auth-" + keys.apiKey.dropFirst("hskey-api-".count)] {
            let response = await call(api, "GET", "/api/v1/users", key: bogus)
            XCTAssertEqual(response.status, 401, bogus)
        }
        // Both API keys are listed masked as headscale shows them, and can be expired by that prefix.
        let apiPrefix = String(keys.apiKey.dropFirst("hskey-api-".count).prefix(12)), legacyPrefix = String(keys.legacyAPIKey.prefix(7))
        let listed = await call(api, "GET", "/api/v1/apikey", key: keys.apiKey)
        XCTAssertEqual(listed.status, 200, String(decoding: listed.body, as: UTF8.self))
        let apiKeys = try XCTUnwrap((try json(listed) as? [String: Any])?["apiKeys"] as? [[String: Any]])
        XCTAssertEqual(Set(apiKeys.compactMap { $0["prefix"] as? String }), ["hskey-api-\(apiPrefix)-***", "\(legacyPrefix)***"])
        let expire = await call(api, "POST", "/api/v1/apikey/expire", key: keys.legacyAPIKey, body: #"{"prefix": "\#(legacyPrefix)***"}"#)
        XCTAssertEqual(expire.status, 200, String(decoding: expire.body, as: UTF8.self))
        let afterExpiry = await call(api, "GET", "/api/v1/user", key: keys.legacyAPIKey)
        XCTAssertEqual(afterExpiry.status, 401, "expired by its headscale prefix")
        let stillGood = await call(api, "GET", "/api/v1/user", key: keys.apiKey)
        XCTAssertEqual(stillGood.status, 200)
        let created = await call(api, "POST", "/api/v1/user", key: keys.apiKey, body: #"{"name": "auditor"}"#)
        XCTAssertEqual(created.status, 200)
        // The audit log names the imported keys by their prefix, as it does Warren's.
        let actors = Set(try await store.read { try $0.auditEntries(since: nil, limit: 1000) }.map(\.actor))
        XCTAssertTrue(actors.contains { $0.hasPrefix("api-key \(apiPrefix) (id ") }, "\(actors)")
        XCTAssertTrue(actors.contains { $0.hasPrefix("api-key \(legacyPrefix) (id ") }, "\(actors)")
        // A key text given where a prefix goes is kept in the audit log only as its prefix, in headscale's form too.
        let deleted = await call(api, "DELETE", "/api/v1/apikey/\(keys.apiKey)", key: keys.apiKey)
        XCTAssertEqual(deleted.status, 200, String(decoding: deleted.body, as: UTF8.self))
        let objects = try await store.read { try $0.auditEntries(since: nil, limit: 1000) }.map(\.object)
        XCTAssertTrue(objects.contains { $0.contains("hskey-api-\(apiPrefix)-***") }, "\(objects)")
        let secret = String(keys.apiKey.suffix(64))
        XCTAssertFalse(objects.contains { $0.contains(secret) || $0.contains(String(secret.prefix(16))) }, "\(objects)")
        let gone = await call(api, "GET", "/api/v1/user", key: keys.apiKey)
        XCTAssertEqual(gone.status, 401, "deleted")
        try store.close()
    }

    // MARK: users' e-mail and provider

    func testUsersKeepEmailAndProviderInHeadscalesShapeWarrensAndTheCLI() async throws {
        let (store, keys, _) = try importedStore()
        let api = AdminAPI(store: store, allocator: try AddressAllocator())

        // headscale's shape (v0.29.2's v1User): every field, ids as strings.
        let listed = await call(api, "GET", "/api/v1/user", key: keys.apiKey)
        XCTAssertEqual(listed.status, 200)
        let users = try XCTUnwrap((try json(listed) as? [String: Any])?["users"] as? [[String: Any]])
        XCTAssertEqual(users.count, 2)
        let alice = try XCTUnwrap(users.first { $0["name"] as? String == "alice" })
        XCTAssertEqual(Set(alice.keys), ["id", "name", "createdAt", "displayName", "email", "providerId", "provider", "profilePicUrl"])
        XCTAssertEqual(alice["email"] as? String, "alice@example.com")
        XCTAssertEqual(alice["providerId"] as? String, "https://idp.example/a1b2c3")
        XCTAssertEqual(alice["provider"] as? String, "oidc")
        XCTAssertEqual(alice["displayName"] as? String, "Alice Liddell")
        XCTAssertTrue(alice["id"] is String, "headscale's ids are strings")
        let bob = try XCTUnwrap(users.first { $0["name"] as? String == "bob" })
        XCTAssertEqual([bob["email"], bob["providerId"], bob["provider"]].map { $0 as? String }, ["", "", ""])

        // headscale's e-mail filter, and CreateUser with an e-mail address.
        let byEmail = await call(api, "GET", "/api/v1/user?email=alice%40example.com", key: keys.apiKey)
        let found = try XCTUnwrap((try json(byEmail) as? [String: Any])?["users"] as? [[String: Any]])
        XCTAssertEqual(found.compactMap { $0["name"] as? String }, ["alice"])
        let created = await call(api, "POST", "/api/v1/user", key: keys.apiKey,
                                 body: #"{"name": "carol", "displayName": "Carol", "email": "carol@example.org"}"#)
        XCTAssertEqual(created.status, 200, String(decoding: created.body, as: UTF8.self))
        let carol = try XCTUnwrap((try json(created) as? [String: Any])?["user"] as? [String: Any])
        XCTAssertEqual(carol["email"] as? String, "carol@example.org")
        let stored = try await store.read { try $0.user(named: "carol") }
        XCTAssertEqual(stored?.email, "carol@example.org")
        let badEmail = await call(api, "POST", "/api/v1/user", key: keys.apiKey, body: #"{"name": "dave", "email": "no at sign"}"#)
        XCTAssertEqual(badEmail.status, 400, String(decoding: badEmail.body, as: UTF8.self))
        let picture = await call(api, "POST", "/api/v1/user", key: keys.apiKey, body: #"{"name": "erin", "pictureUrl": "https://x/p.png"}"#)
        XCTAssertEqual(picture.status, 200, String(decoding: picture.body, as: UTF8.self))
        let erin = try XCTUnwrap((try json(picture) as? [String: Any])?["user"] as? [String: Any])
        XCTAssertEqual(erin["profilePicUrl"] as? String, "https://x/p.png")
        let badPicture = await call(api, "POST", "/api/v1/user", key: keys.apiKey, body: #"{"name": "fay", "pictureUrl": "p.png"}"#)
        XCTAssertEqual(badPicture.status, 400)

        // Warren's shape.
        let warren = await call(api, "GET", "/api/v1/users", key: keys.apiKey)
        let warrenUsers = try JSONDecoder().decode([UserJSON].self, from: Data(warren.body))
        let w = try XCTUnwrap(warrenUsers.first { $0.name == "alice" })
        XCTAssertEqual([w.email, w.providerID, w.provider], ["alice@example.com", "https://idp.example/a1b2c3", "oidc"])
        XCTAssertNil(warrenUsers.first { $0.name == "bob" }?.providerID)

        // `warren-control users list`, over the admin socket of a state directory.
        let stateDir = directory + "/state"
        try FileManager.default.createDirectory(atPath: stateDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let server = try await AdminHTTPServer.start(api: api, socketPath: AdminClient.socketPath(stateDirectory: stateDir), tcp: nil)
        let binary = try RealTailscaleClientTests.warrenControlBinary()
        let table = try HeadscaleImportTests.run([binary, "users", "list", "--state-dir", stateDir])
        XCTAssertEqual(table.status, 0, table.output)
        let lines = table.output.split(separator: "\n").map(String.init)
        XCTAssertTrue(lines.first?.contains("EMAIL") == true && lines.first?.contains("PROVIDER") == true, table.output)
        let aliceLine = try XCTUnwrap(lines.first { $0.contains("alice") }, table.output)
        XCTAssertTrue(aliceLine.contains("alice@example.com") && aliceLine.contains("oidc (https://idp.example/a1b2c3)"), aliceLine)
        let filtered = try HeadscaleImportTests.run([binary, "users", "list", "--email", "carol@example.org", "-o", "json", "--state-dir", stateDir])
        XCTAssertEqual(filtered.status, 0, filtered.output)
        let decoded = try JSONDecoder().decode([UserJSON].self, from: Data(filtered.output.utf8))
        XCTAssertEqual(decoded.map(\.name), ["carol"])
        XCTAssertEqual(decoded.first?.email, "carol@example.org")
        await server.close()
        try store.close()
    }

    // MARK: the key texts themselves

    func testKeyTextsParseOnlyInTheirForms() {
        let hex64 = String(repeating: "ab", count: 32)
        XCTAssertEqual(PresentedKey(parsing: "hskey-auth-0123456789ab-" + hex64, kind: .preAuth)?.prefix, "0123456789ab")
        XCTAssertEqual(PresentedKey(parsing: "hskey-auth-Ab-_cdEFgh12-" + hex64, kind: .preAuth)?.prefix, "Ab-_cdEFgh12")
        XCTAssertNil(PresentedKey(parsing: "hskey-auth-0123456789ab-" + hex64, kind: .api), "a pre-auth key is no API key")
        XCTAssertNil(PresentedKey(parsing: "hskey-api-0123456789ab-" + hex64, kind: .preAuth), "an API key is no pre-auth key")
        XCTAssertEqual(PresentedKey(parsing: "hskey-api-0123456789ab-" + hex64, kind: .api)?.prefix, "0123456789ab")
        XCTAssertEqual(PresentedKey(parsing: "AbC_-12.secretSecretSecret", kind: .api)?.prefix, "AbC_-12")
        XCTAssertNil(PresentedKey(parsing: "AbC_-12.secret", kind: .preAuth))
        XCTAssertEqual(PresentedKey(parsing: "0123456789abcdef0123456789abcdef0123456789abcdef", kind: .preAuth)?.prefix, "0123456789ab")
        for bad in ["", "hskey-auth-", "hskey-auth-0123456789ab" + hex64, "hskey-auth-0123456789ab-" + hex64 + "a",
                    "hskey-auth-0123456789ab-" + String(hex64.dropLast()), "hskey-auth-0123456789a!-" + hex64,
                    "hskey-auth-0123456789ab-" + String(hex64.dropLast()) + "=", "hskey-auth-0123456789ab-" + String(hex64.dropLast()) + "é"] {
            XCTAssertNil(PresentedKey(parsing: bad, kind: .preAuth), bad)
        }
        for bad in ["abcdef.", ".secret", "abcdefgh.secret", "abc def.secret", "abcdefg.sec ret", "abcdefg." + String(repeating: "s", count: 73)] {
            XCTAssertNil(PresentedKey(parsing: bad, kind: .api), bad)
        }
        // A malformed stored hash never matches (and never reaches the C code).
        let key = PresentedKey(parsing: "hskey-api-0123456789ab-" + hex64, kind: .api)!
        for hash in ["", "$2a$10$short", String(repeating: "x", count: 60), "$2a$10$" + String(repeating: "\u{1}", count: 53)] {
            XCTAssertFalse(key.matches(hash: Array(hash.utf8), scheme: .bcrypt), hash)
        }
        XCTAssertTrue(key.matches(hash: Array(Bcrypt.hash(hex64, cost: 4).utf8), scheme: .bcrypt))
        XCTAssertFalse(key.matches(hash: Array(Bcrypt.hash(hex64, cost: 4).utf8), scheme: .sha256), "the scheme decides the check")
    }
}
