// warren-control-bench: figures for the coordination server, run on demand (not a test).
//
//   1. map build: one node's full map in a tailnet of N nodes (default 1,000 and 10,000), built by
//      NetworkMapBuilder, then JSON-encoded and zstd-compressed, three ways: Foundation's JSONEncoder
//      (the Codable path, for comparison), the hand-written writer, and the writer with the shared
//      peer cache (MapMessageEncoder, what the stream writer uses), each viewer a different node.
//   2. join fan-out: a server in a child process (this program with --server-child), N simulated
//      clients in this one, each speaking the real protocol over loopback (ts2021 Noise + HTTP/2,
//      register, streaming map with zstd). Then nodes join, and each connected client notes when the
//      PeersChanged for the newcomer arrives: p50 and max from the register request to the arrival.
//   3. server memory: the child's RSS before, after N registrations, and with N map streams open.
//
// Usage: warren-control-bench [--map-sizes 1000,10000] [--sessions 1000] [--joins 5] [--skip-map] [--skip-fanout]
//                             [--no-compress] [--zstd-level 1]

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
    var sessions = 1_000
    var joins = 5
    var skipMap = false
    var skipFanout = false
    var serverChild = false
    var compress = true
    var zstdLevel = MapStreamFraming.compressionLevel

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
            case "--sessions": sessions = Int(value()) ?? sessions
            case "--joins": joins = Int(value()) ?? joins
            case "--skip-map": skipMap = true
            case "--skip-fanout": skipFanout = true
            case "--no-compress": compress = false
            case "--zstd-level": zstdLevel = Int32(value()) ?? zstdLevel
            case "--server-child": serverChild = true
            case "-h", "--help":
                print("usage: warren-control-bench [--map-sizes 1000,10000] [--sessions 1000] [--joins 5] "
                      + "[--skip-map] [--skip-fanout] [--no-compress] [--zstd-level 1]")
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
}

// MARK: 2. The server child

func runServerChild() async throws {
    var logger = Logger(label: "bench.server")
    logger.logLevel = .error
    let configuration = ControlConfiguration(serverURL: "http://127.0.0.1:0")
    let store = MemoryControlStore()
    let directory = try StoreDirectory(store: store, ipv4Prefix: configuration.ipv4Prefix, ipv6Prefix: configuration.ipv6Prefix)
    let engine = ControlEngine(configuration: configuration, directory: directory, logger: logger)
    try await engine.load()
    var generator = SystemRandomNumberGenerator()
    let controlKey = MachinePrivate.generate(using: &generator)
    let server = try await ControlHTTPServer.start(engine: engine, controlKey: controlKey,
                                                   options: ControlServerOptions(host: "127.0.0.1", port: 0), logger: logger)
    let authKey = try await store.transaction { tx in
        let owner = try tx.createUser(name: "bench", now: Date())
        var random = SystemRandomNumberGenerator()
        return try tx.createPreAuthKey(userID: owner.id, options: PreAuthKeyOptions(reusable: true), now: Date(),
                                       generator: &random).text
    }
    print("READY \(server.port ?? 0) \(controlKey.publicKey) \(authKey)")
    fflush(nil)
    // The parent closes our stdin when it is done (or dies).
    Thread.detachNewThread {
        _ = FileHandle.standardInput.readDataToEndOfFile()
        exit(0)
    }
    try await server.run()
}

// MARK: 3. Fan-out over the real protocol

/// The few fields of a map message the benchmark looks at. Decoding whole messages (a full map of 1,000
/// peers is 720 KB of JSON) in this one process would cost more than the server's work being measured.
struct MapProbe: Decodable {
    struct KeyOnly: Decodable {
        var key: NodePublic?
        enum CodingKeys: String, CodingKey { case key = "Key" }
    }

    var isFullMap: Bool
    var isKeepAlive: Bool
    var changedKeys: [NodePublic]
    var patches: Int

    enum CodingKeys: String, CodingKey {
        case peers = "Peers", peersChanged = "PeersChanged", peersChangedPatch = "PeersChangedPatch"
        case keepAlive = "KeepAlive"
    }

    struct Skip: Decodable { init(from decoder: any Decoder) throws {} }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        isFullMap = c.contains(.peers)
        isKeepAlive = try c.decodeIfPresent(Bool.self, forKey: .keepAlive) ?? false
        changedKeys = try c.decodeIfPresent([KeyOnly].self, forKey: .peersChanged)?.compactMap(\.key) ?? []
        patches = try c.decodeIfPresent([Skip].self, forKey: .peersChangedPatch)?.count ?? 0
    }
}

/// What the simulated clients saw, shared by their reader tasks.
final class Observations: Sendable {
    struct State {
        /// Messages other than keep-alives.
        var messages = 0
        var keepAlives = 0
        var fullMaps = 0
        var patches = 0
        var streamsAnswered = 0
        var target: NodePublic?
        var start = ContinuousClock.now
        var arrivals: [Double] = []
    }
    let state = Mutex(State())

    func saw(_ json: [UInt8]) throws {
        let message = try TailcfgJSON.decode(MapProbe.self, from: json)
        let now = ContinuousClock.now
        state.withLock { s in
            // Keep-alives come every 55 s from each stream, staggered: with 1,000 streams there is no quiet
            // time at all, so they must not count as traffic when waiting for the tailnet to settle.
            if message.isKeepAlive {
                s.keepAlives += 1
                return
            }
            s.messages += 1
            s.patches += message.patches
            if message.isFullMap { s.fullMaps += 1 }
            if let target = s.target, message.changedKeys.contains(target) {
                s.arrivals.append(milliseconds(now - s.start))
            }
        }
    }
}

struct ProcessFigures {
    var rssKiB: Int
    var cpuSeconds: Double
}

func figures(pid: Int32) -> ProcessFigures {
    var rss = 0
    if let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) {
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            rss = Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
        }
    }
    var cpu = 0.0
    if let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
       let close = stat.lastIndex(of: ")") {
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After the command: state is field 3; utime and stime are fields 14 and 15.
        if fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) {
            cpu = (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
        }
    }
    return ProcessFigures(rssKiB: rss, cpuSeconds: cpu)
}

/// Runs `body` for 0..<count with at most `width` at a time.
func concurrently(_ count: Int, width: Int, _ body: @escaping @Sendable (Int) async throws -> Void) async throws {
    try await withThrowingTaskGroup(of: Void.self) { group in
        var next = 0
        while next < min(width, count) {
            let i = next
            group.addTask { try await body(i) }
            next += 1
        }
        while try await group.next() != nil {
            if next < count {
                let i = next
                group.addTask { try await body(i) }
                next += 1
            }
        }
    }
}

/// Where the benchmark is, for the watchdog.
let phase = Mutex<(name: String, steps: Int)>(("start", 0))

func enter(_ name: String) { phase.withLock { $0 = (name, 0) } }
func step() { phase.withLock { $0.steps += 1 } }

/// A plain thread (not a task): if the phase and its step count stay the same for 60 s, says so. (Loops
/// that go on stepping without end show in the progress lines instead.)
func startWatchdog() {
    Thread.detachNewThread {
        var last = phase.withLock { $0 }
        var still = 0
        while true {
            Thread.sleep(forTimeInterval: 10)
            let now = phase.withLock { $0 }
            if now == last { still += 10 } else { still = 0 }
            last = now
            if still >= 60 && still % 60 == 0 {
                FileHandle.standardError.write(Data("warren-control-bench: no progress for \(still) s in \(now.name) (step \(now.steps))\n".utf8))
            }
        }
    }
}

/// Waits until no client has received anything but keep-alives for `quiet`.
func settle(_ observations: Observations, quiet: Duration = .milliseconds(700)) async throws {
    var last = -1
    while true {
        let now = observations.state.withLock { $0.messages }
        if now == last { return }
        last = now
        step()
        try await Task.sleep(for: quiet)
    }
}

func benchFanout(sessions: Int, joins: Int, compress: Bool) async throws {
    print("== join fan-out over the real protocol (\(sessions) map sessions, zstd \(compress ? "on" : "off"))")
    startWatchdog()
    let child = Process()
    child.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
    child.arguments = ["--server-child"]
    let output = Pipe(), input = Pipe()
    child.standardOutput = output
    child.standardInput = input
    try child.run()
    defer {
        try? input.fileHandleForWriting.close()
        child.waitUntilExit()
    }
    // READY <port> <control key> <pre-auth key>
    var line = [UInt8]()
    while true {
        let byte = output.fileHandleForReading.readData(ofLength: 1)
        guard let b = byte.first else { fail("the server child exited before it was ready") }
        if b == UInt8(ascii: "\n") { break }
        line.append(b)
    }
    let words = String(decoding: line, as: UTF8.self).split(separator: " ").map(String.init)
    guard words.count == 4, words[0] == "READY", let port = Int(words[1]),
          let controlKey = try? MachinePublic(parsing: words[2]) else { fail("unexpected child output: \(words)") }
    let authKey = words[3]
    let pid = child.processIdentifier
    try await Task.sleep(for: .milliseconds(300))
    let idle = figures(pid: pid)
    print(String(format: "   server idle: RSS %.1f MiB", Double(idle.rssKiB) / 1024))

    let clock = ContinuousClock()
    let observations = Observations()
    let clients = (0..<sessions).map { ControlClient(port: port, seed: UInt64($0 + 1)) }

    enter("registering")
    // Register everyone first (nobody is streaming yet, so there is nothing to fan out).
    var t = clock.now
    try await concurrently(sessions, width: 32) { i in
        let c = clients[i]
        try await c.connect(controlKey: controlKey)
        let r = try await c.register(c.registerRequest(authKey: authKey, hostname: "sim-\(i)"))
        guard r.error.isEmpty else { throw ControlClientError(description: "register: \(r.error)") }
    }
    let registered = figures(pid: pid)
    print(String(format: "   %d nodes registered in %.2f s; server RSS %.1f MiB (+%.1f KiB a node), server CPU %.2f s",
                 sessions, milliseconds(clock.now - t) / 1000, Double(registered.rssKiB) / 1024,
                 Double(registered.rssKiB - idle.rssKiB) / Double(sessions), registered.cpuSeconds - idle.cpuSeconds))

    // Open every map stream; each one's arrival is sent to the others as an online patch.
    t = clock.now
    enter("opening streams")
    let readers = Mutex<[Task<Void, Never>]>([])
    let opening = Task { try await concurrently(sessions, width: 32) { i in
        let c = clients[i]
        let (status, messages) = try await c.mapBodies(c.mapRequest(stream: true, compress: compress))
        guard status == 200 else { throw ControlClientError(description: "map: HTTP \(status)") }
        observations.state.withLock { $0.streamsAnswered += 1 }
        step()
        let reader = Task {
            do {
                for try await message in messages { try observations.saw(message) }
            } catch {
                FileHandle.standardError.write(Data("client \(i): \(error)\n".utf8))
            }
        }
        readers.withLock { $0.append(reader) }
    } }
    // Progress every 10 s while they open (a stall shows where it is).
    let openingStart = t
    let progress = Task {
        while !Task.isCancelled {
            try await Task.sleep(for: .seconds(10))
            let (answered, full, messages) = observations.state.withLock { ($0.streamsAnswered, $0.fullMaps, $0.messages) }
            print(String(format: "   ... %.0f s: %d streams answered, %d full maps, %d messages; server CPU %.1f s",
                         milliseconds(clock.now - openingStart) / 1000, answered, full, messages, figures(pid: pid).cpuSeconds))
        }
    }
    try await opening.value
    enter("waiting for the last full maps")
    while observations.state.withLock({ $0.fullMaps }) < sessions {
        step()
        try await Task.sleep(for: .milliseconds(50))
    }
    let streamsOpen = clock.now - t
    progress.cancel()
    enter("settling")
    try await settle(observations)
    let connected = figures(pid: pid)
    let (messages, patches, keepAlives) = observations.state.withLock { ($0.messages, $0.patches, $0.keepAlives) }
    print(String(format: "   %d map streams opened in %.2f s (every full map received); %d messages delivered in all "
                 + "(and %d keep-alives), carrying %d peer patches (N(N-1)/2 = %d online changes were sent)",
                 sessions, milliseconds(streamsOpen) / 1000, messages, keepAlives, patches, sessions * (sessions - 1) / 2))
    print(String(format: "   server with %d streams: RSS %.1f MiB; memory per node %.1f KiB (RSS delta from idle / N); "
                 + "server CPU for opening them %.2f s", sessions, Double(connected.rssKiB) / 1024,
                 Double(connected.rssKiB - idle.rssKiB) / Double(sessions), connected.cpuSeconds - registered.cpuSeconds))

    // Joins: from the register request until every connected client holds the PeersChanged.
    print("   join  register reply  p50          p90          max          server CPU")
    var maxima = [Double]()
    for j in 0..<joins {
        enter("join \(j + 1)")
        let joiner = ControlClient(port: port, seed: UInt64(1_000_000 + j))
        try await joiner.connect(controlKey: controlKey)
        let before = figures(pid: pid)
        let start = clock.now
        observations.state.withLock { s in
            s.target = joiner.nodeKey.publicKey
            s.start = start
            s.arrivals = []
        }
        let reply = try await joiner.register(joiner.registerRequest(authKey: authKey, hostname: "joiner-\(j)"))
        let replied = milliseconds(clock.now - start)
        guard reply.error.isEmpty else { fail("join: \(reply.error)") }
        let deadline = clock.now + .seconds(60)
        while observations.state.withLock({ $0.arrivals.count }) < sessions && clock.now < deadline {
            try await Task.sleep(for: .milliseconds(5))
        }
        let arrivals = observations.state.withLock { $0.arrivals }.sorted()
        let after = figures(pid: pid)
        if arrivals.count < sessions { print("   (join \(j + 1): only \(arrivals.count) of \(sessions) clients heard of it within 60 s)") }
        maxima.append(arrivals.last ?? .nan)
        print("   " + pad("\(j + 1)", 6) + pad(format(replied), 16) + pad(format(percentile(arrivals, 0.5)), 13)
              + pad(format(percentile(arrivals, 0.9)), 13) + pad(format(arrivals.last ?? .nan), 13)
              + String(format: "%.2f s", after.cpuSeconds - before.cpuSeconds))
        try await settle(observations, quiet: .milliseconds(300))
        await joiner.close()
        try await settle(observations, quiet: .milliseconds(300))
    }
    print("   worst join: every one of \(sessions) nodes had it after \(format(maxima.max() ?? .nan))")

    for reader in readers.withLock({ $0 }) { reader.cancel() }
    for c in clients { await c.close() }
}

// MARK: Main

let options = Options(Array(CommandLine.arguments.dropFirst()))
if options.serverChild {
    try await runServerChild()
} else {
    print("warren-control-bench (\(ProcessInfo.processInfo.activeProcessorCount) cores)")
    if !options.skipMap { try benchMapBuild(sizes: options.mapSizes, zstdLevel: options.zstdLevel) }
    if !options.skipFanout { try await benchFanout(sessions: options.sessions, joins: options.joins, compress: options.compress) }
}
