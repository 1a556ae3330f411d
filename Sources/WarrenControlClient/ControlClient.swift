// A small ts2021 client for tests and the benchmark: GET /key, the POST /ts2021 upgrade, Noise records
// and HTTP/2 over them, register and map, over real sockets. (Written first inside the server's tests;
// moved here so that warren-control-bench can drive many of them.)

import Foundation
import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import NIOSSL
import TailscaleControlProtocol
import TailscaleKeys
import WarrenTailcfg
import WarrenControlServer

public struct ControlClientError: Error, CustomStringConvertible {
    public var description: String
    public init(description: String) { self.description = description }
}

/// Reads the 101 response and the 51-byte Noise response, then (on the event loop, before any later
/// byte can be lost) installs the record layer and HTTP/2 and removes itself.
final class UpgradeReader: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    private var buffer: [UInt8] = []
    private var finished = false
    private let handshake: ControlClientHandshake
    let done: EventLoopPromise<NIOHTTP2Handler.StreamMultiplexer>

    init(handshake: ControlClientHandshake, done: EventLoopPromise<NIOHTTP2Handler.StreamMultiplexer>) {
        self.handshake = handshake
        self.done = done
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !finished else { return }
        var chunk = unwrapInboundIn(data)
        buffer += chunk.readBytes(length: chunk.readableBytes) ?? []
        guard let end = buffer.firstRange(of: Array("\r\n\r\n".utf8)) else { return }
        let head = String(decoding: buffer[..<end.lowerBound], as: UTF8.self)
        let status = head.split(separator: "\r\n").first.map(String.init) ?? ""
        let rest = Array(buffer[end.upperBound...])
        guard status.contains(" 101 ") else {
            finished = true
            done.fail(ControlClientError(description: "upgrade refused: \(status)"))
            return
        }
        guard rest.count >= ControlWire.responseLength else { return }
        finished = true
        do {
            let session = try handshake.receiveResponse(bytes: rest.prefix(ControlWire.responseLength))
            let pipeline = context.pipeline.syncOperations
            try pipeline.addHandler(NoiseRecordHandler(session: session), position: .after(self))
            let mux = try pipeline.configureHTTP2Pipeline(
                mode: .client, connectionConfiguration: .init(), streamConfiguration: .init(), position: .last
            ) { $0.eventLoop.makeSucceededVoidFuture() }
            let leftover = Array(rest.dropFirst(ControlWire.responseLength))
            if !leftover.isEmpty { context.fireChannelRead(wrapInboundOut(ByteBuffer(bytes: leftover))) }
            pipeline.removeHandler(self, promise: nil)
            done.succeed(mux)
        } catch {
            done.fail(error)
        }
    }

    typealias InboundOut = ByteBuffer

    func channelInactive(context: ChannelHandlerContext) {
        if !finished { done.fail(ControlClientError(description: "connection closed during upgrade")) }
        finished = true
    }
}

/// Streams the body of one HTTP/2 response.
final class ResponseCollector: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    let head: EventLoopPromise<HTTPResponseHead>
    let continuation: AsyncStream<[UInt8]>.Continuation

    init(head: EventLoopPromise<HTTPResponseHead>, continuation: AsyncStream<[UInt8]>.Continuation) {
        self.head = head
        self.continuation = continuation
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h): head.succeed(h); sawHead = true
        case .body(var b): continuation.yield(b.readBytes(length: b.readableBytes) ?? [])
        case .end: continuation.finish()
        }
    }

    private var sawHead = false

    func channelInactive(context: ChannelHandlerContext) {
        if !sawHead { head.fail(ControlClientError(description: "stream closed")) }
        continuation.finish()
    }
}

public struct ControlHTTPResponse: Sendable {
    public var status: Int
    public var body: AsyncStream<[UInt8]>

    public func collect() async -> [UInt8] {
        var all = [UInt8]()
        for await chunk in body { all += chunk }
        return all
    }
}

public final class ControlClient: @unchecked Sendable {
    public let machineKey: MachinePrivate
    public let nodeKey: NodePrivate
    public let discoKey: DiscoPublic
    public let host: String
    public let port: Int
    /// HTTPS to the control server (nil: plain HTTP).
    public let tls: NIOSSLContext?
    private var channel: Channel?
    private var multiplexer: NIOHTTP2Handler.StreamMultiplexer?

    public init(host: String = "127.0.0.1", port: Int, seed: UInt64, tls: NIOSSLContext? = nil) {
        self.tls = tls
        var generator = SeededKeyGenerator(seed: seed)
        machineKey = MachinePrivate.generate(using: &generator)
        nodeKey = NodePrivate.generate(using: &generator)
        discoKey = DiscoPublic(raw: MachinePrivate.generate(using: &generator).publicKey.raw)
        self.host = host
        self.port = port
    }

    /// GET /key over HTTP/1.1, plain or with `tls` (URLSession-free: one raw request).
    public static func fetchKey(host: String, port: Int, tls: NIOSSLContext? = nil) async throws -> OverTLSPublicKeyResponse {
        let bytes = try await rawHTTP(host: host, port: port, tls: tls,
                                      request: "GET /key?v=130 HTTP/1.1\r\nHost: \(host)\r\nConnection: close\r\n\r\n")
        let text = String(decoding: bytes, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n") else { throw ControlClientError(description: "no HTTP response") }
        return try TailcfgJSON.decode(OverTLSPublicKeyResponse.self, from: Array(text[split.upperBound...].utf8))
    }

    /// Adds the TLS client handler first in the pipeline (no SNI for an IP literal).
    static func addTLS(_ tls: NIOSSLContext?, host: String, to pipeline: ChannelPipeline.SynchronousOperations) throws {
        guard let tls else { return }
        let isAddress = host.contains(":") || host.allSatisfy { $0.isNumber || $0 == "." }
        try pipeline.addHandler(NIOSSLClientHandler(context: tls, serverHostname: isAddress ? nil : host))
    }

    public static func rawHTTP(host: String, port: Int, tls: NIOSSLContext? = nil, request: String) async throws -> [UInt8] {
        let (stream, continuation) = AsyncStream<[UInt8]>.makeStream()
        final class Reader: ChannelInboundHandler {
            typealias InboundIn = ByteBuffer
            let continuation: AsyncStream<[UInt8]>.Continuation
            init(_ c: AsyncStream<[UInt8]>.Continuation) { continuation = c }
            func channelRead(context: ChannelHandlerContext, data: NIOAny) {
                var b = unwrapInboundIn(data)
                continuation.yield(b.readBytes(length: b.readableBytes) ?? [])
            }
            func channelInactive(context: ChannelHandlerContext) { continuation.finish() }
        }
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    try addTLS(tls, host: host, to: ch.pipeline.syncOperations)
                    try ch.pipeline.syncOperations.addHandler(Reader(continuation))
                }
            }
            .connect(host: host, port: port).get()
        try await channel.writeAndFlush(ByteBuffer(string: request))
        var all = [UInt8]()
        for await chunk in stream { all += chunk }
        return all
    }

    /// Opens the Noise channel and HTTP/2 on it.
    public func connect(controlKey: MachinePublic, version: UInt16 = 130) async throws {
        var generator = SystemRandomNumberGenerator()
        let handshake = try ControlClientHandshake(machineKey: machineKey, controlKey: controlKey, protocolVersion: version,
                                                   ephemeral: MachinePrivate.generate(using: &generator))
        let group = MultiThreadedEventLoopGroup.singleton
        let promise = group.next().makePromise(of: NIOHTTP2Handler.StreamMultiplexer.self)
        let tls = self.tls
        let host = self.host
        let channel = try await ClientBootstrap(group: group)
            .channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    try Self.addTLS(tls, host: host, to: ch.pipeline.syncOperations)
                    try ch.pipeline.syncOperations.addHandler(UpgradeReader(handshake: handshake, done: promise))
                }
            }
            .connect(host: host, port: port).get()
        let request = "POST /ts2021 HTTP/1.1\r\nHost: \(host)\r\nContent-Length: 0\r\nConnection: upgrade\r\n"
            + "Upgrade: tailscale-control-protocol\r\nX-Tailscale-Handshake: \(Data(handshake.initiation).base64EncodedString())\r\n\r\n"
        try await channel.writeAndFlush(ByteBuffer(string: request))
        let mux = try await promise.futureResult.get()
        self.channel = channel
        self.multiplexer = mux
    }

    public func post(_ path: String, json: [UInt8]) async throws -> ControlHTTPResponse {
        guard let multiplexer else { throw ControlClientError(description: "not connected") }
        let (stream, continuation) = AsyncStream<[UInt8]>.makeStream()
        guard let loop = channel?.eventLoop else { throw ControlClientError(description: "not connected") }
        let headPromise = loop.makePromise(of: HTTPResponseHead.self)
        let streamPromise = loop.makePromise(of: Channel.self)
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
            throw ControlClientError(description: "cannot open an HTTP/2 stream: \(error)")
        }
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: host)
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: "\(json.count)")
        streamChannel.write(HTTPClientRequestPart.head(HTTPRequestHead(version: .http2, method: .POST, uri: path, headers: headers)), promise: nil)
        streamChannel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: json))), promise: nil)
        try await streamChannel.writeAndFlush(HTTPClientRequestPart.end(nil)).get()
        let head = try await headPromise.futureResult.get()
        return ControlHTTPResponse(status: Int(head.status.code), body: stream)
    }

    public func registerRequest(authKey: String?, hostname: String) -> RegisterRequest {
        var request = RegisterRequest()
        request.version = 130
        request.nodeKey = nodeKey.publicKey
        if let authKey { request.auth = RegisterResponseAuth(authKey: authKey) }
        var info = HostinfoFields()
        info.hostname = hostname
        info.os = "linux"
        request.hostinfo = Hostinfo(info)
        return request
    }

    public func register(_ request: RegisterRequest) async throws -> RegisterResponse {
        let response = try await post("/machine/register", json: try TailcfgJSON.encode(request))
        guard response.status == 200 else { throw ControlClientError(description: "register: HTTP \(response.status)") }
        return try TailcfgJSON.decode(RegisterResponse.self, from: await response.collect())
    }

    public func mapRequest(stream: Bool, omitPeers: Bool = false, endpoints: [AddrPort]? = nil, compress: Bool = true) -> MapRequest {
        var request = MapRequest()
        request.version = 130
        request.nodeKey = nodeKey.publicKey
        request.discoKey = discoKey
        request.stream = stream
        request.omitPeers = omitPeers
        request.compress = compress ? "zstd" : nil
        request.endpoints = endpoints
        return request
    }

    /// Opens a map request and yields decoded messages.
    public func map(_ request: MapRequest) async throws -> (status: Int, messages: AsyncThrowingStream<MapResponse, Error>) {
        let (status, bodies) = try await mapBodies(request)
        let messages = AsyncThrowingStream<MapResponse, Error> { continuation in
            let task = Task {
                do {
                    for try await json in bodies { continuation.yield(try TailcfgJSON.decode(MapResponse.self, from: json)) }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
        return (status, messages)
    }

    /// Opens a map request and yields each message's JSON (unframed and decompressed, not decoded), for
    /// callers that look at a few fields of many large messages (the benchmark).
    public func mapBodies(_ request: MapRequest) async throws -> (status: Int, bodies: AsyncThrowingStream<[UInt8], Error>) {
        let response = try await post("/machine/map", json: try TailcfgJSON.encode(request))
        let compressed = request.compress == "zstd"
        let bodies = AsyncThrowingStream<[UInt8], Error> { continuation in
            let task = Task {
                var decoder = MapStreamDecoder()
                for await chunk in response.body {
                    decoder.append(chunk)
                    do {
                        while case .message(let body) = try decoder.parseStep() {
                            continuation.yield(compressed ? try Zstd.decompress(body, maximumSize: 64 << 20) : body)
                        }
                    } catch {
                        continuation.finish(throwing: error)
                        return
                    }
                }
                continuation.finish()
            }
            continuation.onTermination = { _ in task.cancel() }
        }
        return (response.status, bodies)
    }

    public func close() async {
        try? await channel?.close()
    }
}

/// Deterministic keys for tests and benchmarks (not for production).
public struct SeededKeyGenerator: RandomNumberGenerator {
    var state: UInt64
    public init(seed: UInt64) { state = seed &+ 0x9E37_79B9_7F4A_7C15 }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
