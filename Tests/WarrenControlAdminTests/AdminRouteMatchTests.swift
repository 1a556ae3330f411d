// The route that matched names the request in the audit log and the metrics (the router is the only matcher): the
// template, not the concrete path, with the path parameters decoded under the route's own names (headscale's
// /user/{id} and /user/{oldId}/rename/{newName} share a router position); a method a path does not serve is its
// own route (headscale's code 12, Warren's 405 with Allow) labelled with the path's template, unless another route
// serves that method on the path through a parameter (matched per method, as grpc-gateway does); an unknown path
// is "unmatched".

import Foundation
import Synchronization
import WarrenControlAdmin
import WarrenControlStore
import XCTest

final class AdminRouteMatchTests: XCTestCase {
    /// The metrics calls: "METHOD route status".
    final class Labels: Sendable {
        let list = Mutex<[String]>([])
    }

    struct Harness {
        let store = MemoryControlStore()
        let api: AdminAPI
        let seen = Labels()

        init() throws {
            api = AdminAPI(store: store, allocator: try AddressAllocator())
            let seen = self.seen
            api.observer.set { route, method, status, _ in seen.list.withLock { $0.append("\(method) \(route) \(status)") } }
        }

        @discardableResult
        func call(_ method: String, _ target: String, _ body: String = "", via transport: AdminTransport = .localSocket,
                  key: String? = nil) async -> AdminResponse {
            let (path, query) = AdminRequest.splitTarget(target)
            return await api.handle(AdminRequest(method: method, path: path, query: query, authorization: key.map { "Bearer " + $0 },
                                                 body: Array(body.utf8)), via: transport)
        }

        /// The newest audit entry: route, object, status.
        func lastAudit() async throws -> (String, String, Int) {
            let entries = try await store.read { try $0.auditEntries(since: nil, limit: 1) }
            let entry = try XCTUnwrap(entries.last)
            return (entry.route, entry.object, entry.status)
        }

        func lastMetric() -> String? { seen.list.withLock { $0.last } }
    }

    func testHeadscaleRoutesWithParametersAreNamedByTheirTemplate() async throws {
        let h = try Harness()
        let created = await h.call("POST", "/api/v1/user", #"{"name": "alice"}"#)
        XCTAssertEqual(created.status, 200, String(decoding: created.body, as: UTF8.self))
        let answer = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(created.body)) as? [String: [String: Any]])
        let id = try XCTUnwrap(answer["user"]?["id"] as? String)

        // No such node: headscale's NOT_FOUND, still recorded under the template with the node's id.
        let expire = await h.call("POST", "/api/v1/node/4242/expire")
        XCTAssertEqual(expire.status, 404, String(decoding: expire.body, as: UTF8.self))
        var (route, object, status) = try await h.lastAudit()
        XCTAssertEqual(route, "/api/v1/node/{nodeId}/expire")
        XCTAssertEqual(object, "nodeId=4242")
        XCTAssertEqual(status, 404)
        XCTAssertEqual(h.lastMetric(), "POST /api/v1/node/{nodeId}/expire 404")

        // The shared router position answers under each route's own name, decoded.
        let rename = await h.call("POST", "/api/v1/user/\(id)/rename/bob%2Dsmith")
        XCTAssertEqual(rename.status, 200, String(decoding: rename.body, as: UTF8.self))
        XCTAssertTrue(String(decoding: rename.body, as: UTF8.self).contains(#""name":"bob-smith""#))
        (route, object, status) = try await h.lastAudit()
        XCTAssertEqual(route, "/api/v1/user/{oldId}/rename/{newName}")
        XCTAssertEqual(object, "oldId=\(id) newName=bob-smith")
        XCTAssertEqual(h.lastMetric(), "POST /api/v1/user/{oldId}/rename/{newName} 200")

        let delete = await h.call("DELETE", "/api/v1/user/\(id)")
        XCTAssertEqual(delete.status, 200, String(decoding: delete.body, as: UTF8.self))
        XCTAssertEqual(String(decoding: delete.body, as: UTF8.self), "{}")
        (route, object, status) = try await h.lastAudit()
        XCTAssertEqual(route, "/api/v1/user/{id}")
        XCTAssertEqual(object, "id=\(id)")
        XCTAssertEqual(h.lastMetric(), "DELETE /api/v1/user/{id} 200")
        let users = try await h.store.read { try $0.users() }
        XCTAssertTrue(users.isEmpty)

        // A literal segment wins over a parameter: /node/register is RegisterNode, not GetNode or DeleteNode.
        await h.call("POST", "/api/v1/node/register?user=nobody&key=nothing")
        (route, _, _) = try await h.lastAudit()
        XCTAssertEqual(route, "/api/v1/node/register")
    }

    func testWarrenRoutesWithParametersAreNamedByTheirTemplate() async throws {
        let h = try Harness()
        await h.call("POST", "/api/v1/users", #"{"name": "alice"}"#)
        let delete = await h.call("DELETE", "/api/v1/users/ali%63e")
        XCTAssertEqual(delete.status, 200, String(decoding: delete.body, as: UTF8.self))
        let (route, object, _) = try await h.lastAudit()
        XCTAssertEqual(route, "/api/v1/users/{user}")
        XCTAssertEqual(object, "user=alice")
        XCTAssertEqual(h.lastMetric(), "DELETE /api/v1/users/{user} 200")
    }

    func testOtherMethodsAreRoutesOfTheirOwn() async throws {
        let h = try Harness()
        // headscale: code 12 (HTTP 501), labelled with the path's template.
        let patch = await h.call("PATCH", "/api/v1/node/7/expire")
        XCTAssertEqual(patch.status, 501)
        XCTAssertEqual(String(decoding: patch.body, as: UTF8.self), #"{"code":12,"message":"Method Not Allowed","details":[]}"#)
        XCTAssertEqual(h.lastMetric(), "PATCH /api/v1/node/{nodeId}/expire 501")
        let (route, object, _) = try await h.lastAudit()
        XCTAssertEqual(route, "/api/v1/node/{nodeId}/expire")
        XCTAssertEqual(object, "nodeId=7")
        // Over the network without a key, headscale's refusal comes first.
        let refused = await h.call("PUT", "/api/v1/node/7/expire", via: .network)
        XCTAssertEqual(refused.status, 401)
        XCTAssertEqual(String(decoding: refused.body, as: UTF8.self), "Unauthorized")

        // Warren: 405 with the methods the path serves.
        let put = await h.call("PUT", "/api/v1/users/alice")
        XCTAssertEqual(put.status, 405, String(decoding: put.body, as: UTF8.self))
        XCTAssertEqual(put.headers["Allow"], "GET, DELETE")
        XCTAssertEqual(h.lastMetric(), "PUT /api/v1/users/{user} 405")
        let head = await h.call("HEAD", "/api/v1/openapi.json")
        XCTAssertEqual(head.status, 405)
        XCTAssertEqual(head.headers["Allow"], "GET")
        let refusedWarren = await h.call("PUT", "/api/v1/users/alice", via: .network)
        XCTAssertEqual(refusedWarren.status, 401)

        // A literal path another route serves through a parameter for a method it has none for (grpc-gateway and
        // Warren's table match each method on its own): headscale's GET /node/register is GetNode("register").
        let getRegister = await h.call("GET", "/api/v1/node/register")
        XCTAssertEqual(getRegister.status, 400, String(decoding: getRegister.body, as: UTF8.self))
        XCTAssertTrue(String(decoding: getRegister.body, as: UTF8.self).contains(#""code":3"#))
        XCTAssertEqual(h.lastMetric(), "GET /api/v1/node/{nodeId} 400")
        let deleteExpire = await h.call("DELETE", "/api/v1/apikey/expire")
        XCTAssertNotEqual(deleteExpire.status, 501, String(decoding: deleteExpire.body, as: UTF8.self))
        let (siblingRoute, siblingObject, _) = try await h.lastAudit()
        XCTAssertEqual(siblingRoute, "/api/v1/apikey/{prefix}")
        XCTAssertEqual(siblingObject, "prefix=expire")
        // Warren's Allow names those methods too.
        let putRegister = await h.call("PUT", "/api/v1/nodes/register")
        XCTAssertEqual(putRegister.status, 405)
        XCTAssertEqual(putRegister.headers["Allow"], "POST, GET, DELETE")
        XCTAssertEqual(h.lastMetric(), "PUT /api/v1/nodes/register 405")
        let showRegister = await h.call("GET", "/api/v1/nodes/register")
        XCTAssertEqual(showRegister.status, 404, String(decoding: showRegister.body, as: UTF8.self))
        XCTAssertEqual(h.lastMetric(), "GET /api/v1/nodes/{node} 404")

        // Unknown paths: the router's not-found answer, unlabelled.
        let unknownHeadscale = await h.call("GET", "/api/v1/node/7/nothing")
        XCTAssertEqual(unknownHeadscale.status, 404)
        XCTAssertEqual(String(decoding: unknownHeadscale.body, as: UTF8.self), #"{"code":5,"message":"Not Found","details":[]}"#)
        XCTAssertEqual(h.lastMetric(), "GET unmatched 404")
        let unknownWarren = await h.call("POST", "/api/v1/users/alice/nothing")
        XCTAssertEqual(unknownWarren.status, 404)
        XCTAssertEqual(h.lastMetric(), "POST unmatched 404")
        let (unmatchedRoute, _, _) = try await h.lastAudit()
        XCTAssertEqual(unmatchedRoute, "unmatched")
    }
}
