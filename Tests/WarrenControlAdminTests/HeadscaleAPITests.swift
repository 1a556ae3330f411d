// headscale's REST API v1 on warren-control, driven as headscale's clients drive it: JSON over HTTP with a Bearer
// API key against an in-process admin listener. Each answer is checked against the shapes of headscale v0.29.2's
// published API description (headscale.swagger.json / proto/headscale/v1), written out below: grpc-gateway's
// protobuf JSON with unpopulated fields emitted, lowerCamelCase names, uint64 as strings, timestamps as RFC 3339.

import Foundation
import TailscaleKeys
import WarrenControlAdmin
import WarrenControlStore
import WarrenPacket
import WarrenTestProbes
import WarrenTestSupport
import XCTest

/// A JSON value as the test reads it (booleans, numbers and strings kept apart).
enum J: Decodable, Equatable, Sendable {
    case null, bool(Bool), number(Double), string(String), array([J]), object([String: J])

    init(from decoder: any Decoder) throws {
        if var list = try? decoder.unkeyedContainer() {
            var items: [J] = []
            while !list.isAtEnd { items.append(try list.decode(J.self)) }
            self = .array(items)
        } else if let object = try? decoder.container(keyedBy: Key.self) {
            var members: [String: J] = [:]
            for key in object.allKeys { members[key.stringValue] = try object.decode(J.self, forKey: key) }
            self = .object(members)
        } else {
            let single = try decoder.singleValueContainer()
            if single.decodeNil() { self = .null }
            else if let flag = try? single.decode(Bool.self) { self = .bool(flag) }
            else if let number = try? single.decode(Double.self) { self = .number(number) }
            else { self = .string(try single.decode(String.self)) }
        }
    }

    struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    subscript(_ name: String) -> J { if case .object(let members) = self { members[name] ?? .null } else { .null } }
    subscript(_ index: Int) -> J { if case .array(let items) = self, index < items.count { items[index] } else { .null } }
    var string: String? { if case .string(let text) = self { text } else { nil } }
    var items: [J] { if case .array(let items) = self { items } else { [] } }
    var strings: [String] { items.compactMap(\.string) }
    var keys: Set<String> { if case .object(let members) = self { Set(members.keys) } else { [] } }
}

/// The shapes of headscale v0.29.2's messages (from its swagger definitions: v1User, v1Node, v1PreAuthKey, v1ApiKey).
indirect enum Shape: Sendable {
    case string, uint64, bool, strings, timestamp
    case enumeration([String])
    case nullable(Shape)
    case array(Shape)
    case object([String: Shape])

    static let user: Shape = .object([
        "id": .uint64, "name": .string, "createdAt": .timestamp, "displayName": .string, "email": .string,
        "providerId": .string, "provider": .string, "profilePicUrl": .string,
    ])
    static let preAuthKey: Shape = .object([
        "user": .nullable(user), "id": .uint64, "key": .string, "reusable": .bool, "ephemeral": .bool, "used": .bool,
        "expiration": .nullable(.timestamp), "createdAt": .nullable(.timestamp), "aclTags": .strings,
    ])
    static let node: Shape = .object([
        "id": .uint64, "machineKey": .string, "nodeKey": .string, "discoKey": .string, "ipAddresses": .strings, "name": .string,
        "user": .nullable(user), "lastSeen": .nullable(.timestamp), "expiry": .nullable(.timestamp), "preAuthKey": .nullable(preAuthKey),
        "createdAt": .nullable(.timestamp),
        "registerMethod": .enumeration(["REGISTER_METHOD_UNSPECIFIED", "REGISTER_METHOD_AUTH_KEY", "REGISTER_METHOD_CLI", "REGISTER_METHOD_OIDC"]),
        "givenName": .string, "online": .bool, "approvedRoutes": .strings, "availableRoutes": .strings, "subnetRoutes": .strings,
        "tags": .strings,
    ])
    static let apiKey: Shape = .object([
        "id": .uint64, "prefix": .string, "expiration": .nullable(.timestamp), "createdAt": .nullable(.timestamp),
        "lastSeen": .nullable(.timestamp),
    ])
    static let status: Shape = .object(["code": .object([:]), "message": .string, "details": .array(.object([:]))])
    static let empty: Shape = .object([:])

    /// The problems of `value` against this shape (empty when it matches); every field must be present, no other.
    func problems(_ value: J, at path: String = "$") -> [String] {
        switch (self, value) {
        case (.nullable, .null): return []
        case (.nullable(let inner), _): return inner.problems(value, at: path)
        case (.string, .string): return []
        case (.uint64, .string(let text)): return UInt64(text) != nil ? [] : ["\(path): \(text) is not a uint64 in a string"]
        case (.bool, .bool): return []
        case (.strings, .array(let items)): return items.allSatisfy { $0.string != nil } ? [] : ["\(path): not all strings"]
        case (.timestamp, .string(let text)):
            let pattern = #"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3}|\.\d{6}|\.\d{9})?Z$"#
            return text.range(of: pattern, options: .regularExpression) != nil ? [] : ["\(path): \(text) is not an RFC 3339 UTC timestamp"]
        case (.enumeration(let names), .string(let text)): return names.contains(text) ? [] : ["\(path): \(text) is not an enum name"]
        case (.array(let inner), .array(let items)):
            return items.enumerated().flatMap { inner.problems($1, at: "\(path)[\($0)]") }
        case (.object(let fields), .object(let members)) where fields.isEmpty && path.hasSuffix(".code"):
            return []
        case (.object(let fields), .object(let members)):
            var problems: [String] = []
            for name in Set(fields.keys).subtracting(members.keys) { problems.append("\(path).\(name) missing") }
            for name in Set(members.keys).subtracting(fields.keys) { problems.append("\(path).\(name) not in headscale's message") }
            for (name, shape) in fields { if let member = members[name] { problems += shape.problems(member, at: "\(path).\(name)") } }
            return problems
        default:
            return ["\(path): \(value) does not have the expected type"]
        }
    }
}

final class HeadscaleAPITests: XCTestCase {
    struct Answer {
        var status: Int
        var contentType: String
        var text: String
        var json: J { (try? JSONDecoder().decode(J.self, from: Data(text.utf8))) ?? .null }
    }

    /// An in-process admin server on TCP, an API key, and the harness's store and change log.
    final class Server {
        let harness: Harness
        let server: AdminHTTPServer
        let port: Int
        var key: String

        init(policyCheck: @escaping @Sendable (String) async throws -> Void = { _ in }) async throws {
            harness = Harness(nodeKeyExpiry: 3600, policy: AdminPolicyHooks(check: policyCheck))
            server = try await AdminHTTPServer.start(api: harness.api, socketPath: nil, tcp: ("127.0.0.1", 0))
            port = server.tcpPort ?? 0
            let created = try await harness.json(CreatedAPIKeyJSON.self, "POST", "/api/v1/apikeys", "{}", status: 201)
            key = created.key
        }

        /// One request as curl sends it: `curl -X METHOD -H "Authorization: Bearer KEY" -d BODY URL`.
        func curl(_ method: String, _ target: String, _ body: String? = nil, key: String? = nil) throws -> Answer {
            let probe = try BoundsProbe.tcp(port: port)
            var head = "\(method) \(target) HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n"
            head += "Authorization: Bearer \(key ?? self.key)\r\n"
            if let body { head += "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n" }
            probe.send(head + "\r\n" + (body ?? ""))
            let answer = probe.waitClosed(within: 10)
            guard let split = answer.text.range(of: "\r\n\r\n") else { throw AdminClientError("no HTTP answer: \(answer.text)") }
            let lines = answer.text[..<split.lowerBound].split(separator: "\r\n")
            let status = Int(lines.first?.split(separator: " ")[1] ?? "") ?? 0
            let contentType = lines.first { $0.lowercased().hasPrefix("content-type:") }.map { String($0.dropFirst(13)).trimmingCharacters(in: .whitespaces) } ?? ""
            return Answer(status: status, contentType: contentType, text: String(answer.text[split.upperBound...]))
        }

        /// A successful call whose answer has `shape`; returns the answer's JSON.
        @discardableResult
        func ok(_ method: String, _ target: String, _ body: String? = nil, _ shape: Shape,
                file: StaticString = #filePath, line: UInt = #line) throws -> J {
            let answer = try curl(method, target, body)
            XCTAssertEqual(answer.status, 200, "\(method) \(target): \(answer.text)", file: file, line: line)
            XCTAssertEqual(answer.contentType, "application/json", file: file, line: line)
            XCTAssertEqual(shape.problems(answer.json), [], "\(method) \(target): \(answer.text)", file: file, line: line)
            return answer.json
        }

        /// A refusal written as grpc-gateway writes a gRPC status; returns its message.
        @discardableResult
        func fails(_ method: String, _ target: String, _ body: String? = nil, status: Int, code: Int,
                   file: StaticString = #filePath, line: UInt = #line) throws -> String {
            let answer = try curl(method, target, body)
            XCTAssertEqual(answer.status, status, "\(method) \(target): \(answer.text)", file: file, line: line)
            XCTAssertEqual(answer.json["code"], .number(Double(code)), "\(method) \(target): \(answer.text)", file: file, line: line)
            XCTAssertEqual(answer.json["details"], .array([]), file: file, line: line)
            XCTAssertEqual(answer.json.keys, ["code", "message", "details"], file: file, line: line)
            return answer.json["message"].string ?? ""
        }

        func close() async { await server.close() }
    }

    func testUsers() async throws {
        let s = try await Server()
        defer { let server = s.server; Task { await server.close() } }
        let alice = try s.ok("POST", "/api/v1/user", #"{"name":"alice","displayName":"Alice","pictureUrl":"https://example.com/a.png"}"#,
                         .object(["user": .user]))["user"]
        XCTAssertEqual(alice["name"], .string("alice"))
        XCTAssertEqual(alice["profilePicUrl"], .string("https://example.com/a.png"))
        XCTAssertEqual(alice["displayName"], .string("Alice"))
        XCTAssertEqual(alice["createdAt"], .string("2026-05-09T06:13:20Z"))
        let bob = try s.ok("POST", "/api/v1/user", #"{"name":"bob","unknown_field":1}"#, .object(["user": .user]))["user"]
        let aliceID = try XCTUnwrap(alice["id"].string), bobID = try XCTUnwrap(bob["id"].string)
        try s.fails("POST", "/api/v1/user", #"{"name":"alice"}"#, status: 409, code: 6)
        try s.fails("POST", "/api/v1/user", #"{"name":"x","email":"not an address"}"#, status: 400, code: 3)
        try s.fails("POST", "/api/v1/user", #"{"name":"x","pictureUrl":"file:///etc/passwd"}"#, status: 400, code: 3)
        try s.fails("POST", "/api/v1/user", "[1]", status: 400, code: 3)
        try s.fails("POST", "/api/v1/user", #"{"name":7}"#, status: 400, code: 3)

        let all = try s.ok("GET", "/api/v1/user", nil, .object(["users": .array(.user)]))["users"]
        XCTAssertEqual(all.items.map { $0["name"] }, [.string("alice"), .string("bob")])
        XCTAssertEqual(try s.ok("GET", "/api/v1/user?name=bob", nil, .object(["users": .array(.user)]))["users"].items.map { $0["id"] }, [.string(bobID)])
        XCTAssertEqual(try s.ok("GET", "/api/v1/user?id=\(aliceID)", nil, .object(["users": .array(.user)]))["users"].items.count, 1)
        XCTAssertEqual(try s.ok("GET", "/api/v1/user?email=a%40b.c", nil, .object(["users": .array(.user)]))["users"].items.count, 0)

        let carol = try s.ok("POST", "/api/v1/user/\(bobID)/rename/carol", nil, .object(["user": .user]))["user"]
        XCTAssertEqual(carol["name"], .string("carol"))
        XCTAssertEqual(carol["id"], .string(bobID))
        try s.fails("POST", "/api/v1/user/9999/rename/dave", status: 404, code: 5)
        try s.fails("POST", "/api/v1/user/abc/rename/dave", status: 400, code: 3)
        try s.ok("DELETE", "/api/v1/user/\(bobID)", nil, .empty)
        try s.fails("DELETE", "/api/v1/user/\(bobID)", status: 404, code: 5)
        XCTAssertEqual(s.harness.log.all, [.usersChanged, .usersChanged, .usersChanged, .usersChanged])
    }

    func testPreAuthKeys() async throws {
        let s = try await Server()
        defer { let server = s.server; Task { await server.close() } }
        let aliceID = try XCTUnwrap(try s.ok("POST", "/api/v1/user", #"{"name":"alice"}"#, .object(["user": .user]))["user"]["id"].string)
        let created = try s.ok("POST", "/api/v1/preauthkey",
                               #"{"user":"\#(aliceID)","reusable":true,"aclTags":["tag:a"],"expiration":"2030-01-01T00:00:00.250Z"}"#,
                               .object(["preAuthKey": .preAuthKey]))["preAuthKey"]
        let full = try XCTUnwrap(created["key"].string)
        XCTAssertTrue(full.hasPrefix("wkey-auth-") && !full.hasSuffix("***"), full)
        XCTAssertEqual(created["expiration"], .string("2030-01-01T00:00:00.250Z"))
        XCTAssertEqual(created["aclTags"].strings, ["tag:a"])
        XCTAssertEqual(created["reusable"], .bool(true))
        XCTAssertEqual(created["user"]["name"], .string("alice"))
        // The key works at registration, as Warren's own keys do.
        _ = try await s.harness.store.read { try $0.validPreAuthKey(full, now: fixedNow) }
        // user as a JSON number, acl_tags by its proto name, no expiration.
        let second = try s.ok("POST", "/api/v1/preauthkey", #"{"user":\#(aliceID),"ephemeral":true,"acl_tags":["tag:b"]}"#,
                              .object(["preAuthKey": .preAuthKey]))["preAuthKey"]
        XCTAssertEqual(second["expiration"], .null)
        XCTAssertEqual(second["aclTags"].strings, ["tag:b"])
        try s.fails("POST", "/api/v1/preauthkey", #"{"user":"9999"}"#, status: 404, code: 5)
        try s.fails("POST", "/api/v1/preauthkey", #"{"user":"\#(aliceID)","aclTags":["nottag"]}"#, status: 400, code: 3)
        try s.fails("POST", "/api/v1/preauthkey", #"{"user":"\#(aliceID)","expiration":"tomorrow"}"#, status: 400, code: 3)
        try s.fails("POST", "/api/v1/preauthkey", #"{"user":"\#(aliceID)","reusable":"yes"}"#, status: 400, code: 3)

        let listed = try s.ok("GET", "/api/v1/preauthkey", nil, .object(["preAuthKeys": .array(.preAuthKey)]))["preAuthKeys"].items
        XCTAssertEqual(listed.map { $0["id"] }, [created["id"], second["id"]])
        XCTAssertTrue(listed.allSatisfy { $0["key"].string?.hasSuffix("-***") == true }, "listed keys are masked")
        let id = try XCTUnwrap(created["id"].string)
        try s.ok("POST", "/api/v1/preauthkey/expire", #"{"id":"\#(id)"}"#, .empty)
        let expired = try s.ok("GET", "/api/v1/preauthkey", nil, .object(["preAuthKeys": .array(.preAuthKey)]))["preAuthKeys"][0]
        XCTAssertEqual(expired["expiration"], .string("2026-05-09T06:13:20Z"))
        try s.fails("POST", "/api/v1/preauthkey/expire", #"{"id":"9999"}"#, status: 404, code: 5)
        try s.ok("DELETE", "/api/v1/preauthkey?id=\(id)", nil, .empty)
        try s.fails("DELETE", "/api/v1/preauthkey?id=\(id)", status: 404, code: 5)
        XCTAssertEqual(try s.ok("GET", "/api/v1/preauthkey", nil, .object(["preAuthKeys": .array(.preAuthKey)]))["preAuthKeys"].items.count, 1)
    }

    func testNodes() async throws {
        let s = try await Server()
        defer { let server = s.server; Task { await server.close() } }
        try s.ok("POST", "/api/v1/user", #"{"name":"alice"}"#, .object(["user": .user]))
        let pending = try await s.harness.pending(id: "r1abc", seed: 1)
        let node = try s.ok("POST", "/api/v1/node/register?user=alice&key=r1abc", nil, .object(["node": .node]))["node"]
        let id = try XCTUnwrap(node["id"].string)
        XCTAssertEqual(node["registerMethod"], .string("REGISTER_METHOD_CLI"))
        XCTAssertEqual(node["nodeKey"], .string(pending.nodeKey.description))
        XCTAssertEqual(node["machineKey"], .string(pending.machineKey.description))
        XCTAssertEqual(node["ipAddresses"].strings, ["100.64.0.1", "fd7a:115c:a1e0::1"])
        XCTAssertEqual(node["name"], .string("laptop"))
        XCTAssertEqual(node["givenName"], .string("laptop"))
        XCTAssertEqual(node["user"]["name"], .string("alice"))
        XCTAssertEqual(node["expiry"], .string("2026-05-09T07:13:20Z"))
        XCTAssertEqual(node["preAuthKey"], .null)
        XCTAssertEqual(s.harness.log.all.suffix(2), [.registrationApproved(registrationID: "r1abc", node: NodeID(Int64(id)!)),
                                                     .nodesChanged([NodeID(Int64(id)!)])])
        try s.fails("POST", "/api/v1/node/register?user=alice&key=r1abc", status: 409, code: 6)
        try s.fails("POST", "/api/v1/node/register?user=alice&key=nothing", status: 404, code: 5)
        // auth/register: the same approval, with a JSON body.
        _ = try await s.harness.pending(id: "r2xyz", seed: 2, hostname: "phone")
        let phone = try s.ok("POST", "/api/v1/auth/register", #"{"user":"alice","authId":"r2xyz"}"#, .object(["node": .node]))["node"]
        let phoneID = try XCTUnwrap(phone["id"].string)

        s.harness.log.online.withLock { $0 = [NodeID(Int64(id)!)] }
        let listed = try s.ok("GET", "/api/v1/node", nil, .object(["nodes": .array(.node)]))["nodes"].items
        XCTAssertEqual(listed.map { $0["id"] }, [.string(id), .string(phoneID)])
        XCTAssertEqual(listed.map { $0["online"] }, [.bool(true), .bool(false)])
        XCTAssertEqual(try s.ok("GET", "/api/v1/node?user=alice", nil, .object(["nodes": .array(.node)]))["nodes"].items.count, 2)
        try s.fails("GET", "/api/v1/node?user=nobody", status: 404, code: 5)
        XCTAssertEqual(try s.ok("GET", "/api/v1/node/\(id)", nil, .object(["node": .node]))["node"]["id"], .string(id))
        XCTAssertEqual(try s.fails("GET", "/api/v1/node/9999", status: 404, code: 5), "node not found")
        try s.fails("GET", "/api/v1/node/laptop", status: 400, code: 3)

        let renamed = try s.ok("POST", "/api/v1/node/\(id)/rename/work", nil, .object(["node": .node]))["node"]
        XCTAssertEqual(renamed["givenName"], .string("work"))
        try s.fails("POST", "/api/v1/node/\(phoneID)/rename/work", status: 409, code: 6)

        let tagged = try s.ok("POST", "/api/v1/node/\(id)/tags", #"{"tags":["tag:server","tag:web"]}"#, .object(["node": .node]))["node"]
        XCTAssertEqual(tagged["tags"].strings, ["tag:server", "tag:web"])
        XCTAssertEqual(tagged["expiry"], .null, "tagged nodes do not expire")
        try s.fails("POST", "/api/v1/node/\(id)/tags", #"{"tags":[]}"#, status: 400, code: 3)
        try s.fails("POST", "/api/v1/node/\(id)/tags", #"{"tags":["server"]}"#, status: 400, code: 3)
        XCTAssertEqual(s.harness.log.all.last, .nodesChanged([NodeID(Int64(id)!)]))

        try await s.harness.store.transaction { tx in
            var stored = try tx.requireNode(id: NodeID(Int64(id)!))
            stored.advertisedRoutes = [IPPrefix("10.0.0.0/24")!, IPPrefix("0.0.0.0/0")!, IPPrefix("::/0")!]
            try tx.update(stored)
        }
        let routed = try s.ok("POST", "/api/v1/node/\(id)/approve_routes", #"{"routes":["10.0.0.0/24","0.0.0.0/0","192.168.0.0/16"]}"#,
                              .object(["node": .node]))["node"]
        XCTAssertEqual(Set(routed["approvedRoutes"].strings), ["10.0.0.0/24", "0.0.0.0/0", "::/0", "192.168.0.0/16"])
        XCTAssertEqual(routed["availableRoutes"].strings, ["10.0.0.0/24", "0.0.0.0/0", "::/0"])
        XCTAssertEqual(routed["subnetRoutes"].strings, ["10.0.0.0/24", "0.0.0.0/0", "::/0"])
        try s.fails("POST", "/api/v1/node/\(id)/approve_routes", #"{"routes":["10.0.0.1/24"]}"#, status: 400, code: 3)

        let expired = try s.ok("POST", "/api/v1/node/\(phoneID)/expire", nil, .object(["node": .node]))["node"]
        XCTAssertEqual(expired["expiry"], .string("2026-05-09T06:13:20Z"))
        let later = try s.ok("POST", "/api/v1/node/\(phoneID)/expire?expiry=2030-01-01T00:00:00Z", nil, .object(["node": .node]))["node"]
        XCTAssertEqual(later["expiry"], .string("2030-01-01T00:00:00Z"))
        let never = try s.ok("POST", "/api/v1/node/\(phoneID)/expire?disableExpiry=true", nil, .object(["node": .node]))["node"]
        XCTAssertEqual(never["expiry"], .null)
        try s.fails("POST", "/api/v1/node/\(phoneID)/expire?disableExpiry=true&expiry=2030-01-01T00:00:00Z", status: 400, code: 3)
        let stored = try await s.harness.store.read { try $0.node(id: NodeID(Int64(phoneID)!))?.expiry }
        XCTAssertNil(stored)

        // backfillips: refused unless confirmed; then gives the phone the IPv6 address it lacks.
        try s.fails("POST", "/api/v1/node/backfillips", status: 400, code: 9)
        XCTAssertEqual(try s.ok("POST", "/api/v1/node/backfillips?confirmed=true", nil, .object(["changes": .strings]))["changes"].strings, [])
        try await s.harness.store.transaction { tx in
            var phone = try tx.requireNode(id: NodeID(Int64(phoneID)!))
            phone.ipv6 = nil
            try tx.update(phone)
        }
        let changes = try s.ok("POST", "/api/v1/node/backfillips?confirmed=true", nil, .object(["changes": .strings]))["changes"].strings
        XCTAssertEqual(changes.count, 1)
        XCTAssertTrue(changes.first?.hasPrefix("assigned IPv6 ") == true, "\(changes)")
        let backfilled = try s.ok("GET", "/api/v1/node/\(phoneID)", nil, .object(["node": .node]))["node"]["ipAddresses"].strings
        XCTAssertEqual(backfilled.count, 2)

        try s.ok("DELETE", "/api/v1/node/\(phoneID)", nil, .empty)
        XCTAssertEqual(s.harness.log.all.last, .nodesRemoved([NodeID(Int64(phoneID)!)]))
        try s.fails("DELETE", "/api/v1/node/\(phoneID)", status: 404, code: 5)
        // The user cannot go while it owns a node.
        let aliceID = try XCTUnwrap(node["user"]["id"].string)
        try s.fails("DELETE", "/api/v1/user/\(aliceID)", status: 409, code: 6)
        // auth/approve, auth/reject and debug/node: PendingLoginAdminTests.
    }

    func testAPIKeysAndAuthentication() async throws {
        let s = try await Server()
        defer { let server = s.server; Task { await server.close() } }
        let created = try s.ok("POST", "/api/v1/apikey", #"{"expiration":"2030-01-01T00:00:00Z"}"#, .object(["apiKey": .string]))
        let second = try XCTUnwrap(created["apiKey"].string)
        XCTAssertTrue(second.hasPrefix("wkey-api-"), second)
        // The new key authenticates.
        let keys = try s.curl("GET", "/api/v1/apikey", key: second)
        XCTAssertEqual(keys.status, 200)
        let listed = keys.json["apiKeys"].items
        XCTAssertEqual(Shape.object(["apiKeys": .array(.apiKey)]).problems(keys.json), [])
        XCTAssertEqual(listed.count, 2)
        XCTAssertEqual(listed[1]["expiration"], .string("2030-01-01T00:00:00Z"))
        XCTAssertEqual(listed[0]["lastSeen"], .string("2026-05-09T06:13:20Z"), "a call records its key's use")
        let masked = try XCTUnwrap(listed[1]["prefix"].string)
        XCTAssertTrue(masked.hasPrefix("wkey-api-") && masked.hasSuffix("-***"), masked)

        try s.fails("POST", "/api/v1/apikey/expire", "{}", status: 400, code: 3)
        try s.fails("POST", "/api/v1/apikey/expire", #"{"prefix":"\#(masked)","id":"1"}"#, status: 400, code: 3)
        try s.ok("POST", "/api/v1/apikey/expire", #"{"prefix":"\#(masked)"}"#, .empty)
        let refused = try s.curl("GET", "/api/v1/user", key: second)
        XCTAssertEqual(refused.status, 401)
        XCTAssertEqual(refused.text, "Unauthorized")
        let noKey = try s.curl("GET", "/api/v1/health", key: "")
        XCTAssertEqual(noKey.status, 401)
        XCTAssertEqual(noKey.text, "Unauthorized")

        let secondID = try XCTUnwrap(listed[1]["id"].string)
        let bare = masked.dropFirst("wkey-api-".count).dropLast(4)
        try s.ok("DELETE", "/api/v1/apikey/\(bare)", nil, .empty)
        try s.fails("DELETE", "/api/v1/apikey/\(bare)", status: 404, code: 5)
        XCTAssertEqual(try s.ok("GET", "/api/v1/apikey", nil, .object(["apiKeys": .array(.apiKey)]))["apiKeys"].items.map { $0["id"] }.contains(.string(secondID)), false)
        // Expire by id.
        let third = try XCTUnwrap(try s.ok("POST", "/api/v1/apikey", "{}", .object(["apiKey": .string]))["apiKey"].string)
        let thirdID = try XCTUnwrap(try s.ok("GET", "/api/v1/apikey", nil, .object(["apiKeys": .array(.apiKey)]))["apiKeys"].items.last?["id"].string)
        try s.ok("POST", "/api/v1/apikey/expire", #"{"id":"\#(thirdID)"}"#, .empty)
        XCTAssertEqual(try s.curl("GET", "/api/v1/user", key: third).status, 401)

        XCTAssertEqual(try s.ok("GET", "/api/v1/health", nil, .object(["databaseConnectivity": .bool]))["databaseConnectivity"], .bool(true))
        // grpc-gateway's routing errors.
        XCTAssertEqual(try s.fails("PATCH", "/api/v1/user", status: 501, code: 12), "Method Not Allowed")
        XCTAssertEqual(try s.fails("GET", "/api/v1/node/1/nothing", status: 404, code: 5), "Not Found")
    }

    func testPolicyOnHeadscalesPathAndWarrensUnderItsOwn() async throws {
        let s = try await Server(policyCheck: { text in
            if text.contains("bad") { throw AdminPolicyRejection(["1:1: bad policy"]) }
        })
        defer { let server = s.server; Task { await server.close() } }
        XCTAssertEqual(try s.fails("GET", "/api/v1/policy", status: 404, code: 5), "loading ACL from database: acl policy not found")
        let text = #"{"acls":[{"action":"accept","src":["*"],"dst":["*:*"]}]}"#
        let body = String(decoding: try JSONEncoder().encode(["policy": text]), as: UTF8.self)
        let set = try s.ok("PUT", "/api/v1/policy", body, .object(["policy": .string, "updatedAt": .nullable(.timestamp)]))
        XCTAssertEqual(set["policy"], .string(text))
        XCTAssertEqual(set["updatedAt"], .string("2026-05-09T06:13:20Z"))
        let got = try s.ok("GET", "/api/v1/policy", nil, .object(["policy": .string, "updatedAt": .nullable(.timestamp)]))
        XCTAssertEqual(got, set)
        try s.fails("PUT", "/api/v1/policy", #"{"policy":"bad"}"#, status: 400, code: 3)
        try s.ok("POST", "/api/v1/policy/check", body, .empty)
        XCTAssertTrue(try s.fails("POST", "/api/v1/policy/check", #"{"policy":"bad"}"#, status: 400, code: 3).contains("1:1: bad policy"))
        // Warren's richer policy routes moved under /api/v1/warren/.
        let warren = try s.curl("GET", "/api/v1/warren/policy")
        XCTAssertEqual(warren.status, 200)
        let policy = try JSONDecoder().decode(PolicyJSON.self, from: Data(warren.text.utf8))
        XCTAssertEqual(policy.version, 1)
        XCTAssertEqual(policy.source, "database")
        let history = try s.curl("GET", "/api/v1/warren/policy/history")
        XCTAssertEqual(try JSONDecoder().decode([PolicyVersionJSON].self, from: Data(history.text.utf8)).map(\.version), [1])
        try s.fails("GET", "/api/v1/policy/history", status: 404, code: 5)
    }

    /// The shape check fails on what a wrong answer would hold: a numeric id, a missing or extra field, a local time.
    func testTheShapeCheckRefusesWrongAnswers() throws {
        func json(_ text: String) throws -> J { try JSONDecoder().decode(J.self, from: Data(text.utf8)) }
        let good = #"{"id":"1","name":"a","createdAt":"2026-05-09T06:13:20Z","displayName":"","email":"","providerId":"","provider":"","profilePicUrl":""}"#
        XCTAssertEqual(Shape.user.problems(try json(good)), [])
        XCTAssertFalse(Shape.user.problems(try json(good.replacingOccurrences(of: #""id":"1""#, with: #""id":1"#))).isEmpty)
        XCTAssertFalse(Shape.user.problems(try json(good.replacingOccurrences(of: #","email":"""#, with: ""))).isEmpty)
        XCTAssertFalse(Shape.user.problems(try json(good.replacingOccurrences(of: #""name":"a""#, with: #""name":"a","created":"x""#))).isEmpty)
        XCTAssertFalse(Shape.user.problems(try json(good.replacingOccurrences(of: "06:13:20Z", with: "06:13:20+02:00"))).isEmpty)
        XCTAssertFalse(Shape.node.problems(try json(#"{"id":"1"}"#)).isEmpty)
    }

    /// Every headscale route of the served OpenAPI document answers with a headscale shape, never with Warren's errors.
    func testOpenAPIDocumentDescribesHeadscalesRoutes() async throws {
        let document = try JSONDecoder().decode(J.self, from: Data(AdminOpenAPI.document.utf8))
        let expected: [(String, String)] = [
            ("get", "/api/v1/user"), ("post", "/api/v1/user"), ("post", "/api/v1/user/{oldId}/rename/{newName}"), ("delete", "/api/v1/user/{id}"),
            ("get", "/api/v1/preauthkey"), ("post", "/api/v1/preauthkey"), ("post", "/api/v1/preauthkey/expire"), ("delete", "/api/v1/preauthkey"),
            ("get", "/api/v1/node"), ("post", "/api/v1/node/register"), ("post", "/api/v1/node/backfillips"), ("get", "/api/v1/node/{nodeId}"),
            ("delete", "/api/v1/node/{nodeId}"), ("post", "/api/v1/node/{nodeId}/tags"), ("post", "/api/v1/node/{nodeId}/approve_routes"),
            ("post", "/api/v1/node/{nodeId}/expire"), ("post", "/api/v1/node/{nodeId}/rename/{newName}"), ("post", "/api/v1/auth/register"),
            ("get", "/api/v1/apikey"), ("post", "/api/v1/apikey"), ("post", "/api/v1/apikey/expire"), ("delete", "/api/v1/apikey/{prefix}"),
            ("get", "/api/v1/policy"), ("put", "/api/v1/policy"), ("post", "/api/v1/policy/check"), ("get", "/api/v1/health"),
            ("get", "/api/v1/warren/policy"), ("put", "/api/v1/warren/policy"), ("get", "/api/v1/warren/policy/history"),
        ]
        for (method, path) in expected {
            XCTAssertNotEqual(document["paths"][path][method], .null, "\(method) \(path) missing from the OpenAPI document")
        }
    }
}
