// warren-derp meshing, the outgoing half: two warren-derp processes on loopback (one certificate, pinned with
// --mesh-trust, one mesh key), each given the same --mesh-with list (itself included, which it must ignore), and a
// DERP client on each. Packets cross the mesh both ways (ForwardPacket); when the client on one relay goes away,
// the client that sent to it through the other relay gets PeerGone; a relay that restarts is reconnected to and
// packets cross again; a mesh key that does not match forwards nothing.

import Foundation
import NIOCore
import NIOPosix
import TailscaleKeys
import WarrenDERPClient
import WarrenDERPTransport
import WarrenTestSupport
import XCTest

final class DERPMeshExecutableTests: XCTestCase {
    private var binary: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("warren-derp")
    }
    private var directory = ""
    private var processes: [Process] = []

    override func setUpWithError() throws {
        guard FileManager.default.isExecutableFile(atPath: binary.path) else {
            throw XCTSkip("warren-derp is not built next to the tests (\(binary.path)); run swift build first")
        }
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("wdp-mesh-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        for process in processes where process.isRunning {
            kill(process.processIdentifier, SIGTERM)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func freePort() async throws -> Int {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
        let port = channel.localAddress?.port ?? 0
        try await channel.close()
        return port
    }

    /// Starts a relay with its own state (key) directory; the certificate is relay A's (made by a first start).
    private func startRelay(_ name: String, port: Int, meshWith: [Int], meshKeyFile: String, pin: String?,
                            certificate: (String, String)?) throws -> Process {
        let process = Process()
        process.executableURL = binary
        var arguments = ["--listen", "127.0.0.1:\(port)", "--stun-port", "0", "--hostname", "127.0.0.1",
                         "--state-dir", directory + "/" + name, "--log-level", "debug",
                         "--mesh-key-file", meshKeyFile, "--mesh-with", meshWith.map { "127.0.0.1:\($0)" }.joined(separator: ",")]
        if let pin { arguments += ["--mesh-trust", pin] }
        if let (cert, key) = certificate { arguments += ["--cert", cert, "--key", key] }
        process.arguments = arguments
        FileManager.default.createFile(atPath: directory + "/\(name).log", contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: directory + "/\(name).log"))
        process.standardError = log
        process.standardOutput = log
        try process.run()
        processes.append(process)
        return process
    }

    private func log(_ name: String) -> String {
        (try? String(contentsOfFile: directory + "/\(name).log", encoding: .utf8)) ?? ""
    }

    private func connect(port: Int, pin: String, key: NodePrivate) async throws -> DERPClient {
        let endpoint = DERPClient.Endpoint(host: "127.0.0.1", port: port, trust: .pinned(pin))
        for _ in 0..<200 {
            if let client = try? await DERPClient.connect(to: endpoint, privateKey: key) { return client }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw DERPClientError.connectionClosed
    }

    /// Sends `payload` from `from` to `to` until `inbox` has it (the mesh learns of a new client a moment after it
    /// connects); returns how many sends it took.
    @discardableResult
    private func deliver(_ payload: [UInt8], from: DERPClient, to: DERPClient, inbox: MeshInbox, within seconds: Double = 15) async throws -> Int {
        let deadline = Date().addingTimeInterval(seconds)
        var sends = 0
        while Date() < deadline {
            try await from.send(payload, to: to.publicKey)
            sends += 1
            let wait = Date().addingTimeInterval(0.5)
            while Date() < wait {
                if inbox.packets.contains(where: { $0.0 == from.publicKey && $0.1 == payload }) { return sends }
                try await Task.sleep(for: .milliseconds(20))
            }
        }
        XCTFail("\(payload) never crossed the mesh; relay a:\n\(log("a").suffix(6000))\nrelay b:\n\(log("b").suffix(6000))")
        return sends
    }

    func testTwoRelaysForwardBothWaysTellPeerGoneAndReconnect() async throws {
        let (portA, portB) = (try await freePort(), try await freePort())
        let meshKey = directory + "/mesh.key"
        try (String(repeating: "5a", count: 32) + "\n").write(toFile: meshKey, atomically: true, encoding: .utf8)
        // A first: it makes the certificate that both relays serve (so that one pin checks both).
        let relayA = try startRelay("a", port: portA, meshWith: [portA, portB], meshKeyFile: meshKey, pin: nil, certificate: nil)
        let certificatePath = directory + "/a/derp-cert.pem", keyPath = directory + "/a/derp-key.pem"
        try await assertEventually { FileManager.default.fileExists(atPath: certificatePath) && FileManager.default.fileExists(atPath: keyPath) }
        let pin = try DERPCertificate.load(certificatePath: certificatePath, keyPath: keyPath).pin
        kill(relayA.processIdentifier, SIGTERM)
        relayA.waitUntilExit()
        _ = try startRelay("a", port: portA, meshWith: [portA, portB], meshKeyFile: meshKey, pin: pin, certificate: nil)
        var relayB = try startRelay("b", port: portB, meshWith: [portA, portB], meshKeyFile: meshKey, pin: pin,
                                    certificate: (certificatePath, keyPath))

        var rng = SeededGenerator(seed: 0x3E5)
        let keyOnA = NodePrivate.generate(using: &rng), keyOnB = NodePrivate.generate(using: &rng)
        let alice = try await connect(port: portA, pin: pin, key: keyOnA)
        var bob = try await connect(port: portB, pin: pin, key: keyOnB)
        let aliceInbox = MeshInbox(alice)
        var bobInbox = MeshInbox(bob)

        try await deliver([1, 2, 3], from: alice, to: bob, inbox: bobInbox)
        try await deliver([4, 5, 6], from: bob, to: alice, inbox: aliceInbox)
        // Each relay found itself in the list and ignored it.
        try await assertEventually { self.log("a").contains("this relay itself") && self.log("b").contains("this relay itself") }

        // Bob leaves relay B: Alice, who sent to him through relay A, hears PeerGone.
        await bob.close()
        try await assertEventually { aliceInbox.gone.contains(keyOnB.publicKey) }

        // Relay B restarts: relay A reconnects to it (with backoff) and packets cross again.
        kill(relayB.processIdentifier, SIGTERM)
        relayB.waitUntilExit()
        relayB = try startRelay("b", port: portB, meshWith: [portA, portB], meshKeyFile: meshKey, pin: pin,
                                certificate: (certificatePath, keyPath))
        bob = try await connect(port: portB, pin: pin, key: keyOnB)
        bobInbox = MeshInbox(bob)
        try await deliver([7, 8, 9], from: alice, to: bob, inbox: bobInbox, within: 20)
        XCTAssertTrue(log("a").contains("connection lost; reconnecting"), log("a"))
        await alice.close()
        await bob.close()
    }

    func testAWrongMeshKeyForwardsNothing() async throws {
        let (portA, portB) = (try await freePort(), try await freePort())
        let keyA = directory + "/a.key", keyB = directory + "/b.key"
        try (String(repeating: "11", count: 32) + "\n").write(toFile: keyA, atomically: true, encoding: .utf8)
        try (String(repeating: "22", count: 32) + "\n").write(toFile: keyB, atomically: true, encoding: .utf8)
        let relayA = try startRelay("a", port: portA, meshWith: [portB], meshKeyFile: keyA, pin: nil, certificate: nil)
        let certificatePath = directory + "/a/derp-cert.pem", keyPath = directory + "/a/derp-key.pem"
        try await assertEventually { FileManager.default.fileExists(atPath: certificatePath) && FileManager.default.fileExists(atPath: keyPath) }
        let pin = try DERPCertificate.load(certificatePath: certificatePath, keyPath: keyPath).pin
        kill(relayA.processIdentifier, SIGTERM)
        relayA.waitUntilExit()
        _ = try startRelay("a", port: portA, meshWith: [portB], meshKeyFile: keyA, pin: pin, certificate: nil)
        _ = try startRelay("b", port: portB, meshWith: [portA], meshKeyFile: keyB, pin: pin, certificate: (certificatePath, keyPath))
        var rng = SeededGenerator(seed: 0x3E6)
        let alice = try await connect(port: portA, pin: pin, key: NodePrivate.generate(using: &rng))
        let bob = try await connect(port: portB, pin: pin, key: NodePrivate.generate(using: &rng))
        let aliceInbox = MeshInbox(alice), bobInbox = MeshInbox(bob)
        // Each relay presents the wrong key to the other: a plain client there, refused WatchConns, so nothing is
        // learnt and the packet is answered PeerGone(not here).
        try await Task.sleep(for: .seconds(2))
        try await alice.send([1], to: bob.publicKey)
        try await assertEventually { aliceInbox.notHere.contains(bob.publicKey) }
        try await Task.sleep(for: .seconds(1))
        XCTAssertTrue(bobInbox.packets.isEmpty)
        XCTAssertTrue(log("a").contains("connection lost") || log("a").contains("cannot connect"), log("a"))
        await alice.close()
        await bob.close()
    }
}

/// Everything a client receives, collected by a task of its own (cancelling a read would close the connection).
final class MeshInbox: @unchecked Sendable {
    private let lock = NSLock()
    private var received: [(NodePublic, [UInt8])] = []
    private var goneKeys: Set<NodePublic> = []
    private var notHereKeys: Set<NodePublic> = []

    init(_ client: DERPClient) {
        Task { [self] in
            for await frame in client.frames {
                lock.withLock {
                    switch frame {
                    case .recvPacket(let source, let packet): received.append((source, packet))
                    case .peerGone(let key, let reason) where reason == .notHere: notHereKeys.insert(key)
                    case .peerGone(let key, _): goneKeys.insert(key)
                    default: break
                    }
                }
            }
        }
    }

    var packets: [(NodePublic, [UInt8])] { lock.withLock { received } }
    var gone: Set<NodePublic> { lock.withLock { goneKeys } }
    var notHere: Set<NodePublic> { lock.withLock { notHereKeys } }
}
