// Dead-peer detection on the control listener must tell a dead client from one that is alive but not reading: the
// first goes offline within the bound, the second keeps its stream however long its receive window stays shut (a
// full map of 10,000 peers is over a megabyte, and the official client's 4 MiB HTTP/2 window lets all of it in).
// With TCP_USER_TIMEOUT, which this used before, the kernel ended the slow reader's connection without telling it.

import Foundation
import TailscaleKeys
import WarrenTailcfg
import XCTest
@testable import WarrenControlServer

extension ControlServerLoopbackTests {
    func testAClientThatStopsReadingKeepsItsStreamAndGetsItsWholeMapWhenItReadsAgain() async throws {
        // A short bound, so that the wait below is several times it.
        let watch = DeadPeerDetection(idle: .seconds(1), interval: .seconds(1), probes: 2, unacknowledgedTimeout: .seconds(2))
        let h = try await makeServer(deadPeerDetection: watch)
        defer { Task { await h.server.close() } }
        let key = try await createKey(h.store)
        // 800 peers: an uncompressed full map of about 600 KB, far more than the reader's socket holds unread.
        for i in 0..<800 {
            let peer = TestControlClient(port: h.port, seed: UInt64(10_000 + i))
            let r = await h.engine.register(peer.registerRequest(authKey: key, hostname: "peer-\(i)"),
                                            machineKey: peer.machineKey.publicKey)
            XCTAssertEqual(r.error, "")
        }
        let reader = TestControlClient(port: h.port, seed: 1)
        try await reader.connect(controlKey: h.controlKey)
        let registered = try await reader.register(reader.registerRequest(authKey: key, hostname: "reader"))
        XCTAssertEqual(registered.error, "")
        let readerNode = await h.engine.node(withNodeKey: reader.nodeKey.publicKey)
        let id = try XCTUnwrap(readerNode?.id)

        // Open the stream and stop reading as its full map arrives: the rest piles up in the sockets and the window
        // shuts.
        let (status, messages) = try await reader.map(reader.mapRequest(stream: true, compress: false))
        try await reader.setReading(false)
        XCTAssertEqual(status, 200)
        // Five bounds and more: a watch that took a shut window for a dead client would have cut it by now.
        try await Task.sleep(for: .seconds(12))
        let stillOnline = await h.engine.isOnline(id)
        XCTAssertTrue(stillOnline, "the server ended the stream of a client that was only not reading")
        try await reader.setReading(true)
        var iterator = messages.makeAsyncIterator()
        let full = try await next(&iterator)
        XCTAssertEqual(full.peers?.count, 800, "the whole full map arrived once the client read again")
        await reader.close()
    }

    func testPeerLivenessTellsADeadPeerFromAShutWindow() {
        let limit = Duration.seconds(10)
        // Data in flight and nothing acknowledged for 10 s: dead (the kernel would retransmit for 15 minutes).
        XCTAssertTrue(PeerLiveness(unacknowledgedSegments: 3, unansweredProbes: 0, millisecondsSinceLastAck: 10_000).isDead(after: limit))
        XCTAssertFalse(PeerLiveness(unacknowledgedSegments: 3, unansweredProbes: 0, millisecondsSinceLastAck: 9_999).isDead(after: limit))
        // Window probes unanswered for 10 s: dead.
        XCTAssertTrue(PeerLiveness(unacknowledgedSegments: 0, unansweredProbes: 4, millisecondsSinceLastAck: 12_000).isDead(after: limit))
        // A shut window whose probes are answered: nothing in flight, nothing unanswered, however old the last ACK.
        XCTAssertFalse(PeerLiveness(unacknowledgedSegments: 0, unansweredProbes: 0, millisecondsSinceLastAck: 600_000).isDead(after: limit))
        // Idle: the same.
        XCTAssertFalse(PeerLiveness(unacknowledgedSegments: 0, unansweredProbes: 0, millisecondsSinceLastAck: 50).isDead(after: limit))
        XCTAssertTrue(PeerLiveness(unacknowledgedSegments: 1, unansweredProbes: 0, millisecondsSinceLastAck: 2_500)
            .isDead(after: .milliseconds(2_500)))
        XCTAssertEqual(DeadPeerDetection.standard.bound, .seconds(14))
    }
}
