// Issue 14, HTTP/2 inside one ts2021 connection (in process): the server advertises and enforces a stream limit
// (streams beyond it get REFUSED_STREAM, even from a client that never acknowledges the server's SETTINGS), a
// connection's buffered request bodies stay within their budget (the stream that crosses it is answered 413 and
// reset), slots and bytes come back when streams finish, and other connections keep working throughout.

import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import Synchronization
import TailscaleControlProtocol
import TailscaleKeys
import WarrenControlClient
import WarrenControlStore
import WarrenControlTransport
import WarrenListenerGuard
import XCTest
@testable import WarrenControlServer

/// A ts2021 session driven frame by frame: the upgrade and Noise handshake, then HTTP/2 frames sealed by hand and
/// the server's frames opened and split. Used where a well-behaved HTTP/2 client would not do what is tested.
final class RawTS2021Session: @unchecked Sendable {
    let connection: ListenerHardeningTests.RawConnection
    private var sender: ControlRecordSender
    private var receiver: ControlRecordReceiver
    private var consumed: Int
    private var plaintext: [UInt8] = []

    struct Frame {
        var type: UInt8
        var flags: UInt8
        var stream: UInt32
        var payload: [UInt8]
    }

    private init(connection: ListenerHardeningTests.RawConnection, session: ControlSession, consumed: Int) {
        self.connection = connection
        sender = session.sender
        receiver = session.receiver
        self.consumed = consumed
    }

    static func open(port: Int, controlKey: MachinePublic) async throws -> RawTS2021Session {
        var generator = SystemRandomNumberGenerator()
        let handshake = try ControlClientHandshake(machineKey: MachinePrivate.generate(using: &generator), controlKey: controlKey,
                                                   protocolVersion: 130, ephemeral: MachinePrivate.generate(using: &generator))
        let connection = try await ListenerHardeningTests.RawConnection.open(port: port)
        try await connection.send("POST /ts2021 HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: tailscale-control-protocol\r\n"
                                  + "X-Tailscale-Handshake: \(Data(handshake.initiation).base64EncodedString())\r\n\r\n")
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            let bytes = connection.received.withLock { $0 }
            if let end = bytes.firstRange(of: Array("\r\n\r\n".utf8)), bytes.count >= end.upperBound + ControlWire.responseLength {
                guard connection.text.hasPrefix("HTTP/1.1 101") else { throw XCTSkipFailure("no 101: \(connection.text.prefix(200))") }
                let response = Array(bytes[end.upperBound..<(end.upperBound + ControlWire.responseLength)])
                let session = try handshake.receiveResponse(bytes: response)
                return RawTS2021Session(connection: connection, session: session, consumed: end.upperBound + ControlWire.responseLength)
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw XCTSkipFailure("ts2021 handshake did not complete")
    }

    func send(_ frames: [UInt8]) async throws {
        try await connection.channel.writeAndFlush(ByteBuffer(bytes: try sender.seal(frames)))
    }

    /// The client preface and an empty SETTINGS (the server's SETTINGS are not acknowledged).
    static let preface: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8) + frame(type: 0x4, flags: 0, stream: 0, [])

    static func frame(type: UInt8, flags: UInt8, stream: UInt32, _ payload: [UInt8]) -> [UInt8] {
        let length = payload.count
        return [UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF), type, flags,
                UInt8(stream >> 24 & 0x7F), UInt8(stream >> 16 & 0xFF), UInt8(stream >> 8 & 0xFF), UInt8(stream & 0xFF)] + payload
    }

    /// HEADERS (END_HEADERS, and END_STREAM when `end`) for `POST path`, HPACK literals without Huffman coding.
    static func postHeaders(stream: UInt32, path: String, end: Bool) -> [UInt8] {
        var block: [UInt8] = [0x83, 0x86]  // :method POST, :scheme http (static table)
        block += [0x04, UInt8(path.utf8.count)] + Array(path.utf8)  // :path, literal value
        block += [0x01, 1, UInt8(ascii: "x")]  // :authority x
        return frame(type: 0x1, flags: end ? 0x5 : 0x4, stream: stream, block)
    }

    /// Every complete frame the server sent since the last call.
    func receivedFrames() throws -> [Frame] {
        let bytes = connection.received.withLock { Array($0[consumed...]) }
        consumed += bytes.count
        receiver.append(bytes)
        plaintext += try receiver.drainPlaintext()
        var frames: [Frame] = []
        while plaintext.count >= 9 {
            let length = Int(plaintext[0]) << 16 | Int(plaintext[1]) << 8 | Int(plaintext[2])
            guard plaintext.count >= 9 + length else { break }
            let stream = plaintext[5..<9].reduce(UInt32(0)) { $0 << 8 | UInt32($1) } & 0x7FFF_FFFF
            frames.append(Frame(type: plaintext[3], flags: plaintext[4], stream: stream, payload: Array(plaintext[9..<(9 + length)])))
            plaintext.removeFirst(9 + length)
        }
        return frames
    }
}

/// The client side of ts2021 with NIOHTTP2's multiplexer exposed, so that a test can write a request body without
/// ending it (the shared client always ends its requests).
final class StreamingTS2021Client: @unchecked Sendable {
    let channel: any Channel
    let multiplexer: NIOHTTP2Handler.StreamMultiplexer

    private init(channel: any Channel, multiplexer: NIOHTTP2Handler.StreamMultiplexer) {
        self.channel = channel
        self.multiplexer = multiplexer
    }

    static func connect(port: Int, controlKey: MachinePublic) async throws -> StreamingTS2021Client {
        var generator = SystemRandomNumberGenerator()
        let handshake = try ControlClientHandshake(machineKey: MachinePrivate.generate(using: &generator), controlKey: controlKey,
                                                   protocolVersion: 130, ephemeral: MachinePrivate.generate(using: &generator))
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let ready = loop.makePromise(of: NIOHTTP2Handler.StreamMultiplexer.self)
        let channel = try await ClientBootstrap(group: loop)
            .channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture { try ch.pipeline.syncOperations.addHandler(Upgrade(handshake: handshake, ready: ready)) }
            }
            .connect(host: "127.0.0.1", port: port).get()
        try await channel.writeAndFlush(ByteBuffer(string:
            "POST /ts2021 HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: tailscale-control-protocol\r\n"
            + "X-Tailscale-Handshake: \(Data(handshake.initiation).base64EncodedString())\r\n\r\n"))
        let timer = loop.scheduleTask(in: .seconds(10)) { ready.fail(XCTSkipFailure("ts2021 upgrade timed out")) }
        defer { timer.cancel() }
        return StreamingTS2021Client(channel: channel, multiplexer: try await ready.futureResult.get())
    }

    /// A stream that sent `POST path` and `bodyLength` bytes of body, without ending it. Its response (status and body
    /// text) and its end come through `response`.
    func openPost(_ path: String, bodyLength: Int, response: StreamResponse) async throws -> any Channel {
        let promise = channel.eventLoop.makePromise(of: Channel.self)
        multiplexer.createStreamChannel(promise: promise) { ch in
            ch.eventLoop.makeCompletedFuture {
                try ch.pipeline.syncOperations.addHandlers([HTTP2FramePayloadToHTTP1ClientCodec(httpProtocol: .http), response])
            }
        }
        let stream = try await promise.futureResult.get()
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: "x")
        stream.write(HTTPClientRequestPart.head(HTTPRequestHead(version: .http2, method: .POST, uri: path, headers: headers)), promise: nil)
        var left = bodyLength
        while left > 0 {
            let count = min(left, 64 << 10)
            stream.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(repeating: UInt8(ascii: "a"), count: count))), promise: nil)
            left -= count
        }
        stream.flush()
        return stream
    }

    final class StreamResponse: ChannelInboundHandler, Sendable {
        typealias InboundIn = HTTPClientResponsePart
        private let state = Mutex<(status: Int?, body: [UInt8], closed: Bool)>((nil, [], false))
        var status: Int? { state.withLock { $0.status } }
        var text: String { String(decoding: state.withLock { $0.body }, as: UTF8.self) }
        var closed: Bool { state.withLock { $0.closed } }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head): state.withLock { $0.status = Int(head.status.code) }
            case .body(var chunk): state.withLock { $0.body += chunk.readBytes(length: chunk.readableBytes) ?? [] }
            case .end: break
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            state.withLock { $0.closed = true }
            context.fireChannelInactive()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
    }

    /// Reads the 101 and the Noise response, then puts the record layer and HTTP/2 in its place.
    private final class Upgrade: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = ByteBuffer
        typealias InboundOut = ByteBuffer
        private var buffer: [UInt8] = []
        private var done = false
        private let handshake: ControlClientHandshake
        private let ready: EventLoopPromise<NIOHTTP2Handler.StreamMultiplexer>

        init(handshake: ControlClientHandshake, ready: EventLoopPromise<NIOHTTP2Handler.StreamMultiplexer>) {
            self.handshake = handshake
            self.ready = ready
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard !done else { return context.fireChannelRead(data) }
            var chunk = unwrapInboundIn(data)
            buffer += chunk.readBytes(length: chunk.readableBytes) ?? []
            guard let end = buffer.firstRange(of: Array("\r\n\r\n".utf8)), buffer.count >= end.upperBound + ControlWire.responseLength else {
                return
            }
            done = true
            do {
                let session = try handshake.receiveResponse(bytes: buffer[end.upperBound..<(end.upperBound + ControlWire.responseLength)])
                let pipeline = context.pipeline.syncOperations
                let records = NoiseRecordHandler(session: session)
                try pipeline.addHandler(records, position: .after(self))
                let mux = try pipeline.configureHTTP2Pipeline(mode: .client, connectionConfiguration: .init(),
                                                              streamConfiguration: .init(), position: .last) {
                    $0.eventLoop.makeSucceededVoidFuture()
                }
                let leftover = Array(buffer[(end.upperBound + ControlWire.responseLength)...])
                if !leftover.isEmpty { context.fireChannelRead(wrapInboundOut(ByteBuffer(bytes: leftover))) }
                pipeline.removeHandler(self, promise: nil)
                ready.succeed(mux)
            } catch {
                ready.fail(error)
                context.close(promise: nil)
            }
        }
    }
}

final class HardeningTS2021StreamTests: XCTestCase {
    private func startServer() async throws -> (ControlHTTPServer, MachinePrivate) {
        let configuration = ControlConfiguration(serverURL: "http://127.0.0.1:0")
        let store = MemoryControlStore()
        let directory = try StoreDirectory(store: store, ipv4Prefix: configuration.ipv4Prefix, ipv6Prefix: configuration.ipv6Prefix)
        var logger = Logger(label: "test")
        logger.logLevel = .notice
        let engine = ControlEngine(configuration: configuration, directory: directory, logger: logger)
        try await engine.load()
        var generator = SystemRandomNumberGenerator()
        let key = MachinePrivate.generate(using: &generator)
        let server = try await ControlHTTPServer.start(
            engine: engine, controlKey: key, options: ControlServerOptions(host: "127.0.0.1", port: 0), logger: logger)
        return (server, key)
    }

    /// Another connection, a well-behaved client: its request is answered.
    private func assertAnotherConnectionWorks(port: Int, controlKey: MachinePublic, file: StaticString = #filePath,
                                              line: UInt = #line) async throws {
        let client = ControlClient(port: port, seed: UInt64.random(in: 1...UInt64.max))
        try await client.connect(controlKey: controlKey)
        let response = try await client.post("/machine/update-health", json: Array("{}".utf8))
        XCTAssertEqual(response.status, 200, "another connection was not served", file: file, line: line)
        await client.close()
    }

    private func eventually(seconds: Int = 10, _ what: String, _ condition: () throws -> Bool,
                            file: StaticString = #filePath, line: UInt = #line) async throws {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while ContinuousClock.now < deadline {
            if try condition() { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        XCTFail("never: \(what)", file: file, line: line)
    }

    /// A client that opens 64 streams at once, never acknowledging the server's SETTINGS (so that NIOHTTP2 itself
    /// would still allow 100): the server advertises 32, and refuses exactly the streams beyond 32 with
    /// RST_STREAM(REFUSED_STREAM); the connection stays open, a finished stream frees its slot, and another
    /// connection is served meanwhile.
    func testStreamsBeyondTheLimitAreRefusedEvenWithoutASettingsAck() async throws {
        let (server, key) = try await startServer()
        defer { Task { await server.close() } }
        let port = try XCTUnwrap(server.port)
        let limit = TS2021Limits.standard.maxConcurrentStreams
        XCTAssertEqual(limit, 32)
        let session = try await RawTS2021Session.open(port: port, controlKey: key.publicKey)
        let opened = 2 * limit
        var frames = RawTS2021Session.preface
        for index in 0..<opened {
            frames += RawTS2021Session.postHeaders(stream: UInt32(2 * index + 1), path: "/machine/update-health", end: false)
        }
        try await session.send(frames)

        var received: [RawTS2021Session.Frame] = []
        try await eventually("the streams over the limit are reset") {
            received += try session.receivedFrames()
            return received.filter { $0.type == 0x3 }.count >= opened - limit
        }
        // SETTINGS_MAX_CONCURRENT_STREAMS (0x3) as advertised.
        let settings = try XCTUnwrap(received.first { $0.type == 0x4 && $0.flags & 0x1 == 0 })
        var advertised: UInt32?
        for offset in stride(from: 0, to: settings.payload.count - 5, by: 6)
        where settings.payload[offset] == 0 && settings.payload[offset + 1] == 0x3 {
            advertised = settings.payload[(offset + 2)..<(offset + 6)].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        }
        XCTAssertEqual(advertised, UInt32(limit))
        let resets = received.filter { $0.type == 0x3 }
        XCTAssertEqual(Set(resets.map(\.stream)), Set((limit..<opened).map { UInt32(2 * $0 + 1) }), "the wrong streams were refused")
        for reset in resets { XCTAssertEqual(reset.payload, [0, 0, 0, 0x7], "not REFUSED_STREAM") }
        XCTAssertFalse(received.contains { $0.type == 0x7 }, "the connection got a GOAWAY")
        XCTAssertTrue(session.connection.channel.isActive)
        try await assertAnotherConnectionWorks(port: port, controlKey: key.publicKey)

        // The first stream finishes: it is answered (HEADERS on stream 1), and a new stream takes its slot.
        try await session.send(RawTS2021Session.frame(type: 0x0, flags: 0x1, stream: 1, Array("{}".utf8)))
        try await eventually("stream 1 is answered") {
            received += try session.receivedFrames()
            return received.contains { $0.type == 0x1 && $0.stream == 1 }
        }
        let next = UInt32(2 * opened + 1)
        try await session.send(RawTS2021Session.postHeaders(stream: next, path: "/machine/update-health", end: true))
        try await eventually("the new stream is answered") {
            received += try session.receivedFrames()
            return received.contains { $0.type == 0x1 && $0.stream == next }
        }
        XCTAssertFalse(received.contains { $0.type == 0x3 && $0.stream == next }, "a freed slot was not given to a new stream")
        try? await session.connection.channel.close()
    }

    /// Three streams each sending 3.5 MiB (under the 4 MiB a body may have) without ending: the third crosses the
    /// connection's 8 MiB budget and is answered 413 and reset; what the server buffers never passes the budget; the
    /// other two finish normally, every byte is given back, and another connection is served meanwhile.
    func testBodiesBeyondTheConnectionBudgetAreRefusedAndTheServerStaysBounded() async throws {
        let (server, key) = try await startServer()
        defer { Task { await server.close() } }
        let port = try XCTUnwrap(server.port)
        let budget = TS2021Limits.standard.maxBufferedBodyBytes
        XCTAssertEqual(budget, 8 << 20)
        let process = TS2021ProcessBodyBudget.shared
        XCTAssertEqual(process.buffered, 0)
        process.resetHighWater()
        let client = try await StreamingTS2021Client.connect(port: port, controlKey: key.publicKey)
        let each = 7 << 19  // 3.5 MiB
        var streams: [(any Channel, StreamingTS2021Client.StreamResponse)] = []
        for _ in 0..<3 {
            let response = StreamingTS2021Client.StreamResponse()
            streams.append((try await client.openPost("/machine/update-health", bodyLength: each, response: response), response))
            // Each stream's bytes reach the server before the next one starts, so that the third is the one refused.
            let sent = streams.count
            try await eventually("stream \(sent)'s body buffered or refused") {
                process.buffered >= min(sent, 2) * each || streams.last!.1.status != nil
            }
        }
        try await eventually("the stream over the budget is answered and reset") { streams[2].1.closed }
        XCTAssertEqual(streams[2].1.status, 413)
        XCTAssertTrue(streams[2].1.text.contains("\(budget)"), streams[2].1.text)
        XCTAssertNil(streams[0].1.status)
        XCTAssertNil(streams[1].1.status)
        XCTAssertLessThanOrEqual(process.highWater, budget, "the server buffered more than the connection's budget")
        XCTAssertEqual(process.buffered, 2 * each)
        XCTAssertTrue(client.channel.isActive, "the connection was closed")
        try await assertAnotherConnectionWorks(port: port, controlKey: key.publicKey)

        // The first two end: answered 200, and the budget is whole again.
        for (stream, _) in streams.prefix(2) { try await stream.writeAndFlush(HTTPClientRequestPart.end(nil)) }
        try await eventually("the two streams are answered") { streams[0].1.status != nil && streams[1].1.status != nil }
        XCTAssertEqual(streams[0].1.status, 200)
        XCTAssertEqual(streams[1].1.status, 200)
        try await eventually("every buffered byte is given back") { process.buffered == 0 }
        print("ts2021 body budget: 3 x \(each) bytes offered on one connection, at most \(process.highWater) buffered (budget \(budget))")
        try? await client.channel.close()
    }

    /// The process-wide budget: a charge that would pass it is refused (and nothing is taken); releases give it back.
    func testTheProcessWideBudgetRefusesPastItsLimit() {
        let process = TS2021ProcessBodyBudget(limit: 100)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let a = TS2021ConnectionBudget(limits: TS2021Limits(maxConcurrentStreams: 4, maxBufferedBodyBytes: 80), process: process,
                                       logger: logger, peer: "a")
        let b = TS2021ConnectionBudget(limits: TS2021Limits(maxConcurrentStreams: 4, maxBufferedBodyBytes: 80), process: process,
                                       logger: logger, peer: "b")
        XCTAssertEqual(a.charge(60), .taken)
        XCTAssertEqual(a.charge(30), .overConnection)
        XCTAssertEqual(b.charge(50), .overProcess)
        XCTAssertEqual(process.buffered, 60)
        XCTAssertEqual(b.charge(40), .taken)
        XCTAssertEqual(process.buffered, 100)
        a.release(60)
        XCTAssertEqual(b.charge(40), .taken)
        XCTAssertEqual(process.buffered, 80)
        XCTAssertEqual(b.snapshot.bufferedBytes, 80)
        for _ in 0..<4 { XCTAssertTrue(a.openStream()) }
        XCTAssertFalse(a.openStream())
        a.closeStream()
        XCTAssertTrue(a.openStream())
        XCTAssertEqual(a.snapshot.refusedStreams, 1)
    }
}
