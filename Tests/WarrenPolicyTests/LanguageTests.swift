import Foundation
import WarrenPacket
import WarrenPolicy
import WarrenTailcfg
import XCTest

/// One test per part of the policy language (section 1 of the issue), each on a small tailnet with
/// hand-derived expectations, so that the language is covered without the conformance data.
final class LanguageTests: XCTestCase {
    static let users = [
        TailnetUser(id: 1, name: "alice", email: "alice@example.com"),
        TailnetUser(id: 2, name: "bob", email: "bob@example.com"),
        TailnetUser(id: 3, name: "carol", email: "carol@example.org"),
    ]

    static func node(_ name: String, user: String? = nil, tags: [String] = [], _ v4: String, _ v6: String? = nil,
                     routes: [String] = [], approved: [String] = []) -> TailnetNode {
        TailnetNode(name: name, user: user, tags: tags, addresses: [IPAddress(v4)!] + (v6.map { [IPAddress($0)!] } ?? []),
                    advertisedRoutes: routes.map { IPPrefix($0)! }, approvedRoutes: approved.map { IPPrefix($0)! })
    }

    static let tailnet = Tailnet(users: users, nodes: [
        node("alice-laptop", user: "alice", "100.64.0.1", "fd7a:115c:a1e0::1"),
        node("alice-phone", user: "alice", "100.64.0.2"),
        node("bob-laptop", user: "bob", "100.64.0.3"),
        node("carol-laptop", user: "carol", "100.64.0.4"),
        node("web", tags: ["tag:web"], "100.64.0.10"),
        node("db", tags: ["tag:db"], "100.64.0.11"),
        node("router", tags: ["tag:router"], "100.64.0.20", routes: ["10.0.0.0/8", "0.0.0.0/0", "::/0"]),
    ])

    static let header = """
        "groups": {"group:eng": ["alice@example.com", "bob@example.com"]},
        "tagOwners": {"tag:web": ["group:eng"], "tag:db": ["group:eng"], "tag:router": ["alice@example.com"]},
        "hosts": {"intranet": "10.1.0.0/16", "printer": "10.1.2.3"},
        "ipsets": {"ipset:lab": ["10.2.0.0/16", "printer", "10.3.0.1-10.3.0.9"]},
        "autoApprovers": {"routes": {"10.0.0.0/8": ["tag:router"]}, "exitNode": ["tag:router"]},
        """

    /// Compiles with both the reference compiler and the engine, checks they agree, returns the engine's.
    func compile(_ body: String, file: StaticString = #filePath, line: UInt = #line) throws -> [String: NodePolicy] {
        let check = try PolicyCheck(text: "{" + Self.header + body + "}", tailnet: Self.tailnet)
        let engine = PolicyEngine(policy: check.policy, tailnet: Self.tailnet).compileAll()
        let reference = PolicyCompiler(policy: check.policy, tailnet: Self.tailnet).compileAll()
        if let problem = IncrementalRecomputeTests.compare(engine, reference, context: "engine vs reference") {
            XCTFail(problem, file: file, line: line)
        }
        return engine
    }

    func dsts(_ p: NodePolicy?) -> Set<String> {
        Set((p?.packetFilter ?? []).flatMap { ($0.dstPorts ?? []).map { "\($0.ip):\($0.ports.first)-\($0.ports.last)" } })
    }

    func testACLWithGroupsTagsHostsIPSetsProtoAndPorts() throws {
        let out = try compile("""
            "acls": [
              {"action": "accept", "src": ["group:eng"], "proto": "tcp", "dst": ["tag:web:80,443", "tag:db:5432"]},
              {"action": "accept", "src": ["carol@example.org"], "dst": ["intranet:22", "ipset:lab:*", "100.64.0.11:8000-8999"]},
            ]
            """)
        let web = out["web"]!.packetFilter
        XCTAssertEqual(web.count, 1)
        XCTAssertEqual(Set(web[0].srcIPs), ["100.64.0.1", "fd7a:115c:a1e0::1", "100.64.0.2", "100.64.0.3"])
        XCTAssertEqual(web[0].ipProto, [6])
        XCTAssertEqual(dsts(out["web"]), ["100.64.0.10:80-80", "100.64.0.10:443-443"])
        // The db gets the group's rule and carol's (by its address); the router serves 10.0.0.0/8 (approved
        // by autoApprovers) and so gets carol's rule for the host, the ipset and its range.
        XCTAssertEqual(dsts(out["db"]), ["100.64.0.11:5432-5432", "100.64.0.11:8000-8999"])
        // Destinations are written as prefixes: the ipset's range 10.3.0.1-10.3.0.9 becomes four of them.
        XCTAssertEqual(dsts(out["router"]), ["10.1.0.0/16:22-22", "10.1.2.3:0-65535", "10.2.0.0/16:0-65535", "10.3.0.1:0-65535",
                                             "10.3.0.2/31:0-65535", "10.3.0.4/30:0-65535", "10.3.0.8/31:0-65535"])
        XCTAssertEqual(out["carol-laptop"]!.packetFilter, [])
        XCTAssertEqual(out["carol-laptop"]!.peers, ["db", "router"])
        XCTAssertEqual(out["bob-laptop"]!.peers, ["db", "web"])
    }

    func testGrantsWithIPAppAndVia() throws {
        let out = try compile("""
            "grants": [
              {"src": ["group:eng"], "dst": ["tag:web"], "ip": ["tcp:443", "udp:53"]},
              {"src": ["alice@example.com"], "dst": ["tag:db"], "app": {"example.com/cap/db": [{"role": "admin"}]}},
              {"src": ["bob@example.com"], "dst": ["10.0.0.0/8"], "ip": ["*"], "via": ["tag:router"]},
            ]
            """)
        let web = out["web"]!.packetFilter
        XCTAssertEqual(Set(web.map { $0.ipProto ?? [] }), [[6], [17]])
        XCTAssertEqual(dsts(out["web"]), ["100.64.0.10:443-443", "100.64.0.10:53-53"])
        let db = out["db"]!.packetFilter
        XCTAssertEqual(db.count, 1)
        XCTAssertEqual(db[0].capGrant?.first?.dsts, ["100.64.0.11/32"])
        XCTAssertEqual(db[0].capGrant?.first?.capMap?["example.com/cap/db"], [.object(["role": .string("admin")])])
        XCTAssertEqual(Set(db[0].srcIPs), ["100.64.0.1", "fd7a:115c:a1e0::1", "100.64.0.2"])
        // via: only the router with the via tag carries bob's traffic to 10.0.0.0/8.
        XCTAssertEqual(dsts(out["router"]), ["10.0.0.0/8:0-65535"])
        XCTAssertEqual(out["router"]!.packetFilter.first?.srcIPs, ["100.64.0.3"])
        XCTAssertTrue(out["bob-laptop"]!.peers.contains("router"))
        XCTAssertFalse(out["carol-laptop"]!.peers.contains("router"))
    }

    func testSSHAcceptAndCheckWithNonrootLocalpartCheckPeriodAndAcceptEnv() throws {
        let out = try compile("""
            "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
            "ssh": [
              {"action": "check", "src": ["group:eng"], "dst": ["tag:web"], "users": ["root", "autogroup:nonroot"], "checkPeriod": "12h"},
              {"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self"], "users": ["localpart:*@example.com"], "acceptEnv": ["GIT_*", "LANG"]},
            ]
            """)
        let web = out["web"]!.sshPolicy!.rules
        XCTAssertEqual(web.count, 1)
        XCTAssertEqual(web[0].sshUsers, ["root": "root", "*": "="])
        XCTAssertNotNil(web[0].action?.holdAndDelegate)
        XCTAssertEqual(Set(web[0].principals.compactMap(\.nodeIP)), ["100.64.0.1", "fd7a:115c:a1e0::1", "100.64.0.2", "100.64.0.3"])
        // autogroup:self with localpart: alice's devices accept alice's own devices as local user "alice".
        let laptop = out["alice-laptop"]!.sshPolicy!.rules
        XCTAssertTrue(laptop.contains { $0.sshUsers == ["alice": "alice"] && $0.action?.accept == true && $0.acceptEnv == ["GIT_*", "LANG"] })
        XCTAssertTrue(laptop.allSatisfy { Set($0.principals.compactMap(\.nodeIP)).isSubset(of: ["100.64.0.1", "fd7a:115c:a1e0::1", "100.64.0.2"]) })
        // carol's domain is not the tailnet's: no localpart mapping for her.
        XCTAssertFalse((out["carol-laptop"]!.sshPolicy?.rules ?? []).contains { $0.sshUsers["carol"] != nil })
    }

    func testCheckPeriodBoundsAndLocalpartDomainAreValidated() {
        func message(_ text: String) -> String? {
            do { _ = try PolicyParser.parse(text, tailnetDomain: "example.com"); return nil } catch { return error.message }
        }
        XCTAssertEqual(message(#"{"ssh": [{"action": "check", "src": ["*"], "dst": ["*"], "users": ["root"], "checkPeriod": "169h"}]}"#),
                       "checkPeriod 169h0m0s is above the max (168h)")
        XCTAssertEqual(message(#"{"ssh": [{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self"], "users": ["localpart:*@example.org"]}]}"#),
                       "example.org is not associated with this Tailnet and cannot be used in user:*@<domain> expressions")
        XCTAssertEqual(message(#"{"ssh": [{"action": "deny", "src": ["*"], "dst": ["*"], "users": ["root"]}]}"#),
                       "\"deny\" is not a valid action")
    }

    func testAutogroupsMemberTaggedSelfInternetAndDangerAll() throws {
        let out = try compile("""
            "acls": [
              {"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:22"]},
              {"action": "accept", "src": ["autogroup:tagged"], "dst": ["tag:db:5432"]},
              {"action": "accept", "src": ["group:eng"], "dst": ["autogroup:internet:*"]},
              {"action": "accept", "src": ["autogroup:danger-all"], "dst": ["tag:web:443"]},
            ]
            """)
        XCTAssertEqual(dsts(out["alice-phone"]), ["100.64.0.2:22-22"])
        XCTAssertEqual(Set(out["alice-phone"]!.packetFilter[0].srcIPs), ["100.64.0.1", "fd7a:115c:a1e0::1", "100.64.0.2"])
        XCTAssertEqual(Set(out["db"]!.packetFilter[0].srcIPs), ["100.64.0.10", "100.64.0.11", "100.64.0.20"])
        XCTAssertEqual(out["web"]!.packetFilter.first?.srcIPs, ["*"])
        // The exit node (approved by autoApprovers' exitNode) alone receives the internet rule.
        XCTAssertTrue(dsts(out["router"]).contains("0.0.0.0-9.255.255.255:0-65535"))
        XCTAssertFalse(out["bob-laptop"]!.packetFilter.contains { ($0.dstPorts ?? []).contains { $0.ip.hasPrefix("0.0.0.0") } })
    }

    func testAutoApproversApproveRoutesAndExitNodes() throws {
        let out = try compile(#""acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]"#)
        XCTAssertEqual(Set(out["router"]!.autoApprovedRoutes.map(\.description)), ["10.0.0.0/8", "0.0.0.0/0", "::/0"])
        XCTAssertEqual(out["web"]!.autoApprovedRoutes, [])
        // With the routes approved, `*` sources also name the router's subnet.
        XCTAssertTrue(out["web"]!.packetFilter[0].srcIPs.contains("10.0.0.0/8"))
    }

    func testNodeAttrsAndTailnetOptions() throws {
        let text = "{" + Self.header + """
            "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
            "nodeAttrs": [
              {"target": ["tag:web"], "attr": ["funnel"]},
              {"target": ["group:eng"], "app": {"example.com/cap/x": [{"n": 1}]}},
            ],
            "randomizeClientPort": true,
            "disableIPv4": false,
            "OneCGNATRoute": "mac-always",
            "derpMap": {"OmitDefaultRegions": true, "Regions": {"900": {"RegionID": 900, "RegionCode": "home"}}},
            }
            """
        let check = try PolicyCheck(text: text, tailnet: Self.tailnet)
        XCTAssertEqual(check.policy.options.randomizeClientPort, true)
        XCTAssertEqual(check.policy.options.disableIPv4, false)
        XCTAssertEqual(check.policy.options.oneCGNATRoute, "mac-always")
        guard case .object(let derp)? = check.policy.options.derpMap else { return XCTFail("derpMap not read") }
        XCTAssertEqual(derp["OmitDefaultRegions"], .bool(true))
        let out = PolicyEngine(policy: check.policy, tailnet: Self.tailnet).compileAll()
        // Bare attributes are null (nil), app values as written (see CapabilityValueTests).
        let web: NodeCapMap = ["funnel": nil, "randomize-client-port": nil]
        let bob: NodeCapMap = ["example.com/cap/x": [.object(["n": .number(1)])], "randomize-client-port": nil]
        XCTAssertEqual(out["web"]!.capabilities, web)
        XCTAssertEqual(out["bob-laptop"]!.capabilities, bob)
        XCTAssertThrowsError(try PolicyParser.parse(#"{"disableIPv4": "yes"}"#)) { error in
            XCTAssertEqual((error as? PolicyError)?.message, "disableIPv4: expected a boolean")
        }
    }

    func testTestsAndSSHTestsRunAgainstTheTailnet() throws {
        let passing = "{" + Self.header + """
            "acls": [{"action": "accept", "src": ["group:eng"], "dst": ["tag:web:443"]}],
            "ssh": [{"action": "accept", "src": ["group:eng"], "dst": ["tag:web"], "users": ["root"]}],
            "tests": [{"src": "alice@example.com", "accept": ["tag:web:443"], "deny": ["tag:web:22", "tag:db:443"]}],
            "sshTests": [{"src": "bob@example.com", "dst": ["tag:web"], "accept": ["root"], "deny": ["ubuntu"]}],
            }
            """
        XCTAssertNoThrow(try PolicyCheck(text: passing, tailnet: Self.tailnet))
        let failing = passing.replacingOccurrences(of: #""deny": ["tag:web:22", "tag:db:443"]"#, with: #""deny": ["tag:web:443"]"#)
        XCTAssertThrowsError(try PolicyCheck(text: failing, tailnet: Self.tailnet)) { error in
            let e = error as? PolicyError
            XCTAssertEqual(e?.message, "test(s) failed")
            XCTAssertEqual(e?.line, 7, "located at the failing test")
        }
        let policy = try PolicyParser.parse(failing)
        let failures = PolicyTestRunner(policy: policy, tailnet: Self.tailnet).run()
        XCTAssertEqual(failures.map(\.message), [#"test 0: deny "tag:web:443" from "alice@example.com" failed"#])
    }
}
