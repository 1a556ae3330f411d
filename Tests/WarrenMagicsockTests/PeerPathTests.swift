// PeerPath: the pure path choice, driven with a fake clock.

import TailscaleKeys
import WarrenMagicsock
import WarrenPacket
import WarrenTailcfg
import XCTest

final class PeerPathTests: XCTestCase {
    let a = AddrPort("192.0.2.1:41641")!
    let b = AddrPort("198.51.100.7:5000")!

    func makePath() -> PeerPath {
        var rng = SystemRandomNumberGenerator()
        var p = PeerPath(nodeKey: NodePrivate.generate(using: &rng).publicKey,
                         discoKey: DiscoPrivate.generate(using: &rng).publicKey, homeDERP: 1)
        p.controlEndpoints = [a, b]
        return p
    }

    func testFirstActivityGoesOverDERPAndStartsDiscovery() {
        var p = makePath()
        let now: Duration = .seconds(100)
        XCTAssertEqual(p.route(now: now), PeerPath.SendRoute(udp: nil, derp: true))
        p.lastActivity = now
        let work = p.work(now: now)
        XCTAssertEqual(work.pings.map(\.0), [a, b])
        XCTAssertTrue(work.callMeMaybe)
        // Nothing again before the minimum ping interval.
        XCTAssertTrue(p.work(now: now + .seconds(1)).isEmpty)
    }

    func testAPongMakesTheDirectPathTrustedAndItExpiresWithoutHeartbeats() {
        var p = makePath()
        let t0: Duration = .seconds(10)
        p.lastActivity = t0
        p.notePingSent(txID: [1], to: a, purpose: .discovery, now: t0)
        XCTAssertNotNil(p.handlePong(txID: [1], from: a, now: t0 + .milliseconds(20)))
        XCTAssertEqual(p.route(now: t0 + .seconds(1)), PeerPath.SendRoute(udp: a, derp: false))
        // After the trust window, untrusted: DERP again, with a copy to the old path.
        XCTAssertEqual(p.route(now: t0 + .seconds(7)), PeerPath.SendRoute(udp: a, derp: true))
    }

    func testAPongFromAnotherAddressOrUnknownTxIDProvesNothing() {
        var p = makePath()
        p.notePingSent(txID: [7], to: a, purpose: .discovery, now: .seconds(1))
        XCTAssertNil(p.handlePong(txID: [7], from: b, now: .seconds(1)))
        XCTAssertNil(p.handlePong(txID: [8], from: a, now: .seconds(1)))
        XCTAssertFalse(p.hasTrustedPath(now: .seconds(1)))
    }

    func testPingsTimeOut() {
        var p = makePath()
        p.notePingSent(txID: [3], to: a, purpose: .discovery, now: .seconds(1))
        XCTAssertNil(p.handlePong(txID: [3], from: a, now: .seconds(7)))
    }

    func testHeartbeatsKeepAnActivePathAndABetterPathWins() {
        var p = makePath()
        var now: Duration = .seconds(5)
        p.lastActivity = now
        _ = p.work(now: now)
        p.notePingSent(txID: [1], to: a, purpose: .discovery, now: now)
        p.notePingSent(txID: [2], to: b, purpose: .discovery, now: now)
        XCTAssertNotNil(p.handlePong(txID: [1], from: a, now: now + .milliseconds(40)))
        XCTAssertNotNil(p.handlePong(txID: [2], from: b, now: now + .milliseconds(5)))
        XCTAssertEqual(p.bestAddress, b)
        // Three seconds later an active peer gets a heartbeat to the best path.
        now += .seconds(3)
        p.lastActivity = now
        let work = p.work(now: now)
        XCTAssertEqual(work.pings.map(\.0), [b])
        XCTAssertEqual(work.pings.first?.1, .heartbeat)
    }

    func testCallMeMaybeAddsCandidatesThatExpire() {
        var p = makePath()
        let c = AddrPort("203.0.113.9:1234")!
        p.noteCallMeMaybe([c], now: .seconds(1))
        XCTAssertTrue(p.candidates(now: .seconds(2)).contains(c))
        XCTAssertFalse(p.candidates(now: .seconds(120)).contains(c))
        let forced = p.work(now: .seconds(2), force: true)
        XCTAssertTrue(forced.pings.map(\.0).contains(c))
    }

    func testNoDiscoKeyNoPings() {
        var rng = SystemRandomNumberGenerator()
        var p = PeerPath(nodeKey: NodePrivate.generate(using: &rng).publicKey, discoKey: nil, homeDERP: 1)
        p.controlEndpoints = [a]
        p.lastActivity = .seconds(1)
        XCTAssertTrue(p.work(now: .seconds(1), force: true).isEmpty)
    }

    func testResetForgetsThePath() {
        var p = makePath()
        p.notePingSent(txID: [1], to: a, purpose: .discovery, now: .seconds(1))
        _ = p.handlePong(txID: [1], from: a, now: .seconds(1))
        XCTAssertTrue(p.hasTrustedPath(now: .seconds(2)))
        p.resetPath()
        XCTAssertFalse(p.hasTrustedPath(now: .seconds(2)))
        XCTAssertEqual(p.route(now: .seconds(2)), PeerPath.SendRoute(udp: nil, derp: true))
    }
    func testAnotherAddressWinsAtOnceWhenTheBestOneMissedAHeartbeat() {
        var p = makePath()
        let moved = AddrPort("192.0.2.1:60123")!
        p.notePingSent(txID: [1], to: a, purpose: .discovery, now: .seconds(10))
        _ = p.handlePong(txID: [1], from: a, now: .milliseconds(10_010))
        // The peer's NAT forgets its mapping: our heartbeat to `a` goes unanswered, and the peer pings from
        // a new port; our ping back there is answered long before `a`'s trust would run out.
        p.notePingSent(txID: [2], to: a, purpose: .heartbeat, now: .seconds(13))
        p.noteCallMeMaybe([moved], now: .milliseconds(13_500))
        p.notePingSent(txID: [3], to: moved, purpose: .discovery, now: .milliseconds(13_500))
        _ = p.handlePong(txID: [3], from: moved, now: .milliseconds(13_520))
        XCTAssertEqual(p.bestAddress, moved)
        XCTAssertEqual(p.route(now: .seconds(14)), PeerPath.SendRoute(udp: moved, derp: false))
    }

    func testAnotherAddressDoesNotDisplaceABestPathThatAnswers() {
        var p = makePath()
        p.notePingSent(txID: [1], to: a, purpose: .discovery, now: .seconds(10))
        _ = p.handlePong(txID: [1], from: a, now: .milliseconds(10_005))
        p.notePingSent(txID: [2], to: a, purpose: .heartbeat, now: .seconds(13))
        _ = p.handlePong(txID: [2], from: a, now: .milliseconds(13_005))
        // A slower second path answers a discovery ping: the best one stays.
        p.notePingSent(txID: [3], to: b, purpose: .discovery, now: .seconds(14))
        _ = p.handlePong(txID: [3], from: b, now: .milliseconds(14_009))
        XCTAssertEqual(p.bestAddress, a)
    }
}
