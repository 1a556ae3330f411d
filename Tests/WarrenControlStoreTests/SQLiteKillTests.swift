import Foundation
import WarrenControlSQLite
import WarrenControlStore
import XCTest

/// `kill -9` while writing: every transaction the writer reported as committed is in the database afterwards.
/// The writer is the test helper `warren-test-sqlite-writer`, built next to this test bundle.
final class SQLiteKillTests: XCTestCase {
    /// The helper in the build products directory (where the test bundle is).
    static func writer() -> URL? {
        var directories = [URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()]
        if let bundle = Bundle.allBundles.first(where: { $0.bundlePath.hasSuffix(".xctest") }) {
            directories.append(URL(fileURLWithPath: bundle.bundlePath).deletingLastPathComponent())
        }
        return directories.map { $0.appendingPathComponent("warren-test-sqlite-writer") }
            .first { FileManager.default.isExecutableFile(atPath: $0.path) }
    }

    func testKill9LosesNoCommittedTransaction() throws {
        let path = try TemporaryDirectory.make() + "/control.sqlite"
        // Part of the package: `swift build` builds it with the tests, so its absence is a failure.
        let executable = try XCTUnwrap(Self.writer(), "warren-test-sqlite-writer is not next to the test bundle (swift build --build-tests)")
        let child = Process()
        child.executableURL = executable
        child.arguments = [path]
        let output = Pipe()
        child.standardOutput = output
        child.standardError = FileHandle.nullDevice
        try child.run()

        // Read reports until at least 30 commits were announced, then kill -9 mid-stream.
        var text = ""
        var lastCommitted = -1
        let reader = output.fileHandleForReading
        while lastCommitted < 30 {
            let chunk = reader.availableData
            if chunk.isEmpty { break }
            text += String(decoding: chunk, as: UTF8.self)
            let lines = text.split(separator: "\n", omittingEmptySubsequences: true)
            if let last = lines.last(where: { $0.hasPrefix("committed ") }), let n = Int(last.dropFirst("committed ".count)) {
                lastCommitted = n
            }
        }
        kill(child.processIdentifier, SIGKILL)
        child.waitUntilExit()
        // Commits reported before the kill, counting lines that arrived in the last chunk.
        text += String(decoding: reader.availableData, as: UTF8.self)
        let reported = text.split(separator: "\n").compactMap { line -> Int? in
            line.hasPrefix("committed ") ? Int(line.dropFirst("committed ".count)) : nil
        }
        XCTAssertGreaterThanOrEqual(reported.count, 30, "the writer did not get going: \(text.prefix(200))")

        let store = try SQLiteControlStore(path: path)
        let names = Set(try store.transactionSync { try $0.users().map(\.name) })
        for n in reported {
            XCTAssertTrue(names.contains("user-\(n)"), "user-\(n) was reported committed but is missing after kill -9")
        }
        // Nothing half-written: the users are exactly a prefix of the sequence.
        let numbers = names.compactMap { Int($0.dropFirst("user-".count)) }.sorted()
        XCTAssertEqual(numbers, Array(0..<numbers.count))
    }
}
