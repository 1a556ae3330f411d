// The metrics listener: plain HTTP/1.1 on its own address (by default 127.0.0.1:9090), apart from the
// control listener so that it can stay private. GET /metrics answers the Prometheus text format.

import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
public import WarrenListenerGuard

public final class MetricsListener: Service, Sendable {
    private let channel: any Channel
    private let logger: Logger
    /// The listener's bounds and their counters.
    public let listenerGuard: ListenerGuard

    /// What a scraper needs: a few connections, a request within seconds, keep-alive for a scrape interval.
    public static let defaultLimits = ListenerLimits(maximumConnections: 64, handshakeTimeout: .seconds(15),
                                                     idleTimeout: .seconds(60))

    /// The bound port (the actual one when 0 was asked for).
    public var port: Int? { channel.localAddress?.port }

    private init(channel: any Channel, logger: Logger, listenerGuard: ListenerGuard) {
        self.listenerGuard = listenerGuard
        self.channel = channel
        self.logger = logger
    }

    public static func start(metrics: ControlMetricsRegistry, host: String, port: Int,
                             limits: ListenerLimits = MetricsListener.defaultLimits,
                             logger: Logger = Logger(label: "warren.metrics"),
                             group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> MetricsListener {
        let listenerGuard = ListenerGuard(name: "metrics", limits: limits, logger: logger)
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { listenerGuard.installOnServerChannel($0) }
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try listenerGuard.installConnectionHandlers(on: channel.pipeline.syncOperations)
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(
                        HTTPPhaseObserver<HTTPServerRequestPart, HTTPServerResponsePart>(
                            isEnd: { if case .end = $0 { true } else { false } },
                            isResponseEnd: { if case .end = $0 { true } else { false } }))
                    try channel.pipeline.syncOperations.addHandler(MetricsHTTPHandler(metrics: metrics))
                }
            }
            .bind(host: host, port: port).get()
        logger.info("metrics listening", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? "?")"])
        return MetricsListener(channel: channel, logger: logger, listenerGuard: listenerGuard)
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

final class MetricsHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let metrics: ControlMetricsRegistry
    private var head: HTTPRequestHead?

    init(metrics: ControlMetricsRegistry) { self.metrics = metrics }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h): head = h
        case .body: break
        case .end:
            guard let head else { return }
            self.head = nil
            let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
            let keepAlive = head.isKeepAlive
            switch (head.method, path) {
            case (.GET, "/metrics"):
                respond(context, .ok, "text/plain; version=0.0.4; charset=utf-8", metrics.scrape(), keepAlive)
            case (.GET, _):
                respond(context, .notFound, "text/plain; charset=utf-8", Array("not found; metrics are at /metrics\n".utf8), keepAlive)
            default:
                respond(context, .methodNotAllowed, "text/plain; charset=utf-8", Array("only GET\n".utf8), keepAlive)
            }
        }
    }

    private func respond(_ context: ChannelHandlerContext, _ status: HTTPResponseStatus, _ type: String, _ body: [UInt8],
                         _ keepAlive: Bool) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: type)
        headers.add(name: "Content-Length", value: "\(body.count)")
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        let promise = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: promise)
        if !keepAlive {
            let channel = context.channel
            promise.futureResult.whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
