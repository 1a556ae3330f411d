import Foundation

/// The OpenAPI 3.1 description of the admin API, served at GET /api/v1/openapi.json (no authentication).
/// Built from `routes`, which a test checks against the router, so the document and the code cannot drift apart.
public enum AdminOpenAPI {
    public struct Route: Sendable {
        public var method: String
        /// OpenAPI path template, such as "/api/v1/nodes/{node}/rename".
        public var path: String
        public var summary: String
        public var requestSchema: String?
        public var responseSchema: String
        public var query: [String]

        /// The status of a success: 201 for the routes that create a record.
        public var successStatus: String {
            method == "POST" && ["/api/v1/users", "/api/v1/preauthkeys", "/api/v1/apikeys"].contains(path) ? "201" : "200"
        }
    }

    /// The methods the API serves on a route (the path after /api/v1/, decoded), empty for an unknown path.
    public static func methods(forPath route: [String]) -> [String] {
        var methods: [String] = []
        for candidate in routes {
            let template = candidate.path.split(separator: "/").dropFirst(2)
            guard template.count == route.count else { continue }
            if zip(template, route).allSatisfy({ $0.hasPrefix("{") || $0 == $1 }), !methods.contains(candidate.method) {
                methods.append(candidate.method)
            }
        }
        return methods
    }

    public static let routes: [Route] = [
        Route(method: "GET", path: "/api/v1/users", summary: "List users", requestSchema: nil, responseSchema: "UserList", query: []),
        Route(method: "POST", path: "/api/v1/users", summary: "Create a user", requestSchema: "CreateUser", responseSchema: "User", query: []),
        Route(method: "GET", path: "/api/v1/users/{user}", summary: "Show a user (by name or id)", requestSchema: nil,
              responseSchema: "User", query: []),
        Route(method: "POST", path: "/api/v1/users/{user}/rename", summary: "Rename a user", requestSchema: "Rename", responseSchema: "User", query: []),
        Route(method: "DELETE", path: "/api/v1/users/{user}", summary: "Delete a user (refused while it owns nodes)", requestSchema: nil,
              responseSchema: "User", query: []),
        Route(method: "GET", path: "/api/v1/preauthkeys", summary: "List pre-auth keys (all, or one user's)", requestSchema: nil,
              responseSchema: "PreAuthKeyList", query: ["user"]),
        Route(method: "POST", path: "/api/v1/preauthkeys", summary: "Create a pre-auth key; the full key is in the answer only",
              requestSchema: "CreatePreAuthKey", responseSchema: "CreatedPreAuthKey", query: []),
        Route(method: "POST", path: "/api/v1/preauthkeys/expire", summary: "Expire a pre-auth key (by key or prefix)",
              requestSchema: "ExpireKey", responseSchema: "PreAuthKey", query: []),
        Route(method: "DELETE", path: "/api/v1/preauthkeys/{key}", summary: "Delete a pre-auth key (by id, prefix or key)",
              requestSchema: nil, responseSchema: "PreAuthKey", query: []),
        Route(method: "GET", path: "/api/v1/nodes", summary: "List nodes (all, or one user's)", requestSchema: nil,
              responseSchema: "NodeList", query: ["user"]),
        Route(method: "POST", path: "/api/v1/nodes/register", summary: "Approve an interactive login",
              requestSchema: "RegisterNode", responseSchema: "Node", query: []),
        Route(method: "GET", path: "/api/v1/nodes/{node}", summary: "Show a node (by id or MagicDNS name)", requestSchema: nil,
              responseSchema: "Node", query: []),
        Route(method: "DELETE", path: "/api/v1/nodes/{node}", summary: "Delete a node", requestSchema: nil, responseSchema: "Node", query: []),
        Route(method: "POST", path: "/api/v1/nodes/{node}/expire",
              summary: "Expire a node's key now, at a time (expiry), or never (disable); the body is optional",
              requestSchema: "ExpireNode", responseSchema: "Node", query: []),
        Route(method: "POST", path: "/api/v1/nodes/{node}/approve", summary: "Approve a device waiting for approval",
              requestSchema: nil, responseSchema: "Node", query: []),
        Route(method: "POST", path: "/api/v1/nodes/{node}/rename", summary: "Set a node's MagicDNS name", requestSchema: "Rename",
              responseSchema: "Node", query: []),
        Route(method: "POST", path: "/api/v1/nodes/{node}/tags", summary: "Replace a node's tags", requestSchema: "Tags",
              responseSchema: "Node", query: []),
        Route(method: "GET", path: "/api/v1/nodes/{node}/routes", summary: "A node's advertised and approved routes",
              requestSchema: nil, responseSchema: "Routes", query: []),
        Route(method: "POST", path: "/api/v1/nodes/{node}/approve-routes", summary: "Set a node's approved routes",
              requestSchema: "RouteList", responseSchema: "Routes", query: []),
        Route(method: "GET", path: "/api/v1/routes", summary: "The routes of every node that advertises or has approved some",
              requestSchema: nil, responseSchema: "RoutesList", query: []),
        Route(method: "GET", path: "/api/v1/registrations", summary: "List interactive logins waiting for approval",
              requestSchema: nil, responseSchema: "PendingRegistrationList", query: []),
        Route(method: "POST", path: "/api/v1/registrations/{registration}/approve",
              summary: "Approve a pending login: for a user, or (no user) as the owner of the machine's existing node; the body is optional",
              requestSchema: "ApproveRegistration", responseSchema: "Node", query: []),
        Route(method: "POST", path: "/api/v1/registrations/{registration}/reject",
              summary: "Reject a pending login: the waiting client is refused", requestSchema: nil,
              responseSchema: "PendingRegistration", query: []),
        Route(method: "GET", path: "/api/v1/warren/policy", summary: "The access policy in force (from the database or policy_file)",
              requestSchema: nil, responseSchema: "Policy", query: []),
        Route(method: "PUT", path: "/api/v1/warren/policy",
              summary: "Check a policy against the tailnet (parse, validate, tests, sshTests), store it as a new version and put it in force; "
                  + "refused with 400 (and the problems, with line and column) when a check fails, with 409 in file mode",
              requestSchema: "SetPolicy", responseSchema: "Policy", query: []),
        Route(method: "GET", path: "/api/v1/warren/policy/history", summary: "Every stored policy version, oldest first",
              requestSchema: nil, responseSchema: "PolicyVersionList", query: []),
        Route(method: "GET", path: "/api/v1/warren/audit",
              summary: "The newest audit log entries (who, what, when, outcome), oldest first; since = a duration (1h) or an RFC 3339 time, limit = count",
              requestSchema: nil, responseSchema: "AuditEntryList", query: ["since", "limit"]),
        Route(method: "GET", path: "/api/v1/apikeys", summary: "List API keys", requestSchema: nil, responseSchema: "APIKeyList", query: []),
        Route(method: "POST", path: "/api/v1/apikeys", summary: "Create an API key; the full key is in the answer only",
              requestSchema: "CreateAPIKey", responseSchema: "CreatedAPIKey", query: []),
        Route(method: "POST", path: "/api/v1/apikeys/expire", summary: "Expire an API key (by key or prefix)",
              requestSchema: "ExpireKey", responseSchema: "APIKey", query: []),
        Route(method: "DELETE", path: "/api/v1/apikeys/{key}", summary: "Delete an API key (by id, prefix or key)",
              requestSchema: nil, responseSchema: "APIKey", query: []),
    ]

    private static func object(_ properties: [String: Any], required: [String] = []) -> [String: Any] {
        var schema: [String: Any] = ["type": "object", "properties": properties]
        if !required.isEmpty { schema["required"] = required }
        return schema
    }

    private static var string: [String: Any] { ["type": "string"] }
    private static var nullableString: [String: Any] { ["type": ["string", "null"]] }
    private static var time: [String: Any] { ["type": "string", "format": "date-time"] }
    private static var nullableTime: [String: Any] { ["type": ["string", "null"], "format": "date-time"] }
    private static var integer: [String: Any] { ["type": "integer", "format": "int64"] }
    private static var boolean: [String: Any] { ["type": "boolean"] }
    private static var strings: [String: Any] { ["type": "array", "items": ["type": "string"]] }
    private static func ref(_ name: String) -> [String: Any] { ["$ref": "#/components/schemas/\(name)"] }
    private static func list(_ name: String) -> [String: Any] { ["type": "array", "items": ref(name)] }

    private static var schemas: [String: Any] {
        [
            "User": object(["id": integer, "name": string, "displayName": string, "created": time, "email": string,
                            "providerID": string, "provider": string, "pictureURL": string, "providerGroups": strings]),
            "UserList": list("User"),
            "Node": object([
                "id": integer, "machineKey": string, "nodeKey": string, "discoKey": nullableString, "user": string, "userID": integer,
                "hostname": string, "givenName": string, "ipAddresses": strings, "endpoints": strings, "tags": strings,
                "advertisedRoutes": strings, "approvedRoutes": strings, "expiry": nullableTime, "expired": boolean,
                "lastSeen": nullableTime, "online": boolean, "ephemeral": boolean,
                "registerMethod": ["type": "string", "enum": ["authkey", "interactive", "cli", "oidc"]],
                "preAuthKeyID": ["type": ["integer", "null"]], "created": time, "authorized": boolean,
            ]),
            "NodeList": list("Node"),
            "PreAuthKey": object([
                "id": integer, "prefix": string, "user": string, "reusable": boolean, "ephemeral": boolean, "preApproved": boolean,
                "tags": strings, "created": time, "expiration": nullableTime, "expired": boolean, "used": boolean, "useCount": integer,
            ]),
            "PreAuthKeyList": list("PreAuthKey"),
            "CreatedPreAuthKey": object(["key": string, "preAuthKey": ref("PreAuthKey")]),
            "APIKey": object(["id": integer, "prefix": string, "created": time, "expiration": nullableTime, "expired": boolean,
                              "lastUsed": nullableTime]),
            "APIKeyList": list("APIKey"),
            "CreatedAPIKey": object(["key": string, "apiKey": ref("APIKey")]),
            "PendingRegistration": object(["id": string, "machineKey": string, "nodeKey": string, "hostname": string, "created": time,
                                           "expires": time, "approvedNodeID": ["type": ["integer", "null"]]]),
            "PendingRegistrationList": list("PendingRegistration"),
            "Routes": object(["nodeID": integer, "name": string, "advertisedRoutes": strings, "approvedRoutes": strings,
                              "servedRoutes": strings]),
            "RoutesList": list("Routes"),
            "ExpireNode": object(["disable": ["type": "boolean", "description": "true: the node's key never expires"],
                                  "expiry": ["type": "string", "format": "date-time", "description": "expire at this time instead of now"]]),
            "ApproveRegistration": object(["user": ["type": "string", "description": "the new node's user (name or id)"]]),
            "Error": object(["error": string, "code": string], required: ["error", "code"]),
            "CreateUser": object(["name": string, "displayName": string, "email": string,
                                  "pictureURL": ["type": "string", "description": "profile picture, an http(s) URL"]],
                                 required: ["name"]),
            "Rename": object(["newName": string], required: ["newName"]),
            "CreatePreAuthKey": object([
                "user": string, "reusable": boolean, "ephemeral": boolean, "preApproved": boolean, "tags": strings,
                "expiration": time, "expiresIn": ["type": "string", "description": "a duration from now: 30m, 24h, 7d"],
            ], required: ["user"]),
            "ExpireKey": object(["key": ["type": "string", "description": "the full key or its prefix"]], required: ["key"]),
            "RegisterNode": object(["user": string, "key": ["type": "string", "description": "the registration id from the AuthURL"]],
                                   required: ["user", "key"]),
            "Tags": object(["tags": strings], required: ["tags"]),
            "RouteList": object(["routes": strings], required: ["routes"]),
            "CreateAPIKey": object(["expiration": time, "expiresIn": string]),
            "SetPolicy": object(["policy": ["type": "string", "description": "the policy file's text (HuJSON)"]], required: ["policy"]),
            "Policy": object([
                "policy": string, "source": ["type": "string", "enum": ["database", "file", "none"]],
                "version": ["type": ["integer", "null"]], "updatedAt": nullableTime, "path": nullableString,
                "nodesChanged": ["type": ["integer", "null"], "description": "nodes that received new results (PUT)"],
            ], required: ["policy", "source"]),
            "PolicyVersion": object(["version": integer, "updatedAt": time, "policy": string], required: ["version", "updatedAt", "policy"]),
            "PolicyVersionList": list("PolicyVersion"),
            "AuditEntry": object(["id": integer, "time": time, "actor": string, "method": string, "route": string,
                                  "object": string, "status": integer, "outcome": string],
                                 required: ["id", "time", "actor", "method", "route", "object", "status", "outcome"]),
            "AuditEntryList": list("AuditEntry"),
            // headscale's messages (protobuf JSON: uint64 as strings, unset timestamps and messages null).
            "v1User": object(["id": uint64, "name": string, "createdAt": time, "displayName": string, "email": string,
                              "providerId": string, "provider": string, "profilePicUrl": string]),
            "v1PreAuthKey": object(["user": nullableRef("v1User"), "id": uint64, "key": string, "reusable": boolean, "ephemeral": boolean,
                                    "used": boolean, "expiration": nullableTime, "createdAt": nullableTime, "aclTags": strings]),
            "v1Node": object([
                "id": uint64, "machineKey": string, "nodeKey": string, "discoKey": string, "ipAddresses": strings, "name": string,
                "user": nullableRef("v1User"), "lastSeen": nullableTime, "expiry": nullableTime, "preAuthKey": nullableRef("v1PreAuthKey"),
                "createdAt": nullableTime,
                "registerMethod": ["type": "string", "enum": ["REGISTER_METHOD_UNSPECIFIED", "REGISTER_METHOD_AUTH_KEY", "REGISTER_METHOD_CLI",
                                                              "REGISTER_METHOD_OIDC"]],
                "givenName": string, "online": boolean, "approvedRoutes": strings, "availableRoutes": strings, "subnetRoutes": strings,
                "tags": strings,
            ]),
            "v1ApiKey": object(["id": uint64, "prefix": string, "expiration": nullableTime, "createdAt": nullableTime, "lastSeen": nullableTime]),
            "rpcStatus": object(["code": ["type": "integer", "format": "int32"], "message": string, "details": ["type": "array", "items": ["type": "object"]]]),
        ]
    }

    private static var uint64: [String: Any] { ["type": "string", "format": "uint64"] }
    private static func nullableRef(_ name: String) -> [String: Any] { ["oneOf": [ref(name), ["type": "null"]]] }

    /// The answer of each headscale call (its response message).
    private static func headscaleResponse(_ rpc: String) -> [String: Any] {
        switch rpc {
        case "ListUsers": object(["users": list("v1User")])
        case "CreateUser", "RenameUser": object(["user": ref("v1User")])
        case "ListPreAuthKeys": object(["preAuthKeys": list("v1PreAuthKey")])
        case "CreatePreAuthKey": object(["preAuthKey": ref("v1PreAuthKey")])
        case "ListNodes": object(["nodes": list("v1Node")])
        case "GetNode", "RegisterNode", "SetTags", "SetApprovedRoutes", "ExpireNode", "RenameNode", "AuthRegister", "DebugCreateNode":
            object(["node": ref("v1Node")])
        case "BackfillNodeIPs": object(["changes": strings])
        case "ListApiKeys": object(["apiKeys": list("v1ApiKey")])
        case "CreateApiKey": object(["apiKey": ["type": "string", "description": "the full key, shown once"]])
        case "GetPolicy", "SetPolicy": object(["policy": string, "updatedAt": nullableTime])
        case "Health": object(["databaseConnectivity": boolean])
        default: object([:])
        }
    }

    /// The request body of each headscale call that has one.
    private static func headscaleRequest(_ rpc: String) -> [String: Any] {
        switch rpc {
        case "CreateUser": object(["name": string, "displayName": string, "email": string, "pictureUrl": string])
        case "CreatePreAuthKey": object(["user": uint64, "reusable": boolean, "ephemeral": boolean, "expiration": time, "aclTags": strings])
        case "ExpirePreAuthKey": object(["id": uint64])
        case "SetTags": object(["tags": strings])
        case "SetApprovedRoutes": object(["routes": strings])
        case "AuthRegister": object(["user": string, "authId": string])
        case "AuthApprove", "AuthReject": object(["authId": string])
        case "DebugCreateNode": object(["user": string, "key": string, "name": string, "routes": strings])
        case "CreateApiKey": object(["expiration": time])
        case "ExpireApiKey": object(["prefix": string, "id": uint64])
        case "SetPolicy", "CheckPolicy": object(["policy": string])
        default: object([:])
        }
    }

    /// The query parameters of headscale's body-less calls.
    private static func headscaleQuery(_ rpc: String) -> [String] {
        switch rpc {
        case "ListUsers": ["id", "name", "email"]
        case "DeletePreAuthKey": ["id"]
        case "ListNodes": ["user"]
        case "RegisterNode": ["user", "key"]
        case "BackfillNodeIPs": ["confirmed"]
        case "ExpireNode": ["expiry", "disableExpiry"]
        case "DeleteApiKey": ["id"]
        default: []
        }
    }

    /// The document as JSON text.
    public static let document: String = {
        var paths: [String: [String: Any]] = [:]
        for route in routes {
            var operation: [String: Any] = [
                "summary": route.summary,
                "operationId": route.method.lowercased() + route.path.split(separator: "/").dropFirst(2)
                    .map { $0.hasPrefix("{") ? "By" : $0.prefix(1).uppercased() + $0.dropFirst() }.joined().replacingOccurrences(of: "-", with: ""),
                "responses": [
                    route.successStatus: ["description": route.successStatus == "201" ? "created" : "success", "content": ["application/json": ["schema": ref(route.responseSchema)]]],
                    "default": ["description": "an error", "content": ["application/json": ["schema": ref("Error")]]],
                ] as [String: Any],
            ]
            var parameters: [[String: Any]] = []
            for component in route.path.split(separator: "/") where component.hasPrefix("{") {
                parameters.append(["name": String(component.dropFirst().dropLast()), "in": "path", "required": true, "schema": string])
            }
            for name in route.query {
                parameters.append(["name": name, "in": "query", "required": false, "schema": string])
            }
            if !parameters.isEmpty { operation["parameters"] = parameters }
            if let body = route.requestSchema {
                // Expiring a node and approving a login take an optional body (none: expire now; the machine's owner).
                let optional = ["ExpireNode", "ApproveRegistration"].contains(body)
                operation["requestBody"] = ["required": !optional, "content": ["application/json": ["schema": ref(body)]]]
            }
            paths[route.path, default: [:]][route.method.lowercased()] = operation
        }
        for route in HeadscaleAPI.routes {
            var operation: [String: Any] = [
                "summary": route.summary + " (headscale v0.29.2's API)",
                "operationId": "HeadscaleService_" + route.rpc,
                "tags": ["headscale"],
                "responses": [
                    "200": ["description": "success", "content": ["application/json": ["schema": headscaleResponse(route.rpc)]]],
                    "default": ["description": "a gRPC status as grpc-gateway writes it", "content": ["application/json": ["schema": ref("rpcStatus")]]],
                ] as [String: Any],
            ]
            var parameters: [[String: Any]] = []
            for component in route.path.split(separator: "/") where component.hasPrefix("{") {
                parameters.append(["name": String(component.dropFirst().dropLast()), "in": "path", "required": true, "schema": string])
            }
            for name in headscaleQuery(route.rpc) {
                parameters.append(["name": name, "in": "query", "required": false, "schema": string])
            }
            if !parameters.isEmpty { operation["parameters"] = parameters }
            if route.hasBody {
                operation["requestBody"] = ["required": true, "content": ["application/json": ["schema": headscaleRequest(route.rpc)]]]
            }
            paths[route.path, default: [:]][route.method.lowercased()] = operation
        }
        paths["/api/v1/openapi.json"] = ["get": [
            "summary": "This document", "operationId": "getOpenAPI", "security": [] as [Any],
            "responses": ["200": ["description": "the OpenAPI document"]],
        ] as [String: Any]]
        let document: [String: Any] = [
            "openapi": "3.1.0",
            "info": [
                "title": "warren-control admin API", "version": "1",
                "description": "Users, nodes, pre-auth keys and API keys of a warren-control tailnet. Over the network every call "
                    + "needs `Authorization: Bearer <API key>`; over the server's local Unix socket (root only) none does. "
                    + "Two route sets: Warren's own (plural resources, /api/v1/warren/policy) and headscale v0.29.2's REST API "
                    + "(tagged headscale: /api/v1/user, node, preauthkey, apikey, policy, health, auth), answered as headscale's "
                    + "grpc-gateway answers.",
            ],
            "paths": paths,
            "components": [
                "schemas": schemas,
                "securitySchemes": ["bearer": ["type": "http", "scheme": "bearer"]],
            ] as [String: Any],
            "security": [["bearer": [] as [Any]]],
        ]
        guard let data = try? JSONSerialization.data(withJSONObject: document, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]) else {
            return "{}"
        }
        return String(decoding: data, as: UTF8.self)
    }()
}
