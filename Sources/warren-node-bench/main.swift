// warren-node-bench: what a node costs with many peers (run on demand; prints figures).
//
//   1. An in-process warren-control (engine + ts2021 server on loopback) gets N simulated peers: each
//      registers with a pre-auth key and reports a disco key and two endpoints (a lite map request),
//      as a real node would.
//   2. One WarrenNode (in-memory TUN and UDP twins, so that no device is needed) logs in and applies
//      the map with N peers: the process's RSS before and after (the node's share: the peers' network
//      map, magicsock's paths, the WireGuard device's peers), and the time from `up` to Running.
//   3. Idle: with the node running and nothing sent, the process's CPU time over a window.
//
// Usage: warren-node-bench [--peers 1000] [--idle-peers 100] [--idle-seconds 20]

import Foundation
import Logging
import TailscaleKeys
import WarrenControlClient
import WarrenControlServer
import WarrenControlStore
import WarrenLocalAPI
import WarrenNode
import WarrenPacket
import WarrenTailcfg
import WireGuardDevice

func argument(_ name: String, default value: Int) -> Int {
    let args = CommandLine.arguments
    guard let i = args.firstIndex(of: name), i + 1 < args.count, let v = Int(args[i + 1]) else { return value }
    return v
}

/// Resident set size and CPU seconds of this process (from /proc).
func processFigures() -> (rssMiB: Double, cpuSeconds: Double) {
    var rss = 0.0
    if let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
       let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) {
        rss = (Double(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) / 1024
    }
    var usage = rusage()
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
    let cpu = Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
    return (rss, cpu)
}

struct Control {
    let store: MemoryControlStore
    let engine: ControlEngine
    let server: ControlHTTPServer
    let url: String
    let port: Int
    let key: String
}

func startControl() async throws -> Control {
    var logger = Logger(label: "bench.control")
    logger.logLevel = .error
    var configuration = ControlConfiguration(serverURL: "http://127.0.0.1:0")
    configuration.baseDomain = "bench.warren"
    // Peers need a relay region in the map to be reachable at all; nothing connects to it here.
    var node = DERPNode(name: "900a", regionID: 900, hostName: "127.0.0.1")
    node.ipv4 = "127.0.0.1"
    node.derpPort = 9
    node.stunPort = -1
    configuration.derpMap = DERPMap(regions: [900: DERPRegion(regionID: 900, regionCode: "bench", regionName: "Bench", nodes: [node])])
    let store = MemoryControlStore()
    let directory = try StoreDirectory(store: store, ipv4Prefix: configuration.ipv4Prefix, ipv6Prefix: configuration.ipv6Prefix)
    let engine = ControlEngine(configuration: configuration, directory: directory, policy: AllowAllPolicy(), logger: logger)
    try await engine.load()
    var rng = SystemRandomNumberGenerator()
    let server = try await ControlHTTPServer.start(engine: engine, controlKey: .generate(using: &rng),
                                                   options: ControlServerOptions(host: "127.0.0.1", port: 0), logger: logger)
    let port = server.port!
    await engine.setServerURL("http://127.0.0.1:\(port)")
    let key = try await store.transaction { tx in
        let user = try tx.createUser(name: "bench@example.com", now: Date())
        var generator = SystemRandomNumberGenerator()
        return try tx.createPreAuthKey(userID: user.id, options: PreAuthKeyOptions(reusable: true), now: Date(), generator: &generator).text
    }
    return Control(store: store, engine: engine, server: server, url: "http://127.0.0.1:\(port)", port: port, key: key)
}

/// Registers `count` simulated peers, each with a disco key and two endpoints.
func addPeers(_ control: Control, count: Int, from first: Int) async throws {
    let keys = try await ControlClient.fetchKey(host: "127.0.0.1", port: control.port)
    var next = first
    while next < first + count {
        let batch = min(50, first + count - next)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in next..<(next + batch) {
                group.addTask {
                    let client = ControlClient(port: control.port, seed: UInt64(i) &* 7919 &+ 17)
                    try await client.connect(controlKey: keys.publicKey)
                    let reply = try await client.register(client.registerRequest(authKey: control.key, hostname: "peer-\(i)"))
                    guard reply.error.isEmpty else { throw ControlClientError(description: reply.error) }
                    let endpoints = [AddrPort(address: .v4(0xC633_6400 | UInt32(i & 0xFF)), port: 41641),
                                     AddrPort(address: .v4(0x0A00_0000 | UInt32(i)), port: 41641)]
                    let lite = try await client.post("/machine/map", json: try TailcfgJSON.encode(
                        client.mapRequest(stream: false, omitPeers: true, endpoints: endpoints, compress: false)))
                    _ = await lite.collect()
                    await client.close()
                }
            }
            try await group.waitForAll()
        }
        next += batch
    }
}

func runNode(_ control: Control, name: String) async throws -> (WarrenNode, Duration) {
    var logger = Logger(label: "bench.node")
    logger.logLevel = .error
    let directory = NSTemporaryDirectory() + "warren-node-bench-\(UUID().uuidString.prefix(8))"
    var options = NodeOptions(stateDirectory: directory)
    let network = MemoryNetwork()
    let bind = MemoryBind(network: network, address: IPAddress("10.200.0.1")!)
    options.port = 0
    options.makeTUN = { name, mtu in MemoryTUN(name: name, mtu: mtu) }
    options.makeBind = { bind }
    options.router = MemoryRouter()
    options.localAddresses = { [IPAddress("10.200.0.1")!] }
    options.stun = false
    let node = try WarrenNode(options: options, logger: logger)
    try await node.start()
    let started = ContinuousClock.now
    let reply = try await node.up(UpRequest(loginServer: control.url, authKey: control.key, hostname: name))
    guard reply.backendState == .running else { throw ControlClientError(description: "node is \(reply.backendState)") }
    return (node, ContinuousClock.now - started)
}

func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18 }

let peers = argument("--peers", default: 1000)
let idlePeers = argument("--idle-peers", default: 100)
let idleSeconds = argument("--idle-seconds", default: 20)

print("warren-node-bench: \(peers) peers for memory, \(idlePeers) peers idle for \(idleSeconds) s")

// Idle CPU with a small tailnet first (its own control server), then memory with the large one.
do {
    let control = try await startControl()
    try await addPeers(control, count: idlePeers, from: 0)
    let (node, upTime) = try await runNode(control, name: "idle")
    let peersInMap = await node.currentNetworkMap.peers.count
    try await Task.sleep(for: .seconds(2))
    let before = processFigures()
    try await Task.sleep(for: .seconds(idleSeconds))
    let after = processFigures()
    let cpu = after.cpuSeconds - before.cpuSeconds
    print(String(format: "idle: %d peers in the map (up in %.2f s); process CPU %.3f s over %d s = %.2f%% of one core (node, control server and its keep-alives together)",
                 peersInMap, seconds(upTime), cpu, idleSeconds, 100 * cpu / Double(idleSeconds)))
    await node.shutdown()
    await control.server.close()
}

do {
    let control = try await startControl()
    let t0 = ContinuousClock.now
    try await addPeers(control, count: peers, from: 100_000)
    print(String(format: "registered %d simulated peers in %.1f s", peers, seconds(ContinuousClock.now - t0)))
    // Let the allocator settle, then measure before and after the node joins.
    try await Task.sleep(for: .seconds(1))
    let before = processFigures()
    let (node, upTime) = try await runNode(control, name: "measured")
    let peersInMap = await node.currentNetworkMap.peers.count
    let devicePeers = node.wireGuardDevice.status().peers.count
    try await Task.sleep(for: .seconds(2))
    let after = processFigures()
    print(String(format: "memory: %d peers in the map, %d in the WireGuard device; up -> Running %.2f s; RSS %.1f -> %.1f MiB: +%.1f MiB for the node (%.1f KiB a peer)",
                 peersInMap, devicePeers, seconds(upTime), before.rssMiB, after.rssMiB, after.rssMiB - before.rssMiB,
                 (after.rssMiB - before.rssMiB) * 1024 / Double(max(1, peersInMap))))
    await node.shutdown()
    await control.server.close()
}
