// The warren-derp program: self-signed start, two clients through it, SIGTERM stops it cleanly.

import Foundation
import NIOCore
import NIOPosix
import TailscaleKeys
import WarrenDERPClient
import WarrenDERPTransport
import WarrenTestSupport
import XCTest

final class WarrenDERPExecutableTests: XCTestCase {
    private var binary: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("warren-derp")
    }

    /// A loopback TCP port that was free a moment ago.
    private func freePort() async throws -> Int {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
        let port = channel.localAddress?.port ?? 0
        try await channel.close()
        return port
    }

    func testSelfSignedRelayServesAndStopsOnSIGTERM() async throws {
        guard FileManager.default.isExecutableFile(atPath: binary.path) else {
            throw XCTSkip("warren-derp is not built next to the tests (\(binary.path)); run swift build first")
        }
        let state = FileManager.default.temporaryDirectory.appendingPathComponent("wdp-exec-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: state) }
        let port = try await freePort()
        let process = Process()
        process.executableURL = binary
        process.arguments = ["--listen", "127.0.0.1:\(port)", "--stun-port", "0", "--hostname", "127.0.0.1",
                             "--state-dir", state, "--log-level", "debug"]
        let log = Pipe()
        process.standardError = log
        process.standardOutput = log
        try process.run()
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }

        let certificatePath = (state as NSString).appendingPathComponent("derp-cert.pem")
        let keyPath = (state as NSString).appendingPathComponent("derp-key.pem")
        try await assertEventually { FileManager.default.fileExists(atPath: keyPath) && FileManager.default.fileExists(atPath: certificatePath) }
        let certificate = try DERPCertificate.load(certificatePath: certificatePath, keyPath: keyPath)
        let endpoint = DERPClient.Endpoint(host: "127.0.0.1", port: port, trust: .pinned(certificate.pin))
        var rng = SeededGenerator(seed: 0xE1)
        var a: DERPClient?
        for _ in 0..<200 where a == nil {
            a = try? await DERPClient.connect(to: endpoint, privateKey: NodePrivate.generate(using: &rng))
            if a == nil { try await Task.sleep(for: .milliseconds(50)) }
        }
        let first = try XCTUnwrap(a, "warren-derp did not accept a DERP client")
        let second = try await DERPClient.connect(to: endpoint, privateKey: NodePrivate.generate(using: &rng))
        try await first.send([7, 7, 7], to: second.publicKey)
        let packet = try await withDeadline { try await FrameReader(second).nextPacket() }
        XCTAssertEqual(packet?.0, first.publicKey)
        XCTAssertEqual(packet?.1, [7, 7, 7])

        kill(process.processIdentifier, SIGTERM)
        try await withDeadline { try await first.channel.closeFuture.get() }
        try await assertEventually { !process.isRunning }
        XCTAssertEqual(process.terminationStatus, 0)
        let output = String(decoding: log.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertTrue(output.contains("sha256-raw:"), output)
        // The same state directory gives the same certificate on the next start.
        let again = try DERPCertificate.loadOrCreateSelfSigned(directory: state, hostnames: ["127.0.0.1"])
        XCTAssertEqual(again.pin, certificate.pin)
    }
}
