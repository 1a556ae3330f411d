import XCTest
import WarrenTestSupport
@testable import WireGuardProtocol

final class PeerSessionTests: XCTestCase {
    let ping = Array("ping ping ping".utf8)
    let pong = Array("pong".utf8)

    /// A sends data, which starts the handshake; returns with the session up both ways.
    func established(seed: UInt64 = 1, aPersistentKeepalive: Duration? = nil) -> Network {
        var net = Network(seed: seed, aPersistentKeepalive: aPersistentKeepalive)
        net.a.send(ping, clock: net.clock)
        net.flush()
        return net
    }

    func testDataStartsHandshakeAndFlowsBothWays() throws {
        var net = established()
        XCTAssertEqual(net.a.initiationTimes.count, 1)
        XCTAssertEqual(net.a.handshakesCompleted, 1)
        XCTAssertEqual(net.b.handshakesCompleted, 1, "B confirmed its keypair with A's first transport packet")
        XCTAssertEqual(net.b.delivered.map { Array($0.prefix(14)) }, [ping], "the staged packet went out after the handshake")
        XCTAssertNil(net.b.session.keypairs.next)
        XCTAssertNotNil(net.b.session.keypairs.current)
        XCTAssertEqual(net.b.session.endpoint, "A")
        net.b.send(pong, clock: net.clock)
        net.flush()
        XCTAssertEqual(net.a.delivered.map { Array($0.prefix(4)) }, [pong])
        XCTAssertEqual(net.a.initiationTimes.count, 1, "no second handshake")
    }

    func testEndpointFollowsLastAuthenticatedPacket() throws {
        var net = established()
        net.aAddress = "A-roamed"
        net.a.send(ping, clock: net.clock)
        net.flush()
        XCTAssertEqual(net.b.session.endpoint, "A-roamed")
        // A forged transport message from elsewhere changes nothing.
        var forged = try XCTUnwrap(net.a.session.keypairs.current?.seal(packet: ping))
        forged[forged.count - 1] ^= 1
        net.b.receive(forged, from: "evil", clock: net.clock)
        XCTAssertEqual(net.b.session.endpoint, "A-roamed")
    }

    func testRekeyIsInitiatedAt120SecondsOnSend() throws {
        var net = established()
        let start = net.clock.now
        net.clock.advance(.seconds(119))
        net.a.send(ping, clock: net.clock)
        net.b.send(pong, clock: net.clock)
        XCTAssertEqual(net.a.initiationTimes.count, 1, "not before REKEY_AFTER_TIME")
        net.flush()
        net.clock.advance(.seconds(1) + .milliseconds(1))
        let first = try XCTUnwrap(net.a.session.keypairs.current)
        net.a.send(ping, clock: net.clock)
        XCTAssertEqual(net.a.initiationTimes.count, 2, "the initiator rekeys once its keypair is older than 120 s")
        XCTAssertEqual(net.a.initiationTimes.last, start + .seconds(120) + .milliseconds(1))
        net.flush()
        XCTAssertFalse(first === net.a.session.keypairs.current)
        XCTAssertTrue(first === net.a.session.keypairs.previous)
        // The responder does not rekey on age when sending.
        XCTAssertEqual(net.b.initiationTimes.count, 0)
    }

    func testSessionRefusedAt180Seconds() throws {
        var net = established()
        let keypairA = try XCTUnwrap(net.a.session.keypairs.current)
        let keypairB = try XCTUnwrap(net.b.session.keypairs.current)
        net.clock.advance(.seconds(179))
        let late = try XCTUnwrap(keypairA.seal(packet: ping))
        XCTAssertTrue(keypairA.canSend(now: net.clock.now))
        net.clock.advance(.seconds(1))
        XCTAssertFalse(keypairA.canSend(now: net.clock.now), "REJECT_AFTER_TIME: no sending at 180 s")
        XCTAssertTrue(keypairB.canReceive(now: net.clock.now))
        net.clock.advance(.milliseconds(1))
        XCTAssertNil(keypairB.open(message: late, now: net.clock.now), "nor receiving after 180 s")
        // The session refuses the keypair and starts a handshake instead.
        let before = net.a.initiationTimes.count
        net.a.send(ping, clock: net.clock)
        XCTAssertEqual(net.a.initiationTimes.count, before + 1)
        XCTAssertEqual(net.a.staged, [ping], "the packet waits for the new session")
        net.flush()
        XCTAssertTrue(net.a.staged.isEmpty)
        XCTAssertFalse(net.a.session.keypairs.current === keypairA)
    }

    func testHandshakeRetriedEvery5SecondsWithJitterThenAbandoned() throws {
        var net = Network(seed: 9)
        net.dropToB = true
        let start = net.clock.now
        net.a.send(ping, clock: net.clock)
        net.run(until: .seconds(200), from: start)
        let times = net.a.initiationTimes.map { $0 - start }
        XCTAssertEqual(times.first, .zero)
        XCTAssertEqual(times.count, 2 + maximumHandshakeRetries, "as wireguard-go: 18 retries counted, one more, then give up")
        var jitters = Set<Duration>()
        for (x, y) in zip(times, times.dropFirst()) {
            let gap = y - x
            XCTAssertGreaterThanOrEqual(gap, .seconds(5))
            XCTAssertLessThan(gap, .seconds(5) + .milliseconds(rekeyTimeoutJitterMaxMilliseconds))
            jitters.insert(gap)
        }
        XCTAssertGreaterThan(jitters.count, 5, "the retry interval is jittered")
        XCTAssertGreaterThanOrEqual(try XCTUnwrap(times.last), WireGuardConstants.rekeyAttemptTime,
                                    "kept trying for REKEY_ATTEMPT_TIME")
        XCTAssertLessThan(try XCTUnwrap(times.last), .seconds(100) + .milliseconds(20 * 334))
        XCTAssertEqual(net.a.gaveUp, 1)
        XCTAssertTrue(net.a.staged.isEmpty, "staged packets dropped on giving up")
        XCTAssertEqual(net.a.session.timers.retransmitHandshakeDeadline, nil)
        // A new packet starts a fresh series.
        net.a.send(ping, clock: net.clock)
        XCTAssertEqual(net.a.initiationTimes.count, 3 + maximumHandshakeRetries)
        XCTAssertEqual(net.a.session.timers.handshakeAttempts, 0)
    }

    func testKeepaliveAfter10SecondsOfReceivedDataWithNothingSent() throws {
        var net = established()
        let start = net.clock.now
        XCTAssertEqual(net.b.keepalivesSent, 0)
        net.run(until: .seconds(9), from: start)
        XCTAssertEqual(net.b.keepalivesSent, 0)
        net.run(until: .seconds(10), from: start)
        XCTAssertEqual(net.b.keepalivesSent, 1, "B answered A's data with a keepalive after KEEPALIVE_TIMEOUT")
        net.run(until: .seconds(60), from: start)
        XCTAssertEqual(net.b.keepalivesSent, 1, "only one")
        XCTAssertEqual(net.a.keepalivesSent, 0, "A's staged data confirmed the session; B's keepalive is not data")
    }

    func testNoKeepaliveWhenDataWasSentBack() throws {
        var net = established()
        let start = net.clock.now
        net.run(until: .seconds(5), from: start)
        net.b.send(pong, clock: net.clock)
        net.flush()
        net.run(until: .seconds(12), from: start)
        XCTAssertEqual(net.b.keepalivesSent, 0)
    }

    func testNewHandshakeWhenSentDataIsNotAnswered() throws {
        var net = established()
        let start = net.clock.now
        net.run(until: .seconds(1), from: start)
        net.dropToA = true
        net.a.send(ping, clock: net.clock)
        net.flush()
        let before = net.a.initiationTimes.count
        net.run(until: .seconds(15), from: start)
        XCTAssertEqual(net.a.initiationTimes.count, before, "B's keepalive is lost; not yet KEEPALIVE + REKEY_TIMEOUT")
        net.run(until: .seconds(17), from: start)
        XCTAssertEqual(net.a.initiationTimes.count, before + 1)
    }

    func testPersistentKeepalive() throws {
        var net = established(aPersistentKeepalive: .seconds(25))
        let start = net.clock.now
        let sentBefore = net.a.keepalivesSent
        // B answers A's first data with a keepalive at 10 s: that is traffic, so A's first
        // persistent keepalive is due 25 s later, at 35 s.
        net.run(until: .seconds(34), from: start)
        XCTAssertEqual(net.b.keepalivesSent, 1)
        XCTAssertEqual(net.a.keepalivesSent, sentBefore)
        net.run(until: .seconds(35), from: start)
        XCTAssertEqual(net.a.keepalivesSent, sentBefore + 1)
        net.run(until: .seconds(100), from: start)
        XCTAssertEqual(net.a.keepalivesSent, sentBefore + 3, "every 25 s while idle: 35, 60, 85")
        XCTAssertEqual(net.b.keepalivesSent, 1, "B has none configured, and keepalives are not data")
    }

    func testPreviousKeypairStillDecryptsAfterRekey() throws {
        var net = established()
        let old = try XCTUnwrap(net.a.session.keypairs.current)
        let inFlight1 = try XCTUnwrap(old.seal(packet: ping))
        let inFlight2 = try XCTUnwrap(old.seal(packet: pong))
        // A rekeys after 121 s.
        net.clock.advance(.seconds(121))
        net.a.send(ping, clock: net.clock)
        net.flush()
        XCTAssertFalse(net.a.session.keypairs.current === old)
        XCTAssertTrue(net.a.session.keypairs.previous === old)
        XCTAssertTrue(net.b.session.keypairs.previous === net.b.session.keypair(forLocalIndex: old.remoteIndex))
        // B still holds the old keypair as previous: the packets sent before the rekey get through.
        let count = net.b.delivered.count
        net.b.receive(inFlight1, from: "A", clock: net.clock)
        net.b.receive(inFlight2, from: "A", clock: net.clock)
        XCTAssertEqual(net.b.delivered.count, count + 2)
        // B answers with the new keypair, which A decrypts.
        net.b.send(pong, clock: net.clock)
        net.flush()
        XCTAssertEqual(net.a.delivered.last.map { Array($0.prefix(4)) }, pong)
    }

    func testKeysErasedAfterThreeTimesRejectAfterTime() throws {
        var net = established()
        let start = net.clock.now
        XCTAssertEqual(net.a.session.timers.zeroKeyMaterialDeadline, start + .seconds(540))
        net.run(until: .seconds(539), from: start)
        XCTAssertNotNil(net.a.session.keypairs.current)
        net.run(until: .seconds(541), from: start)
        XCTAssertNil(net.a.session.keypairs.current)
        XCTAssertNil(net.b.session.keypairs.current)
        XCTAssertEqual(net.a.indices.count, 0, "every index released")
        XCTAssertEqual(net.b.indices.count, 0)
    }

    func testCookiePathUnderLoad() throws {
        var net = Network(seed: 4)
        net.b.underLoad = true
        let start = net.clock.now
        net.a.send(ping, clock: net.clock)
        net.flush()
        XCTAssertEqual(net.b.cookieRepliesSent, 1, "the first initiation has no MAC2: B answers with a cookie")
        XCTAssertNil(net.b.session.keypairs.next)
        XCTAssertNil(net.b.session.keypairs.current)
        XCTAssertTrue(net.a.session.cookies.hasFreshCookie(now: net.clock.now))
        // The retransmission carries MAC2 and is accepted even under load.
        net.run(until: .seconds(6), from: start)
        XCTAssertEqual(net.a.initiationTimes.count, 2)
        XCTAssertEqual(net.b.cookieRepliesSent, 1)
        XCTAssertEqual(net.a.handshakesCompleted, 1)
        XCTAssertEqual(net.b.delivered.map { Array($0.prefix(14)) }, [ping])
        // From another source address the cookie does not fit: a fresh cookie reply, no processing.
        net.clock.advance(.seconds(10))
        net.aAddress = "A-elsewhere"
        let before = net.b.cookieRepliesSent
        let actions = net.a.withIndices { s, rng, next in
            s.initiateHandshake(now: net.clock.now, timestamp: net.clock.timestamp, using: &rng, newIndex: next)
        }
        net.a.handle(actions, clock: net.clock)
        let bNext = net.b.session.keypairs.next
        let bCurrent = net.b.session.keypairs.current
        net.flush()
        XCTAssertEqual(net.b.cookieRepliesSent, before + 1)
        XCTAssertTrue(net.b.session.keypairs.current === bCurrent && net.b.session.keypairs.next === bNext)
    }
}
