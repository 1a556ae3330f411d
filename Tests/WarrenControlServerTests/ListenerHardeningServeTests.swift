// Issue 14 part A against `warren-control serve` as a program: under a low descriptor limit many silent
// connections do not make the server spin (its CPU time from /proc, not wall-clock) and /key answers once they
// go; the embedded DERP relay refuses a node key that is not a live node of its tailnet and admits a registered one.
// WARREN_CONTROL_BINARY runs another build (to see a test fail before a fix).

import Foundation
import NIOCore
import NIOPosix
import TailscaleKeys
import WarrenControlClient
import WarrenControlTransport
import WarrenDERPClient
import WarrenDERPTransport
import WarrenListenerGuard
import XCTest

final class ListenerHardeningServeTests: XCTestCase {
    struct Served {
        var process: Process
        var port: Int
        var directory: String
    }

    private func binary() throws -> String {
        if let path = ProcessInfo.processInfo.environment["WARREN_CONTROL_BINARY"] { return path }
        return try RealTailscaleClientTests.warrenControlBinary()
    }

    /// Starts `serve` (through prlimit when `nofile` is set) and waits for its URL line.
    private func serve(config: String, nofile: Int? = nil) throws -> Served {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("wlh-serve-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try config.write(toFile: directory + "/c.yaml", atomically: true, encoding: .utf8)
        let arguments = ["serve", "--state-dir", directory + "/state", "--listen", "127.0.0.1:0", "--metrics-listen", "off",
                         "--config", directory + "/c.yaml"]
        let process = Process()
        if let nofile {
            guard FileManager.default.isExecutableFile(atPath: "/usr/bin/prlimit") else { throw XCTSkip("prlimit is not installed") }
            process.executableURL = URL(fileURLWithPath: "/usr/bin/prlimit")
            process.arguments = ["--nofile=\(nofile):\(nofile)", try binary()] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: try binary())
            process.arguments = arguments
        }
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        var text = ""
        let handle = output.fileHandleForReading
        while !text.contains("\n") {
            let chunk = handle.availableData
            if chunk.isEmpty { break }
            text += String(decoding: chunk, as: UTF8.self)
        }
        guard let marker = text.range(of: "point clients at: http://127.0.0.1:"),
              let port = Int(text[marker.upperBound...].prefix { $0.isNumber }) else {
            stop(Served(process: process, port: 0, directory: directory))
            XCTFail("serve did not start: \(text)")
            throw CancellationError()
        }
        return Served(process: process, port: port, directory: directory)
    }

    private func stop(_ served: Served) {
        if served.process.isRunning { kill(served.process.processIdentifier, SIGKILL) }
        served.process.waitUntilExit()
        try? FileManager.default.removeItem(atPath: served.directory)
    }

    /// utime + stime of a process, in seconds.
    private func cpuSeconds(_ pid: Int32) throws -> Double {
        let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        let fields = stat[stat.index(after: try XCTUnwrap(stat.lastIndex(of: ")")))...].split(separator: " ")
        // After the command: state is field 3, utime 14, stime 15 (1-based, man 5 proc).
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        return (try XCTUnwrap(Double(fields[11])) + XCTUnwrap(Double(fields[12]))) / ticks
    }

    private func holdSilentConnections(port: Int, count: Int) async -> [any Channel] {
        var channels: [any Channel] = []
        for _ in 0..<count {
            guard let channel = try? await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.seconds(2)).connect(host: "127.0.0.1", port: port).get() else { break }
            channels.append(channel)
        }
        return channels
    }

    private func assertQuietUnderLowDescriptorLimit(listeners: String) async throws {
        DescriptorLimit.raise()
        guard DescriptorLimit.current().soft >= 1200 else { throw XCTSkip("this process needs 1200 descriptors") }
        let served = try serve(config: "derp:\n  enabled: false\n" + listeners, nofile: 256)
        defer { stop(served) }
        // prlimit execs warren-control: same PID.
        let pid = served.process.processIdentifier
        let channels = await holdSilentConnections(port: served.port, count: 600)
        XCTAssertGreaterThan(channels.count, 300)
        try await Task.sleep(for: .milliseconds(500))
        let before = try cpuSeconds(pid)
        try await Task.sleep(for: .seconds(3))
        let used = try cpuSeconds(pid) - before
        // Spinning on accept burns ~3 s of CPU here; a quiet server a few ms.
        XCTAssertLessThan(used, 0.6, "warren-control used \(used) s of CPU in 3 s holding \(channels.count) silent connections")
        for channel in channels { try? await channel.close() }
        var answered = false
        for _ in 0..<40 where !answered {
            answered = (try? await ControlConnection.fetchServerKey(ControlEndpoint(host: "127.0.0.1", port: served.port),
                                                                    capabilityVersion: 130, timeout: .seconds(3))) != nil
            if !answered { try await Task.sleep(for: .milliseconds(250)) }
        }
        XCTAssertTrue(answered, "/key did not answer once the silent connections closed")
    }

    /// The default cap (sized by the descriptor limit) turns the excess away at accept.
    func testSilentConnectionsUnderALowDescriptorLimitDoNotSpinWithTheDefaultCap() async throws {
        try await assertQuietUnderLowDescriptorLimit(listeners: "")
    }

    /// No cap: accept fails with EMFILE and backs off instead of spinning.
    func testSilentConnectionsUnderALowDescriptorLimitDoNotSpinWithoutACap() async throws {
        if ProcessInfo.processInfo.environment["WARREN_CONTROL_BINARY"] != nil { throw XCTSkip("needs the listeners key") }
        try await assertQuietUnderLowDescriptorLimit(listeners: "listeners:\n  control:\n    max_connections: 0\n    handshake_timeout: 60s\n")
    }

    func testEmbeddedRelayAdmitsOnlyLiveNodesOfItsTailnet() async throws {
        let derpPort = try await freePort()
        let served = try serve(config: "derp:\n  host: 127.0.0.1\n  port: \(derpPort)\n  stun_port: 0\n")
        defer { stop(served) }
        let state = served.directory + "/state"
        let certificate = try DERPCertificate.load(certificatePath: state + "/derp/derp-cert.pem", keyPath: state + "/derp/derp-key.pem")
        let endpoint = DERPClient.Endpoint(host: "127.0.0.1", port: derpPort, trust: .pinned(certificate.pin))

        // A node key nobody registered: refused.
        var generator = SystemRandomNumberGenerator()
        let stranger = try? await DERPClient.connect(to: endpoint, privateKey: NodePrivate.generate(using: &generator))
        XCTAssertNil(stranger, "the embedded relay admitted a node key that is not in its tailnet")
        await stranger?.close()

        // A registered node: admitted.
        _ = try run([try binary(), "users", "create", "alice", "--state-dir", state])
        let key = try run([try binary(), "preauthkeys", "create", "--user", "alice", "--state-dir", state])
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let client = ControlClient(port: served.port, seed: 41)
        let controlKey = try await ControlClient.fetchKey(host: "127.0.0.1", port: served.port).publicKey
        try await client.connect(controlKey: controlKey)
        let registered = try await client.register(client.registerRequest(authKey: key, hostname: "member"))
        XCTAssertTrue(registered.machineAuthorized, "\(registered)")
        let member = try await DERPClient.connect(to: endpoint, privateKey: client.nodeKey)
        await member.close()
        await client.close()
    }

    private func run(_ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, "\(arguments)")
        return String(decoding: data, as: UTF8.self)
    }

    private func freePort() async throws -> Int {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
        let port = channel.localAddress?.port ?? 0
        try await channel.close()
        return port
    }
}
