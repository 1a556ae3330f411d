// warren-control-bench: figures for the coordination server, run on demand (not a test).
//
//   1. map build: one node's full map in a tailnet of N nodes (default 1,000 and 10,000), built by
//      NetworkMapBuilder, then JSON-encoded and zstd-compressed, three ways: Foundation's JSONEncoder
//      (the Codable path, for comparison), the hand-written writer, and the writer with the shared
//      peer cache (MapMessageEncoder, what the stream writer uses), each viewer a different node.
//   2. join fan-out: a server in a child process (this program with --server-child), N simulated
//      clients in further child processes (--client-child, a share of the clients each), each client speaking
//      the real protocol over loopback (ts2021 Noise + HTTP/2, register, streaming map with zstd). The
//      parent only steers them (a line protocol on their stdin and stdout) and keeps the clock, so the
//      server's RSS and CPU are its own and the clients' are theirs. Then nodes join, and each connected
//      client notes when the PeersChanged for the newcomer arrives: p50 and max from the register request
//      to the arrival (CLOCK_MONOTONIC, the same in every process).
//   3. server memory: the child's RSS before, after N registrations, and with N map streams open, with the
//      server's own account of where it goes (ServerChild.swift).
//
// Usage: warren-control-bench [--map-sizes 1000,10000] [--sessions 1000,10000] [--joins 5] [--skip-map] [--skip-fanout]
//                             [--no-compress] [--zstd-level 1] [--client-processes 4] [--stores memory,sqlite,postgres]
//                             [--policy allow-all|none]

import Foundation
import Logging
import NIOCore
import NIOPosix
import Synchronization
import TailscaleKeys
import WarrenControlClient
import WarrenControlServer
import WarrenControlStore
import WarrenControlTransport
import WarrenPacket
import WarrenTailcfg

// MARK: Options

struct Options {
    var mapSizes = [1_000, 10_000]
    var sessions = [1_000]
    var joins = 5
    var skipMap = false
    var skipFanout = false
    var serverChild = false
    var clientChild = false
    var compress = true
    var zstdLevel = MapStreamFraming.compressionLevel
    /// Processes the simulated clients are spread over (at most one per 100 clients).
    var clientProcesses = 4
    /// The stores to run the fan-out on (each a row of the table): memory, sqlite, postgres, postgres2 (two instances).
    var stores = ["memory"]
    /// The server's policy: "none" is what `warren-control serve` runs without a policy file (CompiledPolicy with no
    /// policy), "allow-all" the engine's default (AllowAllPolicy).
    var policy = "none"
    // Children: where the server is, and which clients a client child runs.
    var port = 0
    var controlKey = ""
    var authKey = ""
    var first = 0
    var count = 0
    /// The server child's store: "memory", or "sqlite:<path>", or "postgres:<host>:<port>:<database>:<user>:<password>".
    var store = "memory"

    init(_ arguments: [String]) {
        var i = 0
        func value() -> String {
            i += 1
            guard i < arguments.count else { fail("missing value after \(arguments[i - 1])") }
            return arguments[i]
        }
        while i < arguments.count {
            switch arguments[i] {
            case "--map-sizes": mapSizes = value().split(separator: ",").compactMap { Int($0) }
            case "--sessions": sessions = value().split(separator: ",").compactMap { Int($0) }
            case "--joins": joins = Int(value()) ?? joins
            case "--skip-map": skipMap = true
            case "--skip-fanout": skipFanout = true
            case "--no-compress": compress = false
            case "--zstd-level": zstdLevel = Int32(value()) ?? zstdLevel
            case "--server-child": serverChild = true
            case "--client-child": clientChild = true
            case "--client-processes": clientProcesses = max(1, Int(value()) ?? clientProcesses)
            case "--stores": stores = value().split(separator: ",").map(String.init)
            case "--policy": policy = value()
            case "--port": port = Int(value()) ?? 0
            case "--control-key": controlKey = value()
            case "--auth-key": authKey = value()
            case "--first": first = Int(value()) ?? 0
            case "--count": count = Int(value()) ?? 0
            case "--store": store = value()
            case "-h", "--help":
                print("usage: warren-control-bench [--map-sizes 1000,10000] [--sessions 1000,10000] [--joins 5] "
                      + "[--skip-map] [--skip-fanout] [--no-compress] [--zstd-level 1] [--client-processes 4] "
                      + "[--stores memory,sqlite,postgres,postgres2] [--policy none|allow-all]")
                exit(0)
            default: fail("unknown argument \(arguments[i])")
            }
            i += 1
        }
    }
}

func fail(_ text: String) -> Never {
    FileHandle.standardError.write(Data("warren-control-bench: \(text)\n".utf8))
    exit(2)
}

func milliseconds(_ d: Duration) -> Double {
    let (s, a) = d.components
    return Double(s) * 1e3 + Double(a) / 1e15
}

func format(_ ms: Double) -> String { String(format: "%.2f ms", ms) }

func pad(_ text: String, _ width: Int) -> String { text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count) }

func percentile(_ sorted: [Double], _ p: Double) -> Double {
    guard !sorted.isEmpty else { return .nan }
    let index = min(sorted.count - 1, max(0, Int((p * Double(sorted.count)).rounded(.up)) - 1))
    return sorted[index]
}

// MARK: 1. Map build

/// A tailnet of `count` nodes that look like real ones (keys, addresses, endpoints, host details).
func syntheticTailnet(count: Int, users: Int = 10) -> TailnetSnapshot {
    var generator = SeededKeyGenerator(seed: 42)
    let created = TailcfgTime(secondsSince1970: 1_750_000_000, nanoseconds: 0)
    var nodes = [Int64: ControlNode]()
    nodes.reserveCapacity(count)
    for i in 1...count {
        let id = Int64(i)
        var node = ControlNode(id: id, machineKey: MachinePrivate.generate(using: &generator).publicKey,
                               nodeKey: NodePrivate.generate(using: &generator).publicKey, userID: Int64(i % users + 1),
                               hostname: "host-\(i)", givenName: "host-\(i)", created: created)
        node.discoKey = DiscoPublic(raw: MachinePrivate.generate(using: &generator).publicKey.raw)
        node.ipv4 = .v4(0x6440_0000 &+ UInt32(i))
        node.ipv6 = .v6(0xfd7a_115c_a1e0_0000, UInt64(i))
        node.endpoints = [AddrPort(address: .v4(0xC000_0200 &+ UInt32(i % 250)), port: 41641),
                          AddrPort(address: .v4(0x0A00_0000 &+ UInt32(i)), port: 41641)]
        node.homeDERP = 900
        node.capabilityVersion = 130
        var info = HostinfoFields()
        info.hostname = "host-\(i)"
        info.os = "linux"
        node.hostinfo = Hostinfo(info)
        nodes[id] = node
    }
    var userMap = [Int64: ControlUser]()
    for u in 1...users { userMap[Int64(u)] = ControlUser(id: Int64(u), name: "user\(u)") }
    return TailnetSnapshot(nodes: nodes, users: userMap, online: Set(nodes.keys))
}

func benchMapBuild(sizes: [Int], zstdLevel: Int32) throws {
    print("== full map for one node (zstd level \(zstdLevel))")
    print("   nodes     path                  build        encode       zstd         total        JSON bytes  zstd bytes")
    let clock = ContinuousClock()
    for n in sizes {
        let tailnet = syntheticTailnet(count: n)
        let builder = NetworkMapBuilder(configuration: ControlConfiguration(serverURL: "http://127.0.0.1:8080"))
        let now = TailcfgTime(secondsSince1970: 1_760_000_000, nanoseconds: 0)
        let rounds = n >= 10_000 ? 7 : 21
        // The server's shared encoder: warmed by the first map, then each round is a different viewer
        // (whose peers are the previous viewers' peers, as when a tailnet's nodes connect one by one).
        let shared = MapMessageEncoder()
        enum Path: CaseIterable { case foundation, writer, cached }
        var identical = true
        for path in Path.allCases {
            var builds = [Double](), encodes = [Double](), compresses = [Double](), totals = [Double]()
            var jsonBytes = 0, zstdBytes = 0
            if path == .cached, let first = tailnet.nodes[Int64(n)] {
                _ = try shared.encode(builder.fullMap(for: first, in: tailnet, now: now, omitPeers: false))
            }
            for round in 0..<rounds {
                guard let me = tailnet.nodes[Int64(1 + round % n)] else { continue }
                let t0 = clock.now
                let map = builder.fullMap(for: me, in: tailnet, now: now, omitPeers: false)
                let t1 = clock.now
                let json: [UInt8]
                switch path {
                case .foundation: json = try TailcfgJSON.encode(map)
                case .writer: json = try TailcfgJSON.write(map)
                case .cached: json = try shared.encode(map)
                }
                let t2 = clock.now
                let compressed = try Zstd.compress(json, level: zstdLevel)
                let t3 = clock.now
                builds.append(milliseconds(t1 - t0))
                encodes.append(milliseconds(t2 - t1))
                compresses.append(milliseconds(t3 - t2))
                totals.append(milliseconds(t3 - t0))
                jsonBytes = json.count
                zstdBytes = compressed.count
                if path != .foundation && round == 0 { identical = try identical && json == TailcfgJSON.encode(map) }
            }
            let name = switch path {
            case .foundation: "JSONEncoder"
            case .writer: "writer"
            case .cached: "writer + peer cache"
            }
            let median = { (v: [Double]) in percentile(v.sorted(), 0.5) }
            print("   " + pad("\(n)", 10) + pad(name, 22) + pad(format(median(builds)), 13) + pad(format(median(encodes)), 13)
                  + pad(format(median(compresses)), 13) + pad(format(median(totals)), 13) + pad("\(jsonBytes)", 12) + "\(zstdBytes)")
        }
        let stats = shared.statistics
        print("   " + pad("", 10) + "writer output identical to JSONEncoder: \(identical ? "yes" : "NO"); "
              + "peer cache hits \(stats.peerHits), misses \(stats.peerMisses)")
    }
    print("   (median of 21 rounds; 7 at 10,000)")
    // What a stream's full map costs the server now: the plan from the engine's shared peer entries, then the writer's
    // encoding with runs of 256 peers compressed once for all viewers (zstd frames), each round a different viewer.
    print("   nodes     shared entries + zstd runs: plan        frame (JSON + zstd)   total        bytes sent")
    for n in sizes {
        let tailnet = syntheticTailnet(count: n)
        let builder = NetworkMapBuilder(configuration: ControlConfiguration(serverURL: "http://127.0.0.1:8080"))
        let now = TailcfgTime(secondsSince1970: 1_760_000_000, nanoseconds: 0)
        let cache = PeerCache(trustsRecords: true), encoder = MapMessageEncoder()
        var plans = [Double](), frames = [Double](), bytes = 0
        for round in 0..<41 {
            guard let me = tailnet.nodes[Int64(1 + (round * 997) % n)] else { continue }
            let t0 = clock.now
            let (map, peers) = builder.fullMapPlan(for: me, in: tailnet, now: now, omitPeers: false, cache: cache)
            let t1 = clock.now
            let framed = try encoder.frameFullMap(map, peers: peers ?? [], compress: true)
            let t2 = clock.now
            // The first round fills the caches.
            if round > 0 {
                plans.append(milliseconds(t1 - t0))
                frames.append(milliseconds(t2 - t1))
            }
            bytes = framed.count
        }
        let median = { (v: [Double]) in percentile(v.sorted(), 0.5) }
        print("   " + pad("\(n)", 10) + pad("", 28) + pad(format(median(plans)), 12) + pad(format(median(frames)), 22)
              + pad(format(median(plans) + median(frames)), 13) + "\(bytes)")
    }
    print("   (median of 40 warm rounds; the cache trusts its entries, as the engine's does: the tailnet does not change)")
}

// MARK: Main

let options = Options(Array(CommandLine.arguments.dropFirst()))
if options.serverChild {
    try await runServerChild(options)
} else if options.clientChild {
    await runClientChild(options)
} else {
    print("warren-control-bench (\(ProcessInfo.processInfo.activeProcessorCount) cores)")
    if !options.skipMap { try benchMapBuild(sizes: options.mapSizes, zstdLevel: options.zstdLevel) }
    if !options.skipFanout {
        startWatchdog()
        var rows = [FanoutRow]()
        for store in options.stores {
            for n in options.sessions {
                var o = options
                o.store = store
                rows.append(try await benchFanout(sessions: n, joins: options.joins, compress: options.compress, options: o))
                fflush(nil)
            }
        }
        stopPostgres()
        printTable(rows)
    }
}
