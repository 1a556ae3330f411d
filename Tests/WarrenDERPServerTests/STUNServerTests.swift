// The STUN server over loopback UDP, IPv4 and IPv6.

import NIOCore
import NIOPosix
import STUNProtocol
@testable import WarrenDERPServer
import WarrenPacket
import WarrenTestSupport
import XCTest

final class STUNServerTests: XCTestCase {
    private func exchange(server host: String) async throws {
        let stun = STUNServer(addresses: [(host, 0)])
        let bound: [SocketAddress]
        do { bound = try await stun.bind() } catch {
            throw XCTSkip("cannot bind \(host) here: \(error)")
        }
        defer { stun.close() }
        let serverAddress = try XCTUnwrap(bound.first)
        let replies = AsyncStream<AddressedEnvelope<ByteBuffer>>.makeStream()
        let client = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(DatagramCollector(continuation: replies.continuation))
                }
            }
            .bind(host: host, port: 0).get()
        defer { client.close(promise: nil) }
        let stream = replies.stream

        // Malformed and non-Tailscale requests get no answer.
        var rng = SeededGenerator(seed: 0x57)
        let transactionID = rng.bytes(count: 12)
        let request = try STUNBinding.request(transactionID: transactionID)
        var broken = request
        broken[broken.count - 1] ^= 1  // fingerprint no longer matches
        for junk in [broken, [0, 1, 2], Array(request.prefix(20))] {
            try await client.writeAndFlush(AddressedEnvelope(remoteAddress: serverAddress, data: client.allocator.buffer(bytes: junk)))
        }
        try await assertEventually { stun.counts.dropped == 3 }
        XCTAssertEqual(stun.counts.answered, 0)

        try await client.writeAndFlush(AddressedEnvelope(remoteAddress: serverAddress, data: client.allocator.buffer(bytes: request)))
        let reply = try await withDeadline { () -> AddressedEnvelope<ByteBuffer> in
            for await reply in stream { return reply }
            throw DeadlineExceeded()
        }
        let parsed = try STUNBinding.parseResponse(reply.data.readableBytesView)
        XCTAssertEqual(parsed.transactionID, transactionID)
        let local = try XCTUnwrap(client.localAddress)
        XCTAssertEqual(parsed.address, IPAddress(try XCTUnwrap(local.ipAddress)))
        XCTAssertEqual(Int(parsed.port), local.port)
        XCTAssertEqual(stun.counts.answered, 1)
        XCTAssertTrue(STUNMessage.verifyFingerprint(Array(reply.data.readableBytesView)))
    }

    func testBindingOverIPv4() async throws { try await exchange(server: "127.0.0.1") }

    func testBindingOverIPv6() async throws { try await exchange(server: "::1") }

    func testFuzzedDatagramsNeverCrash() throws {
        let stun = STUNServer(addresses: [])
        var rng = SeededGenerator(seed: 0x58)
        let seeds = [try STUNBinding.request(transactionID: rng.bytes(count: 12))]
        let from = try SocketAddress(ipAddress: "192.0.2.1", port: 4242)
        var answered = 0
        try MutationFuzzer(seeds: seeds, iterations: 5_000, maximumLength: 600, seed: 0x59).run { bytes in
            if let answer = stun.answer(ByteBuffer(bytes: bytes), from: from) {
                answered += 1
                XCTAssertNoThrow(try STUNBinding.parseResponse(answer))
            }
        }
        XCTAssertGreaterThan(answered, 0)
    }
}

final class DatagramCollector: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let continuation: AsyncStream<AddressedEnvelope<ByteBuffer>>.Continuation
    init(continuation: AsyncStream<AddressedEnvelope<ByteBuffer>>.Continuation) { self.continuation = continuation }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) { continuation.yield(unwrapInboundIn(data)) }
}
