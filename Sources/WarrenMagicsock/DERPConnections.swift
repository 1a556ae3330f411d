// The node's DERP connections: one to its home region (kept open, marked preferred, reconnected
// with back-off), and one to each other region a peer lives in, opened on demand and closed after
// a minute without use (tailscale/tailscale:wgengine/magicsock/derp.go works the same way).

import DERPProtocol
import Foundation
import Logging
import NIOCore
import Synchronization
import TailscaleKeys
import WarrenDERPClient
import WarrenDERPTransport
import WarrenPacket
import WarrenTailcfg

final class DERPConnections: @unchecked Sendable {
    /// Packets kept for a region while its connection is being opened.
    static let pendingLimit = 64
    /// A non-home connection unused this long is closed.
    static let idleTimeout: Duration = .seconds(60)

    struct Region {
        var client: DERPClient?
        var connecting = false
        var pending: [(NodePublic, [UInt8])] = []
        var lastUsed: ContinuousClock.Instant
        var failures = 0
        var task: Task<Void, Never>?
        var latency: Duration?
    }

    struct State {
        var map = DERPMap()
        var home = 0
        var regions: [Int: Region] = [:]
        var closed = false
        var privateKey: NodePrivate
    }

    private let state: Mutex<State>
    private let logger: Logger
    /// Trust for every DERP node (tests); nil: from the map (pin, InsecureForTests, or system roots).
    private let trustOverride: DERPServerTrust?
    /// SO_MARK of the relay connections (nil: none).
    private let socketMark: UInt32?
    /// Called for every packet relayed to us: source node key, region, bytes.
    private let deliver: @Sendable (NodePublic, Int, [UInt8]) -> Void
    /// Called when a connection comes up or goes down (for status and netcheck).
    var onChange: (@Sendable () -> Void)?

    init(privateKey: NodePrivate, trustOverride: DERPServerTrust?, socketMark: UInt32? = nil, logger: Logger,
         deliver: @escaping @Sendable (NodePublic, Int, [UInt8]) -> Void) {
        state = Mutex(State(privateKey: privateKey))
        self.trustOverride = trustOverride
        self.socketMark = socketMark
        self.logger = logger
        self.deliver = deliver
    }

    var home: Int { state.withLock { $0.home } }
    var map: DERPMap { state.withLock { $0.map } }

    /// The regions with an open connection.
    var connectedRegions: [Int] {
        state.withLock { s in s.regions.filter { $0.value.client != nil }.keys.sorted() }
    }

    func setMap(_ map: DERPMap) {
        let dropped: [DERPClient] = state.withLock { s in
            s.map = map
            var gone: [DERPClient] = []
            for (id, region) in s.regions where map.regions[id] == nil {
                region.task?.cancel()
                if let c = region.client { gone.append(c) }
                s.regions[id] = nil
            }
            return gone
        }
        for c in dropped { c.channel.close(promise: nil) }
    }

    /// Makes `region` the home region: connects to it and tells it so (NotePreferred).
    func setHome(_ region: Int) {
        let (old, oldClient, newClient) = state.withLock { s -> (Int, DERPClient?, DERPClient?) in
            let old = s.home
            s.home = region
            return (old, s.regions[old]?.client, s.regions[region]?.client)
        }
        guard old != region else { return }
        if let oldClient { oldClient.channel.writeAndFlush(Self.notePreferredFrame(false, oldClient), promise: nil) }
        if let newClient {
            newClient.channel.writeAndFlush(Self.notePreferredFrame(true, newClient), promise: nil)
        } else if region != 0 {
            connect(region)
        }
        logger.info("home DERP region is now \(region)")
    }

    private static func notePreferredFrame(_ preferred: Bool, _ client: DERPClient) -> ByteBuffer {
        var buffer = client.channel.allocator.buffer(capacity: 6)
        buffer.writeInteger(DERPFrameType.notePreferred.rawValue)
        buffer.writeInteger(UInt32(1))
        buffer.writeInteger(UInt8(preferred ? 1 : 0))
        return buffer
    }

    /// Sends `packet` to `destination` through `region` (0: the home region). Never blocks: a packet
    /// that finds the connection backed up, or more than `pendingLimit` waiting for it, is dropped.
    @discardableResult
    func send(_ packet: [UInt8], to destination: NodePublic, region wanted: Int) -> Bool {
        enum Next { case write(DERPClient), connect, queued, drop }
        let next: Next = state.withLock { s in
            guard !s.closed else { return .drop }
            let region = wanted != 0 ? wanted : s.home
            guard region != 0, s.map.regions[region] != nil else { return .drop }
            var r = s.regions[region] ?? Region(lastUsed: .now)
            r.lastUsed = .now
            defer { s.regions[region] = r }
            if let c = r.client { return .write(c) }
            guard r.pending.count < Self.pendingLimit else { return .drop }
            r.pending.append((destination, packet))
            if r.connecting { return .queued }
            return .connect
        }
        switch next {
        case .write(let client):
            guard client.channel.isWritable else { return false }
            client.channel.writeAndFlush(DERPClient.sendPacketFrame(packet, to: destination, allocator: client.channel.allocator),
                                         promise: nil)
            return true
        case .connect:
            connect(wanted != 0 ? wanted : home)
            return true
        case .queued:
            return true
        case .drop:
            return false
        }
    }

    /// Opens (or keeps open) the connection to `region`, reconnecting with back-off while it is the
    /// home region or has packets waiting.
    func connect(_ region: Int) {
        let start: Bool = state.withLock { s in
            guard !s.closed, s.map.regions[region] != nil else { return false }
            var r = s.regions[region] ?? Region(lastUsed: .now)
            defer { s.regions[region] = r }
            if r.client != nil || r.connecting { return false }
            r.connecting = true
            return true
        }
        guard start else { return }
        let task = Task { [self] in await run(region: region) }
        state.withLock { s in s.regions[region]?.task = task }
    }

    private func endpoint(for node: DERPNode) -> DERPClient.Endpoint? {
        var host = node.hostName
        if let v4 = node.ipv4, !v4.isEmpty, v4 != "none" { host = v4 }
        else if let v6 = node.ipv6, !v6.isEmpty, v6 != "none" { host = v6 }
        guard !host.isEmpty else { return nil }
        let port = (node.derpPort ?? 0) == 0 ? 443 : node.derpPort!
        let trust: DERPServerTrust
        if let trustOverride { trust = trustOverride }
        else if node.insecureForTests == true { trust = .insecureForTests }
        else if let cert = node.certName, cert.hasPrefix("sha256-raw:") { trust = .pinned(cert) }
        else { trust = .system }
        var serverName: String? = node.certName.flatMap { $0.hasPrefix("sha256-raw:") ? nil : $0 } ?? node.hostName
        // An IP address is never a TLS server name (SNI).
        if let name = serverName, name.isEmpty || IPAddress(name) != nil { serverName = nil }
        return DERPClient.Endpoint(host: host, port: port, trust: trust, serverName: serverName)
    }

    private func run(region: Int) async {
        var delay: Duration = .milliseconds(100)
        while !Task.isCancelled {
            let nodes = state.withLock { $0.map.regions[region]?.nodes ?? [] }.filter { $0.stunOnly != true }
            var connected: DERPClient?
            let started = ContinuousClock.now
            for node in nodes {
                guard let endpoint = endpoint(for: node) else { continue }
                do {
                    let key = state.withLock { $0.privateKey }
                    connected = try await DERPClient.connect(to: endpoint, privateKey: key, loginTimeout: .seconds(5), socketMark: socketMark)
                    break
                } catch {
                    logger.debug("DERP region \(region) node \(node.name): \(error)")
                }
            }
            guard let client = connected else {
                let giveUp = state.withLock { s -> Bool in
                    guard var r = s.regions[region] else { return true }
                    r.failures += 1
                    let keep = s.home == region && !s.closed
                    if !keep {
                        r.pending.removeAll()
                        r.connecting = false
                        r.task = nil
                    }
                    s.regions[region] = r
                    return !keep
                }
                logger.info("DERP region \(region): cannot connect")
                if giveUp { return }
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(10))
                continue
            }
            delay = .milliseconds(100)
            let latency = ContinuousClock.now - started
            let (pending, isHome) = state.withLock { s -> ([(NodePublic, [UInt8])], Bool) in
                var r = s.regions[region] ?? Region(lastUsed: .now)
                r.client = client
                r.connecting = false
                r.failures = 0
                r.latency = latency
                let p = r.pending
                r.pending = []
                s.regions[region] = r
                return (p, s.home == region)
            }
            logger.info("DERP region \(region) connected\(isHome ? " (home)" : "")")
            if isHome { client.channel.write(Self.notePreferredFrame(true, client), promise: nil) }
            for (destination, packet) in pending {
                client.channel.write(DERPClient.sendPacketFrame(packet, to: destination, allocator: client.channel.allocator), promise: nil)
            }
            client.channel.flush()
            onChange?()
            for await frame in client.frames {
                if case .recvPacket(let source, let packet) = frame { deliver(source, region, packet) }
            }
            await client.close()
            let again = state.withLock { s -> Bool in
                guard var r = s.regions[region], !s.closed else { return false }
                r.client = nil
                let again = s.home == region || !r.pending.isEmpty
                r.connecting = again
                if !again { r.task = nil }
                s.regions[region] = r
                return again
            }
            onChange?()
            logger.info("DERP region \(region) disconnected")
            if !again { return }
            try? await Task.sleep(for: delay)
        }
    }

    /// Closes connections to regions other than home that were not used for `idleTimeout`.
    func closeIdle() {
        let idle: [DERPClient] = state.withLock { s in
            var out: [DERPClient] = []
            for (id, r) in s.regions where id != s.home && r.client != nil && ContinuousClock.now - r.lastUsed > Self.idleTimeout {
                out.append(r.client!)
            }
            return out
        }
        for c in idle { c.channel.close(promise: nil) }
    }

    /// A new node key (after a re-login): every connection is closed and comes back (home, and
    /// regions with packets waiting) under the new identity.
    func setPrivateKey(_ key: NodePrivate) {
        let clients: [DERPClient] = state.withLock { s in
            s.privateKey = key
            return s.regions.values.compactMap(\.client)
        }
        for c in clients { c.channel.close(promise: nil) }
    }

    /// Closes every connection; the home region's (and those with packets waiting) come back at once.
    func reconnectAll() {
        let clients: [DERPClient] = state.withLock { s in s.regions.values.compactMap(\.client) }
        for c in clients { c.channel.close(promise: nil) }
    }

    func latency(of region: Int) -> Duration? { state.withLock { $0.regions[region]?.latency } }

    func close() {
        let all: [(DERPClient?, Task<Void, Never>?)] = state.withLock { s in
            s.closed = true
            defer { s.regions = [:] }
            return s.regions.values.map { ($0.client, $0.task) }
        }
        for (client, task) in all {
            task?.cancel()
            client?.channel.close(promise: nil)
        }
    }
}
