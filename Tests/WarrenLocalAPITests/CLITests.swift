import Foundation
import WarrenLocalAPI
import XCTest

/// Runs the built `warren` binary (skipped when .build/debug/warren is absent) against the fake server.
final class CLITests: XCTestCase {
    static let binary: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.appendingPathComponent(".build/debug/warren").path
    }()

    struct Run { var status: Int32; var stdout: String; var stderr: String }

    func warren(_ arguments: [String], timeout: Double = 30) throws -> Run {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning { process.terminate(); XCTFail("warren \(arguments) hung") }
        process.waitUntilExit()
        return Run(status: process.terminationStatus,
                   stdout: String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self),
                   stderr: String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
    }

    func withServer(_ body: (TestServer) async throws -> Void) async throws {
        guard FileManager.default.isExecutableFile(atPath: Self.binary) else {
            throw XCTSkip("no \(Self.binary); build it with swift build --product warren")
        }
        let t = try await TestServer.start()
        do { try await body(t) } catch { await t.stop(); throw error }
        await t.stop()
    }

    func testStatusIPPingWhois() async throws {
        try await withServer { t in
            let socket = ["--socket", t.socketPath]
            var run = try warren(socket + ["status"])
            XCTAssertEqual(run.status, 0, run.stderr)
            let expected = StatusFormatter.statusTable(await t.backend.status())
            XCTAssertEqual(run.stdout, expected)
            XCTAssertTrue(run.stdout.contains("active; direct 203.0.113.7:41641"))

            run = try warren(["status", "--json", "--socket", t.socketPath])
            XCTAssertEqual(run.status, 0, run.stderr)
            let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])
            XCTAssertEqual(object["BackendState"] as? String, "Running")
            XCTAssertNotNil(object["Self"] as? [String: Any])

            run = try warren(socket + ["status", "--self=false", "--peers"])
            XCTAssertFalse(run.stdout.contains("laptop"))
            XCTAssertTrue(run.stdout.contains("alpha"))

            run = try warren(socket + ["ip", "-4"])
            XCTAssertEqual(run.status, 0, run.stderr)
            XCTAssertEqual(run.stdout, "100.64.0.1\n")
            run = try warren(socket + ["ip", "-6", "alpha"])
            XCTAssertEqual(run.stdout, "fd7a:115c:a1e0::2\n")
            run = try warren(socket + ["ip"])
            XCTAssertEqual(run.stdout, "100.64.0.1\nfd7a:115c:a1e0::1\n")

            run = try warren(socket + ["ping", "alpha"])
            XCTAssertEqual(run.status, 0, run.stderr)
            XCTAssertEqual(run.stdout, "pong from alpha (100.64.0.2) via 203.0.113.7:41641 in 12ms\n")

            run = try warren(socket + ["ping", "-c", "2", "--interval", "0", "beta"])
            XCTAssertNotEqual(run.status, 0, "over DERP only, --until-direct fails as tailscale's does")
            XCTAssertEqual(run.stdout, String(repeating: "pong from beta (100.64.0.3) via DERP(nyc) in 80ms\n", count: 2))
            XCTAssertEqual(run.stderr, "direct connection not established\n")

            run = try warren(socket + ["ping", "--tsmp", "-c", "1", "--interval", "0", "100.64.0.3"])
            XCTAssertEqual(run.status, 0, run.stderr)
            XCTAssertEqual(t.backend.calls.last, "ping 100.64.0.3 TSMP 0")

            run = try warren(socket + ["ping", "-c", "2", "--interval", "0", "gamma"])
            XCTAssertNotEqual(run.status, 0)
            XCTAssertEqual(run.stdout, "ping \"100.64.0.10\" timed out\nping \"100.64.0.10\" timed out\n")

            run = try warren(socket + ["ping", "nosuchpeer"])
            XCTAssertNotEqual(run.status, 0)
            XCTAssertEqual(run.stderr, "unknown peer: \"nosuchpeer\"\n")
            XCTAssertEqual(run.stdout, "")

            run = try warren(socket + ["ip", "nosuchpeer"])
            XCTAssertNotEqual(run.status, 0)
            XCTAssertEqual(run.stderr.split(separator: "\n").count, 1)

            run = try warren(socket + ["whois", "100.64.0.2:22"])
            XCTAssertEqual(run.status, 0, run.stderr)
            XCTAssertTrue(run.stdout.contains("alice@example.com"))
            run = try warren(socket + ["whois", "100.64.0.55"])
            XCTAssertNotEqual(run.status, 0)
            XCTAssertEqual(run.stderr, "no match for IP:port 100.64.0.55\n")

            run = try warren(socket + ["netcheck"])
            XCTAssertEqual(run.status, 0, run.stderr)
            XCTAssertTrue(run.stdout.contains("Nearest DERP: fra"))
        }
    }

    func testUpDownLogout() async throws {
        try await withServer { t in
            let socket = ["--socket", t.socketPath]
            let keyFile = t.directory + "/key"
            try "  tskey-from-file\n".write(toFile: keyFile, atomically: true, encoding: .utf8)
            var run = try warren(socket + ["up", "--auth-key", "file:" + keyFile, "--login-server", "https://control.example",
                                           "--hostname", "box1", "--shields-up", "--accept-routes"])
            XCTAssertEqual(run.status, 0, run.stderr)
            XCTAssertEqual(t.backend.upRequests.last, UpRequest(loginServer: "https://control.example", authKey: "tskey-from-file",
                                                                 hostname: "box1", shieldsUp: true, acceptRoutes: true, wait: true))

            // Interactive: prints the URL, then polls status until Running.
            run = try warren(socket + ["login", "--timeout", "20s"])
            XCTAssertEqual(run.status, 0, run.stderr)
            XCTAssertTrue(run.stderr.contains("To authenticate, visit:\n\n\thttps://control.example/a/abc123\n"), run.stderr)

            run = try warren(socket + ["up", "--auth-key", "bad"])
            XCTAssertNotEqual(run.status, 0)
            XCTAssertEqual(run.stderr, "invalid auth key\n")

            run = try warren(socket + ["up", "--login-server", "not a url"])
            XCTAssertNotEqual(run.status, 0)
            XCTAssertEqual(run.stderr.split(separator: "\n").count, 1)
            run = try warren(socket + ["up", "--auth-key", "file:" + t.directory + "/missing"])
            XCTAssertNotEqual(run.status, 0)
            XCTAssertEqual(run.stderr, "cannot read auth key file \(t.directory)/missing\n")

            run = try warren(socket + ["down"])
            XCTAssertEqual(run.status, 0, run.stderr)
            run = try warren(socket + ["status"])
            XCTAssertNotEqual(run.status, 0)
            XCTAssertEqual(run.stdout, "Warren is stopped.\n")
            run = try warren(socket + ["logout"])
            XCTAssertEqual(run.status, 0, run.stderr)
            XCTAssertEqual(t.backend.calls.suffix(1), ["logout"])
        }
    }

    func testDaemonNotRunning() throws {
        guard FileManager.default.isExecutableFile(atPath: Self.binary) else { throw XCTSkip("no warren binary") }
        let path = "/tmp/warren-cli-missing-\(UInt32.random(in: 0...UInt32.max)).sock"
        for arguments in [["status"], ["ip", "-4"], ["ping", "alpha"], ["up"], ["netcheck"]] {
            let run = try warren(["--socket", path] + arguments)
            XCTAssertNotEqual(run.status, 0)
            XCTAssertEqual(run.stderr, "warrend is not running (no socket at \(path))\n", "\(arguments)")
        }
    }
}
