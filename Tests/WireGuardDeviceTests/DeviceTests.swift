import XCTest
import WireGuardDevice

final class DeviceTests: XCTestCase {
    func testDefaultMTU() { XCTAssertEqual(WireGuardDeviceConstants.defaultMTU, 1420) }
}
