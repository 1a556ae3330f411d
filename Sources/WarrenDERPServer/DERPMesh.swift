// Relay meshing, the outgoing half, as Tailscale's derper does it (cmd/derper --mesh-with, derp/derphttp's watch
// loop): this relay connects to each mesh peer as a DERP client with its own key and the mesh key, sends
// WatchConns, and learns from PeerPresent and PeerGone which keys are connected there. A packet for a key that is
// not connected here but is on a peer goes to that peer as one ForwardPacket; the peer delivers it (the incoming
// half, DERPServerConnectionHandler). A peer whose server key is this relay's own is ourselves: dropped, so every
// relay of a region can be given the same list. A connection that breaks forgets what it taught (the keys are
// probably still there and come back with the next WatchConns) and is redialled after a pause that grows from
// half a second to `maximumRetryInterval` (Tailscale waits a fixed 5 s). When the last peer that had a key says
// it is gone, and the key is not connected here either, the local clients that sent to it get PeerGone.

public import DERPProtocol
import Logging
public import NIOCore
import Synchronization
public import TailscaleKeys
import WarrenDERPClient
public import WarrenDERPTransport

public final class DERPMesh: DERPMeshForwarder, Sendable {
    /// One relay to mesh with.
    public struct Peer: Sendable, Hashable, CustomStringConvertible {
        public var host: String
        public var port: Int
        /// nil: plain HTTP (a relay run with --plain-http).
        public var trust: DERPServerTrust?

        public init(host: String, port: Int, trust: DERPServerTrust?) {
            self.host = host
            self.port = port
            self.trust = trust
        }

        public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
    }

    public let peers: [Peer]
    let privateKey: NodePrivate
    let meshKey: DERPMeshKey
    let logger: Logger
    let maximumRetryInterval: Duration
    private let server = Mutex<DERPServer?>(nil)
    private let state = Mutex(State())
    private let droppedBehind = Atomic<UInt64>(0)

    /// Packets dropped because the link to their peer was behind, since start.
    public var droppedWhileBehind: UInt64 { droppedBehind.load(ordering: .relaxed) }

    private struct State {
        /// Key -> the peers (indices) that said it is connected there, in the order they said so: the first is used.
        var routes: [NodePublic: [Int]] = [:]
        /// Peer index -> its live connection.
        var links: [Int: DERPClient] = [:]
        /// Peers found to be this relay itself.
        var selves: Set<Int> = []
    }

    public init(peers: [Peer], privateKey: NodePrivate, meshKey: DERPMeshKey, logger: Logger,
                maximumRetryInterval: Duration = .seconds(5)) {
        self.peers = peers
        self.privateKey = privateKey
        self.meshKey = meshKey
        self.logger = logger
        self.maximumRetryInterval = maximumRetryInterval
    }

    /// The relay this mesh forwards for (its configuration's `meshForwarder` is this object).
    public func attach(_ server: DERPServer) { self.server.withLock { $0 = server } }

    // MARK: - Forwarding

    public func forward(source: NodePublic, destination: NodePublic, packet: ByteBuffer) -> Bool {
        guard let link = state.withLock({ s -> DERPClient? in
            guard let index = s.routes[destination]?.first else { return nil }
            return s.links[index]
        }) else { return false }
        let channel = link.channel
        // A link that is behind (its outbound buffer over NIO's high-water mark) drops rather than queues without
        // bound; the packet counts as taken (the key is there), as a full client queue drops its oldest.
        guard channel.isWritable else {
            droppedBehind.add(1, ordering: .relaxed)
            return true
        }
        var frame = channel.allocator.buffer(capacity: DERPWire.frameHeaderLength + 2 * DERPWire.keyLength + packet.readableBytes)
        frame.writeDERPFrameHeader(type: .forwardPacket, length: 2 * DERPWire.keyLength + packet.readableBytes)
        frame.writeDERPNodeKey(source)
        frame.writeDERPNodeKey(destination)
        frame.writeImmutableBuffer(packet)
        channel.writeAndFlush(frame, promise: nil)
        return true
    }

    // MARK: - What the mesh knows (tests, logs)

    /// The keys each peer has said are connected there, by peer.
    public var remoteKeys: [Peer: Set<NodePublic>] {
        state.withLock { s in
            var out: [Peer: Set<NodePublic>] = [:]
            for (key, indices) in s.routes { for i in indices { out[peers[i], default: []].insert(key) } }
            return out
        }
    }

    /// The peers connected now.
    public var connectedPeers: [Peer] { state.withLock { s in s.links.keys.sorted().map { peers[$0] } } }

    // MARK: - The watch loops

    /// Runs one watch loop per peer until cancelled.
    public func run() async {
        await withTaskGroup(of: Void.self) { group in
            for index in peers.indices {
                group.addTask { await self.watch(index) }
            }
        }
    }

    private func watch(_ index: Int) async {
        let peer = peers[index]
        var pause: Duration = .milliseconds(500)
        while !Task.isCancelled {
            let client: DERPClient
            do {
                client = try await DERPClient.connect(
                    to: DERPClient.Endpoint(host: peer.host, port: peer.port, trust: peer.trust),
                    privateKey: privateKey, info: DERPClientInfo(meshKey: meshKey, canAckPings: true))
            } catch {
                logger.warning("DERP mesh: cannot connect", metadata: ["peer": "\(peer)", "error": "\(error)", "retry in": "\(pause)"])
                try? await Task.sleep(for: pause)
                pause = min(pause * 2, maximumRetryInterval)
                continue
            }
            if client.serverKey == privateKey.publicKey {
                logger.info("DERP mesh: this peer is this relay itself; ignoring it", metadata: ["peer": "\(peer)"])
                state.withLock { _ = $0.selves.insert(index) }
                await client.close()
                return
            }
            do {
                try await client.send(.watchConns)
            } catch {
                await client.close()
                try? await Task.sleep(for: pause)
                pause = min(pause * 2, maximumRetryInterval)
                continue
            }
            state.withLock { $0.links[index] = client }
            logger.info("DERP mesh: connected; watching its clients", metadata: ["peer": "\(peer)", "server-key": "\(client.serverKey.shortString)"])
            pause = .milliseconds(500)
            await withTaskCancellationHandler {
                for await frame in client.frames {
                    switch frame {
                    case .peerPresent(let present):
                        // Mesh peers' own connections (and ours, seen from there) are not destinations.
                        if present.key != privateKey.publicKey && present.flags?.contains(.isMeshPeer) != true {
                            add(present.key, at: index)
                        }
                    case .peerGone(let key, _):
                        remove(key, at: index)
                    default:
                        continue
                    }
                }
            } onCancel: {
                client.channel.close(promise: nil)
            }
            // The connection broke: what it taught is forgotten (the keys come back after the next WatchConns).
            let forgotten = state.withLock { s -> [NodePublic] in
                s.links[index] = nil
                return s.routes.compactMap { $0.value.contains(index) ? $0.key : nil }
            }
            for key in forgotten { remove(key, at: index) }
            await client.close()
            guard !Task.isCancelled else { return }
            logger.warning("DERP mesh: connection lost; reconnecting", metadata: [
                "peer": "\(peer)", "keys forgotten": "\(forgotten.count)", "retry in": "\(pause)"])
            try? await Task.sleep(for: pause)
            pause = min(pause * 2, maximumRetryInterval)
        }
    }

    private func add(_ key: NodePublic, at index: Int) {
        state.withLock { s in
            var list = s.routes[key] ?? []
            if !list.contains(index) { list.append(index) }
            s.routes[key] = list
        }
    }

    private func remove(_ key: NodePublic, at index: Int) {
        let nowNowhere = state.withLock { s -> Bool in
            guard var list = s.routes[key], list.contains(index) else { return false }
            list.removeAll { $0 == index }
            s.routes[key] = list.isEmpty ? nil : list
            return list.isEmpty
        }
        if nowNowhere, let server = server.withLock({ $0 }) { server.notePeerGoneFromRegion(key) }
    }
}
