import Foundation
import Synchronization
import XCTest

/// Runs the interop scenarios in `Tests/Interop` (bash scripts driven by WireGuard's own `wg` and
/// `ip netns`), one test method per scenario. Each script builds its network namespaces, starts
/// `warren-wireguard` and Debian's `wireguard-go`, checks what it says it checks, removes
/// everything it created (an EXIT trap), and exits 0 on success, 77 when something it needs is
/// missing, and anything else on failure.
///
/// The implementation under test is the `warren-wireguard` that `swift build` put next to this
/// test bundle (or `WARREN_WIREGUARD`); `WG_IMPL=wireguard-go` runs the scenarios with
/// wireguard-go in Warren's place, which checks the scenarios themselves.
///
/// Without root, or without `wg`, `wireguard-go`, `iperf3`, `ip` or `python3`, the tests skip
/// with the reason, unless `WARREN_INTEROP_REQUIRED=1` (set by `scripts/test`), which turns every
/// such skip into a failure so that CI cannot pass without running them.
final class InteropTests: XCTestCase {
    /// Scenario a: Warren <-> wireguard-go, pings over IPv4 and IPv6, 100 MB each way, `wg show`.
    func testWarrenWithWireGuardGo() throws { try runScenario("warren-wggo.sh") }

    /// Scenario b: the same with Warren on both sides.
    func testWarrenWithWarren() throws { try runScenario("warren-warren.sh") }

    /// Scenario c: `wg-quick up` with `WG_QUICK_USERSPACE_IMPLEMENTATION=warren-wireguard`.
    func testWgQuick() throws { try runScenario("wg-quick.sh", extraTools: ["wg-quick"]) }

    /// Two handshakes forced during a running transfer (one started by each side) by new preshared
    /// keys; the transfer completes with matching SHA-256.
    func testRekeyDuringTransfer() throws { try runScenario("rekey.sh") }

    /// The wireguard-go side moves to a new address and port during a transfer, then again while
    /// idle; Warren follows it on the same session.
    func testRoaming() throws { try runScenario("roaming.sh") }

    /// Thousands of MAC1-valid initiations per second from a bogus source; a legitimate peer
    /// still completes its handshake through the cookie path.
    ///
    /// This one measures capacity, so it runs the release build of warren-wireguard when there is
    /// one at least as new as the debug build (`scripts/test` builds it), flooding at 10,000
    /// initiations per second, which a release build (like wireguard-go) answers with cookies
    /// while still serving the legitimate peer, even on a busy machine. A debug build spends
    /// several times more per cookie reply (unoptimized XChaCha20-Poly1305) and falls behind; when
    /// only a debug build exists the flood runs at 2,000 per second (still over ten times Warren's
    /// under-load threshold of 128 per second). `FLOOD_RATE` and `WARREN_WIREGUARD` override.
    func testHandshakeFlood() throws {
        let environment = ProcessInfo.processInfo.environment
        var extra: [String: String] = [:]
        if environment["WG_IMPL"] != "wireguard-go", environment["WARREN_WIREGUARD"] == nil {
            let release = Self.packageRoot.appendingPathComponent(".build/release/warren-wireguard").path
            if let debug = Self.warrenWireGuard(), Self.isAtLeastAsNew(release, as: debug) {
                extra["WARREN_WIREGUARD"] = release
            } else {
                extra["FLOOD_RATE"] = "2000"
            }
        }
        try runScenario("handshake-flood.sh", environment: extra)
    }

    private static func isAtLeastAsNew(_ path: String, as other: String) -> Bool {
        let fileManager = FileManager.default
        guard fileManager.isExecutableFile(atPath: path),
              let a = try? fileManager.attributesOfItem(atPath: path)[.modificationDate] as? Date,
              let b = try? fileManager.attributesOfItem(atPath: other)[.modificationDate] as? Date
        else { return false }
        return a >= b
    }

    // MARK: - Running a scenario

    /// Longest a scenario may run before it is stopped (SIGTERM, so that its trap cleans up).
    private static let scenarioTimeLimit: TimeInterval = 300

    private static let packageRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    private static var required: Bool { ProcessInfo.processInfo.environment["WARREN_INTEROP_REQUIRED"] == "1" }

    /// Skips, or fails when the environment says these tests are required.
    private func unavailable(_ reason: String) throws {
        if Self.required {
            XCTFail("interop scenario cannot run (WARREN_INTEROP_REQUIRED=1): \(reason)")
            return
        }
        throw XCTSkip(reason)
    }

    private static func executablePath(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin"
        for directory in path.split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin"] {
            let candidate = "\(directory)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    /// The `warren-wireguard` to test: `WARREN_WIREGUARD`, else the one built next to this test
    /// bundle (same configuration), else `.build/debug`, else `.build/release`.
    private static func warrenWireGuard() -> String? {
        let environment = ProcessInfo.processInfo.environment
        if let path = environment["WARREN_WIREGUARD"], !path.isEmpty { return path }
        let fileManager = FileManager.default
        var candidates: [URL] = []
        // The test bundle lives in the products directory (.build/<triple>/<config>/warrenPackageTests.xctest).
        if let bundle = Bundle.allBundles.first(where: { $0.bundlePath.hasSuffix(".xctest") }) {
            candidates.append(URL(fileURLWithPath: bundle.bundlePath).deletingLastPathComponent()
                .appendingPathComponent("warren-wireguard"))
        }
        for configuration in ["debug", "release"] {
            candidates.append(packageRoot.appendingPathComponent(".build/\(configuration)/warren-wireguard"))
        }
        for candidate in candidates where fileManager.isExecutableFile(atPath: candidate.path) {
            return candidate.path
        }
        return nil
    }

    private func runScenario(_ script: String, extraTools: [String] = [],
                             environment extra: [String: String] = [:]) throws {
        guard getuid() == 0 else {
            return try unavailable("needs root (it creates network namespaces)")
        }
        for tool in ["bash", "ip", "wg", "wireguard-go", "iperf3", "python3", "ping"] + extraTools
        where Self.executablePath(tool) == nil {
            return try unavailable("\(tool) is not installed (scripts/setup installs it)")
        }
        var environment = ProcessInfo.processInfo.environment
        for (key, value) in extra where environment[key] == nil { environment[key] = value }
        if environment["WG_IMPL"] != "wireguard-go", environment["WARREN_WIREGUARD"] == nil {
            guard let binary = Self.warrenWireGuard() else {
                return try unavailable("warren-wireguard is not built: run `swift build --product warren-wireguard` first")
            }
            environment["WARREN_WIREGUARD"] = binary
        }
        let scriptURL = Self.packageRoot.appendingPathComponent("Tests/Interop/\(script)")
        guard FileManager.default.fileExists(atPath: scriptURL.path) else {
            return XCTFail("scenario script \(scriptURL.path) is missing")
        }

        let result = try Self.run(["/bin/bash", scriptURL.path], environment: environment,
                                  timeLimit: Self.scenarioTimeLimit)
        let output = result.output
        switch result.status {
        case 0:
            // Keep the scenario's own log visible in the test output.
            print(output.split(separator: "\n").filter { $0.hasPrefix("[") }.joined(separator: "\n"))
        case 77:
            try unavailable("\(script): \(output.trimmingCharacters(in: .whitespacesAndNewlines))")
        default:
            let how = result.timedOut ? "was stopped after \(Int(Self.scenarioTimeLimit)) s" : "exited with status \(result.status)"
            XCTFail("\(script) \(how); its output:\n\(output)")
        }
    }

    private struct RunResult {
        var status: Int32
        var output: String
        var timedOut: Bool
    }

    /// Runs a command with stdout and stderr in one pipe, read to the end; SIGTERM after `timeLimit`.
    private static func run(_ arguments: [String], environment: [String: String], timeLimit: TimeInterval) throws -> RunResult {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        process.environment = environment
        process.currentDirectoryURL = packageRoot
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let pid = process.processIdentifier
        let timedOut = TimeoutFlag()
        let watchdog = DispatchWorkItem {
            timedOut.set()
            kill(pid, SIGTERM)
        }
        DispatchQueue.global().asyncAfter(deadline: .now() + timeLimit, execute: watchdog)
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        watchdog.cancel()
        return RunResult(status: process.terminationStatus, output: String(decoding: data, as: UTF8.self),
                         timedOut: timedOut.value)
    }
}

/// A flag set by the watchdog and read after the process ended.
private final class TimeoutFlag: Sendable {
    private let flag = Mutex(false)
    func set() { flag.withLock { $0 = true } }
    var value: Bool { flag.withLock { $0 } }
}
