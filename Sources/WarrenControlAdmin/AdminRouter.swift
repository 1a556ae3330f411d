// The admin API's routing on Hummingbird 2: each route of Warren's /api/v1 set and of headscale's is a route of a
// Hummingbird `Router` (method and path template, the same templates as the OpenAPI document), built once. The
// router is the only matcher: nothing else walks the route tables.
//
// Whichever listener carried the request (the admin server's socket or TCP listener, AdminHTTPServer.swift, or the
// control server's own HTTP listener, which stays on NIO), it arrives here as an `AdminRequest` (`AdminAPI.handle`,
// AdminAudit.swift, does the audit log and the metrics around it); `AdminAPI.respond` runs the router with a request
// context that carries the API, the transport (socket: trusted; network: an API key is needed), the request with
// its body already read (at most 1 MiB), and an `AdminRouteMatch` where the route that matched leaves its template
// and path parameters for the audit log and the metrics. Authentication is a middleware on each route set: Warren's
// answers a refusal as a JSON error, headscale's as headscale does (a plain 401). A method a path does not serve
// has its own route (AdminAPI.router registers every other method of each path): headscale's gRPC status 12 on
// headscale's paths, Warren's 405 with `Allow` elsewhere. A path no route has is the router's not-found answer,
// given by `AdminAPI.unrouted`: headscale's status 5 under headscale's resources, Warren's 404 elsewhere.

import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Synchronization

/// What a route handler sees besides Hummingbird's own context: the API, how the request came, and the request.
public struct AdminRequestContext: RequestContext {
    public typealias Source = AdminRequestContextSource
    public var coreContext: CoreRequestContextStorage
    let api: AdminAPI
    let transport: AdminTransport
    let request: AdminRequest
    /// Where the matched route leaves its template and parameters (shared by every copy of this context).
    let match: AdminRouteMatch

    public init(source: AdminRequestContextSource) {
        coreContext = CoreRequestContextStorage(source: source)
        api = source.api
        transport = source.transport
        request = source.request
        match = source.match
    }

    /// The body was read (and bounded) by the listener.
    public var maxUploadSize: Int { AdminAPI.maximumBody }

    /// A path parameter, percent-decoded on its own (an encoded "/" stays inside it): the CLI encodes names such as
    /// "jörg" or "a@b".
    func parameter(_ name: String) throws -> String {
        let raw = try parameters.require(name)
        guard let decoded = raw.removingPercentEncoding else {
            throw AdminError(400, "invalid", "malformed percent-encoding in the path: \(request.path)")
        }
        return decoded
    }
}

/// What an `AdminRequestContext` is made from.
public struct AdminRequestContextSource: RequestContextSource {
    public let logger: Logger
    let api: AdminAPI
    let transport: AdminTransport
    let request: AdminRequest
    let match: AdminRouteMatch
}

/// The route that served a request, for the audit log and the metrics: its template (Hummingbird's matched endpoint
/// path, or headscale's own template for headscale's routes) and its path parameters, percent-decoded, in template
/// order. Nothing is recorded when no route matched.
final class AdminRouteMatch: Sendable {
    private let state = Mutex<(template: String?, parameters: [(String, String)])>((nil, []))

    var template: String? { state.withLock { $0.template } }
    var parameters: [(String, String)] { state.withLock { $0.parameters } }

    /// Records the route of `context` (its endpoint path and parameters, as the router or a route's middleware set them).
    func record(_ context: AdminRequestContext) {
        let parameters = context.parameters.map { (String($0.key), String($0.value).removingPercentEncoding ?? String($0.value)) }
        let template = context.endpointPath
        state.withLock { $0 = (template, parameters) }
    }
}

/// First on every route: records the matched route in the context's `AdminRouteMatch`.
struct RecordRoute: RouterMiddleware {
    typealias Context = AdminRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        context.match.record(context)
        return try await next(request, context)
    }
}

/// On a route whose own template differs from the router's path (after `RecordRoute`): the template it serves, and
/// the parameters under its names. Two cases:
/// - headscale names one path position `oldId` in /user/{oldId}/rename/{newName} and `id` in /user/{id}; the router's
///   trie holds one name per position (the first), which this renames back for the route that matched;
/// - a literal path that another route serves for a method the literal path has no route for: headscale's
///   DELETE /apikey/expire is DeleteApiKey with prefix "expire" (grpc-gateway matches each method's patterns on
///   their own), Warren's GET /nodes/register shows the node named "register"; the literal segment becomes the
///   parameter's value. Which route serves which path is decided once, when the router is built.
struct RouteAs: RouterMiddleware {
    typealias Context = AdminRequestContext
    enum Value: Sendable {
        /// The router's parameter of this name.
        case parameter(String)
        /// A literal segment of the router's path.
        case literal(String)
    }

    /// The template served, such as "/api/v1/user/{id}".
    let template: String
    /// The template's parameters, in order, and where each comes from.
    let parameters: [(name: String, value: Value)]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var context = context
        let routed = context.parameters
        context.coreContext.parameters = Parameters(parameters.map { parameter in
            switch parameter.value {
            case .parameter(let name): (key: Substring(parameter.name), value: routed[Substring(name)] ?? "")
            case .literal(let text): (key: Substring(parameter.name), value: Substring(text))
            }
        })
        context.coreContext.endpointPath.value = template
        context.match.record(context)
        return try await next(request, context)
    }

    /// How `template` serves the router path `path`, and how many of its segments are literal; nil if it does not
    /// (a different length, a literal that differs, or a parameter of `path` where `template` has a literal).
    static func serving(_ path: String, as template: String) -> (RouteAs, literals: Int)? {
        let routed = path.split(separator: "/"), own = template.split(separator: "/")
        guard routed.count == own.count else { return nil }
        var parameters: [(name: String, value: Value)] = []
        var literals = 0
        for (segment, part) in zip(routed, own) {
            if part.hasPrefix("{") {
                let name = String(part.dropFirst().dropLast())
                parameters.append((name, segment.hasPrefix("{") ? .parameter(String(segment.dropFirst().dropLast())) : .literal(String(segment))))
            } else if segment == part {
                literals += 1
            } else {
                return nil
            }
        }
        return (RouteAs(template: template, parameters: parameters), literals)
    }
}

extension AdminResponse: ResponseGenerator {
    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var headers: HTTPFields = [.contentType: contentType]
        for (name, value) in self.headers.sorted(by: { $0.key < $1.key }) {
            if let field = HTTPField.Name(name) { headers[field] = value }
        }
        return Response(status: .init(code: status), headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
    }

    /// The router's answer as an `AdminResponse` (its body written into memory).
    init(_ response: Response) async throws {
        let collector = BodyCollector()
        try await response.body.write(collector.writer)
        var extra: [String: String] = [:]
        for field in response.headers where field.name != .contentType && field.name != .contentLength {
            extra[field.name.canonicalName == "allow" ? "Allow" : field.name.rawName] = field.value
        }
        self.init(status: response.status.code, contentType: response.headers[.contentType] ?? "application/json",
                  body: collector.bytes, headers: extra)
    }
}

/// Collects a response body written by Hummingbird.
private final class BodyCollector: Sendable {
    private let storage = Mutex<[UInt8]>([])

    struct Writer: ResponseBodyWriter {
        let collector: BodyCollector
        mutating func write(_ buffer: ByteBuffer) async throws { collector.storage.withLock { $0 += buffer.readableBytesView } }
        consuming func finish(_ trailingHeaders: HTTPFields?) async throws {}
    }

    var writer: Writer { Writer(collector: self) }
    var bytes: [UInt8] { storage.withLock { $0 } }
}

/// Warren's routes over the network need an API key (the socket is trusted).
struct WarrenAuthentication: RouterMiddleware {
    typealias Context = AdminRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if context.transport == .network { try await context.api.authenticate(context.request) }
        return try await next(request, context)
    }
}

/// headscale's routes over the network need an API key; refused as headscale refuses.
struct HeadscaleAuthentication: RouterMiddleware {
    typealias Context = AdminRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if let refusal = await context.api.headscaleRefusal(context.request, via: context.transport) {
            return try refusal.response(from: request, context: context)
        }
        return try await next(request, context)
    }
}

/// Added to the router after every route, so it wraps only Hummingbird's not-found responder (a path without a
/// route; every other method of a routed path has a route of its own): answered by `AdminAPI.unrouted`.
struct UnroutedRequests: RouterMiddleware {
    typealias Context = AdminRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError where error.status == .notFound {
            return try await context.api.unrouted(context.request, via: context.transport).response(from: request, context: context)
        }
    }
}

extension AdminAPI {
    /// The largest request body either listener accepts (a longer one is refused whole with 413).
    public static let maximumBody = 1 << 20

    static let logger = Logger(label: "warren.admin")

    /// Runs the router for one request; the route that matched is left in `match`.
    func route(_ request: AdminRequest, via transport: AdminTransport, match: AdminRouteMatch) async throws -> AdminResponse {
        guard let method = HTTPRequest.Method(request.method) else {
            throw AdminError(400, "invalid", "\(request.method.debugDescription) is not an HTTP method")
        }
        let head = HTTPRequest(method: method, scheme: nil, authority: nil, path: request.path)
        let context = AdminRequestContext(source: AdminRequestContextSource(logger: Self.logger, api: self, transport: transport,
                                                                           request: request, match: match))
        return try await AdminResponse(Self.router.respond(to: Request(head: head, body: RequestBody(buffer: ByteBuffer())),
                                                           context: context))
    }
}
