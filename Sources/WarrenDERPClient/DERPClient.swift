// A DERP client engine: TCP (+TLS), the HTTP upgrade, the login, then packets both ways.

public import DERPProtocol
public import NIOCore
import NIOPosix
#if os(Linux)
import Glibc
#endif
import NIOSSL
public import TailscaleKeys
public import WarrenDERPTransport

/// A logged-in connection to a DERP relay.
///
/// ```swift
/// let client = try await DERPClient.connect(to: .init(host: "127.0.0.1", port: 8443, trust: .pinned(pin)),
///                                           privateKey: key)
/// try await client.send([1, 2, 3], to: peer)
/// for try await frame in client.frames { ... }   // one consumer only
/// ```
///
/// Pings from the server are answered automatically; pongs that answer ``ping(timeout:)`` are
/// consumed, other frames arrive in ``frames``. Reading ``frames`` slowly slows the connection
/// down (back pressure), it never buffers without bound.
public final class DERPClient: Sendable {
    /// Where and how to connect.
    public struct Endpoint: Sendable, Hashable {
        public var host: String
        public var port: Int
        /// Nil speaks plain HTTP (a relay behind a TLS terminator, or tests).
        public var trust: DERPServerTrust?
        /// TLS server name (SNI); defaults to `host` unless that is an IP literal.
        public var serverName: String?

        public init(host: String, port: Int, trust: DERPServerTrust? = .system, serverName: String? = nil) {
            self.host = host
            self.port = port
            self.trust = trust
            self.serverName = serverName
        }
    }

    /// The frames the server sends, with back pressure: when the consumer falls behind, the
    /// connection stops reading.
    public typealias Frames = NIOAsyncSequenceProducer<DERPFrame, NIOAsyncSequenceProducerBackPressureStrategies.HighLowWatermark, DERPClientReadDemand>

    public let serverKey: NodePublic
    public let serverInfo: DERPServerInfo
    public let publicKey: NodePublic
    /// The underlying channel (for its close future, addresses, event loop).
    public let channel: any Channel
    /// Frames from the server (RecvPacket, PeerGone, PeerPresent, KeepAlive, Health, Restarting,
    /// unmatched Pong, unknown types). One iterator only; it ends when the connection closes, and
    /// dropping the iterator closes the connection.
    public let frames: Frames
    private let handler: NIOLoopBound<DERPClientConnectionHandler>

    private init(serverKey: NodePublic, serverInfo: DERPServerInfo, publicKey: NodePublic, channel: any Channel,
                 frames: Frames, handler: NIOLoopBound<DERPClientConnectionHandler>) {
        self.serverKey = serverKey
        self.serverInfo = serverInfo
        self.publicKey = publicKey
        self.channel = channel
        self.frames = frames
        self.handler = handler
    }

    /// Connects, upgrades and logs in.
    /// - Parameter loginTimeout: the whole connect + TLS + upgrade + login must finish in this time.
    public static func connect(to endpoint: Endpoint, privateKey: NodePrivate, info: DERPClientInfo = DERPClientInfo(canAckPings: true),
                               loginTimeout: TimeAmount = .seconds(10), socketMark: UInt32? = nil,
                               group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> DERPClient {
        let tls = try endpoint.trust.map { try NIOSSLContext(configuration: $0.clientTLSConfiguration()) }
        let trust = endpoint.trust
        let sniName = endpoint.serverName ?? (isIPLiteral(endpoint.host) ? nil : endpoint.host)
        let hostHeader = endpoint.port == 443 ? endpoint.host : "\(endpoint.host):\(endpoint.port)"
        var bootstrap = ClientBootstrap(group: group)
        #if os(Linux)
        // SO_MARK: a node's policy routing keeps marked connections out of its own tunnel.
        if let socketMark { bootstrap = bootstrap.channelOption(.socketOption(.init(rawValue: SO_MARK)), value: Int(CInt(bitPattern: socketMark))) }
        #endif
        let (channel, frames, login, handler) = try await bootstrap
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(loginTimeout)
            .connect(host: endpoint.host, port: endpoint.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if let tls {
                        if let verification = trust?.verificationCallback {
                            try sync.addHandler(NIOSSLClientHandler(context: tls, serverHostname: sniName, customVerificationCallback: verification))
                        } else {
                            try sync.addHandler(NIOSSLClientHandler(context: tls, serverHostname: sniName))
                        }
                    }
                    let produced = Frames.makeSequence(backPressureStrategy: .init(lowWatermark: 64, highWatermark: 256),
                                                       finishOnDeinit: true, delegate: DERPClientReadDemand(channel: channel))
                    let login = channel.eventLoop.makePromise(of: DERPClientConnectionHandler.Login.self)
                    let handler = DERPClientConnectionHandler(privateKey: privateKey, info: info, login: login, frames: produced.source)
                    try sync.addHandler(DERPClientUpgradeHandler(hostHeader: hostHeader))
                    try sync.addHandler(ByteToMessageHandler(DERPRawFrameDecoder()))
                    try sync.addHandler(handler)
                    let timeout = channel.eventLoop.scheduleTask(in: loginTimeout) {
                        login.fail(DERPClientError.loginTimedOut)
                        channel.close(promise: nil)
                    }
                    login.futureResult.whenComplete { _ in timeout.cancel() }
                    return (channel, produced.sequence, login.futureResult, NIOLoopBound(handler, eventLoop: channel.eventLoop))
                }
            }
        do {
            let result = try await login.get()
            return DERPClient(serverKey: result.serverKey, serverInfo: result.serverInfo, publicKey: privateKey.publicKey,
                              channel: channel, frames: frames, handler: handler)
        } catch {
            try? await channel.close()
            throw error
        }
    }

    /// Sends `packet` to `destination` through the relay (waits while the connection is backed up).
    public func send(_ packet: some Collection<UInt8>, to destination: NodePublic) async throws {
        try await channel.writeAndFlush(Self.sendPacketFrame(packet, to: destination, allocator: channel.allocator))
    }

    /// Sends frames built with ``sendPacketFrame(_:to:allocator:)`` with one flush; returns when
    /// the last is written to the socket.
    public func send(frames: [ByteBuffer]) async throws {
        guard let last = frames.last else { return }
        for frame in frames.dropLast() { channel.write(frame, promise: nil) }
        try await channel.writeAndFlush(last)
    }

    /// A SendPacket frame.
    public static func sendPacketFrame(_ packet: some Collection<UInt8>, to destination: NodePublic,
                                       allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: DERPWire.frameHeaderLength + DERPWire.keyLength + packet.count)
        buffer.writeDERPFrameHeader(type: .sendPacket, length: DERPWire.keyLength + packet.count)
        buffer.writeDERPNodeKey(destination)
        buffer.writeBytes(packet)
        return buffer
    }

    /// Any frame (NotePreferred, raw frames in tests).
    public func send(_ frame: DERPFrame) async throws {
        try await channel.writeAndFlush(channel.allocator.buffer(bytes: try frame.encoded()))
    }

    /// Raw bytes, unframed (tests of the relay's error handling).
    public func sendRaw(_ bytes: [UInt8]) async throws {
        try await channel.writeAndFlush(channel.allocator.buffer(bytes: bytes))
    }

    /// Tells the relay whether it is this node's home (NotePreferred).
    public func notePreferred(_ preferred: Bool) async throws {
        try await send(.notePreferred(preferred))
    }

    /// Sends a Ping with random data and waits for the matching Pong; returns the round-trip time.
    public func ping(timeout: TimeAmount = .seconds(5)) async throws -> Duration {
        var generator = SystemRandomNumberGenerator()
        let data = (0..<8).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let handler = self.handler
        let channel = self.channel
        let start = ContinuousClock.now
        try await channel.eventLoop.flatSubmit { () -> EventLoopFuture<Void> in
            guard channel.isActive else { return channel.eventLoop.makeFailedFuture(DERPClientError.connectionClosed) }
            let promise = channel.eventLoop.makePromise(of: Void.self)
            handler.value.awaitPong(data, promise: promise)
            let timer = channel.eventLoop.scheduleTask(in: timeout) { promise.fail(DERPClientError.pingTimedOut) }
            promise.futureResult.whenComplete { _ in timer.cancel() }
            // A Ping always encodes (8 bytes).
            let frame = (try? DERPFrame.ping(data).encoded()) ?? []
            channel.writeAndFlush(channel.allocator.buffer(bytes: frame), promise: nil)
            return promise.futureResult
        }.get()
        return ContinuousClock.now - start
    }

    /// Closes the connection.
    public func close() async {
        try? await channel.close()
    }
}

/// Turns reading back on when the consumer of ``DERPClient/frames`` wants more; closes the
/// connection when the consumer goes away.
public struct DERPClientReadDemand: NIOAsyncSequenceProducerDelegate {
    let channel: any Channel

    public func produceMore() {
        channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
    }

    public func didTerminate() {
        channel.close(promise: nil)
    }
}

public enum DERPClientError: Error, Hashable, Sendable, CustomStringConvertible {
    case upgradeRefused(statusLine: String)
    case responseHeaderTooLarge
    case loginTimedOut
    case pingTimedOut
    case connectionClosed

    public var description: String {
        switch self {
        case .upgradeRefused(let line): return "the DERP server did not upgrade: \(line)"
        case .responseHeaderTooLarge: return "the DERP server's HTTP response header is too large"
        case .loginTimedOut: return "the DERP login timed out"
        case .pingTimedOut: return "no DERP pong in time"
        case .connectionClosed: return "the DERP connection closed"
        }
    }
}

private func isIPLiteral(_ host: String) -> Bool {
    host.contains(":") || host.split(separator: ".").count == 4 && host.allSatisfy { $0.isNumber || $0 == "." }
}
