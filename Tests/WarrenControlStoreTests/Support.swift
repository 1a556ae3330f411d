import Foundation
import WarrenTestSupport
import XCTest

typealias SeededGeneratorForKeys = SeededGenerator

enum PythonCheck {
    /// Runs `python3 -c program arguments…` and returns its trimmed stdout; skips the test without python3.
    static func run(_ program: String, arguments: [String]) throws -> String {
        let candidates = ["/usr/bin/python3", "/usr/local/bin/python3"]
        guard let python = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw XCTSkip("python3 is not installed; the cross-check needs it")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = ["-c", program] + arguments
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw NSError(domain: "PythonCheck", code: Int(process.terminationStatus), userInfo: [NSLocalizedDescriptionKey: "python3 failed"])
        }
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
