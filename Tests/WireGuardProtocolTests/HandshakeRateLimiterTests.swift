import XCTest
import WarrenPacket
@testable import WireGuardProtocol

final class HandshakeRateLimiterTests: XCTestCase {
    let evil = IPAddress("192.0.2.66")!
    let good = IPAddress("2001:db8::7")!

    func testBurstOfFiveThenTwentyPerSecond() {
        var limiter = HandshakeRateLimiter()
        var clock = MockClock()
        let burst = (0..<10).filter { _ in limiter.allow(evil, now: clock.now) }.count
        XCTAssertEqual(burst, 5, "a quiet address may send a burst of 5")
        XCTAssertFalse(limiter.allow(evil, now: clock.now))
        clock.advance(.milliseconds(49))
        XCTAssertFalse(limiter.allow(evil, now: clock.now), "less than 1/20 s of credit")
        clock.advance(.milliseconds(1))
        XCTAssertTrue(limiter.allow(evil, now: clock.now), "one message per 50 ms")
        XCTAssertFalse(limiter.allow(evil, now: clock.now))
        // Over ten seconds of a steady flood (one message per millisecond), about 20 per second pass.
        var passed = 0
        for _ in 0..<10_000 {
            clock.advance(.milliseconds(1))
            if limiter.allow(evil, now: clock.now) { passed += 1 }
        }
        XCTAssertEqual(passed, 200)
    }

    func testAddressesAreLimitedSeparatelyAndForgottenWhenIdle() {
        var limiter = HandshakeRateLimiter()
        var clock = MockClock()
        for _ in 0..<100 { _ = limiter.allow(evil, now: clock.now) }
        XCTAssertTrue(limiter.allow(good, now: clock.now), "another address is not affected by the flood")
        XCTAssertEqual(limiter.count, 2)
        clock.advance(.milliseconds(250))
        XCTAssertEqual((0..<10).filter { _ in limiter.allow(evil, now: clock.now) }.count, 5, "refilled, up to the burst")
        clock.advance(.seconds(3))
        XCTAssertTrue(limiter.allow(good, now: clock.now))
        XCTAssertEqual(limiter.count, 1, "the idle address was swept")
        limiter.reset()
        XCTAssertEqual(limiter.count, 0)
    }
}
