import Foundation
import Synchronization

/// Runs the Python cross-checks of the tests: `python3 -c script arguments…` with text on
/// stdin, stdout returned. Tests map `PythonRunner.Failure.unavailable` to XCTSkip (python3 or
/// a module is missing on this machine; in CI nothing is) and treat `.failed` as a failure.
public enum PythonRunner {
    public struct Failure: Error, CustomStringConvertible {
        public enum Kind: Sendable {
            /// python3 cannot be started, or one of the required modules does not import.
            case unavailable
            /// The script exited with a non-zero status.
            case failed
        }

        public let kind: Kind
        public let message: String
        public var description: String { message }

        static func unavailable(_ message: String) -> Failure { Failure(kind: .unavailable, message: message) }
        static func failed(status: Int32, stderr: String) -> Failure {
            Failure(kind: .failed, message: "python3 exited with status \(status): \(stderr)")
        }
    }

    /// Module sets already found importable (or not), so each is probed once per test process.
    private static let probed = Mutex([String: Bool]())

    /// Runs `script` with `arguments` and `input` on stdin after checking that `modules` import.
    /// Returns stdout.
    public static func run(_ script: String, arguments: [String] = [], input: String = "",
                           requiring modules: [String] = []) throws -> String {
        try requireModules(modules)
        let result = try launch(["python3", "-c", script] + arguments, input: input)
        guard result.status == 0 else { throw Failure.failed(status: result.status, stderr: result.stderr) }
        return result.stdout
    }

    /// One JSON request on stdin (followed by a newline), one JSON value back on stdout.
    public static func runJSON(_ script: String, request: Any, requiring modules: [String] = []) throws -> Any {
        var line = try JSONSerialization.data(withJSONObject: request)
        line.append(0x0A)
        let output = try run(script, input: String(decoding: line, as: UTF8.self), requiring: modules)
        return try JSONSerialization.jsonObject(with: Data(output.utf8))
    }

    /// Throws `.unavailable` when python3 or one of `modules` is missing.
    public static func requireModules(_ modules: [String]) throws {
        let key = modules.joined(separator: ",")
        if let known = probed.withLock({ $0[key] }) {
            if known { return }
            throw Failure.unavailable("python3 with \(modules.isEmpty ? "no modules" : "modules \(modules)") is not available")
        }
        let probe = modules.isEmpty ? "pass" : modules.map { "import \($0)" }.joined(separator: "\n")
        let status = (try? launch(["python3", "-c", probe], input: ""))?.status
        probed.withLock { $0[key] = status == 0 }
        if status != 0 {
            throw Failure.unavailable("python3 with \(modules.isEmpty ? "no modules" : "modules \(modules)") is not available")
        }
    }

    private static func launch(_ arguments: [String], input: String) throws -> (status: Int32, stdout: String, stderr: String) {
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
            throw Failure.unavailable("cannot start python3: \(error)")
        }
        // Write stdin and drain stderr while stdout is read, so that full pipes cannot deadlock.
        let writer = Thread {
            stdin.fileHandleForWriting.write(Data(input.utf8))
            try? stdin.fileHandleForWriting.close()
        }
        writer.start()
        let errors = Collector(stderr.fileHandleForReading)
        let out = stdout.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: out, as: UTF8.self), errors.wait())
    }

    private final class Collector: @unchecked Sendable {
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
}
