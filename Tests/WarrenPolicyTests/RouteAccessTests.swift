// PolicyEngine.canAccessRoute: which nodes may use a subnet route (and so see it in the router's AllowedIPs).

import WarrenPacket
import WarrenPolicy
import XCTest

final class RouteAccessTests: XCTestCase {
    func testANodeMayUseARouteItReachesIntoOrThatReachesIt() throws {
        let policy = try PolicyParser.parse("""
            {
              "hosts": {"lab": "10.2.0.0/16"},
              "acls": [
                {"action": "accept", "src": ["alice@example.com"], "dst": ["10.1.0.0/16:22"]},
                {"action": "accept", "src": ["lab"], "dst": ["bob@example.com:443"]},
              ],
            }
            """)
        let users = [TailnetUser(id: 1, name: "alice@example.com", email: "alice@example.com"),
                     TailnetUser(id: 2, name: "bob@example.com", email: "bob@example.com"),
                     TailnetUser(id: 3, name: "carol@example.com", email: "carol@example.com")]
        let nodes = [
            TailnetNode(name: "alice", user: "alice@example.com", tags: [], addresses: [IPAddress("100.64.0.1")!]),
            TailnetNode(name: "bob", user: "bob@example.com", tags: [], addresses: [IPAddress("100.64.0.2")!]),
            TailnetNode(name: "carol", user: "carol@example.com", tags: [], addresses: [IPAddress("100.64.0.3")!]),
        ]
        let engine = PolicyEngine(policy: policy, tailnet: Tailnet(users: users, nodes: nodes))
        XCTAssertTrue(engine.canAccessRoute("alice", IPPrefix("10.1.5.0/24")!), "alice reaches into 10.1/16")
        XCTAssertFalse(engine.canAccessRoute("alice", IPPrefix("10.2.0.0/24")!))
        XCTAssertTrue(engine.canAccessRoute("bob", IPPrefix("10.2.0.0/24")!), "the lab reaches bob: he needs the route back")
        XCTAssertFalse(engine.canAccessRoute("bob", IPPrefix("10.1.0.0/24")!))
        XCTAssertFalse(engine.canAccessRoute("carol", IPPrefix("10.1.0.0/24")!))
        XCTAssertFalse(engine.canAccessRoute("nobody", IPPrefix("10.1.0.0/24")!))
    }
}
