// Admission taken back while connected (issue 14, point 5's sibling): a relay decides admission at login; a key that
// stops being admitted afterwards (node deleted, key expired) is disconnected by the revalidator, promptly, its peers
// are told it is gone, and nothing more is relayed to it or from it.

import DERPProtocol
import Synchronization
import TailscaleKeys
import WarrenDERPClient
import WarrenDERPServer
import XCTest

final class DERPRevocationTests: XCTestCase {
    final class Allowed: Sendable {
        let keys = Mutex<Set<NodePublic>>([])
        func admit(_ key: NodePublic) -> Bool { keys.withLock { $0.contains(key) } }
    }

    private func startRelay(_ allowed: Allowed) async throws -> RelayHarness {
        try await RelayHarness(configure: { $0.admission = { key, _ in allowed.admit(key) } })
    }

    func testAKeyNoLongerAdmittedIsDisconnectedWithinTheIntervalAndItsPeersAreTold() async throws {
        let allowed = Allowed()
        let relay = try await startRelay(allowed)
        defer { relay.stop() }
        let (a, b) = (relay.newKey(), relay.newKey())
        allowed.keys.withLock { $0 = [a.publicKey, b.publicKey] }
        let revalidator = DERPRevalidator(server: relay.server, interval: .milliseconds(200)) { keys in
            allowed.keys.withLock { $0.intersection(keys) }
        }
        let running = Task { try await revalidator.run() }
        defer { running.cancel() }

        let clientA = try await relay.connect(a)
        let clientB = try await relay.connect(b)
        let readerA = FrameReader(clientA)
        let readerB = FrameReader(clientB)
        try await clientB.send([1, 2, 3], to: a.publicKey)
        let first = try await withDeadline(seconds: 10) { try await readerA.nextPacket() }
        XCTAssertEqual(first?.1, [1, 2, 3])

        // A's node is deleted: within the interval (200 ms here; 1 s in warren-control) A's connection ends.
        let started = ContinuousClock.now
        allowed.keys.withLock { _ = $0.remove(a.publicKey) }
        let ended = try await withDeadline(seconds: 5) { try await readerA.next(limit: 1_000_000) { _ in nil as Int? } == nil }
        XCTAssertTrue(ended)
        let took = ContinuousClock.now - started
        XCTAssertLessThan(took, .seconds(2), "revoked after \(took)")
        XCTAssertEqual(relay.server.revokedConnections, 1)
        XCTAssertFalse(relay.server.connectedKeys.contains(a.publicKey))

        // B, which talked to A, is told A is gone; a packet for A is not relayed (PeerGone not-here).
        let gone = try await withDeadline(seconds: 5) {
            try await readerB.next { frame -> DERPPeerGoneReason? in
                if case .peerGone(let key, let reason) = frame, key == a.publicKey { return reason }
                return nil
            }
        }
        XCTAssertEqual(gone, .disconnected)
        try await clientB.send([4], to: a.publicKey)
        let notHere = try await withDeadline(seconds: 5) {
            try await readerB.next { frame -> DERPPeerGoneReason? in
                if case .peerGone(let key, let reason) = frame, key == a.publicKey { return reason }
                return nil
            }
        }
        XCTAssertEqual(notHere, .notHere)
        // A cannot come back: admission refuses it at login.
        do {
            let again = try await relay.connect(a)
            await again.close()
            XCTFail("a revoked key logged in again")
        } catch {}
        // B is untouched.
        _ = try await clientB.ping()
        await clientB.close()
        await clientA.close()
    }

    func testCheckNowRevokesAtOnceWithoutWaitingForTheInterval() async throws {
        let allowed = Allowed()
        let relay = try await startRelay(allowed)
        defer { relay.stop() }
        let a = relay.newKey()
        allowed.keys.withLock { $0 = [a.publicKey] }
        let revalidator = DERPRevalidator(server: relay.server, interval: .seconds(3600)) { keys in
            allowed.keys.withLock { $0.intersection(keys) }
        }
        let running = Task { try await revalidator.run() }
        defer { running.cancel() }
        let clientA = try await relay.connect(a)
        let readerA = FrameReader(clientA)
        // The ticker's first tick (an hour away) has not come: only checkNow() can close it.
        try await Task.sleep(for: .milliseconds(200))
        XCTAssertTrue(relay.server.connectedKeys.contains(a.publicKey))
        allowed.keys.withLock { $0 = [] }
        revalidator.checkNow()
        let ended = try await withDeadline(seconds: 5) { try await readerA.next(limit: 1_000_000) { _ in nil as Int? } == nil }
        XCTAssertTrue(ended)
        XCTAssertEqual(relay.server.revokedConnections, 1)
        await clientA.close()
    }

    /// Frames a revoked connection still has in flight are not relayed: revoke() unregisters before the channel closes,
    /// and the connection handler drops frames of a revoked client. Here a client floods while it is revoked; the peer
    /// receives nothing after the revocation took effect.
    func testAFloodingClientIsCutOffWhenRevoked() async throws {
        let allowed = Allowed()
        let relay = try await startRelay(allowed)
        defer { relay.stop() }
        let (a, b) = (relay.newKey(), relay.newKey())
        allowed.keys.withLock { $0 = [a.publicKey, b.publicKey] }
        let clientA = try await relay.connect(a)
        let clientB = try await relay.connect(b)
        let flood = Task {
            var n: UInt32 = 0
            while !Task.isCancelled {
                n += 1
                do { try await clientA.send(withUnsafeBytes(of: n.bigEndian) { Array($0) }, to: b.publicKey) } catch { return n }
            }
            return n
        }
        try await Task.sleep(for: .milliseconds(300))
        XCTAssertEqual(relay.server.revoke(a.publicKey), 1)
        let relayedAtRevocation = relay.server.statistics.packetsRelayed
        let sent = await flood.value
        try await Task.sleep(for: .milliseconds(300))
        XCTAssertGreaterThan(sent, 10)
        XCTAssertEqual(relay.server.statistics.packetsRelayed, relayedAtRevocation, "packets relayed from a revoked client")
        await clientA.close()
        await clientB.close()
    }
}
