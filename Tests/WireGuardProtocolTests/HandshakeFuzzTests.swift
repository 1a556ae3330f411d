import XCTest
import WarrenPacket
import WarrenTestSupport
@testable import WireGuardProtocol

/// Bounded fuzzing of the handshake consumers with the message type and size kept right, so that
/// every input reaches the Diffie-Hellman and AEAD code instead of failing on the first check.
/// An input is only ever accepted when the fields the Noise protocol authenticates are intact.
final class HandshakeFuzzTests: XCTestCase {
    /// `bytes` cut or zero-padded to `size`, with the type field set to `type`.
    func shaped(_ bytes: [UInt8], type: MessageType, size: Int) -> [UInt8] {
        var b = Array(bytes.prefix(size))
        if b.count < size { b += [UInt8](repeating: 0, count: size - b.count) }
        b.replaceSubrange(0..<4, with: [UInt8(type.rawValue), 0, 0, 0])
        return b
    }

    func testInitiationConsumerAcceptsOnlyTheAuthenticInitiationOnce() throws {
        var pair = Pair(seed: 71)
        let clock = MockClock()
        var seed = try pair.a.createInitiation(senderIndex: 0x1111, timestamp: clock.timestamp, using: &pair.rng).bytes
        pair.aCookies.addMACs(to: &seed, now: clock.now)
        var responder = pair.b
        var checker = pair.bChecker
        var rng = SeededGenerator(seed: 710)
        var read = 0, accepted = 0, processed = 0
        MutationFuzzer(seeds: [seed], iterations: 1_500, maximumLength: 200, seed: 0x1717).run { raw in
            let bytes = shaped(raw, type: .handshakeInitiation, size: HandshakeInitiation.size)
            if case .process = checker.screen(bytes, source: Array(raw.prefix(6)), underLoad: raw.count % 2 == 0,
                                              now: clock.now, using: &rng) {
                processed += 1
                XCTAssertEqual(Array(bytes[..<HandshakeInitiation.mac2Offset]),
                               Array(seed[..<HandshakeInitiation.mac2Offset]), "MAC1 covers everything before MAC2")
            }
            guard let message = try? HandshakeInitiation(bytes: bytes),
                  let received = NoiseHandshake.readInitiation(message, localStatic: pair.bKey)
            else { return }
            read += 1
            XCTAssertEqual(Array(bytes[8..<88]), Array(seed[8..<88]), "the ephemeral and the sealed static are intact")
            XCTAssertEqual(received.initiatorStatic, pair.aKey.publicKey)
            if (try? responder.consumeInitiation(received, now: clock.now)) != nil {
                accepted += 1
                XCTAssertEqual(Array(bytes[8..<116]), Array(seed[8..<116]))
            }
        }
        XCTAssertEqual(accepted, 1, "the seed itself, once: every later copy is a replay")
        XCTAssertGreaterThan(read, 1, "mutations outside the sealed fields still read")
        XCTAssertGreaterThan(processed, 0)
    }

    func testResponseConsumerAcceptsOnlyTheAuthenticResponse() throws {
        var pair = Pair(seed: 72)
        let clock = MockClock()
        let initiation = try pair.a.createInitiation(senderIndex: 0x2222, timestamp: clock.timestamp, using: &pair.rng)
        try pair.b.consumeInitiation(XCTUnwrap(NoiseHandshake.readInitiation(initiation, localStatic: pair.bKey)),
                                     now: clock.now)
        var seed = try pair.b.createResponse(senderIndex: 0x3333, using: &pair.rng).bytes
        var toA = CookieGenerator(remotePublicKey: pair.aKey.publicKey)
        toA.addMACs(to: &seed, now: clock.now)
        let waiting = pair.a  // initiationCreated, local index 0x2222
        var accepted = 0
        MutationFuzzer(seeds: [seed], iterations: 1_500, maximumLength: 120, seed: 0x2727).run { raw in
            var bytes = shaped(raw, type: .handshakeResponse, size: HandshakeResponse.size)
            // Mostly keep the receiver index, so that the input reaches the key exchange.
            if raw.count % 4 != 0 { bytes.replaceSubrange(8..<12, with: [0x22, 0x22, 0, 0]) }
            guard let message = try? HandshakeResponse(bytes: bytes) else { return XCTFail("shaped bytes parse") }
            var h = waiting
            if (try? h.consumeResponse(message)) != nil {
                accepted += 1
                XCTAssertEqual(Array(bytes[8..<60]), Array(seed[8..<60]), "receiver index, ephemeral, sealed empty")
                XCTAssertEqual(h.state, .responseConsumed)
            } else {
                XCTAssertEqual(h.state, .initiationCreated, "a refused response leaves the handshake waiting")
            }
        }
        XCTAssertGreaterThanOrEqual(accepted, 1)
    }

    func testCookieReplyConsumerAcceptsOnlyTheAuthenticReply() throws {
        var pair = Pair(seed: 73)
        let clock = MockClock()
        var rng = SeededGenerator(seed: 730)
        var initiation = try pair.a.createInitiation(senderIndex: 0x4444, timestamp: clock.timestamp, using: &pair.rng).bytes
        pair.aCookies.addMACs(to: &initiation, now: clock.now)
        let seed = try XCTUnwrap(pair.bChecker.makeReply(to: initiation, source: [10, 0, 0, 1, 0, 1], now: clock.now,
                                                         using: &rng)).bytes
        let generator = pair.aCookies
        var accepted = 0
        MutationFuzzer(seeds: [seed], iterations: 3_000, maximumLength: 100, seed: 0x3737).run { raw in
            let bytes = shaped(raw, type: .cookieReply, size: CookieReply.size)
            guard let reply = try? CookieReply(bytes: bytes) else { return XCTFail("shaped bytes parse") }
            var g = generator
            if g.consume(reply, now: clock.now) {
                accepted += 1
                XCTAssertEqual(Array(bytes[8...]), Array(seed[8...]), "nonce and sealed cookie intact")
                XCTAssertTrue(g.hasFreshCookie(now: clock.now))
            } else {
                XCTAssertFalse(g.hasFreshCookie(now: clock.now))
            }
        }
        XCTAssertGreaterThanOrEqual(accepted, 1)
    }

    func testTransportPayloadOpenInPlaceNeverTraps() throws {
        var pair = Pair(seed: 74)
        let (sender, receiver) = try pair.handshake(clock: MockClock())
        let seeds = try [[], Array(repeating: 0x45, count: 100)].map { try XCTUnwrap(sender.seal(packet: $0)) }
        var opened = 0
        MutationFuzzer(seeds: seeds, iterations: 5_000, maximumLength: 300, seed: 0x4747).run { bytes in
            if let header = bytes.withUnsafeBytes({ TransportHeader(messageBuffer: $0) }) {
                var payload = Array(bytes[TransportHeader.size...])
                if let n = payload.withUnsafeMutableBytes({ receiver.openInPlace($0, counter: header.counter) }) {
                    opened += 1
                    XCTAssertTrue(seeds.contains { Array($0[8...]) == Array(bytes[8...]) },
                                  "only messages with the sealed counter and payload intact authenticate")
                    XCTAssertEqual(n, bytes.count - 32)
                }
            }
        }
        XCTAssertGreaterThanOrEqual(opened, seeds.count)
    }

    func testAllowedIPsPacketLookupsNeverTrap() {
        var table = AllowedIPs<Int>()
        for (i, text) in ["10.0.0.0/8", "10.1.2.3/32", "0.0.0.0/0", "fd7a:115c:a1e0::/48", "::/0", "2001:db8::1/128"]
            .enumerated() {
            table.insert(IPPrefix(text)!, peer: i)
        }
        var v4 = [UInt8](repeating: 0, count: 28)
        v4[0] = 0x45
        v4.replaceSubrange(12..<20, with: [10, 1, 2, 3, 192, 0, 2, 1])
        var v6 = [UInt8](repeating: 0, count: 48)
        v6[0] = 0x60
        v6.replaceSubrange(8..<14, with: [0xFD, 0x7A, 0x11, 0x5C, 0xA1, 0xE0])
        v6[39] = 1
        var found = 0
        MutationFuzzer(seeds: [v4, v6], iterations: 20_000, maximumLength: 80, seed: 0x5757).run { bytes in
            let source = table.lookupSource(packet: bytes)
            let destination = table.lookupDestination(packet: bytes)
            XCTAssertEqual(bytes.withUnsafeBytes { table.lookupSource(packet: $0) }, source)
            // The same answer as looking up the address read by hand.
            var expected: (Int?, Int?) = (nil, nil)
            if let first = bytes.first, first >> 4 == 4, bytes.count >= 20 {
                expected = (table.lookup(IPAddress(bytes: bytes[12..<16])!), table.lookup(IPAddress(bytes: bytes[16..<20])!))
            } else if let first = bytes.first, first >> 4 == 6, bytes.count >= 40 {
                expected = (table.lookup(IPAddress(bytes: bytes[8..<24])!), table.lookup(IPAddress(bytes: bytes[24..<40])!))
            }
            XCTAssertEqual(source, expected.0)
            XCTAssertEqual(destination, expected.1)
            if source != nil { found += 1 }
        }
        XCTAssertGreaterThan(found, 1000)
    }
}
