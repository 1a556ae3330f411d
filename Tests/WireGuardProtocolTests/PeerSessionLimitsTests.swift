import XCTest
import WarrenTestSupport
@testable import WireGuardProtocol

/// The message limits, the responder's key confirmation, the initiator's last-minute rekey,
/// roaming by handshake and a handshake flood: all on the mock clock, over the in-memory pair.
final class PeerSessionLimitsTests: XCTestCase {
    let ping = Array("ping ping ping".utf8)
    let pong = Array("pong".utf8)

    func established(seed: UInt64 = 1) -> Network {
        var net = Network(seed: seed)
        net.a.send(ping, clock: net.clock)
        net.flush()
        return net
    }

    func transportMessages(_ datagrams: [[UInt8]]) -> [[UInt8]] {
        datagrams.filter { MessageType(datagram: $0) == .transportData }
    }

    func testRekeyAfterMessagesStartsAHandshakeEvenFromTheResponder() throws {
        var net = established()
        let old = try XCTUnwrap(net.b.session.keypairs.current)
        XCTAssertFalse(old.isInitiator, "B answered the first handshake: age alone never makes it rekey")
        old.advanceSendCounter(to: WireGuardConstants.rekeyAfterMessages - 1)
        net.b.send(pong, clock: net.clock)
        XCTAssertEqual(old.sendCounterValue, WireGuardConstants.rekeyAfterMessages)
        XCTAssertEqual(net.b.initiationTimes.count, 0, "not before more than REKEY_AFTER_MESSAGES were sent")
        net.b.send(pong, clock: net.clock)
        XCTAssertEqual(net.b.initiationTimes.count, 1, "more than REKEY_AFTER_MESSAGES sent: B starts a handshake")
        net.flush()
        XCTAssertEqual(net.a.delivered.count, 2, "both packets sent with the old keypair arrived")
        let new = try XCTUnwrap(net.b.session.keypairs.current)
        XCTAssertFalse(new === old)
        XCTAssertTrue(new.isInitiator)
        XCTAssertTrue(net.b.session.keypairs.previous === old)
        XCTAssertEqual(net.a.session.keypairs.current?.localIndex, new.remoteIndex, "A confirmed the new keypair")
    }

    func testRejectAfterMessagesStopsSendingUntilANewSession() throws {
        var net = established()
        let old = try XCTUnwrap(net.a.session.keypairs.current)
        let bOld = try XCTUnwrap(net.b.session.keypairs.current)
        old.advanceSendCounter(to: WireGuardConstants.rejectAfterMessages - 1)
        net.clock.advance(.seconds(6))  // past REKEY_TIMEOUT since the first initiation
        // The last counter below REJECT_AFTER_MESSAGES is still used; a handshake starts at once.
        net.a.send(ping, clock: net.clock)
        XCTAssertEqual(transportMessages(net.a.outbox).count, 1)
        XCTAssertEqual(net.a.initiationTimes.count, 2)
        XCTAssertFalse(old.canSend(now: net.clock.now))
        XCTAssertNil(old.seal(packet: ping), "no counter at or beyond REJECT_AFTER_MESSAGES is handed out")
        // The next packet waits for the new session instead of using the exhausted keypair.
        net.a.send(pong, clock: net.clock)
        XCTAssertEqual(transportMessages(net.a.outbox).count, 1)
        XCTAssertEqual(net.a.staged, [pong])
        // The receiver refuses a counter at the limit even with a valid tag.
        let atLimit = old.seal(packet: ping, counter: WireGuardConstants.rejectAfterMessages)
        XCTAssertNil(bOld.open(message: atLimit, now: net.clock.now))
        net.flush()
        XCTAssertTrue(net.a.staged.isEmpty)
        XCTAssertEqual(net.b.delivered.map { Array($0.prefix(4)) }, [Array(ping.prefix(4)), Array(ping.prefix(4)), pong])
        XCTAssertFalse(net.a.session.keypairs.current === old)
    }

    func testResponderSendsNoDataBeforeTheInitiatorsFirstTransportMessage() throws {
        var net = Network(seed: 21)
        let start = net.a.withIndices { s, rng, next in
            s.initiateHandshake(now: net.clock.now, timestamp: net.clock.timestamp, using: &rng, newIndex: next)
        }
        net.a.handle(start, clock: net.clock)
        XCTAssertEqual(net.a.outbox.count, 1)
        for d in net.a.outbox { net.b.receive(d, from: "A", clock: net.clock) }
        net.a.outbox = []
        XCTAssertNotNil(net.b.session.keypairs.next)
        XCTAssertNil(net.b.session.keypairs.current)
        let response = net.b.outbox
        XCTAssertEqual(response.map { MessageType(datagram: $0) }, [.handshakeResponse])
        net.b.outbox = []

        // B has data for A but only an unconfirmed keypair: it must not encrypt with it.
        net.b.send(pong, clock: net.clock)
        XCTAssertEqual(transportMessages(net.b.outbox), [])
        XCTAssertEqual(net.b.staged, [pong])
        net.b.outbox = []  // (B also starts a handshake of its own, as wireguard-go does; it is lost here)

        // The response reaches A, which confirms the session with a keepalive (it has nothing staged).
        for d in response { net.a.receive(d, from: "B", clock: net.clock) }
        XCTAssertEqual(net.a.keepalivesSent, 1)
        let confirmation = net.a.outbox
        net.a.outbox = []
        XCTAssertEqual(transportMessages(confirmation).count, 1)
        XCTAssertEqual(net.b.staged, [pong], "still waiting")
        for d in confirmation { net.b.receive(d, from: "A", clock: net.clock) }
        XCTAssertNil(net.b.session.keypairs.next)
        XCTAssertNotNil(net.b.session.keypairs.current)
        XCTAssertEqual(net.b.handshakesCompleted, 1)
        XCTAssertTrue(net.b.staged.isEmpty)
        XCTAssertEqual(transportMessages(net.b.outbox).count, 1, "the staged packet left once the keypair was confirmed")
        net.flush()
        XCTAssertEqual(net.a.delivered.map { Array($0.prefix(4)) }, [pong])
    }

    func testInitiatorRekeysWhenReceivingOnAKeypairOlderThan165Seconds() throws {
        var net = established()
        let start = net.clock.now
        let old = try XCTUnwrap(net.a.session.keypairs.current)
        // REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT = 165 s: A is the initiator and
        // would otherwise only rekey when it sends, which it does not do here.
        net.clock.advance(.seconds(165))
        net.b.send(pong, clock: net.clock)
        net.flush()
        XCTAssertEqual(net.a.initiationTimes.count, 1, "not at 165 s exactly")
        net.clock.advance(.milliseconds(1))
        net.dropToB = true
        net.b.send(pong, clock: net.clock)
        net.flush()
        XCTAssertEqual(net.a.initiationTimes.count, 2)
        XCTAssertEqual(net.a.initiationTimes.last, start + .seconds(165) + .milliseconds(1))
        // Once per session: more data after REKEY_TIMEOUT does not send another from this path.
        net.clock.advance(.seconds(5) + .milliseconds(500))
        net.b.send(pong, clock: net.clock)
        net.flush()
        XCTAssertEqual(net.a.initiationTimes.count, 2)
        XCTAssertEqual(net.a.delivered.count, 3)
        // The retransmission gets through, and the new session replaces the old one before 180 s.
        net.dropToB = false
        net.run(until: .seconds(175), from: start)
        XCTAssertEqual(net.a.handshakesCompleted, 2)
        XCTAssertFalse(net.a.session.keypairs.current === old)
        XCTAssertFalse(net.a.session.timers.sentLastMinuteHandshake, "reset by the completed handshake")
    }

    func testEndpointFollowsAuthenticatedHandshakeButNotAReplayedOne() throws {
        var net = established()
        let first = try XCTUnwrap(net.a.initiationsSent.first)
        net.clock.advance(.seconds(10))
        // The first initiation replayed from elsewhere: refused (its timestamp is not newer).
        net.b.receive(first, from: "evil", clock: net.clock)
        XCTAssertEqual(net.b.session.endpoint, "A")
        XCTAssertEqual(net.b.outbox, [], "no response to a replay")
        // A moves and starts a new handshake from its new address: B answers there.
        net.aAddress = "A-moved"
        let actions = net.a.withIndices { s, rng, next in
            s.initiateHandshake(now: net.clock.now, timestamp: net.clock.timestamp, using: &rng, newIndex: next)
        }
        net.a.handle(actions, clock: net.clock)
        net.flush()
        XCTAssertEqual(net.b.session.endpoint, "A-moved")
        XCTAssertEqual(net.a.handshakesCompleted, 2)
    }

    func testSimultaneousInitiationsResolveWithinARetry() throws {
        var net = Network(seed: 41)
        net.b.session.endpoint = "A"
        let start = net.clock.now
        // Both have data at once: the initiations cross, each side answers the other's, and
        // each response arrives for a handshake its receiver has already replaced.
        net.a.send(ping, clock: net.clock)
        net.b.send(pong, clock: net.clock)
        net.flush()
        XCTAssertEqual(net.a.initiationTimes.count, 1)
        XCTAssertEqual(net.b.initiationTimes.count, 1)
        XCTAssertNil(net.a.session.keypairs.current)
        XCTAssertNil(net.b.session.keypairs.current)
        // The first retransmission (the jitter tells them apart) completes a handshake.
        net.run(until: .seconds(6), from: start)
        XCTAssertEqual(net.a.initiationTimes.count + net.b.initiationTimes.count, 3, "one retry in all")
        XCTAssertEqual(net.a.delivered.map { Array($0.prefix(4)) }, [pong])
        XCTAssertEqual(net.b.delivered.map { Array($0.prefix(4)) }, [Array(ping.prefix(4))])
        XCTAssertNil(net.a.session.timers.retransmitHandshakeDeadline)
        XCTAssertNil(net.b.session.timers.retransmitHandshakeDeadline)
        XCTAssertEqual(net.a.session.keypairs.current?.localIndex, net.b.session.keypairs.current?.remoteIndex)
    }

    func testHandshakeFloodUnderLoadStillLetsThePeerThrough() throws {
        var net = Network(seed: 31)
        net.b.underLoad = true
        var rng = SeededGenerator(seed: 310)
        // The attacker knows B's public key, so MAC1 is valid, but it never returns the cookies
        // (spoofed sources): every initiation costs B one cookie reply and no Diffie-Hellman.
        var attacker = NoiseHandshake(localStatic: WireGuardPrivateKey(using: &rng), remoteStatic: net.b.key.publicKey)
        var attackerMACs = CookieGenerator(remotePublicKey: net.b.key.publicKey)
        let template = try attacker.createInitiation(senderIndex: 0, timestamp: net.clock.timestamp, using: &rng)
        for i in 0..<2_000 {
            var message = template
            message.senderIndex = UInt32(i)
            var bytes = message.bytes
            attackerMACs.addMACs(to: &bytes, now: net.clock.now)
            net.b.receive(bytes, from: "spoofed-\(i)", clock: net.clock)
        }
        XCTAssertEqual(net.b.cookieRepliesSent, 2_000)
        XCTAssertEqual(net.b.session.handshake.state, .zeroed)
        net.b.outbox = []
        // The real peer gets a cookie for its own address and comes through on its retry.
        let start = net.clock.now
        net.a.send(ping, clock: net.clock)
        net.flush()
        XCTAssertEqual(net.b.cookieRepliesSent, 2_001)
        XCTAssertEqual(net.a.handshakesCompleted, 0)
        net.run(until: .seconds(6), from: start)
        XCTAssertEqual(net.b.cookieRepliesSent, 2_001)
        XCTAssertEqual(net.a.handshakesCompleted, 1)
        XCTAssertEqual(net.b.delivered.map { Array($0.prefix(14)) }, [ping])
    }
}
