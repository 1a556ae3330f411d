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
// Usage: warren-control-bench [--map-sizes 1000,10000] [--sessions 1000,10000] [--joins 5] [--skip-map] [--skip-fanout]
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
    var sessions = [1_000]
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
            case "--sessions": sessions = value().split(separator: ",").compactMap { Int($0) }
            case "--joins": joins = Int(value()) ?? joins
            case "--skip-map": skipMap = true
            case "--skip-fanout": skipFanout = true
            case "--no-compress": compress = false
            case "--zstd-level": zstdLevel = Int32(value()) ?? zstdLevel
            case "--server-child": serverChild = true
            case "-h", "--help":
                print("usage: warren-control-bench [--map-sizes 1000,10000] [--sessions 1000,10000] [--joins 5] "
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

/// How often `needle` occurs in `haystack` (memchr and memcmp: the clients scan messages, they do not parse them).
func occurrences(of needle: [UInt8], in haystack: [UInt8], limit: Int = .max) -> Int {
    let n = needle.count
    guard n > 0, haystack.count >= n else { return 0 }
    var count = 0
    haystack.withUnsafeBytes { h in
        needle.withUnsafeBytes { k in
            guard let base = h.baseAddress, let key = k.baseAddress else { return }
            var offset = 0
            while count < limit, offset + n <= h.count {
                guard let hit = memchr(base + offset, Int32(needle[0]), h.count - offset - n + 1) else { return }
                let position = base.distance(to: UnsafeRawPointer(hit))
                if memcmp(hit, key, n) == 0 {
                    count += 1
                    offset = position + n
                } else {
                    offset = position + 1
                }
            }
        }
    }
    return count
}

/// What the simulated clients saw, shared by their reader tasks. The clients run in this one process beside
/// 10,000 others, so they do as little as a client can: the first message of a stream is its full map (the
/// server always sends that first) and is only counted, with its compressed size; later messages are
/// decompressed and scanned for the few markers the benchmark needs (a JSON decoder on every message would cost
/// more than the server's work being measured).
final class Observations: Sendable {
    struct State {
        /// Messages other than keep-alives.
        var messages = 0
        var keepAlives = 0
        var fullMaps = 0
        var fullMapBytes = 0
        var patches = 0
        var onlineTrue = 0
        var streamsAnswered = 0
        var target: [UInt8]?
        var start = ContinuousClock.now
        var arrivals: [Double] = []
    }
    let state = Mutex(State())

    static let keepAlive = Array("\"KeepAlive\":true".utf8)
    static let peersChanged = Array("\"PeersChanged\":[".utf8)
    static let nodeID = Array("\"NodeID\":".utf8)
    static let online = Array("\"Online\":true".utf8)

    func sawFullMap(compressedBytes: Int) {
        state.withLock { s in
            s.messages += 1
            s.fullMaps += 1
            s.fullMapBytes += compressedBytes
        }
    }

    func saw(_ json: [UInt8]) {
        if json.count < 64, occurrences(of: Self.keepAlive, in: json, limit: 1) > 0 {
            state.withLock { $0.keepAlives += 1 }
            return
        }
        let target = state.withLock { $0.target }
        var hit = false
        if let target, occurrences(of: Self.peersChanged, in: json, limit: 1) > 0 {
            hit = occurrences(of: target, in: json, limit: 1) > 0
        }
        let patches = occurrences(of: Self.nodeID, in: json)
        let online = occurrences(of: Self.online, in: json)
        let now = ContinuousClock.now
        state.withLock { s in
            s.messages += 1
            s.patches += patches
            s.onlineTrue += online
            if hit { s.arrivals.append(milliseconds(now - s.start)) }
        }
    }
}

/// One client's map stream as raw message bodies (still compressed when the stream is).
func rawMapBodies(_ c: ControlClient, _ request: MapRequest) async throws -> (status: Int, bodies: AsyncThrowingStream<[UInt8], Error>) {
    let response = try await c.post("/machine/map", json: try TailcfgJSON.encode(request))
    let bodies = AsyncThrowingStream<[UInt8], Error> { continuation in
        let task = Task {
            var decoder = MapStreamDecoder()
            for await chunk in response.body {
                decoder.append(chunk)
                do {
                    while case .message(let body) = try decoder.parseStep() { continuation.yield(body) }
                } catch {
                    continuation.finish(throwing: error)
                    return
                }
            }
            continuation.finish()
        }
        continuation.onTermination = { _ in task.cancel() }
    }
    return (response.status, bodies)
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

/// One row of the closing table.
struct FanoutRow {
    var sessions = 0
    /// Where the server keeps the tailnet, and how many instances serve it (the table's seam for PostgreSQL
    /// and two instances: this benchmark runs one instance on the memory store).
    var store = "memory"
    var instances = 1
    var openSeconds = Double.nan
    var openCPUSeconds = Double.nan
    var messages = 0
    var patches = 0
    var joinP50 = Double.nan
    var joinMax = Double.nan
    var rssPerNodeKiB = Double.nan
    var registerKiBPerNode = Double.nan
}

func benchFanout(sessions: Int, joins: Int, compress: Bool) async throws -> FanoutRow {
    var row = FanoutRow()
    row.sessions = sessions
    print("== join fan-out over the real protocol (\(sessions) map sessions, zstd \(compress ? "on" : "off"))")
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
    // Register everyone first, and tell the server each node's disco key and endpoints with a one-shot (lite)
    // map request: nobody is streaming yet, so nothing fans out. The streams opened next then change nothing
    // but the nodes' being online, as when every client reconnects after a restart of the server.
    var t = clock.now
    try await concurrently(sessions, width: 32) { i in
        let c = clients[i]
        try await c.connect(controlKey: controlKey)
        let r = try await c.register(c.registerRequest(authKey: authKey, hostname: "sim-\(i)"))
        guard r.error.isEmpty else { throw ControlClientError(description: "register: \(r.error)") }
        let endpoint = AddrPort(address: .v4(0xC633_6400 &+ UInt32(i)), port: 41641)
        let lite = try await c.post("/machine/map", json: TailcfgJSON.encode(c.mapRequest(stream: false, omitPeers: true,
                                                                                          endpoints: [endpoint], compress: compress)))
        _ = await lite.collect()
        guard lite.status == 200 else { throw ControlClientError(description: "lite map: HTTP \(lite.status)") }
        step()
    }
    let registered = figures(pid: pid)
    row.registerKiBPerNode = Double(registered.rssKiB - idle.rssKiB) / Double(sessions)
    print(String(format: "   %d nodes registered in %.2f s; server RSS %.1f MiB (+%.1f KiB a node), server CPU %.2f s",
                 sessions, milliseconds(clock.now - t) / 1000, Double(registered.rssKiB) / 1024,
                 row.registerKiBPerNode, registered.cpuSeconds - idle.cpuSeconds))

    // Open every map stream at once (as many requests in flight as there are clients).
    t = clock.now
    enter("opening streams")
    let readers = Mutex<[Task<Void, Never>]>([])
    let opening = Task { try await concurrently(sessions, width: sessions) { i in
        let c = clients[i]
        let (status, bodies) = try await rawMapBodies(c, c.mapRequest(stream: true, compress: compress))
        guard status == 200 else { throw ControlClientError(description: "map: HTTP \(status)") }
        observations.state.withLock { $0.streamsAnswered += 1 }
        step()
        let reader = Task {
            do {
                var first = true
                for try await body in bodies {
                    if first {
                        first = false
                        observations.sawFullMap(compressedBytes: body.count)
                        continue
                    }
                    observations.saw(compress ? try Zstd.decompress(body, maximumSize: 256 << 20) : body)
                }
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
            fflush(nil)
        }
    }
    try await opening.value
    enter("waiting for the last full maps")
    while observations.state.withLock({ $0.fullMaps }) < sessions {
        step()
        try await Task.sleep(for: .milliseconds(20))
    }
    let streamsOpen = clock.now - t
    let allMaps = figures(pid: pid)
    progress.cancel()
    enter("settling")
    try await settle(observations)
    let connected = figures(pid: pid)
    let (messages, patches, online, keepAlives, mapBytes) = observations.state.withLock {
        ($0.messages, $0.patches, $0.onlineTrue, $0.keepAlives, $0.fullMapBytes)
    }
    row.openSeconds = milliseconds(streamsOpen) / 1000
    row.openCPUSeconds = allMaps.cpuSeconds - registered.cpuSeconds
    row.messages = messages
    row.patches = patches
    row.rssPerNodeKiB = Double(connected.rssKiB - idle.rssKiB) / Double(sessions)
    print(String(format: "   %d map streams opened in %.2f s (every full map received, %.1f MiB of them compressed); server CPU %.2f s",
                 sessions, row.openSeconds, Double(mapBytes) / 1048576, row.openCPUSeconds))
    print("   \(messages) messages delivered in all (\(sessions) full maps, and \(keepAlives) keep-alives), carrying \(patches) peer "
          + "patches, \(online) of them online (one patch per pair would be N(N-1)/2 = \(sessions * (sessions - 1) / 2))")
    print(String(format: "   server with %d streams: RSS %.1f MiB; memory per node %.1f KiB (RSS delta from idle / N); "
                 + "server CPU until settled %.2f s", sessions, Double(connected.rssKiB) / 1024, row.rssPerNodeKiB,
                 connected.cpuSeconds - registered.cpuSeconds))

    // Joins: from the register request until every connected client holds the PeersChanged.
    print("   join  register reply  p50          p90          max          server CPU")
    var medians = [Double](), maxima = [Double]()
    for j in 0..<joins {
        enter("join \(j + 1)")
        let joiner = ControlClient(port: port, seed: UInt64(1_000_000 + j))
        try await joiner.connect(controlKey: controlKey)
        let before = figures(pid: pid)
        let start = clock.now
        observations.state.withLock { s in
            s.target = Array("\"\(joiner.nodeKey.publicKey)\"".utf8)
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
        maxima.append(arrivals.count < sessions ? .infinity : arrivals.last ?? .nan)
        medians.append(percentile(arrivals, 0.5))
        print("   " + pad("\(j + 1)", 6) + pad(format(replied), 16) + pad(format(percentile(arrivals, 0.5)), 13)
              + pad(format(percentile(arrivals, 0.9)), 13) + pad(format(arrivals.last ?? .nan), 13)
              + String(format: "%.2f s", after.cpuSeconds - before.cpuSeconds))
        try await settle(observations, quiet: .milliseconds(300))
        await joiner.close()
        try await settle(observations, quiet: .milliseconds(300))
    }
    row.joinP50 = percentile(medians.sorted(), 0.5)
    row.joinMax = maxima.max() ?? .nan
    print("   worst join: every one of \(sessions) nodes had it after \(format(row.joinMax))")

    for reader in readers.withLock({ $0 }) { reader.cancel() }
    try await concurrently(sessions, width: 256) { i in await clients[i].close() }
    return row
}

func printTable(_ rows: [FanoutRow]) {
    print("== summary (one warren-control instance; \"postgres\" and \"2 instances\" rows come from the same columns)")
    print("   sessions  store     instances  streams open  server CPU  messages   patches    join p50     join max     RSS/node")
    for r in rows {
        print("   " + pad("\(r.sessions)", 10) + pad(r.store, 10) + pad("\(r.instances)", 11)
              + pad(String(format: "%.2f s", r.openSeconds), 14) + pad(String(format: "%.2f s", r.openCPUSeconds), 12)
              + pad("\(r.messages)", 11) + pad("\(r.patches)", 11) + pad(format(r.joinP50), 13) + pad(format(r.joinMax), 13)
              + String(format: "%.1f KiB", r.rssPerNodeKiB))
    }
    print("   (streams open: from the first request until every client holds its full map; server CPU: the server's for that;")
    print("    messages: map messages the clients received, full maps included, keep-alives not; RSS/node: the server's RSS")
    print("    with every stream open, less its idle RSS, over N)")
}

// MARK: Main

let options = Options(Array(CommandLine.arguments.dropFirst()))
if options.serverChild {
    try await runServerChild()
} else {
    print("warren-control-bench (\(ProcessInfo.processInfo.activeProcessorCount) cores)")
    if !options.skipMap { try benchMapBuild(sizes: options.mapSizes, zstdLevel: options.zstdLevel) }
    if !options.skipFanout {
        startWatchdog()
        var rows = [FanoutRow]()
        for n in options.sessions {
            rows.append(try await benchFanout(sessions: n, joins: options.joins, compress: options.compress))
            fflush(nil)
        }
        printTable(rows)
    }
}
