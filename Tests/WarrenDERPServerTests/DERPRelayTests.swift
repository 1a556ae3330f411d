// The relay and the client engine together over real loopback TLS.

import DERPProtocol
import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import TailscaleKeys
import WarrenDERPClient
import WarrenDERPServer
import WarrenDERPTransport
import XCTest

final class DERPRelayTests: XCTestCase {
    func testTwoClientsExchangePacketsOverTLS() async throws {
        let relay = try await RelayHarness()
        defer { relay.stop() }
        let a = try await relay.connect()
        let b = try await relay.connect()
        XCTAssertEqual(a.serverKey, relay.server.publicKey)
        XCTAssertEqual(a.serverInfo.version, 2)
        let readA = FrameReader(a), readB = FrameReader(b)

        try await a.send(Array("hello from a".utf8), to: b.publicKey)
        let atB = try await withDeadline { try await readB.nextPacket() }
        XCTAssertEqual(atB?.0, a.publicKey)
        XCTAssertEqual(atB?.1, Array("hello from a".utf8))

        // A 64 KiB packet (the largest allowed) and a batch, the other way.
        let big = (0..<65536).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        try await b.send(big, to: a.publicKey)
        for i in 0..<20 { try await b.send([UInt8(i)], to: a.publicKey) }
        let first = try await withDeadline { try await readA.nextPacket() }
        XCTAssertEqual(first?.0, b.publicKey)
        XCTAssertEqual(first?.1, big)
        for i in 0..<20 {
            let packet = try await withDeadline { try await readA.nextPacket() }
            XCTAssertEqual(packet?.1, [UInt8(i)])
        }
        XCTAssertEqual(relay.server.statistics.clients, 2)
        XCTAssertEqual(relay.server.statistics.packetsRelayed, 22)
        await a.close()
        await b.close()
    }

    func testPeerGoneWhenPeerDisconnects() async throws {
        let relay = try await RelayHarness()
        defer { relay.stop() }
        let a = try await relay.connect()
        let b = try await relay.connect()
        let readA = FrameReader(a), readB = FrameReader(b)
        try await a.send([1, 2, 3], to: b.publicKey)
        _ = try await withDeadline { try await readB.nextPacket() }
        let bKey = b.publicKey
        await b.close()
        let gone = try await withDeadline {
            try await readA.next { frame -> (NodePublic, DERPPeerGoneReason)? in
                if case .peerGone(let key, let reason) = frame { return (key, reason) }
                return nil
            }
        }
        XCTAssertEqual(gone?.0, bKey)
        XCTAssertEqual(gone?.1, .disconnected)
        try await assertEventually { !relay.server.connectedKeys.contains(bKey) }
        await a.close()
    }

    func testPeerGoneNotHereForAnUnknownKey() async throws {
        let relay = try await RelayHarness()
        defer { relay.stop() }
        let a = try await relay.connect()
        let readA = FrameReader(a)
        let nobody = relay.newKey().publicKey
        try await a.send([9], to: nobody)
        let gone = try await withDeadline {
            try await readA.next { frame -> (NodePublic, DERPPeerGoneReason)? in
                if case .peerGone(let key, let reason) = frame { return (key, reason) }
                return nil
            }
        }
        XCTAssertEqual(gone?.0, nobody)
        XCTAssertEqual(gone?.1, .notHere)
        XCTAssertEqual(relay.server.statistics.droppedUnknownDestination, 1)
        await a.close()
    }

    func testPingAndNotePreferred() async throws {
        let relay = try await RelayHarness()
        defer { relay.stop() }
        let a = try await relay.connect()
        _ = try await a.ping()
        _ = try await a.ping()
        XCTAssertEqual(relay.server.statistics.pingsAnswered, 2)
        XCTAssertFalse(relay.server.isPreferred(a.publicKey))
        try await a.notePreferred(true)
        try await assertEventually { relay.server.isPreferred(a.publicKey) }
        await a.close()
    }

    func testKeepAliveAndHealthReachTheClient() async throws {
        let relay = try await RelayHarness(configure: { $0.keepAliveInterval = .milliseconds(50) })
        defer { relay.stop() }
        let a = try await relay.connect()
        let reader = FrameReader(a)
        let keepAlive = try await withDeadline {
            try await reader.next { frame -> Bool? in frame == .keepAlive ? true : nil }
        }
        XCTAssertEqual(keepAlive, true)
        relay.server.sendHealth("relay is draining", to: a.publicKey)
        let health = try await withDeadline {
            try await reader.next { frame -> String? in
                if case .health(let text) = frame { return text }
                return nil
            }
        }
        XCTAssertEqual(health, "relay is draining")
        await a.close()
    }

    func testBoundedQueueUnderASlowReader() async throws {
        let relay = try await RelayHarness()
        defer { relay.stop() }
        let a = try await relay.connect()
        let b = try await relay.connect()  // never reads until the end
        let packet = [UInt8](repeating: 0xAB, count: 1200)
        let total = 40_000  // 48 MB: far more than loopback socket buffers hold
        var sent = 0
        while sent < total {
            let frames = (0..<100).map { _ in DERPClient.sendPacketFrame(packet, to: b.publicKey, allocator: a.channel.allocator) }
            try await withDeadline(seconds: 60) { try await a.send(frames: frames) }
            sent += 100
        }
        try await assertEventually { relay.server.statistics.packetsReceived == UInt64(total) }
        let stats = relay.server.statistics
        XCTAssertGreaterThan(stats.droppedQueueHead, 0, "a reader that does not read must cost drops, not memory")
        XCTAssertLessThanOrEqual(stats.deepestQueue, relay.server.configuration.sendQueueDepth)
        // The reader still gets packets once it reads, fewer than were sent.
        let readB = FrameReader(b)
        let first = try await withDeadline { try await readB.nextPacket() }
        XCTAssertEqual(first?.1, packet)
        await a.close()
        await b.close()
    }

    func testMalformedFramesCloseTheConnectionAndTheRelayGoesOn() async throws {
        let relay = try await RelayHarness()
        defer { relay.stop() }
        let cases: [[UInt8]] = [
            DERPFrame.header(type: DERPFrameType.notePreferred.rawValue, length: 3) + [1, 1, 1],  // wrong size
            DERPFrame.header(type: DERPFrameType.sendPacket.rawValue, length: 10) + [UInt8](repeating: 0, count: 10),  // short key
            DERPFrame.header(type: DERPFrameType.sendPacket.rawValue, length: 0x7FFF_FFFF),  // far too large
            DERPFrame.header(type: DERPFrameType.ping.rawValue, length: 4) + [1, 2, 3, 4],  // short ping
            DERPFrame.header(type: DERPFrameType.watchConns.rawValue, length: 0),  // not a mesh peer
        ]
        for bytes in cases {
            let bad = try await relay.connect()
            try await bad.sendRaw(bytes)
            try await withDeadline { try await bad.channel.closeFuture.get() }
        }
        XCTAssertGreaterThanOrEqual(relay.server.statistics.protocolErrors, UInt64(cases.count))
        try await assertEventually { relay.server.statistics.connections == 0 }
        // Unknown frame types are skipped, not fatal.
        let a = try await relay.connect()
        let b = try await relay.connect()
        try await a.sendRaw(DERPFrame.header(type: 0x7E, length: 3) + [1, 2, 3])
        try await a.send([42], to: b.publicKey)
        let packet = try await withDeadline { try await FrameReader(b).nextPacket() }
        XCTAssertEqual(packet?.1, [42])
        await a.close()
        await b.close()
    }

    func testDuplicateKeyLastWriterIsActive() async throws {
        let relay = try await RelayHarness()
        defer { relay.stop() }
        let key = relay.newKey()
        let first = try await relay.connect(key)
        let second = try await relay.connect(key)
        let sender = try await relay.connect()
        let readFirst = FrameReader(first), readSecond = FrameReader(second), readSender = FrameReader(sender)

        try await sender.send([1], to: key.publicKey)
        let atSecond = try await withDeadline { try await readSecond.nextPacket() }
        XCTAssertEqual(atSecond?.1, [1], "the newest connection is active")

        // The first connection writes: it becomes the active one.
        try await first.send([0], to: sender.publicKey)
        _ = try await withDeadline { try await readSender.nextPacket() }
        try await sender.send([2], to: key.publicKey)
        let atFirst = try await withDeadline { try await readFirst.nextPacket() }
        XCTAssertEqual(atFirst?.1, [2])

        // Closing one of two connections is not a PeerGone; the other takes over.
        await first.close()
        try await assertEventually { relay.server.statistics.connections == 2 }
        try await sender.send([3], to: key.publicKey)
        let afterwards = try await withDeadline { try await readSecond.nextPacket() }
        XCTAssertEqual(afterwards?.1, [3])
        await second.close()
        let gone = try await withDeadline {
            try await readSender.next { frame -> NodePublic? in
                if case .peerGone(let gone, _) = frame { return gone }
                return nil
            }
        }
        XCTAssertEqual(gone, key.publicKey)
        await sender.close()
    }

    func testAdmissionRefusesUnknownNodes() async throws {
        let allowed = RelayHarness.keyBox()
        let relay = try await RelayHarness(configure: { configuration in
            configuration.admission = { node, source in
                XCTAssertNotNil(source)
                return allowed.contains(node)
            }
        })
        defer { relay.stop() }
        let good = relay.newKey()
        allowed.insert(good.publicKey)
        let a = try await relay.connect(good)
        _ = try await a.ping()
        do {
            _ = try await relay.connect(relay.newKey())
            XCTFail("a node the admission refuses must not log in")
        } catch {}
        XCTAssertEqual(relay.server.statistics.connectionsRefused, 1)
        XCTAssertEqual(relay.server.statistics.clients, 1)
        await a.close()
    }

    func testPinnedCertificateMustMatch() async throws {
        let relay = try await RelayHarness()
        defer { relay.stop() }
        let other = try DERPCertificate.selfSigned(hostnames: ["127.0.0.1"])
        var endpoint = relay.endpoint
        endpoint.trust = .pinned(other.pin)
        do {
            _ = try await DERPClient.connect(to: endpoint, privateKey: relay.newKey())
            XCTFail("a certificate with another hash must be refused")
        } catch {}
        endpoint.trust = .insecureForTests
        let client = try await DERPClient.connect(to: endpoint, privateKey: relay.newKey())
        await client.close()
    }

    func testProbeLatencyCheckAndCaptivePortalAnswers() async throws {
        let relay = try await RelayHarness()
        defer { relay.stop() }
        for path in ["/derp/probe", "/derp/latency-check"] {
            let response = try await httpsGet(port: relay.port, path: path)
            XCTAssertTrue(response.hasPrefix("HTTP/1.1 200"), response)
            XCTAssertTrue(response.lowercased().contains("access-control-allow-origin: *"), response)
        }
        let portal = try await httpsGet(port: relay.port, path: "/generate_204", headers: ["X-Tailscale-Challenge: abc.DEF-1"])
        XCTAssertTrue(portal.hasPrefix("HTTP/1.1 204"), portal)
        XCTAssertTrue(portal.contains("response abc.DEF-1"), portal)
        let plain = try await httpsGet(port: relay.port, path: "/derp")
        XCTAssertTrue(plain.hasPrefix("HTTP/1.1 426"), plain)
    }

    /// One HTTPS request with a fresh connection; returns the raw response.
    private func httpsGet(port: Int, path: String, headers: [String] = []) async throws -> String {
        let context = try NIOSSLContext(configuration: DERPServerTrust.insecureForTests.clientTLSConfiguration())
        let collector = ResponseCollector()
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: nil))
                    try channel.pipeline.syncOperations.addHandler(collector)
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        let request = (["GET \(path) HTTP/1.1", "Host: 127.0.0.1", "Connection: close"] + headers).joined(separator: "\r\n") + "\r\n\r\n"
        try await channel.writeAndFlush(channel.allocator.buffer(string: request))
        try await withDeadline { try await channel.closeFuture.get() }
        return collector.text
    }
}

final class ResponseCollector: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    private(set) var text = ""
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        text += String(buffer: unwrapInboundIn(data))
    }
    func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
}

extension RelayHarness {
    final class KeyBox: @unchecked Sendable {
        private let lock = NSLock()
        private var keys: Set<NodePublic> = []
        func insert(_ key: NodePublic) { lock.withLock { _ = keys.insert(key) } }
        func contains(_ key: NodePublic) -> Bool { lock.withLock { keys.contains(key) } }
    }
    static func keyBox() -> KeyBox { KeyBox() }
}
