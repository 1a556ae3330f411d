import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The LocalAPI over HTTP/1.1 on a unix socket (mode 0600: root only, like warrend itself). One request per
/// connection (`Connection: close`).
public final class LocalAPIServer: Sendable {
    public struct Configuration: Sendable {
        /// Largest request body accepted (413 above it).
        public var maximumBodySize = 1 << 20
        /// Largest request head (header names and values together) accepted.
        public var maximumHeaderSize = 16 * 1024
        /// Time from accepting a connection to having read the whole request; slower clients are disconnected.
        public var requestTimeout: TimeAmount = .seconds(10)
        /// File mode of the socket.
        public var socketMode: mode_t = 0o600

        public init() {}
    }

    /// The default socket path.
    public static let defaultSocketPath = "/var/run/warrend/warrend.sock"

    public let socketPath: String
    private let channel: Channel

    private init(socketPath: String, channel: Channel) {
        self.socketPath = socketPath
        self.channel = channel
    }

    /// Binds the socket and starts serving. Creates the parent directory (0755) if needed and replaces a stale socket
    /// file; refuses when another server answers on the socket.
    public static func start(
        backend: any LocalBackend, socketPath: String = defaultSocketPath, configuration: Configuration = .init(),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> LocalAPIServer {
        let parent = (socketPath as NSString).deletingLastPathComponent
        if !parent.isEmpty, !FileManager.default.fileExists(atPath: parent) {
            try FileManager.default.createDirectory(
                atPath: parent, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        }
        if LocalAPIClient.socketAnswers(socketPath) {
            throw LocalAPIClientError.other("another daemon is already serving \(socketPath)")
        }
        unlink(socketPath)
        let router = LocalAPIRouter(backend: backend)
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderFieldSize = configuration.maximumHeaderSize
        limits.maxHeaderListSize = configuration.maximumHeaderSize
        limits.maxHeaderFieldCount = 100
        let decoderLimits = limits
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 64)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                        withPipeliningAssistance: true, withErrorHandling: true, withEncoderConfiguration: .init(),
                        withDecoderLimitConfiguration: decoderLimits)
                    try channel.pipeline.syncOperations.addHandler(
                        LocalAPIHTTPHandler(router: router, configuration: configuration))
                }
            }
            .bind(unixDomainSocketPath: socketPath, cleanupExistingSocketFile: true).get()
        chmod(socketPath, configuration.socketMode)
        return LocalAPIServer(socketPath: socketPath, channel: channel)
    }

    /// Waits until the server is closed.
    public func run() async {
        try? await channel.closeFuture.get()
    }

    /// Stops accepting connections and removes the socket file. Requests in flight finish on their own.
    public func close() async {
        try? await channel.close()
        unlink(socketPath)
    }
}

final class LocalAPIHTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let router: LocalAPIRouter
    private let configuration: LocalAPIServer.Configuration
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    /// Set once an answer is under way: everything read afterwards is dropped.
    private var answered = false
    private var deadline: Scheduled<Void>?

    init(router: LocalAPIRouter, configuration: LocalAPIServer.Configuration) {
        self.router = router
        self.configuration = configuration
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { armDeadline(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        armDeadline(context: context)
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
    }

    private func armDeadline(context: ChannelHandlerContext) {
        guard deadline == nil else { return }
        let channel = context.channel
        deadline = context.eventLoop.scheduleTask(in: configuration.requestTimeout) {
            channel.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !answered else { return }
        switch unwrapInboundIn(data) {
        case .head(let requestHead):
            head = requestHead
            body = []
            if let lengthText = requestHead.headers.first(name: "content-length"), let length = Int(lengthText),
               length > configuration.maximumBodySize {
                reply(.error(413, "request body larger than \(configuration.maximumBodySize) bytes"), context: context)
            }
        case .body(var buffer):
            guard head != nil else { return }
            if body.count + buffer.readableBytes > configuration.maximumBodySize {
                reply(.error(413, "request body larger than \(configuration.maximumBodySize) bytes"), context: context)
            } else if let bytes = buffer.readBytes(length: buffer.readableBytes) {
                body += bytes
            }
        case .end:
            guard let head else { return }
            self.head = nil
            answered = true
            deadline?.cancel()
            deadline = nil
            let request = (method: head.method.rawValue, target: head.uri, body: body)
            body = []
            let router = self.router
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            context.eventLoop.makeFutureWithTask {
                await router.handle(method: request.method, target: request.target, body: request.body)
            }.whenSuccess { response in
                let (handler, context) = bound.value
                guard context.channel.isActive else { return }
                handler.write(response, context: context)
            }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed, !answered {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private func reply(_ response: LocalAPIResponse, context: ChannelHandlerContext) {
        answered = true
        head = nil
        body = []
        deadline?.cancel()
        deadline = nil
        write(response, context: context)
    }

    private func write(_ response: LocalAPIResponse, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: String(response.body.count))
        headers.add(name: "Connection", value: "close")
        for (name, value) in response.headers { headers.add(name: name, value: value) }
        let head = HTTPResponseHead(
            version: .http1_1, status: HTTPResponseStatus(statusCode: response.status), headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        var buffer = context.channel.allocator.buffer(capacity: response.body.count)
        buffer.writeBytes(response.body)
        context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            channel.close(promise: nil)
        }
    }
}
