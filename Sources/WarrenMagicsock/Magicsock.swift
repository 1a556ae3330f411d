// magicsock: the WireGuard device's bind. The device addresses each peer by an opaque handle (a
// synthetic endpoint that never appears on the wire); magicsock decides how a packet to that handle
// leaves: over a direct UDP path that a disco pong proved, or through the peer's DERP region. It
// also owns what arrives on the socket that is not WireGuard: disco messages (ping, pong,
// call-me-maybe) and STUN replies. Roaming is magicsock's: the device always sees a peer's handle as
// the source, so it never changes an endpoint itself.

import DiscoProtocol
import Foundation
import Logging
import STUNProtocol
import Synchronization
import TailscaleKeys
import WarrenDERPTransport
import WarrenPacket
import WarrenTailcfg
import WireGuardDevice

/// A peer as magicsock needs it, from the network map.
public struct MagicPeer: Hashable, Sendable {
    public var nodeKey: NodePublic
    public var discoKey: DiscoPublic?
    public var homeDERP: Int
    public var endpoints: [AddrPort]

    public init(nodeKey: NodePublic, discoKey: DiscoPublic?, homeDERP: Int, endpoints: [AddrPort]) {
        self.nodeKey = nodeKey
        self.discoKey = discoKey
        self.homeDERP = homeDERP
        self.endpoints = endpoints
    }
}

/// What a disco ping asked for by the user found.
public struct DiscoPingResult: Sendable, Hashable {
    public var latency: Duration
    /// The direct address that answered, or nil when the pong came over DERP.
    public var endpoint: AddrPort?
    /// The DERP region that carried it, when it came over DERP.
    public var derpRegion: Int?
}

/// One peer's path, for status.
public struct MagicPeerStatus: Sendable, Hashable {
    public var currentAddress: AddrPort?
    public var homeDERP: Int
    public var lastActivity: Duration?
}

/// The endpoint types of MapRequest.EndpointTypes (tailcfg.EndpointType).
public enum EndpointType {
    public static let local = 1
    public static let stun = 2
}

public final class Magicsock: PacketBind, @unchecked Sendable {
    public struct Configuration: Sendable {
        /// The UDP port to bind (0: any; if the port is taken, any).
        public var port: UInt16
        /// The host's addresses to offer as local endpoints.
        public var localAddresses: @Sendable () -> [IPAddress]
        /// Trust for every DERP node (tests); nil: as the DERP map says.
        public var derpTrustOverride: DERPServerTrust?
        /// Whether to send STUN probes (off for in-memory twins, which reach no STUN server).
        public var stun: Bool
        /// How often the periodic work runs.
        public var tickInterval: Duration
        /// SO_MARK of every socket magicsock opens (UDP and relay connections), so that the node's policy
        /// routing never sends them into its own tunnel. Nil: none.
        public var socketMark: UInt32?

        public init(port: UInt16 = 41641, localAddresses: @escaping @Sendable () -> [IPAddress] = { LocalAddresses.current() },
                    derpTrustOverride: DERPServerTrust? = nil, stun: Bool = true, tickInterval: Duration = .seconds(1)) {
            self.port = port
            self.localAddresses = localAddresses
            self.derpTrustOverride = derpTrustOverride
            self.stun = stun
            self.tickInterval = tickInterval
        }
    }

    /// The prefix of the synthetic handles (fd7a:115c:a1e0:ffff::/64, inside Tailscale's ULA range, never routed).
    static let handlePrefix: UInt64 = 0xFD7A_115C_A1E0_FFFF

    struct State {
        var peers: [NodePublic: PeerPath] = [:]
        var sharedKeys: [NodePublic: DiscoSharedKey] = [:]
        var handleOf: [NodePublic: WireGuardEndpoint] = [:]
        var keyOfHandle: [WireGuardEndpoint: NodePublic] = [:]
        var keyOfAddress: [AddrPort: NodePublic] = [:]
        var keyOfDisco: [DiscoPublic: NodePublic] = [:]
        var nextHandle: UInt64 = 1
        var localPort: UInt16 = 0
        var localAddresses: [IPAddress] = []
        var endpoints: [AddrPort] = []
        var endpointTypes: [Int] = []
        var stunPending: [[UInt8]: (region: Int, server: AddrPort, sentAt: Duration)] = [:]
        var stunAnswers: [(region: Int, server: AddrPort, mapped: AddrPort, latency: Duration)] = []
        var report: NetcheckResult?
        var lastNetcheck: Duration?
        var userPings: [UInt64: CheckedContinuation<DiscoPingResult?, Never>] = [:]
        /// When each address was last pinged back (at most once a second an address).
        var pingBacks: [AddrPort: Duration] = [:]
        /// The last handshake initiation sent to each peer, until the peer answers (see `retryInitiation`).
        var pendingInitiations: [NodePublic: [UInt8]] = [:]
        /// Packets relayed from node keys that are not (yet) peers: control may tell us of a peer a moment
        /// after it told the peer of us. Replayed when the key becomes a peer; kept briefly, and bounded.
        var strangers: [NodePublic: [(packet: [UInt8], region: Int, at: Duration)]] = [:]
        var nextUserPing: UInt64 = 1
        var open = false
    }

    public let configuration: Configuration
    let inner: any PacketBind
    private let currentNodeKey: Mutex<NodePrivate>
    var nodeKey: NodePrivate { currentNodeKey.withLock { $0 } }
    public let discoKey: DiscoPrivate
    let logger: Logger
    let state = Mutex(State())
    let derpQueue = PacketQueue<(NodePublic, Int, [UInt8])>(limit: 2048)
    let derp: DERPConnections
    let epoch = ContinuousClock.now
    private let callbacks = Mutex(Callbacks())

    struct Callbacks {
        var endpointsChanged: (@Sendable ([AddrPort], [Int]) -> Void)?
        var netcheckChanged: (@Sendable (NetcheckResult) -> Void)?
    }

    /// - Parameters:
    ///   - inner: the UDP bind (a `LinuxBind`, or a `MemoryBind` in tests).
    ///   - nodeKey: this node's key: its DERP identity.
    ///   - discoKey: this process's disco key.
    public init(inner: any PacketBind, nodeKey: NodePrivate, discoKey: DiscoPrivate, configuration: Configuration, logger: Logger) {
        self.inner = inner
        currentNodeKey = Mutex(nodeKey)
        self.discoKey = discoKey
        self.configuration = configuration
        self.logger = logger
        let queue = derpQueue
        derp = DERPConnections(privateKey: nodeKey, trustOverride: configuration.derpTrustOverride,
                               socketMark: configuration.socketMark, logger: logger) { source, region, packet in
            queue.push((source, region, packet))
        }
    }

    /// Called with the new endpoints (and their types) whenever they change.
    public func onEndpointsChanged(_ body: @escaping @Sendable ([AddrPort], [Int]) -> Void) {
        callbacks.withLock { $0.endpointsChanged = body }
    }

    /// Called after each netcheck whose summary changed.
    public func onNetcheckChanged(_ body: @escaping @Sendable (NetcheckResult) -> Void) {
        callbacks.withLock { $0.netcheckChanged = body }
    }

    func now() -> Duration { ContinuousClock.now - epoch }

    // MARK: Configuration from the network map

    /// A new node key (after a re-login with a rotated key): the DERP identity and the key pings carry.
    public func setNodeKey(_ key: NodePrivate) {
        currentNodeKey.withLock { $0 = key }
        derp.setPrivateKey(key)
    }

    /// The relay map.
    public func setDERPMap(_ map: DERPMap) {
        let changed = derp.map != map
        derp.setMap(map)
        if derp.home == 0 || map.regions[derp.home] == nil {
            // Until a netcheck says better: the lowest region ID.
            if let first = map.regions.keys.sorted().first { derp.setHome(first) }
        }
        // New regions: measure them now rather than at the next periodic netcheck.
        if changed { Task { await self.netcheckAndPublish() } }
    }

    /// Replaces the peer set. Returns the handle of every peer (the device's endpoint for it).
    @discardableResult
    public func setPeers(_ peers: [MagicPeer]) -> [NodePublic: WireGuardEndpoint] {
        var replay: [(NodePublic, Int, [UInt8])] = []
        // Active peers whose endpoints changed while no direct path is proven: probe the new ones now
        // (a peer's STUN address often arrives a moment after the peer itself).
        var probe: [NodePublic] = []
        let now = now()
        defer {
            for item in replay { derpQueue.push(item) }
            for key in probe { runWork(for: key, force: true) }
        }
        return state.withLock { s in
            for peer in peers where s.peers[peer.nodeKey] == nil {
                for held in s.strangers.removeValue(forKey: peer.nodeKey) ?? [] { replay.append((peer.nodeKey, held.region, held.packet)) }
            }
            let wanted = Set(peers.map(\.nodeKey))
            for key in s.peers.keys where !wanted.contains(key) {
                s.peers[key] = nil
                s.sharedKeys[key] = nil
                if let h = s.handleOf.removeValue(forKey: key) { s.keyOfHandle[h] = nil }
            }
            s.keyOfAddress = s.keyOfAddress.filter { wanted.contains($0.value) }
            s.keyOfDisco = [:]
            for peer in peers {
                var path = s.peers[peer.nodeKey] ?? PeerPath(nodeKey: peer.nodeKey, discoKey: peer.discoKey, homeDERP: peer.homeDERP)
                if path.discoKey != peer.discoKey {
                    // A new disco key: the peer restarted; what we knew of its paths is stale.
                    path = PeerPath(nodeKey: peer.nodeKey, discoKey: peer.discoKey, homeDERP: peer.homeDERP)
                    s.sharedKeys[peer.nodeKey] = nil
                }
                path.homeDERP = peer.homeDERP
                if path.controlEndpoints != peer.endpoints, !path.hasTrustedPath(now: now),
                   path.lastActivity.map({ now - $0 < PathTiming.sessionActiveTimeout }) ?? false {
                    probe.append(peer.nodeKey)
                }
                path.controlEndpoints = peer.endpoints
                s.peers[peer.nodeKey] = path
                if let d = peer.discoKey {
                    s.keyOfDisco[d] = peer.nodeKey
                    if s.sharedKeys[peer.nodeKey] == nil {
                        s.sharedKeys[peer.nodeKey] = try? DiscoSharedKey(privateKey: discoKey, peer: d)
                    }
                }
                if s.handleOf[peer.nodeKey] == nil {
                    let handle = WireGuardEndpoint(address: .v6(Self.handlePrefix, s.nextHandle), port: 1)
                    s.nextHandle += 1
                    s.handleOf[peer.nodeKey] = handle
                    s.keyOfHandle[handle] = peer.nodeKey
                }
            }
            return s.handleOf
        }
    }

    /// The handle of a peer (nil: not a peer).
    public func handle(for key: NodePublic) -> WireGuardEndpoint? { state.withLock { $0.handleOf[key] } }

    /// How a peer is reached now.
    public func status(of key: NodePublic) -> MagicPeerStatus? {
        let now = now()
        return state.withLock { s in
            guard let p = s.peers[key] else { return nil }
            return MagicPeerStatus(currentAddress: p.hasTrustedPath(now: now) ? p.bestAddress : nil, homeDERP: p.homeDERP,
                                   lastActivity: p.lastActivity)
        }
    }

    /// This node's endpoints as last reported.
    public var endpoints: [AddrPort] { state.withLock { $0.endpoints } }
    /// Their types (`EndpointType`), in the same order.
    public var endpointTypes: [Int] { state.withLock { $0.endpointTypes } }
    public var homeDERP: Int { derp.home }
    public var connectedDERPRegions: [Int] { derp.connectedRegions }
    public var lastNetcheck: NetcheckResult? { state.withLock { $0.report } }

    // MARK: PacketBind

    public var receiverCount: Int { inner.receiverCount + 1 }
    var derpReceiver: Int { inner.receiverCount }

    public func open(port: UInt16) throws -> UInt16 {
        let wanted = port != 0 ? port : configuration.port
        if let mark = configuration.socketMark { try inner.setMark(mark) }
        let bound: UInt16
        do {
            bound = try inner.open(port: wanted)
        } catch {
            guard wanted != 0 else { throw error }
            logger.info("UDP port \(wanted) is not available (\(error)); using any port")
            bound = try inner.open(port: 0)
        }
        derpQueue.reopen()
        state.withLock { s in
            s.localPort = bound
            s.open = true
        }
        refreshEndpoints(stunChanged: false)
        return bound
    }

    public func close() {
        inner.close()
        derpQueue.close()
        state.withLock { $0.open = false }
    }

    /// Closes the DERP connections too (the bind itself is closed by the device).
    public func shutdown() {
        close()
        derp.close()
        let waiting = state.withLock { s -> [CheckedContinuation<DiscoPingResult?, Never>] in
            defer { s.userPings = [:] }
            return Array(s.userPings.values)
        }
        for c in waiting { c.resume(returning: nil) }
    }

    /// The device's fwmark; magicsock's own mark (``Configuration/socketMark``), when set, wins.
    public func setMark(_ mark: UInt32) throws { try inner.setMark(configuration.socketMark ?? mark) }

    public func receive(_ receiver: Int, into buffers: PacketBuffers) throws -> Int {
        if receiver == derpReceiver { return try receiveFromDERP(into: buffers) }
        while true {
            let n = try inner.receive(receiver, into: buffers)
            var kept = 0
            var disco: [([UInt8], AddrPort)] = []
            var stun: [([UInt8], AddrPort)] = []
            let now = now()
            state.withLock { s in
                for i in 0..<n {
                    let length = buffers.lengths[i]
                    guard length > 0 else { continue }
                    let bytes = buffers.packet(i)
                    let source = AddrPort(address: buffers.endpoints[i].address, port: buffers.endpoints[i].port)
                    let raw = UnsafeRawBufferPointer(bytes)
                    if DiscoPacket.looksLikeDisco(raw) {
                        disco.append((Array(raw), source))
                        buffers.lengths[i] = 0
                    } else if Self.looksLikeSTUNResponse(raw) {
                        stun.append((Array(raw), source))
                        buffers.lengths[i] = 0
                    } else if let key = s.keyOfAddress[source], let handle = s.handleOf[key] {
                        if raw.count >= 4 && (raw[0] == 2 || raw[0] == 4) && s.pendingInitiations[key] != nil {
                            s.pendingInitiations[key] = nil
                        }
                        buffers.endpoints[i] = handle
                        s.peers[key]?.lastActivity = now
                        kept += 1
                    } else {
                        // WireGuard from an address no disco exchange vouched for: magicsock decides
                        // paths, so it is dropped (the peer's pings will bring the address in).
                        buffers.lengths[i] = 0
                    }
                }
            }
            for (bytes, source) in disco { handleDisco(bytes, from: .udp(source)) }
            for (bytes, source) in stun { handleSTUN(bytes, from: source) }
            if kept > 0 { return n }
        }
    }

    private func receiveFromDERP(into buffers: PacketBuffers) throws -> Int {
        while true {
            guard let items = derpQueue.pop(maximum: buffers.capacity) else { throw DeviceIOError.closed }
            var count = 0
            let now = now()
            var disco: [([UInt8], NodePublic, Int)] = []
            state.withLock { s in
                for (source, region, packet) in items {
                    logger.trace("DERP \(region): \(packet.count) bytes from \(source.shortDescription)")
                    if s.peers[source] == nil {
                        Self.holdStranger(&s, source, region, packet, now: now)
                        continue
                    }
                    if packet.count >= 4 && (packet[0] == 2 || packet[0] == 4) { s.pendingInitiations[source] = nil }
                    if DiscoPacket.looksLikeDisco(packet) {
                        disco.append((packet, source, region))
                        continue
                    }
                    guard let handle = s.handleOf[source] else { continue }
                    let stored = packet.withUnsafeBytes { buffers.store($0, in: count, at: 0) }
                    guard stored else { continue }
                    buffers.endpoints[count] = handle
                    s.peers[source]?.lastActivity = now
                    count += 1
                }
            }
            for (bytes, source, region) in disco { handleDisco(bytes, from: .derp(source, region)) }
            if count > 0 { return count }
        }
    }

    public func send(_ buffers: PacketBuffers, count: Int) throws {
        let now = now()
        var viaDERP: [(Int, [UInt8], NodePublic, Int)] = []  // slot, bytes, destination, region
        var needWork: Set<NodePublic> = []
        var udpCount = 0
        state.withLock { s in
            for i in 0..<count where buffers.lengths[i] > 0 {
                let handle = buffers.endpoints[i]
                guard let key = s.keyOfHandle[handle], var path = s.peers[key] else {
                    if handle.address.isHandle { buffers.lengths[i] = 0 } else { udpCount += 1 }
                    continue
                }
                path.lastActivity = now
                let route = path.route(now: now)
                if route.derp {
                    viaDERP.append((i, Array(UnsafeRawBufferPointer(buffers.packet(i))), key, path.homeDERP))
                    needWork.insert(key)
                }
                if let udp = route.udp {
                    buffers.endpoints[i] = WireGuardEndpoint(address: udp.address, port: udp.port)
                    udpCount += 1
                } else {
                    buffers.lengths[i] = 0
                }
                s.peers[key] = path
            }
        }
        if udpCount > 0 { try inner.send(buffers, count: count) }
        for (slot, bytes, key, region) in viaDERP where derp.send(bytes, to: key, region: region) {
            // Counted as sent when DERP took it.
            if buffers.lengths[slot] == 0 { buffers.lengths[slot] = bytes.count }
        }
        for key in needWork { runWork(for: key, force: false) }
    }

    @discardableResult
    public func send(_ datagram: UnsafeRawBufferPointer, to endpoint: WireGuardEndpoint) throws -> Bool {
        let now = now()
        let plan: (NodePublic, PeerPath.SendRoute, Int)? = state.withLock { s in
            guard let key = s.keyOfHandle[endpoint], var path = s.peers[key] else { return nil }
            path.lastActivity = now
            s.peers[key] = path
            return (key, path.route(now: now), path.homeDERP)
        }
        guard let (key, route, region) = plan else {
            if endpoint.address.isHandle { return false }
            return try inner.send(datagram, to: endpoint)
        }
        if datagram.count == 148 && datagram[0] == 1 && datagram[1] == 0 && datagram[2] == 0 && datagram[3] == 0 {
            let bytes = Array(datagram)
            state.withLock { $0.pendingInitiations[key] = bytes }
            retryInitiation(bytes, to: key)
        }
        var sent = false
        logger.trace("send \(datagram.count) bytes to \(key.shortDescription): udp \(route.udp.map(\.description) ?? "-"), derp \(route.derp)")
        if let udp = route.udp {
            sent = (try? inner.send(datagram, to: WireGuardEndpoint(address: udp.address, port: udp.port))) ?? false
        }
        if route.derp {
            sent = derp.send(Array(datagram), to: key, region: region) || sent
            runWork(for: key, force: false)
        }
        return sent
    }

    /// Keeps a packet relayed from a key that is not a peer yet (at most 8 a key, 64 keys, 3 s).
    static func holdStranger(_ s: inout State, _ source: NodePublic, _ region: Int, _ packet: [UInt8], now: Duration) {
        let horizon = now - .seconds(3)
        if s.strangers.count >= 64 { s.strangers = s.strangers.filter { $0.value.contains { $0.at > horizon } } }
        guard s.strangers[source] != nil || s.strangers.count < 64 else { return }
        var held = (s.strangers[source] ?? []).filter { $0.at > horizon }
        guard held.count < 8 else { return }
        held.append((packet, region, now))
        s.strangers[source] = held
    }

    /// Sends an unanswered handshake initiation again after 0.5, 1.5 and 3 s (WireGuard itself retries
    /// with a new one after 5 s): the first copy often meets a peer that is not on the relay yet, or does not
    /// know us yet (control tells the two sides of a new pair a moment apart). The same bytes are safe to
    /// repeat: a responder that got them already refuses the copy as a replay.
    func retryInitiation(_ bytes: [UInt8], to key: NodePublic) {
        Task { [weak self] in
            for delay in [500, 1000, 1500] {
                try? await Task.sleep(for: .milliseconds(delay))
                guard let self else { return }
                let now = self.now()
                let plan: (PeerPath.SendRoute, Int)? = self.state.withLock { s in
                    guard s.open, s.pendingInitiations[key] == bytes, let path = s.peers[key] else { return nil }
                    return (path.route(now: now), path.homeDERP)
                }
                guard let (route, region) = plan else { return }
                self.logger.debug("peer \(key.shortDescription): handshake initiation unanswered, sending it again")
                if let udp = route.udp {
                    _ = bytes.withUnsafeBytes { try? self.inner.send($0, to: WireGuardEndpoint(address: udp.address, port: udp.port)) }
                }
                if route.derp { self.derp.send(bytes, to: key, region: region) }
            }
        }
    }

    // MARK: Disco

    enum DiscoSource {
        case udp(AddrPort)
        case derp(NodePublic, Int)
    }

    func handleDisco(_ bytes: [UInt8], from source: DiscoSource) {
        guard let sender = DiscoPacket.senderKey(of: bytes) else { return }
        let known: (NodePublic, DiscoSharedKey)? = state.withLock { s in
            guard let key = s.keyOfDisco[sender], let shared = s.sharedKeys[key] else { return nil }
            return (key, shared)
        }
        // Disco from a key that is not a peer's is dropped, as Tailscale does.
        guard let (key, shared) = known, let message = try? DiscoPacket.open(bytes, sharedKey: shared) else { return }
        if case .derp(let relayedFrom, _) = source, relayedFrom != key {
            return  // a disco key that does not belong to the node key the relay vouches for
        }
        let now = now()
        switch message {
        case .ping(let ping):
            if let claimed = ping.nodeKey, claimed != key { return }
            let seen: AddrPort
            var pingBack: [AddrPort] = []
            switch source {
            case .udp(let address):
                seen = address
                let unproven = state.withLock { s -> Bool in
                    guard var path = s.peers[key] else { return false }
                    // Worth a ping back when this address is not our proven path to the peer and was not
                    // pinged in the last second (no ping storms between two peers).
                    let proven = path.hasTrustedPath(now: now) && path.bestAddress == address
                    let recent = s.pingBacks[address].map { now - $0 < .seconds(1) } ?? false
                    path.notePingFrom(address, now: now)
                    s.peers[key] = path
                    s.keyOfAddress[address] = key
                    guard !proven && !recent else { return false }
                    if s.pingBacks.count >= 256 { s.pingBacks = s.pingBacks.filter { now - $0.value < .seconds(1) } }
                    s.pingBacks[address] = now
                    return true
                }
                if unproven { pingBack.append(address) }
            case .derp(_, let region):
                seen = AddrPort(address: IPAddress(LegacyDERP.magicIP)!, port: UInt16(clamping: region))
            }
            sendDisco(.pong(DiscoPong(txID: ping.txID, source: seen)), to: key, shared: shared, via: source)
            // A ping from an address that is not our proven path (a NAT mapping the peer just opened
            // towards us, or one our own earlier ping could not get through yet): ping it back at once,
            // so that our side of the path is proven too (hole punching on both sides at once). At most
            // once a second an address, so that two peers never ping each other back and forth.
            for address in pingBack { sendPing(to: key, address: address, shared: shared) }
        case .pong(let pong):
            let udpSource: AddrPort? = if case .udp(let a) = source { a } else { nil }
            let answered: (PendingPing, Duration, Bool)? = state.withLock { s in
                guard var path = s.peers[key] else { return nil }
                let before = path.hasTrustedPath(now: now) ? path.bestAddress : nil
                guard let ping = path.handlePong(txID: pong.txID, from: udpSource, now: now) else { return nil }
                let after = path.hasTrustedPath(now: now) ? path.bestAddress : nil
                s.peers[key] = path
                if let udpSource { s.keyOfAddress[udpSource] = key }
                return (ping, now - ping.sentAt, before != after)
            }
            guard let (ping, latency, changed) = answered else { return }
            if changed, let udpSource {
                logger.info("peer \(key.shortDescription): direct path \(udpSource) (\(latency.milliseconds) ms)")
            }
            if case .user(let id) = ping.purpose {
                let region: Int? = if case .derp(_, let r) = source { r } else { nil }
                finishUserPing(id, DiscoPingResult(latency: latency, endpoint: udpSource, derpRegion: region))
            }
        case .callMeMaybe(let endpoints):
            guard case .derp = source else { return }  // only meaningful over DERP
            state.withLock { s in s.peers[key]?.noteCallMeMaybe(endpoints, now: now) }
            runWork(for: key, force: true, sendCallMeMaybe: false)
        case .unknown:
            return
        }
    }

    private func sendDisco(_ message: DiscoMessage, to key: NodePublic, shared: DiscoSharedKey, via: DiscoSource) {
        var rng = SystemRandomNumberGenerator()
        let nonce = (0..<DiscoPacket.nonceByteCount).map { _ in UInt8.random(in: 0...255, using: &rng) }
        guard let packet = try? DiscoPacket.seal(message, from: discoKey.publicKey, sharedKey: shared, nonce: nonce) else { return }
        switch via {
        case .udp(let address):
            _ = packet.withUnsafeBytes { try? inner.send($0, to: WireGuardEndpoint(address: address.address, port: address.port)) }
        case .derp(_, let region):
            derp.send(packet, to: key, region: region)
        }
    }

    /// One discovery ping to `address`.
    private func sendPing(to key: NodePublic, address: AddrPort, shared: DiscoSharedKey) {
        var rng = SystemRandomNumberGenerator()
        let txID = (0..<12).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let now = now()
        state.withLock { s in s.peers[key]?.notePingSent(txID: txID, to: address, purpose: .discovery, now: now) }
        sendDisco(.ping(DiscoPing(txID: txID, nodeKey: nodeKey.publicKey)), to: key, shared: shared, via: .udp(address))
    }

    /// Performs the pings (and call-me-maybe) the peer's path asks for now.
    func runWork(for key: NodePublic, force: Bool, sendCallMeMaybe: Bool = true, userPing: UInt64? = nil) {
        let now = now()
        var rng = SystemRandomNumberGenerator()
        let plan: (PeerPath.Work, DiscoSharedKey, Int, [AddrPort])? = state.withLock { s in
            guard var path = s.peers[key], let shared = s.sharedKeys[key] else { return nil }
            var work = path.work(now: now, force: force)
            if let userPing {
                // A user's ping goes everywhere at once: the best path, every candidate and DERP.
                var targets = path.candidates(now: now)
                if let best = path.bestAddress, !targets.contains(best) { targets.insert(best, at: 0) }
                work.pings = targets.map { ($0, .user(userPing)) }
            }
            s.peers[key] = path
            return (work, shared, path.homeDERP, s.endpoints)
        }
        guard let (work, shared, region, ours) = plan else { return }
        for (address, purpose) in work.pings {
            let txID = (0..<12).map { _ in UInt8.random(in: 0...255, using: &rng) }
            state.withLock { s in s.peers[key]?.notePingSent(txID: txID, to: address, purpose: purpose, now: now) }
            sendDisco(.ping(DiscoPing(txID: txID, nodeKey: nodeKey.publicKey)), to: key, shared: shared, via: .udp(address))
        }
        if let userPing {
            let txID = (0..<12).map { _ in UInt8.random(in: 0...255, using: &rng) }
            state.withLock { s in s.peers[key]?.notePingSent(txID: txID, to: nil, purpose: .user(userPing), now: now) }
            sendDisco(.ping(DiscoPing(txID: txID, nodeKey: nodeKey.publicKey)), to: key, shared: shared, via: .derp(key, region))
        }
        if work.callMeMaybe && sendCallMeMaybe && !ours.isEmpty {
            sendDisco(.callMeMaybe(ours), to: key, shared: shared, via: .derp(key, region))
        }
    }

    /// Pings a peer with disco (over DERP and every direct candidate at once) and returns the first
    /// pong, or nil after `timeout`.
    public func ping(_ key: NodePublic, timeout: Duration = .seconds(5)) async -> DiscoPingResult? {
        let id: UInt64? = state.withLock { s in
            guard s.peers[key]?.discoKey != nil else { return nil }
            defer { s.nextUserPing += 1 }
            return s.nextUserPing
        }
        guard let id else { return nil }
        return await withCheckedContinuation { continuation in
            state.withLock { $0.userPings[id] = continuation }
            runWork(for: key, force: false, sendCallMeMaybe: false, userPing: id)
            Task {
                try? await Task.sleep(for: timeout)
                self.finishUserPing(id, nil)
            }
        }
    }

    private func finishUserPing(_ id: UInt64, _ result: DiscoPingResult?) {
        let continuation = state.withLock { $0.userPings.removeValue(forKey: id) }
        continuation?.resume(returning: result)
    }

    // MARK: Periodic work

    /// Runs the timers (heartbeats, discovery, re-STUN, interface changes, idle DERP) until cancelled.
    public func run() async {
        var ticks = 0
        await netcheckAndPublish()
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.tickInterval)
            if Task.isCancelled { break }
            ticks += 1
            let active: [NodePublic] = {
                let now = now()
                return state.withLock { s in
                    s.peers.filter { $0.value.lastActivity.map { now - $0 < PathTiming.sessionActiveTimeout } ?? false }.map(\.key)
                }
            }()
            for key in active { runWork(for: key, force: false) }
            refreshEndpoints(stunChanged: false)
            if ticks % 25 == 0 { await netcheckAndPublish() }
            if ticks % 10 == 0 { derp.closeIdle() }
        }
    }

    /// Re-reads the interface addresses; when they changed (the host moved), forgets every direct
    /// path, re-STUNs and tells the peers.
    public func refreshEndpoints(stunChanged: Bool) {
        let addresses = configuration.localAddresses()
        let (changedAddresses, moved, update) = state.withLock { s -> (Bool, Bool, ([AddrPort], [Int])?) in
            let changedAddresses = s.localAddresses != addresses
            // The host had addresses and now has others: it moved (another network, a new lease).
            let moved = changedAddresses && !s.localAddresses.isEmpty && !Set(s.localAddresses).isSubset(of: Set(addresses))
            s.localAddresses = addresses
            var endpoints: [AddrPort] = []
            var types: [Int] = []
            if let r = s.report {
                for mapped in [r.globalV4, r.globalV6].compactMap({ $0 }) where !endpoints.contains(mapped) {
                    endpoints.append(mapped)
                    types.append(EndpointType.stun)
                }
            }
            for a in addresses where s.localPort != 0 {
                let e = AddrPort(address: a, port: s.localPort)
                if !endpoints.contains(e) {
                    endpoints.append(e)
                    types.append(EndpointType.local)
                }
            }
            guard endpoints != s.endpoints || types != s.endpointTypes else { return (changedAddresses, moved, nil) }
            s.endpoints = endpoints
            s.endpointTypes = types
            if changedAddresses {
                for key in s.peers.keys { s.peers[key]?.resetPath() }
                s.keyOfAddress = [:]
            }
            return (changedAddresses, moved, (endpoints, types))
        }
        if moved {
            // Connections made from an address the host no longer has are dead even if TCP has not
            // noticed yet: the relay connections start over at once.
            logger.info("local addresses changed: reconnecting to DERP")
            derp.reconnectAll()
        }
        guard let (endpoints, types) = update else { return }
        logger.info("endpoints: \(endpoints.map(\.description).joined(separator: ", "))")
        callbacks.withLock { $0.endpointsChanged }?(endpoints, types)
        if changedAddresses && !stunChanged {
            Task { await self.netcheckAndPublish() }
        }
        // Tell the active peers at once (call-me-maybe), so that they punch towards the new addresses.
        let now = now()
        let active = state.withLock { s in
            s.peers.filter { $0.value.lastActivity.map { now - $0 < PathTiming.sessionActiveTimeout } ?? false }.map(\.key)
        }
        for key in active { runWork(for: key, force: true) }
    }

    func netcheckAndPublish() async {
        let before = state.withLock { $0.report }
        let report = await netcheck()
        if let home = report.preferredDERP, home != derp.home {
            // Hysteresis: move only when the new region is clearly (10 ms) better.
            let current = report.regionLatency[derp.home]
            let best = report.regionLatency[home] ?? .zero
            if current == nil || derp.home == 0 || current! > best + .milliseconds(10) { derp.setHome(home) }
        }
        if before != report {
            callbacks.withLock { $0.netcheckChanged }?(report)
            refreshEndpoints(stunChanged: true)
        }
    }
}

extension IPAddress {
    /// Whether this is one of magicsock's synthetic peer handles.
    var isHandle: Bool {
        if case .v6(let hi, _) = self { return hi == Magicsock.handlePrefix }
        return false
    }
}

extension NodePublic {
    /// "nodekey:abcd1234" for logs.
    var shortDescription: String { String(description.prefix(16)) }
}

extension Duration {
    var milliseconds: Int64 {
        let c = components
        return c.seconds * 1000 + c.attoseconds / 1_000_000_000_000_000
    }
}
