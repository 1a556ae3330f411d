import Foundation
import WarrenPacket
import WarrenPolicy
import WarrenTestSupport

/// Random tailnets and policies for property tests: users, groups, tags, nodes with routes,
/// and a policy drawing on all of them (ACLs, grants with ip/app/via, SSH, nodeAttrs, autoApprovers).
struct TailnetGenerator {
    var rng: SeededGenerator
    var users: [TailnetUser] = []
    var groups: [String] = []
    var tags: [String] = []
    var nextAddress = 1

    static let routePool = ["10.33.0.0/16", "10.44.1.0/24", "192.168.1.0/24", "0.0.0.0/0", "::/0"]
    static let hosts = ["h-db": "10.33.0.7", "h-net": "192.168.1.0/24"]

    init(seed: UInt64) {
        rng = SeededGenerator(seed: seed)
        let domains = ["example.com", "example.org"]
        for i in 1...Int.random(in: 3...6, using: &rng) {
            let domain = i == 1 ? domains[0] : domains.randomElement(using: &rng)!
            users.append(TailnetUser(id: i, name: "u\(i)", email: "u\(i)@\(domain)"))
        }
        groups = (1...Int.random(in: 2...4, using: &rng)).map { "group:g\($0)" }
        tags = (1...Int.random(in: 3...5, using: &rng)).map { "tag:t\($0)" }
    }

    mutating func chance(_ p: Double) -> Bool { Double.random(in: 0..<1, using: &rng) < p }
    mutating func pick<T>(_ list: [T]) -> T { list.randomElement(using: &rng)! }
    mutating func some<T>(_ list: [T], _ range: ClosedRange<Int>) -> [T] {
        Array(list.shuffled(using: &rng).prefix(Int.random(in: range, using: &rng)))
    }

    /// A node with fresh, unique addresses.
    mutating func node(named name: String) -> TailnetNode {
        reshape(TailnetNode(name: name, user: nil, tags: [], addresses: freshAddresses()))
    }

    mutating func freshAddresses() -> [IPAddress] {
        let k = nextAddress
        nextAddress += 1
        var addresses = [IPAddress("100.64.\(k / 250).\(k % 250 + 1)")!]
        if !chance(0.15) { addresses.append(IPAddress("fd7a:115c:a1e0::\(String(k, radix: 16))")!) }
        return addresses
    }

    /// The node with new owner or tags and new routes (addresses kept, sometimes renewed).
    mutating func reshape(_ n: TailnetNode) -> TailnetNode {
        var out = n
        if chance(0.4) {
            out.tags = some(tags, 1...2).sorted()
            out.user = nil
        } else {
            out.tags = []
            out.user = pick(users).name
        }
        out.advertisedRoutes = chance(0.35) ? some(Self.routePool, 1...3).map { IPPrefix($0)! } : []
        out.approvedRoutes = out.advertisedRoutes.filter { _ in chance(0.5) }
        if chance(0.1) { out.addresses = freshAddresses() }
        return out
    }

    mutating func sourceAlias() -> String {
        switch Int.random(in: 0..<9, using: &rng) {
        case 0: return "*"
        case 1: return "autogroup:member"
        case 2: return "autogroup:tagged"
        case 3, 4: return pick(groups)
        case 5: return pick(tags)
        case 6: return pick(users).email
        case 7: return "h-net"
        default: return "user:*@example.com"
        }
    }

    mutating func destinationAlias() -> String {
        switch Int.random(in: 0..<9, using: &rng) {
        case 0: return "*"
        case 1: return "autogroup:member"
        case 2, 3: return pick(tags)
        case 4: return pick(groups)
        case 5: return pick(users).email
        case 6: return pick(["h-db", "h-net", "10.33.0.0/16", "100.64.0.0/24"])
        case 7: return "autogroup:tagged"
        default: return "autogroup:internet"
        }
    }

    mutating func ports() -> String { pick(["*", "22", "80,443", "1000-2000", "53"]) }

    static func json(_ v: Any) -> String {
        String(decoding: try! JSONSerialization.data(withJSONObject: v, options: [.sortedKeys]), as: UTF8.self)
    }

    /// A policy text that Tailscale would accept for this tailnet's users, groups and tags.
    mutating func policyText() -> String {
        var p: [String: Any] = [:]
        var groupsObject: [String: [String]] = [:]
        for g in groups { groupsObject[g] = some(users, 1...3).map(\.email) }
        p["groups"] = groupsObject
        var owners: [String: [String]] = [:]
        for t in tags { owners[t] = [chance(0.5) ? pick(users).email : pick(groups)] }
        p["tagOwners"] = owners
        p["hosts"] = Self.hosts
        var acls: [[String: Any]] = []
        for _ in 0..<Int.random(in: 1...5, using: &rng) {
            if chance(0.2) {
                // autogroup:self takes users, groups and autogroup:member as sources.
                let src = some([pick(groups), pick(users).email, "autogroup:member"], 1...2)
                acls.append(["action": "accept", "src": src, "dst": ["autogroup:self:\(ports())"]])
                continue
            }
            var rule: [String: Any] = ["action": "accept",
                                       "src": (0..<Int.random(in: 1...2, using: &rng)).map { _ in sourceAlias() },
                                       "dst": (0..<Int.random(in: 1...3, using: &rng)).map { _ in "\(destinationAlias()):\(ports())" }]
            if chance(0.2) { rule["proto"] = pick(["tcp", "udp"]) }
            acls.append(rule)
        }
        p["acls"] = acls
        var grants: [[String: Any]] = []
        for _ in 0..<Int.random(in: 0...4, using: &rng) {
            var g: [String: Any] = ["src": (0..<Int.random(in: 1...2, using: &rng)).map { _ in sourceAlias() }]
            let kind = Int.random(in: 0..<4, using: &rng)
            if kind == 0 {
                g["dst"] = [pick(["10.33.0.0/16", "192.168.1.0/24", "autogroup:internet"])]
                g["ip"] = [pick(["*", "tcp:22", "udp:53"])]
                g["via"] = [pick(tags)]
            } else {
                var dsts = (0..<Int.random(in: 1...2, using: &rng)).map { _ in destinationAlias() }
                if kind == 1 {
                    dsts = dsts.filter { $0 != "autogroup:internet" }
                    if dsts.isEmpty { dsts = [pick(tags)] }
                    g["app"] = ["example.com/cap/things": [["level": Int.random(in: 1...3, using: &rng)]]]
                    if chance(0.5) { g["ip"] = ["tcp:443"] }
                } else {
                    g["ip"] = some(["*", "tcp:22", "udp:53", "tcp:80-90", "icmp:*"], 1...2)
                }
                g["dst"] = dsts
            }
            grants.append(g)
        }
        if !grants.isEmpty { p["grants"] = grants }
        var ssh: [[String: Any]] = []
        let ownerDomain = users[0].email.split(separator: "@")[1]
        for _ in 0..<Int.random(in: 0...3, using: &rng) {
            var rule: [String: Any] = ["action": pick(["accept", "check"]),
                                       "users": some(["root", "autogroup:nonroot", "ubuntu", "localpart:*@\(ownerDomain)"], 1...2)]
            if chance(0.4) {
                rule["src"] = [pick(["autogroup:member", pick(groups), pick(users).email])]
                rule["dst"] = ["autogroup:self"]
            } else {
                rule["src"] = [pick(["autogroup:member", pick(groups), pick(tags), pick(users).email])]
                rule["dst"] = [pick(tags)]
            }
            // checkPeriod belongs to check rules only (an accept rule with one is refused).
            if rule["action"] as? String == "check", chance(0.5) { rule["checkPeriod"] = pick(["12h", "always"]) }
            if chance(0.3) { rule["acceptEnv"] = ["GIT_*", "LANG"] }
            ssh.append(rule)
        }
        if !ssh.isEmpty { p["ssh"] = ssh }
        if chance(0.5) {
            p["nodeAttrs"] = [["target": [pick([pick(tags), pick(groups), "*"])], "attr": ["funnel"]]]
        }
        p["autoApprovers"] = ["routes": ["10.33.0.0/16": [pick(tags)], "192.168.0.0/16": [pick(groups)]],
                              "exitNode": [pick(tags)]]
        return Self.json(p)
    }
}
