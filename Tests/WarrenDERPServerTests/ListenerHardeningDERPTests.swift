// Issue 14 part A for warren-derp: it says loudly at start that it relays for anyone without
// --verify-clients-url, and silent connections to its TLS port are closed after --handshake-timeout.

import Foundation
import NIOCore
import NIOPosix
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
}
