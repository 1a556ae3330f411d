// warren-control's operations against the built binary: SIGHUP re-reads the policy file (a connected map client
// gets the new packet filter, the admin API shows the new text, a broken file keeps the old policy and the
// process); SIGTERM right after the startup line is a clean stop; `health` and `/health` fail when the database
// file does; the audit log records admin actions and `audit` prints them; admin API request metrics are served;
// a wildcard listen address without server_url is refused. Everything listens on loopback; the temporary
// directory (/tmp/wcop-*) is removed afterwards.

import Foundation
import TailscaleKeys
import WarrenControlClient
import WarrenTailcfg
import WarrenTestProbes
import XCTest

final class OperationsTests: XCTestCase {
    var directory = ""

    override func setUpWithError() throws {
        // Short: the unix socket path must fit in 108 bytes.
        directory = "/tmp/wcop-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// A free loopback TCP port.
    func freePort() throws -> Int { try LoopbackPort.free() }

    /// A running `serve`: its standard error goes to a file the test reads while it runs.
    final class Served {
        let process = Process()
        let logPath: String
        let port: Int
        let stateDir: String
        /// What serve printed up to its startup line.
        var output = ""

        init(binary: String, arguments: [String], logPath: String, port: Int, stateDir: String) throws {
            self.logPath = logPath
            self.port = port
            self.stateDir = stateDir
            FileManager.default.createFile(atPath: logPath, contents: nil)
            process.executableURL = URL(fileURLWithPath: binary)
            process.arguments = arguments
            process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
            process.standardOutput = Pipe()
            try process.run()
        }

        var pid: Int32 { process.processIdentifier }
        var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

        /// Waits (at most 60 s) until the startup line is out.
        func waitUntilServing() throws {
            guard let pipe = process.standardOutput as? Pipe else { return }
            var text = ""
            let deadline = Date().addingTimeInterval(60)
            while !text.contains("point clients at"), Date() < deadline {
                let chunk = pipe.fileHandleForReading.availableData
                if chunk.isEmpty { break }
                text += String(decoding: chunk, as: UTF8.self)
            }
            output = text
            guard text.contains("point clients at") else { throw ServeFailed(output: text, log: log) }
        }

        /// Waits (at most 20 s) until the log holds `count` occurrences of `text`.
        func waitForLog(_ text: String, count: Int = 1) async throws -> Bool {
            let deadline = Date().addingTimeInterval(20)
            while Date() < deadline {
                if log.components(separatedBy: text).count - 1 >= count { return true }
                try await Task.sleep(for: .milliseconds(50))
            }
            return false
        }

        func stop() -> Int32 {
            if process.isRunning { kill(pid, SIGTERM) }
            process.waitUntilExit()
            return process.terminationStatus
        }

        deinit { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
    }

    struct ServeFailed: Error, CustomStringConvertible {
        var output: String
        var log: String
        var description: String { "serve did not start: \(output)\n\(log)" }
    }

    func serve(config: String, extra: [String] = []) throws -> Served {
        let port = try freePort()
        try config.write(toFile: directory + "/config.yaml", atomically: true, encoding: .utf8)
        let served = try Served(
            binary: try RealTailscaleClientTests.warrenControlBinary(),
            arguments: ["serve", "--state-dir", directory + "/state", "--listen", "127.0.0.1:\(port)", "--config", directory + "/config.yaml"] + extra,
            logPath: directory + "/serve-\(UUID().uuidString.prefix(4)).log", port: port, stateDir: directory + "/state")
        try served.waitUntilServing()
        return served
    }

    @discardableResult
    func cli(_ arguments: [String], status expected: Int32? = 0, file: StaticString = #filePath, line: UInt = #line) throws
        -> (status: Int32, stdout: String, stderr: String)
    {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try RealTailscaleClientTests.warrenControlBinary())
        process.arguments = arguments
        let output = Pipe(), errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        let errorData = Box()
        let done = DispatchSemaphore(value: 0)
        DispatchQueue.global().async { errorData.data = errors.fileHandleForReading.readDataToEndOfFile(); done.signal() }
        let outputData = output.fileHandleForReading.readDataToEndOfFile()
        done.wait()
        process.waitUntilExit()
        let result = (process.terminationStatus, String(decoding: outputData, as: UTF8.self), String(decoding: errorData.data, as: UTF8.self))
        if let expected {
            XCTAssertEqual(result.0, expected, "\(arguments): \(result.1) \(result.2)", file: file, line: line)
        }
        return result
    }

    func policy(acls: String, groups: String) -> String {
        """
        // Operations test policy
        {
          "groups": {\(groups)},
          "acls": [\(acls)],
        }
        """
    }

    /// The destination ports in a node's packet filter, as "ip:first-last".
    static func ports(_ filter: [FilterRule]?) -> Set<String> {
        Set((filter ?? []).flatMap { ($0.dstPorts ?? []).map { "\($0.ip):\($0.ports.first)-\($0.ports.last)" } })
    }

    // MARK: SIGHUP

    func testSIGHUPReloadsThePolicyFileAndABrokenOneKeepsTheOld() async throws {
        let policyPath = directory + "/policy.hujson"
        let v1 = policy(acls: #"{"action": "accept", "src": ["*"], "dst": ["*:22"]}"#, groups: #""group:eng": ["alice@"]"#)
        try v1.write(toFile: policyPath, atomically: true, encoding: .utf8)
        let served = try serve(config: "policy_file: \(policyPath)\nmetrics_listen_addr: \"off\"\nderp:\n  enabled: false\n")
        let state = ["--state-dir", served.stateDir]
        try cli(["users", "create", "alice"] + state)
        struct Created: Decodable { var key: String }
        let key = try JSONDecoder().decode(Created.self, from: Data(try cli(["preauthkeys", "create", "--user", "alice", "-o", "json"] + state).stdout.utf8))

        // A map client of the tailnet sees the filter of v1.
        let controlKey = try await ControlClient.fetchKey(host: "127.0.0.1", port: served.port).publicKey
        let client = ControlClient(port: served.port, seed: 0x0B5)
        try await client.connect(controlKey: controlKey)
        let registered = try await client.register(client.registerRequest(authKey: key.key, hostname: "ops"))
        XCTAssertTrue(registered.machineAuthorized)
        let (status, messages) = try await client.map(client.mapRequest(stream: true))
        XCTAssertEqual(status, 200)
        var iterator = messages.makeAsyncIterator()
        var filter: [FilterRule]?
        while filter == nil, let message = try await iterator.next() { filter = message.packetFilter ?? filter }
        XCTAssertEqual(Self.ports(filter).map { $0.hasSuffix(":22-22") }, [true], "\(String(describing: filter))")

        // v2: SIGHUP puts it in force; the map stream gets the new filter, the admin API the new text, the log what changed.
        let v2 = policy(acls: #"{"action": "accept", "src": ["*"], "dst": ["*:80"]}, {"action": "accept", "src": ["group:ops"], "dst": ["*:443"]}"#,
                        groups: #""group:ops": ["alice@"]"#)
        try v2.write(toFile: policyPath, atomically: true, encoding: .utf8)
        XCTAssertEqual(kill(served.pid, SIGHUP), 0)
        var updated: [FilterRule]?
        while updated == nil, let message = try await iterator.next() { updated = message.packetFilter }
        XCTAssertEqual(Self.ports(updated).filter { $0.hasSuffix(":80-80") }.count, 1, "\(String(describing: updated))")
        XCTAssertFalse(Self.ports(updated).contains { $0.hasSuffix(":22-22") })
        let reloaded = try await served.waitForLog("SIGHUP: policy reloaded from \(policyPath)")
        XCTAssertTrue(reloaded, served.log)
        let line = served.log.split(separator: "\n").first { $0.contains("policy reloaded from") }.map(String.init) ?? ""
        for part in ["acls 1 -> 2", "groups added: group:ops", "groups removed: group:eng", "1 node(s) got new results"] {
            XCTAssertTrue(line.contains(part), "no \"\(part)\" in: \(line)")
        }
        XCTAssertEqual(try cli(["policy", "get"] + state).stdout, v2 + "\n")

        // A broken v3: logged with its place, v2 stays in force, the process lives.
        try v2.replacingOccurrences(of: #""*:80""#, with: #""*:80"," "#).replacingOccurrences(of: "group:ops\"]", with: "group:nobody\"]")
            .write(toFile: policyPath, atomically: true, encoding: .utf8)
        XCTAssertEqual(kill(served.pid, SIGHUP), 0)
        let refused = try await served.waitForLog("the policy in force is kept")
        XCTAssertTrue(refused, served.log)
        XCTAssertTrue(served.log.contains("SIGHUP: policy reload refused: \(policyPath):"), served.log)
        XCTAssertTrue(served.process.isRunning)
        XCTAssertEqual(try cli(["policy", "get"] + state).stdout, v2 + "\n")
        // A policy whose own tests fail is refused too (the same checks as `policy set`).
        try v2.replacingOccurrences(of: "\"acls\"", with: #""tests": [{"src": "alice@", "accept": ["100.64.0.1:22"]}], "acls""#)
            .write(toFile: policyPath, atomically: true, encoding: .utf8)
        XCTAssertEqual(kill(served.pid, SIGHUP), 0)
        let testsRefused = try await served.waitForLog("the policy in force is kept", count: 2)
        XCTAssertTrue(testsRefused, served.log)
        XCTAssertEqual(try cli(["policy", "get"] + state).stdout, v2 + "\n")

        // The same text again: "unchanged".
        try v2.write(toFile: policyPath, atomically: true, encoding: .utf8)
        XCTAssertEqual(kill(served.pid, SIGHUP), 0)
        let unchanged = try await served.waitForLog("SIGHUP: policy file \(policyPath) unchanged")
        XCTAssertTrue(unchanged, served.log)

        await client.close()
        XCTAssertEqual(served.stop(), 0, served.log)
        XCTAssertEqual(served.process.terminationReason, .exit)
    }

    func testSIGHUPInDatabaseModeKeepsServingAndSIGTERMRightAfterTheStartupLineIsACleanStop() async throws {
        // Database mode: SIGHUP has no file to read; the server says so and goes on.
        let served = try serve(config: "metrics_listen_addr: \"off\"\nderp:\n  enabled: false\n")
        XCTAssertEqual(kill(served.pid, SIGHUP), 0)
        let said = try await served.waitForLog("nothing to reload")
        XCTAssertTrue(said, served.log)
        XCTAssertTrue(served.process.isRunning)
        try cli(["users", "create", "dora", "--state-dir", served.stateDir])
        XCTAssertEqual(served.stop(), 0, served.log)
        // SIGTERM the moment the startup line is out: the handlers are installed before it, so this is a graceful stop
        // (status 0), never death by the signal (status 15). Several times: it was a race.
        for round in 0..<5 {
            let again = try serve(config: "metrics_listen_addr: \"off\"\nderp:\n  enabled: false\n")
            kill(again.pid, SIGTERM)
            again.process.waitUntilExit()
            XCTAssertEqual(again.process.terminationReason, .exit, "round \(round): ended by a signal\n\(again.log)")
            XCTAssertEqual(again.process.terminationStatus, 0, "round \(round)\n\(again.log)")
        }
    }

    // MARK: health

    func testHealthFailsWhenTheDatabaseFileDoes() async throws {
        let served = try serve(config: "metrics_listen_addr: \"off\"\nderp:\n  enabled: false\n")
        let state = ["--state-dir", served.stateDir]
        func httpHealth() async throws -> String {
            String(decoding: try await ControlClient.rawHTTP(
                host: "127.0.0.1", port: served.port, request: "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), as: UTF8.self)
        }
        var result = try cli(["health"] + state)
        XCTAssertEqual(result.stdout, "server: ok\ndatabase: ok\n")
        var http = try await httpHealth()
        XCTAssertTrue(http.hasPrefix("HTTP/1.1 200") && http.hasSuffix(#"{"status":"pass"}"#), http)

        // The database's header overwritten in place (SQLite, holding the file open, would not notice).
        let database = served.stateDir + "/warren.sqlite"
        let original = try Data(contentsOf: URL(fileURLWithPath: database)).prefix(16)
        let handle = try XCTUnwrap(FileHandle(forUpdatingAtPath: database))
        try handle.write(contentsOf: Data(repeating: 0, count: 16))
        result = try cli(["health"] + state, status: 1)
        XCTAssertEqual(result.stdout, "server: answering\ndatabase: FAILED\n")
        XCTAssertTrue(result.stderr.contains("warren-control: health: database: \(database) no longer starts with SQLite's header"), result.stderr)
        http = try await httpHealth()
        XCTAssertTrue(http.hasPrefix("HTTP/1.1 500") && http.hasSuffix(#"{"status":"fail"}"#), http)
        let json = try cli(["health", "-o", "json"] + state, status: 1)
        XCTAssertTrue(json.stdout.contains(#""databaseConnectivity" : false"#), json.stdout)
        // Repaired: healthy again.
        try handle.seek(toOffset: 0)
        try handle.write(contentsOf: original)
        try handle.close()
        try cli(["health"] + state)
        // Removed: the server would write on into a file no longer there.
        try FileManager.default.moveItem(atPath: database, toPath: database + ".aside")
        result = try cli(["health"] + state, status: 1)
        XCTAssertTrue(result.stderr.contains("the database file is gone"), result.stderr)
        http = try await httpHealth()
        XCTAssertTrue(http.hasPrefix("HTTP/1.1 500"), http)
        XCTAssertTrue(served.log.contains("health check failed"), served.log)
        try FileManager.default.moveItem(atPath: database + ".aside", toPath: database)
        try cli(["health"] + state)
        XCTAssertEqual(served.stop(), 0, served.log)
        // No server: a clear line and status 1.
        result = try cli(["health"] + state, status: 1)
        XCTAssertTrue(result.stderr.hasPrefix("warren-control: health: the server does not answer"), result.stderr)
    }

    // MARK: audit log and request metrics

    func testAuditLogAndAdminRequestMetrics() async throws {
        let metricsPort = try freePort()
        let served = try serve(config: "metrics_listen_addr: 127.0.0.1:\(metricsPort)\nderp:\n  enabled: false\n")
        let state = ["--state-dir", served.stateDir]
        try cli(["users", "create", "erin"] + state)
        try cli(["users", "list"] + state)
        try cli(["users", "create", "erin"] + state, status: 1)   // a conflict: recorded with its outcome
        struct Created: Decodable { var key: String }
        let apiKey = try cli(["apikeys", "create"] + state).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        // Over the network with the key, on headscale's route.
        let body = #"{"name":"frank"}"#
        let answer = String(decoding: try await ControlClient.rawHTTP(
            host: "127.0.0.1", port: served.port,
            request: "POST /api/v1/user HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(apiKey)\r\nContent-Type: application/json\r\n"
                + "Content-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"), as: UTF8.self)
        XCTAssertTrue(answer.hasPrefix("HTTP/1.1 200"), answer)

        struct Entry: Decodable { var time, actor, method, route, object, outcome: String; var status: Int }
        let entries = try JSONDecoder().decode([Entry].self, from: Data(try cli(["audit", "-o", "json"] + state).stdout.utf8))
        XCTAssertEqual(entries.map(\.route), ["/api/v1/users", "/api/v1/users", "/api/v1/apikeys", "/api/v1/user"])
        XCTAssertEqual(entries.map(\.status), [201, 409, 201, 200])
        XCTAssertEqual(entries.map(\.object), ["name=erin", "name=erin", "", "name=frank"])
        XCTAssertTrue(entries[0].actor.hasPrefix("socket (uid \(getuid()), pid "), entries[0].actor)
        XCTAssertTrue(entries[0].actor.hasSuffix(", warren-control)"), entries[0].actor)
        let prefix = apiKey.split(separator: "-")[2]
        XCTAssertTrue(entries[3].actor.hasPrefix("api-key \(prefix) (id "), entries[3].actor)
        XCTAssertNotEqual(entries[1].outcome, "ok")
        let secret = String(apiKey.split(separator: "-")[3])
        let text = try cli(["audit", "--since", "1h"] + state).stdout
        XCTAssertFalse(text.contains(secret))
        XCTAssertTrue(text.hasPrefix("TIME"), text)
        XCTAssertEqual(text.split(separator: "\n").count, 5, text)
        XCTAssertEqual(try cli(["audit", "--limit", "1", "-o", "json"] + state).stdout.components(separatedBy: "\"route\"").count - 1, 1)
        let bad = try cli(["audit", "--since", "tuesday"] + state, status: 64)
        XCTAssertTrue(bad.stderr.contains("--since tuesday"), bad.stderr)

        let scrape = String(decoding: try await ControlClient.rawHTTP(
            host: "127.0.0.1", port: metricsPort, request: "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), as: UTF8.self)
        for expected in [
            "# HELP warren_admin_requests_total Admin API requests answered",
            "# TYPE warren_admin_requests_total counter",
            #"warren_admin_requests_total{route="/api/v1/users",method="POST",status="201"} 1"#,
            #"warren_admin_requests_total{route="/api/v1/users",method="POST",status="409"} 1"#,
            #"warren_admin_requests_total{route="/api/v1/users",method="GET",status="200"} 1"#,
            #"warren_admin_requests_total{route="/api/v1/user",method="POST",status="200"} 1"#,
            "# TYPE warren_admin_request_duration_seconds histogram",
            #"warren_admin_request_duration_seconds_count{route="/api/v1/users",method="POST"} 2"#,
        ] {
            XCTAssertTrue(scrape.contains(expected), "no \"\(expected)\" in:\n\(scrape.split(separator: "\n").filter { $0.contains("admin") }.joined(separator: "\n"))")
        }
        XCTAssertEqual(served.stop(), 0, served.log)
    }

    // MARK: server_url

    func testAWildcardListenAddressNeedsServerURL() throws {
        for listen in ["0.0.0.0:8080", "[::]:8080"] {
            try "listen_addr: \"\(listen)\"\nmetrics_listen_addr: \"off\"\n".write(toFile: directory + "/w.yaml", atomically: true, encoding: .utf8)
            let served = try cli(["serve", "--state-dir", directory + "/state", "--config", directory + "/w.yaml"], status: 2)
            XCTAssertTrue(served.stderr.contains("listens on all interfaces") && served.stderr.contains("set server_url"), served.stderr)
            XCTAssertFalse(FileManager.default.fileExists(atPath: directory + "/state"), "a refused configuration wrote state")
            let tested = try cli(["configtest", "--config", directory + "/w.yaml"], status: 1)
            XCTAssertTrue(tested.stderr.contains("set server_url"), tested.stderr)
        }
        // With server_url (the file's, or --server-url) the same address is accepted, and that URL is what clients get.
        try "listen_addr: 0.0.0.0:8080\nserver_url: https://vpn.example.com\nmetrics_listen_addr: \"off\"\n"
            .write(toFile: directory + "/ok.yaml", atomically: true, encoding: .utf8)
        let tested = try cli(["configtest", "--config", directory + "/ok.yaml"])
        XCTAssertTrue(tested.stdout.contains("server_url: https://vpn.example.com\n"), tested.stdout)
        let flag = try cli(["configtest", "--config", directory + "/w.yaml", "--server-url", "http://198.51.100.7:8080"])
        XCTAssertTrue(flag.stdout.contains("server_url: http://198.51.100.7:8080\n"), flag.stdout)
        // A specific address still derives it.
        try "listen_addr: 127.0.0.1:8080\n".write(toFile: directory + "/l.yaml", atomically: true, encoding: .utf8)
        let derived = try cli(["configtest", "--config", directory + "/l.yaml"])
        XCTAssertTrue(derived.stdout.contains("server_url: http://127.0.0.1:8080 (derived from the listen address)"), derived.stdout)
        // serve --server-url on loopback: announced as given.
        let served = try serve(config: "metrics_listen_addr: \"off\"\nderp:\n  enabled: false\n", extra: ["--server-url", "http://192.0.2.1:8080"])
        XCTAssertTrue(served.output.contains("point clients at: http://192.0.2.1:8080\n"), served.output)
        try cli(["users", "create", "gus", "--state-dir", served.stateDir])
        XCTAssertEqual(served.stop(), 0, served.log)
        let bad = try cli(["serve", "--state-dir", directory + "/s2", "--listen", "127.0.0.1:0", "--server-url", "vpn.example.com"], status: 2)
        XCTAssertTrue(bad.stderr.contains("--server-url vpn.example.com: expected an http:// or https:// URL"), bad.stderr)
    }
}

/// What a reader thread read, handed over after it signals.
private final class Box: @unchecked Sendable {
    var data = Data()
}
