// ControlConnection against a minimal ts2021 server written here that sends the optional early payload
// (FF FF FF 'T' 'S', length, EarlyNoise JSON) before HTTP/2, as Tailscale's control server does; and
// against the same server without it.

import Foundation
import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import TailscaleControlProtocol
import TailscaleKeys
import WarrenControlTransport
import WarrenTailcfg
import XCTest

/// Answers every HTTP/2 request with 200 and "pong <path>".
private final class PongHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    private var path = ""

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): path = head.uri
        case .body: break
        case .end:
            let body = Array("pong \(path)".utf8)
            var headers = HTTPHeaders()
            headers.add(name: "Content-Length", value: "\(body.count)")
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http2, status: .ok, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: body)))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }
}

/// Reads the upgrade request, answers 101 and the Noise response, then serves HTTP/2 inside Noise
/// records, with `earlyPayload` first when given.
private final class MiniUpgradeHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    private let controlKey: MachinePrivate
    private let earlyPayload: [UInt8]?
    private var buffer: [UInt8] = []

    init(controlKey: MachinePrivate, earlyPayload: [UInt8]?) {
        self.controlKey = controlKey
        self.earlyPayload = earlyPayload
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var chunk = unwrapInboundIn(data)
        buffer += chunk.readBytes(length: chunk.readableBytes) ?? []
        guard let end = buffer.firstRange(of: Array("\r\n\r\n".utf8)) else { return }
        let head = String(decoding: buffer[..<end.lowerBound], as: UTF8.self)
        let line = head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("x-tailscale-handshake:") }
        guard let value = line?.split(separator: ":", maxSplits: 1).last?.trimmingCharacters(in: .whitespaces),
              let initiation = Data(base64Encoded: value) else {
            context.close(promise: nil)
            return
        }
        do {
            var generator = SystemRandomNumberGenerator()
            let accepted = try ControlServerHandshake.respond(to: Array(initiation), controlKey: controlKey,
                                                              ephemeral: MachinePrivate.generate(using: &generator))
            let reply = Array("HTTP/1.1 101 Switching Protocols\r\nUpgrade: tailscale-control-protocol\r\nConnection: upgrade\r\n\r\n".utf8)
            context.writeAndFlush(NIOAny(ByteBuffer(bytes: reply + accepted.response)), promise: nil)
            let pipeline = context.pipeline.syncOperations
            try pipeline.addHandler(NoiseRecordHandler(session: accepted.session, earlyPayload: earlyPayload),
                                    position: .after(self))
            _ = try pipeline.configureHTTP2Pipeline(mode: .server, connectionConfiguration: .init(),
                                                    streamConfiguration: .init(), position: .last) { stream in
                stream.eventLoop.makeCompletedFuture {
                    try stream.pipeline.syncOperations.addHandlers([HTTP2FramePayloadToHTTP1ServerCodec(), PongHandler()])
                }
            }
            pipeline.removeHandler(self, promise: nil)
        } catch {
            context.close(promise: nil)
        }
    }
}

final class EarlyPayloadTests: XCTestCase {
    func serve(earlyPayload: [UInt8]?) async throws -> (Channel, MachinePrivate) {
        var generator = SystemRandomNumberGenerator()
        let key = MachinePrivate.generate(using: &generator)
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(MiniUpgradeHandler(controlKey: key, earlyPayload: earlyPayload))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return (server, key)
    }

    func exchange(earlyPayload: [UInt8]?) async throws -> (early: [UInt8]?, noise: EarlyNoise?, answer: String) {
        let (server, key) = try await serve(earlyPayload: earlyPayload)
        defer { server.close(promise: nil) }
        var generator = SystemRandomNumberGenerator()
        let endpoint = ControlEndpoint(host: "127.0.0.1", port: try XCTUnwrap(server.localAddress?.port))
        let connection = try await ControlConnection.connect(to: endpoint, machineKey: MachinePrivate.generate(using: &generator),
                                                             controlKey: key.publicKey, protocolVersion: 130)
        let response = try await connection.post("/machine/ping", json: Array("{}".utf8))
        XCTAssertEqual(response.status, 200)
        let answer = String(decoding: await response.collect(), as: UTF8.self)
        let early = await connection.earlyPayload()
        let noise = await connection.earlyNoise()
        XCTAssertTrue(connection.isActive)
        await connection.close()
        await connection.waitUntilClosed()
        return (early, noise, answer)
    }

    func testEarlyPayloadIsTakenOffBeforeHTTP2() async throws {
        var generator = SystemRandomNumberGenerator()
        let challenge = ChallengePublic(raw: MachinePrivate.generate(using: &generator).publicKey.raw)
        let json = try TailcfgJSON.encode(EarlyNoise(nodeKeyChallenge: challenge))
        let result = try await exchange(earlyPayload: ControlEarlyPayload.frame(json: json))
        XCTAssertEqual(result.answer, "pong /machine/ping")
        XCTAssertEqual(result.early, json)
        XCTAssertEqual(result.noise?.nodeKeyChallenge, challenge)
    }

    func testWithoutEarlyPayloadHTTP2StartsAtOnce() async throws {
        let result = try await exchange(earlyPayload: nil)
        XCTAssertEqual(result.answer, "pong /machine/ping")
        XCTAssertNil(result.early)
        XCTAssertNil(result.noise)
    }
}
