import Foundation
import WarrenPacket
import WarrenPolicy
import WarrenTailcfg
import WarrenTestSupport
import XCTest

/// Holds the incremental engine against full recomputes on random tailnets: after every join, change
/// or removal, what each node receives must equal (1) a fresh engine built from the same nodes and
/// (2) the reference compiler (`PolicyCompiler`, which reproduces Tailscale's captures); and nodes the
/// engine did not report as touched must keep exactly what they had.
final class IncrementalRecomputeTests: XCTestCase {
    /// A packet filter as a multiset of rules (rules are accept rules: their order carries no meaning).
    static func canonical(_ rules: [FilterRule]) -> [String] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return rules.map { String(decoding: try! encoder.encode($0), as: UTF8.self) }.sorted()
    }

    static func compare(_ got: [String: NodePolicy], _ want: [String: NodePolicy], context: String) -> String? {
        guard Set(got.keys) == Set(want.keys) else {
            return "\(context): nodes \(got.keys.sorted()) vs \(want.keys.sorted())"
        }
        for name in want.keys.sorted() {
            let g = got[name]!, w = want[name]!
            if canonical(g.packetFilter) != canonical(w.packetFilter) {
                return "\(context): \(name) filter\n  got  \(canonical(g.packetFilter))\n  want \(canonical(w.packetFilter))"
            }
            if g.sshPolicy != w.sshPolicy { return "\(context): \(name) ssh\n  got  \(String(describing: g.sshPolicy))\n  want \(String(describing: w.sshPolicy))" }
            if g.peers != w.peers { return "\(context): \(name) peers \(g.peers) want \(w.peers)" }
            if g.capabilities != w.capabilities { return "\(context): \(name) capabilities" }
            if g.autoApprovedRoutes != w.autoApprovedRoutes { return "\(context): \(name) auto-approved routes" }
        }
        return nil
    }

    func testIncrementalEqualsFullRecomputeOnRandomTailnets() throws {
        var parsed = 0, steps = 0, joins = 0, changes = 0, removals = 0
        var touchedTotal = 0, nodeTotal = 0
        for seed in UInt64(1)...40 {
            var gen = TailnetGenerator(seed: seed)
            let text = gen.policyText()
            let policy: Policy
            do {
                policy = try PolicyParser.parse(text, tailnetDomain: "example.com")
            } catch {
                XCTFail("seed \(seed): generated policy rejected: \(error)\n\(text)")
                continue
            }
            parsed += 1
            var nodes: [String: TailnetNode] = [:]
            for k in 0..<Int.random(in: 2...8, using: &gen.rng) { nodes["n\(k)"] = gen.node(named: "n\(k)") }
            var engine = PolicyEngine(policy: policy, tailnet: Tailnet(users: gen.users, nodes: Array(nodes.values)))
            var nextName = nodes.count
            var before = engine.compileAll()
            for step in 0..<30 {
                let change: NodeChange
                let roll = Int.random(in: 0..<10, using: &gen.rng)
                if roll < 4 || nodes.count < 2 {
                    let n = gen.node(named: "n\(nextName)")
                    nextName += 1
                    nodes[n.name] = n
                    change = .upsert(n)
                    joins += 1
                } else if roll < 8 {
                    let name = nodes.keys.sorted().randomElement(using: &gen.rng)!
                    let n = gen.reshape(nodes[name]!)
                    nodes[name] = n
                    change = .upsert(n)
                    changes += 1
                } else {
                    let name = nodes.keys.sorted().randomElement(using: &gen.rng)!
                    nodes[name] = nil
                    change = .remove(name: name)
                    removals += 1
                }
                let touched = engine.apply(change)
                steps += 1
                touchedTotal += touched.count
                nodeTotal += nodes.count
                let context = "seed \(seed) step \(step) \(change)"
                let tailnet = Tailnet(users: gen.users, nodes: Array(nodes.values))
                let after = engine.compileAll()
                let fresh = PolicyEngine(policy: policy, tailnet: tailnet).compileAll()
                XCTAssertEqual(after, fresh, "\(context): incremental differs from a fresh build")
                if let problem = Self.compare(after, PolicyCompiler(policy: policy, tailnet: tailnet).compileAll(), context: context) {
                    XCTFail(problem + "\npolicy: \(text)")
                    return
                }
                for (name, result) in after where !touched.contains(name) {
                    XCTAssertEqual(before[name], result, "\(context): \(name) changed but was not reported as touched")
                }
                before = after
            }
        }
        XCTAssertEqual(parsed, 40)
        print("incremental recompute: \(steps) steps (\(joins) joins, \(changes) changes, \(removals) removals); "
            + "on average \(touchedTotal / max(steps, 1)) of \(nodeTotal / max(steps, 1)) nodes touched per step")
    }

    /// A join touches only the nodes its aliases reach: a tagged node that no rule names touches itself only.
    func testJoinOfUnnamedNodeTouchesOnlyItself() throws {
        let policy = try PolicyParser.parse("""
            {"tagOwners": {"tag:web": ["a@example.com"], "tag:idle": ["a@example.com"]},
             "acls": [{"action": "accept", "src": ["a@example.com"], "dst": ["tag:web:443"]}]}
            """)
        let users = [TailnetUser(id: 1, name: "a", email: "a@example.com")]
        var nodes: [TailnetNode] = []
        for k in 1...20 {
            // Addresses apart, so that no two web servers fall into one prefix of the rule's destinations.
            nodes.append(TailnetNode(name: "web\(k)", user: nil, tags: ["tag:web"], addresses: [IPAddress("100.64.0.\(2 * k)")!]))
        }
        nodes.append(TailnetNode(name: "laptop", user: "a", tags: [], addresses: [IPAddress("100.64.1.1")!]))
        var engine = PolicyEngine(policy: policy, tailnet: Tailnet(users: users, nodes: nodes))
        let idle = TailnetNode(name: "idle", user: nil, tags: ["tag:idle"], addresses: [IPAddress("100.64.2.1")!])
        XCTAssertEqual(engine.apply(.upsert(idle)), ["idle"])
        // A new web server changes the laptop's peers, and itself; the other web servers keep what they had.
        let web = TailnetNode(name: "web21", user: nil, tags: ["tag:web"], addresses: [IPAddress("100.64.0.42")!])
        XCTAssertEqual(engine.apply(.upsert(web)), ["web21", "laptop"])
        XCTAssertEqual(engine.peers(for: "laptop").count, 21)
        // A second laptop of the same user changes the filters of every web server (their SrcIPs name it).
        let laptop2 = TailnetNode(name: "laptop2", user: "a", tags: [], addresses: [IPAddress("100.64.1.2")!])
        let touched = engine.apply(.upsert(laptop2))
        XCTAssertEqual(touched, Set((1...21).map { "web\($0)" } + ["laptop2"]))
        XCTAssertEqual(engine.packetFilter(for: "web3").first?.srcIPs, ["100.64.1.1", "100.64.1.2"])
        XCTAssertEqual(engine.apply(.remove(name: "laptop2")).count, 22)
        XCTAssertEqual(engine.packetFilter(for: "web3").first?.srcIPs, ["100.64.1.1"])
    }
}
