// MagicDNS between real warrend processes in the NAT lab: `dig @100.100.100.100` for peers' short and full
// names, reverse lookups, control's extra records, a split-DNS domain answered by a resolver in the lab, and
// a public-style name forwarded to the namespace's own upstream; the host's resolver (getent) finding peers
// by short name through the rewritten resolv.conf; and that file put back exactly after `down` and after a
// kill -9 and restart.
//
// Each namespace has its own /etc/netns/<ns>/resolv.conf (bind-mounted over /etc/resolv.conf by `ip netns
// exec`), naming the lab's upstream 203.0.113.53; the split-DNS resolver for corp.example is 203.0.113.54.

import Foundation
import XCTest

final class MagicDNSLabTests: XCTestCase {
    func testMagicDNSAnswersForwardsConfiguresTheHostAndRestoresIt() async throws {
        let lab = try NATLab(tag: "d")
        defer { lab.tearDown() }
        lab.keepLogs = true
        lab.extraControlConfig = """
            dns:
              magic_dns: true
              split:
                corp.example: ["203.0.113.54"]
              extra_records:
                - name: printer.lab.warren
                  type: A
                  value: 192.0.2.99

            """
        try await lab.start()
        for address in ["203.0.113.53", "203.0.113.54"] {
            try await lab.must(["ip", "addr", "add", "\(address)/24", "dev", "br0"], in: "inet")
        }
        try await lab.startDNSServer(in: "inet", address: "203.0.113.53", records: ["www.example.com": "192.0.2.80"], log: "upstream")
        try await lab.startDNSServer(in: "inet", address: "203.0.113.54", records: ["db.corp.example": "10.1.2.3"], log: "split")
        let a = try await lab.addNode("a", slot: 10, host: nil)
        try await lab.addRouter(slot: 3, type: .portRestricted)
        let b = try await lab.addNode("b", slot: 3, host: 2)
        let resolvConf = "/etc/netns/\(lab.prefix)-a/resolv.conf"
        let original = try String(contentsOfFile: resolvConf, encoding: .utf8)
        let ipA = try await lab.up(a)
        let ipB = try await lab.up(b)

        func dig(_ arguments: [String]) async -> String {
            let (_, output) = await lab.run(["dig", "@100.100.100.100", "+short", "+time=2", "+tries=1"] + arguments, in: "a")
            return output.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        // The resolver comes up with the map; wait for it.
        var full = ""
        for _ in 0..<50 where full != ipB {
            full = await dig(["b.lab.warren"])
            if full != ipB { try await Task.sleep(for: .milliseconds(200)) }
        }
        XCTAssertEqual(full, ipB, "A for the full name")
        let short = await dig(["b"])
        XCTAssertEqual(short, ipB, "A for the short name")
        let own = await dig(["a.lab.warren"])
        XCTAssertEqual(own, ipA, "the node's own name")
        let aaaa = await dig(["b.lab.warren", "AAAA"])
        XCTAssertTrue(aaaa.hasPrefix("fd7a:115c:a1e0:"), "AAAA: \(aaaa)")
        let ptr = await dig(["-x", ipB])
        XCTAssertEqual(ptr, "b.lab.warren.", "PTR")
        let extra = await dig(["printer.lab.warren"])
        XCTAssertEqual(extra, "192.0.2.99", "extra record")
        let tcp = await dig(["+tcp", "b.lab.warren"])
        XCTAssertEqual(tcp, ipB, "over TCP")
        let nx = await lab.run(["dig", "@100.100.100.100", "+time=2", "+tries=1", "nobody.lab.warren"], in: "a")
        XCTAssertTrue(nx.output.contains("status: NXDOMAIN"), nx.output)
        let split = await dig(["db.corp.example"])
        XCTAssertEqual(split, "10.1.2.3", "split DNS through the lab's corp resolver")
        let forwarded = await dig(["www.example.com"])
        XCTAssertEqual(forwarded, "192.0.2.80", "forwarded to the host's own upstream")
        XCTAssertTrue(lab.log("split").contains("query db.corp.example"))
        XCTAssertFalse(lab.log("upstream").contains("db.corp.example"), "the split domain leaked to the global upstream")

        // The host's resolver: resolv.conf points at MagicDNS, with the tailnet as search domain.
        let rewritten = try String(contentsOfFile: resolvConf, encoding: .utf8)
        XCTAssertTrue(rewritten.contains("nameserver 100.100.100.100"), rewritten)
        XCTAssertTrue(rewritten.contains("search lab.warren"), rewritten)
        let getent = await lab.run(["getent", "ahostsv4", "b"], in: "a")
        XCTAssertTrue(getent.output.contains(ipB), "getent ahostsv4 b: \(getent.output)")
        let getentPublic = await lab.run(["getent", "ahostsv4", "www.example.com"], in: "a")
        XCTAssertTrue(getentPublic.output.contains("192.0.2.80"), getentPublic.output)

        // The CLI.
        let status = try await lab.must([lab.warren, "--socket", a.socket, "dns", "status"], in: "a")
        XCTAssertTrue(status.contains("100.100.100.100") && status.contains("corp.example"), status)
        let query = try await lab.must([lab.warren, "--socket", a.socket, "dns", "query", "b"], in: "a")
        XCTAssertTrue(query.contains(ipB) && query.contains("NOERROR"), query)

        // down puts the file back exactly.
        try await lab.must([lab.warren, "--socket", a.socket, "down"], in: "a")
        XCTAssertEqual(try String(contentsOfFile: resolvConf, encoding: .utf8), original, "resolv.conf after down")

        // up again, kill -9, restart: the restarted daemon puts the host's file back before anything else,
        // so the original survives in the backup and a later down restores it exactly.
        _ = try await lab.up(a)
        XCTAssertTrue(try String(contentsOfFile: resolvConf, encoding: .utf8).contains("100.100.100.100"))
        kill(a.process.processIdentifier, SIGKILL)
        let again = try await lab.startDaemon("a", wanAddress: a.wanAddress, log: "a-again")
        var restarted = ""
        for _ in 0..<75 {
            restarted = await dig(["b"])
            if restarted == ipB { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        XCTAssertEqual(restarted, ipB, "MagicDNS after the restart")
        try await lab.must([lab.warren, "--socket", again.socket, "down"], in: "a")
        XCTAssertEqual(try String(contentsOfFile: resolvConf, encoding: .utf8), original, "resolv.conf after kill -9, restart and down")
        XCTAssertFalse(FileManager.default.fileExists(atPath: lab.directory + "/a/resolv.conf.backup"), "the backup outlived down")

        // --accept-dns=false leaves the host alone, and MagicDNS still answers.
        _ = try await lab.up(again, ["--accept-dns=false"])
        XCTAssertEqual(try String(contentsOfFile: resolvConf, encoding: .utf8), original, "resolv.conf with --accept-dns=false")
        var alone = ""
        for _ in 0..<50 where alone != ipB {
            alone = await dig(["b.lab.warren"])
            if alone != ipB { try await Task.sleep(for: .milliseconds(200)) }
        }
        XCTAssertEqual(alone, ipB)
        if testRun?.hasSucceeded == true { lab.keepLogs = false }
    }
}
