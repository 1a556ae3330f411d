// The admin commands as a headscale operator types them: headscale's aliases, -o json|json-line|yaml, selection by
// id as well as by name, preauthkeys/apikeys delete, nodes list-routes, nodes expire --disable, auth list/register/
// approve/reject, and headscale's CLI defaults (pre-auth keys 1 h, API keys 90 days). The real binary against an
// admin listener on a temporary socket, over SQLite.

import Foundation
import TailscaleKeys
import WarrenControlAdmin
import WarrenControlSQLite
import WarrenControlStore
import WarrenPacket
import XCTest

final class CLIParityTests: XCTestCase {
    private var server: AdminHTTPServer?
    private var store: SQLiteControlStore?
    private var stateDir = ""

    override func setUp() async throws {
        _ = try CLI.binary()
        stateDir = NSTemporaryDirectory() + "wcp-" + String(UUID().uuidString.prefix(8))
        try FileManager.default.createDirectory(atPath: stateDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let store = try SQLiteControlStore(path: stateDir + "/control.sqlite")
        self.store = store
        let api = AdminAPI(store: store, allocator: try AddressAllocator(), nodeKeyExpiry: 86_400)
        server = try await AdminHTTPServer.start(api: api, socketPath: AdminClient.socketPath(stateDirectory: stateDir))
    }

    override func tearDown() async throws {
        await server?.close()
        try? FileManager.default.removeItem(atPath: stateDir)
    }

    @discardableResult
    private func run(_ arguments: [String], file: StaticString = #filePath, line: UInt = #line) async throws -> String {
        let result = try await CLI.run(arguments + ["--state-dir", stateDir])
        XCTAssertEqual(result.status, 0, "warren-control \(arguments.joined(separator: " ")): \(result.stderr)", file: file, line: line)
        return result.stdout
    }

    private func fails(_ arguments: [String], file: StaticString = #filePath, line: UInt = #line) async throws -> String {
        let result = try await CLI.run(arguments + ["--state-dir", stateDir])
        XCTAssertNotEqual(result.status, 0, "warren-control \(arguments.joined(separator: " ")) should fail: \(result.stdout)", file: file, line: line)
        return result.stderr
    }

    private func json<T: Decodable>(_ type: T.Type, _ arguments: [String], file: StaticString = #filePath, line: UInt = #line) async throws -> T {
        try JSONDecoder().decode(T.self, from: Data(try await run(arguments + ["-o", "json"], file: file, line: line).utf8))
    }

    private func savePending(id: String, hostname: String) async throws {
        var generator = SystemRandomNumberGenerator()
        let registration = PendingRegistration(
            id: id, machineKey: MachinePrivate.generate(using: &generator).publicKey, nodeKey: NodePrivate.generate(using: &generator).publicKey,
            hostname: hostname, created: Date(), expires: Date().addingTimeInterval(600))
        try await XCTUnwrap(store).transaction { try $0.save(registration) }
    }

    func testAliasesAndOutputFormats() async throws {
        // headscale's group and verb aliases.
        try await run(["user", "new", "alice"])
        try await run(["namespace", "c", "bob"])
        let users = try await json([UserJSON].self, ["users", "ls"])
        XCTAssertEqual(users.map(\.name), ["alice", "bob"])

        // yaml: the same records, as YAML (a sequence of mappings, keys sorted).
        let yaml = try await run(["user", "show", "-o", "yaml"])
        XCTAssertEqual(yaml.split(separator: "\n").filter { $0.hasPrefix("- ") }.count, 2, yaml)
        for user in users {
            XCTAssertTrue(yaml.contains("  name: \(user.name)\n") && yaml.contains("  id: \(user.id)\n"), yaml)
        }
        // json-line: one line; json: indented.
        let line = try await run(["users", "list", "-o", "json-line"])
        XCTAssertEqual(line.filter { $0 == "\n" }.count, 1, line)
        XCTAssertEqual(try JSONDecoder().decode([UserJSON].self, from: Data(line.utf8)), users)
        let pretty = try await run(["users", "list", "-o", "json"])
        XCTAssertGreaterThan(pretty.filter { $0 == "\n" }.count, 2)
        // headscale's empty --output is the human-readable table.
        let table = try await run(["users", "list", "--output", ""])
        XCTAssertTrue(table.hasPrefix("ID"), table)
        let bad = try await fails(["users", "list", "-o", "xml"])
        XCTAssertTrue(bad.contains("xml"), bad)
        // Errors in the format asked, on standard error, as headscale writes them.
        let jsonError = try await fails(["users", "create", "alice", "-o", "json"])
        let object = try JSONSerialization.jsonObject(with: Data(jsonError.utf8)) as? [String: String]
        XCTAssertTrue(object?["error"]?.contains("already exists") == true, jsonError)
        let yamlError = try await fails(["users", "create", "alice", "--output=yaml"])
        XCTAssertTrue(yamlError.hasPrefix("error: ") && yamlError.contains("already exists"), yamlError)
        let textError = try await fails(["users", "create", "alice"])
        XCTAssertTrue(textError.hasPrefix("warren-control: ") && textError.contains("already exists"), textError)

        // Every group answers to its aliases.
        for arguments in [["node", "ls"], ["machine", "list"], ["nodes", "show"], ["preauthkey", "ls"], ["authkey", "list"], ["pre", "ls"],
                          ["apikey", "ls"], ["api", "show"], ["auth", "ls"]] {
            let output = try await run(arguments + ["-o", "json"])
            XCTAssertEqual((try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [Any])?.count, 0, "\(arguments): \(output)")
        }
    }

    func testSelectionByIDAndDeletes() async throws {
        let alice = try await json(UserJSON.self, ["users", "create", "alice"])
        // Users by id (-i, headscale's) or by name (-n) or as an argument.
        let renamed = try await json(UserJSON.self, ["users", "rename", "-i", String(alice.id), "-r", "ann"])
        XCTAssertEqual(renamed.name, "ann")
        try await run(["users", "mv", "-n", "ann", "--new-name", "anna"])
        try await run(["users", "rename", String(alice.id), "alice"])
        let filtered = try await json([UserJSON].self, ["users", "list", "-i", String(alice.id)])
        XCTAssertEqual(filtered.map(\.name), ["alice"])

        // Pre-auth keys: made for a user by id; expired and deleted by id, by prefix, or with headscale's -i.
        let first = try await json(CreatedPreAuthKeyJSON.self, ["preauthkeys", "create", "-u", String(alice.id)])
        let second = try await json(CreatedPreAuthKeyJSON.self, ["preauthkeys", "create", "--user", "alice", "--reusable"])
        let third = try await json(CreatedPreAuthKeyJSON.self, ["preauthkeys", "create", "-u", "alice"])
        try await run(["preauthkeys", "expire", "-i", String(first.preAuthKey.id)])
        let expired = try await json([PreAuthKeyJSON].self, ["preauthkeys", "list", "-u", String(alice.id)])
        XCTAssertEqual(expired.map(\.expired), [true, false, false])
        let deleted = try await json(PreAuthKeyJSON.self, ["preauthkeys", "delete", "-i", String(first.preAuthKey.id)])
        XCTAssertEqual(deleted.id, first.preAuthKey.id)
        try await run(["preauthkey", "rm", second.preAuthKey.prefix])
        try await run(["preauthkeys", "del", third.key])
        let value1 = try await json([PreAuthKeyJSON].self, ["preauthkeys", "list"]).count
        XCTAssertEqual(value1, 0)
        let missing = try await fails(["preauthkeys", "delete", "-i", String(first.preAuthKey.id)])
        XCTAssertTrue(missing.contains("no pre-auth key"), missing)
        let both = try await fails(["preauthkeys", "delete", "-i", "1", "abc"])
        XCTAssertTrue(both.contains("once"), both)

        // API keys: by -p prefix, -i id, or an argument.
        let k1 = try await json(CreatedAPIKeyJSON.self, ["apikeys", "create"])
        let k2 = try await json(CreatedAPIKeyJSON.self, ["apikeys", "create"])
        let k3 = try await json(CreatedAPIKeyJSON.self, ["apikeys", "create"])
        try await run(["apikeys", "expire", "-i", String(k1.apiKey.id)])
        try await run(["apikeys", "revoke", "-p", k2.apiKey.prefix])
        let value2 = try await json([APIKeyJSON].self, ["apikeys", "list"]).map(\.expired)
        XCTAssertEqual(value2, [true, true, false])
        try await run(["apikeys", "delete", "-p", k1.apiKey.prefix])
        try await run(["apikey", "remove", "-i", String(k2.apiKey.id)])
        try await run(["apikeys", "del", k3.key])
        let value3 = try await json([APIKeyJSON].self, ["apikeys", "list"]).count
        XCTAssertEqual(value3, 0)

        // Users deleted by -n as by id.
        try await run(["users", "create", "carol"])
        try await run(["users", "destroy", "-n", "carol", "--force"])
        try await run(["users", "delete", String(alice.id)])
        let value4 = try await json([UserJSON].self, ["users", "list"]).count
        XCTAssertEqual(value4, 0)
    }

    func testDefaultsAsHeadscales() async throws {
        try await run(["users", "create", "alice"])
        let store = try XCTUnwrap(self.store)
        // No --expiration: 1 h for a pre-auth key, 90 days for an API key (headscale's CLI defaults).
        let key = try await json(CreatedPreAuthKeyJSON.self, ["preauthkeys", "create", "-u", "alice"])
        let stored = try await store.read { try $0.preAuthKey(id: PreAuthKeyID(key.preAuthKey.id)) }
        let lifetime = try XCTUnwrap(stored?.expiration).timeIntervalSince(try XCTUnwrap(stored?.created))
        XCTAssertEqual(lifetime, 3600, accuracy: 5)
        let api = try await json(CreatedAPIKeyJSON.self, ["apikeys", "create"])
        let storedAPI = try await store.read { try $0.apiKey(id: APIKeyID(api.apiKey.id)) }
        let apiLifetime = try XCTUnwrap(storedAPI?.expiration).timeIntervalSince(try XCTUnwrap(storedAPI?.created))
        XCTAssertEqual(apiLifetime, 90 * 86_400, accuracy: 5)
        // never: no expiry, when asked for.
        let forever = try await json(CreatedPreAuthKeyJSON.self, ["preauthkeys", "create", "-u", "alice", "-e", "never"])
        XCTAssertNil(forever.preAuthKey.expiration)
        let foreverAPI = try await json(CreatedAPIKeyJSON.self, ["apikeys", "create", "--expiration", "never"])
        XCTAssertNil(foreverAPI.apiKey.expiration)
        let bad = try await fails(["preauthkeys", "create", "-u", "alice", "-e", "soon"])
        XCTAssertTrue(bad.contains("never"), bad)
    }

    func testRoutesExpiryAndAuth() async throws {
        let alice = try await json(UserJSON.self, ["users", "create", "alice"])
        try await savePending(id: "loginrouter0000000000001", hostname: "router")
        try await savePending(id: "loginplain00000000000001", hostname: "plain")
        try await savePending(id: "loginreject0000000000001", hostname: "phone")
        let pending = try await json([PendingRegistrationJSON].self, ["auth", "list"])
        XCTAssertEqual(Set(pending.map(\.hostname)), ["router", "plain", "phone"])

        // auth register / nodes register (by user id) / approve with a user / reject.
        let router = try await json(NodeJSON.self, ["auth", "register", "--user", "alice", "--auth-id", "loginrouter0000000000001"])
        XCTAssertEqual(router.givenName, "router")
        let plain = try await json(NodeJSON.self, ["auth", "approve", "--auth-id", "http://x/register/loginplain00000000000001", "-u", String(alice.id)])
        XCTAssertEqual(plain.user, "alice")
        let rejected = try await run(["auth", "reject", "--auth-id", "loginreject0000000000001"])
        XCTAssertTrue(rejected.contains("rejected"), rejected)
        let value5 = try await json([PendingRegistrationJSON].self, ["auth", "list"]).count
        XCTAssertEqual(value5, 0)
        let unknown = try await fails(["auth", "approve", "--auth-id", "loginreject0000000000001", "-u", "alice"])
        XCTAssertTrue(unknown.contains("no pending login"), unknown)

        // list-routes over all nodes (only those with routes) and for one; "routes" and "lsr" are its aliases.
        try await XCTUnwrap(store).transaction { tx in
            var node = try tx.requireNode(id: NodeID(router.id))
            node.advertisedRoutes = [IPPrefix("10.1.0.0/24")!, IPPrefix("0.0.0.0/0")!, IPPrefix("::/0")!]
            try tx.update(node)
        }
        try await run(["nodes", "approve-routes", "-i", String(router.id), "-r", "10.1.0.0/24"])
        let all = try await json([RoutesJSON].self, ["nodes", "list-routes"])
        XCTAssertEqual(all, [RoutesJSON(nodeID: router.id, name: "router", advertisedRoutes: ["10.1.0.0/24", "0.0.0.0/0", "::/0"],
                                        approvedRoutes: ["10.1.0.0/24"], servedRoutes: ["10.1.0.0/24"])])
        let one = try await json([RoutesJSON].self, ["node", "routes", "-i", String(plain.id)])
        XCTAssertEqual(one.map(\.nodeID), [plain.id])
        let table = try await run(["nodes", "lsr"])
        XCTAssertTrue(table.contains("10.1.0.0/24") && table.contains("router") && !table.contains("plain"), table)

        // expire --disable: the key never expires; --expiry: at a time; plain expire: now.
        let disabled = try await json(NodeJSON.self, ["nodes", "expire", "-i", String(router.id), "--disable"])
        XCTAssertNil(disabled.expiry)
        let storedExpiry = try await XCTUnwrap(store).read { try $0.node(id: NodeID(router.id))?.expiry }
        XCTAssertNil(storedExpiry)
        let text = try await run(["nodes", "logout", "router", "-d"])
        XCTAssertTrue(text.contains("expiry disabled"), text)
        let later = try await json(NodeJSON.self, ["nodes", "exp", "router", "-e", "2030-01-01T00:00:00Z"])
        XCTAssertEqual(later.expiry, "2030-01-01T00:00:00.000Z")
        let conflicting = try await fails(["nodes", "expire", "router", "-d", "-e", "2030-01-01T00:00:00Z"])
        XCTAssertTrue(conflicting.contains("not both"), conflicting)
        let now = try await json(NodeJSON.self, ["nodes", "e", String(router.id)])
        XCTAssertTrue(now.expired)

        // Nodes listed by the user's id as by its name.
        let value6 = try await json([NodeJSON].self, ["nodes", "list", "-u", String(alice.id)]).count
        XCTAssertEqual(value6, 2)
        let tagged = try await run(["nodes", "tags", "-i", String(plain.id), "-t", "tag:x", "-o", "yaml"])
        XCTAssertTrue(tagged.contains("- tag:x"), tagged)

        // nodes backfillips: a node without its IPv6 address gets one.
        try await XCTUnwrap(store).transaction { tx in
            var node = try tx.requireNode(id: NodeID(plain.id))
            node.ipv6 = nil
            try tx.update(node)
        }
        let changes = try await json([String].self, ["nodes", "backfillips", "--force"])
        XCTAssertEqual(changes.count, 1, "\(changes)")
        XCTAssertTrue(changes.first?.hasPrefix("assigned IPv6 ") == true, "\(changes)")
        let refilled = try await XCTUnwrap(store).read { try $0.node(id: NodeID(plain.id))?.ipv6 }
        XCTAssertNotNil(refilled)
        let nothing = try await run(["nodes", "backfillips"])
        XCTAssertEqual(nothing, "No node needed an address\n")
    }
}
