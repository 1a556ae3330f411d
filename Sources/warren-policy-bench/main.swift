// warren-policy-bench: compiles a synthetic tailnet's policy and prints figures (run on demand; not a test).
//
//   swift run -c release warren-policy-bench [--nodes N] [--seed S] [--repeat-joins K] [--send-rounds R] [--digest]
//
// The tailnet: N nodes (default 10,000) of 2,500 users and 100 tags, 50 groups, 200 ACL and grant rules,
// 10 SSH rules, subnet routers and exit nodes. Figures: policy parse time, full compile time (engine build,
// and every node's filter, SSH policy and peers materialized), the largest per-node filter (rules and JSON
// bytes), peak memory (VmHWM), and the time to recompute after a node joins or leaves
// (median, 99th percentile and maximum over K joins of each kind; the touched nodes' results in wire form for
// the first R rounds). --digest prints a digest of every node's results in wire form after the build and after
// the first join of each kind (to compare two builds of the engine: the digests must be equal).
import Foundation
import WarrenPacket
import WarrenPolicy
import WarrenTailcfg

struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

func option(_ name: String, _ fallback: Int) -> Int {
    let args = CommandLine.arguments
    guard let i = args.firstIndex(of: name), i + 1 < args.count, let v = Int(args[i + 1]) else { return fallback }
    return v
}

if CommandLine.arguments.contains("--help") || CommandLine.arguments.contains("-h") {
    print("""
        USAGE: warren-policy-bench [--nodes N] [--seed S] [--repeat-joins K] [--send-rounds R] [--digest]
                                   [--only user|tagged|router]

        Compiles a synthetic tailnet's policy (N nodes, default 10000; 50 groups, 200 rules, 100 tags) and prints
        the full compile time, the recompute time of joins and removals (p50, p99 and maximum over K rounds of each
        kind, CPU and wall), the time to put the touched nodes' results in wire form (first R rounds, default 1)
        and the peak memory. --digest also prints a digest of every node's results in wire form; --only joins
        nodes of one kind.
        """)
    exit(0)
}
let nodeCount = option("--nodes", 10_000)
let digestWanted = CommandLine.arguments.contains("--digest")
var rng = SplitMix(state: UInt64(option("--seed", 1)))
let userCount = max(nodeCount / 4, 10), groupCount = 50, tagCount = 100, ruleCount = 200

let users = (1...userCount).map { TailnetUser(id: $0, name: "user\($0)", email: "user\($0)@example.com") }
let groups = (1...groupCount).map { "group:g\($0)" }
let tags = (1...tagCount).map { "tag:t\($0)" }

func address(_ k: Int) -> [IPAddress] {
    [IPAddress.v4(0x6440_0000 | UInt32(k + 1)), IPAddress("fd7a:115c:a1e0::\(String(k + 1, radix: 16))")!]
}

@MainActor func makeNode(_ k: Int) -> TailnetNode {
    if k % 10 < 7 {
        return TailnetNode(name: "node\(k)", user: "user\(Int.random(in: 1...userCount, using: &rng))", tags: [], addresses: address(k))
    }
    var t = [tags.randomElement(using: &rng)!]
    if Bool.random(using: &rng) { t.append(tags.randomElement(using: &rng)!) }
    var n = TailnetNode(name: "node\(k)", user: nil, tags: Array(Set(t)).sorted(), addresses: address(k))
    if k % 200 == 7 {
        let route = IPPrefix("10.\(k % 250).0.0/16")!
        n.advertisedRoutes = [route]
        n.approvedRoutes = [route]
    }
    if k % 1000 == 17 {
        n.advertisedRoutes += [IPPrefix("0.0.0.0/0")!, IPPrefix("::/0")!]
        n.approvedRoutes = n.advertisedRoutes
    }
    return n
}

@MainActor func policyText() -> String {
    var p: [String: Any] = [:]
    var g: [String: [String]] = [:]
    for name in groups { g[name] = (0..<Int.random(in: 20...80, using: &rng)).map { _ in users.randomElement(using: &rng)!.email } }
    p["groups"] = g
    var owners: [String: [String]] = [:]
    for t in tags { owners[t] = [groups.randomElement(using: &rng)!] }
    p["tagOwners"] = owners
    p["hosts"] = ["db-net": "10.7.0.0/16", "backup": "10.207.0.5"]
    func src() -> String {
        switch Int.random(in: 0..<10, using: &rng) {
        case 0: return "autogroup:member"
        case 1, 2: return tags.randomElement(using: &rng)!
        default: return groups.randomElement(using: &rng)!
        }
    }
    func dst() -> String {
        switch Int.random(in: 0..<20, using: &rng) {
        case 0: return "db-net"
        case 1: return "backup"
        case 2, 3: return groups.randomElement(using: &rng)!
        default: return tags.randomElement(using: &rng)!
        }
    }
    func ports() -> String { ["22", "443", "80,443", "5432", "8000-8999", "*"].randomElement(using: &rng)! }
    var acls: [[String: Any]] = []
    var grants: [[String: Any]] = []
    for i in 0..<ruleCount {
        if i == 0 {
            acls.append(["action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]])
        } else if i == 1 {
            acls.append(["action": "accept", "src": [groups[0]], "dst": ["autogroup:internet:*"]])
        } else if i % 4 == 0 {
            grants.append(["src": [src()], "dst": [dst(), dst()], "ip": ["tcp:\(ports())"]])
        } else {
            acls.append(["action": "accept", "src": (0..<Int.random(in: 1...2, using: &rng)).map { _ in src() },
                         "dst": (0..<Int.random(in: 1...3, using: &rng)).map { _ in "\(dst()):\(ports())" }])
        }
    }
    p["acls"] = acls
    p["grants"] = grants
    var ssh: [[String: Any]] = [["action": "check", "src": ["autogroup:member"], "dst": ["autogroup:self"], "users": ["autogroup:nonroot", "root"]]]
    for _ in 0..<9 {
        ssh.append(["action": "accept", "src": [groups.randomElement(using: &rng)!], "dst": [tags.randomElement(using: &rng)!], "users": ["ubuntu", "root"]])
    }
    p["ssh"] = ssh
    p["nodeAttrs"] = [["target": [tags[0]], "attr": ["funnel"]]]
    p["autoApprovers"] = ["routes": ["10.0.0.0/8": [tags[1]]], "exitNode": [tags[2]]]
    return String(decoding: try! JSONSerialization.data(withJSONObject: p, options: [.prettyPrinted, .sortedKeys]), as: UTF8.self)
}

func peakRSS() -> String {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return "n/a" }
    for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        return line.dropFirst("VmHWM:".count).trimmingCharacters(in: .whitespaces)
    }
    return "n/a"
}

/// Wall time and this thread's CPU time (the machine may be shared: CPU time is what the work costs).
struct Timing {
    var wall: Duration
    var cpu: Double

    static func + (a: Timing, b: Timing) -> Timing { Timing(wall: a.wall + b.wall, cpu: a.cpu + b.cpu) }
}

func threadCPU() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
    return Double(ts.tv_sec) * 1e3 + Double(ts.tv_nsec) / 1e6
}

struct Clock {
    let wall = ContinuousClock()
    func measure(_ body: () -> Void) -> Timing {
        let c0 = threadCPU()
        let w = wall.measure(body)
        return Timing(wall: w, cpu: threadCPU() - c0)
    }
}

func ms(_ t: Timing) -> String {
    let c = t.wall.components
    let wall = Double(c.seconds) * 1e3 + Double(c.attoseconds) / 1e15
    return String(format: "%.2f ms CPU (%.2f ms wall)", t.cpu, wall)
}

let clock = Clock()
let text = policyText()
let nodes = (0..<nodeCount).map(makeNode)
print("tailnet: \(nodeCount) nodes, \(users.count) users, \(groupCount) groups, \(tagCount) tags, \(ruleCount) rules (+10 SSH), "
    + "\(nodes.filter { !$0.approvedRoutes.isEmpty }.count) routers; policy \(text.utf8.count) bytes")

var policy: Policy!
let parseTime = clock.measure { policy = try! PolicyParser.parse(text, tailnetDomain: "example.com") }
print("parse and validate: \(ms(parseTime))")

var engine: PolicyEngine!
let buildTime = clock.measure { engine = PolicyEngine(policy: policy, tailnet: Tailnet(users: users, nodes: nodes)) }
// Every node's packet filter and SSH policy in wire form (peers are computed in the build, as bit sets).
var filters: [String: [FilterRule]] = [:]
var totalPeers = 0
let names = engine.nodeNames
let materializeTime = clock.measure {
    for name in names {
        filters[name] = engine.packetFilter(for: name)
        _ = engine.sshPolicy(for: name)
        totalPeers += engine.peerCount(for: name)
    }
}
print("full compile: \(ms(buildTime + materializeTime)) (engine build with every node's peers \(ms(buildTime)); "
    + "every node's filter and SSH policy in wire form \(ms(materializeTime)))")
let peerNamesTime = clock.measure { for name in names { _ = engine.peers(for: name) } }
print("peer lists by name for every node (\(totalPeers / nodeCount) peers on average): \(ms(peerNamesTime))")

let encoder = JSONEncoder()
var largest = (name: "", rules: 0, bytes: 0)
var totalRules = 0
for (name, rules) in filters {
    totalRules += rules.count
    let bytes = (try? encoder.encode(rules).count) ?? 0
    if bytes > largest.bytes { largest = (name, rules.count, bytes) }
}
let mostRules = filters.values.map(\.count).max() ?? 0
print("largest filter: \(largest.bytes) bytes of JSON, \(largest.rules) rules (\(largest.name)); most rules in one filter: \(mostRules); "
    + "average \(totalRules / nodeCount) rules per node")
filters = [:]

/// FNV-1a over every node's filter, SSH policy and peers, in wire form (JSON with sorted keys), by node name.
func digest(_ engine: PolicyEngine) -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    var h: UInt64 = 0xCBF2_9CE4_8422_2325
    func add(_ bytes: some Sequence<UInt8>) { for b in bytes { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 } }
    for name in engine.nodeNames {
        add(name.utf8)
        add((try? encoder.encode(engine.packetFilter(for: name))) ?? Data())
        add((try? encoder.encode(engine.sshPolicy(for: name))) ?? Data())
        add(engine.peers(for: name).joined(separator: ",").utf8)
    }
    return String(h, radix: 16)
}
if digestWanted { print("digest after the build: \(digest(engine))") }

// Joins: user nodes, tagged nodes and a router, each joined and then removed again (K rounds with
// --repeat-joins K). Per kind: the recompute time of the join and of the removal (median and maximum over the
// rounds, CPU and wall), and for the first join the nodes touched and the time to put their results in wire form.
struct Sample { var join: Timing; var remove: Timing; var touched: Int; var send: Timing? }
var samples: [String: [Sample]] = [:]
let allKinds = ["user node", "tagged node", "router"]
// --only user|tagged|router: one kind of join (for profiling).
let only = CommandLine.arguments.firstIndex(of: "--only").flatMap { i in
    i + 1 < CommandLine.arguments.count ? CommandLine.arguments[i + 1] : nil
}
let kinds = allKinds.filter { kind in only.map { kind.hasPrefix($0) } ?? true }
let rounds = max(option("--repeat-joins", 1), 1)
let sendRounds = option("--send-rounds", 1)
var joinIndex = 0
for round in 0..<rounds {
    for kind in kinds {
        let i = joinIndex
        joinIndex += 1
        var n = makeNode(nodeCount + i)
        n.name = "joiner\(i)"
        switch kind {
        case "user node": n.tags = []; n.user = "user\(i % userCount + 1)"
        case "tagged node": n.user = nil; n.tags = [tags[i % tagCount]]
        default:
            n.user = nil; n.tags = [tags[1]]
            n.advertisedRoutes = [IPPrefix("10.250.\(i % 250).0/24")!]
        }
        var touched: Set<String> = []
        let t = clock.measure { touched = engine.apply(.upsert(n)) }
        if digestWanted && round == 0 { print("digest after the join of a \(kind): \(digest(engine))") }
        var send: Timing?
        if round < sendRounds {
            send = clock.measure { for name in touched { _ = engine.packetFilter(for: name); _ = engine.sshPolicy(for: name) } }
        }
        let r = clock.measure { _ = engine.apply(.remove(name: n.name)) }
        samples[kind, default: []].append(Sample(join: t, remove: r, touched: touched.count, send: send))
    }
}

func wallMS(_ t: Timing) -> Double {
    let c = t.wall.components
    return Double(c.seconds) * 1e3 + Double(c.attoseconds) / 1e15
}

func distribution(_ ts: [Timing]) -> String {
    let cpu = ts.map(\.cpu).sorted(), wall = ts.map(wallMS).sorted()
    func p99(_ v: [Double]) -> Double { v[max(Int((Double(v.count) * 0.99).rounded(.up)) - 1, 0)] }
    return String(format: "p50 %.2f ms / p99 %.2f ms / max %.2f ms CPU (wall p50 %.2f / p99 %.2f / max %.2f ms)",
                  cpu[cpu.count / 2], p99(cpu), cpu.last!, wall[wall.count / 2], p99(wall), wall.last!)
}

for kind in kinds {
    let s = samples[kind] ?? []
    guard let first = s.first else { continue }
    print("join of a \(kind) (\(s.count)x): recompute \(distribution(s.map(\.join)))")
    print("  removal: recompute \(distribution(s.map(\.remove)))")
    if let send = first.send {
        print("  first join: \(first.touched) nodes touched, their filters and SSH policies in wire form \(ms(send))")
    }
}
print("peak memory (VmHWM): \(peakRSS())")
