import XCTest
import WireGuardDevice

final class DeviceTests: XCTestCase {
    func testDefaultMTU() { XCTAssertEqual(WireGuardDeviceInfo.defaultMTU, 1420) }
}
