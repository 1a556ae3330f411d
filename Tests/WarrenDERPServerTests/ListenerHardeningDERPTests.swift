// Issue 14 part A for warren-derp: it says loudly at start that it relays for anyone without
// --verify-clients-url, silent connections to its TLS port are closed after --handshake-timeout, a logged-in client
// that sends nothing (and was not asked to ack pings) is closed after --idle-timeout while one that answers pings
// stays, and connections over --max-connections are closed at accept.

import Foundation
import NIOCore
import NIOPosix
import WarrenDERPClient
import WarrenDERPTransport
import DERPProtocol
import TailscaleKeys
import XCTest

final class ListenerHardeningDERPTests: XCTestCase {
    private var binary: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("warren-derp")
    }

    func testOpenRelayWarnsAndSilentConnectionsAreClosed() async throws {
        guard FileManager.default.isExecutableFile(atPath: binary.path) else { throw XCTSkip("warren-derp is not built") }
        let state = FileManager.default.temporaryDirectory.appendingPathComponent("wlh-derp-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: state) }
        let probe = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
        let port = try XCTUnwrap(probe.localAddress?.port)
        try await probe.close()
        let process = Process()
        process.executableURL = binary
        process.arguments = ["--listen", "127.0.0.1:\(port)", "--stun-port", "0", "--state-dir", state, "--handshake-timeout", "1"]
        let log = Pipe()
        process.standardError = log
        process.standardOutput = log
        try process.run()
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        var text = ""
        let handle = log.fileHandleForReading
        while !text.contains("DERP relay ready") {
            let chunk = handle.availableData
            if chunk.isEmpty { break }
            text += String(decoding: chunk, as: UTF8.self)
        }
        XCTAssertTrue(text.contains("OPEN RELAY"), text)
        XCTAssertTrue(text.contains("--verify-clients-url"), text)

        var silent: [any Channel] = []
        for _ in 0..<30 {
            silent.append(try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port).get())
        }
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline, silent.contains(where: { $0.isActive }) { try await Task.sleep(for: .milliseconds(100)) }
        XCTAssertEqual(silent.filter { $0.isActive }.count, 0, "silent connections to the DERP TLS port stayed open")
        for channel in silent { try? await channel.close() }
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
    }

    /// Starts warren-derp with `arguments` on a free port; returns it, its port, its state directory and its log so far.
    private func launch(_ arguments: [String]) async throws -> (Process, Int, String) {
        guard FileManager.default.isExecutableFile(atPath: binary.path) else { throw XCTSkip("warren-derp is not built") }
        let state = FileManager.default.temporaryDirectory.appendingPathComponent("wlh-derp-\(UUID().uuidString)").path
        let probe = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
        let port = try XCTUnwrap(probe.localAddress?.port)
        try await probe.close()
        let process = Process()
        process.executableURL = binary
        process.arguments = ["--listen", "127.0.0.1:\(port)", "--stun-port", "0", "--state-dir", state] + arguments
        let log = Pipe()
        process.standardError = log
        process.standardOutput = log
        try process.run()
        var text = ""
        let handle = log.fileHandleForReading
        while !text.contains("DERP relay ready") {
            let chunk = handle.availableData
            if chunk.isEmpty { break }
            text += String(decoding: chunk, as: UTF8.self)
        }
        // Keep draining the log so that the relay never blocks on a full pipe.
        Thread.detachNewThread { while !handle.availableData.isEmpty {} }
        return (process, port, state)
    }

    private func endpoint(port: Int, state: String) throws -> DERPClient.Endpoint {
        let certificate = try DERPCertificate.load(certificatePath: state + "/derp-cert.pem", keyPath: state + "/derp-key.pem")
        return DERPClient.Endpoint(host: "127.0.0.1", port: port, trust: .pinned(certificate.pin))
    }

    func testALoggedInClientThatSendsNothingIsClosedAfterTheIdleTimeout() async throws {
        let (process, port, state) = try await launch(["--idle-timeout", "2"])
        defer {
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
            try? FileManager.default.removeItem(atPath: state)
        }
        let endpoint = try endpoint(port: port, state: state)
        var generator = SystemRandomNumberGenerator()
        // Says it cannot ack pings: the relay cannot wake it, and it sends nothing.
        let mute = try await DERPClient.connect(to: endpoint, privateKey: NodePrivate.generate(using: &generator),
                                                info: DERPClientInfo(canAckPings: false))
        // Pings the relay every 500 ms: alive.
        let chatty = try await DERPClient.connect(to: endpoint, privateKey: NodePrivate.generate(using: &generator))
        let muteFrames = FrameReader(mute)
        let started = ContinuousClock.now
        let pinger = Task {
            while !Task.isCancelled {
                _ = try? await chatty.ping(timeout: .seconds(2))
                try? await Task.sleep(for: .milliseconds(500))
            }
        }
        defer { pinger.cancel() }
        let ended = try await withDeadline(seconds: 15) { try await muteFrames.next(limit: 1_000_000) { _ in nil as Int? } == nil }
        let took = ContinuousClock.now - started
        XCTAssertTrue(ended)
        XCTAssertGreaterThanOrEqual(took, .milliseconds(1500), "closed before the idle timeout")
        XCTAssertLessThan(took, .seconds(8), "a silent client stayed \(took) with --idle-timeout 2")
        // The chatty one is still served after the silent one went.
        _ = try await chatty.ping()
        pinger.cancel()
        await chatty.close()
        await mute.close()
    }

    func testConnectionsOverMaxConnectionsAreClosedAtAccept() async throws {
        let (process, port, state) = try await launch(["--max-connections", "5", "--handshake-timeout", "60"])
        defer {
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
            try? FileManager.default.removeItem(atPath: state)
        }
        var held: [any Channel] = []
        for _ in 0..<5 {
            held.append(try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port).get())
        }
        try await Task.sleep(for: .milliseconds(300))
        var extra: [any Channel] = []
        for _ in 0..<5 {
            extra.append(try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port).get())
        }
        let deadline = ContinuousClock.now + .seconds(5)
        while ContinuousClock.now < deadline, extra.contains(where: { $0.isActive }) { try await Task.sleep(for: .milliseconds(50)) }
        XCTAssertEqual(extra.filter { $0.isActive }.count, 0, "connections over --max-connections stayed open")
        XCTAssertEqual(held.filter { $0.isActive }.count, 5)
        // A slot freed: a real client logs in.
        try await held.removeFirst().close()
        try await Task.sleep(for: .milliseconds(300))
        var generator = SystemRandomNumberGenerator()
        let client = try await DERPClient.connect(to: try endpoint(port: port, state: state), privateKey: NodePrivate.generate(using: &generator))
        _ = try await client.ping()
        await client.close()
        for channel in held + extra { try? await channel.close() }
    }
}
