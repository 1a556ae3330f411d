// Issue 13 §4, back-pressure: a map stream whose reader does not read costs the server a bounded amount. The stream's
// writer hands its channel at most one piece (ControlStreamHandler.maximumPieceBytes) before that write completes,
// takes nothing from the outbox while the channel is not writable, and what piles up in the outbox is merged as it
// arrives. Measured with counters (the bytes a channel holds unwritten, the outbox's length), not clocks.

import Foundation
import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Synchronization
import TailscaleKeys
import WarrenControlClient
import WarrenControlTransport
import WarrenTailcfg
import XCTest
@testable import WarrenControlServer

/// Stands for a socket whose reader stopped reading: response heads go through, body writes are held (their promises
/// not completed) until released. Counts what it holds.
final class StallingWriter: ChannelOutboundHandler, @unchecked Sendable {
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private var held: [(part: HTTPServerResponsePart, promise: EventLoopPromise<Void>?)] = []
    /// Touched on the event loop only; read by the test through the loop.
    private(set) var heldBytes = 0
    private(set) var peakHeldBytes = 0
    private(set) var bodyWrites = 0

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let part = unwrapOutboundIn(data)
        guard case .body(.byteBuffer(let buffer)) = part else {
            context.write(data, promise: promise)
            return
        }
        bodyWrites += 1
        heldBytes += buffer.readableBytes
        peakHeldBytes = max(peakHeldBytes, heldBytes)
        held.append((part, promise))
    }

    /// Lets everything held go on (the reader read it).
    func release(context: ChannelHandlerContext) {
        let parts = held
        held = []
        heldBytes = 0
        for (part, promise) in parts { context.write(wrapOutboundOut(part), promise: promise) }
        context.flush()
    }
}

final class MapStreamBackPressureTests: XCTestCase {
    func registered(_ fixture: InProcessEngine, count: Int, seed: UInt64) async throws -> [ControlClient] {
        var clients = [ControlClient]()
        for i in 0..<count {
            let c = ControlClient(port: 1, seed: seed + UInt64(i))
            let reply = await fixture.engine.register(c.registerRequest(authKey: fixture.authKey, hostname: "n\(seed + UInt64(i))"),
                                                      machineKey: c.machineKey.publicKey)
            XCTAssertEqual(reply.error, "")
            clients.append(c)
        }
        return clients
    }

    /// Waits (without a clock: a bounded number of turns of the event loop and the engine) until `condition` holds.
    func eventually(_ what: String, _ condition: () async throws -> Bool) async throws {
        for _ in 0..<20_000 {
            if try await condition() { return }
            await Task.yield()
            try await Task.sleep(for: .milliseconds(1))
        }
        XCTFail("never happened: \(what)")
    }

    func testAReaderThatDoesNotReadCostsTheServerABoundedAmount() async throws {
        // No pacing: every change is ready to go at once (the loop's timers do not run in a testing channel).
        let fixture = try await InProcessEngine.start { $0.mapUpdateInterval = .zero }
        let engine = fixture.engine
        // A tailnet whose full map (uncompressed) is several pieces long.
        _ = try await registered(fixture, count: 400, seed: 50_000)
        let viewer = ControlClient(port: 1, seed: 7)
        let reply = await engine.register(viewer.registerRequest(authKey: fixture.authKey, hostname: "viewer"),
                                          machineKey: viewer.machineKey.publicKey)
        XCTAssertEqual(reply.error, "")

        let stall = StallingWriter()
        let channel = NIOAsyncTestingChannel()
        try await channel.pipeline.addHandler(stall)
        try await channel.pipeline.addHandler(ControlStreamHandler(engine: engine, machineKey: viewer.machineKey.publicKey,
                                                                   logger: Logger(label: "test")))
        let stallContext = try await channel.pipeline.context(handler: stall).get()
        let body = try TailcfgJSON.encode(viewer.mapRequest(stream: true, compress: false))
        try await channel.writeInbound(HTTPServerRequestPart.head(HTTPRequestHead(version: .http2, method: .POST, uri: "/machine/map")))
        try await channel.writeInbound(HTTPServerRequestPart.body(ByteBuffer(bytes: body)))
        try await channel.writeInbound(HTTPServerRequestPart.end(nil))

        // The writer hands over the first piece of the full map, and waits for it.
        try await eventually("the first piece of the full map is written") {
            try await channel.eventLoop.submit { stall.bodyWrites }.get() >= 1
        }
        let account = engine.mapEncoder.streams
        // The bound: one piece (32 KiB); the full map alone is about ten times that.
        let piece = 32 << 10
        XCTAssertLessThanOrEqual(ControlStreamHandler.maximumPieceBytes, piece)

        // Many changes meanwhile: nodes join, each an upsert for the viewer. The reader reads none of it.
        _ = try await registered(fixture, count: 300, seed: 90_000)
        let outboxes = await engine.openOutboxes()
        XCTAssertEqual(outboxes.count, 1)
        let outbox = try XCTUnwrap(outboxes.first)

        let held = try await channel.eventLoop.submit { (stall.heldBytes, stall.peakHeldBytes, stall.bodyWrites) }.get()
        XCTAssertEqual(held.2, 1, "one piece handed over, none after it until it is written")
        XCTAssertLessThanOrEqual(held.1, piece, "the channel holds at most one piece of the stream, not its whole full map")
        XCTAssertLessThanOrEqual(account.bufferedBytes, piece)
        XCTAssertLessThanOrEqual(account.peakStreamBytes, piece)
        XCTAssertLessThan(outbox.pendingCount, 2 * MapSessionOutbox.mergeThreshold,
                          "300 changes waiting for a stalled writer are merged as they arrive (one queued message per change before)")
        XCTAssertGreaterThan(outbox.earlyMerges, 0)

        // Not writable: once the held piece is written, the writer still takes nothing until the channel is writable.
        channel.isWritable = false
        try await channel.eventLoop.submit { stall.release(context: stallContext) }.get()
        try await eventually("the writer waits for writability") {
            try await channel.eventLoop.submit { stall.bodyWrites }.get() >= 1 && account.bufferedBytes == 0
        }
        for _ in 0..<50 { await Task.yield() }
        let whileBlocked = try await channel.eventLoop.submit { stall.bodyWrites }.get()
        XCTAssertEqual(account.bufferedBytes, 0, "nothing handed over while the channel is not writable")

        // Writable again: the rest goes, still one piece at a time, and the viewer ends up with every peer.
        channel.isWritable = true
        channel.pipeline.fireChannelWritabilityChanged()
        var received = ByteBuffer()
        var decoder = MapStreamDecoder()
        var peers = Set<Int64>()
        try await eventually("the full map and the merged changes reach the reader") {
            try await channel.eventLoop.submit { stall.release(context: stallContext) }.get()
            while let part = try await channel.readOutbound(as: HTTPServerResponsePart.self) {
                if case .body(.byteBuffer(var b)) = part { received.writeBuffer(&b) }
            }
            if received.readableBytes > 0 {
                decoder.append(received.readBytes(length: received.readableBytes) ?? [])
                while case .message(let json) = try decoder.parseStep() {
                    let message = try TailcfgJSON.decode(MapResponse.self, from: json)
                    for peer in message.peers ?? [] { peers.insert(peer.id) }
                    for peer in message.peersChanged ?? [] { peers.insert(peer.id) }
                }
            }
            return peers.count == 700
        }
        let after = try await channel.eventLoop.submit { (stall.bodyWrites, stall.peakHeldBytes) }.get()
        XCTAssertGreaterThan(after.0, whileBlocked)
        XCTAssertLessThanOrEqual(after.1, piece)
        XCTAssertLessThanOrEqual(account.peakStreamBytes, piece)
        _ = try? await channel.finish()
    }
}
