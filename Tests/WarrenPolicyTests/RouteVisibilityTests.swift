import WarrenPacket
import WarrenPolicy
import XCTest

/// Area 4 of issue 11: peers and route access when subnet routes cover tailnet addresses, and through
/// autogroup:self and via. Expected results follow headscale v2's BuildPeerMap and CanAccessRoute: with
/// per-node rules (autogroup:self, via) each node's matchers are its unreduced rules, a node takes part in a
/// rule by its addresses or by its approved subnet routes, and two nodes are peers when either's rules let one
/// reach the other. PolicyCompiler, PolicyEngine built whole and PolicyEngine built node by node must agree.
final class RouteVisibilityTests: XCTestCase {
    static let users = LanguageTests.users
    static func node(_ name: String, user: String? = nil, tags: [String] = [], _ v4: String, routes: [String] = []) -> TailnetNode {
        LanguageTests.node(name, user: user, tags: tags, v4, routes: routes, approved: routes)
    }

    /// alice has two devices, bob one; `cover` routes 100.64.0.0/30 (alice's and bob's addresses), `lab` routes
    /// 10.50.0.0/16, `web` is a tagged server outside both.
    static let tailnet = Tailnet(users: users, nodes: [
        node("alice-laptop", user: "alice", "100.64.0.1"),
        node("alice-phone", user: "alice", "100.64.0.2"),
        node("bob-laptop", user: "bob", "100.64.0.3"),
        node("cover", tags: ["tag:router"], "100.64.0.20", routes: ["100.64.0.0/30"]),
        node("lab", tags: ["tag:lab"], "100.64.0.21", routes: ["10.50.0.0/16"]),
        node("web", tags: ["tag:web"], "100.64.0.10"),
    ])
    static let header = #""tagOwners": {"tag:router": ["alice@example.com"], "tag:lab": ["alice@example.com"], "tag:web": ["alice@example.com"]},"#

    /// autogroup:self only: each user's devices see each other; the router whose route covers their addresses
    /// takes part in each user's self rules (it covers sources and destinations), so it sees all three and they
    /// see it; bob still does not see alice's devices; `web` and `lab` see no one.
    func testSelfRulesWithARouteOverTheUsersAddresses() throws {
        let out = try Fidelity.compile(#""acls": [{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]}]"#,
                                       tailnet: Self.tailnet, header: Self.header)
        XCTAssertEqual(out["alice-laptop"]?.peers, ["alice-phone", "cover"])
        XCTAssertEqual(out["bob-laptop"]?.peers, ["cover"])
        XCTAssertEqual(out["cover"]?.peers, ["alice-laptop", "alice-phone", "bob-laptop"])
        XCTAssertEqual(out["web"]?.peers, [])
        XCTAssertEqual(out["lab"]?.peers, [])
    }

    /// A global rule to a prefix inside the covering route: the router and the rule's destination node are both
    /// destinations (the router by its route), so the source sees both.
    func testGlobalRuleIntoACoveredAddress() throws {
        let out = try Fidelity.compile(#""acls": [{"action": "accept", "src": ["tag:web"], "dst": ["100.64.0.3:22"]}]"#,
                                       tailnet: Self.tailnet, header: Self.header)
        XCTAssertEqual(out["web"]?.peers, ["bob-laptop", "cover"])
        XCTAssertEqual(out["cover"]?.peers, ["web"])
        XCTAssertEqual(out["alice-laptop"]?.peers, [])
    }

    /// canAccessRoute honours the node's own autogroup:self rules: alice's devices may use a route over their
    /// own addresses; a tagged node may not (it has no self rules).
    func testCanAccessRouteThroughAutogroupSelf() throws {
        let policy = try PolicyParser.parse("{" + Self.header + #""acls": [{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]}]}"#)
        let engine = PolicyEngine(policy: policy, tailnet: Self.tailnet)
        XCTAssertTrue(engine.canAccessRoute("alice-laptop", IPPrefix("100.64.0.0/30")!))
        XCTAssertTrue(engine.canAccessRoute("bob-laptop", IPPrefix("100.64.0.0/30")!))
        XCTAssertFalse(engine.canAccessRoute("web", IPPrefix("100.64.0.0/30")!))
        XCTAssertFalse(engine.canAccessRoute("alice-laptop", IPPrefix("10.50.0.0/16")!), "self reaches no other subnet")
    }

    /// canAccessRoute honours `via`: the grant's sources may use routes that overlap its destinations; others may not.
    func testCanAccessRouteThroughVia() throws {
        let policy = try PolicyParser.parse("{" + Self.header + #""grants": [{"src": ["alice@example.com"], "dst": ["10.50.0.0/16"], "ip": ["*"], "via": ["tag:lab"]}]}"#)
        let engine = PolicyEngine(policy: policy, tailnet: Self.tailnet)
        XCTAssertTrue(engine.canAccessRoute("alice-phone", IPPrefix("10.50.0.0/16")!))
        XCTAssertTrue(engine.canAccessRoute("alice-phone", IPPrefix("10.50.7.0/24")!), "a route inside the destination")
        XCTAssertFalse(engine.canAccessRoute("bob-laptop", IPPrefix("10.50.0.0/16")!))
        XCTAssertFalse(engine.canAccessRoute("alice-phone", IPPrefix("10.60.0.0/16")!))
    }
}
