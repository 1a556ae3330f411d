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
                        OneRequestHTTPHandler(configuration: configuration) { request in
                            await router.handle(method: request.method, target: request.target, body: request.body)
                        })
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

/// One HTTP request as the one-request server hands it to its responder.
public struct OneRequest: Sendable {
    public var method: String
    public var target: String
    public var headers: [(String, String)]
    public var body: [UInt8]
    /// The client's address (nil on a unix socket).
    public var remoteAddress: SocketAddress?
}

/// An HTTP/1.1 server that reads one bounded request per connection, answers it through `respond`, and
/// closes (`Connection: close`): the LocalAPI on its unix socket, and the node's PeerAPI over TCP.
public enum OneRequestHTTPServer {
    /// Binds TCP on `address` (port 0: any) and serves until the returned channel is closed.
    public static func bind(
        _ address: SocketAddress, configuration: LocalAPIServer.Configuration = .init(), maximumConnections: Int = 64,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        respond: @escaping @Sendable (OneRequest) async -> LocalAPIResponse
    ) async throws -> any Channel {
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderFieldSize = configuration.maximumHeaderSize
        limits.maxHeaderListSize = configuration.maximumHeaderSize
        limits.maxHeaderFieldCount = 100
        let decoderLimits = limits
        let open = ConnectionCount()
        return try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                // A cap on open connections: beyond it, new ones are closed at once.
                guard open.admit(below: maximumConnections) else { return channel.close() }
                channel.closeFuture.whenComplete { _ in open.release() }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                        withPipeliningAssistance: true, withErrorHandling: true, withEncoderConfiguration: .init(),
                        withDecoderLimitConfiguration: decoderLimits)
                    try channel.pipeline.syncOperations.addHandler(OneRequestHTTPHandler(configuration: configuration, respond: respond))
                }
            }
            .bind(to: address).get()
    }
}

/// Open connections of one listener.
final class ConnectionCount: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0

    func admit(below limit: Int) -> Bool {
        lock.withLock {
            guard count < limit else { return false }
            count += 1
            return true
        }
    }

    func release() { lock.withLock { count -= 1 } }
}

final class OneRequestHTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let respond: @Sendable (OneRequest) async -> LocalAPIResponse
    private let configuration: LocalAPIServer.Configuration
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    /// Set once an answer is under way: everything read afterwards is dropped.
    private var answered = false
    private var deadline: Scheduled<Void>?

    init(configuration: LocalAPIServer.Configuration, respond: @escaping @Sendable (OneRequest) async -> LocalAPIResponse) {
        self.respond = respond
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
            let request = OneRequest(method: head.method.rawValue, target: head.uri, headers: head.headers.map { ($0.name, $0.value) },
                                     body: body, remoteAddress: context.channel.remoteAddress)
            body = []
            let respond = self.respond
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            context.eventLoop.makeFutureWithTask {
                await respond(request)
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
        if !response.headers.contains(where: { $0.0.lowercased() == "content-type" }) {
            headers.add(name: "Content-Type", value: "application/json")
        }
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
