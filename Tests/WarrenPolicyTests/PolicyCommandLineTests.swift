import Foundation
import XCTest

/// Runs the built `warren-control policy check|compile|explain` on sample files, in the exact forms of
/// the issue (section 5), and checks its output and exit status.
final class PolicyCommandLineTests: XCTestCase {
    static var packageRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    static let policy = """
        // Sample policy for the command-line tests.
        {
          "groups": {"group:eng": ["alice@example.com"]},
          "tagOwners": {"tag:web": ["group:eng"]},
          "acls": [
            {"action": "accept", "src": ["group:eng"], "dst": ["tag:web:443"]},
            {"action": "accept", "src": ["group:eng"], "proto": "udp", "dst": ["tag:web:53"]},
          ],
          "ssh": [{"action": "accept", "src": ["group:eng"], "dst": ["tag:web"], "users": ["root"]}],
          "tests": [{"src": "alice@example.com", "accept": ["tag:web:443"], "deny": ["tag:web:22"]}],
          "sshTests": [{"src": "alice@example.com", "dst": ["tag:web"], "accept": ["root"]}],
        }
        """

    static let topology = """
        {"users": [{"id": 1, "name": "alice", "email": "alice@example.com"},
                   {"id": 2, "name": "bob", "email": "bob@example.com"}],
         "nodes": {
           "laptop": {"hostname": "laptop", "user": "alice", "tags": [], "ipv4": "100.64.0.1", "ipv6": "fd7a:115c:a1e0::1"},
           "phone": {"hostname": "phone", "user": "bob", "tags": [], "ipv4": "100.64.0.2"},
           "web": {"hostname": "web", "tags": ["tag:web"], "ipv4": "100.64.0.10", "ipv6": "fd7a:115c:a1e0::a"}
         }}
        """

    var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("warren-policy-cli-\(getpid())-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try Self.policy.write(to: directory.appendingPathComponent("policy.hujson"), atomically: true, encoding: .utf8)
        try Self.topology.write(to: directory.appendingPathComponent("topology.json"), atomically: true, encoding: .utf8)
    }

    override func tearDownWithError() throws {
        if let directory { try? FileManager.default.removeItem(at: directory) }
    }

    func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

    func write(_ name: String, _ text: String) throws -> String {
        try text.write(to: directory.appendingPathComponent(name), atomically: true, encoding: .utf8)
        return path(name)
    }

    /// Runs warren-control; skips when it has not been built.
    func run(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        let candidates = [".build/debug/warren-control", ".build/release/warren-control"].map {
            Self.packageRoot.appendingPathComponent($0).path
        }
        guard let executable = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw XCTSkip("warren-control is not built (swift build --product warren-control); skipped")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: stdout, as: UTF8.self), String(decoding: stderr, as: UTF8.self))
    }

    func testCheckRunsTestsAgainstTopology() throws {
        let r = try run(["policy", "check", "--topology", path("topology.json"), path("policy.hujson")])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stdout, "\(path("policy.hujson")): valid; 2 test(s) passed\n")
        let alone = try run(["policy", "check", path("policy.hujson")])
        XCTAssertEqual(alone.status, 0)
        XCTAssertEqual(alone.stdout, "\(path("policy.hujson")): valid; 2 test(s) not run (they need --topology)\n")
    }

    func testCheckPrintsProblemsWithLineAndColumn() throws {
        let bad = try write("bad.hujson", Self.policy.replacingOccurrences(of: #""dst": ["tag:web:443"]"#, with: #""dst": ["tag:db:443"]"#))
        let r = try run(["policy", "check", bad])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertEqual(r.stderr, "\(bad):6:56: dst=\"tag:db\": tag not found: \"tag:db\"\n")
        let syntax = try write("syntax.hujson", "{\n  \"acls\": [\n    {\"action\": \"accept\" \"src\": []},\n  ],\n}\n")
        let s = try run(["policy", "check", syntax])
        XCTAssertNotEqual(s.status, 0)
        XCTAssertEqual(s.stderr, "\(syntax):3:25: invalid character '\"' after object key:value pair\n")
    }

    func testCheckReportsFailingTests() throws {
        let failing = try write("failing.hujson", Self.policy.replacingOccurrences(of: #""deny": ["tag:web:22"]"#, with: #""deny": ["tag:web:443"]"#))
        let r = try run(["policy", "check", "--topology", path("topology.json"), failing])
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.stderr, "\(failing):10:13: test 0: deny \"tag:web:443\" from \"alice@example.com\" failed\n\(failing): test(s) failed\n")
    }

    func testCompilePrintsEachNodesRulesAndPeers() throws {
        let r = try run(["policy", "compile", "--policy", path("policy.hujson"), "--topology", path("topology.json")])
        XCTAssertEqual(r.status, 0, r.stderr)
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: [String: Any]])
        XCTAssertEqual(Set(object.keys), ["laptop", "phone", "web"])
        for value in object.values { XCTAssertEqual(Set(value.keys), ["packet_filter_rules", "ssh_rules", "peers"]) }
        XCTAssertEqual(object["web"]?["peers"] as? [String], ["laptop"])
        XCTAssertEqual(object["phone"]?["peers"] as? [String], [])
        let rules = try XCTUnwrap(object["web"]?["packet_filter_rules"] as? [[String: Any]])
        XCTAssertEqual(rules.count, 2)
        XCTAssertEqual(Set(rules.compactMap { $0["SrcIPs"] as? [String] }.flatMap { $0 }), ["100.64.0.1", "fd7a:115c:a1e0::1"])
        XCTAssertEqual((object["web"]?["ssh_rules"] as? [Any])?.count, 1)

        let one = try run(["policy", "compile", "--policy", path("policy.hujson"), "--topology", path("topology.json"), "--node", "laptop"])
        let only = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(one.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(Array(only.keys), ["laptop"])
        let missing = try run(["policy", "compile", "--policy", path("policy.hujson"), "--topology", path("topology.json"), "--node", "nas"])
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.stderr.contains("no node named \"nas\""), missing.stderr)
    }

    func testExplainNamesTheRuleAndItsLine() throws {
        let base = ["policy", "explain", "--policy", path("policy.hujson"), "--topology", path("topology.json"), "--from", "laptop"]
        let tcp = try run(base + ["--to", "web:443"])
        XCTAssertEqual(tcp.status, 0, tcp.stderr)
        XCTAssertEqual(tcp.stdout, "allowed: laptop may reach web:443 over tcp by acls[0] (line 6, column 5)\n")
        let udp = try run(base + ["--to", "web:53", "--proto", "udp"])
        XCTAssertEqual(udp.stdout, "allowed: laptop may reach web:53 over udp by acls[1] (line 7, column 5)\n")
        let denied = try run(base + ["--to", "web:22"])
        XCTAssertEqual(denied.status, 1)
        XCTAssertEqual(denied.stdout, "denied: nothing allows laptop to reach web:22 over tcp\n")
        // ICMP has no ports: a rule for all protocols lets it through whatever its ports (as Tailscale's filter does);
        // the UDP-only rule does not.
        let icmp = try run(base + ["--to", "web:0", "--proto", "icmp"])
        XCTAssertEqual(icmp.stdout, "allowed: laptop may reach web:0 over icmp by acls[0] (line 6, column 5)\n")
        let reverse = try run(["policy", "explain", "--policy", path("policy.hujson"), "--topology", path("topology.json"),
                               "--from", "web", "--to", "laptop:443"])
        XCTAssertEqual(reverse.stdout, "denied: nothing allows web to reach laptop:443 over tcp\n")
    }
}
