import XCTest
import WarrenTestSupport
@testable import WireGuardProtocol

/// Bounded mutation fuzzing of everything that reads bytes from the network.
final class FuzzTests: XCTestCase {
    /// Valid messages of all four types, to mutate.
    /// Returns the pair, the seeds, and the initiator's keypair (which opens the transport seeds).
    func seeds() throws -> (Pair, [[UInt8]], Keypair) {
        var pair = Pair(seed: 99)
        let clock = MockClock()
        let initiation = try pair.a.createInitiation(senderIndex: 5, timestamp: clock.timestamp, using: &pair.rng)
        var initBytes = initiation.bytes
        pair.aCookies.addMACs(to: &initBytes, now: clock.now)
        try pair.b.consumeInitiation(XCTUnwrap(NoiseHandshake.readInitiation(initiation, localStatic: pair.bKey)), now: clock.now)
        let response = try pair.b.createResponse(senderIndex: 6, using: &pair.rng).bytes
        let bKeys = try pair.b.deriveKeypair(now: clock.now)
        var checker = pair.bChecker
        let reply = try XCTUnwrap(checker.makeReply(to: initBytes, source: [127, 0, 0, 1, 0x39, 0x30], now: clock.now,
                                                    using: &pair.rng)).bytes
        let transport = try XCTUnwrap(bKeys.seal(packet: Array(repeating: 0x45, count: 40)))
        try pair.a.consumeResponse(HandshakeResponse(bytes: response))
        let aKeys = try pair.a.deriveKeypair(now: clock.now)
        return (pair, [initBytes, response, reply, transport, try XCTUnwrap(bKeys.seal(packet: []))], aKeys)
    }

    func testMessageDecodersNeverTrap() throws {
        let (_, seeds, _) = try seeds()
        var counts = [0, 0, 0, 0, 0]
        MutationFuzzer(seeds: seeds, iterations: 30_000, maximumLength: 300).run { bytes in
            if MessageType(datagram: bytes) != nil { counts[0] += 1 }
            if let m = try? HandshakeInitiation(bytes: bytes) {
                counts[1] += 1
                XCTAssertEqual(m.bytes, bytes, "round trip")
            }
            if let m = try? HandshakeResponse(bytes: bytes) {
                counts[2] += 1
                XCTAssertEqual(m.bytes, bytes)
            }
            if let m = try? CookieReply(bytes: bytes) {
                counts[3] += 1
                XCTAssertEqual(m.bytes, bytes)
            }
            if let h = try? TransportHeader(message: bytes) {
                counts[4] += 1
                XCTAssertEqual(h.bytes, Array(bytes.prefix(16)))
                XCTAssertEqual(bytes.withUnsafeBytes { TransportHeader(messageBuffer: $0) }, h)
            }
            _ = TAI64N(bytes: bytes)
        }
        XCTAssertTrue(counts.allSatisfy { $0 > 10 }, "the fuzzer reached every decoder: \(counts)")
    }

    func testTransportOpenNeverTrapsNorAcceptsForgeries() throws {
        let (_, seeds, aKeys) = try seeds()
        let clock = MockClock()
        var accepted = 0
        MutationFuzzer(seeds: Array(seeds[3...]), iterations: 5_000, maximumLength: 200).run { bytes in
            if aKeys.open(message: bytes, now: clock.now) != nil { accepted += 1 }
        }
        // The two unmodified seeds are accepted once each (the fuzzer runs them first); replays
        // and every mutation are refused.
        XCTAssertEqual(accepted, 2)
    }

    /// The receive path of a whole node (screening, handshake, cookies, transport) on mutated
    /// datagrams of every type, with and without load.
    func testResponderHandlesArbitraryHandshakeMessages() throws {
        let (_, seeds, _) = try seeds()
        var net = Network(seed: 3)
        net.a.send([0x45] + Array(repeating: 0, count: 19), clock: net.clock)
        net.flush()
        let sessionKeypair = net.b.session.keypairs.current
        XCTAssertNotNil(sessionKeypair)
        // Seeds addressed to this node, too.
        var live = seeds
        let actions = net.a.withIndices { s, rng, next in
            s.initiateHandshake(now: net.clock.now + .seconds(6), timestamp: net.clock.timestamp, using: &rng, newIndex: next)
        }
        for case .sendHandshakeInitiation(let bytes) in actions { live.append(bytes) }
        var underLoad = false
        MutationFuzzer(seeds: live, iterations: 4_000, maximumLength: 200, seed: 0xF00D).run { bytes in
            underLoad.toggle()
            net.b.underLoad = underLoad
            net.b.receive(bytes, from: "fuzz", clock: net.clock)
            // Bypass MAC1 too, to reach the Noise code with mutated fields.
            if let m = try? HandshakeInitiation(bytes: bytes),
               let r = NoiseHandshake.readInitiation(m, localStatic: net.b.key) {
                var h = net.b.session.handshake
                _ = try? h.consumeInitiation(r, now: net.clock.now)
            }
            if let m = try? HandshakeResponse(bytes: bytes) {
                var h = net.a.session.handshake
                _ = try? h.consumeResponse(m)
            }
            if let c = try? CookieReply(bytes: bytes) {
                var g = net.a.session.cookies
                _ = g.consume(c, now: net.clock.now)
            }
        }
        XCTAssertEqual(net.b.session.endpoint, "A", "no mutated packet authenticated as the peer")
    }
}
