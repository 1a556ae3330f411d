import Foundation
import XCTest
import WarrenTestSupport

/// Hex encoding and decoding for test vectors.
func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

func unhex(_ string: String) -> [UInt8] {
    let clean = string.filter { !$0.isWhitespace && $0 != ":" }
    var out: [UInt8] = []
    out.reserveCapacity(clean.count / 2)
    var index = clean.startIndex
    while index < clean.endIndex {
        let next = clean.index(index, offsetBy: 2)
        out.append(UInt8(clean[index..<next], radix: 16)!)
        index = next
    }
    return out
}

/// Runs an inline Python 3 script with `input` on stdin and returns its stdout lines.
///
/// Skips the test (XCTSkip) when python3 or one of `modules` cannot be imported.
func runPython(_ script: String, modules: [String], input: String) throws -> [String] {
    do {
        return try PythonRunner.run(script, input: input, requiring: modules).split(separator: "\n").map(String.init)
    } catch let failure as PythonRunner.Failure where failure.kind == .unavailable {
        throw XCTSkip(failure.message)
    }
}
