import Foundation
import HTTPTypes
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTPTypes
import NIOPosix
import ServiceLifecycle
import Synchronization
public import WarrenListenerGuard

/// The admin API's HTTP/1.1 listeners, on Hummingbird 2's HTTP/1 channel: on a Unix socket in the state directory
/// (mode 0600, so only its owner, root in production, can connect; requests there need no API key), and optionally on
/// TCP (API key required). One request per connection (`Connection: close`); bodies up to 1 MiB.
///
/// The listening sockets are bound here (not by Hummingbird's `Server`) so that each keeps the ListenerGuard's
/// server-side handlers (the connection cap, the accept back-off) and each connection its timers first in the
/// pipeline; every connection is then Hummingbird's `HTTP1Channel`, answering through `AdminAPI.handle` (the
/// router of AdminRouter.swift, the audit log, the metrics).
public final class AdminHTTPServer: Service, Sendable {
    private let listeners: [(channel: any Channel, transport: AdminTransport)]
    private let connections: Connections
    public let socketPath: String?
    /// The bounds of the listeners (the socket's first, then TCP's), with their counters.
    public let listenerGuards: [ListenerGuard]

    /// One request per connection: a few dozen at once, each read within seconds.
    public static let defaultLimits = ListenerLimits(maximumConnections: 64, handshakeTimeout: .seconds(15),
                                                     idleTimeout: .seconds(15))

    /// The TCP port actually bound (when 0 was asked for), if a TCP listener was started.
    public var tcpPort: Int? { listeners.first { $0.transport == .network }?.channel.localAddress?.port }

    private init(listeners: [(channel: any Channel, transport: AdminTransport)], socketPath: String?,
                 listenerGuards: [ListenerGuard], connections: Connections) {
        self.listenerGuards = listenerGuards
        self.listeners = listeners
        self.socketPath = socketPath
        self.connections = connections
    }

    /// Binds the listeners. A stale socket file left by a killed server is replaced; a socket that a running server
    /// answers on is not (`.conflict`-like error: another server owns the state directory).
    ///
    /// Each accepted connection is served by a task of its own, started by the connection's initializer as soon as
    /// Hummingbird's HTTP/1 channel wraps it. Hummingbird makes that wrapper without close-on-deinit, so a wrapper
    /// that is never served stops the process (NIO's "Deinited NIOAsyncWriter without calling finish()"). Handing
    /// connections to an accept loop through the server channel's async sequence left such a window: a connection
    /// set up while the listener was closing was dropped unserved (seen in AdminCLITests, where a second server's
    /// probe meets the first one stopping). Started from the initializer, every wrapper made is served.
    public static func start(
        api: AdminAPI, socketPath: String?, tcp: (host: String, port: Int)? = nil,
        limits: ListenerLimits = AdminHTTPServer.defaultLimits,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> AdminHTTPServer {
        var listeners: [(channel: any Channel, transport: AdminTransport)] = []
        var guards: [ListenerGuard] = []
        let connections = Connections()
        let logger = AdminAPI.logger
        let http = HTTP1Channel(
            responder: { request, writer, channel in
                let response = await answer(request, api: api, channel: channel)
                // One request per connection: Hummingbird's connection handler closes once this answer is written.
                channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
                try await writer.write(response: response.head, body: response.body)
            },
            configuration: HTTP1Channel.Configuration(additionalChannelHandlers: [
                // Moves the connection's timers from "request" to "serving" to "idle" (WarrenListenerGuard).
                HTTPPhaseObserver<HTTPRequestPart, HTTPResponsePart>(
                    isEnd: { if case .end = $0 { true } else { false } },
                    isResponseEnd: { if case .end = $0 { true } else { false } }),
            ]))
        func bootstrap(_ listenerGuard: ListenerGuard) -> ServerBootstrap {
            ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 64)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .serverChannelInitializer { listenerGuard.installOnServerChannel($0) }
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try listenerGuard.installConnectionHandlers(on: channel.pipeline.syncOperations)
                    }
                    .flatMap { http.setup(channel: channel, logger: logger) }
                    .map { wrapped in
                        // From here the wrapper exists: it is served (and so finished) whatever happens next.
                        connections.opened(channel)
                        Task {
                            await http.handle(value: wrapped, logger: logger)
                            connections.closed(channel)
                        }
                    }
                }
        }
        do {
            if let socketPath {
                if AdminClient.socketAnswers(path: socketPath) {
                    throw AdminClientError("another warren-control is already serving \(socketPath)")
                }
                let listenerGuard = ListenerGuard(name: "admin socket", limits: limits)
                guards.append(listenerGuard)
                let channel = try await bootstrap(listenerGuard)
                    .bind(unixDomainSocketPath: socketPath, cleanupExistingSocketFile: true).get()
                chmod(socketPath, 0o600)
                listeners.append((channel, .localSocket))
            }
            if let tcp {
                let listenerGuard = ListenerGuard(name: "admin", limits: limits)
                guards.append(listenerGuard)
                let channel = try await bootstrap(listenerGuard).bind(host: tcp.host, port: tcp.port).get()
                listeners.append((channel, .network))
            }
        } catch {
            for (listener, _) in listeners { try? await listener.close() }
            throw error
        }
        return AdminHTTPServer(listeners: listeners, socketPath: socketPath, listenerGuards: guards, connections: connections)
    }

    /// One request: its body read (at most 1 MiB, else 413 without keeping any of it), the caller named (the socket's
    /// peer credentials, for the audit log), then the API's answer, always with `Connection: close`.
    private static func answer(_ request: Request, api: AdminAPI, channel: any Channel) async -> (head: HTTPResponse, body: ResponseBody) {
        let transport: AdminTransport = channel.localAddress?.protocol == .unix ? .localSocket : .network
        var response: AdminResponse
        // A declared length over the limit is refused without reading the body.
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > AdminAPI.maximumBody {
            response = AdminAPI.errorResponse(413, "invalid", "request body larger than 1 MiB")
        } else {
            var body: [UInt8] = []
            var tooLarge = false
            do {
                for try await buffer in request.body {
                    // Once over the limit, nothing more is kept: the request is refused whole (413), never cut.
                    if tooLarge || body.count + buffer.readableBytes > AdminAPI.maximumBody {
                        tooLarge = true
                        body = []
                    } else {
                        body += buffer.readableBytesView
                    }
                }
            } catch {
                return (HTTPResponse(status: .badRequest, headerFields: [.connection: "close", .contentLength: "0"]), ResponseBody())
            }
            if tooLarge {
                response = AdminAPI.errorResponse(413, "invalid", "request body larger than 1 MiB")
            } else {
                let (path, query) = AdminRequest.splitTarget(request.head.path ?? "/")
                var adminRequest = AdminRequest(method: request.method.rawValue, path: path, query: query,
                                                authorization: request.headers[.authorization], body: body)
                // On the local socket, the peer's credentials (from the kernel) name who acted, for the audit log.
                if transport == .localSocket { adminRequest.peer = try? await peerCredentials(of: channel).get() }
                response = await api.handle(adminRequest, via: transport)
            }
        }
        var headers: HTTPFields = [.contentType: response.contentType, .contentLength: String(response.body.count), .connection: "close"]
        for (name, value) in response.headers.sorted(by: { $0.key < $1.key }) {
            if let field = HTTPField.Name(name) { headers[field] = value }
        }
        return (HTTPResponse(status: .init(code: response.status), headerFields: headers),
                ResponseBody(byteBuffer: ByteBuffer(bytes: response.body)))
    }

    /// Serves until graceful shutdown (or cancellation), then closes the listeners, lets each open connection finish
    /// the request it is reading or answering (idle ones close at once), and removes the socket file.
    public func run() async throws {
        await withGracefulShutdownHandler {
            await withTaskCancellationHandler {
                for (listener, _) in listeners { try? await listener.closeFuture.get() }
            } onCancel: {
                stopAccepting()
            }
        } onGracefulShutdown: {
            self.stopAccepting()
        }
        connections.quiesce()
        await connections.drained()
        if let socketPath { unlink(socketPath) }
    }

    /// Closes the listeners now.
    public func close() async {
        for (listener, _) in listeners { try? await listener.close() }
        connections.quiesce()
        if let socketPath { unlink(socketPath) }
    }

    /// Closes the listeners; connections finish the request they are reading or answering (one each), idle ones close.
    private func stopAccepting() {
        for (listener, _) in listeners { listener.close(promise: nil) }
        connections.quiesce()
    }
}

/// The open connections, told to finish their request and close when the server stops, and awaited then.
private final class Connections: Sendable {
    private struct State {
        var open: [ObjectIdentifier: any Channel] = [:]
        var waiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state = Mutex(State())

    func opened(_ channel: any Channel) { state.withLock { $0.open[ObjectIdentifier(channel)] = channel } }

    func closed(_ channel: any Channel) {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.open.removeValue(forKey: ObjectIdentifier(channel))
            guard s.open.isEmpty else { return [] }
            defer { s.waiters = [] }
            return s.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    func quiesce() {
        for channel in state.withLock({ Array($0.open.values) }) {
            channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
    }

    /// Returns once no connection is open.
    func drained() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.open.isEmpty { return true }
                s.waiters.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }
}

extension AdminHTTPServer {
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

}
