// The backend state machine: pure, events in, ipn.State out.

import WarrenLocalAPI
import WarrenNode
import XCTest

final class BackendStateMachineTests: XCTestCase {
    func testAFreshNodeHasNoStateUntilItWantsToRun() {
        var m = BackendStateMachine(wantRunning: false)
        XCTAssertEqual(m.state, .noState)
        XCTAssertTrue(m.apply(.wantRunning(true)))
        XCTAssertEqual(m.state, .needsLogin)
        XCTAssertNil(m.authURL)
    }

    func testInteractiveLoginApprovalAndTheFirstMap() {
        var m = BackendStateMachine(wantRunning: true)
        XCTAssertTrue(m.apply(.login(.needsLogin(authURL: "http://c/register/abc"))))
        XCTAssertEqual(m.state, .needsLogin)
        XCTAssertEqual(m.authURL, "http://c/register/abc")
        XCTAssertTrue(m.apply(.login(.needsMachineAuth)))
        XCTAssertEqual(m.state, .needsMachineAuth)
        XCTAssertNil(m.authURL)
        // A map before the login is complete does not make it Running.
        XCTAssertFalse(m.apply(.networkMapReceived))
        XCTAssertEqual(m.state, .needsMachineAuth)
        XCTAssertTrue(m.apply(.login(.loggedIn)))
        XCTAssertEqual(m.state, .starting)
        XCTAssertTrue(m.apply(.networkMapReceived))
        XCTAssertEqual(m.state, .running)
        XCTAssertFalse(m.apply(.networkMapReceived), "a second map changes nothing")
    }

    func testLosingControlKeepsRunningAndDownStopsKeepingTheLogin() {
        var m = BackendStateMachine(wantRunning: true)
        m.apply(.login(.loggedIn))
        m.apply(.networkMapReceived)
        XCTAssertFalse(m.apply(.controlLost))
        XCTAssertEqual(m.state, .running)
        XCTAssertTrue(m.apply(.wantRunning(false)))
        XCTAssertEqual(m.state, .stopped)
        XCTAssertTrue(m.apply(.wantRunning(true)))
        XCTAssertEqual(m.state, .starting, "up again waits for a fresh map")
        m.apply(.networkMapReceived)
        XCTAssertEqual(m.state, .running)
    }

    func testLogoutAndARepeatedLoginNeedANewMap() {
        var m = BackendStateMachine(wantRunning: true)
        m.apply(.login(.loggedIn))
        m.apply(.networkMapReceived)
        XCTAssertTrue(m.apply(.loggedOut))
        XCTAssertEqual(m.state, .needsLogin)
        m.apply(.login(.loggedIn))
        XCTAssertEqual(m.state, .starting, "a new login waits for its own map")
        // Not wanting to run without a login: NeedsLogin, never Stopped.
        m.apply(.loggedOut)
        m.apply(.wantRunning(false))
        XCTAssertEqual(m.state, .needsLogin)
    }
}
