// One HTTP/2 stream inside the Noise channel: /machine/register, /machine/map and the small endpoints.
// The machine key is the one the Noise handshake authenticated.

import Logging
import NIOCore
import NIOHTTP1
import Synchronization
import TailscaleKeys
import WarrenControlTransport
import WarrenListenerGuard
import WarrenTailcfg

final class ControlStreamHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    /// Register and map requests are small JSON documents.
    static let maximumBodyLength = 4 << 20
    /// The most a map stream's writer hands its channel at once: it then waits for that write to complete (and for the
    /// channel to be writable) before it takes more, from the message or from the outbox. A reader that stops reading
    /// costs the server this much in its channel, while changes pile up (merged) in its outbox.
    static let maximumPieceBytes = 32 << 10

    private let engine: ControlEngine
    private let machineKey: MachinePublic
    private let logger: Logger
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var tooLarge = false
    private var task: Task<Void, Never>?
    /// The connection's budget for buffered bodies (nil: unbounded, for callers outside ts2021).
    private let budget: TS2021ConnectionBudget?
    /// Bytes of `body` taken from the budget and not yet given back (or handed to the task that decodes it).
    private var charged = 0
    /// The request was refused while its body was arriving: the rest of it is dropped.
    private var refused = false
    /// Wakes a map stream's writer when the stream's channel becomes writable again.
    private let writability = StreamWritability()

    init(engine: ControlEngine, machineKey: MachinePublic, logger: Logger, budget: TS2021ConnectionBudget? = nil) {
        self.engine = engine
        self.machineKey = machineKey
        self.logger = logger
        self.budget = budget
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            body = []
        case .body(var chunk):
            guard !refused else { return }
            if body.count + chunk.readableBytes > Self.maximumBodyLength {
                tooLarge = true
            } else if !tooLarge {
                if let budget {
                    switch budget.charge(chunk.readableBytes) {
                    case .taken:
                        charged += chunk.readableBytes
                    case .overConnection:
                        return refuse(context, status: .payloadTooLarge,
                                      text: "request bodies buffered on this connection exceed \(budget.limits.maxBufferedBodyBytes) bytes")
                    case .overProcess:
                        return refuse(context, status: .serviceUnavailable, text: "server busy; try again later")
                    }
                }
                body += chunk.readBytes(length: chunk.readableBytes) ?? []
            }
        case .end:
            guard let head, !refused else { return }
            dispatch(context: context, head: head)
        }
    }

    /// Answers now, drops what was buffered and resets the stream (the client need not send the rest).
    private func refuse(_ context: ChannelHandlerContext, status: HTTPResponseStatus, text: String) {
        refused = true
        body = []
        budget?.release(charged)
        charged = 0
        let channel = context.channel
        let bytes = Array(text.utf8)
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
        headers.add(name: "Content-Length", value: "\(bytes.count)")
        channel.write(HTTPServerResponsePart.head(HTTPResponseHead(version: .http2, status: status, headers: headers)), promise: nil)
        channel.write(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(bytes: bytes))), promise: nil)
        // Reset only once the answer is out (a reset drops what the stream has not written yet).
        channel.writeAndFlush(HTTPServerResponsePart.end(nil)).whenComplete { _ in channel.close(promise: nil) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        task?.cancel()
        writability.close()
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { writability.writable() }
        context.fireChannelWritabilityChanged()
    }

    /// An open stream keeps its connection from idling out (a map long poll, a register waiting for approval).
    func handlerAdded(context: ChannelHandlerContext) {
        if let connection = context.channel.parent { ConnectionTimeouts.streamOpened(on: connection) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        task?.cancel()
        writability.close()
        budget?.release(charged)
        charged = 0
        if let connection = context.channel.parent { ConnectionTimeouts.streamClosed(on: connection) }
    }

    private func dispatch(context: ChannelHandlerContext, head: HTTPRequestHead) {
        let channel = context.channel
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        // The body goes to the task that decodes it, which gives its bytes back to the budget once decoded (a map
        // stream's task lives as long as the stream: it must not keep the body, nor its charge).
        let body = RequestBody(self.body, charged: charged, budget: budget)
        self.body = []
        charged = 0
        if tooLarge {
            body.take()
            Self.respond(channel, status: .payloadTooLarge, text: "request body too large")
            return
        }
        let engine = engine
        let machineKey = machineKey
        let logger = logger
        let writability = writability
        if head.method == .POST && path == "/machine/register" {
            task = Task { await ControlStreamHandler.register(channel, body: body, engine: engine, machineKey: machineKey) }
        } else if head.method == .POST && path == "/machine/map" {
            task = Task {
                await ControlStreamHandler.map(channel, body: body, engine: engine, machineKey: machineKey, logger: logger,
                                               writability: writability)
            }
        } else if ["/machine/update-health", "/machine/audit-log", "/machine/set-device-attr"].contains(path) {
            // Accepted and not acted on yet.
            body.take()
            Self.respond(channel, status: .ok, text: "")
        } else {
            body.take()
            Self.respond(channel, status: .notFound, text: "not found: \(head.method) \(path)")
        }
    }

    private static func register(_ channel: Channel, body: RequestBody, engine: ControlEngine, machineKey: MachinePublic) async {
        let request: RegisterRequest
        do {
            request = try TailcfgJSON.decode(RegisterRequest.self, from: body.take())
        } catch {
            respond(channel, status: .badRequest, text: "malformed RegisterRequest: \(error)")
            return
        }
        // The client's address (the HTTP/2 stream's parent is the Noise/TCP connection): pending
        // interactive logins are capped per source.
        let remote = channel.parent?.remoteAddress ?? channel.remoteAddress
        let response = await engine.register(request, machineKey: machineKey, source: remote?.ipAddress)
        respondJSON(channel, response)
    }

    private static func map(_ channel: Channel, body: RequestBody, engine: ControlEngine, machineKey: MachinePublic,
                            logger: Logger, writability: StreamWritability) async {
        // The request and the reply (large values) live only in `openMap`'s frame; the long-lived part of this task, the
        // stream's writer, holds the outbox.
        guard let (stream, compress) = await openMap(channel, body: body, engine: engine, machineKey: machineKey) else { return }
        await serveStream(channel, stream: stream, compress: compress, logger: logger, metrics: engine.metrics,
                          encoder: engine.mapEncoder, writability: writability)
    }

    /// Decodes the request and asks the engine; answers a one-shot request (or a refusal) itself, and returns a stream's
    /// outbox with whether it is compressed.
    private static func openMap(_ channel: Channel, body: RequestBody, engine: ControlEngine,
                                machineKey: MachinePublic) async -> (MapSessionOutbox, Bool)? {
        let request: MapRequest
        do {
            request = try TailcfgJSON.decode(MapRequest.self, from: body.take())
        } catch {
            respond(channel, status: .badRequest, text: "malformed MapRequest: \(error)")
            return nil
        }
        let reply: ControlEngine.MapReply
        do {
            // In a task of its own: the engine's async frames (records and maps held across suspensions, tens of KB) are
            // then not kept in this task's allocator, which lives as long as the stream (a connected node's memory).
            reply = try await Task { try await engine.map(request, machineKey: machineKey) }.value
        } catch {
            let refusal = error as? MapRefusal ?? MapRefusal(status: 500, "map failed: \(error)")
            respond(channel, status: HTTPResponseStatus(statusCode: refusal.status), text: refusal.description)
            return nil
        }
        let compress = request.compress == "zstd"
        switch reply {
        case .stream(let stream): return (stream, compress)
        case .single(let response):
            serveSingle(channel, response: response, compress: compress, metrics: engine.metrics, encoder: engine.mapEncoder)
            return nil
        }
    }

    static func serveMap(_ channel: Channel, reply: ControlEngine.MapReply, compress: Bool, logger: Logger,
                         metrics: ControlMetrics, encoder: MapMessageEncoder, writability: StreamWritability) async {
        switch reply {
        case .single(let response):
            serveSingle(channel, response: response, compress: compress, metrics: metrics, encoder: encoder)
        case .stream(let stream):
            await serveStream(channel, stream: stream, compress: compress, logger: logger, metrics: metrics, encoder: encoder,
                              writability: writability)
        }
    }

    /// A one-shot map request's answer (nil: an empty body, for lite updates).
    static func serveSingle(_ channel: Channel, response: MapResponse?, compress: Bool, metrics: ControlMetrics,
                            encoder: MapMessageEncoder) {
        guard let response else { return respond(channel, status: .ok, text: "") }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/octet-stream")
        do {
            let framed = try MapStreamFraming.frame(response, compress: compress, encoder: encoder)
            metrics.record(mapBytesSent: framed.count)
            channel.write(HTTPServerResponsePart.head(HTTPResponseHead(version: .http2, status: .ok, headers: headers)),
                          promise: nil)
            channel.write(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(bytes: framed))), promise: nil)
            channel.writeAndFlush(HTTPServerResponsePart.end(nil), promise: nil)
        } catch {
            respond(channel, status: .internalServerError, text: "encoding failed: \(error)")
        }
    }

    /// A long poll: the outbox's messages until it ends, with back-pressure.
    static func serveStream(_ channel: Channel, stream: MapSessionOutbox, compress: Bool, logger: Logger,
                            metrics: ControlMetrics, encoder: MapMessageEncoder, writability: StreamWritability) async {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/octet-stream")
        // However the loop ends, the session ends with it (the engine forgets it and tells the peers).
        defer { stream.cancel() }
        do {
            try await channel.writeAndFlush(
                HTTPServerResponsePart.head(HTTPResponseHead(version: .http2, status: .ok, headers: headers))).get()
            // Pacing waits on the channel's event loop timer.
            let loop = channel.eventLoop
            let sleep: @Sendable (Duration) async throws -> Void = { duration in
                let (seconds, attoseconds) = duration.components
                let nanoseconds = seconds &* 1_000_000_000 &+ attoseconds / 1_000_000_000
                try await loop.scheduleTask(in: .nanoseconds(nanoseconds)) {}.futureResult.get()
            }
            // Back-pressure: nothing more is taken from the outbox (where changes merge) while the channel cannot
            // take it, and a message goes out in pieces of at most `maximumPieceBytes`, each written before the next
            // (a full map of 10,000 peers is over a megabyte, and every stream opening at once has one).
            let account = encoder.streams
            while true {
                try await writability.wait(channel)
                // The pieces only: a full map's plan (a reference per peer) is let go before the writing starts.
                guard let pieces = try await stream.nextOutgoing(sleep: sleep)?.pieces(compress: compress, encoder: encoder) else {
                    break
                }
                metrics.record(mapBytesSent: pieces.reduce(0) { $0 + $1.count })
                for piece in pieces {
                    var offset = 0
                    while offset < piece.count {
                        let end = min(piece.count, offset + maximumPieceBytes), size = end - offset
                        try await writability.wait(channel)
                        let buffer = ByteBuffer(bytes: piece[offset..<end])
                        account.handedOver(size, streamOutstanding: size)
                        defer { account.written(size) }
                        try await channel.writeAndFlush(HTTPServerResponsePart.body(.byteBuffer(buffer))).get()
                        offset = end
                    }
                }
            }
            // The engine ended the stream (logout, deletion): finish the response.
            try await channel.writeAndFlush(HTTPServerResponsePart.end(nil)).get()
        } catch {
            logger.debug("map stream ended", metadata: ["reason": "\(error)"])
            channel.close(promise: nil)
        }
    }

    static func respondJSON<T: Encodable>(_ channel: Channel, _ value: T) {
        do {
            let json = try TailcfgJSON.encode(value)
            respond(channel, status: .ok, bytes: json, contentType: "application/json")
        } catch {
            respond(channel, status: .internalServerError, text: "encoding failed: \(error)")
        }
    }

    static func respond(_ channel: Channel, status: HTTPResponseStatus, text: String) {
        respond(channel, status: status, bytes: Array(text.utf8), contentType: "text/plain; charset=utf-8")
    }

    static func respond(_ channel: Channel, status: HTTPResponseStatus, bytes: [UInt8], contentType: String) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: "\(bytes.count)")
        channel.write(HTTPServerResponsePart.head(HTTPResponseHead(version: .http2, status: status, headers: headers)),
                      promise: nil)
        if !bytes.isEmpty {
            channel.write(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(bytes: bytes))), promise: nil)
        }
        channel.writeAndFlush(HTTPServerResponsePart.end(nil), promise: nil)
    }
}

/// A request body on its way from the stream handler to the task that decodes it: ``take()`` hands the bytes over
/// once, forgets them and gives their charge back to the connection's budget.
final class RequestBody: Sendable {
    private let state: Mutex<(bytes: [UInt8], charged: Int)>
    private let budget: TS2021ConnectionBudget?

    init(_ bytes: [UInt8], charged: Int, budget: TS2021ConnectionBudget?) {
        state = Mutex((bytes, charged))
        self.budget = budget
    }

    @discardableResult
    func take() -> [UInt8] {
        let (bytes, charged) = state.withLock { s -> ([UInt8], Int) in
            defer { s = ([], 0) }
            return s
        }
        budget?.release(charged)
        return bytes
    }

    deinit { budget?.release(state.withLock { $0.charged }) }
}

/// What the map stream writers have handed to their channels and the channels have not written yet: a writer waits for
/// each write to complete (and for its channel to be writable) before it hands over more, so this is at most
/// ``ControlStreamHandler/maximumPieceBytes`` per stream whatever its reader does. Counted for the benchmark's memory
/// account and for the test that a reader that stops reading costs the server a bounded amount.
public final class MapStreamWriterAccount: Sendable {
    private struct State {
        var buffered = 0
        var peakStream = 0
        var peakTotal = 0
    }
    private let state = Mutex(State())

    public init() {}

    /// Bytes handed over and not written yet, all streams.
    public var bufferedBytes: Int { state.withLock { $0.buffered } }
    /// The most one stream had handed over and not written at once.
    public var peakStreamBytes: Int { state.withLock { $0.peakStream } }
    /// The most all streams together had handed over and not written at once.
    public var peakTotalBytes: Int { state.withLock { $0.peakTotal } }

    func handedOver(_ bytes: Int, streamOutstanding: Int) {
        state.withLock { s in
            s.buffered += bytes
            s.peakTotal = max(s.peakTotal, s.buffered)
            s.peakStream = max(s.peakStream, streamOutstanding)
        }
    }

    func written(_ bytes: Int) {
        state.withLock { $0.buffered -= bytes }
    }
}

/// Lets a map stream's writer (a task) wait until the stream's channel is writable: its handler is told by NIO
/// (`channelWritabilityChanged`). The waiters are kept and woken on the channel's event loop only.
final class StreamWritability: @unchecked Sendable {
    private var waiters: [EventLoopPromise<Void>] = []
    private var closed = false

    /// Returns when the channel is writable; throws once the stream is gone.
    func wait(_ channel: Channel) async throws {
        if channel.isWritable { return }
        try await channel.eventLoop.flatSubmit { () -> EventLoopFuture<Void> in
            if channel.isWritable { return channel.eventLoop.makeSucceededVoidFuture() }
            if self.closed { return channel.eventLoop.makeFailedFuture(ChannelError.ioOnClosedChannel) }
            let promise = channel.eventLoop.makePromise(of: Void.self)
            self.waiters.append(promise)
            return promise.futureResult
        }.get()
    }

    /// Writers waiting now (tests).
    var waiting: Int { waiters.count }

    /// On the event loop: the channel became writable.
    func writable() {
        let woken = waiters
        waiters = []
        for promise in woken { promise.succeed() }
    }

    /// On the event loop: the stream is gone.
    func close() {
        closed = true
        let woken = waiters
        waiters = []
        for promise in woken { promise.fail(ChannelError.ioOnClosedChannel) }
    }
}
