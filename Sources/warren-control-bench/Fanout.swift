// The parent's side of the fan-out benchmark: starts the server child and the client children, steers them, keeps
// the clock, and prints the figures and the closing table.

import Foundation
import Synchronization
import TailscaleKeys
import WarrenControlClient
import WarrenTailcfg
import WarrenTestProbes

/// Where the benchmark is, for the watchdog.
let phase = Mutex<(name: String, steps: Int)>(("start", 0))

func enter(_ name: String) { phase.withLock { $0 = (name, 0) } }
func step() { phase.withLock { $0.steps += 1 } }

/// A plain thread (not a task): if the phase and its step count stay the same for 60 s, says so.
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

/// One row of the closing table.
struct FanoutRow {
    var sessions = 0
    var store = "memory"
    var instances = 1
    var openSeconds = Double.nan
    var openCPUSeconds = Double.nan
    var messages = 0
    var patches = 0
    var joinP50 = Double.nan
    var joinMax = Double.nan
    var rssPerNodeKiB = Double.nan
    var trimmedPerNodeKiB = Double.nan
    var registerKiBPerNode = Double.nan
    /// Streams that got no full map (a stall; see the run's output).
    var unanswered = 0
}

/// The client children's `stats` answers, added up.
struct ClientTotals {
    var answered = 0, fullMaps = 0, messages = 0, patches = 0, online = 0, keepAlives = 0, fullMapBytes = 0, arrivals = 0
    var rssKiB = 0, cpuSeconds = 0.0, errors = 0

    mutating func add(_ line: String) {
        let f = line.split(separator: " ").dropFirst().map(String.init)
        guard f.count >= 11 else { return }
        answered += Int(f[0]) ?? 0; fullMaps += Int(f[1]) ?? 0; messages += Int(f[2]) ?? 0; patches += Int(f[3]) ?? 0
        online += Int(f[4]) ?? 0; keepAlives += Int(f[5]) ?? 0; fullMapBytes += Int(f[6]) ?? 0; arrivals += Int(f[7]) ?? 0
        rssKiB += Int(f[8]) ?? 0; cpuSeconds += Double(f[9]) ?? 0; errors += Int(f[10]) ?? 0
    }
}

/// The server child's `stats` answer.
struct ServerStats {
    var rssKiB = 0
    var cpuSeconds = 0.0
    var heapInUse = 0
    var heapFree = 0
    var account: [(String, Int)] = []

    init(_ line: String) {
        let f = line.split(separator: " ").dropFirst().map(String.init)
        guard f.count >= 4 else { return }
        rssKiB = Int(f[0]) ?? 0
        cpuSeconds = Double(f[1]) ?? 0
        heapInUse = Int(f[2]) ?? 0
        heapFree = Int(f[3]) ?? 0
        account = f.dropFirst(4).compactMap { word in
            let kv = word.split(separator: "=", maxSplits: 1)
            guard kv.count == 2, let v = Int(kv[1]) else { return nil }
            return (String(kv[0]), v)
        }
    }
}

func ask(_ children: [ChildProcess], _ command: String) async -> [String] {
    await withTaskGroup(of: (Int, String).self) { group in
        for (i, child) in children.enumerated() { group.addTask { (i, await child.ask(command)) } }
        var answers = [String](repeating: "", count: children.count)
        for await (i, answer) in group { answers[i] = answer }
        return answers
    }
}

func totals(_ children: [ChildProcess]) async -> ClientTotals {
    var t = ClientTotals()
    for line in await ask(children, "stats") { t.add(line) }
    return t
}

/// Waits until no client has received anything but keep-alives for `quiet`.
func settle(_ children: [ChildProcess], quiet: Duration = .milliseconds(700)) async throws {
    var last = -1
    while true {
        let now = await totals(children).messages
        if now == last { return }
        last = now
        step()
        try await Task.sleep(for: quiet)
    }
}

func printAccount(_ stats: ServerStats, sessions: Int) {
    guard !stats.account.isEmpty else { return }
    let listed = stats.account.filter { $0.0.hasSuffix("Bytes") }
    let sum = listed.reduce(0) { $0 + $1.1 }
    print(String(format: "   server heap: %.1f MiB in live allocations, %.1f MiB free in glibc's arenas; of the live, the server's own account:",
                 Double(stats.heapInUse) / 1048576, Double(stats.heapFree) / 1048576))
    for (name, bytes) in listed {
        print("     " + pad(name, 34) + pad(String(format: "%.1f MiB", Double(bytes) / 1048576), 12)
              + String(format: "%.2f KiB a node", Double(bytes) / 1024 / Double(max(1, sessions))))
    }
    print("     " + pad("(accounted)", 34) + pad(String(format: "%.1f MiB", Double(sum) / 1048576), 12)
          + String(format: "%.2f KiB a node", Double(sum) / 1024 / Double(max(1, sessions))))
    let counts = stats.account.filter { !$0.0.hasSuffix("Bytes") }
    if !counts.isEmpty { print("     counts: " + counts.map { "\($0.0) \($0.1)" }.joined(separator: ", ")) }
}

/// The PostgreSQL server of this run (started at the first PostgreSQL row, stopped at exit).
let postgresServer = Mutex<PostgresTestServer?>(nil)

func stopPostgres() {
    postgresServer.withLock { $0?.stop(); $0 = nil }
}

/// The server child's --store for a table row's store ("memory", "sqlite", "postgres", "postgres2": two instances),
/// and what to remove afterwards.
func storeSpecification(_ store: String, sessions: Int) throws -> (spec: String, instances: Int, cleanup: () -> Void) {
    switch store {
    case "memory":
        return ("memory", 1, {})
    case "sqlite":
        let path = "/tmp/warren-control-bench-\(getpid())-\(sessions).sqlite"
        let remove = { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
        remove()
        return ("sqlite:\(path)", 1, remove)
    case "postgres", "postgres2":
        let server = try postgresServer.withLock { running in
            if let running { return running }
            let started = try PostgresTestServer.start()
            running = started
            return started
        }
        let database = try server.createDatabase(prefix: "bench")
        return ("postgres:\(server.port):\(database):\(server.user):\(server.password)", store == "postgres2" ? 2 : 1, {})
    default:
        fail("unknown store \(store) (memory, sqlite, postgres, postgres2)")
    }
}

func benchFanout(sessions: Int, joins: Int, compress: Bool, options: Options) async throws -> FanoutRow {
    var row = FanoutRow()
    row.sessions = sessions
    row.store = options.store == "postgres2" ? "postgres" : options.store
    let (spec, instances, cleanup) = try storeSpecification(options.store, sessions: sessions)
    defer { cleanup() }
    row.instances = instances
    print("== join fan-out over the real protocol (\(sessions) map sessions, zstd \(compress ? "on" : "off"), store \(row.store), "
          + "\(instances) instance\(instances == 1 ? "" : "s"), policy \(options.policy))")
    // The server children: one per instance, on one database when there are two (the second gets the first's key).
    var servers = [ChildProcess]()
    var endpoints = [(port: Int, controlKey: MachinePublic)]()
    var authKey = ""
    defer { for server in servers.reversed() { server.finish() } }
    for instance in 0..<instances {
        var serverArguments = ["--server-child", "--store", spec, "--policy", options.policy]
        if !authKey.isEmpty { serverArguments += ["--auth-key", authKey] }
        if !compress { serverArguments.append("--no-compress") }
        // WARREN_BENCH_SERVER_WRAPPER runs the server child under a profiler (its figures are then the wrapper's).
        let server = try ChildProcess(name: "server child \(instance)", arguments: serverArguments,
                                      wrapper: ProcessInfo.processInfo.environment["WARREN_BENCH_SERVER_WRAPPER"])
        servers.append(server)
        // (A wrapper may say things first.)
        var ready = ""
        while !ready.hasPrefix("READY") {
            guard let line = server.readLine() else { fail("the server child exited before it was ready") }
            ready = line
        }
        let words = ready.split(separator: " ").map(String.init)
        guard words.count == 4, words[0] == "READY", let port = Int(words[1]),
              let controlKey = try? MachinePublic(parsing: words[2]) else { fail("unexpected server child output: \(words)") }
        endpoints.append((port, controlKey))
        authKey = words[3]
    }
    let port = endpoints[0].port, controlKey = endpoints[0].controlKey
    let pids = servers.map(\.pid)
    /// The servers' RSS and CPU together.
    func serverFigures() -> ProcessFigures {
        pids.map { figures(pid: $0) }.reduce(ProcessFigures(rssKiB: 0, cpuSeconds: 0)) {
            ProcessFigures(rssKiB: $0.rssKiB + $1.rssKiB, cpuSeconds: $0.cpuSeconds + $1.cpuSeconds)
        }
    }
    func serverStats(_ command: String = "stats") async -> [ServerStats] {
        await ask(servers, command).map(ServerStats.init)
    }
    func total(_ stats: [ServerStats]) -> (rssKiB: Int, cpuSeconds: Double) {
        (stats.reduce(0) { $0 + $1.rssKiB }, stats.reduce(0) { $0 + $1.cpuSeconds })
    }
    try await Task.sleep(for: .milliseconds(300))
    let idle = total(await serverStats())
    print(String(format: "   server idle: RSS %.1f MiB", Double(idle.rssKiB) / 1024))

    // The clients, spread over processes (at least 100 clients each), each process on one instance.
    let processes = max(instances, min(options.clientProcesses, sessions / 100))
    var children = [ChildProcess]()
    for p in 0..<processes {
        let first = sessions * p / processes, end = sessions * (p + 1) / processes
        let endpoint = endpoints[p % instances]
        var arguments = ["--client-child", "--port", "\(endpoint.port)", "--control-key", "\(endpoint.controlKey)", "--auth-key", authKey,
                         "--first", "\(first)", "--count", "\(end - first)"]
        if !compress { arguments.append("--no-compress") }
        children.append(try ChildProcess(name: "client child \(p)", arguments: arguments))
    }
    defer { for child in children { child.finish() } }
    print("   clients: \(sessions) in \(processes) processes")

    let clock = ContinuousClock()
    enter("registering")
    var t = clock.now
    _ = await ask(children, "register")
    let registered = total(await serverStats())
    row.registerKiBPerNode = Double(registered.rssKiB - idle.rssKiB) / Double(sessions)
    print(String(format: "   %d nodes registered in %.2f s; server RSS %.1f MiB (+%.1f KiB a node), server CPU %.2f s",
                 sessions, milliseconds(clock.now - t) / 1000, Double(registered.rssKiB) / 1024,
                 row.registerKiBPerNode, registered.cpuSeconds - idle.cpuSeconds))

    // Open every map stream at once.
    enter("opening streams")
    t = clock.now
    _ = await ask(children, "open")
    var lastProgress = clock.now
    var peakRSS = 0
    // A stream that never answers must not hold the run: 60 s without a stream answered or a full map ends the wait.
    var lastChange = clock.now, lastSeen = (0, 0)
    var unanswered = 0
    while true {
        let now = await totals(children)
        peakRSS = max(peakRSS, serverFigures().rssKiB)
        if now.fullMaps + now.errors >= sessions { break }
        if (now.answered, now.fullMaps) != lastSeen {
            lastSeen = (now.answered, now.fullMaps)
            lastChange = clock.now
        } else if clock.now - lastChange > .seconds(60) {
            unanswered = sessions - now.fullMaps - now.errors
            print("   STALLED: \(unanswered) streams without a full map and nothing new for 60 s (\(now.answered) answered, "
                  + "\(now.fullMaps) full maps, \(now.errors) errors); the figures below leave those out and the wait")
            break
        }
        if clock.now - lastProgress >= .seconds(10) {
            lastProgress = clock.now
            print(String(format: "   ... %.0f s: %d streams answered, %d full maps, %d messages; server CPU %.1f s, RSS %.0f MiB; clients RSS %.0f MiB",
                         milliseconds(clock.now - t) / 1000, now.answered, now.fullMaps, now.messages, serverFigures().cpuSeconds,
                         Double(serverFigures().rssKiB) / 1024, Double(now.rssKiB) / 1024))
            fflush(nil)
        }
        step()
        try await Task.sleep(for: .milliseconds(20))
    }
    let streamsOpen = clock.now - t - (unanswered > 0 ? .seconds(60) : .zero)
    row.unanswered = unanswered
    let allMaps = serverFigures()
    enter("settling")
    try await settle(children)
    let connectedStats = await serverStats()
    let connected = total(connectedStats)
    let seen = await totals(children)
    if seen.errors > 0 { print("   \(seen.errors) client errors (see stderr)") }
    row.openSeconds = milliseconds(streamsOpen) / 1000
    row.openCPUSeconds = allMaps.cpuSeconds - registered.cpuSeconds
    row.messages = seen.messages
    row.patches = seen.patches
    row.rssPerNodeKiB = Double(connected.rssKiB - idle.rssKiB) / Double(sessions)
    print(String(format: "   %d map streams opened in %.2f s (every full map received, %.1f MiB of them compressed); server CPU %.2f s",
                 seen.fullMaps, row.openSeconds, Double(seen.fullMapBytes) / 1048576, row.openCPUSeconds))
    print("   \(seen.messages) messages delivered in all (\(seen.fullMaps) full maps, and \(seen.keepAlives) keep-alives), carrying "
          + "\(seen.patches) peer patches, \(seen.online) of them online")
    print(String(format: "   server with %d streams: RSS %.1f MiB (peak while opening %.1f MiB); memory per node %.1f KiB (RSS delta from idle / N); "
                 + "server CPU until settled %.2f s; the clients' processes: RSS %.0f MiB, CPU %.1f s", sessions,
                 Double(connected.rssKiB) / 1024, Double(peakRSS) / 1024, row.rssPerNodeKiB,
                 connected.cpuSeconds - registered.cpuSeconds, Double(seen.rssKiB) / 1024, seen.cpuSeconds))
    for stats in connectedStats { printAccount(stats, sessions: sessions / instances) }
    let trimmed = total(await serverStats("trim"))
    row.trimmedPerNodeKiB = Double(trimmed.rssKiB - idle.rssKiB) / Double(sessions)
    print(String(format: "   after malloc_trim: RSS %.1f MiB, %.1f KiB a node", Double(trimmed.rssKiB) / 1024, row.trimmedPerNodeKiB))

    // For a heap profile of the connected state (WARREN_BENCH_SERVER_WRAPPER="heaptrack ..."): the server exits here,
    // with every stream still open, so what its profiler reports as not freed is what N connected nodes hold.
    if ProcessInfo.processInfo.environment["WARREN_BENCH_EXIT_SERVER_CONNECTED"] == "1" {
        for server in servers { server.send("exit") }
        return row
    }

    // Joins: from the register request until every connected client holds the PeersChanged.
    print("   join  register reply  p50          p90          max          server CPU")
    var medians = [Double](), maxima = [Double]()
    for j in 0..<joins {
        enter("join \(j + 1)")
        let joiner = ControlClient(port: port, seed: UInt64(1_000_000 + j))
        try await joiner.connect(controlKey: controlKey)
        _ = await ask(children, "target \"\(joiner.nodeKey.publicKey)\"")
        let before = serverFigures()
        let start = monotonicNanoseconds()
        let reply = try await joiner.register(joiner.registerRequest(authKey: authKey, hostname: "joiner-\(j)"))
        let replied = Double(monotonicNanoseconds() - start) / 1e6
        guard reply.error.isEmpty else { fail("join: \(reply.error)") }
        let deadline = clock.now + .seconds(60)
        while await totals(children).arrivals < sessions && clock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        var arrivals = [Double]()
        for line in await ask(children, "arrivals") {
            for word in line.split(separator: " ").dropFirst() {
                if let ns = UInt64(word) { arrivals.append(Double(Int64(bitPattern: ns &- start)) / 1e6) }
            }
        }
        arrivals.sort()
        let after = serverFigures()
        if arrivals.count < sessions { print("   (join \(j + 1): only \(arrivals.count) of \(sessions) clients heard of it within 60 s)") }
        maxima.append(arrivals.count < sessions ? .infinity : arrivals.last ?? .nan)
        medians.append(percentile(arrivals, 0.5))
        print("   " + pad("\(j + 1)", 6) + pad(format(replied), 16) + pad(format(percentile(arrivals, 0.5)), 13)
              + pad(format(percentile(arrivals, 0.9)), 13) + pad(format(arrivals.last ?? .nan), 13)
              + String(format: "%.2f s", after.cpuSeconds - before.cpuSeconds))
        try await settle(children, quiet: .milliseconds(300))
        await joiner.close()
        try await settle(children, quiet: .milliseconds(300))
    }
    row.joinP50 = percentile(medians.sorted(), 0.5)
    row.joinMax = maxima.max() ?? .nan
    print("   worst join: every one of \(sessions) nodes had it after \(format(row.joinMax))")
    _ = await ask(children, "close")
    return row
}

func printTable(_ rows: [FanoutRow]) {
    print("== summary")
    print("   sessions  store       instances  streams open  server CPU  messages   patches     join p50     join max     RSS/node    after trim")
    for r in rows {
        print("   " + pad("\(r.sessions)", 10) + pad(r.store.split(separator: ":").first.map(String.init) ?? r.store, 12)
              + pad("\(r.instances)", 11)
              + pad(String(format: "%.2f s", r.openSeconds), 14) + pad(String(format: "%.2f s", r.openCPUSeconds), 12)
              + pad("\(r.messages)", 11) + pad("\(r.patches)", 12) + pad(format(r.joinP50), 13) + pad(format(r.joinMax), 13)
              + pad(String(format: "%.1f KiB", r.rssPerNodeKiB), 12) + String(format: "%.1f KiB", r.trimmedPerNodeKiB)
              + (r.unanswered > 0 ? "   (\(r.unanswered) streams never answered)" : ""))
    }
    print("   (streams open: from the first request until every client holds its full map; server CPU: the server process's")
    print("    for that; messages: map messages the clients received, full maps included, keep-alives not; join p50: the")
    print("    median of the joins' medians, join max: the slowest client of the slowest join; RSS/node: the server's RSS")
    print("    with every stream open and settled, less its idle RSS, over N; after trim: the same after malloc_trim(0))")
}
