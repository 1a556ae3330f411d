import WarrenPacket
import WarrenPolicy
import WarrenTailcfg
import XCTest

/// Issue 11, second pass: the rules behind the mismatches found by running headscale's capture set
/// (scripts/policy/headscale-captures.sh), each checked on policies written here. Expected results come from
/// Tailscale's documented semantics and headscale's hscontrol/policy/v2; every compile goes through PolicyCompiler,
/// PolicyEngine built whole and PolicyEngine built node by node (Fidelity.compile fails the test if they differ).
final class SemanticsByAreaTests: XCTestCase {
    static let owners = #""tagOwners": {"tag:web": ["alice@example.com"], "tag:lab": ["alice@example.com"]},"#

    // MARK: Area 1, messages by place

    /// A nodeAttrs target that is no alias and no defined host is read as an address and refused as one
    /// (`"x": invalid address`), at the target's LINE:COLUMN; the same word as an ACL source stays an undefined host.
    func testNodeAttrsTargetThatIsNoAddress() {
        let body = #"{"# + Self.owners + #""nodeAttrs": [{"target": ["tag:web", "%not-a-host%"], "attr": ["funnel"]}]}"#
        let col = body.distance(from: body.startIndex, to: body.range(of: "\"%not")!.lowerBound) + 1
        XCTAssertEqual(Fidelity.rejection(body), "1:\(col): " + #""%not-a-host%": invalid address"#)
        XCTAssertEqual(Fidelity.message(#"{"nodeAttrs": [{"target": ["fileserver"], "attr": ["funnel"]}]}"#),
                       #""fileserver": invalid address"#, "a well-formed but undefined name too")
        XCTAssertNil(Fidelity.message(#"{"hosts": {"fileserver": "100.64.0.10"}, "nodeAttrs": [{"target": ["fileserver"], "attr": ["funnel"]}]}"#),
                     "a defined host is a valid target")
        XCTAssertEqual(Fidelity.message(#"{"acls": [{"action": "accept", "src": ["fileserver"], "dst": ["*:*"]}]}"#),
                       #"host not defined in policy: "fileserver""#)
    }

    /// `user:*@domain` of another domain: behind "[ssh] " in an SSH rule's src, bare in a grant's src; the same
    /// domain through `localpart:*@domain` in `users` is bare too (it is checked apart from the SSH aliases).
    func testForeignDomainBySection() {
        let want = "example.net is not associated with this Tailnet and cannot be used in user:*@<domain> expressions"
        XCTAssertEqual(Fidelity.message(#"{"ssh": [{"action": "accept", "src": ["user:*@example.net"], "dst": ["autogroup:self"], "users": ["root"]}]}"#),
                       "[ssh] " + want)
        XCTAssertEqual(Fidelity.message(#"{"grants": [{"src": ["user:*@example.net"], "dst": ["*"], "ip": ["*"]}]}"#), want)
        XCTAssertEqual(Fidelity.message(#"{"ssh": [{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self"], "users": ["localpart:*@example.net"]}]}"#),
                       want)
    }

    /// An ipPool touching a reserved range is refused with Tailscale's wording, naming the pool as written,
    /// whether it lies inside the reserved range or covers it.
    func testIPPoolReservedWording() {
        func pool(_ p: String) -> String? {
            Fidelity.message(#"{"nodeAttrs": [{"target": ["autogroup:member"], "ipPool": [""# + p + #""]}]}"#)
        }
        XCTAssertEqual(pool("100.100.100.128/25"), "IPPool(100.100.100.128/25): network within reserved range")
        XCTAssertEqual(pool("100.115.92.0/22"), "IPPool(100.115.92.0/22): network within reserved range")
        XCTAssertNil(pool("100.100.101.0/24"), "next to the reserved /24, not in it")
    }

    // MARK: Area 2, what is checked and what is taken literally

    /// Only `localpart:*@<domain>` (a `*` before the last `@`, a non-empty domain) is the localpart form. Other
    /// `localpart:` strings are literal login names: accepted, and sent as written in the rule's SSH users.
    func testNonCanonicalLocalpartIsALiteralUser() throws {
        let literals = ["localpart:*@", "localpart:alice@example.com", "localpart:*@a@example.net"]
        let users = literals.map { "\"\($0)\"" }.joined(separator: ", ")
        let out = try Fidelity.compile(#""ssh": [{"action": "accept", "src": ["autogroup:member"], "dst": ["tag:web"], "users": ["# + users + "]}]",
                                       header: Self.owners)
        let rules = out["web"]?.sshPolicy?.rules ?? []
        XCTAssertEqual(rules.count, 1)
        for l in literals { XCTAssertEqual(rules.first?.sshUsers[l], l, l) }
        XCTAssertEqual(rules.first?.sshUsers["root"], "", "root stays refused")
        // The canonical form is still checked against the tailnet's domain, `*` included.
        XCTAssertEqual(Fidelity.message(#"{"ssh": [{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self"], "users": ["localpart:*@*"]}]}"#),
                       "* is not associated with this Tailnet and cannot be used in user:*@<domain> expressions")
    }

    // MARK: IPv6 destinations (a new area: rules and peers reached through a node's IPv6 address)

    /// Every node has an IPv6 address here; `web` is the source of the rules.
    static let v6Tailnet = Tailnet(users: LanguageTests.users, nodes: [
        LanguageTests.node("alice-laptop", user: "alice", "100.64.0.1", "fd7a:115c:a1e0::1"),
        LanguageTests.node("bob-laptop", user: "bob", "100.64.0.3", "fd7a:115c:a1e0::3"),
        LanguageTests.node("carol-laptop", user: "carol", "100.64.0.4", "fd7a:115c:a1e0::104"),
        LanguageTests.node("web", tags: ["tag:web"], "100.64.0.10", "fd7a:115c:a1e0::a"),
    ])

    /// A destination that holds a node's IPv6 address and not its IPv4 one brings the rule to that node (the
    /// rule names the address as written) and makes the source and the node peers; others get nothing.
    func testRuleToANodesIPv6AddressReachesIt() throws {
        let out = try Fidelity.compile(#""grants": [{"src": ["tag:web"], "dst": ["fd7a:115c:a1e0::3"], "ip": ["tcp:22"]}]"#,
                                       tailnet: Self.v6Tailnet, header: Self.owners)
        let rules = out["bob-laptop"]?.packetFilter ?? []
        XCTAssertEqual(rules.flatMap { ($0.dstPorts ?? []).map(\.ip) }, ["fd7a:115c:a1e0::3"])
        XCTAssertEqual(out["web"]?.peers, ["bob-laptop"])
        XCTAssertEqual(out["bob-laptop"]?.peers, ["web"])
        XCTAssertEqual(out["alice-laptop"]?.packetFilter ?? [], [])
    }

    /// An IPv6 prefix reaches every node whose IPv6 address it holds (`::/120` holds ::1, ::3 and ::a, not ::104).
    func testIPv6PrefixReachesTheNodesInIt() throws {
        let out = try Fidelity.compile(#""acls": [{"action": "accept", "src": ["tag:web"], "dst": ["fd7a:115c:a1e0::/120:*"]}]"#,
                                       tailnet: Self.v6Tailnet, header: Self.owners)
        for name in ["alice-laptop", "bob-laptop", "web"] {
            XCTAssertEqual(out[name]?.packetFilter.flatMap { ($0.dstPorts ?? []).map(\.ip) }, ["fd7a:115c:a1e0::/120"], name)
        }
        XCTAssertEqual(out["carol-laptop"]?.packetFilter ?? [], [])
        XCTAssertEqual(out["web"]?.peers, ["alice-laptop", "bob-laptop"])
    }

    // MARK: Area 4, via grants without `ip`

    /// An app-only via grant: its sources and the routers that carry its destination see each other, but no rule
    /// is sent (the capability is not delivered through the router). A node with a via tag but no route over the
    /// destination is no router for it; nodes outside the sources see neither. A router whose route covers a
    /// source's address counts among the sources, as for any rule.
    func testAppOnlyViaGrantMakesPeersWithoutRules() throws {
        let body = #""grants": [{"src": ["alice@example.com"], "dst": ["10.50.0.0/16"], "via": ["tag:lab", "tag:web"], "app": {"example.com/cap/lab": [{"level": "read"}]}}]"#
        let out = try Fidelity.compile(body, tailnet: RouteVisibilityTests.tailnet, header: RouteVisibilityTests.header)
        // `cover` routes 100.64.0.0/30, over alice's addresses: it takes part in the sources by that route.
        XCTAssertEqual(out["lab"]?.peers, ["alice-laptop", "alice-phone", "cover"])
        XCTAssertEqual(out["cover"]?.peers, ["lab"])
        XCTAssertEqual(out["alice-phone"]?.peers, ["lab"])
        XCTAssertEqual(out["lab"]?.packetFilter ?? [], [])
        XCTAssertEqual(out["alice-laptop"]?.packetFilter ?? [], [])
        XCTAssertEqual(out["web"]?.peers, [])
        XCTAssertEqual(out["bob-laptop"]?.peers, [])
    }
}
