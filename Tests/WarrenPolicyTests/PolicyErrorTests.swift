import XCTest
import WarrenPolicy

final class PolicyErrorTests: XCTestCase {
    func testDescriptionNamesLineAndColumn() {
        XCTAssertEqual(PolicyError("bad", line: 3, column: 7).description, "3:7: bad")
    }
}
