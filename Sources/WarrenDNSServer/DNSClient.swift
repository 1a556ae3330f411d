// One DNS exchange with a server over UDP or TCP: what the forwarder, `warren dns query` and the
// tests use. Each UDP exchange has its own connected socket (a random source port, and the kernel
// drops datagrams from anyone but the server); a response must carry the query's ID.

import NIOCore
import NIOHTTP1
import NIOPosix
import WarrenDNS
import WarrenPacket

/// How a DNS message travels.
public enum DNSTransport: String, Sendable {
    case udp
    case tcp
}

/// Sends single DNS queries and returns the responses.
public struct DNSClient: Sendable {
    public var group: any EventLoopGroup
    /// SO_MARK for the client's sockets (Linux), so that an exit node's policy routing never takes
    /// them into the tunnel.
    public var socketMark: UInt32?
    /// The time allowed for one exchange (connection included).
    public var timeout: TimeAmount
    /// The largest response read over TCP.
    public var maximumTCPResponseSize: Int = 65535

    public init(group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, socketMark: UInt32? = nil,
                timeout: TimeAmount = .seconds(5)) {
        self.group = group
        self.socketMark = socketMark
        self.timeout = timeout
    }

    /// Sends `message` and decodes the response.
    public func query(_ message: DNSMessage, server: SocketAddress, over transport: DNSTransport = .udp) async throws -> DNSMessage {
        let response = try await exchange(try message.encoded(), with: server, over: transport)
        return try DNSMessage(bytes: response)
    }

    /// Sends the octets of a query and returns the octets of the first response with its ID (the
    /// QR bit set). Throws `DNSServerError.timeout` when none comes in time.
    public func exchange(_ query: [UInt8], with server: SocketAddress, over transport: DNSTransport,
                         timeout: TimeAmount? = nil) async throws -> [UInt8] {
        guard query.count >= 12 else { throw DNSDecodingError.truncated }
        let id = UInt16(query[0]) << 8 | UInt16(query[1])
        let limit = timeout ?? self.timeout
        switch transport {
        case .udp: return try await exchangeUDP(query, id: id, server: server, timeout: limit)
        case .tcp: return try await exchangeTCP(query, id: id, server: server, timeout: limit)
        }
    }

    private func exchangeUDP(_ query: [UInt8], id: UInt16, server: SocketAddress, timeout: TimeAmount) async throws -> [UInt8] {
        let loop = group.next()
        let promise = loop.makePromise(of: [UInt8].self)
        let local = try SocketAddress(ipAddress: server.protocol == .inet6 ? "::" : "0.0.0.0", port: 0)
        let channel: Channel
        do {
            channel = try await DatagramBootstrap(group: loop)
                .socketMark(socketMark)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(DatagramUnwrapper())
                        try channel.pipeline.syncOperations.addHandler(ResponseCollector(id: id, promise: promise))
                    }
                }
                .bind(to: local)
                .get()
        } catch {
            promise.fail(error)
            throw error
        }
        do {
            try await channel.connect(to: server).get()
        } catch {
            promise.fail(error)
            try? await channel.close()
            throw error
        }
        let timer = loop.scheduleTask(in: timeout) { promise.fail(DNSServerError.timeout) }
        var buffer = channel.allocator.buffer(capacity: query.count)
        buffer.writeBytes(query)
        channel.writeAndFlush(buffer, promise: nil)
        defer {
            timer.cancel()
            channel.close(promise: nil)
        }
        return try await promise.futureResult.get()
    }

    private func exchangeTCP(_ query: [UInt8], id: UInt16, server: SocketAddress, timeout: TimeAmount) async throws -> [UInt8] {
        let maximum = maximumTCPResponseSize
        return try await exchangeOverStream(server: server, timeout: timeout) { pipeline, promise in
            try pipeline.addHandler(ByteToMessageHandler(DNSTCPFrameDecoder(maximumLength: maximum)))
            try pipeline.addHandler(ResponseCollector(id: id, promise: promise))
        } send: { channel in
            var buffer = channel.allocator.buffer(capacity: query.count + 2)
            buffer.writeDNSFrame(query)
            channel.writeAndFlush(buffer, promise: nil)
        }
    }

    /// Connects to `server` (with the socket mark), lets `pipeline` add the handlers that complete the
    /// promise with the answer, sends with `send`, and waits for the answer or `timeout`; the
    /// connection is closed afterwards.
    func exchangeOverStream(
        server: SocketAddress, timeout: TimeAmount,
        pipeline: @escaping @Sendable (ChannelPipeline.SynchronousOperations, EventLoopPromise<[UInt8]>) throws -> Void,
        send: @escaping @Sendable (any Channel) -> Void
    ) async throws -> [UInt8] {
        let loop = group.next()
        let promise = loop.makePromise(of: [UInt8].self)
        let timer = loop.scheduleTask(in: timeout) { promise.fail(DNSServerError.timeout) }
        let connecting = ClientBootstrap(group: loop)
            .socketMark(socketMark)
            .connectTimeout(timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try pipeline(channel.pipeline.syncOperations, promise) }
            }
            .connect(to: server)
        connecting.whenFailure { promise.fail($0) }
        connecting.whenSuccess { channel in send(channel) }
        defer {
            timer.cancel()
            connecting.whenSuccess { channel in channel.close(promise: nil) }
        }
        return try await promise.futureResult.get()
    }
}

/// Completes the promise with the first message that answers the query's ID.
private final class ResponseCollector: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let id: UInt16
    let promise: EventLoopPromise<[UInt8]>

    init(id: UInt16, promise: EventLoopPromise<[UInt8]>) {
        self.id = id
        self.promise = promise
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        guard buffer.readableBytes >= 12,
              let responseID = buffer.getInteger(at: buffer.readerIndex, as: UInt16.self),
              let flags = buffer.getInteger(at: buffer.readerIndex + 2, as: UInt8.self),
              responseID == id, flags & 0x80 != 0 else { return }  // not ours: ignore
        promise.succeed(Array(buffer.readableBytesView))
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(DNSServerError.connectionClosed)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // UDP: ICMP port unreachable and the like end the exchange at once.
        promise.fail(error)
        context.close(promise: nil)
    }
}

/// Passes on the payloads of datagrams (the socket is connected: only the server's arrive).
private final class DatagramUnwrapper: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias InboundOut = ByteBuffer

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireChannelRead(wrapInboundOut(unwrapInboundIn(data).data))
    }
}

// MARK: DNS over plain HTTP

extension DNSClient {
    /// Sends the query as the body of an HTTP/1.1 POST (application/dns-message, RFC 8484's wire format) to
    /// `server` at `path` and returns the response body: how a client asks an exit node's PeerAPI. The
    /// answer must carry the query's ID and be at most `maximumTCPResponseSize` octets.
    public func exchangeHTTP(_ query: [UInt8], with server: SocketAddress, path: String, timeout: TimeAmount? = nil) async throws -> [UInt8] {
        guard query.count >= 12 else { throw DNSDecodingError.truncated }
        let id = UInt16(query[0]) << 8 | UInt16(query[1])
        let maximum = maximumTCPResponseSize
        let host = server.protocol == .inet6 ? "[\(server.ipAddress ?? "")]:\(server.port ?? 80)" : "\(server.ipAddress ?? ""):\(server.port ?? 80)"
        return try await exchangeOverStream(server: server, timeout: timeout ?? self.timeout) { pipeline, promise in
            try pipeline.addHTTPClientHandlers()
            try pipeline.addHandler(HTTPAnswerCollector(id: id, maximum: maximum, promise: promise))
        } send: { channel in
            var headers = HTTPHeaders()
            headers.add(name: "Host", value: host)
            headers.add(name: "Content-Type", value: "application/dns-message")
            headers.add(name: "Accept", value: "application/dns-message")
            headers.add(name: "Content-Length", value: String(query.count))
            let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: path, headers: headers)
            channel.write(HTTPClientRequestPart.head(head), promise: nil)
            channel.write(HTTPClientRequestPart.body(.byteBuffer(channel.allocator.buffer(bytes: query))), promise: nil)
            channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        }
    }
}

/// Collects one HTTP response: a 200 of application/dns-message whose body answers the query's ID.
private final class HTTPAnswerCollector: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    let id: UInt16
    let maximum: Int
    let promise: EventLoopPromise<[UInt8]>
    private var body: [UInt8] = []
    private var status: HTTPResponseStatus?

    init(id: UInt16, maximum: Int, promise: EventLoopPromise<[UInt8]>) {
        self.id = id
        self.maximum = maximum
        self.promise = promise
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            status = head.status
        case .body(var buffer):
            guard body.count + buffer.readableBytes <= maximum else {
                promise.fail(DNSServerError.httpFailure("answer larger than \(maximum) octets"))
                context.close(promise: nil)
                return
            }
            body += buffer.readBytes(length: buffer.readableBytes) ?? []
        case .end:
            guard status == .ok else {
                promise.fail(DNSServerError.httpFailure("HTTP \(status?.code ?? 0)"))
                return
            }
            guard body.count >= 12, UInt16(body[0]) << 8 | UInt16(body[1]) == id, body[2] & 0x80 != 0 else {
                promise.fail(DNSServerError.httpFailure("the body is not an answer to the query"))
                return
            }
            promise.succeed(body)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(DNSServerError.httpFailure("connection closed before the answer"))
    }
}
