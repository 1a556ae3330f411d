import Foundation
import WarrenControlSQLite
import WarrenControlStore
import XCTest

/// `kill -9` while writing: every transaction the writer reported as committed is in the database afterwards.
/// The writer is this test binary run again with one test selected and the database path in the environment.
final class SQLiteKillTests: XCTestCase {
    static let pathVariable = "WARREN_STORE_KILL_TEST_DB"

    /// The child's part: commits users one after another and reports each commit on stdout, until killed.
    func testChildWriter() throws {
        guard let path = ProcessInfo.processInfo.environment[Self.pathVariable] else {
            throw XCTSkip("runs only as the child of testKill9LosesNoCommittedTransaction")
        }
        let store = try SQLiteControlStore(path: path)
        for i in 0..<100_000 {
            _ = try store.transactionSync { try $0.createUser(name: "user-\(i)", now: referenceNow) }
            FileHandle.standardOutput.write(Data("committed \(i)\n".utf8))
        }
    }

    func testKill9LosesNoCommittedTransaction() throws {
        let path = try TemporaryDirectory.make() + "/control.sqlite"
        let executable = URL(fileURLWithPath: CommandLine.arguments[0], relativeTo: URL(fileURLWithPath: FileManager.default.currentDirectoryPath))
        guard FileManager.default.isExecutableFile(atPath: executable.path) else {
            throw XCTSkip("cannot find this test binary to run the writer (\(executable.path))")
        }
        let child = Process()
        child.executableURL = executable
        child.arguments = ["WarrenControlStoreTests.SQLiteKillTests/testChildWriter"]
        child.environment = ProcessInfo.processInfo.environment.merging([Self.pathVariable: path]) { $1 }
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
