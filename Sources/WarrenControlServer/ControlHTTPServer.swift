// The control server's listener: HTTP/1.1 for GET /key, the POST /ts2021 upgrade and the plain pages,
// with room for more routes and upgrades (the admin API, DERP) from other modules.

import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import ServiceLifecycle
import TailscaleKeys
public import WarrenListenerGuard
import WarrenTailcfg

/// A plain HTTP request handled outside the Noise channel.
public struct PlainHTTPRequest: Sendable {
    public var method: String
    public var path: String
    public var query: String?
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    public func header(_ name: String) -> String? {
        headers.first { $0.name.caseInsensitiveCompare(name) == .orderedSame }?.value
    }
}

public struct PlainHTTPResponse: Sendable {
    public var status: Int
    public var contentType: String
    public var body: [UInt8]
    /// Extra headers (such as `Allow` on a 405).
    public var headers: [String: String]

    public init(status: Int, contentType: String = "text/plain; charset=utf-8", body: [UInt8], headers: [String: String] = [:]) {
        self.status = status
        self.contentType = contentType
        self.body = body
        self.headers = headers
    }

    public init(status: Int, text: String) { self.init(status: status, body: Array(text.utf8)) }
}

/// Extra plain-HTTP routes (such as the admin REST API). Return nil for paths it does not serve.
public protocol PlainHTTPRoutes: Sendable {
    func handle(_ request: PlainHTTPRequest) async -> PlainHTTPResponse?
}

/// Builds extra upgraders for each new connection (such as DERP's `Upgrade: DERP`).
public typealias UpgraderFactory = @Sendable () -> [any HTTPServerProtocolUpgrader]

public struct ControlServerOptions: Sendable {
    public var host: String
    public var port: Int
    public var extraRoutes: (any PlainHTTPRoutes)?
    public var extraUpgraders: UpgraderFactory?
    /// Serve HTTPS instead of plain HTTP (every route and upgrade on the listener), as headscale's `tls_cert_path`.
    public var tls: NIOSSLContext?
    /// Connection cap, accept back-off and timers. `idleTimeout` also closes a ts2021 connection that has no
    /// open stream and carried nothing for that long.
    public var limits: ListenerLimits
    /// TCP keep-alive and user timeout on accepted connections (nil: the system's), so that a client that
    /// died silently ends its map stream in seconds (DeadPeerDetection.swift).
    public var deadPeerDetection: DeadPeerDetection? = .standard
    /// Asked first for GET /register/<id> (sign-in with OIDC sends the browser to the provider); nil from it, or
    /// no handler, gives the built-in page for an admin's approval.
    public var loginPage: (any PlainHTTPRoutes)?

    public init(host: String = "127.0.0.1", port: Int = 8080, extraRoutes: (any PlainHTTPRoutes)? = nil,
                extraUpgraders: UpgraderFactory? = nil, tls: NIOSSLContext? = nil, limits: ListenerLimits = .unlimited) {
        self.limits = limits
        self.host = host
        self.port = port
        self.extraRoutes = extraRoutes
        self.extraUpgraders = extraUpgraders
        self.tls = tls
    }
}

/// The listening control server. `start` binds; `run` (the Service) serves until graceful shutdown.
public final class ControlHTTPServer: Service, Sendable {
    public let engine: ControlEngine
    public let controlKey: MachinePrivate
    private let channel: Channel
    private let logger: Logger
    /// The listener's bounds and their counters.
    public let listenerGuard: ListenerGuard

    /// The bound address (with the actual port when 0 was asked for).
    public var localAddress: SocketAddress? { channel.localAddress }
    public var port: Int? { channel.localAddress?.port }

    private init(engine: ControlEngine, controlKey: MachinePrivate, channel: Channel, logger: Logger,
                 listenerGuard: ListenerGuard) {
        self.listenerGuard = listenerGuard
        self.engine = engine
        self.controlKey = controlKey
        self.channel = channel
        self.logger = logger
    }

    public static func start(engine: ControlEngine, controlKey: MachinePrivate, options: ControlServerOptions,
                             logger: Logger = Logger(label: "warren.control.http"),
                             group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> ControlHTTPServer {
        let keyResponse = try TailcfgJSON.encode(
            OverTLSPublicKeyResponse(legacyPublicKey: controlKey.publicKey, publicKey: controlKey.publicKey))
        let extraRoutes = options.extraRoutes
        let extraUpgraders = options.extraUpgraders
        let loginPage = options.loginPage
        let tls = options.tls
        let listenerGuard = ListenerGuard(name: "control", limits: options.limits, logger: logger)
        let idleTimeout = options.limits.idleTimeout
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { listenerGuard.installOnServerChannel($0) }
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .deadPeerDetection(options.deadPeerDetection)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try listenerGuard.installConnectionHandlers(on: channel.pipeline.syncOperations)
                    if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
                    let http = PlainHTTPHandler(engine: engine, keyResponse: keyResponse, extraRoutes: extraRoutes,
                                                loginPage: loginPage)
                    let upgrader = TS2021Upgrader(controlKey: controlKey, engine: engine, logger: logger, httpHandler: http,
                                                  idleTimeout: idleTimeout)
                    let upgraders: [any HTTPServerProtocolUpgrader] = [upgrader] + (extraUpgraders?() ?? [])
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                        withServerUpgrade: (upgraders: upgraders, completionHandler: { _ in }))
                    try channel.pipeline.syncOperations.addHandler(http)
                }
            }
            .bind(host: options.host, port: options.port).get()
        logger.info("control server listening", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? "?")",
                                                         "tls": "\(tls != nil)"])
        return ControlHTTPServer(engine: engine, controlKey: controlKey, channel: channel, logger: logger,
                                 listenerGuard: listenerGuard)
    }

    public func run() async throws {
        try await withGracefulShutdownHandler {
            try await channel.closeFuture.get()
        } onGracefulShutdown: {
            self.channel.close(promise: nil)
        }
    }

    public func close() async {
        try? await channel.close()
    }
}

/// Plain HTTP/1.1 requests: /key, the login page, health, extra routes; and POST /ts2021 requests that
/// the upgrader refused.
final class PlainHTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let engine: ControlEngine
    private let keyResponse: [UInt8]
    private let extraRoutes: (any PlainHTTPRoutes)?
    private let loginPage: (any PlainHTTPRoutes)?
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    /// The body went over the limit: the request is refused whole (413), never served cut short.
    private var bodyTooLarge = false
    static let maximumBodyLength = 1 << 20

    init(engine: ControlEngine, keyResponse: [UInt8], extraRoutes: (any PlainHTTPRoutes)?, loginPage: (any PlainHTTPRoutes)? = nil) {
        self.engine = engine
        self.keyResponse = keyResponse
        self.extraRoutes = extraRoutes
        self.loginPage = loginPage
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            body = []
            bodyTooLarge = false
        case .body(var chunk):
            if !bodyTooLarge && body.count + chunk.readableBytes <= Self.maximumBodyLength {
                body += chunk.readBytes(length: chunk.readableBytes) ?? []
            } else {
                bodyTooLarge = true
                body = []
            }
        case .end:
            guard let head else { return }
            self.head = nil
            ConnectionTimeouts.enter(.serving, on: context.channel)
            if bodyTooLarge {
                bodyTooLarge = false
                write(context, PlainHTTPResponse(status: 413, text: "request body larger than \(Self.maximumBodyLength) bytes\n"), false)
                return
            }
            handle(context: context, head: head)
        }
    }

    private func handle(context: ChannelHandlerContext, head: HTTPRequestHead) {
        let parts = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let path = parts.first.map(String.init) ?? "/"
        let query = parts.count > 1 ? String(parts[1]) : nil
        let keepAlive = head.isKeepAlive
        switch (head.method, path) {
        case (.GET, "/key"):
            write(context, PlainHTTPResponse(status: 200, contentType: "application/json", body: keyResponse), keepAlive)
        case (.GET, "/health") where extraRoutes == nil:  // serve answers it from its routes (a database check)
            write(context, PlainHTTPResponse(status: 200, text: "ok\n"), keepAlive)
        case (.POST, DERPAdmitEndpoint.path):
            let body = self.body
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            let eventLoop = context.eventLoop
            let engine = self.engine
            Task {
                let response = await DERPAdmitEndpoint.answer(body: body, engine: engine)
                eventLoop.execute {
                    let (handler, context) = loopBound.value
                    handler.write(context, response, keepAlive)
                }
            }
        case (.POST, "/ts2021"):
            write(context, PlainHTTPResponse(status: 400, text: "ts2021: missing or invalid X-Tailscale-Handshake\n"), false)
        case (.GET, _) where path.hasPrefix("/register/"):
            // Only a login that is waiting has a page: an unknown, expired, approved or rejected id answers 404.
            let id = String(path.dropFirst("/register/".count))
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            let eventLoop = context.eventLoop
            let engine = self.engine
            let loginPage = self.loginPage
            let request = PlainHTTPRequest(method: head.method.rawValue, path: path, query: query,
                                           headers: head.headers.map { ($0.name, $0.value) }, body: body)
            Task {
                if let loginPage, let response = await loginPage.handle(request) {
                    eventLoop.execute {
                        let (handler, context) = loopBound.value
                        handler.write(context, response, keepAlive)
                    }
                    return
                }
                let waiting = await engine.isWaitingLogin(id: id)
                let response = waiting
                    ? PlainHTTPResponse(status: 200, text: """
                        Warren: a device is waiting to join this tailnet.

                        An administrator approves it for a user with:

                            warren-control auth register --user USER --auth-id \(id)

                        or refuses it with:

                            warren-control auth reject --auth-id \(id)

                        """)
                    : PlainHTTPResponse(status: 404, text: "no login is waiting with this id (unknown, expired, approved or rejected)\n")
                eventLoop.execute {
                    let (handler, context) = loopBound.value
                    handler.write(context, response, keepAlive)
                }
            }
        default:
            guard let extraRoutes else {
                write(context, PlainHTTPResponse(status: 404, text: "not found\n"), keepAlive)
                return
            }
            let request = PlainHTTPRequest(method: head.method.rawValue, path: path, query: query,
                                           headers: head.headers.map { ($0.name, $0.value) }, body: body)
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            let eventLoop = context.eventLoop
            Task {
                let response = await extraRoutes.handle(request) ?? PlainHTTPResponse(status: 404, text: "not found\n")
                eventLoop.execute {
                    let (handler, context) = loopBound.value
                    handler.write(context, response, keepAlive)
                }
            }
        }
    }

    private func write(_ context: ChannelHandlerContext, _ response: PlainHTTPResponse, _ keepAlive: Bool) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: response.contentType)
        headers.add(name: "Content-Length", value: "\(response.body.count)")
        for (name, value) in response.headers.sorted(by: { $0.key < $1.key }) { headers.add(name: name, value: value) }
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        let head = HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: response.status), headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: response.body)))), promise: nil)
        let promise = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: promise)
        let channel = context.channel
        if !keepAlive {
            promise.futureResult.whenComplete { _ in channel.close(promise: nil) }
        } else {
            promise.futureResult.whenSuccess { ConnectionTimeouts.enter(.idle, on: channel) }
        }
    }
}
