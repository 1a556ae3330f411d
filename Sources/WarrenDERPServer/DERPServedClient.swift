// One connected, logged-in DERP client as the relay sees it, with its bounded send queues.

import DERPProtocol
import NIOCore
import Synchronization
import TailscaleKeys

/// A logged-in connection. Any event loop may enqueue frames for it; only its own loop writes them.
///
/// Memory is bounded: at most `depth` data packets and `depth` disco packets wait (a full queue
/// drops its oldest packet, as Tailscale's server drops at the queue head), plus at most
/// `controlDepth` control frames (new ones are dropped when full). Frames are written only while
/// the channel is writable, so a reader that does not keep up costs at most these queues plus
/// one batch in the channel's outbound buffer. A mesh watcher's presence news is coalesced per key (only the
/// latest PeerPresent or PeerGone of a key waits) and bounded by ``enqueueMeshUpdate(_:frame:limit:stallLimit:)``.
final class DERPServedClient: Sendable {
    let key: NodePublic
    let keyBytes: [UInt8]
    let channel: any Channel
    let connectionNumber: UInt64
    let info: DERPClientInfo
    let remote: SocketAddress?
    /// A trusted mesh peer (its ClientInfo carried the server's mesh key).
    let canMesh: Bool
    private let depth: Int
    private let controlDepth: Int
    private let state: Mutex<QueueState>
    let preferred = Atomic<Bool>(false)
    /// Set when the relay took the client's admission back (``DERPServer/revoke(_:)``): its frames still in flight
    /// are dropped, and the connection is closing.
    let revoked = Atomic<Bool>(false)

    struct QueueState {
        var packets = CircularBuffer<ByteBuffer>(initialCapacity: 8)
        var disco = CircularBuffer<ByteBuffer>(initialCapacity: 2)
        var control = CircularBuffer<ByteBuffer>(initialCapacity: 2)
        /// A mesh watcher's news not yet written: the latest frame per key, in the order keys first changed.
        var meshUpdates: [NodePublic: ByteBuffer] = [:]
        var meshOrder: [NodePublic] = []
        /// When a drain last found the channel unwritable with mesh news waiting (nil: it was written).
        var meshBlockedSince: NIODeadline?
        var drainScheduled = false
        var closed = false
    }

    enum EnqueueResult: Equatable {
        case queued
        /// Queued after dropping the oldest waiting packet.
        case queuedDroppingOldest
        /// The connection is closing.
        case closed
    }

    init(key: NodePublic, channel: any Channel, connectionNumber: UInt64, info: DERPClientInfo,
         remote: SocketAddress?, canMesh: Bool, depth: Int, controlDepth: Int) {
        self.key = key
        self.keyBytes = key.rawRepresentation
        self.channel = channel
        self.connectionNumber = connectionNumber
        self.info = info
        self.remote = remote
        self.canMesh = canMesh
        self.depth = max(1, depth)
        self.controlDepth = max(1, controlDepth)
        self.state = Mutex(QueueState())
    }

    /// Queues a whole RecvPacket frame. Returns what happened and how many packets now wait in
    /// that queue.
    func enqueuePacket(_ frame: ByteBuffer, disco: Bool) -> (EnqueueResult, depth: Int) {
        // On this client's own loop a burst read from the sender would otherwise fill the queue
        // before the scheduled drain runs: write the full queue out now (if the socket takes it).
        if channel.eventLoop.inEventLoop, state.withLock({ s in (disco ? s.disco.count : s.packets.count) >= self.depth }) {
            drain()
        }
        let (result, depth, schedule) = state.withLock { s -> (EnqueueResult, Int, Bool) in
            guard !s.closed else { return (.closed, 0, false) }
            var result = EnqueueResult.queued
            let depth: Int
            if disco {
                if s.disco.count >= self.depth { s.disco.removeFirst(); result = .queuedDroppingOldest }
                s.disco.append(frame)
                depth = s.disco.count
            } else {
                if s.packets.count >= self.depth { s.packets.removeFirst(); result = .queuedDroppingOldest }
                s.packets.append(frame)
                depth = s.packets.count
            }
            let schedule = !s.drainScheduled
            s.drainScheduled = true
            return (result, depth, schedule)
        }
        if schedule { scheduleDrain() }
        return (result, depth)
    }

    /// Queues a control frame; returns false if it was dropped (queue full or closing).
    @discardableResult
    func enqueueControl(_ frame: ByteBuffer) -> Bool {
        let (queued, schedule) = state.withLock { s -> (Bool, Bool) in
            guard !s.closed, s.control.count < controlDepth else { return (false, false) }
            s.control.append(frame)
            let schedule = !s.drainScheduled
            s.drainScheduled = true
            return (true, schedule)
        }
        if schedule { scheduleDrain() }
        return queued
    }

    func enqueueControl(_ frame: DERPFrame) {
        guard let bytes = try? frame.encoded() else { return }
        var buffer = channel.allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        enqueueControl(buffer)
    }

    enum MeshEnqueueResult: Equatable {
        case queued
        /// The key already had news waiting: replaced by this one.
        case coalesced
        /// Over `limit` keys waiting, or nothing written for `stallLimit`: the watcher is too slow (nothing queued).
        case tooFarBehind(pending: Int)
        case closed
    }

    /// Queues a PeerPresent or PeerGone for a mesh watcher, replacing news of the same key still waiting.
    func enqueueMeshUpdate(_ key: NodePublic, frame: ByteBuffer, limit: Int, stallLimit: TimeAmount?) -> MeshEnqueueResult {
        let (result, schedule) = state.withLock { s -> (MeshEnqueueResult, Bool) in
            guard !s.closed else { return (.closed, false) }
            if let blocked = s.meshBlockedSince, let stallLimit, NIODeadline.now() - blocked > stallLimit {
                return (.tooFarBehind(pending: s.meshOrder.count), false)
            }
            let result: MeshEnqueueResult
            if s.meshUpdates.updateValue(frame, forKey: key) == nil {
                guard s.meshOrder.count < limit else {
                    s.meshUpdates[key] = nil
                    return (.tooFarBehind(pending: s.meshOrder.count), false)
                }
                s.meshOrder.append(key)
                result = .queued
            } else {
                result = .coalesced
            }
            let schedule = !s.drainScheduled
            s.drainScheduled = true
            return (result, schedule)
        }
        if schedule { scheduleDrain() }
        return result
    }

    /// Mesh news waiting to be written (for tests).
    var pendingMeshUpdates: Int { state.withLock { $0.meshOrder.count } }

    /// Stops accepting frames and forgets queued ones.
    func markClosed() {
        state.withLock { s in
            s.closed = true
            s.packets.removeAll()
            s.disco.removeAll()
            s.control.removeAll()
            s.meshUpdates.removeAll()
            s.meshOrder.removeAll()
        }
    }

    /// Runs ``drain()`` on the channel's loop later (also from the loop itself, so that a read
    /// batch's packets go out in one flush).
    private func scheduleDrain() {
        channel.eventLoop.execute { self.drain() }
    }

    /// Writes everything queued if the channel is writable. Runs on the channel's event loop; the
    /// connection handler calls it again when the channel becomes writable.
    func drain() {
        guard channel.isActive else {
            markClosed()
            return
        }
        guard channel.isWritable else {  // drainScheduled stays true: writability calls back.
            state.withLock { s in
                if !s.meshOrder.isEmpty, s.meshBlockedSince == nil { s.meshBlockedSince = .now() }
            }
            return
        }
        let batch = state.withLock { s -> [ByteBuffer] in
            var out: [ByteBuffer] = []
            out.reserveCapacity(s.control.count + s.meshOrder.count + s.disco.count + s.packets.count)
            while let frame = s.control.popFirst() { out.append(frame) }
            for key in s.meshOrder { if let frame = s.meshUpdates[key] { out.append(frame) } }
            s.meshOrder.removeAll(keepingCapacity: s.meshOrder.count <= 1024)
            s.meshUpdates.removeAll(keepingCapacity: s.meshUpdates.count <= 1024)
            s.meshBlockedSince = nil
            while let frame = s.disco.popFirst() { out.append(frame) }
            while let frame = s.packets.popFirst() { out.append(frame) }
            s.drainScheduled = false
            return out
        }
        guard !batch.isEmpty else { return }
        for frame in batch { channel.write(frame, promise: nil) }
        channel.flush()
    }
}
