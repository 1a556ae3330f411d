// The DERP relay: who is connected, and moving packets between them.

import DERPProtocol
import Logging
import NIOCore
import Synchronization
public import TailscaleKeys
import WarrenDERPTransport

/// A DERP v2 relay (tailscale/tailscale:derp/derpserver). One instance serves any number of
/// connections, which reach it through ``installConnectionHandlers(on:remoteAddress:)`` after an
/// HTTP upgrade: from the standalone listener (``DERPListener``) or from another HTTP server such
/// as warren-control's.
///
/// - A key connected more than once: the connection that most recently connected or sent a packet
///   receives the key's packets ("last writer is active"); the others stay open and take over
///   when it leaves. Peers learn the key is gone only when its last connection closes.
/// - PeerGone(disconnected) goes to every client that sent packets to a key that left;
///   PeerGone(not here) answers the first packet to an unknown key.
/// - Mesh peers (ClientInfo with the mesh key) may WatchConns, ForwardPacket and ClosePeer.
public final class DERPServer: Sendable {
    public let configuration: DERPServerConfiguration
    public let publicKey: NodePublic
    let logger: Logger
    private let registry = Mutex(Registry())
    let counters = Counters()

    struct ClientSet {
        var connections: [DERPServedClient]
        var active: DERPServedClient
    }

    struct Registry {
        var clients: [NodePublic: ClientSet] = [:]
        /// Destination -> the keys that sent to it, for PeerGone.
        var sentTo: [NodePublic: Set<NodePublic>] = [:]
        /// Source -> the keys it sent to, to clean `sentTo` when the source leaves.
        var sentFrom: [NodePublic: Set<NodePublic>] = [:]
        var watchers: [UInt64: DERPServedClient] = [:]
        var nextConnectionNumber: UInt64 = 1
        var closing = false
    }

    final class Counters: Sendable {
        let packetsReceived = Atomic<UInt64>(0)
        let bytesReceived = Atomic<UInt64>(0)
        let packetsRelayed = Atomic<UInt64>(0)
        let droppedQueueHead = Atomic<UInt64>(0)
        let droppedUnknownDestination = Atomic<UInt64>(0)
        let droppedGone = Atomic<UInt64>(0)
        let connectionsAccepted = Atomic<UInt64>(0)
        let connectionsRefused = Atomic<UInt64>(0)
        let connectionsRevoked = Atomic<UInt64>(0)
        let protocolErrors = Atomic<UInt64>(0)
        let pingsAnswered = Atomic<UInt64>(0)
        let watchersDropped = Atomic<UInt64>(0)
        let deepestQueue = Atomic<Int>(0)
    }

    public init(configuration: DERPServerConfiguration) {
        self.configuration = configuration
        self.publicKey = configuration.privateKey.publicKey
        self.logger = configuration.logger
    }

    // MARK: - Statistics

    /// Counters since start, for logs, metrics and tests.
    public struct Statistics: Sendable, Hashable {
        public var clients: Int
        public var connections: Int
        public var packetsReceived: UInt64
        public var bytesReceived: UInt64
        public var packetsRelayed: UInt64
        /// Packets dropped at the head of a full per-client queue.
        public var droppedQueueHead: UInt64
        public var droppedUnknownDestination: UInt64
        /// Packets for a client that left before they could be queued.
        public var droppedGone: UInt64
        public var connectionsAccepted: UInt64
        /// Refused by admission, or that failed to log in.
        public var connectionsRefused: UInt64
        public var protocolErrors: UInt64
        public var pingsAnswered: UInt64
        /// The most packets that ever waited in one client's queue (never above the queue depth).
        public var deepestQueue: Int
    }

    public var statistics: Statistics {
        let (clients, connections) = registry.withLock { r in (r.clients.count, r.clients.values.reduce(0) { $0 + $1.connections.count }) }
        return Statistics(
            clients: clients, connections: connections,
            packetsReceived: counters.packetsReceived.load(ordering: .relaxed),
            bytesReceived: counters.bytesReceived.load(ordering: .relaxed),
            packetsRelayed: counters.packetsRelayed.load(ordering: .relaxed),
            droppedQueueHead: counters.droppedQueueHead.load(ordering: .relaxed),
            droppedUnknownDestination: counters.droppedUnknownDestination.load(ordering: .relaxed),
            droppedGone: counters.droppedGone.load(ordering: .relaxed),
            connectionsAccepted: counters.connectionsAccepted.load(ordering: .relaxed),
            connectionsRefused: counters.connectionsRefused.load(ordering: .relaxed),
            protocolErrors: counters.protocolErrors.load(ordering: .relaxed),
            pingsAnswered: counters.pingsAnswered.load(ordering: .relaxed),
            deepestQueue: counters.deepestQueue.load(ordering: .relaxed))
    }

    /// The keys connected now.
    public var connectedKeys: Set<NodePublic> { registry.withLock { Set($0.clients.keys) } }

    /// Whether `key` said this relay is its home (NotePreferred), on its active connection.
    public func isPreferred(_ key: NodePublic) -> Bool {
        registry.withLock { $0.clients[key]?.active }?.preferred.load(ordering: .relaxed) ?? false
    }

    // MARK: - Operator actions

    /// Sends a Health frame to every connection of `key` (nil or empty text clears the problem).
    public func sendHealth(_ text: String?, to key: NodePublic) {
        let targets = registry.withLock { $0.clients[key]?.connections ?? [] }
        for client in targets { client.enqueueControl(.health(text ?? "")) }
    }

    /// Tells every client to reconnect in `reconnectIn` and keep trying for `tryFor` (Restarting frame).
    public func announceRestart(reconnectInMilliseconds: UInt32, tryForMilliseconds: UInt32) {
        let all = registry.withLock { r in r.clients.values.flatMap(\.connections) }
        for client in all {
            client.enqueueControl(.restarting(reconnectInMilliseconds: reconnectInMilliseconds, tryForMilliseconds: tryForMilliseconds))
        }
    }

    /// Closes every connection and refuses new ones.
    public func closeAllConnections() {
        let all = registry.withLock { r -> [DERPServedClient] in
            r.closing = true
            return r.clients.values.flatMap(\.connections)
        }
        for client in all { client.channel.close(promise: nil) }
    }

    /// Closes every connection of `key` (a mesh peer's excepted) at once, because its admission was taken back (the
    /// node was deleted, or its key expired). It is unregistered before its channel closes: nothing more is relayed
    /// to it, frames it sent that are still being read are dropped, and the peers it talked to get PeerGone.
    /// Returns how many connections were closed.
    @discardableResult
    public func revoke(_ key: NodePublic) -> Int {
        let connections = registry.withLock { $0.clients[key]?.connections.filter { !$0.canMesh } ?? [] }
        // Counted before the connections close, so that whoever sees a connection end also sees it counted.
        if !connections.isEmpty {
            counters.connectionsRevoked.add(UInt64(connections.count), ordering: .relaxed)
            logger.info("DERP client disconnected: no longer admitted", metadata: [
                "key": "\(key.shortString)", "connections": "\(connections.count)"])
        }
        for client in connections {
            client.revoked.store(true, ordering: .relaxed)
            unregister(client)
            client.channel.close(promise: nil)
        }
        return connections.count
    }

    /// Asks `stillAdmitted` which of the connected clients (mesh peers excepted) may stay, and ``revoke(_:)``s the
    /// others. Returns the keys revoked.
    @discardableResult
    public func revalidate(_ stillAdmitted: DERPRevalidation) async -> [NodePublic] {
        let keys = registry.withLock { r in Set(r.clients.compactMap { key, set in set.connections.contains { !$0.canMesh } ? key : nil }) }
        guard !keys.isEmpty else { return [] }
        let keep = await stillAdmitted(keys)
        let gone = keys.subtracting(keep)
        for key in gone { revoke(key) }
        return Array(gone)
    }

    /// Connections closed by ``revoke(_:)`` since start.
    public var revokedConnections: UInt64 { counters.connectionsRevoked.load(ordering: .relaxed) }

    // MARK: - Registration

    /// Registers a logged-in connection; nil when the server is closing.
    func register(key: NodePublic, channel: any Channel, info: DERPClientInfo, remote: SocketAddress?,
                  canMesh: Bool) -> DERPServedClient? {
        let (client, watchers) = registry.withLock { r -> (DERPServedClient?, [DERPServedClient]) in
            guard !r.closing else { return (nil, []) }
            let client = DERPServedClient(key: key, channel: channel, connectionNumber: r.nextConnectionNumber, info: info,
                                          remote: remote, canMesh: canMesh, depth: configuration.sendQueueDepth,
                                          controlDepth: configuration.controlQueueDepth)
            r.nextConnectionNumber += 1
            if var set = r.clients[key] {
                set.connections.append(client)
                set.active = client
                r.clients[key] = set
            } else {
                r.clients[key] = ClientSet(connections: [client], active: client)
            }
            return (client, Array(r.watchers.values))
        }
        guard let client else { return nil }
        counters.connectionsAccepted.add(1, ordering: .relaxed)
        let present = DERPFrame.peerPresent(DERPPeerPresent(key: key, address: remote?.derpIPAddress, port: UInt16(clamping: remote?.port ?? 0),
                                                            flags: presentFlags(client)))
        for watcher in watchers where watcher !== client { tellWatcher(watcher, key: key, present) }
        logger.debug("DERP client connected", metadata: ["key": "\(key.shortString)", "connection": "\(client.connectionNumber)"])
        return client
    }

    private func presentFlags(_ client: DERPServedClient) -> DERPPeerPresentFlags {
        var flags: DERPPeerPresentFlags = client.canMesh ? .isMeshPeer : .isRegular
        if client.info.isProber { flags.insert(.isProber) }
        return flags
    }

    /// Removes a connection; when it was the key's last, tells the peers that sent to it and the watchers.
    func unregister(_ client: DERPServedClient) {
        client.markClosed()
        let (gone, notify, watchers) = registry.withLock { r -> (Bool, [DERPServedClient], [DERPServedClient]) in
            r.watchers[client.connectionNumber] = nil
            guard var set = r.clients[client.key] else { return (false, [], []) }
            set.connections.removeAll { $0 === client }
            if let last = set.connections.last {
                if set.active === client { set.active = last }
                r.clients[client.key] = set
                return (false, [], [])
            }
            r.clients[client.key] = nil
            var notify: [DERPServedClient] = []
            for sender in r.sentTo.removeValue(forKey: client.key) ?? [] {
                if let peer = r.clients[sender]?.active { notify.append(peer) }
                r.sentFrom[sender]?.remove(client.key)
            }
            for destination in r.sentFrom.removeValue(forKey: client.key) ?? [] {
                r.sentTo[destination]?.remove(client.key)
                if r.sentTo[destination]?.isEmpty == true { r.sentTo[destination] = nil }
            }
            return (true, notify, Array(r.watchers.values))
        }
        logger.debug("DERP client disconnected", metadata: ["key": "\(client.key.shortString)", "connection": "\(client.connectionNumber)"])
        guard gone else { return }
        let frame = DERPFrame.peerGone(client.key, reason: .disconnected)
        for peer in notify { peer.enqueueControl(frame) }
        for watcher in watchers { tellWatcher(watcher, key: client.key, frame) }
    }

    // MARK: - Relaying

    /// What ``relay(from:to:packet:knownTarget:)`` did with a packet.
    enum RelayOutcome: Equatable {
        case queued
        case droppedOldest
        case unknownDestination
        case forwardedToMesh
        case gone
    }

    /// Moves one packet from `source` to `destination`'s active connection. Returns what happened
    /// and the connection number of the target (0 if none, ``meshTarget`` when forwarded to a mesh peer). `knownTarget` is the target connection
    /// the caller already recorded a send to; the PeerGone bookkeeping is skipped when it is still
    /// the target.
    func relay(from source: DERPServedClient, to destination: NodePublic, packet: ByteBuffer,
               knownTarget: UInt64?) -> (RelayOutcome, UInt64) {
        counters.packetsReceived.add(1, ordering: .relaxed)
        counters.bytesReceived.add(UInt64(packet.readableBytes), ordering: .relaxed)
        let target = registry.withLock { r -> DERPServedClient? in
            if var set = r.clients[source.key], set.active !== source, set.connections.count > 1 {
                set.active = source  // last writer is active
                r.clients[source.key] = set
            }
            guard let target = r.clients[destination]?.active else { return nil }
            if target.connectionNumber != knownTarget {
                r.sentTo[destination, default: []].insert(source.key)
                r.sentFrom[source.key, default: []].insert(destination)
            }
            return target
        }
        guard let target else {
            if let mesh = configuration.meshForwarder, mesh.forward(source: source.key, destination: destination, packet: packet) {
                // Remembered as for a local destination: when the mesh says the key is gone, the sender hears of it.
                if knownTarget != Self.meshTarget {
                    registry.withLock { r in
                        r.sentTo[destination, default: []].insert(source.key)
                        r.sentFrom[source.key, default: []].insert(destination)
                    }
                }
                return (.forwardedToMesh, Self.meshTarget)
            }
            counters.droppedUnknownDestination.add(1, ordering: .relaxed)
            return (.unknownDestination, 0)
        }
        return (deliver(to: target, source: source.keyBytes, packet: packet), target.connectionNumber)
    }

    /// The "target connection" of a packet forwarded to the mesh (no local connection has this number).
    static let meshTarget = UInt64.max

    /// Delivers a packet a mesh peer forwarded to a local client.
    func deliverForwarded(source: NodePublic, destination: NodePublic, packet: ByteBuffer) -> RelayOutcome {
        counters.packetsReceived.add(1, ordering: .relaxed)
        guard let target = registry.withLock({ $0.clients[destination]?.active }) else {
            counters.droppedUnknownDestination.add(1, ordering: .relaxed)
            return .unknownDestination
        }
        return deliver(to: target, source: source.rawRepresentation, packet: packet)
    }

    private func deliver(to target: DERPServedClient, source: [UInt8], packet: ByteBuffer) -> RelayOutcome {
        var frame = target.channel.allocator.buffer(capacity: DERPWire.frameHeaderLength + DERPWire.keyLength + packet.readableBytes)
        frame.writeDERPFrameHeader(type: .recvPacket, length: DERPWire.keyLength + packet.readableBytes)
        frame.writeBytes(source)  // cached per client: no conversion per packet
        frame.writeImmutableBuffer(packet)
        let disco = packet.readableBytesView.starts(with: DERPFrame.discoMagic)
        let (result, depth) = target.enqueuePacket(frame, disco: disco)
        if depth > counters.deepestQueue.load(ordering: .relaxed) { counters.deepestQueue.store(depth, ordering: .relaxed) }
        switch result {
        case .queued:
            counters.packetsRelayed.add(1, ordering: .relaxed)
            return .queued
        case .queuedDroppingOldest:
            counters.packetsRelayed.add(1, ordering: .relaxed)
            counters.droppedQueueHead.add(1, ordering: .relaxed)
            return .droppedOldest
        case .closed:
            counters.droppedGone.add(1, ordering: .relaxed)
            return .gone
        }
    }

    // MARK: - Mesh

    /// A mesh peer asked to watch connections: it gets PeerPresent for everyone now, then changes.
    func addWatcher(_ watcher: DERPServedClient) {
        let everyone = registry.withLock { r -> [DERPServedClient] in
            r.watchers[watcher.connectionNumber] = watcher
            return r.clients.values.map(\.active)
        }
        for client in everyone where client !== watcher {
            let present = DERPFrame.peerPresent(DERPPeerPresent(
                key: client.key, address: client.remote?.derpIPAddress, port: UInt16(clamping: client.remote?.port ?? 0),
                flags: presentFlags(client)))
            guard tellWatcher(watcher, key: client.key, present) else { return }
        }
    }

    /// Queues presence news for a watcher (coalesced per key). A watcher too far behind is disconnected; returns false
    /// then.
    @discardableResult
    private func tellWatcher(_ watcher: DERPServedClient, key: NodePublic, _ frame: DERPFrame) -> Bool {
        guard let bytes = try? frame.encoded() else { return true }
        var buffer = watcher.channel.allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        switch watcher.enqueueMeshUpdate(key, frame: buffer, limit: configuration.meshWatcherQueueLimit,
                                         stallLimit: configuration.meshWatcherStallLimit) {
        case .queued, .coalesced, .closed:
            return true
        case .tooFarBehind(let pending):
            let removed = registry.withLock { $0.watchers.removeValue(forKey: watcher.connectionNumber) != nil }
            watcher.markClosed()
            watcher.channel.close(promise: nil)
            if removed {
                counters.watchersDropped.add(1, ordering: .relaxed)
                logger.warning("DERP mesh watcher disconnected: too far behind (it reconnects and watches again)", metadata: [
                    "key": "\(watcher.key.shortString)", "connection": "\(watcher.connectionNumber)", "pending": "\(pending)",
                    "limit": "\(configuration.meshWatcherQueueLimit)",
                    "stallLimit": "\(configuration.meshWatcherStallLimit.map { "\($0)" } ?? "none")"])
            }
            return false
        }
    }

    /// Mesh watchers disconnected for falling behind, since start.
    public var droppedWatchers: UInt64 { counters.watchersDropped.load(ordering: .relaxed) }

    /// The mesh says `key` is no longer connected to any peer of the region: unless it is connected here, the local
    /// clients that sent to it get PeerGone(disconnected), as when a local client leaves.
    public func notePeerGoneFromRegion(_ key: NodePublic) {
        let notify = registry.withLock { r -> [DERPServedClient] in
            guard r.clients[key] == nil else { return [] }
            var notify: [DERPServedClient] = []
            for sender in r.sentTo.removeValue(forKey: key) ?? [] {
                if let peer = r.clients[sender]?.active { notify.append(peer) }
                r.sentFrom[sender]?.remove(key)
            }
            return notify
        }
        let frame = DERPFrame.peerGone(key, reason: .disconnected)
        for peer in notify { peer.enqueueControl(frame) }
    }

    /// A mesh peer asked to disconnect `key`.
    func closePeer(_ key: NodePublic) {
        let connections = registry.withLock { $0.clients[key]?.connections ?? [] }
        for client in connections { client.channel.close(promise: nil) }
    }
}

