// The UAPI request bounds (docs/limits.md, warren-wireguard): an operation line longer than 64 bytes closes the
// connection without an answer; a set request over 16 MiB is refused whole (EIO, nothing applied) and closes it.

import WireGuardUAPI
import XCTest

final class ConnectionBoundsTests: XCTestCase {
    func testAnOperationLineOverItsBoundClosesWithoutAnswer() {
        let result = converse(Array(String(repeating: "g", count: UAPIConnection.maximumOperationLineLength + 10).utf8),
                              chunks: [16], endOfInput: false, handler: RecordingHandler())
        XCTAssertEqual(result.output, "")
        XCTAssertTrue(result.closed)
    }

    func testASetRequestOverSixteenMiBIsRefusedWholeAndNothingIsApplied() {
        let handler = RecordingHandler()
        var body = "set=1\npublic_key=\(String(repeating: "ab", count: 32))\n"
        let line = "allowed_ip=10.1.2.0/24\n"
        body += String(repeating: line, count: UAPIConnection.maximumSetRequestLength / line.utf8.count + 10)
        body += "\n"
        let result = converse(Array(body.utf8), chunks: [65_536], endOfInput: false, handler: handler)
        XCTAssertEqual(result.output, "errno=-5\n\n")
        XCTAssertTrue(result.closed)
        XCTAssertTrue(handler.applied.isEmpty, "part of an oversized set request was applied")
    }
}
