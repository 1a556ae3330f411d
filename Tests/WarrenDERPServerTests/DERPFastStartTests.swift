// Tailscale's fast start: the client sends its ClientInfo right behind the upgrade request and
// does not read a 101; the relay answers with DERP frames at once.

import DERPProtocol
import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import TailscaleKeys
import WarrenDERPServer
import WarrenDERPTransport
import WarrenTestSupport
import XCTest

final class DERPFastStartTests: XCTestCase {
    final class Bytes: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        private let lock = NSLock()
        private var received: [UInt8] = []
        var all: [UInt8] { lock.withLock { received } }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = unwrapInboundIn(data)
            lock.withLock { received += buffer.readableBytesView }
        }
    }

    /// `connected` is the relay's view while the client is still connected: the connection closes when
    /// this function returns, after which the relay forgets the key.
    private func exchange(fastStart: Bool) async throws -> (bytes: [UInt8], relay: RelayHarness, client: NodePrivate, connected: Set<NodePublic>) {
        let relay = try await RelayHarness()
        let client = relay.newKey()
        let nonces = SeededNonceSource(seed: 0xFA)
        var handshake = DERPClientHandshake(clientKey: client.publicKey)
        let sealer = DERPNaClSealer(privateKey: client, nonce: { nonces.next() })
        let clientInfo = try handshake.startKnowingServerKey(relay.server.publicKey, sealer: sealer)
        let context = try NIOSSLContext(configuration: DERPServerTrust.insecureForTests.clientTLSConfiguration())
        let collector = Bytes()
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: nil))
                    try channel.pipeline.syncOperations.addHandler(collector)
                }
            }
            .connect(host: "127.0.0.1", port: relay.port).get()
        defer { channel.close(promise: nil) }
        var request = "GET /derp HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n"
        if fastStart { request += "Derp-Fast-Start: 1\r\n" }
        // The ClientInfo rides in the same write as the request.
        try await channel.writeAndFlush(ByteBuffer(bytes: Array((request + "\r\n").utf8) + clientInfo))
        try await assertEventually { relay.server.connectedKeys.contains(client.publicKey) }
        try await assertEventually { collector.all.count >= (fastStart ? 0 : 100) + 45 + 5 + 24 + 16 }
        return (collector.all, relay, client, Set(relay.server.connectedKeys))
    }

    func testFastStartGetsFramesWithoutA101() async throws {
        let (bytes, relay, client, connected) = try await exchange(fastStart: true)
        defer { relay.stop() }
        XCTAssertEqual(bytes.first, DERPFrameType.serverKey.rawValue, "no HTTP response before the frames")
        var decoder = DERPFrameDecoder()
        decoder.append(bytes)
        XCTAssertEqual(try decoder.nextFrame(), .serverKey(relay.server.publicKey))
        guard case .serverInfo = try decoder.nextFrame() else { return XCTFail("ServerInfo expected second") }
        XCTAssertEqual(connected, [client.publicKey])
    }

    func testClientInfoRightBehindAPlainUpgradeIsKept() async throws {
        let (bytes, relay, _, _) = try await exchange(fastStart: false)
        defer { relay.stop() }
        let text = String(decoding: bytes, as: UTF8.self)
        XCTAssertTrue(text.hasPrefix("HTTP/1.1 101 Switching Protocols\r\n"), text)
        XCTAssertTrue(text.contains("Derp-Public-Key: \(relay.server.publicKey.raw.hex)"), text)
        let end = try XCTUnwrap(bytes.firstRange(of: Array("\r\n\r\n".utf8)))
        var decoder = DERPFrameDecoder()
        decoder.append(bytes[end.upperBound...])
        XCTAssertEqual(try decoder.nextFrame(), .serverKey(relay.server.publicKey))
    }
}
