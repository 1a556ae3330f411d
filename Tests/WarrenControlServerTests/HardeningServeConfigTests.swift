// Issue 14 point 9: `warren-control serve` validates every setting before writing anything and names the key or
// listener in each error; YAML alias bombs are refused before parsing; `warren-derp --stun-port` is range-checked.
// Uses the built binaries next to the tests.

import Foundation
import XCTest

final class HardeningServeConfigTests: XCTestCase {
    struct Run {
        var status: Int32
        var stderr: String
        var stateWritten: Bool
    }

    func serve(config: String, extra: [String] = [], stateDir: String? = nil, runFor: Double = 30) throws -> Run {
        let binary = try RealTailscaleClientTests.warrenControlBinary()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("wch-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try config.write(toFile: directory + "/c.yaml", atomically: true, encoding: .utf8)
        let state = stateDir ?? directory + "/state"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["serve", "--state-dir", state, "--listen", "127.0.0.1:0", "--metrics-listen", "off",
                             "--config", directory + "/c.yaml"] + extra
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        // A configuration that is accepted would serve forever: stop it after a while.
        let watchdog = DispatchWorkItem { if process.isRunning { process.terminate() } }
        DispatchQueue.global().asyncAfter(deadline: .now() + runFor, execute: watchdog)
        let data = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        watchdog.cancel()
        return Run(status: process.terminationStatus, stderr: String(decoding: data, as: UTF8.self),
                   stateWritten: FileManager.default.fileExists(atPath: state))
    }

    func testBadSettingsAreRefusedBeforeAnythingIsWrittenAndNameTheKey() throws {
        let cases: [(String, String)] = [
            ("prefixes:\n  v4: 0.0.0.0/0\n", "prefixes.v4: 0.0.0.0/0 is /0"),
            ("prefixes:\n  v6: ::/0\n", "prefixes.v6: ::/0 is /0"),
            ("prefixes:\n  v4: 100.64.0.1/32\n", "prefixes.v4: 100.64.0.1/32 is /32"),
            ("keep_alive_interval: 1ms\n", "keep_alive_interval: must be from 5s"),
            ("map_update_interval: 100000d\n", "map_update_interval: must be from 1ms to 60s"),
            ("dns:\n  nameservers: [\"not an ip\"]\n", "dns.nameservers[0]: \"not an ip\" is not an IP address"),
            ("dns:\n  nameservers: [1.1.1.1, \"ftp://x\"]\n", "dns.nameservers[1]"),
            ("metrics_listen_addr: 127.0.0.1:18555\nderp:\n  port: 18555\n", "metrics listener"),
        ]
        for (yaml, expected) in cases {
            let run = try serve(config: yaml, extra: yaml.hasPrefix("metrics") ? ["--metrics-listen", "127.0.0.1:18555"] : [])
            XCTAssertEqual(run.status, 2, "\(yaml) -> \(run.stderr)")
            XCTAssertTrue(run.stderr.contains(expected), "expected \"\(expected)\" in: \(run.stderr)")
            XCTAssertFalse(run.stateWritten, "\(yaml): the state directory was written")
        }
    }

    /// Good values pass validation: the file is accepted and the server gets as far as serving.
    func testGoodNameserversAndBoundsAreAccepted() throws {
        let yaml = """
        dns:
          nameservers: [1.1.1.1, "9.9.9.9:53", "[2606:4700::1111]:53", "2606:4700::1111", "https://dns.example/dns-query"]
        keep_alive_interval: 55s
        map_update_interval: 250ms
        prefixes:
          v4: 100.64.0.0/10
          v6: fd7a:115c:a1e0::/48
        derp:
          enabled: false

        """
        let run = try serve(config: yaml, runFor: 6)
        XCTAssertFalse(run.stderr.contains("dns.nameservers"), run.stderr)
        XCTAssertTrue(run.stderr.contains("loaded tailnet") || run.stateWritten, run.stderr)
    }

    func testAYAMLAliasBombIsRefusedBeforeParsing() throws {
        let bomb = """
        a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
        b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
        c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
        d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
        e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
        f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
        g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
        h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]

        """
        let run = try serve(config: bomb)
        XCTAssertEqual(run.status, 2, run.stderr)
        XCTAssertTrue(run.stderr.contains("YAML aliases"), run.stderr)
        let big = String(repeating: "# padding\n", count: 40_000)
        let large = try serve(config: big)
        XCTAssertEqual(large.status, 2, large.stderr)
        XCTAssertTrue(large.stderr.contains("at most"), large.stderr)
    }

    func testAStateDirectoryThatCannotBeWrittenGivesOneClearLine() throws {
        let run = try serve(config: "base_domain: lab.warren\n", stateDir: "/proc/self/warren-state")
        XCTAssertNotEqual(run.status, 0)
        XCTAssertNotEqual(run.status, 64, "a usage error")
        XCTAssertFalse(run.stderr.contains("USAGE"), run.stderr)
        XCTAssertTrue(run.stderr.contains("state directory /proc/self/warren-state"), run.stderr)
        XCTAssertEqual(run.stderr.split(separator: "\n").filter { $0.contains("warren-control:") }.count, 1, run.stderr)
    }

    func testWarrenDERPRefusesAnOutOfRangeSTUNPort() throws {
        let control = try RealTailscaleClientTests.warrenControlBinary()
        let binary = URL(fileURLWithPath: control).deletingLastPathComponent().appendingPathComponent("warren-derp").path
        guard FileManager.default.isExecutableFile(atPath: binary) else { throw XCTSkip("warren-derp is not built") }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["--listen", "127.0.0.1:0", "--stun-port", "70000"]
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let watchdog = DispatchWorkItem { if process.isRunning { process.terminate() } }
        DispatchQueue.global().asyncAfter(deadline: .now() + 20, execute: watchdog)
        let data = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        watchdog.cancel()
        let text = String(decoding: data, as: UTF8.self)
        XCTAssertNotEqual(process.terminationReason, .uncaughtSignal, "it kept running: \(text)")
        XCTAssertNotEqual(process.terminationStatus, 0)
        XCTAssertTrue(text.contains("--stun-port"), text)
    }
}
