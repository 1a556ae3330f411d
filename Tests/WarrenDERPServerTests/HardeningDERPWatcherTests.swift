// Issue 14, a DERP mesh watcher's presence queue (WatchConns): news is coalesced per key (a flapping client costs
// one entry), a watcher more keys behind than the limit, or stalled for longer than the stall limit, is
// disconnected (and counted, and logged) instead of growing without bound, and one that keeps up sees the latest
// state of every key.

import DERPProtocol
import Foundation
import NIOCore
import NIOEmbedded
import TailscaleKeys
import WarrenTestSupport
import XCTest
@testable import WarrenDERPServer

final class HardeningDERPWatcherTests: XCTestCase {
    private var rng = SeededGenerator(seed: 0x3A7C_0014)

    private func makeServer(limit: Int, stall: TimeAmount?) -> DERPServer {
        var configuration = DERPServerConfiguration(privateKey: NodePrivate.generate(using: &rng))
        configuration.keepAliveInterval = .hours(1)
        configuration.meshWatcherQueueLimit = limit
        configuration.meshWatcherStallLimit = stall
        return DERPServer(configuration: configuration)
    }

    private func connectedChannel() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.connect(to: SocketAddress(ipAddress: "192.0.2.14", port: 41641)).wait()
        return channel
    }

    private func login(_ server: DERPServer, key: NodePublic, mesh: Bool = false) throws -> DERPServedClient {
        // With an address: a PeerPresent without one cannot carry flags.
        try XCTUnwrap(server.register(key: key, channel: try connectedChannel(), info: DERPClientInfo(),
                                      remote: try SocketAddress(ipAddress: "192.0.2.14", port: 41641), canMesh: mesh))
    }

    private func watcher(_ server: DERPServer) throws -> (DERPServedClient, EmbeddedChannel) {
        let watcher = try login(server, key: NodePrivate.generate(using: &rng).publicKey, mesh: true)
        server.addWatcher(watcher)
        return (watcher, try XCTUnwrap(watcher.channel as? EmbeddedChannel))
    }

    /// The frames written to `channel`: (type, key) for PeerPresent and PeerGone.
    private func presence(_ channel: EmbeddedChannel) throws -> [(DERPFrameType, NodePublic)] {
        var out: [(DERPFrameType, NodePublic)] = []
        while var buffer = try channel.readOutbound(as: ByteBuffer.self) {
            while buffer.readableBytes >= 5 {
                let type = buffer.readInteger(as: UInt8.self)!
                let length = Int(buffer.readInteger(as: UInt32.self)!)
                let payload = buffer.readBytes(length: length) ?? []
                if let type = DERPFrameType(rawValue: type), type == .peerPresent || type == .peerGone, payload.count >= 32 {
                    out.append((type, try XCTUnwrap(NodePublic(rawRepresentation: payload.prefix(32)))))
                }
            }
        }
        return out
    }

    /// A watcher that cannot be written to: a client flapping 1,000 times costs one entry; 64 distinct keys fit;
    /// the 65th disconnects the watcher (counted), which frees everything it held; the relay goes on.
    func testASlowWatchersNewsIsCoalescedPerKeyAndItIsDisconnectedPastTheLimit() throws {
        let server = makeServer(limit: 64, stall: nil)
        let (watcher, channel) = try watcher(server)
        channel.isWritable = false
        let flapping = NodePrivate.generate(using: &rng).publicKey
        for _ in 0..<1000 {
            server.unregister(try login(server, key: flapping))
        }
        channel.embeddedEventLoop.run()  // a drain finds the channel unwritable: nothing written
        XCTAssertEqual(watcher.pendingMeshUpdates, 1, "a flapping client's news was not coalesced")
        var others: [DERPServedClient] = []
        for _ in 0..<63 { others.append(try login(server, key: NodePrivate.generate(using: &rng).publicKey)) }
        XCTAssertEqual(watcher.pendingMeshUpdates, 64)
        XCTAssertTrue(channel.isActive)
        XCTAssertEqual(server.droppedWatchers, 0)
        others.append(try login(server, key: NodePrivate.generate(using: &rng).publicKey))
        channel.embeddedEventLoop.run()
        XCTAssertFalse(channel.isActive, "a watcher 65 keys behind (limit 64) was kept")
        XCTAssertEqual(server.droppedWatchers, 1)
        XCTAssertEqual(watcher.pendingMeshUpdates, 0, "a dropped watcher still holds its queue")
        // No longer a watcher: more changes queue nothing for it; the relay keeps serving the others.
        server.unregister(others.removeLast())
        XCTAssertEqual(watcher.pendingMeshUpdates, 0)
        XCTAssertEqual(server.statistics.clients, 64)  // the watcher (closed, not unregistered here) and 63
        for client in others { server.unregister(client) }
    }

    /// A watcher that has news waiting and stays unwritable past the stall limit is disconnected at the next news,
    /// however few keys wait (Tailscale's derper gives mesh peers a 30 s write timeout).
    /// Synchronous on purpose: an EmbeddedEventLoop must be used from the thread that made it, and an `await` may
    /// resume the test on another thread (NIO then reports API misuse).
    func testAStalledWatcherIsDisconnectedAfterTheStallLimit() throws {
        let server = makeServer(limit: 1000, stall: .milliseconds(100))
        let (_, channel) = try watcher(server)
        channel.isWritable = false
        let first = try login(server, key: NodePrivate.generate(using: &rng).publicKey)
        channel.embeddedEventLoop.run()
        let second = try login(server, key: NodePrivate.generate(using: &rng).publicKey)
        XCTAssertTrue(channel.isActive, "dropped before the stall limit")
        Thread.sleep(forTimeInterval: 0.25)
        let third = try login(server, key: NodePrivate.generate(using: &rng).publicKey)
        channel.embeddedEventLoop.run()
        XCTAssertFalse(channel.isActive, "a watcher stalled past its limit was kept")
        XCTAssertEqual(server.droppedWatchers, 1)
        for client in [first, second, third] { server.unregister(client) }
    }

    /// A watcher that keeps up: the snapshot at WatchConns, then every change, with only the latest state of a key
    /// that changed twice between writes.
    func testAWatcherThatKeepsUpSeesTheLatestStateOfEveryKey() throws {
        let server = makeServer(limit: 64, stall: .seconds(30))
        let before = try login(server, key: NodePrivate.generate(using: &rng).publicKey)
        let (_, channel) = try watcher(server)
        channel.embeddedEventLoop.run()
        var seen = try presence(channel)
        XCTAssertEqual(seen.map(\.0), [.peerPresent])
        XCTAssertEqual(seen.map(\.1), [before.key])

        let a = try login(server, key: NodePrivate.generate(using: &rng).publicKey)
        let b = try login(server, key: NodePrivate.generate(using: &rng).publicKey)
        server.unregister(a)  // before any write: A's PeerPresent is replaced by its PeerGone
        channel.embeddedEventLoop.run()
        seen = try presence(channel)
        XCTAssertEqual(seen.map(\.0), [.peerGone, .peerPresent])
        XCTAssertEqual(seen.map(\.1), [a.key, b.key])

        server.unregister(b)
        channel.embeddedEventLoop.run()
        seen = try presence(channel)
        XCTAssertEqual(seen.map(\.0), [.peerGone])
        XCTAssertEqual(seen.map(\.1), [b.key])
        XCTAssertTrue(channel.isActive)
        XCTAssertEqual(server.droppedWatchers, 0)
        server.unregister(before)
    }
}
