import Foundation
import Hummingbird
import TailscaleKeys
import WarrenControlStore
import WarrenPacket

/// One admin API request, independent of the HTTP library that carried it.
public struct AdminRequest: Sendable {
    public var method: String
    /// The path without the query, such as "/api/v1/users".
    public var path: String
    /// Decoded query parameters.
    public var query: [String: String]
    /// The `Authorization` header, if any.
    public var authorization: String?
    public var body: [UInt8]
    /// Who is at the other end of the local socket ("uid 0, pid 4242, warren-control"), for the audit log.
    public var peer: String?

    public init(method: String, path: String, query: [String: String] = [:], authorization: String? = nil, body: [UInt8] = []) {
        self.method = method
        self.path = path
        self.query = query
        self.authorization = authorization
        self.body = body
    }

    /// Splits "path?a=1&b=2" into the path and decoded parameters.
    public static func splitTarget(_ target: String) -> (path: String, query: [String: String]) {
        guard let mark = target.firstIndex(of: "?") else { return (target, [:]) }
        var query: [String: String] = [:]
        for pair in target[target.index(after: mark)...].split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = String(parts[0]).removingPercentEncoding ?? String(parts[0])
            let value = parts.count > 1 ? (String(parts[1]).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? "") : ""
            query[name] = value
        }
        return (String(target[..<mark]), query)
    }
}

public struct AdminResponse: Sendable, Equatable {
    public var status: Int
    public var contentType: String
    public var body: [UInt8]
    /// Extra response headers (such as `Allow` on a 405).
    public var headers: [String: String]

    public init(status: Int, contentType: String = "application/json", body: [UInt8], headers: [String: String] = [:]) {
        self.status = status
        self.contentType = contentType
        self.body = body
        self.headers = headers
    }
}

/// How the request reached the server: over the root-only Unix socket (trusted: file permissions are the
/// authentication, as with headscale's socket) or over the network (needs an API key).
public enum AdminTransport: Sendable {
    case localSocket
    case network
}

/// What changed through the admin API, for the server to push to connected nodes.
public enum AdminChange: Sendable, Equatable {
    /// These nodes changed (name, tags, routes, expiry, owner, or were created).
    case nodesChanged([NodeID])
    /// These nodes were deleted.
    case nodesRemoved([NodeID])
    /// An interactive login was approved; the client waiting on it can be answered.
    case registrationApproved(registrationID: String, node: NodeID)
    /// An interactive login was refused (its record is gone from the store); the client waiting on it is told.
    case registrationRejected(registrationID: String)
    /// Users were created, renamed or deleted (names appear in peers' maps).
    case usersChanged
}

/// The server-side hooks of the admin API.
public struct AdminHooks: Sendable {
    /// Called after each committed change.
    public var changed: @Sendable (AdminChange) async -> Void
    /// Which nodes have a live map session (runtime state the store does not keep).
    public var onlineNodes: @Sendable () async -> Set<NodeID>
    /// Checking and applying policies (AdminPolicy.swift).
    public var policy: AdminPolicyHooks

    public init(changed: @escaping @Sendable (AdminChange) async -> Void = { _ in },
                onlineNodes: @escaping @Sendable () async -> Set<NodeID> = { [] },
                policy: AdminPolicyHooks = AdminPolicyHooks()) {
        self.changed = changed
        self.onlineNodes = onlineNodes
        self.policy = policy
    }
}

/// The admin REST API over a `ControlStore`: routes, validation, JSON. The HTTP listener (`AdminHTTPServer`) or the
/// control server's own listener hands it `AdminRequest`s. Routes are listed in `AdminOpenAPI.document`.
public struct AdminAPI: Sendable {
    public let store: any ControlStore
    public let allocator: AddressAllocator
    /// The node-key lifetime for logins approved here (nil = never expire). Tagged nodes never expire.
    public var nodeKeyExpiry: TimeInterval?
    public var hooks: AdminHooks
    let clock: @Sendable () -> Date
    /// Request metrics (AdminAudit.swift); shared by every copy of this API.
    public let observer = AdminRequestObserver()

    public init(store: any ControlStore, allocator: AddressAllocator, nodeKeyExpiry: TimeInterval? = nil,
                hooks: AdminHooks = AdminHooks(), clock: @escaping @Sendable () -> Date = { Date() }) {
        self.store = store
        self.allocator = allocator
        self.nodeKeyExpiry = nodeKeyExpiry
        self.hooks = hooks
        self.clock = clock
    }

    public static let pathPrefix = "/api/v1/"

    /// Whether `path` belongs to the admin API (for a listener that serves other things too).
    public static func serves(path: String) -> Bool { path.hasPrefix(pathPrefix) || path == "/api/v1" }

    /// The routes (`handle`, in AdminAudit.swift, wraps this with the audit log and metrics): the Hummingbird router
    /// of AdminRouter.swift (`router`); the route that matched is left in `match`.
    func respond(_ request: AdminRequest, via transport: AdminTransport, match: AdminRouteMatch) async -> AdminResponse {
        do {
            // Each segment is percent-decoded on its own when its route reads it; a path that does not decode at all
            // is refused here, whichever route it would reach.
            for segment in request.path.split(separator: "/") where String(segment).removingPercentEncoding == nil {
                throw AdminError(400, "invalid", "malformed percent-encoding in the path: \(request.path)")
            }
            let components = request.path.split(separator: "/", omittingEmptySubsequences: true)
            guard components.count >= 2, components[0] == "api", components[1] == "v1" else {
                throw AdminError(404, "not found", "no such API path: \(request.path)")
            }
            return try await route(request, via: transport, match: match)
        } catch let error as AdminError {
            return Self.errorResponse(error.status, error.code, error.message)
        } catch let error as StoreError {
            let status: Int
            switch error.code {
            case .notFound: status = 404
            case .conflict, .exhausted: status = 409
            case .invalid: status = 400
            default: status = 500
            }
            return Self.errorResponse(status, error.code.description, error.message)
        } catch {
            return Self.errorResponse(500, "internal", "internal server error")
        }
    }

    static func errorResponse(_ status: Int, _ code: String, _ message: String) -> AdminResponse {
        AdminResponse(status: status, body: encode(ErrorJSON(error: message, code: code)))
    }

    static func encode(_ value: some Encodable) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        return (try? Array(encoder.encode(value))) ?? Array(#"{"error":"encoding failed","code":"internal"}"#.utf8)
    }

    func ok(_ value: some Encodable, status: Int = 200) -> AdminResponse {
        AdminResponse(status: status, body: Self.encode(value))
    }

    func decode<T: Decodable>(_ type: T.Type, _ request: AdminRequest) throws -> T {
        guard request.body.count <= 1 << 20 else { throw AdminError(413, "invalid", "request body too large") }
        if let duplicate = JSONDuplicateKeys.first(in: request.body) {
            throw AdminError(400, "invalid", "the request body has a duplicate key \(duplicate.debugDescription) (each key may appear once per object)")
        }
        do {
            return try JSONDecoder().decode(type, from: Data(request.body))
        } catch {
            throw AdminError(400, "invalid", "the request body is not the expected JSON (\(String(describing: T.self)))")
        }
    }

    func authenticate(_ request: AdminRequest) async throws {
        guard let header = request.authorization, header.lowercased().hasPrefix("bearer ") else {
            throw AdminError(401, "unauthenticated", "an API key is required: Authorization: Bearer <key>")
        }
        let text = String(header.dropFirst("bearer ".count)).trimmingCharacters(in: .whitespaces)
        let now = clock()
        let key: APIKey
        do {
            key = try await store.read { try $0.validAPIKey(text, now: now) }
        } catch let error as StoreError where error.code == .invalid {
            throw AdminError(401, "unauthenticated", error.message)
        }
        // Record use, at most once a minute per key (each write is a synchronous commit).
        if key.lastUsed.map({ now.timeIntervalSince($0) >= 60 }) ?? true {
            try await store.transaction { tx in
                guard var current = try tx.apiKey(id: key.id) else { return }
                current.lastUsed = now
                try tx.update(current)
            }
        }
    }

    // MARK: routing

    /// The methods a path without a route for them answers with 405 (Warren) or code 12 (headscale).
    static let answeredMethods: [HTTPRequest.Method] = [.get, .head, .post, .put, .delete, .patch, .options, .trace, .connect]

    typealias Handler = @Sendable (Request, AdminRequestContext) async throws -> AdminResponse
    typealias Middleware = any MiddlewareProtocol<Request, Response, AdminRequestContext>

    /// One route as registered: the router's path, the method, the template it serves (headscale's own names on
    /// headscale's routes) and its handler.
    struct RouteEntry {
        var path: String
        var method: HTTPRequest.Method
        var template: String
        var handler: Handler
    }

    /// Every route, as Hummingbird routes: Warren's (API key over the network) and headscale's (HeadscaleAPI.swift,
    /// refused as headscale refuses), with the templates of the OpenAPI document; then, for each path, its other
    /// methods (`otherMethods`).
    static let router: RouterResponder<AdminRequestContext> = {
        let router = Router(context: AdminRequestContext.self)
        router.add(middleware: RecordRoute())

        // Without authentication: the document; the audit log authenticates itself (AdminAudit.swift).
        var open: [RouteEntry] = []
        func unauthenticated(_ method: HTTPRequest.Method, _ path: String, _ handler: @escaping Handler) {
            router.on(RouterPath(path), method: method, use: handler)
            open.append(RouteEntry(path: path, method: method, template: path, handler: handler))
        }
        unauthenticated(.get, "/api/v1/openapi.json") { _, _ in AdminResponse(status: 200, body: Array(AdminOpenAPI.document.utf8)) }
        unauthenticated(.get, "/api/v1/warren/audit") { _, c in await c.api.auditLog(c.request, via: c.transport) }

        // headscale's routes, each calling its rpc. The router holds one parameter name per path position (the first
        // headscale uses there); `RouteAs` gives each route its own names back.
        var parameterNames: [String: String] = [:]
        var headscale: [RouteEntry] = []
        for route in HeadscaleAPI.routes {
            var prefix = ""
            let path = "/" + route.path.split(separator: "/").map { segment -> String in
                var segment = String(segment)
                if segment.hasPrefix("{") {
                    if let name = parameterNames[prefix] { segment = name } else { parameterNames[prefix] = segment }
                }
                prefix += "/" + (segment.hasPrefix("{") ? "*" : segment)
                return segment
            }.joined(separator: "/")
            let method = HTTPRequest.Method(route.method)!
            let handler: Handler = { _, c in await HeadscaleAPI(admin: c.api).serve(route, c) }
            router.group().add(middleware: RouteAs.serving(path, as: route.path)!.0).add(middleware: HeadscaleAuthentication())
                .on(RouterPath(path), method: method, use: handler)
            headscale.append(RouteEntry(path: path, method: method, template: route.path, handler: handler))
        }

        let group = router.group().add(middleware: WarrenAuthentication())
        var warrenRoutes: [RouteEntry] = []
        func warren(_ method: HTTPRequest.Method, _ path: String, _ handler: @escaping Handler) {
            group.on(RouterPath(path), method: method, use: handler)
            warrenRoutes.append(RouteEntry(path: path, method: method, template: path, handler: handler))
        }
        warren(.get, "/api/v1/users") { _, c in try await c.api.listUsers() }
        warren(.post, "/api/v1/users") { _, c in try await c.api.createUser(c.api.decode(CreateUserBody.self, c.request)) }
        warren(.get, "/api/v1/users/{user}") { _, c in
            let name = try c.parameter("user")
            return c.api.ok(UserJSON(try await c.api.store.read { try Self.findUser(name, in: $0) }))
        }
        warren(.post, "/api/v1/users/{user}/rename") { _, c in
            try await c.api.renameUser(c.parameter("user"), c.api.decode(RenameBody.self, c.request))
        }
        warren(.delete, "/api/v1/users/{user}") { _, c in try await c.api.deleteUser(c.parameter("user")) }

        warren(.get, "/api/v1/preauthkeys") { _, c in try await c.api.listPreAuthKeys(user: c.request.query["user"]) }
        warren(.post, "/api/v1/preauthkeys") { _, c in try await c.api.createPreAuthKey(c.api.decode(CreatePreAuthKeyBody.self, c.request)) }
        warren(.post, "/api/v1/preauthkeys/expire") { _, c in try await c.api.expirePreAuthKey(c.api.decode(ExpireKeyBody.self, c.request)) }
        warren(.delete, "/api/v1/preauthkeys/{key}") { _, c in try await c.api.deletePreAuthKey(c.parameter("key")) }

        warren(.get, "/api/v1/nodes") { _, c in try await c.api.listNodes(user: c.request.query["user"]) }
        warren(.post, "/api/v1/nodes/register") { _, c in try await c.api.registerNode(c.api.decode(RegisterNodeBody.self, c.request)) }
        warren(.get, "/api/v1/nodes/{node}") { _, c in try await c.api.showNode(c.parameter("node")) }
        warren(.delete, "/api/v1/nodes/{node}") { _, c in try await c.api.deleteNode(c.parameter("node")) }
        warren(.post, "/api/v1/nodes/{node}/expire") { _, c in
            let body = c.request.body.isEmpty ? ExpireNodeBody() : try c.api.decode(ExpireNodeBody.self, c.request)
            return try await c.api.expireNode(c.parameter("node"), body)
        }
        warren(.post, "/api/v1/nodes/{node}/approve") { _, c in
            try await c.api.updateNode(c.parameter("node")) { node, _ in node.authorized = true }
        }
        warren(.post, "/api/v1/nodes/{node}/rename") { _, c in try await c.api.renameNode(c.parameter("node"), c.api.decode(RenameBody.self, c.request)) }
        warren(.post, "/api/v1/nodes/{node}/tags") { _, c in try await c.api.tagNode(c.parameter("node"), c.api.decode(TagsBody.self, c.request)) }
        warren(.get, "/api/v1/nodes/{node}/routes") { _, c in try await c.api.routes(c.parameter("node")) }
        warren(.post, "/api/v1/nodes/{node}/approve-routes") { _, c in
            try await c.api.approveRoutes(c.parameter("node"), c.api.decode(RoutesBody.self, c.request))
        }

        warren(.get, "/api/v1/routes") { _, c in try await c.api.allRoutes() }

        warren(.get, "/api/v1/registrations") { _, c in try await c.api.listPending() }
        warren(.post, "/api/v1/registrations/{registration}/approve") { _, c in
            let body = c.request.body.isEmpty ? ApproveRegistrationBody() : try c.api.decode(ApproveRegistrationBody.self, c.request)
            return try await c.api.approveRegistration(c.parameter("registration"), body)
        }
        warren(.post, "/api/v1/registrations/{registration}/reject") { _, c in
            c.api.ok(PendingRegistrationJSON(try await c.api.rejectRegistrationRecord(key: c.parameter("registration"))))
        }

        // Warren's policy routes live under /api/v1/warren/ (headscale's own shape holds /api/v1/policy).
        warren(.get, "/api/v1/warren/policy") { _, c in try await c.api.getPolicy() }
        warren(.put, "/api/v1/warren/policy") { _, c in try await c.api.setPolicy(c.api.decode(SetPolicyBody.self, c.request)) }
        warren(.get, "/api/v1/warren/policy/history") { _, c in try await c.api.policyHistory() }

        warren(.get, "/api/v1/apikeys") { _, c in try await c.api.listAPIKeys() }
        warren(.post, "/api/v1/apikeys") { _, c in try await c.api.createAPIKey(c.api.decode(CreateAPIKeyBody.self, c.request)) }
        warren(.post, "/api/v1/apikeys/expire") { _, c in try await c.api.expireAPIKey(c.api.decode(ExpireKeyBody.self, c.request)) }
        warren(.delete, "/api/v1/apikeys/{key}") { _, c in try await c.api.deleteAPIKey(c.parameter("key")) }

        // headscale's paths: another method is code 12 (after authentication), as grpc-gateway answers it.
        otherMethods(headscale, in: router, authentication: HeadscaleAuthentication()) { _ in
            { _, _ in HeadscaleStatus(code: 12, message: "Method Not Allowed").response }
        }
        // Warren's: 405 naming the methods the path serves (after authentication over the network).
        otherMethods(open, in: router, authentication: nil) { allowed in notAllowed(allowed) }
        otherMethods(warrenRoutes, in: router, authentication: WarrenAuthentication()) { allowed in notAllowed(allowed) }
        // Last: it wraps only the not-found responder.
        router.add(middleware: UnroutedRequests())
        return router.buildResponder()
    }()

    /// Warren's answer for a method a path does not serve.
    static func notAllowed(_ allowed: [HTTPRequest.Method]) -> Handler {
        let names = allowed.map(\.rawValue).joined(separator: ", ")
        return { _, c in
            var response = Self.errorResponse(405, "method not allowed", "\(c.request.method) is not allowed on \(c.request.path); allowed: \(names)")
            response.headers["Allow"] = names
            return response
        }
    }

    /// Registers, for each path of `routes` (one route set), every method it has no route for: the route of that
    /// method serving the path through a parameter (the one with the most literal segments), as headscale's gateway
    /// and Warren's table always matched per method; else the set's refusal (`refuse`, given the methods the path
    /// now serves). Decided here, once: the router alone matches requests.
    static func otherMethods(_ routes: [RouteEntry], in router: Router<AdminRequestContext>, authentication: Middleware?,
                             refuse: ([HTTPRequest.Method]) -> Handler) {
        var paths: [String] = []
        for route in routes where !paths.contains(route.path) { paths.append(route.path) }
        for path in paths {
            let own = routes.filter { $0.path == path }
            var allowed = own.map(\.method)
            var refused: [HTTPRequest.Method] = []
            for method in answeredMethods where !allowed.contains(method) {
                let candidates = routes.filter { $0.method == method && $0.path != path }
                    .compactMap { route in RouteAs.serving(path, as: route.template).map { (route, $0.0, $0.literals) } }
                guard let (route, routeAs, _) = candidates.max(by: { $0.2 < $1.2 }) else {
                    refused.append(method)
                    continue
                }
                var group = router.group().add(middleware: routeAs)
                if let authentication { group = group.add(middleware: authentication) }
                group.on(RouterPath(path), method: method, use: route.handler)
                allowed.append(method)
            }
            guard !refused.isEmpty else { continue }
            var group = router.group().add(middleware: RouteAs.serving(path, as: own[0].template)!.0)
            if let authentication { group = group.add(middleware: authentication) }
            let handler = refuse(allowed)
            for method in refused { group.on(RouterPath(path), method: method, use: handler) }
        }
    }

    /// A request on a path no route has: under headscale's resources, headscale's answer (after its authentication:
    /// gRPC status 5); elsewhere, after authentication, a 404.
    func unrouted(_ request: AdminRequest, via transport: AdminTransport) async throws -> AdminResponse {
        let route = request.path.split(separator: "/", omittingEmptySubsequences: true).dropFirst(2)
            .map { String($0).removingPercentEncoding ?? String($0) }
        if HeadscaleAPI.serves(route) {
            if let refusal = await headscaleRefusal(request, via: transport) { return refusal }
            return HeadscaleStatus.notFound("Not Found").response
        }
        if transport == .network { try await authenticate(request) }
        throw AdminError(404, "not found", "no such API route: \(request.method) /api/v1/\(route.joined(separator: "/"))")
    }

    private func expiration(absolute: String?, relative: String?, now: Date) throws -> Date? {
        if let relative {
            guard let seconds = DurationText.parse(relative), seconds > 0 else {
                throw AdminError(400, "invalid", "\(relative.debugDescription) is not a duration such as 30m, 24h or 7d")
            }
            return now.addingTimeInterval(seconds)
        }
        if let absolute {
            guard let date = AdminTime.parse(absolute) else {
                throw AdminError(400, "invalid", "\(absolute.debugDescription) is not an RFC 3339 time")
            }
            return date
        }
        return nil
    }

    // MARK: users

    private func listUsers() async throws -> AdminResponse {
        ok(try await store.read { try $0.users().map(UserJSON.init) })
    }

    private func createUser(_ body: CreateUserBody) async throws -> AdminResponse {
        ok(UserJSON(try await createUserRecord(name: body.name, displayName: body.displayName ?? "", email: body.email ?? "",
                                               pictureURL: body.pictureURL ?? "")),
           status: 201)
    }

    private func renameUser(_ name: String, _ body: RenameBody) async throws -> AdminResponse {
        ok(UserJSON(try await renameUserRecord({ try Self.findUser(name, in: $0) }, to: body.newName)))
    }

    private func deleteUser(_ name: String) async throws -> AdminResponse {
        ok(UserJSON(try await deleteUserRecord { try Self.findUser(name, in: $0) }))
    }

    /// A user named by its name or its id (a name starts with a letter, so digits alone are an id).
    static func findUser(_ reference: String, in tx: any StoreReading) throws -> User {
        if let user = try tx.user(named: reference) { return user }
        if let id = Int64(reference) {
            if let user = try tx.user(id: UserID(id)) { return user }
            throw StoreError(.notFound, "no user with id \(id)")
        }
        throw StoreError(.notFound, "no user named \(reference.debugDescription)")
    }

    // The operations below are shared by Warren's routes and headscale's (HeadscaleAPI.swift): one code path
    // into the store, and the same change hooks (so connected nodes get their map updates either way).

    /// Picks a record inside a store transaction.
    typealias Select<T> = @Sendable (any StoreReading) throws -> T

    func createUserRecord(name: String, displayName: String, email: String = "", pictureURL: String = "") async throws -> User {
        let now = clock()
        let user = try await store.transaction {
            try $0.createUser(name: name, displayName: displayName, email: email, pictureURL: pictureURL, now: now)
        }
        await hooks.changed(.usersChanged)
        return user
    }

    func renameUserRecord(_ select: @escaping Select<User>, to newName: String) async throws -> User {
        let (user, nodes) = try await store.transaction { tx in
            let user = try tx.renameUser(try select(tx).name, to: newName)
            return (user, try tx.nodes(userID: user.id).map(\.id))
        }
        await hooks.changed(.usersChanged)
        if !nodes.isEmpty { await hooks.changed(.nodesChanged(nodes)) }
        return user
    }

    func deleteUserRecord(_ select: @escaping Select<User>) async throws -> User {
        let user = try await store.transaction { tx in
            let user = try select(tx)
            try tx.deleteUser(id: user.id)
            return user
        }
        await hooks.changed(.usersChanged)
        return user
    }

    // MARK: pre-auth keys

    private func listPreAuthKeys(user: String?) async throws -> AdminResponse {
        let now = clock()
        return ok(try await store.read { tx in
            let users = Dictionary(uniqueKeysWithValues: try tx.users().map { ($0.id, $0.name) })
            let keys = try tx.preAuthKeys(userID: try user.map { try Self.findUser($0, in: tx).id })
            return keys.map { PreAuthKeyJSON($0, userName: users[$0.userID] ?? "", now: now) }
        })
    }

    private func createPreAuthKey(_ body: CreatePreAuthKeyBody) async throws -> AdminResponse {
        let now = clock()
        let expiration = try expiration(absolute: body.expiration, relative: body.expiresIn, now: now)
        let options = PreAuthKeyOptions(
            reusable: body.reusable ?? false, ephemeral: body.ephemeral ?? false, preApproved: body.preApproved ?? false,
            tags: body.tags ?? [], expiration: expiration)
        let (key, text, user) = try await createPreAuthKeyRecord(for: { try Self.findUser(body.user, in: $0) }, options: options)
        return ok(CreatedPreAuthKeyJSON(key: text, preAuthKey: PreAuthKeyJSON(key, userName: user.name, now: now)), status: 201)
    }

    func createPreAuthKeyRecord(for select: @escaping Select<User>, options: PreAuthKeyOptions) async throws -> (PreAuthKey, String, User) {
        let now = clock()
        return try await store.transaction { tx in
            let user = try select(tx)
            var generator = SystemRandomNumberGenerator()
            let created = try tx.createPreAuthKey(userID: user.id, options: options, now: now, generator: &generator)
            return (created.key, created.text, user)
        }
    }

    /// Expires a pre-auth key now (one already expired keeps its time); returns it with its user's name.
    func expirePreAuthKeyRecord(_ select: @escaping Select<PreAuthKey>) async throws -> (PreAuthKey, String) {
        let now = clock()
        return try await store.transaction { tx in
            var key = try select(tx)
            if !key.isExpired(at: now) { key.expiration = now }
            try tx.update(key)
            return (key, try tx.user(id: key.userID)?.name ?? "")
        }
    }

    /// The prefix named by a full key text or a bare prefix.
    static func keyPrefix(_ text: String, kind: SecretKeyText.Kind) throws -> String {
        if let parsed = SecretKeyText(parsing: text, kind: kind) { return parsed.prefix }
        if SecretKeyText.isPrefixText(text) { return text }
        let parts = text.split(separator: "-")
        if parts.count == 3, parts[0] == "wkey", parts[1] == kind.rawValue, SecretKeyText.isPrefixText(parts[2]) { return String(parts[2]) }
        throw AdminError(400, "invalid", "\(text.debugDescription) is neither a key nor a key prefix")
    }

    private func expirePreAuthKey(_ body: ExpireKeyBody) async throws -> AdminResponse {
        let now = clock()
        let reference = body.key
        let (key, userName) = try await expirePreAuthKeyRecord { try Self.findPreAuthKey(reference, in: $0) }
        return ok(PreAuthKeyJSON(key, userName: userName, now: now))
    }

    /// A pre-auth key named by its id, its prefix or its full text.
    static func findPreAuthKey(_ reference: String, in tx: any StoreReading) throws -> PreAuthKey {
        if let id = Int64(reference) {
            if let key = try tx.preAuthKey(id: PreAuthKeyID(id)) { return key }
            // Twelve digits could also be a prefix; anything else is an id nobody has.
            if !SecretKeyText.isPrefixText(reference) { throw StoreError(.notFound, "no pre-auth key with id \(id)") }
        }
        let prefix = try keyPrefix(reference, kind: .preAuth)
        guard let key = try tx.preAuthKey(prefix: prefix) else { throw StoreError(.notFound, "no pre-auth key \(prefix)") }
        return key
    }

    private func deletePreAuthKey(_ reference: String) async throws -> AdminResponse {
        let now = clock()
        let (key, userName) = try await store.transaction { tx in
            let key = try Self.findPreAuthKey(reference, in: tx)
            try tx.deletePreAuthKey(id: key.id)
            return (key, try tx.user(id: key.userID)?.name ?? "")
        }
        return ok(PreAuthKeyJSON(key, userName: userName, now: now))
    }

    // MARK: nodes

    private func nodeJSON(_ nodes: [Node], users: [UserID: String], now: Date) async -> [NodeJSON] {
        let online = await hooks.onlineNodes()
        return nodes.map { NodeJSON($0, userName: users[$0.userID] ?? "", online: online.contains($0.id), now: now) }
    }

    private func listNodes(user: String?) async throws -> AdminResponse {
        let now = clock()
        let (nodes, users) = try await store.read { tx in
            let users = Dictionary(uniqueKeysWithValues: try tx.users().map { ($0.id, $0.name) })
            let nodes = try user.map { try tx.nodes(userID: Self.findUser($0, in: tx).id) } ?? tx.nodes()
            return (nodes, users)
        }
        return ok(await nodeJSON(nodes, users: users, now: now))
    }

    /// A node named by its id or its MagicDNS name.
    static func findNode(_ reference: String, in tx: any StoreReading) throws -> Node {
        if let id = Int64(reference), let node = try tx.node(id: NodeID(id)) { return node }
        if let node = try tx.node(givenName: reference) { return node }
        throw StoreError(.notFound, "no node with id or name \(reference.debugDescription)")
    }

    private func single(_ node: Node, now: Date) async throws -> AdminResponse {
        let name = try await store.read { try $0.user(id: node.userID)?.name ?? "" }
        return ok(await nodeJSON([node], users: [node.userID: name], now: now)[0])
    }

    private func showNode(_ reference: String) async throws -> AdminResponse {
        let node = try await store.read { try Self.findNode(reference, in: $0) }
        return try await single(node, now: clock())
    }

    private func updateNode(_ reference: String, _ change: @escaping @Sendable (inout Node, any StoreTransaction) throws -> Void) async throws -> AdminResponse {
        try await single(updateNodeRecord({ try Self.findNode(reference, in: $0) }, change), now: clock())
    }

    func updateNodeRecord(_ select: @escaping Select<Node>,
                          _ change: @escaping @Sendable (inout Node, any StoreTransaction) throws -> Void) async throws -> Node {
        let node = try await store.transaction { tx in
            var node = try select(tx)
            try change(&node, tx)
            try tx.update(node)
            return node
        }
        await hooks.changed(.nodesChanged([node.id]))
        return node
    }

    private func deleteNode(_ reference: String) async throws -> AdminResponse {
        let now = clock()
        let node = try await deleteNodeRecord { try Self.findNode(reference, in: $0) }
        let name = try await store.read { try $0.user(id: node.userID)?.name ?? "" }
        return ok(NodeJSON(node, userName: name, online: false, now: now))
    }

    func deleteNodeRecord(_ select: @escaping Select<Node>) async throws -> Node {
        let node = try await store.transaction { tx in
            let node = try select(tx)
            try tx.deleteNode(id: node.id)
            return node
        }
        await hooks.changed(.nodesRemoved([node.id]))
        return node
    }

    /// Expires the node's key now, at `expiry`, or (`disable`) never.
    private func expireNode(_ reference: String, _ body: ExpireNodeBody) async throws -> AdminResponse {
        let now = clock()
        if body.disable == true, body.expiry != nil { throw AdminError(400, "invalid", "give either disable or expiry, not both") }
        let expiry = try body.expiry.map { text in
            guard let date = AdminTime.parse(text) else { throw AdminError(400, "invalid", "\(text.debugDescription) is not an RFC 3339 time") }
            return date
        }
        return try await updateNode(reference) { node, _ in
            if body.disable == true {
                node.expiry = nil
            } else if let expiry {
                node.expiry = expiry
            } else if !node.isExpired(at: now) {
                node.expiry = now
            }
        }
    }

    private func renameNode(_ reference: String, _ body: RenameBody) async throws -> AdminResponse {
        try await single(renameNodeRecord({ try Self.findNode(reference, in: $0) }, to: body.newName), now: clock())
    }

    func renameNodeRecord(_ select: @escaping Select<Node>, to newName: String) async throws -> Node {
        let node = try await store.transaction { tx in
            try tx.renameNode(id: try select(tx).id, to: newName)
        }
        await hooks.changed(.nodesChanged([node.id]))
        return node
    }

    private func tagNode(_ reference: String, _ body: TagsBody) async throws -> AdminResponse {
        try await single(tagNodeRecord({ try Self.findNode(reference, in: $0) }, tags: body.tags), now: clock())
    }

    func tagNodeRecord(_ select: @escaping Select<Node>, tags: [String]) async throws -> Node {
        for tag in tags { try StoreRules.validateTag(tag) }
        return try await updateNodeRecord(select) { node, _ in
            var seen: Set<String> = []
            node.tags = tags.filter { seen.insert($0).inserted }
            // Tagged nodes do not expire (as in Tailscale).
            if !node.tags.isEmpty { node.expiry = nil }
        }
    }

    private func routesJSON(_ node: Node) -> RoutesJSON {
        RoutesJSON(
            nodeID: node.id.rawValue, name: node.givenName, advertisedRoutes: node.advertisedRoutes.map(\.description),
            approvedRoutes: node.approvedRoutes.map(\.description),
            servedRoutes: node.advertisedRoutes.filter { node.approvedRoutes.contains($0) }.map(\.description))
    }

    /// The routes of every node that advertises or has approved some (as headscale's `nodes list-routes` lists them).
    private func allRoutes() async throws -> AdminResponse {
        let nodes = try await store.read { try $0.nodes() }
        return ok(nodes.filter { !$0.advertisedRoutes.isEmpty || !$0.approvedRoutes.isEmpty }.map(routesJSON))
    }

    private func routes(_ reference: String) async throws -> AdminResponse {
        let node = try await store.read { try Self.findNode(reference, in: $0) }
        return ok(routesJSON(node))
    }

    private func approveRoutes(_ reference: String, _ body: RoutesBody) async throws -> AdminResponse {
        ok(routesJSON(try await approveRoutesRecord({ try Self.findNode(reference, in: $0) }, routes: body.routes)))
    }

    func approveRoutesRecord(_ select: @escaping Select<Node>, routes: [String]) async throws -> Node {
        var prefixes: [IPPrefix] = []
        for text in routes where !text.isEmpty {
            guard let prefix = IPPrefix(text), prefix == prefix.masked else {
                throw AdminError(400, "invalid", "\(text.debugDescription) is not a route prefix such as 10.0.0.0/24")
            }
            if !prefixes.contains(prefix) { prefixes.append(prefix) }
        }
        let approved = prefixes
        return try await updateNodeRecord(select) { node, _ in node.approvedRoutes = approved }
    }

    private func listPending() async throws -> AdminResponse {
        ok(try await store.read { try $0.pendingRegistrations().map(PendingRegistrationJSON.init) })
    }

    /// Approves an interactive login: `key` is the registration id (or the pending node key).
    private func registerNode(_ body: RegisterNodeBody) async throws -> AdminResponse {
        try await single(registerNodeRecord(user: { tx, _ in try Self.findUser(body.user, in: tx) }, key: body.key), now: clock())
    }

    /// Picks the user a pending login is registered to.
    typealias SelectRegistrant = @Sendable (any StoreReading, PendingRegistration) throws -> User

    /// The pending login named by its registration id, the whole login URL, or its node key.
    static func findRegistration(_ key: String, in tx: any StoreReading, now: Date) throws -> PendingRegistration {
        var reference = key.trimmingCharacters(in: .whitespaces)
        // The whole login URL pasted: its last path component is the registration id.
        if reference.contains("/register/"), let last = reference.split(separator: "/").last { reference = String(last) }
        var pending = try tx.pendingRegistration(id: reference)
        if pending == nil, let nodeKey = NodePublic(reference) {
            pending = try tx.pendingRegistrations().first { $0.nodeKey == nodeKey }
        }
        guard let registration = pending else {
            throw StoreError(.notFound, "no pending login \(reference.debugDescription); the client may have given up (try `tailscale up` again)")
        }
        guard registration.expires > now else {
            throw StoreError(.invalid, "the login \(registration.id) expired at \(AdminTime.format(registration.expires)); start it again")
        }
        if registration.approvedNodeID != nil {
            throw StoreError(.conflict, "the login \(registration.id) was already approved")
        }
        return registration
    }

    /// The owner for `auth approve` without a user: a machine that already has a node logs in again as its owner; a new
    /// machine needs a user (`auth register`).
    static let existingOwner: SelectRegistrant = { tx, registration in
        guard let node = try tx.node(machineKey: registration.machineKey), let user = try tx.user(id: node.userID) else {
            throw AdminError(409, "conflict", "the login \(registration.id) is for a machine with no node yet: name its user "
                             + "(warren-control auth register --user USER --auth-id \(registration.id))")
        }
        return user
    }

    func registerNodeRecord(user selectUser: @escaping SelectRegistrant, key: String) async throws -> Node {
        let now = clock()
        let allocator = self.allocator
        let expiry = nodeKeyExpiry.map { now.addingTimeInterval($0) }
        let (node, registrationID) = try await store.transaction { tx in
            var registration = try Self.findRegistration(key, in: tx, now: now)
            let user = try selectUser(tx, registration)
            var node = try tx.registerNode(
                NodeRegistration(
                    machineKey: registration.machineKey, nodeKey: registration.nodeKey, userID: user.id,
                    hostname: registration.hostname, hostinfo: registration.hostinfo, ephemeral: registration.ephemeral,
                    method: .interactive, expiry: expiry),
                allocator: allocator, now: now)
            // The routes the login's Hostinfo announces, until the node's first map request says again.
            let announced = Self.routableIPs(hostinfo: registration.hostinfo)
            if node.advertisedRoutes.isEmpty, !announced.isEmpty {
                node.advertisedRoutes = announced
                try tx.update(node)
            }
            registration.approvedNodeID = node.id
            try tx.save(registration)
            return (node, registration.id)
        }
        await hooks.changed(.registrationApproved(registrationID: registrationID, node: node.id))
        await hooks.changed(.nodesChanged([node.id]))
        return node
    }

    /// The `RoutableIPs` of a Hostinfo's JSON text (none when absent or unreadable).
    static func routableIPs(hostinfo: String?) -> [IPPrefix] {
        guard let text = hostinfo, let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
              let list = object["RoutableIPs"] as? [String] else { return [] }
        return list.compactMap { IPPrefix($0) }
    }

    /// Refuses a pending login: its record goes, and the client waiting on it is told (the hook).
    func rejectRegistrationRecord(key: String) async throws -> PendingRegistration {
        let now = clock()
        let registration = try await store.transaction { tx in
            let registration = try Self.findRegistration(key, in: tx, now: now)
            try tx.deletePendingRegistration(id: registration.id)
            return registration
        }
        await hooks.changed(.registrationRejected(registrationID: registration.id))
        return registration
    }

    /// `POST /api/v1/registrations/{id}/approve`: to the named user, or (no user) to the owner of the machine's node.
    private func approveRegistration(_ key: String, _ body: ApproveRegistrationBody) async throws -> AdminResponse {
        let select: SelectRegistrant
        if let name = body.user {
            select = { tx, _ in try Self.findUser(name, in: tx) }
        } else {
            select = Self.existingOwner
        }
        return try await single(registerNodeRecord(user: select, key: key), now: clock())
    }

    // MARK: API keys

    private func listAPIKeys() async throws -> AdminResponse {
        let now = clock()
        return ok(try await store.read { try $0.apiKeys().map { APIKeyJSON($0, now: now) } })
    }

    private func createAPIKey(_ body: CreateAPIKeyBody) async throws -> AdminResponse {
        let now = clock()
        let expiration = try expiration(absolute: body.expiration, relative: body.expiresIn, now: now)
        let (key, text) = try await createAPIKeyRecord(expiration: expiration)
        return ok(CreatedAPIKeyJSON(key: text, apiKey: APIKeyJSON(key, now: now)), status: 201)
    }

    func createAPIKeyRecord(expiration: Date?) async throws -> (APIKey, String) {
        let now = clock()
        return try await store.transaction { tx in
            var generator = SystemRandomNumberGenerator()
            let created = try tx.createAPIKey(expiration: expiration, now: now, generator: &generator)
            return (created.key, created.text)
        }
    }

    func expireAPIKeyRecord(_ select: @escaping Select<APIKey>) async throws -> APIKey {
        let now = clock()
        return try await store.transaction { tx in
            var key = try select(tx)
            if !key.isExpired(at: now) { key.expiration = now }
            try tx.update(key)
            return key
        }
    }

    /// An API key named by its id, its prefix or its full text.
    static func findAPIKey(_ reference: String, in tx: any StoreReading) throws -> APIKey {
        if let id = Int64(reference) {
            if let key = try tx.apiKey(id: APIKeyID(id)) { return key }
            if !SecretKeyText.isPrefixText(reference) { throw StoreError(.notFound, "no API key with id \(id)") }
        }
        let prefix = try keyPrefix(reference, kind: .api)
        guard let key = try tx.apiKey(prefix: prefix) else { throw StoreError(.notFound, "no API key \(prefix)") }
        return key
    }

    private func deleteAPIKey(_ reference: String) async throws -> AdminResponse {
        let now = clock()
        return ok(APIKeyJSON(try await store.transaction { tx in
            let key = try Self.findAPIKey(reference, in: tx)
            try tx.deleteAPIKey(id: key.id)
            return key
        }, now: now))
    }

    private func expireAPIKey(_ body: ExpireKeyBody) async throws -> AdminResponse {
        let now = clock()
        let reference = body.key
        return ok(APIKeyJSON(try await expireAPIKeyRecord { try Self.findAPIKey(reference, in: $0) }, now: now))
    }
}

struct AdminError: Error {
    var status: Int
    var code: String
    var message: String
    init(_ status: Int, _ code: String, _ message: String) {
        self.status = status
        self.code = code
        self.message = message
    }
}

extension AdminAPI {
    /// headscale's routes over the network need an API key; the refusal in headscale's form (a plain 401, or the
    /// gRPC status of another failure), nil when the request may go on. The socket is trusted.
    func headscaleRefusal(_ request: AdminRequest, via transport: AdminTransport) async -> AdminResponse? {
        guard transport == .network else { return nil }
        do {
            try await authenticate(request)
            return nil
        } catch let error as AdminError where error.status == 401 {
            return HeadscaleAPI.unauthorized
        } catch {
            return HeadscaleAPI.errorResponse(for: error)
        }
    }
}
