import Foundation
import Synchronization
import TailscaleKeys
import WarrenControlAdmin
import WarrenControlStore
import WarrenPacket
import WarrenTestSupport
import XCTest

let fixedNow = Date(timeIntervalSinceReferenceDate: 800_000_000)

/// Records the hooks' calls.
final class ChangeLog: Sendable {
    private let changes = Mutex<[AdminChange]>([])
    let online = Mutex<Set<NodeID>>([])
    var all: [AdminChange] { changes.withLock { $0 } }
    func record(_ change: AdminChange) { changes.withLock { $0.append(change) } }
    var hooks: AdminHooks {
        AdminHooks(changed: { self.record($0) }, onlineNodes: { self.online.withLock { $0 } })
    }
}

struct Harness {
    let store = MemoryControlStore()
    let log = ChangeLog()
    let api: AdminAPI

    init(nodeKeyExpiry: TimeInterval? = nil, policy: AdminPolicyHooks = AdminPolicyHooks()) {
        var hooks = log.hooks
        hooks.policy = policy
        api = AdminAPI(store: store, allocator: try! AddressAllocator(), nodeKeyExpiry: nodeKeyExpiry, hooks: hooks, clock: { fixedNow })
    }

    func call(_ method: String, _ target: String, _ body: String? = nil, via transport: AdminTransport = .localSocket,
              authorization: String? = nil) async -> AdminResponse {
        let (path, query) = AdminRequest.splitTarget(target)
        return await api.handle(AdminRequest(method: method, path: path, query: query, authorization: authorization,
                                             body: Array((body ?? "").utf8)), via: transport)
    }

    func json<T: Decodable>(_ type: T.Type, _ method: String, _ target: String, _ body: String? = nil, status: Int = 200,
                            file: StaticString = #filePath, line: UInt = #line) async throws -> T {
        let response = await call(method, target, body)
        XCTAssertEqual(response.status, status, String(decoding: response.body, as: UTF8.self), file: file, line: line)
        return try JSONDecoder().decode(T.self, from: Data(response.body))
    }

    func error(_ method: String, _ target: String, _ body: String? = nil, status: Int,
               file: StaticString = #filePath, line: UInt = #line) async throws -> String {
        let response = await call(method, target, body)
        XCTAssertEqual(response.status, status, String(decoding: response.body, as: UTF8.self), file: file, line: line)
        return try JSONDecoder().decode(ErrorJSON.self, from: Data(response.body)).error
    }

    /// A pending interactive login, as the register handler would save it.
    func pending(id: String, seed: UInt64, hostname: String = "laptop", expires: Date = fixedNow.addingTimeInterval(600)) async throws -> PendingRegistration {
        var generator = SeededGenerator(seed: seed)
        let registration = PendingRegistration(
            id: id, machineKey: MachinePublic(rawRepresentation: generator.bytes(count: 32))!,
            nodeKey: NodePublic(rawRepresentation: generator.bytes(count: 32))!, hostname: hostname, created: fixedNow, expires: expires)
        try await store.transaction { try $0.save(registration) }
        return registration
    }
}

final class AdminAPITests: XCTestCase {
    func testUsers() async throws {
        let h = Harness()
        let alice = try await h.json(UserJSON.self, "POST", "/api/v1/users", #"{"name":"alice","displayName":"Alice"}"#, status: 201)
        XCTAssertEqual(alice.name, "alice")
        XCTAssertEqual(alice.displayName, "Alice")
        XCTAssertEqual(alice.created, "2026-05-09T06:13:20.000Z")
        _ = try await h.json(UserJSON.self, "POST", "/api/v1/users", #"{"name":"bob"}"#, status: 201)
        let duplicate = try await h.error("POST", "/api/v1/users", #"{"name":"alice"}"#, status: 409)
        XCTAssertTrue(duplicate.contains("already exists"), duplicate)
        _ = try await h.error("POST", "/api/v1/users", #"{"nom":"x"}"#, status: 400)
        _ = try await h.error("POST", "/api/v1/users", "not json", status: 400)

        let renamed = try await h.json(UserJSON.self, "POST", "/api/v1/users/alice/rename", #"{"newName":"carol"}"#)
        XCTAssertEqual(renamed.id, alice.id)
        _ = try await h.error("POST", "/api/v1/users/alice/rename", #"{"newName":"dave"}"#, status: 404)
        let names = try await h.json([UserJSON].self, "GET", "/api/v1/users").map(\.name)
        XCTAssertEqual(names, ["carol", "bob"])
        _ = try await h.json(UserJSON.self, "DELETE", "/api/v1/users/bob")
        _ = try await h.error("DELETE", "/api/v1/users/bob", status: 404)
        XCTAssertEqual(h.log.all, [.usersChanged, .usersChanged, .usersChanged, .usersChanged])
    }

    func testPreAuthKeys() async throws {
        let h = Harness()
        _ = try await h.json(UserJSON.self, "POST", "/api/v1/users", #"{"name":"alice"}"#, status: 201)
        _ = try await h.json(UserJSON.self, "POST", "/api/v1/users", #"{"name":"bob"}"#, status: 201)
        let created = try await h.json(CreatedPreAuthKeyJSON.self, "POST", "/api/v1/preauthkeys",
                                       #"{"user":"alice","reusable":true,"ephemeral":true,"tags":["tag:a","tag:b"],"expiresIn":"24h"}"#, status: 201)
        XCTAssertTrue(created.key.hasPrefix("wkey-auth-\(created.preAuthKey.prefix)-"))
        XCTAssertEqual(created.preAuthKey.expiration, "2026-05-10T06:13:20.000Z")
        XCTAssertEqual(created.preAuthKey.tags, ["tag:a", "tag:b"])
        XCTAssertTrue(created.preAuthKey.reusable && created.preAuthKey.ephemeral && !created.preAuthKey.preApproved)
        // The key works with the store (as the register handler will use it).
        let stored = try await h.store.read { try $0.validPreAuthKey(created.key, now: fixedNow) }
        XCTAssertEqual(stored.id.rawValue, created.preAuthKey.id)

        let other = try await h.json(CreatedPreAuthKeyJSON.self, "POST", "/api/v1/preauthkeys", #"{"user":"bob"}"#, status: 201)
        XCTAssertNil(other.preAuthKey.expiration)
        let aliceKeys = try await h.json([PreAuthKeyJSON].self, "GET", "/api/v1/preauthkeys?user=alice")
        XCTAssertEqual(aliceKeys.map(\.prefix), [created.preAuthKey.prefix])
        let allKeys = try await h.json([PreAuthKeyJSON].self, "GET", "/api/v1/preauthkeys")
        XCTAssertEqual(allKeys.count, 2)
        _ = try await h.error("GET", "/api/v1/preauthkeys?user=nobody", status: 404)
        _ = try await h.error("POST", "/api/v1/preauthkeys", #"{"user":"alice","tags":["nottag"]}"#, status: 400)
        _ = try await h.error("POST", "/api/v1/preauthkeys", #"{"user":"alice","expiresIn":"soon"}"#, status: 400)
        _ = try await h.error("POST", "/api/v1/preauthkeys", #"{"user":"nobody"}"#, status: 404)

        // Expire by the full key, and by prefix.
        let expired = try await h.json(PreAuthKeyJSON.self, "POST", "/api/v1/preauthkeys/expire", "{\"key\":\"\(created.key)\"}")
        XCTAssertTrue(expired.expired)
        do {
            _ = try await h.store.read { try $0.validPreAuthKey(created.key, now: fixedNow) }
            XCTFail("an expired key was accepted")
        } catch let error as StoreError {
            XCTAssertEqual(error.message, "pre-auth key expired")
        }
        let byPrefix = try await h.json(PreAuthKeyJSON.self, "POST", "/api/v1/preauthkeys/expire", "{\"key\":\"\(other.preAuthKey.prefix)\"}")
        XCTAssertTrue(byPrefix.expired)
        _ = try await h.error("POST", "/api/v1/preauthkeys/expire", #"{"key":"zzzzzzzzzzzz"}"#, status: 404)
        _ = try await h.error("POST", "/api/v1/preauthkeys/expire", #"{"key":"no such thing"}"#, status: 400)
    }

    func testInteractiveRegistrationAndNodeCommands() async throws {
        let h = Harness(nodeKeyExpiry: 3600)
        _ = try await h.json(UserJSON.self, "POST", "/api/v1/users", #"{"name":"alice"}"#, status: 201)
        let pending = try await h.pending(id: "r1abc", seed: 1)
        let waiting = try await h.json([PendingRegistrationJSON].self, "GET", "/api/v1/registrations")
        XCTAssertEqual(waiting.map(\.id), ["r1abc"])

        let node = try await h.json(NodeJSON.self, "POST", "/api/v1/nodes/register", #"{"user":"alice","key":"r1abc"}"#)
        XCTAssertEqual(node.user, "alice")
        XCTAssertEqual(node.givenName, "laptop")
        XCTAssertEqual(node.ipAddresses, ["100.64.0.1", "fd7a:115c:a1e0::1"])
        XCTAssertEqual(node.registerMethod, "interactive")
        XCTAssertEqual(node.expiry, "2026-05-09T07:13:20.000Z")
        XCTAssertEqual(node.nodeKey, pending.nodeKey.description)
        let approved = try await h.store.read { try $0.pendingRegistration(id: "r1abc")?.approvedNodeID }
        XCTAssertEqual(approved?.rawValue, node.id)
        XCTAssertEqual(h.log.all.suffix(2), [.registrationApproved(registrationID: "r1abc", node: NodeID(node.id)), .nodesChanged([NodeID(node.id)])])
        _ = try await h.error("POST", "/api/v1/nodes/register", #"{"user":"alice","key":"r1abc"}"#, status: 409)
        _ = try await h.error("POST", "/api/v1/nodes/register", #"{"user":"alice","key":"unknown"}"#, status: 404)
        _ = try await h.pending(id: "old", seed: 2, expires: fixedNow)
        _ = try await h.error("POST", "/api/v1/nodes/register", #"{"user":"alice","key":"old"}"#, status: 400)
        // A second login, approved by its node key instead of the id.
        let second = try await h.pending(id: "r2", seed: 3, hostname: "laptop")
        let node2 = try await h.json(NodeJSON.self, "POST", "/api/v1/nodes/register", "{\"user\":\"alice\",\"key\":\"\(second.nodeKey)\"}")
        XCTAssertEqual(node2.givenName, "laptop-1")
        // A third, approved with the whole login URL pasted.
        _ = try await h.pending(id: "r3xyz", seed: 4, hostname: "phone")
        let node3 = try await h.json(NodeJSON.self, "POST", "/api/v1/nodes/register",
                                     #"{"user":"alice","key":"http://127.0.0.1:8080/register/r3xyz"}"#)
        XCTAssertEqual(node3.givenName, "phone")
        _ = try await h.json(NodeJSON.self, "DELETE", "/api/v1/nodes/phone")

        h.log.online.withLock { $0 = [NodeID(node.id)] }
        let listed = try await h.json([NodeJSON].self, "GET", "/api/v1/nodes")
        XCTAssertEqual(listed.map(\.online), [true, false])
        XCTAssertEqual(listed.count, 2)
        let byUser = try await h.json([NodeJSON].self, "GET", "/api/v1/nodes?user=alice")
        XCTAssertEqual(byUser.count, 2)

        let renamed = try await h.json(NodeJSON.self, "POST", "/api/v1/nodes/\(node.id)/rename", #"{"newName":"Work"}"#)
        XCTAssertEqual(renamed.givenName, "work")
        _ = try await h.error("POST", "/api/v1/nodes/work/rename", #"{"newName":"laptop-1"}"#, status: 409)
        _ = try await h.error("POST", "/api/v1/nodes/work/rename", #"{"newName":"bad name"}"#, status: 400)

        let tagged = try await h.json(NodeJSON.self, "POST", "/api/v1/nodes/work/tags", #"{"tags":["tag:server","tag:server","tag:web"]}"#)
        XCTAssertEqual(tagged.tags, ["tag:server", "tag:web"])
        XCTAssertNil(tagged.expiry, "tagged nodes do not expire")
        _ = try await h.error("POST", "/api/v1/nodes/work/tags", #"{"tags":["server"]}"#, status: 400)

        try await h.store.transaction { tx in
            var stored = try tx.requireNode(id: NodeID(node.id))
            stored.advertisedRoutes = [IPPrefix("10.0.0.0/24")!, IPPrefix("0.0.0.0/0")!]
            try tx.update(stored)
        }
        let routes = try await h.json(RoutesJSON.self, "POST", "/api/v1/nodes/work/approve-routes", #"{"routes":["10.0.0.0/24","192.168.0.0/16"]}"#)
        XCTAssertEqual(routes.approvedRoutes, ["10.0.0.0/24", "192.168.0.0/16"])
        XCTAssertEqual(routes.servedRoutes, ["10.0.0.0/24"])
        let value1 = try await h.json(RoutesJSON.self, "GET", "/api/v1/nodes/\(node.id)/routes")
        XCTAssertEqual(value1.advertisedRoutes, ["10.0.0.0/24", "0.0.0.0/0"])
        _ = try await h.error("POST", "/api/v1/nodes/work/approve-routes", #"{"routes":["10.0.0.1/24"]}"#, status: 400)

        let expired = try await h.json(NodeJSON.self, "POST", "/api/v1/nodes/work/expire")
        XCTAssertTrue(expired.expired)
        XCTAssertEqual(expired.expiry, "2026-05-09T06:13:20.000Z")

        _ = try await h.json(NodeJSON.self, "DELETE", "/api/v1/nodes/\(node2.id)")
        XCTAssertEqual(h.log.all.last, .nodesRemoved([NodeID(node2.id)]))
        _ = try await h.error("DELETE", "/api/v1/nodes/\(node2.id)", status: 404)
        _ = try await h.error("GET", "/api/v1/nodes/nosuchnode", status: 404)
        // The user cannot go while it owns a node.
        _ = try await h.error("DELETE", "/api/v1/users/alice", status: 409)
    }

    func testApproveADeviceWaitingForApproval() async throws {
        let h = Harness()
        _ = try await h.json(UserJSON.self, "POST", "/api/v1/users", #"{"name":"alice"}"#, status: 201)
        let stored = try await h.store.transaction { tx in
            var generator = SeededGenerator(seed: 9)
            var node = try tx.registerNode(
                NodeRegistration(machineKey: MachinePublic(rawRepresentation: generator.bytes(count: 32))!,
                                 nodeKey: NodePublic(rawRepresentation: generator.bytes(count: 32))!,
                                 userID: try tx.requireUser(named: "alice").id, hostname: "kiosk", method: .authKey),
                allocator: try AddressAllocator(), now: fixedNow)
            node.authorized = false
            try tx.update(node)
            return node
        }
        let waiting = try await h.json(NodeJSON.self, "GET", "/api/v1/nodes/kiosk")
        XCTAssertFalse(waiting.authorized)
        let approved = try await h.json(NodeJSON.self, "POST", "/api/v1/nodes/kiosk/approve")
        XCTAssertTrue(approved.authorized)
        XCTAssertEqual(h.log.all.last, .nodesChanged([stored.id]))
        let reread = try await h.store.read { try $0.node(id: stored.id)?.authorized }
        XCTAssertEqual(reread, true)
        _ = try await h.error("POST", "/api/v1/nodes/nosuchnode/approve", status: 404)
    }

    func testNetworkCallsNeedAValidAPIKey() async throws {
        let h = Harness()
        let created = try await h.json(CreatedAPIKeyJSON.self, "POST", "/api/v1/apikeys", #"{"expiresIn":"1h"}"#, status: 201)
        XCTAssertTrue(created.key.hasPrefix("wkey-api-"))
        let noKey = await h.call("GET", "/api/v1/users", via: .network)
        XCTAssertEqual(noKey.status, 401)
        let wrongKey = await h.call("GET", "/api/v1/users", via: .network, authorization: "Bearer wkey-api-aaaaaaaaaaaa-" + String(repeating: "0", count: 64))
        XCTAssertEqual(wrongKey.status, 401)
        let good = await h.call("GET", "/api/v1/users", via: .network, authorization: "Bearer \(created.key)")
        XCTAssertEqual(good.status, 200)
        // The OpenAPI document needs no key.
        let document = await h.call("GET", "/api/v1/openapi.json", via: .network)
        XCTAssertEqual(document.status, 200)

        let keys = try await h.json([APIKeyJSON].self, "GET", "/api/v1/apikeys")
        XCTAssertEqual(keys.map(\.prefix), [created.apiKey.prefix])
        XCTAssertNil(created.apiKey.lastUsed)
        XCTAssertEqual(keys.first?.lastUsed, AdminTime.format(fixedNow), "a network call records the key's use")
        let expired = try await h.json(APIKeyJSON.self, "POST", "/api/v1/apikeys/expire", "{\"key\":\"\(created.apiKey.prefix)\"}")
        XCTAssertTrue(expired.expired)
        let afterExpiry = await h.call("GET", "/api/v1/users", via: .network, authorization: "Bearer \(created.key)")
        XCTAssertEqual(afterExpiry.status, 401)
    }

    /// Every route of the OpenAPI document reaches a handler (no "no such API route"), and the document is JSON
    /// naming each route with its method.
    func testOpenAPIDocumentMatchesTheRouter() async throws {
        let h = Harness()
        let document = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(AdminOpenAPI.document.utf8)) as? [String: Any])
        XCTAssertEqual(document["openapi"] as? String, "3.1.0")
        let paths = try XCTUnwrap(document["paths"] as? [String: [String: Any]])
        for route in AdminOpenAPI.routes {
            XCTAssertNotNil(paths[route.path]?[route.method.lowercased()], "\(route.method) \(route.path) missing from the document")
            let concrete = route.path.replacingOccurrences(of: "{user}", with: "nobody").replacingOccurrences(of: "{node}", with: "999")
            let response = await h.call(route.method, concrete, "{}")
            let text = String(decoding: response.body, as: UTF8.self)
            XCTAssertFalse(text.contains("no such API route"), "\(route.method) \(route.path): \(text)")
        }
        let unknown = await h.call("GET", "/api/v1/nothing")
        XCTAssertEqual(unknown.status, 404)
        XCTAssertTrue(String(decoding: unknown.body, as: UTF8.self).contains("no such API route"))
    }

    /// Arbitrary bodies and paths end in an HTTP answer with a JSON error, never in a crash.
    func testFuzzRequests() async throws {
        let h = Harness()
        _ = try await h.json(UserJSON.self, "POST", "/api/v1/users", #"{"name":"alice"}"#, status: 201)
        let seeds = [
            #"{"user":"alice","reusable":true,"tags":["tag:a"],"expiresIn":"24h"}"#, #"{"name":"x","displayName":"y"}"#,
            #"{"routes":["10.0.0.0/8","::/0"]}"#, #"{"user":"alice","key":"abc"}"#, #"{"tags":["tag:z"]}"#,
        ].map { Array($0.utf8) }
        let targets = ["/api/v1/users", "/api/v1/preauthkeys", "/api/v1/nodes/register", "/api/v1/nodes/1/approve-routes",
                       "/api/v1/nodes/1/tags", "/api/v1/apikeys"]
        var cases: [[UInt8]] = []
        MutationFuzzer(seeds: seeds, iterations: 1500, maximumLength: 512, seed: 0xAD).run { cases.append($0) }
        for (i, body) in cases.enumerated() {
            let response = await h.api.handle(AdminRequest(method: "POST", path: targets[i % targets.count], body: body), via: .localSocket)
            XCTAssertTrue((200..<600).contains(response.status))
            if response.status >= 400 {
                XCTAssertNoThrow(try JSONDecoder().decode(ErrorJSON.self, from: Data(response.body)))
            }
            // The same bytes as a path.
            let path = "/api/v1/" + String(decoding: body.prefix(64), as: UTF8.self)
            _ = await h.api.handle(AdminRequest(method: "GET", path: path), via: .localSocket)
        }
    }

    func testDurationsAndTargets() {
        XCTAssertEqual(DurationText.parse("24h"), 86_400)
        XCTAssertEqual(DurationText.parse("1h30m"), 5_400)
        XCTAssertEqual(DurationText.parse("7d"), 604_800)
        XCTAssertEqual(DurationText.parse("45s"), 45)
        XCTAssertNil(DurationText.parse("24"))
        XCTAssertNil(DurationText.parse("h"))
        XCTAssertNil(DurationText.parse("1y"))
        XCTAssertNil(DurationText.parse("99999999999h"))
        let (path, query) = AdminRequest.splitTarget("/api/v1/nodes?user=a%40b.c&x")
        XCTAssertEqual(path, "/api/v1/nodes")
        XCTAssertEqual(query, ["user": "a@b.c", "x": ""])
    }
}
