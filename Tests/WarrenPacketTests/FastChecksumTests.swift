import XCTest
@testable import WarrenPacket
import WarrenTestSupport

final class FastChecksumTests: XCTestCase {
    /// The 4-bytes-at-a-time sum equals the by-the-book RFC 1071 sum for every length from 0 to
    /// 300 at every start alignment, on random bytes and on all-0xFF bytes (maximal carries).
    func testMatchesReferenceAtEveryLengthAndAlignment() {
        var rng = SeededGenerator(seed: 99)
        let random = rng.bytes(count: 400)
        let ones = [UInt8](repeating: 0xFF, count: 400)
        for data in [random, ones] {
            data.withUnsafeBytes { raw in
                for start in 0..<8 {
                    for length in 0...300 {
                        let expected = referenceSum(Array(data[start..<start + length]))
                        XCTAssertEqual(Int(FastChecksum.sum(raw.baseAddress! + start, count: length)), expected,
                                       "start \(start) length \(length)")
                    }
                }
            }
        }
        // A 64 KB buffer of 0xFF: the accumulator must not overflow.
        let big = [UInt8](repeating: 0xFF, count: 65536)
        big.withUnsafeBytes { XCTAssertEqual(FastChecksum.sum($0.baseAddress!, count: 65536), 0xFFFF) }
        XCTAssertEqual(FastChecksum.add(0xFFFF, 1), 1)
        XCTAssertEqual(FastChecksum.finish(0xFFFF), 0)
    }
}
