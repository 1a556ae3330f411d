import XCTest
import WireGuardProtocol

final class ConstantsTests: XCTestCase {
    func testTimersFromThePaper() {
        XCTAssertEqual(WireGuardConstants.rekeyAfterTime, .seconds(120))
        XCTAssertEqual(WireGuardConstants.rejectAfterTime, .seconds(180))
        XCTAssertEqual(WireGuardConstants.rejectAfterMessages, UInt64.max - 8192)
    }
}
