// Pending interactive logins (list, approve, reject), headscale's auth/approve, auth/reject and debug/node, and the
// routes the CLI's headscale parity needs (deleting keys, all nodes' routes, expiry disabled, users by id), on both
// route sets. The end-to-end check with a waiting client against the real server is PendingLoginServeTests
// (WarrenControlServerTests).

import Foundation
import TailscaleKeys
import WarrenControlAdmin
import WarrenControlStore
import WarrenPacket
import XCTest

final class PendingLoginAdminTests: XCTestCase {
    // MARK: Warren's routes

    func testApproveAndRejectPendingLogins() async throws {
        var rng = SystemRandomNumberGenerator()
        let h = Harness(nodeKeyExpiry: 3600)
        let alice = try await h.json(UserJSON.self, "POST", "/api/v1/users", #"{"name":"alice"}"#, status: 201)
        _ = try await h.pending(id: "r1abc", seed: 1)
        _ = try await h.pending(id: "r2def", seed: 2, hostname: "phone")

        // Approving a new machine needs a user: without one the answer says how, and nothing changes.
        let needsUser = try await h.error("POST", "/api/v1/registrations/r1abc/approve", nil, status: 409)
        XCTAssertTrue(needsUser.contains("auth register --user USER --auth-id r1abc"), needsUser)
        XCTAssertEqual(h.log.all.count, 1)
        // With the user's id (names start with a letter, so digits alone are an id).
        let node = try await h.json(NodeJSON.self, "POST", "/api/v1/registrations/r1abc/approve", "{\"user\":\"\(alice.id)\"}")
        XCTAssertEqual(node.user, "alice")
        XCTAssertEqual(node.registerMethod, "interactive")
        XCTAssertEqual(h.log.all.suffix(2), [.registrationApproved(registrationID: "r1abc", node: NodeID(node.id)), .nodesChanged([NodeID(node.id)])])

        // Rejecting: the record goes, and the hook tells the server (which answers the waiting client).
        let rejected = try await h.json(PendingRegistrationJSON.self, "POST", "/api/v1/registrations/r2def/reject")
        XCTAssertEqual(rejected.id, "r2def")
        XCTAssertEqual(rejected.hostname, "phone")
        XCTAssertEqual(h.log.all.last, .registrationRejected(registrationID: "r2def"))
        let left = try await h.store.read { try $0.pendingRegistration(id: "r2def") }
        XCTAssertNil(left)
        let waiting = try await h.json([PendingRegistrationJSON].self, "GET", "/api/v1/registrations")
        XCTAssertEqual(waiting.map(\.id), ["r1abc"], "only the approved one is left, marked approved")
        XCTAssertNotNil(waiting.first?.approvedNodeID)
        // A rejected login cannot be approved or rejected again; an approved one cannot be rejected.
        _ = try await h.error("POST", "/api/v1/registrations/r2def/approve", #"{"user":"alice"}"#, status: 404)
        _ = try await h.error("POST", "/api/v1/registrations/r2def/reject", nil, status: 404)
        _ = try await h.error("POST", "/api/v1/registrations/r1abc/reject", nil, status: 409)
        _ = try await h.error("GET", "/api/v1/registrations/r1abc/reject", nil, status: 405)

        // The same machine logging in again (its key expired) is approved without a user: it stays alice's node.
        let again = PendingRegistration(
            id: "r3ghi", machineKey: MachinePublic(node.machineKey)!, nodeKey: NodePrivate.generate(using: &rng).publicKey,
            hostname: "laptop", created: fixedNow, expires: fixedNow.addingTimeInterval(600))
        try await h.store.transaction { try $0.save(again) }
        let relogged = try await h.json(NodeJSON.self, "POST", "/api/v1/registrations/r3ghi/approve")
        XCTAssertEqual(relogged.id, node.id)
        XCTAssertEqual(relogged.user, "alice")
        XCTAssertEqual(relogged.nodeKey, again.nodeKey.description)
    }

    // MARK: headscale's routes

    func testHeadscaleAuthApproveRejectAndDebugNode() async throws {
        var rng = SystemRandomNumberGenerator()
        let s = try await HeadscaleAPITests.Server()
        defer { let server = s.server; Task { await server.close() } }
        try s.ok("POST", "/api/v1/user", #"{"name":"alice"}"#, .object(["user": .user]))
        _ = try await s.harness.pending(id: "r1abc", seed: 1)

        // AuthApprove carries no user: a new machine is refused as a failed precondition (what to do is in the message).
        let message = try s.fails("POST", "/api/v1/auth/approve", #"{"authId":"r1abc"}"#, status: 400, code: 9)
        XCTAssertTrue(message.contains("auth register"), message)
        try s.fails("POST", "/api/v1/auth/approve", #"{"authId":"nothing"}"#, status: 404, code: 5)
        XCTAssertEqual(try s.fails("POST", "/api/v1/auth/reject", #"{"authId":"nothing"}"#, status: 404, code: 5),
                       "no pending auth session for auth_id nothing")
        try s.fails("POST", "/api/v1/auth/reject", "{}", status: 400, code: 3)
        // AuthReject: the empty message; the login is gone and the waiting client is told (the hook).
        try s.ok("POST", "/api/v1/auth/reject", #"{"auth_id":"r1abc"}"#, .empty)
        XCTAssertEqual(s.harness.log.all.last, .registrationRejected(registrationID: "r1abc"))
        try s.fails("POST", "/api/v1/auth/register", #"{"user":"alice","authId":"r1abc"}"#, status: 404, code: 5)

        // DebugCreateNode: a pending login with fresh keys; the answer echoes the node it will be.
        let key = "debugnode0123456789abcd"
        let echoed = try s.ok("POST", "/api/v1/debug/node", #"{"user":"alice","key":"\#(key)","name":"dbg","routes":["10.9.0.0/24"]}"#,
                              .object(["node": .node]))["node"]
        XCTAssertEqual(echoed["id"], .string("0"))
        XCTAssertEqual(echoed["name"], .string("dbg"))
        XCTAssertEqual(echoed["user"]["name"], .string("alice"))
        XCTAssertEqual(echoed["availableRoutes"].strings, ["10.9.0.0/24"])
        XCTAssertEqual(echoed["expiry"], .string("0001-01-01T00:00:00Z"))
        XCTAssertEqual(echoed["registerMethod"], .string("REGISTER_METHOD_UNSPECIFIED"))
        let pending = try await s.harness.store.read { try $0.pendingRegistration(id: key) }
        XCTAssertEqual(pending?.nodeKey.description, echoed["nodeKey"].string)
        try s.fails("POST", "/api/v1/debug/node", #"{"user":"alice","key":"\#(key)","name":"dbg"}"#, status: 409, code: 6)
        try s.fails("POST", "/api/v1/debug/node", #"{"user":"nobody","key":"\#(key)x","name":"dbg"}"#, status: 404, code: 5)
        try s.fails("POST", "/api/v1/debug/node", #"{"user":"alice","key":"short","name":"dbg"}"#, status: 400, code: 3)
        try s.fails("POST", "/api/v1/debug/node", #"{"user":"alice","key":"\#(key)y","name":"dbg","routes":["nope"]}"#, status: 400, code: 3)
        // auth/register makes it a real node: addresses, the announced route, and the map update hook.
        let node = try s.ok("POST", "/api/v1/auth/register", #"{"user":"alice","authId":"\#(key)"}"#, .object(["node": .node]))["node"]
        XCTAssertEqual(node["nodeKey"], echoed["nodeKey"])
        XCTAssertEqual(node["ipAddresses"].strings.count, 2)
        XCTAssertEqual(node["availableRoutes"].strings, ["10.9.0.0/24"])
        let id = try XCTUnwrap(node["id"].string.flatMap(Int64.init))
        XCTAssertEqual(s.harness.log.all.last, .nodesChanged([NodeID(id)]))
        let stored = try await s.harness.store.read { try $0.node(id: NodeID(id)) }
        XCTAssertEqual(stored?.advertisedRoutes, [IPPrefix("10.9.0.0/24")!])

        // AuthApprove for a machine that has a node: it logs in again as its owner.
        let again = PendingRegistration(
            id: "r4again", machineKey: try XCTUnwrap(stored?.machineKey), nodeKey: NodePrivate.generate(using: &rng).publicKey,
            hostname: "dbg", created: fixedNow, expires: fixedNow.addingTimeInterval(600))
        try await s.harness.store.transaction { try $0.save(again) }
        try s.ok("POST", "/api/v1/auth/approve", #"{"authId":"r4again"}"#, .empty)
        let relogged = try await s.harness.store.read { try $0.node(id: NodeID(id)) }
        XCTAssertEqual(relogged?.nodeKey, again.nodeKey)
        XCTAssertEqual(s.harness.log.all.suffix(2), [.registrationApproved(registrationID: "r4again", node: NodeID(id)), .nodesChanged([NodeID(id)])])
    }

    // MARK: what the CLI's headscale parity needs

    func testDeleteKeysRoutesExpiryAndUsersByID() async throws {
        let h = Harness(nodeKeyExpiry: 3600)
        let alice = try await h.json(UserJSON.self, "POST", "/api/v1/users", #"{"name":"alice"}"#, status: 201)
        // Users by id as well as by name.
        let value1 = try await h.json(UserJSON.self, "GET", "/api/v1/users/\(alice.id)").name
        XCTAssertEqual(value1, "alice")
        let value2 = try await h.json(UserJSON.self, "GET", "/api/v1/users/alice").id
        XCTAssertEqual(value2, alice.id)
        _ = try await h.error("GET", "/api/v1/users/999", status: 404)
        let renamed = try await h.json(UserJSON.self, "POST", "/api/v1/users/\(alice.id)/rename", #"{"newName":"ann"}"#)
        XCTAssertEqual(renamed.name, "ann")

        // Pre-auth keys: created for a user by id, deleted by id, by prefix and by the full key.
        var texts: [String] = []
        for _ in 0..<3 {
            texts.append(try await h.json(CreatedPreAuthKeyJSON.self, "POST", "/api/v1/preauthkeys", "{\"user\":\"\(alice.id)\"}", status: 201).key)
        }
        let keys = try await h.json([PreAuthKeyJSON].self, "GET", "/api/v1/preauthkeys?user=\(alice.id)")
        XCTAssertEqual(keys.count, 3)
        let value3 = try await h.json(PreAuthKeyJSON.self, "DELETE", "/api/v1/preauthkeys/\(keys[0].id)").prefix
        XCTAssertEqual(value3, keys[0].prefix)
        let value4 = try await h.json(PreAuthKeyJSON.self, "DELETE", "/api/v1/preauthkeys/\(keys[1].prefix)").id
        XCTAssertEqual(value4, keys[1].id)
        let value5 = try await h.json(PreAuthKeyJSON.self, "DELETE", "/api/v1/preauthkeys/\(texts[2])").id
        XCTAssertEqual(value5, keys[2].id)
        _ = try await h.error("DELETE", "/api/v1/preauthkeys/\(keys[0].id)", status: 404)
        _ = try await h.error("DELETE", "/api/v1/preauthkeys/not-a-key", status: 400)
        let none = try await h.json([PreAuthKeyJSON].self, "GET", "/api/v1/preauthkeys")
        XCTAssertEqual(none.count, 0)
        // The deleted key no longer registers anything.
        let text = texts[2]
        do {
            _ = try await h.store.read { try $0.validPreAuthKey(text, now: fixedNow) }
            XCTFail("a deleted key must not validate")
        } catch let error as StoreError {
            XCTAssertEqual(error.code, .invalid)
        }

        // API keys: expired and deleted by id or prefix.
        let api = try await h.json(CreatedAPIKeyJSON.self, "POST", "/api/v1/apikeys", "{}", status: 201)
        let api2 = try await h.json(CreatedAPIKeyJSON.self, "POST", "/api/v1/apikeys", "{}", status: 201)
        let value6 = try await h.json(APIKeyJSON.self, "POST", "/api/v1/apikeys/expire", "{\"key\":\"\(api.apiKey.id)\"}").expired
        XCTAssertTrue(value6)
        let value7 = try await h.json(APIKeyJSON.self, "DELETE", "/api/v1/apikeys/\(api.apiKey.prefix)").id
        XCTAssertEqual(value7, api.apiKey.id)
        let value8 = try await h.json(APIKeyJSON.self, "DELETE", "/api/v1/apikeys/\(api2.apiKey.id)").id
        XCTAssertEqual(value8, api2.apiKey.id)
        _ = try await h.error("DELETE", "/api/v1/apikeys/\(api2.apiKey.id)", status: 404)
        let value9 = try await h.json([APIKeyJSON].self, "GET", "/api/v1/apikeys").count
        XCTAssertEqual(value9, 0)

        // Routes of every node that has some.
        _ = try await h.pending(id: "r1", seed: 1, hostname: "router")
        _ = try await h.pending(id: "r2", seed: 2, hostname: "plain")
        let router = try await h.json(NodeJSON.self, "POST", "/api/v1/nodes/register", #"{"user":"ann","key":"r1"}"#)
        _ = try await h.json(NodeJSON.self, "POST", "/api/v1/nodes/register", "{\"user\":\"\(alice.id)\",\"key\":\"r2\"}")
        try await h.store.transaction { tx in
            var node = try tx.requireNode(id: NodeID(router.id))
            node.advertisedRoutes = [IPPrefix("10.1.0.0/24")!, IPPrefix("10.2.0.0/24")!]
            node.approvedRoutes = [IPPrefix("10.1.0.0/24")!]
            try tx.update(node)
        }
        let all = try await h.json([RoutesJSON].self, "GET", "/api/v1/routes")
        XCTAssertEqual(all, [RoutesJSON(nodeID: router.id, name: "router", advertisedRoutes: ["10.1.0.0/24", "10.2.0.0/24"],
                                        approvedRoutes: ["10.1.0.0/24"], servedRoutes: ["10.1.0.0/24"])])
        let value10 = try await h.json(RoutesJSON.self, "GET", "/api/v1/nodes/plain/routes").advertisedRoutes
        XCTAssertEqual(value10, [])

        // Expiry: at a time, disabled (never), and now.
        let at = try await h.json(NodeJSON.self, "POST", "/api/v1/nodes/router/expire", #"{"expiry":"2030-01-01T00:00:00Z"}"#)
        XCTAssertEqual(at.expiry, "2030-01-01T00:00:00.000Z")
        XCTAssertFalse(at.expired)
        let never = try await h.json(NodeJSON.self, "POST", "/api/v1/nodes/router/expire", #"{"disable":true}"#)
        XCTAssertNil(never.expiry)
        XCTAssertFalse(never.expired)
        let storedExpiry = try await h.store.read { try $0.node(id: NodeID(router.id))?.expiry }
        XCTAssertNil(storedExpiry)
        XCTAssertEqual(h.log.all.last, .nodesChanged([NodeID(router.id)]))
        _ = try await h.error("POST", "/api/v1/nodes/router/expire", #"{"disable":true,"expiry":"2030-01-01T00:00:00Z"}"#, status: 400)
        _ = try await h.error("POST", "/api/v1/nodes/router/expire", #"{"expiry":"soon"}"#, status: 400)
        let now = try await h.json(NodeJSON.self, "POST", "/api/v1/nodes/router/expire")
        XCTAssertTrue(now.expired)
    }

    func testOpenAPIDescribesTheNewRoutes() throws {
        let document = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(AdminOpenAPI.document.utf8)) as? [String: Any])
        let paths = try XCTUnwrap(document["paths"] as? [String: [String: Any]])
        for (path, method) in [("/api/v1/registrations/{registration}/approve", "post"), ("/api/v1/registrations/{registration}/reject", "post"),
                               ("/api/v1/preauthkeys/{key}", "delete"), ("/api/v1/apikeys/{key}", "delete"), ("/api/v1/routes", "get"),
                               ("/api/v1/users/{user}", "get"), ("/api/v1/auth/approve", "post"), ("/api/v1/auth/reject", "post"),
                               ("/api/v1/debug/node", "post"), ("/api/v1/preauthkey", "delete"), ("/api/v1/apikey/{prefix}", "delete")] {
            XCTAssertNotNil(paths[path]?[method], "\(method) \(path) is not described")
        }
        let expire = try XCTUnwrap(paths["/api/v1/nodes/{node}/expire"]?["post"] as? [String: Any])
        XCTAssertEqual((expire["requestBody"] as? [String: Any])?["required"] as? Bool, false)
    }
}
