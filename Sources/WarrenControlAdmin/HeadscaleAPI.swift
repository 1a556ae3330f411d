// headscale's REST API v1 (as of headscale v0.29.2), served beside Warren's own /api/v1 routes so that headscale's
// clients (headscale-ui, Headplane, the Terraform provider, scripts) work against warren-control.
//
// headscale serves its gRPC service through grpc-gateway; this file speaks what that gateway speaks, written from
// headscale's public API definitions (the google.api.http annotations of proto/headscale/v1/*.proto):
// - paths and methods as annotated; the path parameters, the query parameters of body-less calls, and JSON bodies
//   ("body: *") read as protobuf JSON reads them (lowerCamelCase or the proto field name, 64-bit integers as numbers
//   or strings, timestamps as RFC 3339 text, unknown fields ignored);
// - answers as protobuf JSON with unpopulated fields emitted: lowerCamelCase names, 64-bit integers as strings,
//   timestamps as RFC 3339 text in UTC (null when unset), enums by name, responses wrapped in their message
//   (`{"users": [...]}`, `{"user": {...}}`, `{"node": {...}}`, `{}` for empty responses);
// - errors as grpc-gateway writes a gRPC status: `{"code": N, "message": "...", "details": []}` with the HTTP status
//   grpc-gateway maps that code to; an unknown path is code 5 (404), a known path with another method code 12 (501);
// - a missing or invalid API key answers 401 with the text "Unauthorized", as headscale's middleware does.
//
// Every call goes through the same operations as Warren's own routes (AdminAPI's *Record functions), so the
// store's rules and the change hooks (map updates to connected nodes) are the same either way.

import Foundation
import TailscaleKeys
import WarrenControlStore
import WarrenPacket

/// A protobuf JSON value: objects keep their members in field order, output is compact (as grpc-gateway writes it).
enum ProtoJSON: Equatable {
    case string(String)
    case bool(Bool)
    case int(Int)
    case null
    case array([ProtoJSON])
    case object([(String, ProtoJSON)])

    static func == (a: ProtoJSON, b: ProtoJSON) -> Bool { a.text == b.text }

    static func uint64(_ value: Int64) -> ProtoJSON { .string(String(value)) }
    static func strings(_ values: [String]) -> ProtoJSON { .array(values.map(ProtoJSON.string)) }
    static func timestamp(_ date: Date?) -> ProtoJSON { date.map { .string(HeadscaleTime.format($0)) } ?? .null }

    var text: String {
        var out = ""
        write(to: &out)
        return out
    }

    private func write(to out: inout String) {
        switch self {
        case .string(let value): Self.quote(value, into: &out)
        case .bool(let value): out += value ? "true" : "false"
        case .int(let value): out += String(value)
        case .null: out += "null"
        case .array(let items):
            out += "["
            for (index, item) in items.enumerated() {
                if index > 0 { out += "," }
                item.write(to: &out)
            }
            out += "]"
        case .object(let members):
            out += "{"
            for (index, (name, value)) in members.enumerated() {
                if index > 0 { out += "," }
                Self.quote(name, into: &out)
                out += ":"
                value.write(to: &out)
            }
            out += "}"
        }
    }

    private static func quote(_ text: String, into out: inout String) {
        out += "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "<", ">", "&", "\u{2028}", "\u{2029}":
                // Go's encoder escapes these (HTML safety); so does protojson's output through it.
                out += String(format: "\\u%04x", scalar.value)
            default:
                if scalar.value < 0x20 {
                    out += String(format: "\\u%04x", scalar.value)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        out += "\""
    }
}

/// google.protobuf.Timestamp as protobuf JSON writes and reads it.
enum HeadscaleTime {
    /// RFC 3339 in UTC with "Z"; the fraction has 0, 3, 6 or 9 digits, as protojson writes it.
    static func format(_ date: Date) -> String {
        let whole = date.timeIntervalSince1970.rounded(.down)
        var micros = Int(((date.timeIntervalSince1970 - whole) * 1_000_000).rounded())
        var seconds = whole
        if micros >= 1_000_000 { micros -= 1_000_000; seconds += 1 }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        formatter.timeZone = TimeZone(identifier: "UTC")
        var text = formatter.string(from: Date(timeIntervalSince1970: seconds))
        guard micros > 0 else { return text }
        text.removeLast() // "Z"
        text += micros % 1000 == 0 ? String(format: ".%03d", micros / 1000) : String(format: ".%06d", micros)
        return text + "Z"
    }

    /// RFC 3339 with "Z" or an offset, and up to 9 fraction digits.
    static func parse(_ text: String) -> Date? {
        var main = text
        var fraction = 0.0
        if let dot = text.firstIndex(of: "."), let t = text.firstIndex(of: "T"), dot > t {
            var end = text.index(after: dot)
            while end < text.endIndex, text[end].isASCII, text[end].isNumber { end = text.index(after: end) }
            let digits = text[text.index(after: dot)..<end]
            guard !digits.isEmpty, digits.count <= 9, let value = Double("0." + digits) else { return nil }
            fraction = value
            main = String(text[..<dot] + text[end...])
        }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.date(from: main).map { $0.addingTimeInterval(fraction) }
    }
}

/// A gRPC status, written as grpc-gateway writes it.
struct HeadscaleStatus: Error {
    var code: Int
    var message: String

    static func invalidArgument(_ message: String) -> HeadscaleStatus { HeadscaleStatus(code: 3, message: message) }
    static func notFound(_ message: String) -> HeadscaleStatus { HeadscaleStatus(code: 5, message: message) }
    static func failedPrecondition(_ message: String) -> HeadscaleStatus { HeadscaleStatus(code: 9, message: message) }

    /// grpc-gateway's HTTPStatusFromCode.
    var httpStatus: Int {
        switch code {
        case 0: 200
        case 1: 499
        case 3, 9, 11: 400
        case 4: 504
        case 5: 404
        case 6, 10: 409
        case 7: 403
        case 8: 429
        case 12: 501
        case 14: 503
        case 16: 401
        default: 500
        }
    }

    var response: AdminResponse {
        let body = ProtoJSON.object([("code", .int(code)), ("message", .string(message)), ("details", .array([]))]).text
        return AdminResponse(status: httpStatus, body: Array(body.utf8))
    }
}

/// Any JSON value of a request body.
enum JSONInput: Decodable, Equatable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONInput])
    case object([String: JSONInput])

    init(from decoder: any Decoder) throws {
        if var list = try? decoder.unkeyedContainer() {
            var items: [JSONInput] = []
            while !list.isAtEnd { items.append(try list.decode(JSONInput.self)) }
            self = .array(items)
            return
        }
        if let object = try? decoder.container(keyedBy: AnyKey.self) {
            var members: [String: JSONInput] = [:]
            for key in object.allKeys { members[key.stringValue] = try object.decode(JSONInput.self, forKey: key) }
            self = .object(members)
            return
        }
        let single = try decoder.singleValueContainer()
        if single.decodeNil() { self = .null }
        else if let flag = try? single.decode(Bool.self) { self = .bool(flag) }
        else if let number = try? single.decode(Double.self) { self = .number(number) }
        else { self = .string(try single.decode(String.self)) }
    }

    struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }
}

/// A request message: the JSON body (for "body: *" calls) or the query parameters, plus the path parameters.
struct HeadscaleMessage {
    private var fields: [String: JSONInput]

    /// Parses a JSON body as protobuf JSON: an empty body is the empty message; anything but an object is refused.
    init(body: [UInt8]) throws {
        if body.allSatisfy({ $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }) { fields = [:]; return }
        guard body.count <= 1 << 20 else { throw HeadscaleStatus.invalidArgument("request body too large") }
        if let duplicate = JSONDuplicateKeys.first(in: body) {
            throw HeadscaleStatus.invalidArgument("proto: duplicate field \(duplicate.debugDescription)")
        }
        guard case .object(let object)? = try? JSONDecoder().decode(JSONInput.self, from: Data(body)) else {
            throw HeadscaleStatus.invalidArgument("proto: syntax error: the request body is not a JSON object")
        }
        fields = object
    }

    init(query: [String: String]) { fields = query.mapValues(JSONInput.string) }

    mutating func set(_ name: String, _ value: String) { fields[name] = .string(value) }

    /// The value under the JSON name or the proto field name (protojson accepts both).
    private func raw(_ jsonName: String) -> JSONInput? {
        if let value = fields[jsonName], value != .null { return value }
        var snake = ""
        for character in jsonName {
            if character.isUppercase { snake += "_" + character.lowercased() } else { snake.append(character) }
        }
        if let value = fields[snake], value != .null { return value }
        return nil
    }

    func string(_ name: String) throws -> String {
        guard let value = raw(name) else { return "" }
        guard case .string(let text) = value else { throw HeadscaleStatus.invalidArgument("proto: invalid value for string field \(name)") }
        return text
    }

    func bool(_ name: String) throws -> Bool {
        guard let value = raw(name) else { return false }
        if case .string(let text) = value {
            // A query parameter, read as Go's strconv.ParseBool reads it.
            switch text {
            case "1", "t", "T", "true", "TRUE", "True": return true
            case "0", "f", "F", "false", "FALSE", "False": return false
            default: throw HeadscaleStatus.invalidArgument("type mismatch, parameter: \(name), error: invalid syntax")
            }
        }
        guard case .bool(let flag) = value else { throw HeadscaleStatus.invalidArgument("proto: invalid value for bool field \(name)") }
        return flag
    }

    /// A uint64 field: a JSON number or a decimal string; 0 when absent. Warren's ids are at most Int64.max.
    func uint64(_ name: String) throws -> Int64 {
        guard let value = raw(name) else { return 0 }
        if case .string(let text) = value {
            guard let number = UInt64(text) else { throw HeadscaleStatus.invalidArgument("type mismatch, parameter: \(name), error: invalid syntax") }
            return Int64(clamping: number)
        }
        guard case .number(let number) = value, let exact = UInt64(exactly: number) else {
            throw HeadscaleStatus.invalidArgument("proto: invalid value for uint64 field \(name)")
        }
        return Int64(clamping: exact)
    }

    func strings(_ name: String) throws -> [String] {
        guard let value = raw(name) else { return [] }
        guard case .array(let list) = value else {
            throw HeadscaleStatus.invalidArgument("proto: invalid value for repeated string field \(name)")
        }
        let texts = list.compactMap { item -> String? in if case .string(let text) = item { text } else { nil } }
        guard texts.count == list.count else {
            throw HeadscaleStatus.invalidArgument("proto: invalid value for repeated string field \(name)")
        }
        return texts
    }

    func timestamp(_ name: String) throws -> Date? {
        guard let value = raw(name) else { return nil }
        guard case .string(let text) = value, let date = HeadscaleTime.parse(text) else {
            throw HeadscaleStatus.invalidArgument("proto: invalid google.protobuf.Timestamp value for field \(name)")
        }
        return date
    }
}

/// headscale's REST API over `AdminAPI`'s operations.
struct HeadscaleAPI {
    let admin: AdminAPI

    /// One headscale route: method, path template (as in headscale's OpenAPI description) and its gRPC method.
    struct Route: Sendable {
        var method: String
        var path: String
        var rpc: String
        var summary: String
        /// Whether the request message is the JSON body ("body: *"); otherwise query parameters.
        var hasBody: Bool
    }

    static let routes: [Route] = [
        Route(method: "GET", path: "/api/v1/user", rpc: "ListUsers", summary: "List users (filters: id, name, email)", hasBody: false),
        Route(method: "POST", path: "/api/v1/user", rpc: "CreateUser", summary: "Create a user", hasBody: true),
        Route(method: "POST", path: "/api/v1/user/{oldId}/rename/{newName}", rpc: "RenameUser", summary: "Rename a user", hasBody: false),
        Route(method: "DELETE", path: "/api/v1/user/{id}", rpc: "DeleteUser", summary: "Delete a user", hasBody: false),
        Route(method: "GET", path: "/api/v1/preauthkey", rpc: "ListPreAuthKeys", summary: "List pre-auth keys", hasBody: false),
        Route(method: "POST", path: "/api/v1/preauthkey", rpc: "CreatePreAuthKey", summary: "Create a pre-auth key", hasBody: true),
        Route(method: "POST", path: "/api/v1/preauthkey/expire", rpc: "ExpirePreAuthKey", summary: "Expire a pre-auth key", hasBody: true),
        Route(method: "DELETE", path: "/api/v1/preauthkey", rpc: "DeletePreAuthKey", summary: "Delete a pre-auth key (query: id)", hasBody: false),
        Route(method: "POST", path: "/api/v1/debug/node", rpc: "DebugCreateNode", summary: "Create a pending login with fresh keys, for testing (approve it with auth/register)", hasBody: true),
        Route(method: "GET", path: "/api/v1/node", rpc: "ListNodes", summary: "List nodes (query: user)", hasBody: false),
        Route(method: "POST", path: "/api/v1/node/register", rpc: "RegisterNode", summary: "Approve an interactive login (query: user, key)", hasBody: false),
        Route(method: "POST", path: "/api/v1/node/backfillips", rpc: "BackfillNodeIPs", summary: "Give nodes the addresses they miss (query: confirmed)", hasBody: false),
        Route(method: "GET", path: "/api/v1/node/{nodeId}", rpc: "GetNode", summary: "Show a node", hasBody: false),
        Route(method: "DELETE", path: "/api/v1/node/{nodeId}", rpc: "DeleteNode", summary: "Delete a node", hasBody: false),
        Route(method: "POST", path: "/api/v1/node/{nodeId}/tags", rpc: "SetTags", summary: "Replace a node's tags", hasBody: true),
        Route(method: "POST", path: "/api/v1/node/{nodeId}/approve_routes", rpc: "SetApprovedRoutes", summary: "Set a node's approved routes", hasBody: true),
        Route(method: "POST", path: "/api/v1/node/{nodeId}/expire", rpc: "ExpireNode", summary: "Expire a node (query: expiry, disableExpiry)", hasBody: false),
        Route(method: "POST", path: "/api/v1/node/{nodeId}/rename/{newName}", rpc: "RenameNode", summary: "Rename a node", hasBody: false),
        Route(method: "POST", path: "/api/v1/auth/register", rpc: "AuthRegister", summary: "Approve an interactive login for a user", hasBody: true),
        Route(method: "POST", path: "/api/v1/auth/approve", rpc: "AuthApprove",
              summary: "Approve a pending login of a machine that already has a node (it logs in again as its owner)", hasBody: true),
        Route(method: "POST", path: "/api/v1/auth/reject", rpc: "AuthReject",
              summary: "Reject a pending login (the waiting client is refused)", hasBody: true),
        Route(method: "GET", path: "/api/v1/apikey", rpc: "ListApiKeys", summary: "List API keys", hasBody: false),
        Route(method: "POST", path: "/api/v1/apikey", rpc: "CreateApiKey", summary: "Create an API key", hasBody: true),
        Route(method: "POST", path: "/api/v1/apikey/expire", rpc: "ExpireApiKey", summary: "Expire an API key (by prefix or id)", hasBody: true),
        Route(method: "DELETE", path: "/api/v1/apikey/{prefix}", rpc: "DeleteApiKey", summary: "Delete an API key (by prefix, or query id)", hasBody: false),
        Route(method: "GET", path: "/api/v1/policy", rpc: "GetPolicy", summary: "The policy in force", hasBody: false),
        Route(method: "PUT", path: "/api/v1/policy", rpc: "SetPolicy", summary: "Check, store and apply a policy", hasBody: true),
        Route(method: "POST", path: "/api/v1/policy/check", rpc: "CheckPolicy", summary: "Check a policy against the tailnet without storing it", hasBody: true),
        Route(method: "GET", path: "/api/v1/health", rpc: "Health", summary: "Server and database health", hasBody: false),
    ]

    /// The first path segments (after /api/v1/) that belong to headscale's API.
    static let resources: Set<String> = ["user", "node", "preauthkey", "apikey", "policy", "health", "auth", "debug"]

    static func serves(_ route: [String]) -> Bool { route.first.map(resources.contains) ?? false }

    /// headscale's authentication middleware refuses with this (plain text, not a gRPC status).
    static let unauthorized = AdminResponse(status: 401, contentType: "text/plain; charset=utf-8", body: Array("Unauthorized".utf8))

    static func errorResponse(for error: any Error) -> AdminResponse {
        switch error {
        case let status as HeadscaleStatus:
            return status.response
        case let error as AdminError:
            let code: Int = switch error.status {
            case 400, 413: 3
            case 401: 16
            case 403: 7
            case 404: 5
            case 409: error.code == "policy file mode" ? 9 : 6
            default: 13
            }
            return HeadscaleStatus(code: code, message: error.message).response
        case let error as StoreError:
            let code: Int = switch error.code {
            case .notFound: 5
            case .conflict: 6
            case .exhausted: 8
            case .invalid: 3
            default: 13
            }
            return HeadscaleStatus(code: code, message: error.message).response
        default:
            return HeadscaleStatus(code: 13, message: "internal server error").response
        }
    }

    /// One call of `route` (the router matched it; AdminAPI.router): its message is the JSON body or the query, plus
    /// the path parameters under the route's names (percent-decoded), answered in headscale's shapes.
    func serve(_ route: Route, _ context: AdminRequestContext) async -> AdminResponse {
        do {
            let request = context.request
            var message = route.hasBody ? try HeadscaleMessage(body: request.body) : HeadscaleMessage(query: request.query)
            for (name, _) in context.parameters { message.set(String(name), try context.parameter(String(name))) }
            let answer = try await perform(route.rpc, message)
            return AdminResponse(status: 200, body: Array(answer.text.utf8))
        } catch {
            return Self.errorResponse(for: error)
        }
    }

    // MARK: the calls

    private func perform(_ rpc: String, _ m: HeadscaleMessage) async throws -> ProtoJSON {
        switch rpc {
        case "ListUsers": return try await listUsers(m)
        case "CreateUser": return try await createUser(m)
        case "RenameUser":
            let id = try pathID(m, "oldId")
            let user = try await admin.renameUserRecord({ try Self.user(id: id, in: $0) }, to: try m.string("newName"))
            return .object([("user", Self.user(user))])
        case "DeleteUser":
            let id = try pathID(m, "id")
            _ = try await admin.deleteUserRecord { try Self.user(id: id, in: $0) }
            return .object([])

        case "ListPreAuthKeys": return try await listPreAuthKeys()
        case "CreatePreAuthKey": return try await createPreAuthKey(m)
        case "ExpirePreAuthKey":
            let id = try m.uint64("id")
            _ = try await admin.expirePreAuthKeyRecord { try Self.preAuthKey(id: id, in: $0) }
            return .object([])
        case "DeletePreAuthKey":
            let id = try m.uint64("id")
            try await admin.store.transaction { tx in try tx.deletePreAuthKey(id: try Self.preAuthKey(id: id, in: tx).id) }
            return .object([])

        case "ListNodes": return try await listNodes(m)
        case "GetNode":
            let id = try pathID(m, "nodeId")
            return try await wrapped(try await admin.store.read { try Self.node(id: id, in: $0) })
        case "DeleteNode":
            let id = try pathID(m, "nodeId")
            _ = try await admin.deleteNodeRecord { try Self.node(id: id, in: $0) }
            return .object([])
        case "SetTags": return try await setTags(m)
        case "SetApprovedRoutes": return try await setApprovedRoutes(m)
        case "ExpireNode": return try await expireNode(m)
        case "RenameNode":
            let id = try pathID(m, "nodeId")
            return try await wrapped(try await admin.renameNodeRecord({ try Self.node(id: id, in: $0) }, to: try m.string("newName")))
        case "RegisterNode":
            return try await register(user: try m.string("user"), key: try m.string("key"))
        case "AuthRegister":
            return try await register(user: try m.string("user"), key: try m.string("authId"))
        case "BackfillNodeIPs": return try await backfillNodeIPs(m)
        case "AuthApprove": return try await authApprove(try m.string("authId"))
        case "AuthReject": return try await authReject(try m.string("authId"))
        case "DebugCreateNode": return try await debugCreateNode(m)

        case "ListApiKeys": return try await listAPIKeys()
        case "CreateApiKey":
            let (_, text) = try await admin.createAPIKeyRecord(expiration: try m.timestamp("expiration"))
            return .object([("apiKey", .string(text))])
        case "ExpireApiKey":
            let select = try apiKeySelector(m)
            _ = try await admin.expireAPIKeyRecord(select)
            return .object([])
        case "DeleteApiKey":
            let select = try apiKeySelector(m)
            try await admin.store.transaction { tx in try tx.deleteAPIKey(id: try select(tx).id) }
            return .object([])

        case "GetPolicy": return try await getPolicy()
        case "SetPolicy":
            let (version, _) = try await admin.setPolicyRecord(try m.string("policy"))
            return .object([("policy", .string(version.text)), ("updatedAt", .timestamp(version.created))])
        case "CheckPolicy":
            try await admin.checkPolicyText(try m.string("policy"))
            return .object([])
        case "Health":
            // The store's own health check; its failure is INTERNAL (HTTP 500) with the store's message.
            do {
                try await admin.store.checkHealth()
            } catch let error as StoreError {
                throw HeadscaleStatus(code: 13, message: "database: \(error.message)")
            } catch {
                throw HeadscaleStatus(code: 13, message: "database: \(error)")
            }
            return .object([("databaseConnectivity", .bool(true))])

        default:
            // What gRPC answers for a method a server does not implement.
            throw HeadscaleStatus(code: 12, message: "method \(rpc) not implemented")
        }
    }

    // MARK: records as headscale's messages

    static func user(_ user: User) -> ProtoJSON {
        .object([
            ("id", .uint64(user.id.rawValue)), ("name", .string(user.name)), ("createdAt", .timestamp(user.created)),
            ("displayName", .string(user.displayName)), ("email", .string(user.email)),
            ("providerId", .string(user.providerID ?? "")), ("provider", .string(user.provider)), ("profilePicUrl", .string(user.pictureURL)),
        ])
    }

    /// A pre-auth key: `key` is the full text when just created, else its masked form (as headscale shows it).
    static func preAuthKey(_ key: PreAuthKey, user: User?, fullText: String? = nil) -> ProtoJSON {
        .object([
            ("user", user.map(Self.user) ?? .null), ("id", .uint64(key.id.rawValue)),
            ("key", .string(fullText ?? (key.hashScheme == .bcrypt ? "hskey-auth-\(key.prefix)-***" : "wkey-auth-\(key.prefix)-***"))),
            ("reusable", .bool(key.reusable)),
            ("ephemeral", .bool(key.ephemeral)), ("used", .bool(key.used)), ("expiration", .timestamp(key.expiration)),
            ("createdAt", .timestamp(key.created)), ("aclTags", .strings(key.tags)),
        ])
    }

    static func apiKey(_ key: APIKey) -> ProtoJSON {
        .object([
            ("id", .uint64(key.id.rawValue)), ("prefix", .string(maskedPrefix(key))),
            ("expiration", .timestamp(key.expiration)), ("createdAt", .timestamp(key.created)), ("lastSeen", .timestamp(key.lastUsed)),
        ])
    }

    /// An API key's prefix as its owner knows the key: Warren's form, or (imported from headscale) headscale's
    /// "hskey-api-<prefix>-***", or "<prefix>***" for headscale's legacy 7-character prefixes.
    static func maskedPrefix(_ key: APIKey) -> String {
        guard key.hashScheme == .bcrypt else { return "wkey-api-\(key.prefix)-***" }
        return key.prefix.utf8.count == PresentedKey.headscalePrefixLength ? "hskey-api-\(key.prefix)-***" : "\(key.prefix)***"
    }

    static func registerMethod(_ method: RegisterMethod) -> String {
        switch method {
        case .authKey: "REGISTER_METHOD_AUTH_KEY"
        // Approved by an admin (CLI or API) or created by one: headscale calls both CLI.
        case .interactive, .cli: "REGISTER_METHOD_CLI"
        case .oidc: "REGISTER_METHOD_OIDC"
        }
    }

    /// Nodes as headscale's Node messages, with their users, pre-auth keys and online state.
    private func nodes(_ nodes: [Node]) async throws -> [ProtoJSON] {
        let keyIDs = Set(nodes.compactMap(\.authKeyID))
        let (users, keys) = try await admin.store.read { tx in
            let users = Dictionary(uniqueKeysWithValues: try tx.users().map { ($0.id, $0) })
            let keys = Dictionary(uniqueKeysWithValues: try keyIDs.compactMap { try tx.preAuthKey(id: $0) }.map { ($0.id, $0) })
            return (users, keys)
        }
        let online = await admin.hooks.onlineNodes()
        return nodes.map { node in
            let key = node.authKeyID.flatMap { keys[$0] }
            return .object([
                ("id", .uint64(node.id.rawValue)), ("machineKey", .string(node.machineKey.description)),
                ("nodeKey", .string(node.nodeKey.description)), ("discoKey", .string(node.discoKey?.description ?? "")),
                ("ipAddresses", .strings([node.ipv4, node.ipv6].compactMap { $0?.description })), ("name", .string(node.hostname)),
                ("user", users[node.userID].map(Self.user) ?? .null), ("lastSeen", .timestamp(node.lastSeen)),
                ("expiry", .timestamp(node.expiry)),
                ("preAuthKey", key.map { Self.preAuthKey($0, user: users[$0.userID]) } ?? .null),
                ("createdAt", .timestamp(node.created)), ("registerMethod", .string(Self.registerMethod(node.registerMethod))),
                ("givenName", .string(node.givenName)), ("online", .bool(online.contains(node.id))),
                ("approvedRoutes", .strings(node.approvedRoutes.map(\.description))),
                ("availableRoutes", .strings(node.advertisedRoutes.map(\.description))),
                // Advertised and approved: what peers route to the node.
                ("subnetRoutes", .strings(node.advertisedRoutes.filter { node.approvedRoutes.contains($0) }.map(\.description))),
                ("tags", .strings(node.tags)),
            ])
        }
    }

    private func wrapped(_ node: Node) async throws -> ProtoJSON {
        .object([("node", try await nodes([node])[0])])
    }

    // MARK: lookups

    private func pathID(_ m: HeadscaleMessage, _ name: String) throws -> Int64 {
        let text = try m.string(name)
        guard let id = UInt64(text) else {
            throw HeadscaleStatus.invalidArgument("type mismatch, parameter: \(name), error: strconv.ParseUint: parsing \(text.debugDescription): invalid syntax")
        }
        return Int64(clamping: id)
    }

    static func user(id: Int64, in tx: any StoreReading) throws -> User {
        guard let user = try tx.user(id: UserID(id)) else { throw HeadscaleStatus.notFound("user not found") }
        return user
    }

    static func node(id: Int64, in tx: any StoreReading) throws -> Node {
        guard let node = try tx.node(id: NodeID(id)) else { throw HeadscaleStatus.notFound("node not found") }
        return node
    }

    static func preAuthKey(id: Int64, in tx: any StoreReading) throws -> PreAuthKey {
        guard let key = try tx.preAuthKey(id: PreAuthKeyID(id)) else { throw HeadscaleStatus.notFound("pre-auth key not found") }
        return key
    }

    /// An API key named by `prefix` (bare, the full key, or the masked "wkey-api-PREFIX-***") or by `id`: one of them.
    private func apiKeySelector(_ m: HeadscaleMessage) throws -> AdminAPI.Select<APIKey> {
        var prefix = try m.string("prefix")
        let id = try m.uint64("id")
        switch (prefix.isEmpty, id == 0) {
        case (false, false): throw HeadscaleStatus.invalidArgument("provide either id or prefix, not both")
        case (true, true): throw HeadscaleStatus.invalidArgument("must provide id or prefix")
        case (true, false):
            return { tx in
                guard let key = try tx.apiKey(id: APIKeyID(id)) else { throw HeadscaleStatus.notFound("API key not found") }
                return key
            }
        case (false, true):
            if prefix.hasSuffix("-***") { prefix.removeLast(4) } else if prefix.hasSuffix("***") { prefix.removeLast(3) }
            let bare: String
            // headscale's forms (keys imported from it): a full key text, "hskey-api-<prefix>", a bare 12- or 7-character prefix.
            let headscalePrefix = prefix.hasPrefix("hskey-api-") ? String(prefix.dropFirst("hskey-api-".count)) : prefix
            if let presented = PresentedKey(parsing: prefix, kind: .api) {
                bare = presented.prefix
            } else if [PresentedKey.headscalePrefixLength, PresentedKey.headscaleLegacyAPIPrefixLength].contains(headscalePrefix.utf8.count),
                      headscalePrefix.utf8.allSatisfy(PresentedKey.isBase64URLSafe) {
                bare = headscalePrefix
            } else {
                do { bare = try AdminAPI.keyPrefix(prefix, kind: .api) } catch { throw HeadscaleStatus.invalidArgument("\(prefix.debugDescription) is not an API key prefix") }
            }
            return { tx in
                guard let key = try tx.apiKey(prefix: bare) else { throw HeadscaleStatus.notFound("API key not found") }
                return key
            }
        }
    }

    // MARK: users

    private func listUsers(_ m: HeadscaleMessage) async throws -> ProtoJSON {
        let id = try m.uint64("id")
        let name = try m.string("name")
        let email = try m.string("email")
        var users = try await admin.store.read { try $0.users() }
        // headscale applies the first filter given, in this order.
        if !name.isEmpty {
            users = users.filter { $0.name == name }
        } else if !email.isEmpty {
            users = users.filter { $0.email == email }
        } else if id != 0 {
            users = users.filter { $0.id.rawValue == id }
        }
        return .object([("users", .array(users.sorted { $0.id.rawValue < $1.id.rawValue }.map(Self.user)))])
    }

    private func createUser(_ m: HeadscaleMessage) async throws -> ProtoJSON {
        let name = try m.string("name")
        let displayName = try m.string("displayName")
        let email = try m.string("email")
        let picture = try m.string("pictureUrl")
        let user = try await admin.createUserRecord(name: name, displayName: displayName, email: email, pictureURL: picture)
        return .object([("user", Self.user(user))])
    }

    // MARK: pre-auth keys

    private func listPreAuthKeys() async throws -> ProtoJSON {
        let (keys, users) = try await admin.store.read { tx in
            (try tx.preAuthKeys(userID: nil), Dictionary(uniqueKeysWithValues: try tx.users().map { ($0.id, $0) }))
        }
        let sorted = keys.sorted { $0.id.rawValue < $1.id.rawValue }
        return .object([("preAuthKeys", .array(sorted.map { Self.preAuthKey($0, user: users[$0.userID]) }))])
    }

    private func createPreAuthKey(_ m: HeadscaleMessage) async throws -> ProtoJSON {
        let userID = try m.uint64("user")
        guard userID != 0 else {
            throw HeadscaleStatus.invalidArgument("a pre-auth key belongs to a user in Warren: give user (the user's id)")
        }
        let tags = try m.strings("aclTags")
        for tag in tags {
            do { try StoreRules.validateTag(tag) } catch let error as StoreError { throw HeadscaleStatus.invalidArgument(error.message) }
        }
        let options = PreAuthKeyOptions(reusable: try m.bool("reusable"), ephemeral: try m.bool("ephemeral"), preApproved: false,
                                         tags: tags, expiration: try m.timestamp("expiration"))
        let (key, text, user) = try await admin.createPreAuthKeyRecord(for: { try Self.user(id: userID, in: $0) }, options: options)
        return .object([("preAuthKey", Self.preAuthKey(key, user: user, fullText: text))])
    }

    // MARK: nodes

    private func listNodes(_ m: HeadscaleMessage) async throws -> ProtoJSON {
        let user = try m.string("user")
        let list = try await admin.store.read { tx in
            user.isEmpty ? try tx.nodes() : try tx.nodes(userID: AdminAPI.findUser(user, in: tx).id)
        }
        return .object([("nodes", .array(try await nodes(list.sorted { $0.id.rawValue < $1.id.rawValue })))])
    }

    private func setTags(_ m: HeadscaleMessage) async throws -> ProtoJSON {
        let id = try pathID(m, "nodeId")
        let tags = try m.strings("tags")
        guard !tags.isEmpty else {
            throw HeadscaleStatus.invalidArgument("cannot remove all tags from a node - tagged nodes must have at least one tag")
        }
        return try await wrapped(try await admin.tagNodeRecord({ try Self.node(id: id, in: $0) }, tags: tags))
    }

    private func setApprovedRoutes(_ m: HeadscaleMessage) async throws -> ProtoJSON {
        let id = try pathID(m, "nodeId")
        var routes: [String] = []
        for route in try m.strings("routes") {
            // An exit route approves both families, as clients expect both to call a node an exit node.
            if route == "0.0.0.0/0" || route == "::/0" { routes += ["0.0.0.0/0", "::/0"] } else { routes.append(route) }
        }
        return try await wrapped(try await admin.approveRoutesRecord({ try Self.node(id: id, in: $0) }, routes: routes))
    }

    private func expireNode(_ m: HeadscaleMessage) async throws -> ProtoJSON {
        let id = try pathID(m, "nodeId")
        let expiry = try m.timestamp("expiry")
        let disable = try m.bool("disableExpiry")
        if disable, expiry != nil { throw HeadscaleStatus.invalidArgument("cannot set both disable_expiry and expiry") }
        let now = admin.clock()
        let node = try await admin.updateNodeRecord({ try Self.node(id: id, in: $0) }) { node, _ in
            if disable {
                node.expiry = nil
            } else if let expiry {
                node.expiry = expiry
            } else if !node.isExpired(at: now) {
                node.expiry = now
            }
        }
        return try await wrapped(node)
    }

    private func register(user: String, key: String) async throws -> ProtoJSON {
        guard !key.isEmpty else { throw HeadscaleStatus.invalidArgument("a registration id (key) is required") }
        let node = try await admin.registerNodeRecord(user: { tx, _ in try AdminAPI.findUser(user, in: tx) }, key: key)
        return try await wrapped(node)
    }

    /// The pending login an auth call names (headscale's answers for a missing or unknown one).
    private func pendingLogin(_ authID: String) async throws -> String {
        guard !authID.isEmpty else { throw HeadscaleStatus.invalidArgument("invalid auth_id: auth ID is empty") }
        let now = admin.clock()
        do {
            return try await admin.store.read { try AdminAPI.findRegistration(authID, in: $0, now: now).id }
        } catch let error as StoreError where error.code == .notFound || error.code == .invalid {
            throw HeadscaleStatus.notFound("no pending auth session for auth_id \(authID)")
        }
    }

    /// headscale's AuthApprove carries no user: Warren completes the login of a machine that already has a node (it logs
    /// in again as its owner). A new machine needs a user: `auth register` (code 9 says so).
    private func authApprove(_ authID: String) async throws -> ProtoJSON {
        let id = try await pendingLogin(authID)
        _ = try await admin.registerNodeRecord(user: { tx, registration in
            do {
                return try AdminAPI.existingOwner(tx, registration)
            } catch let error as AdminError where error.status == 409 {
                throw HeadscaleStatus.failedPrecondition(error.message)
            }
        }, key: id)
        return .object([])
    }

    private func authReject(_ authID: String) async throws -> ProtoJSON {
        let id = try await pendingLogin(authID)
        _ = try await admin.rejectRegistrationRecord(key: id)
        return .object([])
    }

    /// headscale's DebugCreateNode: a pending login under `key` for a machine with fresh random keys (nobody holds their
    /// private halves, so it can never connect), named `name`, announcing `routes`; the answer echoes the node it would
    /// become. `auth register --auth-id KEY --user USER` then makes it a real node (in the store and in peers' maps).
    private func debugCreateNode(_ m: HeadscaleMessage) async throws -> ProtoJSON {
        let userName = try m.string("user")
        let key = try m.string("key")
        let name = try m.string("name")
        var routes: [String] = []
        for text in try m.strings("routes") {
            guard let prefix = IPPrefix(text) else { throw HeadscaleStatus.invalidArgument("netip.ParsePrefix(\(text.debugDescription)): invalid prefix") }
            routes.append(prefix.description)
        }
        guard (16...64).contains(key.count), key.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) else {
            throw HeadscaleStatus.invalidArgument("invalid auth id: key must be 16 to 64 letters, digits, - or _")
        }
        guard !name.isEmpty else { throw HeadscaleStatus.invalidArgument("a node name is required") }
        var hostinfo: [String: Any] = ["Hostname": name, "OS": "TestOS"]
        if !routes.isEmpty { hostinfo["RoutableIPs"] = routes }
        let hostinfoText = String(decoding: try JSONSerialization.data(withJSONObject: hostinfo, options: [.sortedKeys]), as: UTF8.self)
        let now = admin.clock()
        var generator = SystemRandomNumberGenerator()
        let machineKey = MachinePrivate.generate(using: &generator).publicKey
        let nodeKey = NodePrivate.generate(using: &generator).publicKey
        let user = try await admin.store.transaction { tx in
            guard let user = try tx.user(named: userName) else { throw HeadscaleStatus.notFound("user not found") }
            if try tx.pendingRegistration(id: key) != nil { throw HeadscaleStatus(code: 6, message: "a pending login with auth id \(key) exists") }
            try tx.save(PendingRegistration(
                id: key, machineKey: machineKey, nodeKey: nodeKey, hostname: name, hostinfo: hostinfoText,
                created: now, expires: now.addingTimeInterval(Self.debugLoginLifetime)))
            return user
        }
        let zeroTime = ProtoJSON.string("0001-01-01T00:00:00Z")
        return .object([("node", .object([
            ("id", .uint64(0)), ("machineKey", .string(machineKey.description)), ("nodeKey", .string(nodeKey.description)),
            ("discoKey", .string("")), ("ipAddresses", .array([])), ("name", .string(name)), ("user", Self.user(user)),
            ("lastSeen", zeroTime), ("expiry", zeroTime), ("preAuthKey", .null), ("createdAt", zeroTime),
            ("registerMethod", .string("REGISTER_METHOD_UNSPECIFIED")), ("givenName", .string("")), ("online", .bool(false)),
            ("approvedRoutes", .array([])), ("availableRoutes", .strings(routes)), ("subnetRoutes", .array([])), ("tags", .array([])),
        ]))])
    }

    /// How long a debug login waits for its approval (headscale's register cache keeps an entry 15 minutes).
    static let debugLoginLifetime: TimeInterval = 15 * 60

    /// Gives every node an address of each family it lacks or holds outside the configured prefixes.
    private func backfillNodeIPs(_ m: HeadscaleMessage) async throws -> ProtoJSON {
        guard try m.bool("confirmed") else { throw HeadscaleStatus.failedPrecondition("not confirmed, aborting") }
        let allocator = admin.allocator
        let (changes, changed) = try await admin.store.transaction { tx in
            var changes: [String] = []
            var changed: [NodeID] = []
            for var node in try tx.nodes().sorted(by: { $0.id.rawValue < $1.id.rawValue }) {
                let needsV4 = node.ipv4.map { !allocator.isAssignable($0) } ?? true
                let needsV6 = node.ipv6.map { !allocator.isAssignable($0) } ?? true
                guard needsV4 || needsV6 else { continue }
                let fresh = try tx.allocateAddresses(allocator)
                if needsV4 {
                    node.ipv4 = fresh.ipv4
                    changes.append("assigned IPv4 \(fresh.ipv4.description.debugDescription) to Node(\(node.id.rawValue)) \(node.hostname.debugDescription)")
                }
                if needsV6 {
                    node.ipv6 = fresh.ipv6
                    changes.append("assigned IPv6 \(fresh.ipv6.description.debugDescription) to Node(\(node.id.rawValue)) \(node.hostname.debugDescription)")
                }
                try tx.update(node)
                changed.append(node.id)
            }
            return (changes, changed)
        }
        if !changed.isEmpty { await admin.hooks.changed(.nodesChanged(changed)) }
        return .object([("changes", .strings(changes))])
    }

    // MARK: API keys and policy

    private func listAPIKeys() async throws -> ProtoJSON {
        let keys = try await admin.store.read { try $0.apiKeys() }.sorted { $0.id.rawValue < $1.id.rawValue }
        return .object([("apiKeys", .array(keys.map(Self.apiKey)))])
    }

    private func getPolicy() async throws -> ProtoJSON {
        if case .file(let path) = admin.hooks.policy.mode {
            guard let text = await admin.hooks.policy.fileText() else {
                throw HeadscaleStatus(code: 13, message: "reading policy from path \(path.debugDescription)")
            }
            return .object([("policy", .string(text)), ("updatedAt", .null)])
        }
        guard let current = try await admin.store.read({ try $0.currentPolicy() }) else {
            throw HeadscaleStatus.notFound("loading ACL from database: acl policy not found")
        }
        return .object([("policy", .string(current.text)), ("updatedAt", .timestamp(current.created))])
    }
}
