// The embedded relays of several warren-control instances made one region (issue 13 §3, derp.mesh_with and
// derp.mesh_key_path), against the built binary on loopback:
//   - configuration: both layouts (Warren's derp.mesh_*, headscale's derp.server.mesh_*), `configtest` showing the
//     peers but never the key, a missing or bad key file refused naming the key, mesh_with without a key refused, the
//     two layouts' keys together refused;
//   - two `serve` processes (each its own SQLite tailnet: the relay admits only its own nodes, and a packet
//     forwarded from a mesh peer needs no admission), each given the same mesh list (itself included, which it must
//     ignore) and the same key: the DERP map each announces lists its own relay first and the other as a second node
//     of region 900 (its port, pin and STUN port), and a DERP client homed on each relay exchanges packets with the
//     one homed on the other, both ways.
// Files live in /tmp/wcem-<random>, removed afterwards; the serve processes are stopped by their pids.

import Foundation
import NIOCore
import NIOSSL
import TailscaleKeys
import WarrenControlClient
import WarrenDERPClient
import WarrenDERPTransport
import WarrenTailcfg
import WarrenTestProbes
import XCTest

final class EmbeddedDERPMeshTests: XCTestCase {
    private var directory = ""
    private var processes: [Process] = []

    override func setUpWithError() throws {
        directory = "/tmp/wcem-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        for process in processes where process.isRunning {
            kill(process.processIdentifier, SIGTERM)
            process.waitUntilExit()
        }
        let failed = testRun.map { $0.totalFailureCount > 0 } ?? true
        if failed {
            print("EmbeddedDERPMeshTests: files kept in \(directory)")
        } else {
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    private func binary() throws -> String {
        if let path = ProcessInfo.processInfo.environment["WARREN_CONTROL_BINARY"] { return path }
        return try RealTailscaleClientTests.warrenControlBinary()
    }

    private func run(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        try HeadscaleConfigServeTests.runWarrenControl(arguments)
    }

    private func writeKey(_ name: String, _ text: String, mode: Int = 0o600) throws -> String {
        let path = directory + "/" + name
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: path)
        return path
    }

    // MARK: Configuration

    func testMeshSettingsInBothLayoutsAndConfigtestNeverShowsTheKey() throws {
        let keyHex = "7c" + String(repeating: "4e1a", count: 15) + "93"
        let key = try writeKey("mesh.key", keyHex + "\n")
        let pin = "sha256-raw:" + String(repeating: "ab", count: 32)
        // Warren's layout: a relative key path (against the file's directory), a plain peer, a pinned one with its
        // STUN port, and an IPv6 peer with the default port.
        try """
            state_dir: \(directory)/w
            derp:
              host: 127.0.0.1
              port: 18443
              stun_port: 13478
              mesh_key_path: mesh.key
              mesh_with:
                - ctl-b.internal:8443
                - {addr: "10.0.0.3:9443", cert_name: "\(pin)", stun_port: 3479}
                - "[2001:db8::4]"
            """.write(toFile: directory + "/w.yaml", atomically: true, encoding: .utf8)
        let warren = try run(["configtest", "--config", directory + "/w.yaml"])
        XCTAssertEqual(warren.status, 0, warren.stderr)
        XCTAssertTrue(warren.stdout.contains("derp mesh: with ctl-b.internal:8443 (system roots); 10.0.0.3:9443 (pinned sha256-raw:abababab…), "
                                             + "stun 3479; [2001:db8::4]:443 (system roots), key from \(key) (not shown)"), warren.stdout)
        XCTAssertTrue(warren.stdout.contains("warnings: 0"), warren.stdout)
        XCTAssertFalse((warren.stdout + warren.stderr).lowercased().contains(keyHex), "configtest printed the mesh key")

        // headscale's layout: derp.server.mesh_with and mesh_key_path beside headscale's own derp.server keys.
        try """
            server_url: http://127.0.0.1:18080
            listen_addr: 127.0.0.1:18080
            noise:
              private_key_path: \(directory)/h/noise.key
            derp:
              server:
                enabled: true
                region_id: 999
                stun_listen_addr: "127.0.0.1:13478"
                mesh_key_path: mesh.key
                mesh_with: ["10.0.0.2:443", "10.0.0.3:443"]
            database:
              type: sqlite
              sqlite:
                path: \(directory)/h/db.sqlite
            """.write(toFile: directory + "/h.yaml", atomically: true, encoding: .utf8)
        let headscale = try run(["configtest", "--config", directory + "/h.yaml"])
        XCTAssertEqual(headscale.status, 0, headscale.stderr)
        XCTAssertTrue(headscale.stdout.contains("derp mesh: with 10.0.0.2:443 (system roots); 10.0.0.3:443 (system roots), key from \(key) (not shown)"),
                      headscale.stdout)
        XCTAssertFalse((headscale.stdout + headscale.stderr).lowercased().contains(keyHex), "configtest printed the mesh key")
        // Without mesh settings: off.
        try "state_dir: \(directory)/o\n".write(toFile: directory + "/o.yaml", atomically: true, encoding: .utf8)
        let off = try run(["configtest", "--config", directory + "/o.yaml"])
        XCTAssertTrue(off.stdout.contains("derp mesh: off"), off.stdout)

        // A key file others may read: a warning naming the key as the file spelled it.
        _ = try writeKey("open.key", keyHex + "\n", mode: 0o644)
        try String(contentsOfFile: directory + "/h.yaml", encoding: .utf8).replacingOccurrences(of: "mesh_key_path: mesh.key", with: "mesh_key_path: open.key")
            .write(toFile: directory + "/h2.yaml", atomically: true, encoding: .utf8)
        let open = try run(["configtest", "--config", directory + "/h2.yaml"])
        XCTAssertEqual(open.status, 0, open.stderr)
        XCTAssertTrue(open.stdout.contains("warning: derp.server.mesh_key_path: \(directory)/open.key may be read by other users (mode 0644)"),
                      open.stdout)
    }

    func testABadMeshKeyFileOrAMeshWithoutAKeyIsRefusedNamingTheKey() throws {
        let secretLooking = "not-a-key-" + String(repeating: "z", count: 54)
        _ = try writeKey("bad.key", secretLooking + "\n")
        _ = try writeKey("short.key", String(repeating: "ab", count: 31) + "\n")
        _ = try writeKey("zero.key", String(repeating: "00", count: 32) + "\n")
        func check(_ layout: String, _ body: String, _ expected: String, file: StaticString = #filePath, line: UInt = #line) throws {
            let path = directory + "/\(layout)-\(UUID().uuidString.prefix(4)).yaml"
            try ("state_dir: \(directory)/s\n" + body).write(toFile: path, atomically: true, encoding: .utf8)
            let result = try run(["configtest", "--config", path])
            XCTAssertEqual(result.status, 1, "\(body)\n\(result.stdout)", file: file, line: line)
            XCTAssertTrue(result.stderr.contains(expected), "no \"\(expected)\" in:\n\(result.stderr)", file: file, line: line)
            XCTAssertTrue((result.stdout + result.stderr).contains("FAILED"), result.stdout + result.stderr, file: file, line: line)
            XCTAssertFalse((result.stdout + result.stderr).contains(secretLooking), "the key file's content was printed", file: file, line: line)
            // serve refuses the same, with exit status 2, before anything is written.
            let served = try run(["serve", "--config", path, "--listen", "127.0.0.1:0", "--metrics-listen", "off"])
            XCTAssertEqual(served.status, 2, served.stderr, file: file, line: line)
            XCTAssertTrue(served.stderr.contains(expected), served.stderr, file: file, line: line)
        }
        let peers = "  mesh_with: [\"127.0.0.1:8443\"]\n"
        try check("w", "derp:\n  mesh_key_path: missing.key\n" + peers, "derp.mesh_key_path: no such file: \(directory)/missing.key")
        try check("w", "derp:\n  mesh_key_path: bad.key\n" + peers, "derp.mesh_key_path: \(directory)/bad.key does not hold a mesh key")
        try check("w", "derp:\n  mesh_key_path: short.key\n" + peers, "derp.mesh_key_path: \(directory)/short.key does not hold a mesh key")
        try check("w", "derp:\n  mesh_key_path: zero.key\n" + peers, "derp.mesh_key_path: \(directory)/zero.key holds a key of all zeros")
        try check("w", "derp:\n" + peers, "derp.mesh_with: needs mesh_key_path")
        try check("h", "derp:\n  server:\n    mesh_key_path: bad.key\n", "derp.server.mesh_key_path: \(directory)/bad.key does not hold a mesh key")
        try check("h", "derp:\n  server:\n    mesh_with: [\"127.0.0.1:8443\"]\n", "derp.server.mesh_with: needs mesh_key_path")
        _ = try writeKey("good.key", String(repeating: "5d", count: 32) + "\n")
        try check("h", "derp:\n  server:\n    mesh_key_path: good.key\n    mesh_with: [\"fe80::1:8443\"]\n",
                  "derp.server.mesh_with[0]: \"fe80::1:8443\" is not host:port")
        try check("w", "derp:\n  mesh_key_path: good.key\n  mesh_with: [{addr: \"127.0.0.1:1\", cert_name: \"sha256-raw:12\"}]\n",
                  "derp.mesh_with[0].cert_name: expected sha256-raw:<64 hex digits>")
        try check("w", "derp:\n  mesh_key_path: good.key\n  mesh_with: [{host: \"127.0.0.1:1\"}]\n", "derp.mesh_with[0].host: unknown key")
        try check("w", "derp:\n  mesh_key_path: good.key\n  server:\n    mesh_key_path: good.key\n",
                  "derp.mesh_key_path (Warren's layout) and derp.server.mesh_key_path (headscale's layout) set the same thing")
    }

    // MARK: Two instances, their relays meshed

    struct Served {
        let process: Process
        let port: Int
        let stateDir: String
        let log: String
    }

    /// `serve` with `config`, its log (stdout and stderr) in `<directory>/<name>.log`; waits for its URL line.
    private func serve(_ name: String, config: String, listen: String = "127.0.0.1:0") async throws -> Served {
        let path = directory + "/\(name).yaml", log = directory + "/\(name).log", state = directory + "/\(name)"
        try config.write(toFile: path, atomically: true, encoding: .utf8)
        FileManager.default.createFile(atPath: log, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try binary())
        process.arguments = ["serve", "--state-dir", state, "--listen", listen, "--metrics-listen", "off", "--config", path]
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        processes.append(process)
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline, process.isRunning {
            let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            if let marker = text.range(of: "point clients at: http://127.0.0.1:") ?? text.range(of: "point clients at: https://127.0.0.1:"),
               let port = Int(text[marker.upperBound...].prefix { $0.isNumber }) {
                return Served(process: process, port: port, stateDir: state, log: log)
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw ClusterLabError(description: "serve \(name) did not start:\n" + ((try? String(contentsOfFile: log, encoding: .utf8)) ?? ""))
    }

    private func logOf(_ served: Served) -> String { (try? String(contentsOfFile: served.log, encoding: .utf8)) ?? "" }

    /// A node joined to `served` with a fresh pre-auth key; its full map's DERP map.
    private func join(_ served: Served, seed: UInt64, name: String, tls: NIOSSLContext? = nil) async throws -> (ControlClient, DERPMap) {
        let user = try run(["users", "create", name, "--state-dir", served.stateDir])
        XCTAssertEqual(user.status, 0, user.stderr)
        let created = try run(["preauthkeys", "create", "--user", name, "--state-dir", served.stateDir])
        XCTAssertEqual(created.status, 0, created.stderr)
        let key = created.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let client = ControlClient(port: served.port, seed: seed, tls: tls)
        try await client.connect(controlKey: try await ControlClient.fetchKey(host: "127.0.0.1", port: served.port, tls: tls).publicKey)
        let registered = try await client.register(client.registerRequest(authKey: key, hostname: name))
        guard registered.error.isEmpty, registered.machineAuthorized else { throw ClusterLabError(description: "\(name): \(registered)") }
        let (status, messages) = try await client.map(client.mapRequest(stream: false))
        guard status == 200 else { throw ClusterLabError(description: "\(name): map HTTP \(status)") }
        for try await message in messages {
            if let map = message.derpMap { return (client, map) }
        }
        throw ClusterLabError(description: "\(name): no DERP map in the full map")
    }

    func testTwoInstancesEmbeddedRelaysMeshedCarryPacketsBetweenClientsHomedOnEach() async throws {
        let (derpA, derpB) = (try LoopbackPort.free(), try LoopbackPort.free())
        let (stunA, stunB) = (try LoopbackPort.free(udp: true), try LoopbackPort.free(udp: true))
        let meshKey = try writeKey("mesh.key", String(repeating: "3c", count: 32) + "\n")
        // Each relay's self-signed certificate, made before the start (as `serve` would make it) so that each
        // instance can be given the other's pin.
        let pinA = try DERPCertificate.loadOrCreateSelfSigned(directory: directory + "/a/derp", hostnames: ["127.0.0.1"]).pin
        let pinB = try DERPCertificate.loadOrCreateSelfSigned(directory: directory + "/b/derp", hostnames: ["127.0.0.1"]).pin
        XCTAssertNotEqual(pinA, pinB)
        // The same list for both, each relay in it (ignored by itself: in the mesh by its key, in the map by its address).
        let list = """
              mesh_key_path: \(meshKey)
              mesh_with:
                - {addr: "127.0.0.1:\(derpA)", cert_name: "\(pinA)", stun_port: \(stunA)}
                - {addr: "127.0.0.1:\(derpB)", cert_name: "\(pinB)", stun_port: \(stunB)}
            """
        let a = try await serve("a", config: "log_level: debug\nderp:\n  host: 127.0.0.1\n  port: \(derpA)\n  stun_port: \(stunA)\n" + list + "\n")
        let b = try await serve("b", config: "log_level: debug\nderp:\n  host: 127.0.0.1\n  port: \(derpB)\n  stun_port: \(stunB)\n" + list + "\n")
        func logs() -> String { "--- a ---\n\(logOf(a).suffix(5000))\n--- b ---\n\(logOf(b).suffix(5000))" }

        let (alice, mapA) = try await join(a, seed: 0xA11CE, name: "alice")
        let (bob, mapB) = try await join(b, seed: 0xB0B, name: "bob")
        defer { Task { await alice.close(); await bob.close() } }

        // Each instance announces one region with its own relay first and the other's second.
        for (map, own, ownPin, ownSTUN, other, otherPin, otherSTUN, name) in [
            (mapA, derpA, pinA, stunA, derpB, pinB, stunB, "a"), (mapB, derpB, pinB, stunB, derpA, pinA, stunA, "b"),
        ] {
            XCTAssertEqual(map.regions.keys.sorted(), [900], "instance \(name)'s DERP map: \(map)")
            let nodes = map.regions[900]?.nodes ?? []
            XCTAssertEqual(nodes.count, 2, "instance \(name)'s region 900: \(nodes)")
            guard nodes.count == 2 else { continue }
            XCTAssertEqual(nodes.map(\.name), ["900a", "900b"])
            XCTAssertEqual(nodes.map(\.hostName), ["127.0.0.1", "127.0.0.1"])
            XCTAssertEqual(nodes.map(\.derpPort), [own, other], "instance \(name): its own relay first")
            XCTAssertEqual(nodes.map(\.certName), [ownPin, otherPin])
            XCTAssertEqual(nodes.map(\.stunPort), [ownSTUN, otherSTUN])
            XCTAssertEqual(nodes.map(\.ipv4), ["127.0.0.1", "127.0.0.1"])
            XCTAssertTrue(nodes.allSatisfy { $0.stunOnly != true })
        }

        // Alice homes on relay a (the first node of a's map), Bob on relay b.
        let onA = try await DERPClient.connect(to: .init(host: "127.0.0.1", port: derpA, trust: .pinned(pinA)), privateKey: alice.nodeKey)
        let onB = try await DERPClient.connect(to: .init(host: "127.0.0.1", port: derpB, trust: .pinned(pinB)), privateKey: bob.nodeKey)
        let inboxA = EmbeddedMeshInbox(onA), inboxB = EmbeddedMeshInbox(onB)
        defer { Task { await onA.close(); await onB.close() } }
        // Each relay is not a node of the other's tailnet: only the mesh key lets it in.
        let aToB = try await deliver([0xA1, 0xB0, 1], from: onA, to: onB, inbox: inboxB)
        let bToA = try await deliver([0xB0, 0xA1, 2], from: onB, to: onA, inbox: inboxA)
        XCTAssertTrue(aToB && bToA, logs())
        XCTAssertTrue(logOf(a).contains("DERP mesh: this peer is this relay itself"), logs())
        XCTAssertTrue(logOf(b).contains("DERP mesh: this peer is this relay itself"), logs())
        XCTAssertTrue(logOf(a).contains("DERP mesh: connected; watching its clients"), logs())
        XCTAssertFalse((logOf(a) + logOf(b)).contains("3c3c3c3c"), "a log shows the mesh key")

        // Bob leaves relay b: Alice, who sent to him through relay a, hears PeerGone.
        await onB.close()
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline, !inboxA.gone.contains(bob.nodeKey.publicKey) { try await Task.sleep(for: .milliseconds(50)) }
        XCTAssertTrue(inboxA.gone.contains(bob.nodeKey.publicKey), "no PeerGone for Bob on relay a\n" + logs())
    }

    /// The production layout: each relay mounted on its instance's HTTPS control listener (`tls:`, no relay port of
    /// its own), the peers' relays reached there; the peers pinned with cert_name (the test's CA is not in the
    /// system's store).
    func testRelaysMountedOnTLSControlListenersMeshThroughThem() async throws {
        let ca = try TestCA.make(in: directory + "/ca")
        let pin = try ca.leafPin
        let (portA, portB) = (try LoopbackPort.free(), try LoopbackPort.free())
        let meshKey = try writeKey("mesh.key", String(repeating: "6b", count: 32) + "\n")
        func config(_ own: Int) -> String {
            """
            server_url: https://127.0.0.1:\(own)
            log_level: debug
            tls: {cert_file: \(ca.certificateFile), key_file: \(ca.keyFile)}
            derp:
              host: 127.0.0.1
              stun_port: 0
              mesh_key_path: \(meshKey)
              mesh_with:
                - {addr: "127.0.0.1:\(portA)", cert_name: "\(pin)"}
                - {addr: "127.0.0.1:\(portB)", cert_name: "\(pin)"}

            """
        }
        let a = try await serve("ta", config: config(portA), listen: "127.0.0.1:\(portA)")
        let b = try await serve("tb", config: config(portB), listen: "127.0.0.1:\(portB)")
        func logs() -> String { "--- a ---\n\(logOf(a).suffix(5000))\n--- b ---\n\(logOf(b).suffix(5000))" }
        let tls = try ca.clientContext()
        let (alice, mapA) = try await join(a, seed: 0xA11CF, name: "alice", tls: tls)
        let (bob, _) = try await join(b, seed: 0xB0C, name: "bob", tls: tls)
        defer { Task { await alice.close(); await bob.close() } }
        let nodes = mapA.regions[900]?.nodes ?? []
        XCTAssertEqual(nodes.map(\.derpPort), [portA, portB], "instance a's region 900: \(nodes)")
        // Its own relay is checked against the roots (the control listener's certificate); the peer as configured.
        XCTAssertEqual(nodes.map(\.certName), [nil, pin])
        XCTAssertEqual(nodes.map(\.stunPort), [-1, -1])

        let onA = try await DERPClient.connect(to: .init(host: "127.0.0.1", port: portA, trust: .pinned(pin)), privateKey: alice.nodeKey)
        let onB = try await DERPClient.connect(to: .init(host: "127.0.0.1", port: portB, trust: .pinned(pin)), privateKey: bob.nodeKey)
        let inboxA = EmbeddedMeshInbox(onA), inboxB = EmbeddedMeshInbox(onB)
        defer { Task { await onA.close(); await onB.close() } }
        let aToB = try await deliver([0xA2, 0xB2, 3], from: onA, to: onB, inbox: inboxB)
        let bToA = try await deliver([0xB2, 0xA2, 4], from: onB, to: onA, inbox: inboxA)
        XCTAssertTrue(aToB && bToA, logs())
    }

    /// Sends `payload` until `inbox` has it (the mesh learns of a new client a moment after it connects).
    private func deliver(_ payload: [UInt8], from: DERPClient, to: DERPClient, inbox: EmbeddedMeshInbox) async throws -> Bool {
        let deadline = Date().addingTimeInterval(15)
        while Date() < deadline {
            try await from.send(payload, to: to.publicKey)
            let wait = Date().addingTimeInterval(0.5)
            while Date() < wait {
                if inbox.packets.contains(where: { $0.0 == from.publicKey && $0.1 == payload }) { return true }
                try await Task.sleep(for: .milliseconds(20))
            }
        }
        XCTFail("\(payload) never crossed the mesh")
        return false
    }
}

/// Everything a DERP client receives, collected by a task of its own.
final class EmbeddedMeshInbox: @unchecked Sendable {
    private let lock = NSLock()
    private var received: [(NodePublic, [UInt8])] = []
    private var goneKeys: Set<NodePublic> = []

    init(_ client: DERPClient) {
        Task { [self] in
            for await frame in client.frames {
                lock.withLock {
                    switch frame {
                    case .recvPacket(let source, let packet): received.append((source, packet))
                    case .peerGone(let key, let reason) where reason != .notHere: goneKeys.insert(key)
                    default: break
                    }
                }
            }
        }
    }

    var packets: [(NodePublic, [UInt8])] { lock.withLock { received } }
    var gone: Set<NodePublic> { lock.withLock { goneKeys } }
}
