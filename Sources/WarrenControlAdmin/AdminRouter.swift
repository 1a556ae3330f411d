// The admin API's routing on Hummingbird 2: each route of Warren's /api/v1 set and of headscale's is a route of a
// Hummingbird `Router` (method and path template, the same templates as the OpenAPI document), built once.
//
// Whichever listener carried the request (the admin server's socket or TCP listener, AdminHTTPServer.swift, or the
// control server's own HTTP listener, which stays on NIO), it arrives here as an `AdminRequest` (`AdminAPI.handle`,
// AdminAudit.swift, does the audit log and the metrics around it); `AdminAPI.respond` runs the router with a request
// context that carries the API, the transport (socket: trusted; network: an API key is needed) and the request
// with its body already read (at most 1 MiB). Authentication is a middleware on each route set: Warren's answers a
// refusal as a JSON error, headscale's as headscale does (a plain 401). A path no route has, or a method a path does
// not serve, is answered by `AdminAPI.unrouted`: headscale's gRPC statuses on headscale's paths (5 Not Found, 12
// Method Not Allowed), Warren's 405 with `Allow` or 404 elsewhere.

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

    public init(source: AdminRequestContextSource) {
        coreContext = CoreRequestContextStorage(source: source)
        api = source.api
        transport = source.transport
        request = source.request
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
/// route, or a method the path does not serve): answered by `AdminAPI.unrouted`.
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

    /// Runs the router for one request.
    func route(_ request: AdminRequest, via transport: AdminTransport) async throws -> AdminResponse {
        guard let method = HTTPRequest.Method(request.method) else {
            throw AdminError(400, "invalid", "\(request.method.debugDescription) is not an HTTP method")
        }
        let head = HTTPRequest(method: method, scheme: nil, authority: nil, path: request.path)
        let context = AdminRequestContext(source: AdminRequestContextSource(logger: Self.logger, api: self, transport: transport,
                                                                           request: request))
        return try await AdminResponse(Self.router.respond(to: Request(head: head, body: RequestBody(buffer: ByteBuffer())),
                                                           context: context))
    }
}
