// A client child: a share of the simulated clients (`--first`, `--count`), each speaking the real protocol to the
// server child. Commands (one line each, one answer line each):
//   register          every client connects, registers, and sends its endpoints in a one-shot map request
//   open              every client opens its map stream (answers at once; `stats` shows the progress)
//   stats             answered fullMaps messages patches online keepAlives fullMapBytes arrivals rssKiB cpu errors
//   target <needle>   from now, a PeersChanged containing <needle> is an arrival (arrivals cleared)
//   arrivals          the arrival times (CLOCK_MONOTONIC ns)
//   close             closes every client

import Foundation
import NIOCore
import Synchronization
import TailscaleKeys
import WarrenControlClient
import WarrenControlTransport
import WarrenPacket
import WarrenTailcfg

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

/// What the simulated clients of one child saw, shared by their reader tasks. They do as little as a client can:
/// the first message of a stream is its full map (the server always sends that first) and is only counted, with its
/// compressed size; later messages are decompressed and scanned for the few markers the benchmark needs.
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
        var errors = 0
        var target: [UInt8]?
        var arrivals: [UInt64] = []
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
        let now = monotonicNanoseconds()
        state.withLock { s in
            s.messages += 1
            s.patches += patches
            s.onlineTrue += online
            if hit { s.arrivals.append(now) }
        }
    }
}

/// What a client's map stream delivers: its first message (the full map) only as its size, the others whole.
enum StreamItem: Sendable {
    case fullMap(bytes: Int)
    case message([UInt8])
}

/// Splits a map stream as MapStreamDecoder does, except that the first message (the full map, over a megabyte at 10,000
/// nodes) is counted and dropped as it arrives instead of being held whole: with every stream opening at once, each
/// client holds a part of its map for most of the opening, and 10,000 partial maps held whole were the bench's own
/// gigabytes.
struct SkippingFirstDecoder {
    private var buffer: [UInt8] = []
    /// Bytes of the first message still to drop (nil: its length not read yet).
    private var skipping: Int?
    private var firstLength = 0
    private var firstDone = false

    mutating func append(_ bytes: [UInt8]) throws -> [StreamItem] {
        buffer += bytes
        var out = [StreamItem]()
        if !firstDone {
            if skipping == nil {
                guard buffer.count >= 4 else { return out }
                firstLength = Int(buffer[0]) | Int(buffer[1]) << 8 | Int(buffer[2]) << 16 | Int(buffer[3]) << 24
                skipping = firstLength
                buffer.removeFirst(4)
            }
            let drop = min(skipping ?? 0, buffer.count)
            buffer.removeFirst(drop)
            skipping = (skipping ?? 0) - drop
            guard skipping == 0 else { return out }
            firstDone = true
            out.append(.fullMap(bytes: firstLength))
        }
        var decoder = MapStreamDecoder()
        decoder.append(buffer)
        var consumed = 0
        while case .message(let body) = try decoder.parseStep() {
            consumed += 4 + body.count
            out.append(.message(body))
        }
        buffer.removeFirst(consumed)
        return out
    }
}

/// One client's map stream: its full map's size, then its messages' raw bodies (still compressed when the stream is).
func rawMapBodies(_ c: ControlClient, _ request: MapRequest) async throws -> (Int, AsyncThrowingStream<StreamItem, Error>) {
    let response = try await c.post("/machine/map", json: try TailcfgJSON.encode(request))
    let bodies = AsyncThrowingStream<StreamItem, Error> { continuation in
        let task = Task {
            var decoder = SkippingFirstDecoder()
            for await chunk in response.body {
                do {
                    for item in try decoder.append(chunk) { continuation.yield(item) }
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

func runClientChild(_ options: Options) async -> Never {
    guard let controlKey = try? MachinePublic(parsing: options.controlKey), options.port > 0, options.count > 0 else {
        fail("client child: --port, --control-key and --count are needed")
    }
    let compress = options.compress, authKey = options.authKey, first = options.first
    let clients = (0..<options.count).map { ControlClient(port: options.port, seed: UInt64(first + $0 + 1)) }
    let observations = Observations()
    final class Tasks: Sendable {
        let readers = Mutex<[Task<Void, Never>]>([])
        let opening = Mutex<Task<Void, Never>?>(nil)
    }
    let tasks = Tasks()
    await serveCommands { line in
        let words = line.split(separator: " ").map(String.init)
        switch words.first ?? "" {
        case "register":
            do {
                // Register, and tell the server the node's disco key and endpoints with a one-shot (lite) map request:
                // nobody is streaming yet, so nothing fans out; the streams opened next change nothing but the
                // nodes' being online, as when every client reconnects after a restart of the server.
                try await concurrently(clients.count, width: 16) { i in
                    let c = clients[i]
                    try await c.connect(controlKey: controlKey)
                    let r = try await c.register(c.registerRequest(authKey: authKey, hostname: "sim-\(first + i)"))
                    guard r.error.isEmpty else { throw ControlClientError(description: "register: \(r.error)") }
                    let endpoint = AddrPort(address: .v4(0xC633_6400 &+ UInt32(first + i)), port: 41641)
                    let lite = try await c.post("/machine/map", json: TailcfgJSON.encode(
                        c.mapRequest(stream: false, omitPeers: true, endpoints: [endpoint], compress: compress)))
                    _ = await lite.collect()
                    guard lite.status == 200 else { throw ControlClientError(description: "lite map: HTTP \(lite.status)") }
                }
                return "ok"
            } catch {
                return "error register: \(error)"
            }
        case "open":
            let task = Task { () -> Void in
                _ = try? await concurrently(clients.count, width: clients.count) { i in
                    let c = clients[i]
                    let (status, bodies): (Int, AsyncThrowingStream<StreamItem, Error>)
                    do {
                        (status, bodies) = try await rawMapBodies(c, c.mapRequest(stream: true, compress: compress))
                    } catch {
                        observations.state.withLock { $0.errors += 1 }
                        FileHandle.standardError.write(Data("client \(first + i): map: \(error)\n".utf8))
                        return
                    }
                    guard status == 200 else {
                        observations.state.withLock { $0.errors += 1 }
                        return
                    }
                    observations.state.withLock { $0.streamsAnswered += 1 }
                    let reader = Task {
                        do {
                            for try await item in bodies {
                                switch item {
                                case .fullMap(let bytes): observations.sawFullMap(compressedBytes: bytes)
                                case .message(let body):
                                    observations.saw(compress ? try Zstd.decompress(body, maximumSize: 256 << 20) : body)
                                }
                            }
                        } catch {
                            observations.state.withLock { $0.errors += 1 }
                            FileHandle.standardError.write(Data("client \(first + i): \(error)\n".utf8))
                        }
                    }
                    tasks.readers.withLock { $0.append(reader) }
                }
            }
            tasks.opening.withLock { $0 = task }
            return "ok"
        case "stats":
            let s = observations.state.withLock { $0 }
            let me = figures(pid: getpid())
            return "stats \(s.streamsAnswered) \(s.fullMaps) \(s.messages) \(s.patches) \(s.onlineTrue) \(s.keepAlives) "
                + "\(s.fullMapBytes) \(s.arrivals.count) \(me.rssKiB) \(me.cpuSeconds) \(s.errors)"
        case "target":
            guard words.count == 2 else { return "error target needs one word" }
            observations.state.withLock { s in
                s.target = Array(words[1].utf8)
                s.arrivals = []
            }
            return "ok"
        case "arrivals":
            return "arrivals " + observations.state.withLock { $0.arrivals }.map(String.init).joined(separator: " ")
        case "close":
            for reader in tasks.readers.withLock({ $0 }) { reader.cancel() }
            tasks.opening.withLock { $0 }?.cancel()
            try? await concurrently(clients.count, width: 256) { i in await clients[i].close() }
            return "ok"
        default:
            return "error unknown command \(line)"
        }
    }
}
