import Foundation
import WarrenTestSupport
import XCTest

typealias SeededGeneratorForKeys = SeededGenerator

enum PythonCheck {
    /// Runs `python3 -c program arguments…` and returns its trimmed stdout; skips the test without python3.
    static func run(_ program: String, arguments: [String]) throws -> String {
        do {
            return try PythonRunner.run(program, arguments: arguments).trimmingCharacters(in: .whitespacesAndNewlines)
        } catch let failure as PythonRunner.Failure where failure.kind == .unavailable {
            throw XCTSkip("\(failure.message); the cross-check needs it")
        }
    }
}
