// TSMP pings between two warrend, and restarts with the real binaries in namespaces: warren-control killed with SIGKILL while two nodes talk
// (traffic keeps flowing; after a restart the nodes' map streams come back without a new login, shown by
// a third node that joins afterwards reaching both), and warrend stopped with SIGTERM (its TUN device goes)
// and started again on the same state directory (the same address, Running without `warren up`).

import Foundation
import XCTest

final class RestartLabTests: XCTestCase {
    func testControlKilledAndRestartedAndANodeRestartedKeepTheTailnetWorking() async throws {
        let lab = try NATLab(tag: "r")
        var failed = true
        defer {
            lab.keepLogs = failed
            lab.tearDown()
        }
        try await lab.start()
        let a = try await lab.addNode("ra", slot: 31, host: nil)
        let b = try await lab.addNode("rb", slot: 32, host: nil)
        let ipA = try await lab.up(a)
        let ipB = try await lab.up(b)
        let first = await lab.run(["ping", "-c", "20", "-i", "0.2", "-W", "2", ipB], in: a.namespace)
        XCTAssertEqual(first.status, 0, "no ping a -> b before the restarts:\n\(first.output)")
        // warrend answers TSMP pings (IP protocol 99 inside the tunnel) as tailscaled does.
        let tsmp = await lab.run([lab.warren, "--socket", a.socket, "ping", "--tsmp", "-c", "2", "--no-until-direct", "rb"],
                                 in: a.namespace)
        XCTAssertEqual(tsmp.status, 0, "no TSMP pong from b:\n\(tsmp.output)")
        XCTAssertTrue(tsmp.output.contains("pong from rb"), tsmp.output)

        // warren-control dies without warning: the tunnel does not need it.
        let control = try XCTUnwrap(lab.controlProcess)
        kill(control.processIdentifier, SIGKILL)
        control.waitUntilExit()
        let meanwhile = await lab.run(["ping", "-c", "10", "-i", "0.2", "-W", "2", ipB], in: a.namespace)
        XCTAssertTrue(meanwhile.output.contains(" 0% packet loss"), "traffic stopped with warren-control:\n\(meanwhile.output)")

        // Back again: a node that joins now is seen by both old nodes, which only their reopened map
        // streams can tell them; neither registered again.
        try await lab.startControl(log: "control-restarted")
        let c = try await lab.addNode("rc", slot: 33, host: nil)
        let ipC = try await lab.up(c)
        for node in [a, b] {
            var reached = false
            let deadline = Date().addingTimeInterval(60)
            while !reached && Date() < deadline {
                reached = await lab.run(["ping", "-c", "1", "-W", "1", ipC], in: node.namespace).status == 0
            }
            XCTAssertTrue(reached, "\(node.name) never learned of the node that joined after the restart; its log ends:\n"
                          + String(lab.log(node.log).suffix(2000)))
        }
        // Only c registered with the restarted server; a and b came back on their keys.
        let restartedLog = lab.log("control-restarted")
        XCTAssertEqual(restartedLog.components(separatedBy: "node registered").count - 1, 1,
                       "expected one registration (c) after the restart")
        XCTAssertFalse(restartedLog.contains("node logged in again"), "a node had to log in again")

        // warrend stopped with SIGTERM: its TUN device goes with it.
        kill(a.process.processIdentifier, SIGTERM)
        a.process.waitUntilExit()
        XCTAssertEqual(a.process.terminationStatus, 0, "warrend did not exit cleanly on SIGTERM")
        let link = await lab.run(["ip", "link", "show", "warren0"], in: a.namespace)
        XCTAssertNotEqual(link.status, 0, "warren0 is still there after SIGTERM:\n\(link.output)")

        // Started again on the same state: Running without `warren up`, the same address, traffic flows.
        let again = try await lab.startDaemon("ra", wanAddress: a.wanAddress, log: "ra-restarted")
        var ip = ""
        let deadline = Date().addingTimeInterval(30)
        while ip != ipA && Date() < deadline {
            ip = await lab.run([lab.warren, "--socket", again.socket, "ip", "-4"], in: again.namespace).output
                .trimmingCharacters(in: .whitespacesAndNewlines)
            if ip != ipA { try await Task.sleep(for: .milliseconds(200)) }
        }
        XCTAssertEqual(ip, ipA, "the restarted node does not have its address back; its log ends:\n"
                       + String(lab.log("ra-restarted").suffix(2000)))
        let status = await lab.run([lab.warren, "--socket", again.socket, "status", "--json"], in: again.namespace)
        XCTAssertTrue(status.output.contains("\"BackendState\" : \"Running\"") || status.output.contains("\"BackendState\":\"Running\""),
                      String(status.output.prefix(300)))
        let after = await lab.run(["ping", "-c", "20", "-i", "0.2", "-W", "2", ipB], in: again.namespace)
        XCTAssertEqual(after.status, 0, "no ping a -> b after warrend's restart:\n\(after.output)")
        failed = testRun.map { $0.totalFailureCount > 0 } ?? true
    }
}
