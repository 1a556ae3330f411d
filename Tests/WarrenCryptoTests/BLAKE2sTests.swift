import XCTest
@testable import WarrenCrypto

final class BLAKE2sTests: XCTestCase {
    private func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

    /// RFC 7693, Appendix B: BLAKE2s-256("abc").
    func testRFC7693AppendixB() {
        XCTAssertEqual(hex(BLAKE2s.hash(data: Array("abc".utf8))),
                       "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982")
    }

    func testEmptyInput() {
        XCTAssertEqual(hex(BLAKE2s.hash(data: [UInt8]())),
                       "69217a3079908094e11121d042354a7c1f55b6482ca1a51e1b250dfd1ed0eef9")
    }
}
