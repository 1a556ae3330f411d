import XCTest
import WarrenPacket

final class IPVersionTests: XCTestCase {
    func testVersionNibble() {
        XCTAssertEqual(IPVersion(packet: [0x45, 0]), .v4)
        XCTAssertEqual(IPVersion(packet: [0x60, 0]), .v6)
        XCTAssertNil(IPVersion(packet: [0x50]))
        XCTAssertNil(IPVersion(packet: [UInt8]()))
    }
}
