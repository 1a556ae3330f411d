// The admin API's audit log, health route and request metrics, in process over both stores (memory and SQLite):
// every mutating request past authentication is recorded with its actor (the socket and its peer, or the API key by
// prefix and id), route template, object, status and outcome; reads and unauthenticated requests are not; no secret
// reaches the log; the log is bounded and read back with since/limit; GET /api/v1/health fails when the database
// does (a closed store, an overwritten or replaced file).

import Foundation
import Synchronization
import WarrenControlAdmin
import WarrenControlSQLite
import WarrenControlStore
import XCTest

final class AuditLogTests: XCTestCase {
    var directory = ""

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("wcaudit-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Both stores, each behind an API whose clock the test moves.
    func stores() throws -> [(String, any ControlStore)] {
        [("memory", MemoryControlStore()), ("sqlite", try SQLiteControlStore(path: directory + "/audit-\(UUID().uuidString.prefix(6)).sqlite"))]
    }

    final class Clock: Sendable {
        let now = Mutex(Date(timeIntervalSinceReferenceDate: 800_000_000))
        func advance(_ seconds: TimeInterval) { now.withLock { $0 = $0.addingTimeInterval(seconds) } }
        var read: Date { now.withLock { $0 } }
    }

    func api(_ store: any ControlStore, clock: Clock) throws -> AdminAPI {
        AdminAPI(store: store, allocator: try AddressAllocator(), clock: { clock.read })
    }

    @discardableResult
    func call(_ api: AdminAPI, _ method: String, _ target: String, _ body: String? = nil, via transport: AdminTransport = .localSocket,
              key: String? = nil, peer: String? = nil) async -> AdminResponse {
        let (path, query) = AdminRequest.splitTarget(target)
        var request = AdminRequest(method: method, path: path, query: query, authorization: key.map { "Bearer " + $0 },
                                   body: Array((body ?? "").utf8))
        request.peer = peer
        return await api.handle(request, via: transport)
    }

    func entries(_ api: AdminAPI, _ query: String = "") async throws -> [AuditEntryJSON] {
        let response = await call(api, "GET", "/api/v1/warren/audit" + query)
        XCTAssertEqual(response.status, 200, String(decoding: response.body, as: UTF8.self))
        return try JSONDecoder().decode([AuditEntryJSON].self, from: Data(response.body))
    }

    func testEachAdminActionIsRecordedWithItsActorAndNoSecret() async throws {
        for (name, store) in try stores() {
            let clock = Clock()
            let api = try api(store, clock: clock)
            // Over the socket (with the peer the listener found), on Warren's routes.
            do { let value = await call(api, "POST", "/api/v1/users", #"{"name": "alice"}"#, peer: "uid 0, pid 42, warren-control").status; XCTAssertEqual(value, 201) }
            await call(api, "GET", "/api/v1/users")  // a read: not recorded
            let created = await call(api, "POST", "/api/v1/apikeys", #"{"expiresIn": "1h"}"#)
            XCTAssertEqual(created.status, 201)
            let key = try XCTUnwrap((try JSONSerialization.jsonObject(with: Data(created.body)) as? [String: Any])?["key"] as? String)
            let parts = key.split(separator: "-")
            let (prefix, secret) = (String(parts[2]), String(parts[3]))
            clock.advance(60)
            // Over the network with that key, on both route sets; one fails (no such user).
            let bob = await call(api, "POST", "/api/v1/user", #"{"name": "bob"}"#, via: .network, key: key)
            XCTAssertEqual(bob.status, 200)
            let bobID = try XCTUnwrap(((try JSONSerialization.jsonObject(with: Data(bob.body)) as? [String: Any])?["user"] as? [String: Any])?["id"] as? String)
            do { let value = await call(api, "POST", "/api/v1/users/nobody/rename", #"{"newName": "x"}"#, via: .network, key: key).status; XCTAssertEqual(value, 404) }
            do { let value = await call(api, "POST", "/api/v1/user/\(bobID)/rename/robert", via: .network, key: key).status; XCTAssertEqual(value, 200) }
            // Not authenticated: refused and not recorded (a flood of those must not write to disk).
            do { let value = await call(api, "POST", "/api/v1/users", #"{"name": "mallory"}"#, via: .network, key: "wkey-api-bad").status; XCTAssertEqual(value, 401) }
            do { let value = await call(api, "DELETE", "/api/v1/user/1", via: .network).status; XCTAssertEqual(value, 401) }
            // The full key text in a body is cut to its prefix in the log.
            do { let value = await call(api, "POST", "/api/v1/apikeys/expire", #"{"key": "\#(key)"}"#).status; XCTAssertEqual(value, 200) }

            let log = try await entries(api)
            XCTAssertEqual(log.map(\.method), ["POST", "POST", "POST", "POST", "POST", "POST"], name)
            XCTAssertEqual(log.map(\.route), ["/api/v1/users", "/api/v1/apikeys", "/api/v1/user", "/api/v1/users/{user}/rename",
                                              "/api/v1/user/{oldId}/rename/{newName}", "/api/v1/apikeys/expire"], name)
            XCTAssertEqual(log.map(\.status), [201, 201, 200, 404, 200, 200], name)
            XCTAssertEqual(log[0].actor, "socket (uid 0, pid 42, warren-control)")
            XCTAssertEqual(log[1].actor, "socket")
            let keyRecord = try await store.read { try $0.apiKey(prefix: prefix) }
            let keyID = try XCTUnwrap(keyRecord).id.rawValue
            for entry in log[2...4] { XCTAssertEqual(entry.actor, "api-key \(prefix) (id \(keyID))", name) }
            XCTAssertEqual(log[0].object, "name=alice")
            XCTAssertEqual(log[2].object, "name=bob")
            XCTAssertEqual(log[3].object, "user=nobody newName=x")
            XCTAssertTrue(log[3].outcome.contains("nobody"), log[3].outcome)
            XCTAssertEqual(log[4].object, "oldId=\(bobID) newName=robert")
            XCTAssertEqual(log[5].object, "key=wkey-api-\(prefix)-***")
            XCTAssertEqual(log.filter { $0.status < 400 }.map(\.outcome), Array(repeating: "ok", count: 5))
            XCTAssertEqual(log[0].time, AdminTime.format(Date(timeIntervalSinceReferenceDate: 800_000_000)))
            XCTAssertEqual(log[2].time, AdminTime.format(Date(timeIntervalSinceReferenceDate: 800_000_060)))
            // No secret anywhere in what was stored.
            let stored = try await store.read { try $0.auditEntries(since: nil, limit: 100) }
            let text = String(decoding: try JSONEncoder().encode(stored), as: UTF8.self)
            XCTAssertFalse(text.contains(secret), "the audit log holds an API key's secret")
            XCTAssertEqual(stored.count, 6)

            // since and limit.
            clock.advance(100)
            do { let value = try await entries(api, "?since=30s").count; XCTAssertEqual(value, 0) }
            do { let value = try await entries(api, "?since=120s").map(\.route).count; XCTAssertEqual(value, 4) }
            do { let value = try await entries(api, "?limit=2").map(\.route); XCTAssertEqual(value, ["/api/v1/user/{oldId}/rename/{newName}", "/api/v1/apikeys/expire"]) }
            do { let value = try await entries(api, "?since=" + AdminTime.format(Date(timeIntervalSinceReferenceDate: 800_000_001))).count; XCTAssertEqual(value, 4) }
            do { let value = await call(api, "GET", "/api/v1/warren/audit?since=yesterday").status; XCTAssertEqual(value, 400) }
            do { let value = await call(api, "GET", "/api/v1/warren/audit?limit=0").status; XCTAssertEqual(value, 400) }
            // Reading it over the network needs a key, like every other route.
            do { let value = await call(api, "GET", "/api/v1/warren/audit", via: .network).status; XCTAssertEqual(value, 401) }
            let newKey = await call(api, "POST", "/api/v1/apikeys", #"{"expiresIn": "1h"}"#)
            let newKeyText = try XCTUnwrap((try JSONSerialization.jsonObject(with: Data(newKey.body)) as? [String: Any])?["key"] as? String)
            do { let value = await call(api, "GET", "/api/v1/warren/audit", via: .network, key: newKeyText).status; XCTAssertEqual(value, 200) }
        }
    }

    func testTheLogIsBounded() async throws {
        for (name, store) in try stores() {
            let time = Date(timeIntervalSinceReferenceDate: 800_000_000)
            for i in 0..<25 {
                _ = try await store.transaction { tx in
                    try tx.appendAudit(AuditEntry(time: time.addingTimeInterval(Double(i)), actor: "socket", method: "POST",
                                                  route: "/api/v1/users", object: "name=u\(i)", status: 201, outcome: "ok"), keeping: 10)
                }
            }
            let kept = try await store.read { try $0.auditEntries(since: nil, limit: 100) }
            XCTAssertEqual(kept.map(\.object), (15..<25).map { "name=u\($0)" }, name)
            XCTAssertEqual(kept.map(\.id), Array(16...25), name)
            let recent = try await store.read { try $0.auditEntries(since: time.addingTimeInterval(20), limit: 3) }
            XCTAssertEqual(recent.map(\.object), ["name=u22", "name=u23", "name=u24"], name)
        }
    }

    func testRouteTemplatesAreBoundedAndMetricsSeeThem() async throws {
        let store = MemoryControlStore()
        let api = try api(store, clock: Clock())
        let seen = Mutex<[String]>([])
        api.observer.set { route, method, status, _ in seen.withLock { $0.append("\(method) \(route) \(status)") } }
        await call(api, "POST", "/api/v1/users", #"{"name": "alice"}"#)
        await call(api, "GET", "/api/v1/users/alice")
        await call(api, "GET", "/api/v1/node/12345")
        await call(api, "GET", "/api/v1/no/such/thing/\(UUID().uuidString)")
        await call(api, "GET", "/elsewhere")
        await call(api, "PATCH", "/api/v1/users")
        await call(api, "GET", "/api/v1/openapi.json")
        await call(api, "GET", "/api/v1/warren/audit")
        XCTAssertEqual(seen.withLock { $0 }, [
            "POST /api/v1/users 201", "GET /api/v1/users/{user} 200", "GET /api/v1/node/{nodeId} 404", "GET unmatched 404",
            "GET unmatched 404", "PATCH /api/v1/users 405", "GET /api/v1/openapi.json 200", "GET /api/v1/warren/audit 200",
        ])
    }

    func testHealthChecksTheDatabase() async throws {
        let path = directory + "/health.sqlite"
        let store = try SQLiteControlStore(path: path)
        let api = try api(store, clock: Clock())
        func health() async -> (Int, [String: Any]) {
            let response = await call(api, "GET", "/api/v1/health")
            return (response.status, (try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any]) ?? [:])
        }
        var (status, body) = await health()
        XCTAssertEqual(status, 200)
        XCTAssertEqual(body["databaseConnectivity"] as? Bool, true)
        // The file overwritten in place: SQLite itself keeps answering from its cache and WAL; the check does not.
        let original = try Data(contentsOf: URL(fileURLWithPath: path)).prefix(16)
        let handle = try XCTUnwrap(FileHandle(forUpdatingAtPath: path))
        try handle.seek(toOffset: 0)
        try handle.write(contentsOf: Data(repeating: 0x41, count: 16))
        (status, body) = await health()
        XCTAssertEqual(status, 500)
        XCTAssertEqual(body["code"] as? Int, 13)
        XCTAssertTrue((body["message"] as? String ?? "").contains("no longer starts with SQLite's header"), "\(body)")
        try handle.seek(toOffset: 0)
        try handle.write(contentsOf: original)
        try handle.close()
        do { let value = await health().0; XCTAssertEqual(value, 200) }
        // The file moved away (the server would write on into a file that is no longer there).
        try FileManager.default.moveItem(atPath: path, toPath: path + ".moved")
        (status, body) = await health()
        XCTAssertEqual(status, 500)
        XCTAssertTrue((body["message"] as? String ?? "").contains("the database file is gone"), "\(body)")
        // Another file put in its place.
        try FileManager.default.copyItem(atPath: path + ".moved", toPath: path)
        (status, body) = await health()
        XCTAssertEqual(status, 500)
        XCTAssertTrue((body["message"] as? String ?? "").contains("no longer the file this server opened"), "\(body)")
        try FileManager.default.removeItem(atPath: path)
        try FileManager.default.moveItem(atPath: path + ".moved", toPath: path)
        do { let value = await health().0; XCTAssertEqual(value, 200) }
        // The store closed: the read itself fails.
        try store.close()
        (status, body) = await health()
        XCTAssertEqual(status, 500)
        XCTAssertTrue((body["message"] as? String ?? "").hasPrefix("database: "), "\(body)")
        // Over the network the route needs a key (headscale's plain 401).
        do { let value = await call(api, "GET", "/api/v1/health", via: .network).status; XCTAssertEqual(value, 401) }
    }
}

