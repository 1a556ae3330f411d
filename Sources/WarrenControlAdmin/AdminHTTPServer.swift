import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
public import WarrenListenerGuard

/// An HTTP/1.1 listener for the admin API: on a Unix socket in the state directory (mode 0600, so only its owner,
/// root in production, can connect; requests there need no API key), and optionally on TCP (API key required).
/// One request per connection (`Connection: close`); bodies up to 1 MiB.
public final class AdminHTTPServer: Service, Sendable {
    private let channels: [Channel]
    public let socketPath: String?
    /// The bounds of the listeners (the socket's first, then TCP's), with their counters.
    public let listenerGuards: [ListenerGuard]

    /// One request per connection: a few dozen at once, each read within seconds.
    public static let defaultLimits = ListenerLimits(maximumConnections: 64, handshakeTimeout: .seconds(15),
                                                     idleTimeout: .seconds(15))

    /// The TCP port actually bound (when 0 was asked for), if a TCP listener was started.
    public var tcpPort: Int? { channels.first { $0.localAddress?.port != nil }?.localAddress?.port }

    private init(channels: [Channel], socketPath: String?, listenerGuards: [ListenerGuard]) {
        self.listenerGuards = listenerGuards
        self.channels = channels
        self.socketPath = socketPath
    }

    /// Binds the listeners. A stale socket file left by a killed server is replaced; a socket that a running server
    /// answers on is not (`.conflict`-like error: another server owns the state directory).
    public static func start(
        api: AdminAPI, socketPath: String?, tcp: (host: String, port: Int)? = nil,
        limits: ListenerLimits = AdminHTTPServer.defaultLimits,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> AdminHTTPServer {
        var channels: [Channel] = []
        var guards: [ListenerGuard] = []
        if let socketPath {
            if AdminClient.socketAnswers(path: socketPath) {
                throw AdminClientError("another warren-control is already serving \(socketPath)")
            }
            let listenerGuard = ListenerGuard(name: "admin socket", limits: limits)
            guards.append(listenerGuard)
            let channel = try await bootstrap(api: api, transport: .localSocket, listenerGuard: listenerGuard, group: group)
                .bind(unixDomainSocketPath: socketPath, cleanupExistingSocketFile: true).get()
            chmod(socketPath, 0o600)
            channels.append(channel)
        }
        if let tcp {
            do {
                let listenerGuard = ListenerGuard(name: "admin", limits: limits)
                guards.append(listenerGuard)
                channels.append(try await bootstrap(api: api, transport: .network, listenerGuard: listenerGuard, group: group)
                    .bind(host: tcp.host, port: tcp.port).get())
            } catch {
                for channel in channels { try? await channel.close() }
                throw error
            }
        }
        return AdminHTTPServer(channels: channels, socketPath: socketPath, listenerGuards: guards)
    }

    private static func bootstrap(api: AdminAPI, transport: AdminTransport, listenerGuard: ListenerGuard,
                                  group: any EventLoopGroup) -> ServerBootstrap {
        ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { listenerGuard.installOnServerChannel($0) }
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try listenerGuard.installConnectionHandlers(on: channel.pipeline.syncOperations)
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(
                        HTTPPhaseObserver<HTTPServerRequestPart, HTTPServerResponsePart>(
                            isEnd: { if case .end = $0 { true } else { false } },
                            isResponseEnd: { if case .end = $0 { true } else { false } }))
                    try channel.pipeline.syncOperations.addHandler(AdminHTTPHandler(api: api, transport: transport))
                }
            }
    }

    /// Serves until graceful shutdown (or cancellation), then closes the listeners and removes the socket file.
    public func run() async throws {
        await withGracefulShutdownHandler {
            await withTaskCancellationHandler {
                for channel in channels { try? await channel.closeFuture.get() }
            } onCancel: {
                for channel in channels { channel.close(promise: nil) }
            }
        } onGracefulShutdown: {
            for channel in self.channels { channel.close(promise: nil) }
        }
        if let socketPath { unlink(socketPath) }
    }

    /// Closes the listeners now.
    public func close() async {
        for channel in channels { try? await channel.close() }
        if let socketPath { unlink(socketPath) }
    }
}

final class AdminHTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    static let maximumBody = 1 << 20

    private let api: AdminAPI
    private let transport: AdminTransport
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var tooLarge = false

    init(api: AdminAPI, transport: AdminTransport) {
        self.api = api
        self.transport = transport
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let requestHead):
            head = requestHead
            body = []
            tooLarge = false
            // A declared length over the limit is refused without reading the body.
            if let length = requestHead.headers.first(name: "content-length").flatMap(Int.init), length > Self.maximumBody {
                tooLarge = true
            }
        case .body(var buffer):
            // Once over the limit, nothing more is kept: the request is refused whole (413), never cut.
            if tooLarge || body.count + buffer.readableBytes > Self.maximumBody {
                tooLarge = true
                body = []
            } else if let bytes = buffer.readBytes(length: buffer.readableBytes) {
                body += bytes
            }
        case .end:
            guard let head else { return }
            self.head = nil
            if tooLarge {
                write(AdminAPI.errorResponse(413, "invalid", "request body larger than 1 MiB"), context: context)
                return
            }
            let (path, query) = AdminRequest.splitTarget(head.uri)
            var request = AdminRequest(
                method: head.method.rawValue, path: path, query: query,
                authorization: head.headers.first(name: "authorization"), body: body)
            body = []
            let api = self.api
            let transport = self.transport
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            // On the local socket, the peer's credentials (from the kernel) name who acted, for the audit log.
            let peer: EventLoopFuture<String?> = transport == .localSocket
                ? Self.peerCredentials(of: context.channel)
                : context.eventLoop.makeSucceededFuture(nil)
            peer.flatMap { peer in
                request.peer = peer
                let ready = request
                return context.eventLoop.makeFutureWithTask { await api.handle(ready, via: transport) }
            }.whenSuccess { response in
                let (handler, context) = bound.value
                handler.write(response, context: context)
            }
        }
    }

    /// "uid 0, pid 4242, warren-control" for a Unix socket peer (SO_PEERCRED and /proc/PID/comm), nil when unknown.
    static func peerCredentials(of channel: any Channel) -> EventLoopFuture<String?> {
        guard let provider = channel as? any SocketOptionProvider else { return channel.eventLoop.makeSucceededFuture(nil) }
        let credentials: EventLoopFuture<PeerCredentials> = provider.unsafeGetSocketOption(
            level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_PEERCRED))
        return credentials.map { (credentials: PeerCredentials) -> String? in
            var text = "uid \(credentials.uid), pid \(credentials.pid)"
            if let data = FileManager.default.contents(atPath: "/proc/\(credentials.pid)/comm") {
                let name = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                if !name.isEmpty { text += ", " + AdminAuditText.safe(name) }
            }
            return text
        }.recover { _ -> String? in nil }
    }

    /// Linux's `struct ucred` (pid_t, uid_t, gid_t), which the C module does not export without _GNU_SOURCE.
    struct PeerCredentials: Sendable {
        var pid: Int32 = 0
        var uid: UInt32 = 0
        var gid: UInt32 = 0
    }

    private func write(_ response: AdminResponse, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: response.contentType)
        headers.add(name: "Content-Length", value: String(response.body.count))
        headers.add(name: "Connection", value: "close")
        for (name, value) in response.headers.sorted(by: { $0.key < $1.key }) { headers.add(name: name, value: value) }
        let head = HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: response.status), headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        var buffer = context.channel.allocator.buffer(capacity: response.body.count)
        buffer.writeBytes(response.body)
        context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            context.close(promise: nil)
        }
    }
}
