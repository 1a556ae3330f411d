import XCTest
import WarrenTestSupport
@testable import WireGuardProtocol

final class HandshakeTests: XCTestCase {
    func testTwoPeersHandshakeAndExchangeTransportBothWays() throws {
        for psk in [false, true] {
            var pair = Pair(seed: psk ? 7 : 8, psk: psk)
            let clock = MockClock()
            let (ka, kb) = try pair.handshake(clock: clock)
            XCTAssertTrue(ka.isInitiator)
            XCTAssertFalse(kb.isInitiator)
            XCTAssertEqual(ka.remoteIndex, kb.localIndex)
            XCTAssertEqual(kb.remoteIndex, ka.localIndex)

            let packet = Array("hello over wireguard".utf8)
            let m1 = try XCTUnwrap(ka.seal(packet: packet))
            XCTAssertEqual(m1.count, 16 + 32 + 16, "20 bytes padded to 32, plus header and tag")
            XCTAssertEqual(MessageType(datagram: m1), .transportData)
            let p1 = try XCTUnwrap(kb.open(message: m1, now: clock.now))
            XCTAssertEqual(Array(p1.prefix(packet.count)), packet)
            XCTAssertTrue(p1.dropFirst(packet.count).allSatisfy { $0 == 0 })

            let back = Array("and back".utf8)
            let m2 = try XCTUnwrap(kb.seal(packet: back))
            let p2 = try XCTUnwrap(ka.open(message: m2, now: clock.now))
            XCTAssertEqual(Array(p2.prefix(back.count)), back)

            // A keepalive is a 32-byte message with an empty payload.
            let keepalive = try XCTUnwrap(ka.seal(packet: []))
            XCTAssertEqual(keepalive.count, 32)
            XCTAssertEqual(kb.open(message: keepalive, now: clock.now), [])

            // Replaying a transport message is refused; a flipped bit is refused.
            XCTAssertNil(kb.open(message: m1, now: clock.now))
            var forged = try XCTUnwrap(ka.seal(packet: packet))
            forged[20] ^= 1
            XCTAssertNil(kb.open(message: forged, now: clock.now))
            // A message for the other direction's index is refused.
            XCTAssertNil(ka.open(message: try XCTUnwrap(ka.seal(packet: packet)), now: clock.now))
        }
    }

    func testMessagesAreByteExactSizes() throws {
        var pair = Pair(seed: 1)
        let clock = MockClock()
        let initiation = try pair.a.createInitiation(senderIndex: 0x0102_0304, timestamp: clock.timestamp, using: &pair.rng)
        let bytes = initiation.bytes
        XCTAssertEqual(bytes.count, 148)
        XCTAssertEqual(Array(bytes[0..<8]), [1, 0, 0, 0, 4, 3, 2, 1])
        XCTAssertEqual(try HandshakeInitiation(bytes: bytes), initiation)
        XCTAssertThrowsError(try HandshakeInitiation(bytes: bytes.dropLast()))
        XCTAssertThrowsError(try HandshakeResponse(bytes: bytes))
        var reserved = bytes
        reserved[1] = 1
        XCTAssertNil(MessageType(datagram: reserved), "non-zero reserved bytes are an unknown type")
        XCTAssertThrowsError(try HandshakeInitiation(bytes: reserved))
    }

    func testReplayedInitiationIsRejected() throws {
        var pair = Pair(seed: 2)
        var clock = MockClock()
        let initiation = try pair.a.createInitiation(senderIndex: 1, timestamp: clock.timestamp, using: &pair.rng)
        let received = try XCTUnwrap(NoiseHandshake.readInitiation(initiation, localStatic: pair.bKey))
        try pair.b.consumeInitiation(received, now: clock.now)
        clock.advance(.seconds(1))
        XCTAssertThrowsError(try pair.b.consumeInitiation(received, now: clock.now)) {
            XCTAssertEqual(($0 as? HandshakeError)?.code, .replayedTimestamp)
        }
    }

    func testStaleTimestampIsRejected() throws {
        var pair = Pair(seed: 3)
        var clock = MockClock()
        let old = try pair.a.createInitiation(senderIndex: 1, timestamp: clock.timestamp, using: &pair.rng)
        clock.advance(.seconds(2))
        let new = try pair.a.createInitiation(senderIndex: 2, timestamp: clock.timestamp, using: &pair.rng)
        try pair.b.consumeInitiation(XCTUnwrap(NoiseHandshake.readInitiation(new, localStatic: pair.bKey)), now: clock.now)
        clock.advance(.seconds(1))
        XCTAssertThrowsError(try pair.b.consumeInitiation(
            XCTUnwrap(NoiseHandshake.readInitiation(old, localStatic: pair.bKey)), now: clock.now)) {
            XCTAssertEqual(($0 as? HandshakeError)?.code, .replayedTimestamp)
        }
        // A timestamp equal to the last accepted one is not newer either.
        let same = try pair.a.createInitiation(senderIndex: 3, timestamp: TAI64N(sinceUnixEpoch: clock.wall - .seconds(1)),
                                               using: &pair.rng)
        XCTAssertThrowsError(try pair.b.consumeInitiation(
            XCTUnwrap(NoiseHandshake.readInitiation(same, localStatic: pair.bKey)), now: clock.now)) {
            XCTAssertEqual(($0 as? HandshakeError)?.code, .replayedTimestamp)
        }
    }

    func testInitiationFloodLimit() throws {
        var pair = Pair(seed: 4)
        var clock = MockClock()
        let first = try pair.a.createInitiation(senderIndex: 1, timestamp: clock.timestamp, using: &pair.rng)
        try pair.b.consumeInitiation(XCTUnwrap(NoiseHandshake.readInitiation(first, localStatic: pair.bKey)), now: clock.now)
        clock.advance(.milliseconds(20))
        let second = try pair.a.createInitiation(senderIndex: 2, timestamp: clock.timestamp, using: &pair.rng)
        XCTAssertThrowsError(try pair.b.consumeInitiation(
            XCTUnwrap(NoiseHandshake.readInitiation(second, localStatic: pair.bKey)), now: clock.now)) {
            XCTAssertEqual(($0 as? HandshakeError)?.code, .flood)
        }
        clock.advance(.milliseconds(20))
        let third = try pair.a.createInitiation(senderIndex: 3, timestamp: clock.timestamp, using: &pair.rng)
        XCTAssertNoThrow(try pair.b.consumeInitiation(
            XCTUnwrap(NoiseHandshake.readInitiation(third, localStatic: pair.bKey)), now: clock.now))
    }

    func testInitiationToAnotherKeyDoesNotDecrypt() throws {
        var pair = Pair(seed: 5)
        let clock = MockClock()
        let initiation = try pair.a.createInitiation(senderIndex: 1, timestamp: clock.timestamp, using: &pair.rng)
        XCTAssertNil(NoiseHandshake.readInitiation(initiation, localStatic: pair.aKey))
        var tampered = initiation
        tampered.encryptedTimestamp[0] ^= 1
        let received = try XCTUnwrap(NoiseHandshake.readInitiation(tampered, localStatic: pair.bKey))
        XCTAssertThrowsError(try pair.b.consumeInitiation(received, now: clock.now))
    }

    func testResponseOnlyAfterInitiationAndForOurIndex() throws {
        var pair = Pair(seed: 6)
        let clock = MockClock()
        let initiation = try pair.a.createInitiation(senderIndex: 11, timestamp: clock.timestamp, using: &pair.rng)
        try pair.b.consumeInitiation(XCTUnwrap(NoiseHandshake.readInitiation(initiation, localStatic: pair.bKey)), now: clock.now)
        var response = try pair.b.createResponse(senderIndex: 22, using: &pair.rng)
        XCTAssertEqual(response.receiverIndex, 11)
        var wrong = response
        wrong.receiverIndex = 12
        XCTAssertThrowsError(try pair.a.consumeResponse(wrong))
        response.encryptedNothing[3] ^= 0x80
        XCTAssertThrowsError(try pair.a.consumeResponse(response))
        XCTAssertEqual(pair.a.state, .initiationCreated)
        XCTAssertThrowsError(try pair.a.deriveKeypair(now: clock.now), "no keys before a valid response")
        XCTAssertThrowsError(try pair.b.consumeResponse(response), "the responder never takes a response")
    }
}
