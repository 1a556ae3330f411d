// The relay on its own TCP listener, with TLS (or without, for tests behind a TLS terminator).

import Logging
public import NIOCore
import NIOHTTP1
import NIOPosix
public import NIOSSL
public import ServiceLifecycle
import Synchronization
public import WarrenListenerGuard

/// Accepts connections for a ``DERPServer``: TLS, then HTTP/1.1 with the DERP upgrade (also the
/// fast-start form), probes and `/generate_204`. A `Service`: ``run()`` serves until cancelled or asked to shut down gracefully,
/// then stops accepting and closes every connection.
public final class DERPListener: Service, Sendable {
    public let server: DERPServer
    private let host: String
    private let port: Int
    private let tls: NIOSSLContext?
    private let group: any EventLoopGroup
    /// The listener's connection cap, accept back-off and timers, with their counters.
    public let listenerGuard: ListenerGuard
    private let state = Mutex<State>(.idle)

    private enum State {
        case idle
        case bound(any Channel)
        case closed
    }

    /// - Parameters:
    ///   - tlsConfiguration: the server's TLS (``DERPCertificate/serverTLSConfiguration()``); nil
    ///     serves plain HTTP (only for tests or behind a TLS terminator).
    ///   - limits: connection cap and timers (none by default; accept back-off always). An upgraded connection
    ///     idles out after the server's ``DERPServerConfiguration/idleTimeout`` when the limits set any timer.
    public init(server: DERPServer, host: String, port: Int, tlsConfiguration: TLSConfiguration?,
                limits: ListenerLimits = .unlimited,
                group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) throws {
        self.listenerGuard = ListenerGuard(name: "DERP", limits: limits, logger: server.logger)
        self.server = server
        self.host = host
        self.port = port
        self.tls = try tlsConfiguration.map { try NIOSSLContext(configuration: $0) }
        self.group = group
    }

    /// Binds the listening socket; returns the bound address (port 0 picks a free port).
    @discardableResult
    public func bind() async throws -> SocketAddress {
        if case .bound(let channel) = state.withLock({ $0 }), let address = channel.localAddress { return address }
        let server = self.server
        let tls = self.tls
        let listenerGuard = self.listenerGuard
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { listenerGuard.installOnServerChannel($0) }
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try listenerGuard.installConnectionHandlers(on: sync)
                    if let tls { try sync.addHandler(NIOSSLServerHandler(context: tls)) }
                    try DERPHTTPHandler.install(on: sync, server: server)
                }
            }
            .bind(host: host, port: port).get()
        let keep = state.withLock { s -> Bool in
            guard case .idle = s else { return false }
            s = .bound(channel)
            return true
        }
        guard keep else {
            try? await channel.close()
            throw DERPListenerError.alreadyClosed
        }
        server.logger.info("DERP relay listening", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? "?")", "tls": "\(tls != nil)"])
        guard let address = channel.localAddress else { throw DERPListenerError.noLocalAddress }
        return address
    }

    /// The bound address, once ``bind()`` returned.
    public var localAddress: SocketAddress? {
        if case .bound(let channel) = state.withLock({ $0 }) { return channel.localAddress }
        return nil
    }

    public func run() async throws {
        try await bind()
        guard case .bound(let channel) = state.withLock({ $0 }) else { return }
        try await withTaskCancellationOrGracefulShutdownHandler {
            try await channel.closeFuture.get()
        } onCancelOrGracefulShutdown: {
            self.close()
        }
    }

    /// Stops accepting and closes every DERP connection.
    public func close() {
        let channel = state.withLock { s -> (any Channel)? in
            defer { s = .closed }
            if case .bound(let channel) = s { return channel }
            return nil
        }
        server.closeAllConnections()
        channel?.close(promise: nil)
    }
}

public enum DERPListenerError: Error, Hashable, Sendable {
    case alreadyClosed
    case noLocalAddress
}
