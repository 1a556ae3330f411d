// The relay mounted in someone else's NIO HTTP server, as warren-control mounts it.

import DERPProtocol
import NIOCore
import NIOHTTP1
import NIOPosix
import TailscaleKeys
import WarrenDERPClient
import WarrenDERPServer
import WarrenTestSupport
import XCTest

final class DERPMountingTests: XCTestCase {
    /// An application's own HTTP handler that stays in the pipeline after the upgrade.
    final class AppHandler: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard case .end = unwrapInboundIn(data) else { return }
            let head = HTTPResponseHead(version: .http1_1, status: .notFound, headers: ["Content-Length": "0"])
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }

    func testUpgraderInAForeignHTTPServer() async throws {
        var rng = SeededGenerator(seed: 0x30)
        let server = DERPServer(configuration: DERPServerConfiguration(privateKey: NodePrivate.generate(using: &rng)))
        let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                        withServerUpgrade: (upgraders: [DERPHTTPUpgrader(server: server)], completionHandler: { _ in }))
                    try channel.pipeline.syncOperations.addHandler(AppHandler())
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        defer { listener.close(promise: nil) }
        let endpoint = DERPClient.Endpoint(host: "127.0.0.1", port: listener.localAddress?.port ?? 0, trust: nil)
        let a = try await DERPClient.connect(to: endpoint, privateKey: NodePrivate.generate(using: &rng))
        let b = try await DERPClient.connect(to: endpoint, privateKey: NodePrivate.generate(using: &rng))
        XCTAssertEqual(a.serverKey, server.publicKey)
        let readB = FrameReader(b)  // kept: dropping the frames iterator closes the connection
        try await a.send([1, 2, 3], to: b.publicKey)
        let packet = try await withDeadline { try await readB.nextPacket() }
        XCTAssertEqual(packet?.1, [1, 2, 3])
        _ = try await b.ping()
        await a.close()
        await b.close()
    }

    func testManualInstallAfterAnUpgradeOfOurOwn() async throws {
        var rng = SeededGenerator(seed: 0x31)
        let server = DERPServer(configuration: DERPServerConfiguration(privateKey: NodePrivate.generate(using: &rng)))
        // A server that writes the 101 by hand and hands the raw connection over.
        let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(HandOver(server: server))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        defer { listener.close(promise: nil) }
        let endpoint = DERPClient.Endpoint(host: "127.0.0.1", port: listener.localAddress?.port ?? 0, trust: nil)
        let a = try await DERPClient.connect(to: endpoint, privateKey: NodePrivate.generate(using: &rng))
        _ = try await a.ping()
        XCTAssertEqual(server.statistics.clients, 1)
        await a.close()
    }

    /// Reads the request header bytes, answers 101 with the relay's headers, installs the relay.
    final class HandOver: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        typealias InboundOut = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let server: DERPServer
        private var seen = ByteBuffer()

        init(server: DERPServer) { self.server = server }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var bytes = unwrapInboundIn(data)
            seen.writeBuffer(&bytes)
            guard let end = seen.readableBytesView.firstRange(of: Array("\r\n\r\n".utf8)) else { return }
            var response = "HTTP/1.1 101 Switching Protocols\r\n"
            for (name, value) in server.upgradeResponseHeaders { response += "\(name): \(value)\r\n" }
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: response + "\r\n")), promise: nil)
            var rest = seen
            rest.moveReaderIndex(to: end.upperBound)
            let pipeline = context.pipeline.syncOperations
            XCTAssertNoThrow(try server.installConnectionHandlers(on: pipeline, remoteAddress: context.channel.remoteAddress))
            if rest.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(rest)) }
            pipeline.removeHandler(self, promise: nil)
        }
    }
}
