// Two of headscale 0.29's command-line forms, through the real binary: `users create NAME --email E
// [--display-name D] [--picture-url U]`, and `apikeys expire|delete --prefix P` with the prefixes headscale reads
// (hskey-api-PREFIX-***, a legacy 7-character prefix, PREFIX***) beside Warren's.

import Foundation
import WarrenControlAdmin
import WarrenControlSQLite
import WarrenControlStore
import XCTest

final class UserEmailAndKeyPrefixCLITests: XCTestCase {
    private var server: AdminHTTPServer?
    private var store: SQLiteControlStore?
    private var stateDir = ""

    override func setUp() async throws {
        _ = try CLI.binary()
        stateDir = NSTemporaryDirectory() + "wuek-" + String(UUID().uuidString.prefix(8))
        try FileManager.default.createDirectory(atPath: stateDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let store = try SQLiteControlStore(path: stateDir + "/control.sqlite")
        self.store = store
        server = try await AdminHTTPServer.start(api: AdminAPI(store: store, allocator: try AddressAllocator(), nodeKeyExpiry: 86_400),
                                                 socketPath: AdminClient.socketPath(stateDirectory: stateDir))
    }

    override func tearDown() async throws {
        await server?.close()
        try? FileManager.default.removeItem(atPath: stateDir)
    }

    private func run(_ arguments: [String]) async throws -> CommandResult {
        try await CLI.run(arguments + ["--state-dir", stateDir])
    }

    func testUsersCreateTakesHeadscalesFlags() async throws {
        let created = try await run(["users", "create", "alice", "--email", "alice@example.com", "--display-name", "Alice A", "-o", "json"])
        XCTAssertEqual(created.status, 0, created.stderr)
        let user = try JSONDecoder().decode(UserJSON.self, from: Data(created.stdout.utf8))
        XCTAssertEqual(user.email, "alice@example.com")
        XCTAssertEqual(user.displayName, "Alice A")
        // headscale's short flags: -e, -d.
        let short = try await run(["users", "create", "bob", "-e", "bob@example.org", "-d", "Bob"])
        XCTAssertEqual(short.status, 0, short.stderr)
        let stored = try await XCTUnwrap(store).read { try $0.users() }.sorted { $0.id < $1.id }
        XCTAssertEqual(stored.map(\.email), ["alice@example.com", "bob@example.org"])
        XCTAssertEqual(stored.map(\.displayName), ["Alice A", "Bob"])

        // The profile picture: empty is none; an http(s) URL is kept (and sent to clients); anything else is refused
        // and nothing is created.
        let emptyPicture = try await run(["users", "create", "carol", "--picture-url", ""])
        XCTAssertEqual(emptyPicture.status, 0, emptyPicture.stderr)
        let picture = try await run(["users", "create", "dave", "-p", "https://example.com/dave.png"])
        XCTAssertEqual(picture.status, 0, picture.stderr)
        let notURL = try await run(["users", "create", "frank", "-p", "javascript:alert(1)"])
        XCTAssertEqual(notURL.status, 1)
        XCTAssertTrue(notURL.stderr.contains("not an http(s) URL"), notURL.stderr)
        let badEmail = try await run(["users", "create", "erin", "--email", "erin"])
        XCTAssertEqual(badEmail.status, 1)
        XCTAssertTrue(badEmail.stderr.contains("not an e-mail address"), badEmail.stderr)
        let users = try await XCTUnwrap(store).read { try $0.users() }.sorted { $0.name < $1.name }
        XCTAssertEqual(users.map(\.name), ["alice", "bob", "carol", "dave"])
        XCTAssertEqual(users.map(\.pictureURL), ["", "", "", "https://example.com/dave.png"])

        // `users list --email` finds her by it.
        let listed = try await run(["users", "list", "--email", "alice@example.com", "-o", "json"])
        XCTAssertEqual(try JSONDecoder().decode([UserJSON].self, from: Data(listed.stdout.utf8)).map(\.name), ["alice"])
    }

    func testAPIKeyPrefixesInHeadscalesForms() async throws {
        let store = try XCTUnwrap(self.store)
        let warrenKey = try await run(["apikeys", "create"])
        XCTAssertEqual(warrenKey.status, 0, warrenKey.stderr)
        let warrenPrefix = try XCTUnwrap(PresentedKey(parsing: warrenKey.stdout.trimmingCharacters(in: .newlines), kind: .api)).prefix
        // Keys as `import headscale` carries them: a 0.28+ prefix (base64 URL-safe, here with a "-" inside and at the
        // end) and two legacy 7-character ones, one of them all digits.
        let bcryptText = Array(("$2a$10$" + String(repeating: "x", count: 53)).utf8)
        for prefix in ["Ab_-cdEFghI-", "Xy7_abc", "0000001"] {
            _ = try await store.transaction { try $0.insert(APIKey(prefix: prefix, secretHash: bcryptText, hashScheme: .bcrypt, created: Date())) }
        }
        func expired(_ prefix: String) async throws -> Bool {
            let key = try await store.read { try $0.apiKey(prefix: prefix) }
            return try XCTUnwrap(key).isExpired(at: Date())
        }

        let masked = try await run(["apikeys", "expire", "--prefix", "hskey-api-Ab_-cdEFghI--***"])
        XCTAssertEqual(masked.status, 0, masked.stderr)
        let value1 = try await expired("Ab_-cdEFghI-")
        XCTAssertTrue(value1)
        let bare = try await run(["apikeys", "expire", "-p", warrenPrefix])
        XCTAssertEqual(bare.status, 0, bare.stderr)
        let value2 = try await expired(warrenPrefix)
        XCTAssertTrue(value2)
        let legacy = try await run(["apikeys", "delete", "-p", "Xy7_abc***"])
        XCTAssertEqual(legacy.status, 0, legacy.stderr)
        let gone = try await store.read { try $0.apiKey(prefix: "Xy7_abc") }
        XCTAssertNil(gone)

        // "0000001" is the first key's id and the legacy key's prefix: refused as an argument, taken with -p or -i.
        let ambiguous = try await run(["apikeys", "delete", "0000001"])
        XCTAssertEqual(ambiguous.status, 1)
        XCTAssertTrue(ambiguous.stderr.contains("both the id of API key \(warrenPrefix)"), ambiguous.stderr)
        let viaPrefix = try await run(["apikeys", "delete", "-p", "0000001"])
        XCTAssertEqual(viaPrefix.status, 0, viaPrefix.stderr)
        let remaining = try await store.read { try $0.apiKeys() }.map(\.prefix)
        XCTAssertEqual(Set(remaining), [warrenPrefix, "Ab_-cdEFghI-"])
        let viaID = try await run(["apikeys", "delete", "-i", "1"])
        XCTAssertEqual(viaID.status, 0, viaID.stderr)
        let value3 = try await store.read { try $0.apiKeys() }.map(\.prefix)
        XCTAssertEqual(value3, ["Ab_-cdEFghI-"])

        // Malformed and unknown prefixes are refused, naming what was wrong.
        let short = try await run(["apikeys", "delete", "-p", "abc"])
        XCTAssertNotEqual(short.status, 0)
        XCTAssertTrue(short.stderr.contains("is not an API key prefix"), short.stderr)
        let truncated = try await run(["apikeys", "delete", "-p", "hskey-api-Ab_-cd"])
        XCTAssertNotEqual(truncated.status, 0)
        XCTAssertTrue(truncated.stderr.contains("after hskey-api- an API key prefix has 12 characters"), truncated.stderr)
        let unknown = try await run(["apikeys", "expire", "-p", "hskey-api-nosuchprefix-***"])
        XCTAssertEqual(unknown.status, 1)
        XCTAssertTrue(unknown.stderr.contains("no API key with prefix nosuchprefix"), unknown.stderr)
    }
}
