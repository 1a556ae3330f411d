// warren-control-bench: figures for the control engine (run on demand; not a test).
//
//   swift run -c release warren-control-bench [N ...]
//
// For each N: the time to build (and encode, and zstd) one node's full map in a tailnet of N nodes, and,
// with N map streams open in-process (the engine's real code path, without sockets), the time from a new
// node's registration until every stream has received the incremental update.

import Foundation
import Logging
import Synchronization
import TailscaleKeys
import WarrenControlServer
import WarrenControlStore
import WarrenPacket
import WarrenTailcfg

struct BenchGenerator: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }

func mapBuild(n: Int) throws {
    var generator = BenchGenerator(state: 1)
    var nodes: [Int64: ControlNode] = [:]
    for i in 1...n {
        var node = ControlNode(id: Int64(i), machineKey: MachinePrivate.generate(using: &generator).publicKey,
                               nodeKey: NodePrivate.generate(using: &generator).publicKey, userID: 1, hostname: "host\(i)",
                               givenName: "host\(i)", created: TailcfgTime(secondsSince1970: 1_800_000_000))
        node.ipv4 = .v4(0x6440_0000 + UInt32(i))
        node.ipv6 = .v6(0xFD7A_115C_A1E0_0000, UInt64(i))
        node.endpoints = [AddrPort("192.0.2.\(i % 250 + 1):41641")!]
        node.homeDERP = 900
        nodes[node.id] = node
    }
    let tailnet = TailnetSnapshot(nodes: nodes, users: [1: ControlUser(id: 1, name: "bench")], online: Set(nodes.keys))
    let builder = NetworkMapBuilder(configuration: ControlConfiguration(serverURL: "http://bench"))
    let clock = ContinuousClock()
    let me = nodes[1]!
    var best = Duration.seconds(1000), bestEncoded = Duration.seconds(1000)
    var bytes = 0, compressed = 0
    for _ in 0..<5 {
        let start = clock.now
        let map = builder.fullMap(for: me, in: tailnet, now: TailcfgTime(secondsSince1970: 1_900_000_000), omitPeers: false)
        let built = clock.now
        let json = try TailcfgJSON.encode(map)
        let z = try Zstd.compress(json)
        let done = clock.now
        best = min(best, built - start)
        bestEncoded = min(bestEncoded, done - start)
        bytes = json.count
        compressed = z.count
    }
    print(String(format: "N=%6d  full map: build %8.2f ms, build+JSON+zstd %8.2f ms, %d bytes JSON, %d bytes zstd",
                 n, seconds(best) * 1000, seconds(bestEncoded) * 1000, bytes, compressed))
}

func joinFanOut(n: Int) async throws {
    let store = MemoryControlStore()
    var configuration = ControlConfiguration(serverURL: "http://bench")
    configuration.keepAliveInterval = .seconds(3600)
    let directory = try StoreDirectory(store: store, ipv4Prefix: configuration.ipv4Prefix, ipv6Prefix: configuration.ipv6Prefix)
    var logger = Logger(label: "bench")
    logger.logLevel = .error
    let engine = ControlEngine(configuration: configuration, directory: directory, logger: logger)
    try await engine.load()
    let keyText = try await store.transaction { tx in
        let user = try tx.createUser(name: "bench", now: Date())
        var generator = SystemRandomNumberGenerator()
        return try tx.createPreAuthKey(userID: user.id, options: PreAuthKeyOptions(reusable: true), now: Date(), generator: &generator).text
    }
    var generator = BenchGenerator(state: 99)
    func register(_ name: String) async -> (MachinePublic, NodePublic) {
        let machine = MachinePrivate.generate(using: &generator).publicKey
        let node = NodePrivate.generate(using: &generator).publicKey
        var request = RegisterRequest()
        request.version = 130
        request.nodeKey = node
        request.auth = RegisterResponseAuth(authKey: keyText)
        var info = HostinfoFields()
        info.hostname = name
        request.hostinfo = Hostinfo(info)
        _ = await engine.register(request, machineKey: machine)
        return (machine, node)
    }
    // Every session is consumed from the start, as a real client would; each notes when it sees the newcomer.
    let newcomerName = "newcomer"
    final class Tally: Sendable {
        let arrivals = Mutex<[ContinuousClock.Instant]>([])
        let received = Mutex(0)
    }
    let tally = Tally()
    var consumers: [Task<Void, Never>] = []
    for i in 0..<n {
        let (machine, node) = await register("n\(i)")
        var request = MapRequest()
        request.version = 130
        request.nodeKey = node
        request.stream = true
        guard case .stream(let stream) = try await engine.map(request, machineKey: machine) else { fatalError("no stream") }
        consumers.append(Task {
            for await message in stream {
                tally.received.withLock { $0 += 1 }
                if message.peersChanged?.contains(where: { $0.name.hasPrefix(newcomerName + ".") }) == true {
                    let now = ContinuousClock.now
                    tally.arrivals.withLock { $0.append(now) }
                    return
                }
            }
        })
    }
    // Let the consumers catch up with the set-up traffic (N² messages) before timing one join.
    var last = -1
    while true {
        try await Task.sleep(for: .milliseconds(200))
        let now = tally.received.withLock { $0 }
        if now == last { break }
        last = now
    }
    let clock = ContinuousClock()
    let start = clock.now
    _ = await register(newcomerName)
    while tally.arrivals.withLock({ $0.count }) < n { try await Task.sleep(for: .milliseconds(1)) }
    let elapsed = (tally.arrivals.withLock { $0.max() } ?? start) - start
    for consumer in consumers { consumer.cancel() }
    print(String(format: "N=%6d  join fan-out: last of %d connected sessions got the PeersChanged after %8.2f ms",
                 n, n, seconds(elapsed) * 1000))
    exit(0)
}

let arguments = CommandLine.arguments.dropFirst().compactMap { Int($0) }
let sizes = arguments.isEmpty ? [1000, 10000] : arguments
for n in sizes { try mapBuild(n: n) }
try await joinFanOut(n: min(sizes.first ?? 1000, 1000))
