import XCTest
import WarrenPacket
import WarrenTestSupport
@testable import WireGuardProtocol

final class KeysAndCookieTests: XCTestCase {
    func testKeyTextForms() throws {
        // RFC 7748 section 6.1: Alice's private and public keys.
        let privHex = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
        let pubHex = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        let priv = try XCTUnwrap(WireGuardPrivateKey(hex: privHex))
        XCTAssertEqual(priv.hex, privHex)
        XCTAssertEqual(priv.publicKey.hex, pubHex)
        XCTAssertEqual(priv.publicKey.base64, "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=")
        XCTAssertEqual(WireGuardPublicKey(base64: priv.publicKey.base64), priv.publicKey)
        XCTAssertEqual(WireGuardPrivateKey(base64: priv.base64), priv)
        XCTAssertEqual(WireGuardPublicKey(hex: pubHex.uppercased()), priv.publicKey)
        XCTAssertNil(WireGuardPublicKey(hex: String(pubHex.dropLast())))
        XCTAssertNil(WireGuardPublicKey(hex: String(pubHex.dropLast()) + "g"))
        XCTAssertNil(WireGuardPublicKey(base64: "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTm=="))
        XCTAssertNil(WireGuardPublicKey(base64: ""))
        XCTAssertThrowsError(try WireGuardPublicKey(rawRepresentation: [UInt8](repeating: 1, count: 31)))
        // RFC 7748 shared secret with Bob's key.
        let bob = try XCTUnwrap(WireGuardPublicKey(hex: "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"))
        XCTAssertEqual(KeyText.hex(try priv.sharedSecret(with: bob)),
                       "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
        // A low-order point gives an all-zero secret: refused.
        XCTAssertThrowsError(try priv.sharedSecret(with: WireGuardPublicKey(rawRepresentation: [UInt8](repeating: 0, count: 32))))
        let psk = try XCTUnwrap(WireGuardPresharedKey(hex: privHex))
        XCTAssertEqual(WireGuardPresharedKey(base64: psk.base64), psk)
    }

    func testGeneratedKeysAreClampedAndDistinct() {
        var rng = SeededGenerator(seed: 5)
        let a = WireGuardPrivateKey(using: &rng), b = WireGuardPrivateKey(using: &rng)
        XCTAssertNotEqual(a, b)
        XCTAssertEqual(a.rawRepresentation[0] & 7, 0)
        XCTAssertEqual(a.rawRepresentation[31] & 0xC0, 0x40)
    }

    func testTAI64N() {
        let t = TAI64N(sinceUnixEpoch: .seconds(1_700_000_000) + .nanoseconds(123_456_789))
        XCTAssertEqual(t.seconds, 0x4000_0000_0000_000A + 1_700_000_000)
        XCTAssertEqual(t.nanoseconds, 123_456_789 & ~0xFF_FFFF, "rounded down to 2^24 ns")
        XCTAssertEqual(Array(t.bytes.prefix(8)), [0x40, 0, 0, 0, 0x65, 0x53, 0xF1, 0x0A])
        XCTAssertEqual(TAI64N(bytes: t.bytes), t)
        XCTAssertLessThan(t, TAI64N(sinceUnixEpoch: .seconds(1_700_000_000) + .milliseconds(200)))
        XCTAssertEqual(t, TAI64N(sinceUnixEpoch: .seconds(1_700_000_000) + .nanoseconds(123_456_999)))
    }

    func testPaddingAsWireGuardGo() {
        XCTAssertEqual(TransportHeader.paddingCount(forPacketOfSize: 0, mtu: 1420), 0)
        XCTAssertEqual(TransportHeader.paddingCount(forPacketOfSize: 1, mtu: 1420), 15)
        XCTAssertEqual(TransportHeader.paddingCount(forPacketOfSize: 16, mtu: 1420), 0)
        XCTAssertEqual(TransportHeader.paddingCount(forPacketOfSize: 1419, mtu: 1420), 1, "never past the MTU")
        XCTAssertEqual(TransportHeader.paddingCount(forPacketOfSize: 1418, mtu: 1420), 2)
        XCTAssertEqual(TransportHeader.paddingCount(forPacketOfSize: 1415, mtu: 0), 9)
    }

    func testBadMAC1IsDropped() throws {
        var pair = Pair(seed: 31)
        var clock = MockClock()
        let initiation = try pair.a.createInitiation(senderIndex: 1, timestamp: clock.timestamp, using: &pair.rng)
        var bytes = initiation.bytes
        pair.aCookies.addMACs(to: &bytes, now: clock.now)
        XCTAssertTrue(pair.bChecker.checkMAC1(bytes))
        XCTAssertEqual(pair.bChecker.screen(bytes, source: [1], underLoad: false, now: clock.now, using: &pair.rng), .process)
        for i in [0, 8, 100, 116, 131] {
            var bad = bytes
            bad[i] ^= 0x10
            XCTAssertEqual(pair.bChecker.screen(bad, source: [1], underLoad: false, now: clock.now, using: &pair.rng), .drop)
        }
        // MAC2 is not covered by MAC1 and does not matter when not under load.
        var mac2 = bytes
        mac2[140] ^= 1
        XCTAssertEqual(pair.bChecker.screen(mac2, source: [1], underLoad: false, now: clock.now, using: &pair.rng), .process)
        // A message sent to another key fails MAC1.
        var toOther = CookieGenerator(remotePublicKey: pair.aKey.publicKey)
        var other = initiation.bytes
        toOther.addMACs(to: &other, now: clock.now)
        XCTAssertFalse(pair.bChecker.checkMAC1(other))
        clock.advance(.seconds(1))
    }

    func testCookieRoundTripAndExpiry() throws {
        var pair = Pair(seed: 32)
        var clock = MockClock()
        var rng = SeededGenerator(seed: 320)
        let source = CookieChecker.sourceBytes(address: IPAddress("192.0.2.7")!, port: 51820)
        XCTAssertEqual(source, [192, 0, 2, 7, 0x6C, 0xCA], "IP then the port little-endian")
        func initiation() throws -> [UInt8] {
            var b = try pair.a.createInitiation(senderIndex: 9, timestamp: clock.timestamp, using: &rng).bytes
            pair.aCookies.addMACs(to: &b, now: clock.now)
            return b
        }
        let first = try initiation()
        XCTAssertEqual(Array(first[132...]), [UInt8](repeating: 0, count: 16), "no cookie yet: MAC2 is zero")
        guard case .reply(let reply) = pair.bChecker.screen(first, source: source, underLoad: true, now: clock.now,
                                                            using: &rng) else { return XCTFail("expected a cookie reply") }
        XCTAssertEqual(reply.receiverIndex, 9)
        XCTAssertEqual(reply.bytes.count, 64)
        // A reply whose associated data (our MAC1) does not match is refused.
        var tampered = reply
        tampered.encryptedCookie[0] ^= 1
        XCTAssertFalse(pair.aCookies.consume(tampered, now: clock.now))
        XCTAssertTrue(pair.aCookies.consume(try CookieReply(bytes: reply.bytes), now: clock.now))
        clock.advance(.seconds(5))
        let second = try initiation()
        XCTAssertEqual(pair.bChecker.screen(second, source: source, underLoad: true, now: clock.now, using: &rng), .process)
        XCTAssertFalse(pair.bChecker.checkMAC2(second, source: source + [0], now: clock.now), "bound to the source address")
        // The initiator stops using the cookie after 120 s.
        clock.advance(.seconds(116))
        let third = try initiation()
        XCTAssertEqual(Array(third[132...]), [UInt8](repeating: 0, count: 16))
        // And the responder's secret changes every 120 s: old cookies stop working.
        XCTAssertFalse(pair.bChecker.checkMAC2(second, source: source, now: clock.now))
    }
}
