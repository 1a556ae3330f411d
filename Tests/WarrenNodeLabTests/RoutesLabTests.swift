// Subnet routers and exit nodes between real warrend processes in the NAT lab.
//
// Subnet lab: a LAN 192.168.50.0/24 (namespace `hlan`, its bridge holding host H at .10 with an HTTP server
// that answers with the source address it saw), reached by routers R1 (.1) and R2 (.2), both also on the
// internet bridge; client C behind a port-restricted NAT.
// Exit lab: an "internet beyond" namespace `gw` (192.0.2.254 towards the exit nodes, X at 198.51.100.10 with
// the same echo server) reached only through exit nodes E1 (192.0.2.1) and E2 (192.0.2.2); client C behind
// a NAT whose own network has no route to X.

import Foundation
import XCTest

final class RoutesLabTests: XCTestCase {
    static let lanHost = "192.168.50.10"
    static let xHost = "198.51.100.10"
    static let xHost6 = "2001:db8:b::10"

    func testSubnetRouterNeedsApprovalAndAcceptRoutesMasqueradesByDefaultAndFailsOver() async throws {
        let lab = try NATLab(tag: "s")
        defer { lab.tearDown() }
        lab.keepLogs = true
        // Split DNS to a resolver on the routed LAN: reached only through the tunnel.
        lab.extraControlConfig = """
            dns:
              split:
                corp.example: ["\(Self.lanHost)"]

            """
        try await lab.start()
        try await lab.addNamespace("hlan")
        try await lab.addBridge("br1", in: "hlan", address: "\(Self.lanHost)/24")
        try await lab.startEchoServer(in: "hlan", address: Self.lanHost)
        try await lab.startDNSServer(in: "hlan", address: Self.lanHost, records: ["db.corp.example": "10.1.2.3"], log: "corp-dns")
        var routers: [LabNode] = []
        for (index, slot) in [20, 21].enumerated() {
            let router = try await lab.addNode("r\(index + 1)", slot: slot, host: nil)
            try await lab.wire(bridge: "br1", in: "hlan", to: router.namespace, name: "eth1")
            try await lab.must(["ip", "addr", "add", "192.168.50.\(index + 1)/24", "dev", "eth1"], in: router.namespace)
            routers.append(router)
        }
        try await lab.addRouter(slot: 3, type: .portRestricted)
        let c = try await lab.addNode("c", slot: 3, host: 2)
        let route = "--advertise-routes=192.168.50.0/24"
        _ = try await lab.up(routers[0], [route])
        let cIP = try await lab.up(c, ["--accept-routes"])

        // Advertised but not approved: C has no route to the LAN.
        let unapproved = await lab.echo(from: "c", Self.lanHost)
        XCTAssertNil(unapproved, "C reached the LAN before the route was approved")
        try await lab.control(["nodes", "approve-routes", "r1", "--routes", "192.168.50.0/24"])
        let approved = await lab.waitForEcho(from: "c", Self.lanHost, within: 15)
        XCTAssertEqual(approved.answer, "192.168.50.1", "with SNAT on, H sees R1's LAN address")
        print("subnet route: first answer \(String(format: "%.1f", approved.after)) s after approval")
        let split = await lab.run(["dig", "@100.100.100.100", "+short", "+time=3", "+tries=1", "db.corp.example"], in: "c")
        XCTAssertEqual(split.output.trimmingCharacters(in: .whitespacesAndNewlines), "10.1.2.3",
                       "split DNS to a resolver behind the subnet router: \(split.output)")
        XCTAssertTrue(lab.log("corp-dns").contains("query db.corp.example 1 from 192.168.50.1"), lab.log("corp-dns"))

        // Without --accept-routes the client does not use the route.
        _ = try await lab.up(c, [])
        let notAccepted = await lab.echo(from: "c", Self.lanHost)
        XCTAssertNil(notAccepted, "C reached the LAN without --accept-routes")
        let table = try await lab.must(["ip", "route", "show", "table", "52"], in: "c")
        XCTAssertFalse(table.contains("192.168.50.0/24"), table)

        // SNAT off: H sees C's tailnet address (and routes the tailnet back through R1).
        _ = try await lab.up(c, ["--accept-routes"])
        _ = try await lab.up(routers[0], [route, "--snat-subnet-routes=false"])
        try await lab.must(["ip", "route", "add", "100.64.0.0/10", "via", "192.168.50.1"], in: "hlan")
        let unmasked = await lab.waitForEcho(from: "c", Self.lanHost, expected: cIP, within: 15)
        XCTAssertEqual(unmasked.answer, cIP, "with --snat-subnet-routes=false, H sees C's tailnet address")
        _ = try await lab.up(routers[0], [route])
        let masked = await lab.waitForEcho(from: "c", Self.lanHost, expected: "192.168.50.1", within: 15)
        XCTAssertEqual(masked.answer, "192.168.50.1")

        // Warren's firewall lives in its own nftables table on the router.
        let ruleset = try await lab.must(["nft", "list", "table", "inet", "warren"], in: "r1")
        XCTAssertTrue(ruleset.contains("masquerade"), ruleset)

        // Failover: R2 serves the same route; R1 dies; C continues through R2.
        _ = try await lab.up(routers[1], [route])
        try await lab.control(["nodes", "approve-routes", "r2", "--routes", "192.168.50.0/24"])
        let stillR1 = await lab.waitForEcho(from: "c", Self.lanHost, expected: "192.168.50.1", within: 10)
        XCTAssertEqual(stillR1.answer, "192.168.50.1", "the first router stays primary when a second one joins")
        kill(routers[0].process.processIdentifier, SIGKILL)
        let failedOver = await lab.waitForEcho(from: "c", Self.lanHost, expected: "192.168.50.2", within: 15)
        XCTAssertEqual(failedOver.answer, "192.168.50.2", "C did not reach H through R2 within 15 s of R1's death")
        print("subnet route failover: through R2 \(String(format: "%.1f", failedOver.after)) s after kill -9 of R1")

        // R1 comes back: R2 stays primary while it is healthy.
        _ = try await lab.startDaemon("r1", wanAddress: routers[0].wanAddress, log: "r1-again")
        var answers: [String] = []
        for _ in 0..<10 {
            try await Task.sleep(for: .seconds(1))
            answers.append(await lab.echo(from: "c", Self.lanHost) ?? "none")
        }
        XCTAssertEqual(Set(answers), ["192.168.50.2"], "the route flapped back to R1: \(answers)")
        if testRun?.hasSucceeded == true { lab.keepLogs = false }
    }

    func testExitNodeCarriesInternetTrafficKeepsLANAccessAndAutoFailsOver() async throws {
        let lab = try NATLab(tag: "e")
        defer { lab.tearDown() }
        lab.keepLogs = true
        try await lab.start()
        try await lab.addNamespace("gw")
        try await lab.addBridge("bra", in: "gw", address: "192.0.2.254/24")
        try await lab.addBridge("brb", in: "gw", address: "\(Self.xHost)/24")
        try await lab.must(["ip", "-6", "addr", "add", "2001:db8:a::fe/64", "dev", "bra", "nodad"], in: "gw")
        try await lab.must(["ip", "-6", "addr", "add", "\(Self.xHost6)/64", "dev", "brb", "nodad"], in: "gw")
        try await lab.startEchoServer(in: "gw", address: Self.xHost)
        try await lab.startEchoServer(in: "gw", address: Self.xHost6, port: 8006)
        // The resolver every namespace's resolv.conf names (the exit nodes' own upstream).
        try await lab.must(["ip", "addr", "add", "203.0.113.53/24", "dev", "br0"], in: "inet")
        try await lab.startDNSServer(in: "inet", address: "203.0.113.53", records: ["www.example.com": "192.0.2.80"], log: "upstream")
        var exits: [(node: LabNode, ip: String)] = []
        for (index, slot) in [30, 31].enumerated() {
            let exit = try await lab.addNode("e\(index + 1)", slot: slot, host: nil)
            try await lab.wire(bridge: "bra", in: "gw", to: exit.namespace, name: "eth1")
            try await lab.must(["ip", "addr", "add", "192.0.2.\(index + 1)/24", "dev", "eth1"], in: exit.namespace)
            try await lab.must(["ip", "route", "add", "default", "via", "192.0.2.254"], in: exit.namespace)
            try await lab.must(["ip", "-6", "addr", "add", "2001:db8:a::\(index + 1)/64", "dev", "eth1", "nodad"], in: exit.namespace)
            try await lab.must(["ip", "-6", "route", "add", "default", "via", "2001:db8:a::fe"], in: exit.namespace)
            let ip = try await lab.up(exit, ["--advertise-exit-node"])
            try await lab.control(["nodes", "approve-routes", "e\(index + 1)", "--routes", "0.0.0.0/0,::/0"])
            exits.append((exit, ip))
        }
        try await lab.addRouter(slot: 4, type: .portRestricted)
        let c = try await lab.addNode("c", slot: 4, host: 2)
        let cIP = try await lab.up(c)

        // No exit node: the internet beyond is out of reach.
        let without = await lab.echo(from: "c", Self.xHost)
        XCTAssertNil(without, "C reached X without an exit node")

        // The CLI lists both exit nodes.
        let list = try await lab.must([lab.warren, "--socket", c.socket, "exit-node", "list"], in: "c")
        XCTAssertTrue(list.contains(exits[0].ip) && list.contains(exits[1].ip), list)

        // Through E1: X sees E1's address.
        _ = try await lab.up(c, ["--exit-node=\(exits[0].ip)"])
        let viaE1 = await lab.waitForEcho(from: "c", Self.xHost, expected: "192.0.2.1", within: 15)
        XCTAssertEqual(viaE1.answer, "192.0.2.1")
        // IPv6 too: C has no IPv6 of its own beyond the tailnet's; X sees E1's IPv6 address.
        let v6 = await lab.run(["curl", "-s", "-m", "5", "http://[\(Self.xHost6)]:8006/"], in: "c")
        if v6.output.trimmingCharacters(in: .whitespacesAndNewlines) != "2001:db8:a::1" {
            var diagnostics = ""
            for (ns, command) in [("c", ["ip", "-6", "route", "show", "table", "52"]), ("c", ["ip", "-6", "rule"]), ("c", ["ip", "-6", "addr"]),
                                  ("c", ["ip", "-6", "route", "get", Self.xHost6]), ("e1", ["ip", "-6", "route"]),
                                  ("e1", ["sysctl", "net.ipv6.conf.all.forwarding"]), ("c", [lab.warren, "--socket", c.socket, "status", "--json"])] {
                diagnostics += "\n$ \(command.joined(separator: " ")) in \(ns)\n" + (await lab.run(command, in: ns)).output
            }
            XCTFail("IPv6 through the exit node: \(v6.output)\(diagnostics)")
        }
        // The node's own traffic does not loop into the tunnel: control still answers, the map still flows.
        let status = try await lab.must([lab.warren, "--socket", c.socket, "status"], in: "c")
        XCTAssertTrue(status.contains("e1"), status)
        let json = try await lab.must([lab.warren, "--socket", c.socket, "status", "--json"], in: "c")
        let exitStatus = (try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])?["ExitNodeStatus"] as? [String: Any]
        XCTAssertEqual((exitStatus?["TailscaleIPs"] as? [String])?.first, "\(exits[0].ip)/32", "status --json ExitNodeStatus: \(json)")
        XCTAssertEqual(exitStatus?["Online"] as? Bool, true)
        // E1's PeerAPI answers DNS over HTTP (RFC 8484's wire format) for C, from E1's own resolver; C's own
        // PeerAPI refuses E1 (C is no exit node).
        let peerAPIPort = { (log: String) -> String? in
            log.split(separator: "\n").compactMap { line -> String? in
                guard let range = line.range(of: "PeerAPI on port ") else { return nil }
                return String(line[range.upperBound...].prefix { $0.isNumber })
            }.last
        }
        let e1Port = try XCTUnwrap(peerAPIPort(lab.log("e1")), "E1 logged no PeerAPI port")
        // (HTTP/1.1 as Tailscale's Go client speaks it to http:// URLs; dig's DoH speaks HTTP/2 only.)
        let doh = await lab.run(["python3", "-c", """
            import base64, socket, struct, urllib.request
            q = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + b"\\x03www\\x07example\\x03com\\x00" + struct.pack("!HH", 1, 1)
            url = "http://\(exits[0].ip):\(e1Port)/dns-query?dns=" + base64.urlsafe_b64encode(q).decode().rstrip("=")
            r = urllib.request.urlopen(url, timeout=5)
            a = r.read()
            assert r.headers["Content-Type"] == "application/dns-message", r.headers["Content-Type"]
            assert a[:2] == q[:2] and struct.unpack("!H", a[6:8])[0] == 1, a
            print(socket.inet_ntoa(a[-4:]))
            """], in: "c")
        XCTAssertEqual(doh.output.trimmingCharacters(in: .whitespacesAndNewlines), "192.0.2.80", "DoH through E1's PeerAPI: \(doh.output)")
        let cPort = try XCTUnwrap(peerAPIPort(lab.log("c")), "C logged no PeerAPI port")
        // `ping --peerapi`: HEAD / on E1's PeerAPI through the tunnel.
        let peerPing = try await lab.must([lab.warren, "--socket", c.socket, "ping", "--peerapi", "-c", "1", "e1"], in: "c")
        XCTAssertTrue(peerPing.contains("hit peerapi of \(exits[0].ip)") && peerPing.contains(":\(e1Port)"), peerPing)
        // A browser's request is refused.
        let browser = await lab.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "5", "-H", "Origin: http://evil.example",
                                     "http://\(exits[0].ip):\(e1Port)/"], in: "c")
        XCTAssertEqual(browser.output, "403")
        let refused = await lab.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "5",
                                     "http://\(cIP):\(cPort)/dns-query?dns=AAABAAABAAAAAAAAA3d3dwdleGFtcGxlA2NvbQAAAQAB"], in: "e1")
        XCTAssertEqual(refused.output, "403", "a node that is not an exit node must refuse DoH")

        // C's DNS follows its traffic: MagicDNS on C sends the names it does not answer to E1's PeerAPI, and
        // E1's resolver asks the upstream (which sees E1's address, not C's router's).
        let viaExit = await lab.run(["dig", "@100.100.100.100", "+short", "+time=3", "+tries=1", "www.example.com"], in: "c")
        XCTAssertEqual(viaExit.output.trimmingCharacters(in: .whitespacesAndNewlines), "192.0.2.80", viaExit.output)
        let asked = lab.log("upstream").split(separator: "\n").filter { $0.hasPrefix("query www.example.com 1 ") }
        XCTAssertTrue(asked.contains { $0.hasSuffix("from 203.0.113.30") }, "the upstream was not asked by E1: \(asked)")
        XCTAssertFalse(asked.contains { $0.hasSuffix("from 203.0.113.4") }, "C asked the upstream itself, not through E1: \(asked)")

        // Without LAN access the LAN goes through the exit node too (E1 cannot reach C's LAN).
        let lanBlocked = await lab.run(["ping", "-c", "1", "-W", "2", "10.4.0.1"], in: "c")
        XCTAssertNotEqual(lanBlocked.status, 0, "C reached its LAN through the exit node without --exit-node-allow-lan-access")
        _ = try await lab.up(c, ["--exit-node=e1", "--exit-node-allow-lan-access"])
        let lan = await lab.run(["ping", "-c", "1", "-W", "2", "10.4.0.1"], in: "c")
        XCTAssertEqual(lan.status, 0, "C lost its LAN with --exit-node-allow-lan-access: \(lan.output)")
        let stillE1 = await lab.waitForEcho(from: "c", Self.xHost, expected: "192.0.2.1", within: 10)
        XCTAssertEqual(stillE1.answer, "192.0.2.1")

        // auto:any, then the chosen exit node dies: C moves to the other one.
        _ = try await lab.up(c, ["--exit-node=auto:any"])
        let first = await lab.waitForEcho(from: "c", Self.xHost, within: 15)
        let chosen = try XCTUnwrap(first.answer, "auto:any chose no working exit node")
        XCTAssertTrue(["192.0.2.1", "192.0.2.2"].contains(chosen), chosen)
        let suggestion = try await lab.must([lab.warren, "--socket", c.socket, "exit-node", "suggest"], in: "c")
        XCTAssertTrue(suggestion.contains("Suggested exit node:"), suggestion)
        let dying = chosen == "192.0.2.1" ? 0 : 1
        kill(exits[dying].node.process.processIdentifier, SIGKILL)
        let other = dying == 0 ? "192.0.2.2" : "192.0.2.1"
        let moved = await lab.waitForEcho(from: "c", Self.xHost, expected: other, within: 15)
        XCTAssertEqual(moved.answer, other, "auto:any did not move to the other exit node within 15 s")
        print("exit node auto:any failover: through the other exit node \(String(format: "%.1f", moved.after)) s after kill -9")
        if testRun?.hasSucceeded == true { lab.keepLogs = false }
    }
}
