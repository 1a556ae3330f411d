// A STUN server for Tailscale clients (RFC 5389 binding; tailscale/tailscale:net/stun, cmd/derper).

public import Logging
public import NIOCore
import NIOPosix
public import ServiceLifecycle
import STUNProtocol
import Synchronization
import WarrenPacket
#if canImport(Glibc)
import Glibc
#endif

/// Answers binding requests with the sender's address in XOR-MAPPED-ADDRESS, over IPv4 and IPv6.
/// A datagram that is not a binding request as Tailscale sends it (SOFTWARE "tailnode", then a
/// FINGERPRINT that matches) is dropped without an answer.
public final class STUNServer: Service, Sendable {
    private let addresses: [(host: String, port: Int)]
    private let group: any EventLoopGroup
    private let logger: Logger
    private let channels = Mutex<[any Channel]>([])
    let answered = Atomic<UInt64>(0)
    let dropped = Atomic<UInt64>(0)
    /// Whether requests must carry Tailscale's SOFTWARE attribute (Tailscale's server requires it).
    private let requireTailscaleSoftware: Bool

    /// - Parameter addresses: where to listen, e.g. `[("0.0.0.0", 3478), ("::", 3478)]`.
    public init(addresses: [(host: String, port: Int)], requireTailscaleSoftware: Bool = true,
                group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                logger: Logger = Logger(label: "warren.stun")) {
        self.addresses = addresses
        self.requireTailscaleSoftware = requireTailscaleSoftware
        self.group = group
        self.logger = logger
    }

    /// Requests answered and datagrams dropped so far.
    public var counts: (answered: UInt64, dropped: UInt64) {
        (answered.load(ordering: .relaxed), dropped.load(ordering: .relaxed))
    }

    /// Binds every address; returns the bound addresses (port 0 picks a free one).
    @discardableResult
    public func bind() async throws -> [SocketAddress] {
        var bound: [any Channel] = []
        do {
            for (host, port) in addresses {
                let channel = try await DatagramBootstrap(group: group)
                    .channelOption(.socketOption(.so_reuseaddr), value: 1)
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(STUNHandler(server: self))
                        }
                    }
                    .bind(host: host, port: port).get()
                bound.append(channel)
            }
        } catch {
            for channel in bound { channel.close(promise: nil) }
            throw error
        }
        channels.withLock { $0 += bound }
        let local = bound.compactMap(\.localAddress)
        logger.info("STUN listening", metadata: ["addresses": "\(local.map { "\($0)" })"])
        return local
    }

    public func run() async throws {
        if channels.withLock({ $0.isEmpty }) { try await bind() }
        let all = channels.withLock { $0 }
        await withTaskCancellationOrGracefulShutdownHandler {
            for channel in all { try? await channel.closeFuture.get() }
        } onCancelOrGracefulShutdown: {
            self.close()
        }
    }

    public func close() {
        for channel in channels.withLock({ $0 }) { channel.close(promise: nil) }
    }

    /// The answer to one datagram from `address`, or nil to drop it.
    func answer(_ datagram: ByteBuffer, from address: SocketAddress) -> [UInt8]? {
        guard let ip = address.derpIPAddress, let port = address.port,
              let transactionID = try? STUNBinding.parseRequest(datagram.readableBytesView, requireTailscaleSoftware: requireTailscaleSoftware),
              let response = try? STUNBinding.response(transactionID: transactionID, address: ip, port: UInt16(clamping: port))
        else { return nil }
        return response
    }
}

private final class STUNHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    private let server: STUNServer

    init(server: STUNServer) { self.server = server }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        guard let response = server.answer(envelope.data, from: envelope.remoteAddress) else {
            server.dropped.add(1, ordering: .relaxed)
            return
        }
        server.answered.add(1, ordering: .relaxed)
        let buffer = context.channel.allocator.buffer(bytes: response)
        context.writeAndFlush(wrapOutboundOut(AddressedEnvelope(remoteAddress: envelope.remoteAddress, data: buffer)), promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A failed send (ICMP unreachable and the like) must not stop the server.
    }
}

extension IPAddress {
    /// ::ffff:a.b.c.d as a.b.c.d (a dual-stack socket reports IPv4 senders that way).
    var unmappedIPv4: IPAddress {
        if case .v6(let hi, let lo) = self, hi == 0, lo >> 32 == 0xFFFF { return .v4(UInt32(truncatingIfNeeded: lo)) }
        return self
    }
}

extension SocketAddress {
    /// The address part as Warren's IPAddress (IPv4-mapped IPv6 unmapped), or nil for Unix sockets.
    var derpIPAddress: IPAddress? {
        switch self {
        case .v4(let address):
            var raw = address.address.sin_addr
            return withUnsafeBytes(of: &raw) { IPAddress(bytes: $0) }
        case .v6(let address):
            var raw = address.address.sin6_addr
            return withUnsafeBytes(of: &raw) { IPAddress(bytes: $0) }?.unmappedIPv4
        case .unixDomainSocket:
            return nil
        }
    }
}
