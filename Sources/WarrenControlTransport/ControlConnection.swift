// The client side of ts2021 (tailscale/tailscale:control/controlhttp/client.go, control/ts2021):
//
//   GET /key?v=<capver>            plain HTTP/1.1 (or HTTPS): the server's Noise key
//   POST /ts2021 + Upgrade          with X-Tailscale-Handshake: base64(101-byte Noise IK initiation)
//   101, then 51 bytes              the Noise response; from here on everything is Noise records
//   [early payload]                 optional: FF FF FF 'T' 'S', 4-byte BE length, JSON (EarlyNoise)
//   HTTP/2 with prior knowledge     one stream per request: POST /machine/register, /machine/map, ...
//
// One ControlConnection is one TCP connection; a caller that loses it makes a new one.

import Foundation
import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import NIOSSL
import TailscaleControlProtocol
import TailscaleKeys
import WarrenTailcfg

/// The answer to one request over the Noise channel: the status, then the body as it arrives. The body
/// finishes when the response ends or the connection dies.
public struct ControlHTTPResponse: Sendable {
    public var status: Int
    public var headers: [(name: String, value: String)]
    public var body: AsyncStream<[UInt8]>
    private let stream: (any Channel)?

    public init(status: Int, headers: [(name: String, value: String)] = [], body: AsyncStream<[UInt8]>,
                stream: (any Channel)? = nil) {
        self.status = status
        self.headers = headers
        self.body = body
        self.stream = stream
    }

    /// The first header named `name` (case-insensitive).
    public func header(_ name: String) -> String? {
        headers.first { $0.name.caseInsensitiveCompare(name) == .orderedSame }?.value
    }

    /// The whole body, however long.
    public func collect() async -> [UInt8] {
        var all = [UInt8]()
        for await chunk in body { all += chunk }
        return all
    }

    /// The whole body; throws (and resets the stream) past `maximumLength` bytes.
    public func collect(maximumLength: Int) async throws -> [UInt8] {
        var all = [UInt8]()
        for await chunk in body {
            all += chunk
            guard all.count <= maximumLength else {
                cancel()
                throw ControlTransportError("response body exceeds \(maximumLength) bytes")
            }
        }
        return all
    }

    /// Resets the HTTP/2 stream (the connection stays).
    public func cancel() { stream?.close(promise: nil) }
}

public final class ControlConnection: @unchecked Sendable {
    // Immutable after init: the channel and its multiplexer are used from any task.
    public let endpoint: ControlEndpoint
    /// The Noise protocol version the connection was opened with (the client's capability version).
    public let protocolVersion: UInt16
    private let channel: any Channel
    private let multiplexer: NIOHTTP2Handler.StreamMultiplexer
    private let early: EventLoopFuture<[UInt8]?>

    private init(endpoint: ControlEndpoint, protocolVersion: UInt16, channel: any Channel,
                 multiplexer: NIOHTTP2Handler.StreamMultiplexer, early: EventLoopFuture<[UInt8]?>) {
        self.endpoint = endpoint
        self.protocolVersion = protocolVersion
        self.channel = channel
        self.multiplexer = multiplexer
        self.early = early
    }

    // MARK: Key discovery

    /// `GET /key?v=<version>`: the server's Noise key (and its legacy key).
    public static func fetchServerKey(_ endpoint: ControlEndpoint, capabilityVersion: UInt16,
                                      timeout: Duration = .seconds(30)) async throws -> OverTLSPublicKeyResponse {
        let request = "GET /key?v=\(capabilityVersion) HTTP/1.1\r\nHost: \(endpoint.hostHeader)\r\n"
            + "User-Agent: warren\r\nConnection: close\r\n\r\n"
        let bytes = try await rawHTTP(endpoint, request: Array(request.utf8), timeout: timeout)
        let response = try HTTP1Response(parsing: bytes)
        guard response.status == 200 else {
            throw ControlTransportError("GET /key: HTTP \(response.status): \(String(decoding: response.body.prefix(200), as: UTF8.self))")
        }
        return try TailcfgJSON.decode(OverTLSPublicKeyResponse.self, from: response.body)
    }

    /// Sends `request` on a new connection and returns every byte the server sent until it closed (or
    /// until `timeout`: then throws).
    public static func rawHTTP(_ endpoint: ControlEndpoint, request: [UInt8], timeout: Duration = .seconds(30),
                               maximumLength: Int = 16 << 20) async throws -> [UInt8] {
        let (stream, continuation) = AsyncStream<[UInt8]>.makeStream()
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .socketMark(endpoint.socketMark)
            .connectTimeout(.seconds(10))
            .channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    try endpoint.addTLS(to: ch.pipeline.syncOperations)
                    try ch.pipeline.syncOperations.addHandler(ByteCollector(continuation))
                }
            }
            .connect(host: endpoint.host, port: endpoint.port).get()
        let timer = channel.eventLoop.scheduleTask(in: timeAmount(timeout)) { channel.close(promise: nil) }
        defer { timer.cancel() }
        try await channel.writeAndFlush(ByteBuffer(bytes: request))
        var all = [UInt8]()
        for await chunk in stream {
            all += chunk
            if all.count > maximumLength {
                channel.close(promise: nil)
                throw ControlTransportError("response exceeds \(maximumLength) bytes")
            }
        }
        return all
    }

    // MARK: The Noise channel

    /// Connects, upgrades to ts2021 with `machineKey`, and starts HTTP/2. `controlKey` is the server's Noise
    /// key from ``fetchServerKey(_:capabilityVersion:timeout:)``.
    public static func connect(to endpoint: ControlEndpoint, machineKey: MachinePrivate, controlKey: MachinePublic,
                               protocolVersion: UInt16, timeout: Duration = .seconds(30),
                               group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> ControlConnection {
        var generator = SystemRandomNumberGenerator()
        let handshake = try ControlClientHandshake(machineKey: machineKey, controlKey: controlKey,
                                                   protocolVersion: protocolVersion,
                                                   ephemeral: MachinePrivate.generate(using: &generator))
        let loop = group.next()
        let ready = loop.makePromise(of: NIOHTTP2Handler.StreamMultiplexer.self)
        let early = loop.makePromise(of: [UInt8]?.self)
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: loop)
                .socketMark(endpoint.socketMark)
                .connectTimeout(.seconds(10))
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { ch in
                    ch.eventLoop.makeCompletedFuture {
                        try endpoint.addTLS(to: ch.pipeline.syncOperations)
                        try ch.pipeline.syncOperations.addHandler(UpgradeReader(handshake: handshake, ready: ready, early: early))
                    }
                }
                .connect(host: endpoint.host, port: endpoint.port).get()
        } catch {
            ready.fail(error)
            early.succeed(nil)
            throw error
        }
        let timer = channel.eventLoop.scheduleTask(in: timeAmount(timeout)) {
            ready.fail(ControlTransportError("ts2021 upgrade timed out"))
            channel.close(promise: nil)
        }
        let request = "POST /ts2021 HTTP/1.1\r\nHost: \(endpoint.hostHeader)\r\nUser-Agent: warren\r\nContent-Length: 0\r\n"
            + "Connection: upgrade\r\nUpgrade: \(ControlWire.upgradeHeaderValue)\r\n"
            + "\(ControlWire.handshakeHeaderName): \(Data(handshake.initiation).base64EncodedString())\r\n\r\n"
        do {
            try await channel.writeAndFlush(ByteBuffer(string: request))
            let mux = try await ready.futureResult.get()
            timer.cancel()
            return ControlConnection(endpoint: endpoint, protocolVersion: protocolVersion, channel: channel,
                                     multiplexer: mux, early: early.futureResult)
        } catch {
            timer.cancel()
            try? await channel.close()
            throw error
        }
    }

    /// The early payload's JSON (an `EarlyNoise`), or nil when the server sent none. Waits until the first
    /// bytes after the handshake tell (the server's HTTP/2 SETTINGS come at once when there is none).
    public func earlyPayload() async -> [UInt8]? {
        (try? await early.get()) ?? nil
    }

    /// The early payload decoded, when there is one.
    public func earlyNoise() async -> EarlyNoise? {
        guard let json = await earlyPayload() else { return nil }
        return try? TailcfgJSON.decode(EarlyNoise.self, from: json)
    }

    public var isActive: Bool { channel.isActive }

    /// Completes when the connection is closed, by either side.
    public var closeFuture: EventLoopFuture<Void> { channel.closeFuture }

    /// Waits until the connection is closed.
    public func waitUntilClosed() async {
        try? await channel.closeFuture.get()
    }

    public func close() async {
        try? await channel.close()
    }

    /// POSTs `json` on a new HTTP/2 stream and returns once the response head arrived.
    public func post(_ path: String, json: [UInt8], headers extra: [(String, String)] = []) async throws -> ControlHTTPResponse {
        try await request(method: .POST, path, body: json, headers: extra)
    }

    /// A HEAD request (control's liveness pings).
    public func head(_ path: String) async throws -> ControlHTTPResponse {
        try await request(method: .HEAD, path, body: [])
    }

    public func request(method: HTTPMethod, _ path: String, body: [UInt8], headers extra: [(String, String)] = [])
        async throws -> ControlHTTPResponse {
        guard channel.isActive else { throw ControlTransportError("connection closed") }
        let (stream, continuation) = AsyncStream<[UInt8]>.makeStream()
        let headPromise = channel.eventLoop.makePromise(of: HTTPResponseHead.self)
        let streamPromise = channel.eventLoop.makePromise(of: Channel.self)
        multiplexer.createStreamChannel(promise: streamPromise) { ch in
            ch.eventLoop.makeCompletedFuture {
                try ch.pipeline.syncOperations.addHandlers([
                    HTTP2FramePayloadToHTTP1ClientCodec(httpProtocol: .http),
                    ResponseCollector(head: headPromise, continuation: continuation),
                ])
            }
        }
        let streamChannel: Channel
        do {
            streamChannel = try await streamPromise.futureResult.get()
        } catch {
            headPromise.fail(error)
            continuation.finish()
            throw ControlTransportError("cannot open an HTTP/2 stream: \(error)")
        }
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: endpoint.hostHeader)
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: "\(body.count)")
        for (name, value) in extra { headers.add(name: name, value: value) }
        streamChannel.write(HTTPClientRequestPart.head(HTTPRequestHead(version: .http2, method: method, uri: path, headers: headers)),
                            promise: nil)
        if !body.isEmpty {
            streamChannel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: body))), promise: nil)
        }
        do {
            try await streamChannel.writeAndFlush(HTTPClientRequestPart.end(nil)).get()
            let head = try await headPromise.futureResult.get()
            return ControlHTTPResponse(status: Int(head.status.code), headers: head.headers.map { ($0.name, $0.value) },
                                       body: stream, stream: streamChannel)
        } catch {
            streamChannel.close(promise: nil)
            throw ControlTransportError("\(method) \(path): \(error)")
        }
    }
}

func timeAmount(_ duration: Duration) -> TimeAmount {
    let (seconds, attoseconds) = duration.components
    return .nanoseconds(seconds &* 1_000_000_000 &+ attoseconds / 1_000_000_000)
}

// MARK: Pipeline handlers

/// Collects raw bytes until the connection closes.
final class ByteCollector: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let continuation: AsyncStream<[UInt8]>.Continuation
    init(_ continuation: AsyncStream<[UInt8]>.Continuation) { self.continuation = continuation }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var b = unwrapInboundIn(data)
        continuation.yield(b.readBytes(length: b.readableBytes) ?? [])
    }
    func channelInactive(context: ChannelHandlerContext) {
        continuation.finish()
        context.fireChannelInactive()
    }
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// Reads the 101 response and the 51-byte Noise response, then (on the event loop, before any later byte
/// can be lost) installs the record layer, the early-payload reader and HTTP/2, and removes itself.
final class UpgradeReader: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    static let maximumHeadLength = 16 << 10
    private var buffer: [UInt8] = []
    private var finished = false
    private let handshake: ControlClientHandshake
    private let ready: EventLoopPromise<NIOHTTP2Handler.StreamMultiplexer>
    private let early: EventLoopPromise<[UInt8]?>

    init(handshake: ControlClientHandshake, ready: EventLoopPromise<NIOHTTP2Handler.StreamMultiplexer>,
         early: EventLoopPromise<[UInt8]?>) {
        self.handshake = handshake
        self.ready = ready
        self.early = early
    }

    private func fail(_ context: ChannelHandlerContext, _ error: any Error) {
        finished = true
        ready.fail(error)
        early.succeed(nil)
        context.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !finished else { return }
        var chunk = unwrapInboundIn(data)
        buffer += chunk.readBytes(length: chunk.readableBytes) ?? []
        guard let end = buffer.firstRange(of: Array("\r\n\r\n".utf8)) else {
            if buffer.count > Self.maximumHeadLength { fail(context, ControlTransportError("upgrade response head too long")) }
            return
        }
        let head = String(decoding: buffer[..<end.lowerBound], as: UTF8.self)
        let status = head.split(separator: "\r\n").first.map(String.init) ?? ""
        let rest = Array(buffer[end.upperBound...])
        guard status.split(separator: " ").dropFirst().first == "101" else {
            let body = String(decoding: rest.prefix(200), as: UTF8.self)
            fail(context, ControlTransportError("ts2021 upgrade refused: \(status) \(body)"))
            return
        }
        guard rest.count >= ControlWire.responseLength else { return }
        finished = true
        do {
            let session = try handshake.receiveResponse(bytes: rest.prefix(ControlWire.responseLength))
            let pipeline = context.pipeline.syncOperations
            let records = NoiseRecordHandler(session: session)
            try pipeline.addHandler(records, position: .after(self))
            try pipeline.addHandler(EarlyPayloadReader(early: early), position: .after(records))
            let mux = try pipeline.configureHTTP2Pipeline(
                mode: .client, connectionConfiguration: ClientFlowControl.connection, streamConfiguration: ClientFlowControl.stream,
                position: .last
            ) { $0.eventLoop.makeSucceededVoidFuture() }
            let leftover = Array(rest.dropFirst(ControlWire.responseLength))
            if !leftover.isEmpty { context.fireChannelRead(wrapInboundOut(ByteBuffer(bytes: leftover))) }
            pipeline.removeHandler(self, promise: nil)
            ready.succeed(mux)
        } catch {
            fail(context, error)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !finished {
            finished = true
            ready.fail(ControlTransportError("connection closed during the ts2021 upgrade"))
            early.succeed(nil)
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !finished { fail(context, error) } else { context.fireErrorCaught(error) }
    }
}

/// Between the record layer and HTTP/2: takes the optional early payload off the front of the plaintext
/// (magic FF FF FF 'T' 'S', 4-byte BE length, JSON), hands everything else on, and removes itself.
final class EarlyPayloadReader: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    private var buffer: [UInt8] = []
    private var done = false
    private let early: EventLoopPromise<[UInt8]?>

    init(early: EventLoopPromise<[UInt8]?>) { self.early = early }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !done else {
            context.fireChannelRead(data)
            return
        }
        var chunk = unwrapInboundIn(data)
        buffer += chunk.readBytes(length: chunk.readableBytes) ?? []
        let payload: [UInt8]?
        let consumed: Int
        do {
            switch try ControlEarlyPayload.detect(buffer) {
            case .needMoreBytes:
                return
            case .absent:
                payload = nil
                consumed = 0
            case .present(let length):
                let total = ControlEarlyPayload.headerLength + length
                guard buffer.count >= total else { return }
                payload = Array(buffer[ControlEarlyPayload.headerLength..<total])
                consumed = total
            }
        } catch {
            done = true
            early.succeed(nil)
            context.close(promise: nil)
            return
        }
        done = true
        early.succeed(payload)
        let rest = Array(buffer.dropFirst(consumed))
        buffer = []
        if !rest.isEmpty { context.fireChannelRead(wrapInboundOut(context.channel.allocator.buffer(bytes: rest))) }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !done {
            done = true
            early.succeed(nil)
        }
        context.fireChannelInactive()
    }
}

/// Streams the body of one HTTP/2 response.
final class ResponseCollector: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    private let head: EventLoopPromise<HTTPResponseHead>
    private let continuation: AsyncStream<[UInt8]>.Continuation
    private var sawHead = false

    init(head: EventLoopPromise<HTTPResponseHead>, continuation: AsyncStream<[UInt8]>.Continuation) {
        self.head = head
        self.continuation = continuation
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            // 1xx heads are informational; the real one follows.
            guard h.status.code >= 200 else { return }
            sawHead = true
            head.succeed(h)
        case .body(var b):
            continuation.yield(b.readBytes(length: b.readableBytes) ?? [])
        case .end:
            continuation.finish()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !sawHead {
            sawHead = true
            head.fail(ControlTransportError("stream closed before a response"))
        }
        continuation.finish()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !sawHead {
            sawHead = true
            head.fail(error)
        }
        continuation.finish()
        context.close(promise: nil)
    }
}

// MARK: HTTP/1.1 responses (for /key)

/// A complete HTTP/1.1 response read until the server closed: status, headers, and the body by
/// Content-Length, chunked transfer coding, or to the end.
public struct HTTP1Response: Sendable {
    public var status: Int
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    public init(parsing bytes: [UInt8]) throws {
        guard let end = bytes.firstRange(of: Array("\r\n\r\n".utf8)) else { throw ControlTransportError("no HTTP response") }
        let lines = String(decoding: bytes[..<end.lowerBound], as: UTF8.self).split(separator: "\r\n", omittingEmptySubsequences: false)
        let statusParts = lines.first?.split(separator: " ") ?? []
        guard statusParts.count >= 2, statusParts[0].hasPrefix("HTTP/1."), let status = Int(statusParts[1]) else {
            throw ControlTransportError("bad HTTP status line: \(lines.first ?? "")")
        }
        self.status = status
        let parsed: [(name: String, value: String)] = lines.dropFirst().compactMap { line in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            return (String(line[..<colon]).trimmingCharacters(in: .whitespaces),
                    String(line[line.index(after: colon)...]).trimmingCharacters(in: .whitespaces))
        }
        headers = parsed
        let raw = Array(bytes[end.upperBound...])
        func header(_ name: String) -> String? {
            parsed.first { $0.name.caseInsensitiveCompare(name) == .orderedSame }?.value
        }
        if header("Transfer-Encoding")?.lowercased().contains("chunked") == true {
            body = try Self.dechunk(raw)
        } else if let length = header("Content-Length").flatMap(Int.init) {
            guard raw.count >= length else { throw ControlTransportError("HTTP body truncated") }
            body = Array(raw.prefix(length))
        } else {
            body = raw
        }
    }

    static func dechunk(_ raw: [UInt8]) throws -> [UInt8] {
        var out = [UInt8]()
        var i = 0
        while true {
            guard let lineEnd = raw[i...].firstRange(of: Array("\r\n".utf8)) else { throw ControlTransportError("bad chunked body") }
            let sizeText = String(decoding: raw[i..<lineEnd.lowerBound], as: UTF8.self).split(separator: ";").first ?? ""
            guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16), size >= 0 else {
                throw ControlTransportError("bad chunk size")
            }
            i = lineEnd.upperBound
            if size == 0 { return out }
            guard raw.count >= i + size else { throw ControlTransportError("chunked body truncated") }
            out += raw[i..<(i + size)]
            i += size + 2
            guard i <= raw.count else { throw ControlTransportError("chunked body truncated") }
        }
    }
}

extension ClientBootstrap {
    /// Sets SO_MARK on the connection's socket (Linux; elsewhere, and for nil, nothing).
    func socketMark(_ mark: UInt32?) -> ClientBootstrap {
        #if os(Linux)
        guard let mark else { return self }
        return channelOption(.socketOption(.init(rawValue: SO_MARK)), value: Int(CInt(bitPattern: mark)))
        #else
        return self
        #endif
    }
}

/// The HTTP/2 flow-control windows a control client announces: those of the official client, whose ts2021 connection is
/// Go's http2.Transport (golang.org/x/net/http2: `transportDefaultStreamFlow = 4 << 20` as the initial stream window,
/// `transportDefaultConnFlow = 1 << 30` for the connection). With NIOHTTP2's defaults (64 KiB each) a map stream's full
/// map, over a megabyte at 10,000 nodes, needed a WINDOW_UPDATE round trip per 32 KiB: a client that is slow to answer
/// (busy, or far away) held the server's writer back, and every update was a record for both sides to seal and open.
enum ClientFlowControl {
    static let streamWindow = 4 << 20
    static let connectionWindow = 1 << 30

    static var connection: NIOHTTP2Handler.ConnectionConfiguration {
        var c = NIOHTTP2Handler.ConnectionConfiguration()
        c.initialSettings = nioDefaultSettings.filter { $0.parameter != .initialWindowSize }
            + [HTTP2Setting(parameter: .initialWindowSize, value: streamWindow)]
        c.targetWindowSize = connectionWindow
        return c
    }

    static var stream: NIOHTTP2Handler.StreamConfiguration {
        var c = NIOHTTP2Handler.StreamConfiguration()
        c.targetWindowSize = streamWindow
        return c
    }
}
