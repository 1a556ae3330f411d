// MagicDNS's listeners (UDP and TCP on 100.100.100.100 and fd7a:115c:a1e0::53, or wherever asked)
// and its forwarder. Local answers are computed and written on the listener's event loop; forwarded
// queries run as tasks, capped in number, each with a deadline, over fresh sockets that carry the
// node's SO_MARK.

import Foundation
import Logging
import NIOCore
import NIOPosix
import WarrenDNS
import WarrenPacket

/// The MagicDNS server: answers from a `MagicDNSResolver`, forwards the rest to upstreams.
public final class DNSServer: @unchecked Sendable {
    /// Limits and knobs.
    public struct Options: Sendable {
        /// SO_MARK of every forwarding socket (Linux); nil for none.
        public var socketMark: UInt32?
        /// The whole time a forwarded query may take, all upstreams together; then SERVFAIL.
        public var queryTimeout: TimeAmount = .seconds(5)
        /// The time one upstream gets before the next one is asked.
        public var upstreamTimeout: TimeAmount = .seconds(2)
        /// Forwarded queries in flight at once; queries beyond are dropped (the client retries).
        public var maximumInFlightForwards: Int = 256
        /// Open TCP connections from clients at once; more are closed at once.
        public var maximumTCPConnections: Int = 64
        /// A client's TCP connection with no traffic for this long is closed (RFC 7766 §6.2.3).
        public var tcpIdleTimeout: TimeAmount = .seconds(10)
        /// The largest query accepted (TCP frames above it close the connection; larger UDP
        /// datagrams are cut at the receive buffer and then fail to parse).
        public var maximumQuerySize: Int = 4096
        /// The largest UDP response sent, whatever a client advertises (RFC 9715's 1232 octets).
        public var udpResponseCap: Int = 1232
        /// Bind even when the address is not (yet) on an interface (Linux IP_FREEBIND and
        /// IPV6_FREEBIND), so that the server can start before the tunnel has 100.100.100.100.
        public var allowsNonlocalBind: Bool = false

        public init(socketMark: UInt32? = nil) { self.socketMark = socketMark }
    }

    private let lock = NSLock()
    private var resolver: MagicDNSResolver
    private var inFlight = 0
    private var tcpConnections: [ObjectIdentifier: Channel] = [:]
    private var listeners: [Channel] = []
    private var closed = false

    public let options: Options
    private let logger: Logger
    private let client: DNSClient
    /// For upstreams reached through the tunnel (an exit node's PeerAPI): no socket mark.
    private let tunnelClient: DNSClient
    private var bound: [(transport: DNSTransport, address: SocketAddress)] = []

    /// Where the server listens, one entry per socket (UDP and TCP for each address given), with
    /// the ports the system chose when port 0 was asked for.
    public var boundAddresses: [(transport: DNSTransport, address: SocketAddress)] {
        lock.withLock { bound }
    }

    private init(config: MagicDNSConfig, options: Options, group: any EventLoopGroup, logger: Logger) {
        resolver = MagicDNSResolver(config: config)
        self.options = options
        self.logger = logger
        client = DNSClient(group: group, socketMark: options.socketMark, timeout: options.upstreamTimeout)
        tunnelClient = DNSClient(group: group, socketMark: nil, timeout: options.upstreamTimeout)
    }

    /// Binds UDP and TCP on every address and starts answering. Port 0 takes a free UDP port and
    /// the same port for TCP. A failure closes what was bound and throws
    /// `DNSServerError.bindFailed` naming the address.
    public static func start(
        config: MagicDNSConfig, listeningOn addresses: [SocketAddress], options: Options = Options(),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "warren.dns")
    ) async throws -> DNSServer {
        let server = DNSServer(config: config, options: options, group: group, logger: logger)
        do {
            for address in addresses {
                try await server.bind(address, group: group)
            }
        } catch {
            await server.close()
            throw error
        }
        return server
    }

    private func bind(_ address: SocketAddress, group: any EventLoopGroup) async throws {
        let freebind = options.allowsNonlocalBind ? ChannelOptions.Types.SocketOption.freebind(for: address) : nil
        let udp: Channel
        do {
            var bootstrap = DatagramBootstrap(group: group)
            if let freebind { bootstrap = bootstrap.channelOption(freebind, value: 1) }
            udp = try await bootstrap
                .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: options.maximumQuerySize))
                .channelOption(.datagramVectorReadMessageCount, value: 8)
                .channelInitializer { [self] channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(UDPQueryHandler(server: self))
                    }
                }
                .bind(to: address).get()
        } catch {
            throw DNSServerError.bindFailed(address: "udp \(address)", reason: "\(error)")
        }
        register(listener: udp, transport: .udp)
        var tcpAddress = address
        if address.port == 0, let port = udp.localAddress?.port {
            tcpAddress.port = port
        }
        let idle = options.tcpIdleTimeout
        let maximum = options.maximumQuerySize
        let tcp: Channel
        do {
            var bootstrap = ServerBootstrap(group: group)
            if let freebind { bootstrap = bootstrap.serverChannelOption(freebind, value: 1) }
            tcp = try await bootstrap
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { [self] child in
                    guard admit(child) else { return child.close() }
                    return child.eventLoop.makeCompletedFuture {
                        let sync = child.pipeline.syncOperations
                        try sync.addHandler(IdleStateHandler(allTimeout: idle))
                        try sync.addHandler(ByteToMessageHandler(DNSTCPFrameDecoder(maximumLength: maximum)))
                        try sync.addHandler(TCPQueryHandler(server: self))
                    }
                }
                .bind(to: tcpAddress).get()
        } catch {
            throw DNSServerError.bindFailed(address: "tcp \(tcpAddress)", reason: "\(error)")
        }
        register(listener: tcp, transport: .tcp)
    }

    private func register(listener: Channel, transport: DNSTransport) {
        lock.lock()
        listeners.append(listener)
        if let local = listener.localAddress { bound.append((transport, local)) }
        lock.unlock()
    }

    /// The configuration in use.
    public var config: MagicDNSConfig {
        lock.lock()
        defer { lock.unlock() }
        return resolver.config
    }

    /// Replaces the configuration; queries already being forwarded finish under the old one.
    public func update(_ config: MagicDNSConfig) {
        let compiled = MagicDNSResolver(config: config)
        lock.lock()
        resolver = compiled
        lock.unlock()
    }

    /// Closes every listener and client connection. Forwards in flight end by their deadline and
    /// their answers are dropped.
    public func close() async {
        let channels: [Channel] = lock.withLock {
            closed = true
            defer {
                listeners = []
                tcpConnections = [:]
            }
            return listeners + Array(tcpConnections.values)
        }
        for channel in channels {
            try? await channel.close()
        }
    }

    // MARK: - Admission

    private func admit(_ child: Channel) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        guard !closed, tcpConnections.count < options.maximumTCPConnections else { return false }
        tcpConnections[ObjectIdentifier(child)] = child
        return true
    }

    fileprivate func forget(_ child: Channel) {
        lock.lock()
        tcpConnections[ObjectIdentifier(child)] = nil
        lock.unlock()
    }

    private func acquireForwardSlot() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        guard !closed, inFlight < options.maximumInFlightForwards else { return false }
        inFlight += 1
        return true
    }

    private func releaseForwardSlot() {
        lock.lock()
        inFlight -= 1
        lock.unlock()
    }

    /// Forwarded queries in flight now.
    public var forwardsInFlight: Int {
        lock.lock()
        defer { lock.unlock() }
        return inFlight
    }

    // MARK: - Queries

    /// Answers one query; `reply` gets the response's octets (at most once, maybe from another thread).
    fileprivate func handle(_ packet: ByteBuffer, transport: DNSTransport, reply: @escaping @Sendable ([UInt8]) -> Void) {
        lock.lock()
        let resolver = self.resolver
        lock.unlock()
        let (decision, query) = packet.withUnsafeReadableBytes { resolver.decide(packet: $0) }
        switch decision {
        case .drop:
            return
        case .answer(let response):
            let limit = query?.maximumResponseSize(overTCP: transport == .tcp, udpCap: options.udpResponseCap) ?? 512
            do {
                reply(try response.encoded(maximumSize: limit))
            } catch {
                logger.debug("cannot encode a local answer: \(error)")
            }
        case .forward(let upstreams):
            guard let query else { return }
            guard acquireForwardSlot() else {
                logger.debug("forward dropped: \(options.maximumInFlightForwards) in flight")
                return
            }
            Task {
                defer { self.releaseForwardSlot() }
                if let response = await self.forward(query, to: upstreams, clientOverTCP: transport == .tcp) {
                    reply(response)
                }
            }
        }
    }

    /// Asks the upstreams in turn and returns the response for the client (its ID restored, cut to
    /// its size); SERVFAIL when none answers in time.
    private func forward(_ query: DNSMessage, to upstreams: [DNSUpstream], clientOverTCP: Bool) async -> [UInt8]? {
        let clientLimit = query.maximumResponseSize(overTCP: clientOverTCP, udpCap: options.udpResponseCap)
        var upstreamQuery = query
        upstreamQuery.header.id = UInt16.random(in: 0...UInt16.max)
        if var edns = upstreamQuery.edns {
            edns.udpPayloadSize = UInt16(max(512, min(Int(edns.udpPayloadSize), options.udpResponseCap)))
            upstreamQuery.edns = edns
        }
        guard let queryBytes = try? upstreamQuery.encoded() else { return nil }
        let deadline = NIODeadline.now() + options.queryTimeout
        var fallback: [UInt8]?
        let config = self.config
        for upstream in upstreams {
            let remaining = deadline - .now()
            guard remaining > .zero else { break }
            let attempt = min(options.upstreamTimeout, remaining)
            guard let address = try? SocketAddress(ipAddress: upstream.address.description, port: Int(upstream.port)) else {
                continue
            }
            do {
                var response: [UInt8]
                // Upstreams inside the tunnel (an exit node's PeerAPI, a resolver on a tailnet or routed
                // address) are asked without the bypass mark.
                let client = config.isThroughTunnel(upstream) ? tunnelClient : self.client
                if let path = upstream.httpPath {
                    response = try await client.exchangeHTTP(queryBytes, with: address, path: path, timeout: attempt)
                } else {
                    response = try await client.exchange(queryBytes, with: address, over: clientOverTCP ? .tcp : .udp, timeout: attempt)
                }
                if !clientOverTCP, upstream.httpPath == nil, response[2] & 0x02 != 0 {
                    // Truncated over UDP: ask the same upstream over TCP (RFC 7766 §5).
                    let left = deadline - .now()
                    if left > .zero, let full = try? await client.exchange(queryBytes, with: address, over: .tcp, timeout: left) {
                        response = full
                    }
                }
                response[0] = UInt8(query.header.id >> 8)
                response[1] = UInt8(truncatingIfNeeded: query.header.id)
                if response.count > clientLimit {
                    response = truncated(response, query: query, limit: clientLimit)
                }
                let rcode = response[3] & 0x0F
                if rcode == DNSResponseCode.serverFailure.rawValue || rcode == DNSResponseCode.refused.rawValue {
                    // Another upstream may do better; keep this answer in case none does.
                    if fallback == nil { fallback = response }
                    continue
                }
                return response
            } catch {
                logger.debug("upstream \(upstream) failed for \(query.questions.first?.name.description ?? "?"): \(error)")
            }
        }
        if let fallback { return fallback }
        return try? resolver(for: query).reply(to: query, .serverFailure).encoded(maximumSize: clientLimit)
    }

    private func resolver(for query: DNSMessage) -> MagicDNSResolver {
        lock.lock()
        defer { lock.unlock() }
        return resolver
    }

    /// An upstream's response cut to `limit` octets: whole records dropped and TC set, or, when it
    /// does not parse, its header with TC and the question only.
    private func truncated(_ response: [UInt8], query: DNSMessage, limit: Int) -> [UInt8] {
        if let message = try? DNSMessage(bytes: response), let bytes = try? message.encoded(maximumSize: limit) {
            return bytes
        }
        var header = DNSHeader(peeking: response) ?? DNSHeader(id: query.header.id, isResponse: true)
        header.isTruncated = true
        if query.edns == nil, header.responseCode.rawValue > 15 { header.responseCode = .serverFailure }
        let stub = DNSMessage(header: header, questions: query.questions,
                              edns: query.edns.map { _ in EDNS(udpPayloadSize: MagicDNSResolver.advertisedUDPPayloadSize) })
        return (try? stub.encoded(maximumSize: limit)) ?? Array(response.prefix(12))
    }
}

/// Reads UDP queries and writes the answers back to their senders.
private final class UDPQueryHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>
    let server: DNSServer

    init(server: DNSServer) { self.server = server }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        let channel = context.channel
        let remote = envelope.remoteAddress
        server.handle(envelope.data, transport: .udp) { bytes in
            let buffer = channel.allocator.buffer(bytes: bytes)
            channel.writeAndFlush(AddressedEnvelope(remoteAddress: remote, data: buffer), promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // ICMP errors from earlier replies and the like: nothing to do, keep listening.
    }
}

/// Reads framed TCP queries on one client connection and writes framed answers.
private final class TCPQueryHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    let server: DNSServer

    init(server: DNSServer) { self.server = server }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let packet = unwrapInboundIn(data)
        let channel = context.channel
        server.handle(packet, transport: .tcp) { bytes in
            var buffer = channel.allocator.buffer(capacity: bytes.count + 2)
            buffer.writeDNSFrame(bytes)
            channel.writeAndFlush(buffer, promise: nil)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        server.forget(context.channel)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // A bad frame or a reset: the connection ends, the server goes on.
        context.close(promise: nil)
    }
}
