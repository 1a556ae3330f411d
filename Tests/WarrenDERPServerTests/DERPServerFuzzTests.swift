// The relay's frame handling fed mutated bytes: it must throw, drop or close, never crash or hang.

import DERPProtocol
import NIOCore
import NIOEmbedded
import TailscaleKeys
import WarrenDERPServer
import WarrenDERPTransport
import WarrenTestSupport
import XCTest

final class DERPServerFuzzTests: XCTestCase {
    private var rng = SeededGenerator(seed: 0xF022)

    private func makeServer() -> DERPServer {
        var configuration = DERPServerConfiguration(privateKey: NodePrivate.generate(using: &rng))
        configuration.keepAliveInterval = .hours(1)
        return DERPServer(configuration: configuration)
    }

    /// A channel with the relay installed, past the ServerKey greeting.
    private func connection(_ server: DERPServer) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.connect(to: SocketAddress(ipAddress: "192.0.2.7", port: 41641)).wait()
        try server.installConnectionHandlers(on: channel.pipeline.syncOperations, remoteAddress: nil)
        _ = try channel.readOutbound(as: ByteBuffer.self)  // ServerKey
        return channel
    }

    /// ClientInfo for `key`, sealed to the server.
    private func clientInfoFrame(_ key: NodePrivate, server: DERPServer) throws -> [UInt8] {
        var handshake = DERPClientHandshake(clientKey: key.publicKey)
        let nonces = SeededNonceSource(seed: 7)
        let sealer = DERPNaClSealer(privateKey: key, nonce: { nonces.next() })
        return try handshake.receive(.serverKey(server.publicKey), sealer: sealer)
    }

    func testLoginThenServerInfoOnAnEmbeddedChannel() throws {
        let server = makeServer()
        let channel = try connection(server)
        let key = NodePrivate.generate(using: &rng)
        try channel.writeInbound(channel.allocator.buffer(bytes: try clientInfoFrame(key, server: server)))
        channel.embeddedEventLoop.run()
        let reply = try XCTUnwrap(channel.readOutbound(as: ByteBuffer.self))
        XCTAssertEqual(reply.getInteger(at: 0, as: UInt8.self), DERPFrameType.serverInfo.rawValue)
        XCTAssertEqual(server.connectedKeys, [key.publicKey])
        _ = try? channel.finish()
        XCTAssertEqual(server.connectedKeys, [])
    }

    func testFuzzBeforeLogin() throws {
        let server = makeServer()
        let key = NodePrivate.generate(using: &rng)
        let seeds = [try clientInfoFrame(key, server: server), DERPFrame.header(type: 2, length: 60) + [UInt8](repeating: 1, count: 60)]
        try MutationFuzzer(seeds: seeds, iterations: 3_000, maximumLength: 2048, seed: 0xA1).run { bytes in
            let channel = try connection(server)
            _ = try? channel.writeInbound(channel.allocator.buffer(bytes: bytes))
            channel.embeddedEventLoop.run()
            _ = try? channel.finish()
        }
        XCTAssertEqual(server.statistics.connections, 0)
    }

    func testFuzzAfterLogin() throws {
        let server = makeServer()
        let key = NodePrivate.generate(using: &rng)
        let peer = NodePrivate.generate(using: &rng).publicKey
        let login = try clientInfoFrame(key, server: server)
        let seeds: [[UInt8]] = try [
            DERPFrame.sendPacket(destination: peer, packet: [1, 2, 3, 4]).encoded()
                + DERPFrame.sendPacket(destination: key.publicKey, packet: DERPFrame.discoMagic + [5]).encoded(),
            DERPFrame.notePreferred(true).encoded() + DERPFrame.ping([1, 2, 3, 4, 5, 6, 7, 8]).encoded(),
            DERPFrame.forwardPacket(source: peer, destination: key.publicKey, packet: [7]).encoded(),
            DERPFrame.closePeer(peer).encoded() + DERPFrame.watchConns.encoded() + DERPFrame.keepAlive.encoded(),
            DERPFrame.health("x").encoded() + DERPFrame.header(type: 0x42, length: 2) + [0, 0],
        ]
        var survived = 0
        try MutationFuzzer(seeds: seeds, iterations: 3_000, maximumLength: 4096, seed: 0xA2).run { bytes in
            let channel = try connection(server)
            try channel.writeInbound(channel.allocator.buffer(bytes: login))
            // Split the input in two reads to exercise partial frames.
            let cut = bytes.isEmpty ? 0 : Int(bytes[0]) % (bytes.count + 1)
            _ = try? channel.writeInbound(channel.allocator.buffer(bytes: bytes[..<cut]))
            _ = try? channel.writeInbound(channel.allocator.buffer(bytes: bytes[cut...]))
            channel.embeddedEventLoop.run()
            if channel.isActive { survived += 1 }
            while (try? channel.readOutbound(as: ByteBuffer.self)) != nil {}
            _ = try? channel.finish()
        }
        XCTAssertEqual(server.statistics.connections, 0, "every fuzzed connection unregistered")
        XCTAssertGreaterThan(survived, 0)
        XCTAssertGreaterThan(server.statistics.protocolErrors, 0)
    }

    func testFuzzTheRawFrameDecoder() throws {
        let seeds: [[UInt8]] = try [
            DERPFrame.sendPacket(destination: NodePrivate.generate(using: &rng).publicKey, packet: [1]).encoded(),
            DERPFrame.header(type: 0x99, length: 5) + [1, 2, 3, 4, 5],
        ]
        MutationFuzzer(seeds: seeds, iterations: 5_000, maximumLength: 1024, seed: 0xA3).run { bytes in
            var decoder = DERPRawFrameDecoder()
            var buffer = ByteBuffer(bytes: bytes)
            var frames = 0
            while frames < 10_000, let frame = try? decoder.decode(buffer: &buffer) {
                frames += 1
                _ = try? frame.parsed()
            }
        }
    }
}

final class SeededNonceSource: @unchecked Sendable {
    private var rng: SeededGenerator
    private let lock = NSLock()
    init(seed: UInt64) { rng = SeededGenerator(seed: seed) }
    func next() -> [UInt8] { lock.withLock { rng.bytes(count: 24) } }
}

import Foundation
