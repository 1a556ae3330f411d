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
    let check = try runProcess(["python3", "-c", modules.map { "import \($0)" }.joined(separator: "\n")], input: "")
    guard check.status == 0 else {
        throw XCTSkip("python3 with modules \(modules) is not available: \(check.stderr)")
    }
    let result = try runProcess(["python3", "-c", script], input: input)
    guard result.status == 0 else {
        XCTFail("python3 failed: \(result.stderr)")
        return []
    }
    return result.stdout.split(separator: "\n").map(String.init)
}

private func runProcess(_ arguments: [String], input: String) throws -> (status: Int32, stdout: String, stderr: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    let stdin = Pipe(), stdout = Pipe(), stderr = Pipe()
    process.standardInput = stdin
    process.standardOutput = stdout
    process.standardError = stderr
    do {
        try process.run()
    } catch {
        throw XCTSkip("cannot start \(arguments[0]): \(error)")
    }
    // Write stdin and read stdout concurrently so large exchanges cannot deadlock on full pipes.
    let writer = Thread {
        stdin.fileHandleForWriting.write(Data(input.utf8))
        try? stdin.fileHandleForWriting.close()
    }
    writer.start()
    let errData = ErrorCollector(stderr.fileHandleForReading)
    let outData = stdout.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: outData, as: UTF8.self), errData.wait())
}

private final class ErrorCollector: @unchecked Sendable {
    private var data = Data()
    private let done = DispatchSemaphore(value: 0)
    init(_ handle: FileHandle) {
        Thread { [self] in
            data = handle.readDataToEndOfFile()
            done.signal()
        }.start()
    }
    func wait() -> String {
        done.wait()
        return String(decoding: data, as: UTF8.self)
    }
}

