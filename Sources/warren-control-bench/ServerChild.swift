// The server child: one warren-control engine and listener on loopback. It prints
// `READY <port> <control key> <pre-auth key>`, then answers commands:
//   stats    rssKiB cpuSeconds heapInUse heapFree   then the engine's memory account (key=value ...)
//   trim     gives glibc's free memory back (malloc_trim), then answers as stats
//   exit     exits at once, connections open (no answer)

import Foundation
import Logging
import TailscaleKeys
import WarrenControlServer
import WarrenControlStore
import WarrenControlSQLite
import WarrenControlPostgres
import WarrenTailcfg

func serverStats(_ engine: ControlEngine) async -> String {
    let me = figures(pid: getpid())
    let heap = heapFigures()
    let account = await engine.memoryAccount()
    return "stats \(me.rssKiB) \(me.cpuSeconds) \(heap.inUse) \(heap.free) "
        + account.map { "\($0.name)=\($0.bytes)" }.joined(separator: " ")
}

func runServerChild(_ options: Options) async throws {
    var logger = Logger(label: "bench.server")
    logger.logLevel = .error
    let configuration = ControlConfiguration(serverURL: "http://127.0.0.1:0")
    // The store: memory, sqlite:<path>, or postgres:<port>:<database>:<user>:<password> (TCP on loopback).
    let store: any ControlStore
    let words = options.store.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
    switch words[0] {
    case "memory": store = MemoryControlStore()
    case "sqlite" where words.count == 2: store = try SQLiteControlStore(path: words[1])
    case "postgres" where words.count == 5:
        guard let port = Int(words[1]) else { fail("bad store \(options.store)") }
        store = try await PostgresControlStore(settings: PostgresSettings(host: "127.0.0.1", port: port, database: words[2],
                                                                          user: words[3], password: words[4], maxConnections: 8))
    default: fail("unknown store \(options.store)")
    }
    let directory = try StoreDirectory(store: store, ipv4Prefix: configuration.ipv4Prefix, ipv6Prefix: configuration.ipv6Prefix)
    // Without a policy file, `warren-control serve` runs CompiledPolicy with no policy; the engine's default is AllowAllPolicy.
    let policy: any PacketFilterPolicy = options.policy == "allow-all" ? AllowAllPolicy() : CompiledPolicy(policy: nil)
    let engine = ControlEngine(configuration: configuration, directory: directory, policy: policy, logger: logger)
    // On PostgreSQL the engine follows the other instances on the database, as `serve` does (ClusterWiring).
    if let postgres = store as? PostgresControlStore {
        try await engine.attach(cluster: PostgresCluster(store: postgres), storedPolicy: true)
    }
    try await engine.load()
    if store is PostgresControlStore {
        Task { try? await engine.followCluster() }
    }
    var generator = SystemRandomNumberGenerator()
    let controlKey = MachinePrivate.generate(using: &generator)
    var serverOptions = ControlServerOptions(host: "127.0.0.1", port: 0)
    // WARREN_BENCH_DEAD_PEER_SECONDS=<seconds> replaces DeadPeerDetection's TCP_USER_TIMEOUT (0: no dead-peer detection
    // at all). At 10,000 streams opening at once on this machine the clients, starved of CPU, leave their receive
    // windows shut for longer than the standard 10 s, and the kernel ends those connections without a reset (780 of
    // 10,000 in one run; none with 0).
    if let text = ProcessInfo.processInfo.environment["WARREN_BENCH_DEAD_PEER_SECONDS"], let seconds = Int(text) {
        if seconds == 0 {
            serverOptions.deadPeerDetection = nil
        } else {
            serverOptions.deadPeerDetection?.unacknowledgedTimeout = .seconds(seconds)
        }
    }
    let server = try await ControlHTTPServer.start(engine: engine, controlKey: controlKey, options: serverOptions, logger: logger)
    // A second instance on the same database is given the first one's key.
    let authKey = !options.authKey.isEmpty ? options.authKey : try await store.transaction { tx in
        let owner = try tx.createUser(name: "bench", now: Date())
        var random = SystemRandomNumberGenerator()
        return try tx.createPreAuthKey(userID: owner.id, options: PreAuthKeyOptions(reusable: true), now: Date(),
                                       generator: &random).text
    }
    print("READY \(server.port ?? 0) \(controlKey.publicKey) \(authKey)")
    fflush(nil)
    Task {
        await serveCommands { line in
            switch line {
            case "stats": return await serverStats(engine)
            case "sizes":
                return "sizes MapResponse=\(MemoryLayout<MapResponse>.size) MapOutgoing=\(MemoryLayout<MapOutgoing>.size) Node=\(MemoryLayout<WarrenTailcfg.Node>.size) ControlNode=\(MemoryLayout<ControlNode>.size)"
            case "exit":
                // At once, with every connection open (a heap profiler then reports what they hold as not freed).
                exit(0)
            case "trim":
                trimHeap()
                return await serverStats(engine)
            default: return "error unknown command \(line)"
            }
        }
    }
    try await server.run()
}
