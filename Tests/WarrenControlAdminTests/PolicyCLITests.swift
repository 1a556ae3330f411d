// `warren-control policy set|get|history` end to end: the real binary serving (database mode, then file
// mode), the commands reaching it through the admin socket of its --state-dir.

import Foundation
import XCTest

final class PolicyCLITests: XCTestCase {
    private var serve: Process?
    private var directory = ""

    override func tearDown() async throws {
        if let serve, serve.isRunning {
            kill(serve.processIdentifier, SIGTERM)
            serve.waitUntilExit()
        }
        if !directory.isEmpty { try? FileManager.default.removeItem(atPath: directory) }
    }

    /// Starts `serve` on loopback (no DERP, no metrics) and waits for its admin socket.
    private func startServer(config extra: String = "") async throws -> String {
        let binary = try CLI.binary()
        directory = NSTemporaryDirectory() + "wps-" + String(UUID().uuidString.prefix(8))
        let state = directory + "/state"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let config = directory + "/c.yaml"
        try ("derp:\n  enabled: false\nmetrics_listen_addr: \"off\"\n" + extra).write(toFile: config, atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = binary
        process.arguments = ["serve", "--state-dir", state, "--listen", "127.0.0.1:0", "--config", config]
        FileManager.default.createFile(atPath: directory + "/serve.out", contents: nil)
        process.standardOutput = FileHandle(forWritingAtPath: directory + "/serve.out")
        process.standardError = FileHandle.nullDevice
        try process.run()
        serve = process
        for _ in 0..<3000 {
            if FileManager.default.fileExists(atPath: state + "/admin.sock") { return state }
            guard process.isRunning else { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw XCTSkip("warren-control serve did not come up")
    }

    /// The URL `serve` printed for clients.
    private func serverURL() throws -> String {
        let text = (try? String(contentsOfFile: directory + "/serve.out", encoding: .utf8)) ?? ""
        guard let range = text.range(of: #"point clients at: (\S+)"#, options: .regularExpression) else {
            throw XCTSkip("serve printed no URL: \(text)")
        }
        return String(text[range].split(separator: " ").last ?? "")
    }

    private func write(_ text: String, _ name: String) throws -> String {
        let path = directory + "/" + name
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    static let good = """
        // alice's devices reach each other.
        {
          "acls": [{"action": "accept", "src": ["alice@example.com"], "dst": ["alice@example.com:*"]}],
        }
        """

    func testSetGetHistoryAndRefusalsKeepThePreviousPolicy() async throws {
        let state = try await startServer()
        let get0 = try await CLI.run(["policy", "get", "--state-dir", state])
        XCTAssertEqual(get0.status, 0, get0.stderr)
        XCTAssertTrue(get0.stderr.contains("no policy was set"), get0.stderr)

        let set = try await CLI.run(["policy", "set", try write(Self.good, "good.hujson"), "--state-dir", state])
        XCTAssertEqual(set.status, 0, set.stderr)
        XCTAssertTrue(set.stdout.hasPrefix("policy version 1 is in force"), set.stdout)
        let get1 = try await CLI.run(["policy", "get", "--state-dir", state])
        XCTAssertEqual(get1.stdout, Self.good + "\n")

        // A syntax error: refused with line and column, non-zero exit, version 1 stays.
        let broken = try write("{\n  \"acls\": [\n    {\"action\": \"accept\" \"src\": []}\n  ]\n}\n", "broken.hujson")
        let refused = try await CLI.run(["policy", "set", broken, "--state-dir", state])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.stderr.contains("broken.hujson: policy refused"), refused.stderr)
        XCTAssertNotNil(refused.stderr.range(of: #"3:\d+: "#, options: .regularExpression), refused.stderr)
        // A failing test: refused too, located at the test.
        let failing = try write("""
            {
              "acls": [{"action": "accept", "src": ["alice@example.com"], "dst": ["alice@example.com:*"]}],
              "tests": [
                {"src": "alice@example.com", "accept": ["bob@example.com:22"]},
              ],
            }
            """, "failing.hujson")
        let failed = try await CLI.run(["policy", "set", failing, "--state-dir", state])
        XCTAssertNotEqual(failed.status, 0)
        XCTAssertNotNil(failed.stderr.range(of: #"4:\d+: "#, options: .regularExpression), failed.stderr)
        let still = try await CLI.run(["policy", "get", "--state-dir", state])
        XCTAssertEqual(still.stdout, Self.good + "\n", "the previous policy stays in force")

        // From standard input, then the history lists both versions.
        let stdinPath = try write(Self.good.replacingOccurrences(of: "alice@example.com:*", with: "alice@example.com:22"), "v2.hujson")
        let piped = try await CLI.run(["policy", "set", "-", "--state-dir", state], input: stdinPath)
        XCTAssertEqual(piped.status, 0, piped.stderr)
        XCTAssertTrue(piped.stdout.hasPrefix("policy version 2 is in force"), piped.stdout)
        let history = try await CLI.run(["policy", "history", "--state-dir", state])
        XCTAssertEqual(history.status, 0, history.stderr)
        let lines = history.stdout.split(separator: "\n")
        XCTAssertEqual(lines.count, 3, history.stdout)
        XCTAssertTrue(lines.first?.hasPrefix("VERSION") == true)
        XCTAssertTrue(lines.dropFirst().first?.hasPrefix("1 ") == true)
        XCTAssertTrue(lines.last?.hasPrefix("2 ") == true)
        let historyYAML = try await CLI.run(["policy", "history", "-o", "yaml", "--state-dir", state])
        XCTAssertEqual(historyYAML.status, 0, historyYAML.stderr)
        XCTAssertTrue(historyYAML.stdout.hasPrefix("- ") && historyYAML.stdout.contains("  version: 2\n"), historyYAML.stdout)

        // Over the network with an API key, as the other admin commands.
        let key = try await CLI.run(["apikeys", "create", "--state-dir", state])
        XCTAssertEqual(key.status, 0, key.stderr)
        let url = try serverURL()
        let remote = try await CLI.run(["policy", "get", "--server", url, "-o", "json"],
                                       environment: ["WARREN_API_KEY": key.stdout.trimmingCharacters(in: .whitespacesAndNewlines)])
        XCTAssertEqual(remote.status, 0, remote.stderr)
        XCTAssertTrue(remote.stdout.contains(#""version" : 2"#), remote.stdout)
        let noKey = try await CLI.run(["policy", "set", broken, "--server", url, "--api-key", "wkey-api-bogus"])
        XCTAssertNotEqual(noKey.status, 0)
    }

    func testFileModeRefusesPolicySetAndGetPrintsTheFile() async throws {
        directory = NSTemporaryDirectory() + "wps-pre-" + String(UUID().uuidString.prefix(8))
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let policyFile = try write(Self.good, "policy.hujson")
        let pre = directory
        let state = try await startServer(config: "policy_file: \(policyFile)\n")
        defer { try? FileManager.default.removeItem(atPath: pre) }
        let get = try await CLI.run(["policy", "get", "--state-dir", state])
        XCTAssertEqual(get.stdout, Self.good + "\n")
        let set = try await CLI.run(["policy", "set", policyFile, "--state-dir", state])
        XCTAssertNotEqual(set.status, 0)
        XCTAssertTrue(set.stderr.contains("file mode"), set.stderr)
        XCTAssertTrue(set.stderr.contains(policyFile), set.stderr)
    }
}
