// The queue between the engine and one map stream's writer. The engine appends messages without waiting;
// the writer takes everything that piled up while it was busy and merges it (``MapUpdateMerger``), so a
// burst of changes costs a slow session a few messages instead of one per change. A writer also takes
// messages no more often than once per `minimumInterval`: the first change after a quiet time goes out at
// once, and a stream of changes leaves in batches, one per interval.
//
// A message the engine sends unchanged to many sessions (a join, an online patch) comes with a
// ``SharedMapMessage``: the first writer to send it encodes and compresses it, the others reuse the bytes.

import Synchronization
import WarrenControlTransport
import WarrenTailcfg

/// One message for many sessions, encoded once per compression setting.
public final class SharedMapMessage: Sendable {
    public let message: MapResponse
    private let framed = Mutex<[Bool: [UInt8]]>([:])

    public init(_ message: MapResponse) { self.message = message }

    /// The framed (and, if asked, zstd-compressed) message; encoded by the first caller.
    public func framed(compress: Bool, encoder: MapMessageEncoder? = nil) throws -> [UInt8] {
        try framed.withLock { cache in
            if let done = cache[compress] { return done }
            let bytes = try MapStreamFraming.frame(message, compress: compress, encoder: encoder)
            cache[compress] = bytes
            return bytes
        }
    }
}

/// What a writer sends next: the message, and its shared encoding when it went out unmerged.
public struct MapOutgoing: Sendable {
    /// The message, boxed: a `MapResponse` is about 1.5 KB inline, and the writer's async frames (each stream's task,
    /// alive as long as the stream) hold several of these; boxed, a value is a pointer.
    private final class Box: Sendable {
        let message: MapResponse
        init(_ message: MapResponse) { self.message = message }
    }
    private var box: Box
    public var message: MapResponse {
        get { box.message }
        set { box = Box(newValue) }
    }
    public var shared: SharedMapMessage?
    /// It carries what a peer needs to reach a node (its endpoints, disco key, home relay, a new node): it ends
    /// the pacing wait instead of waiting it out (see ``MapSessionOutbox/nextOutgoing(sleep:)``).
    public var urgent = false
    /// A full map's peers, as references to entries every viewer shares (`message.peers` is then empty): the
    /// writer encodes and compresses them with the entries' shared bytes (``MapMessageEncoder/frameFullMap``).
    public var peers: [CachedPeer]?

    public init(message: MapResponse, shared: SharedMapMessage?, urgent: Bool = false, peers: [CachedPeer]? = nil) {
        box = Box(message)
        self.shared = shared
        self.urgent = urgent
        self.peers = peers
    }

    /// The message with its peers written out (for readers other than the stream writer).
    public var materialized: MapResponse {
        guard let peers else { return message }
        var m = message
        m.peers = peers.map(\.node)
        return m
    }

    /// The bytes for the stream as pieces to write one after another: a full map's shared chunks are the encoder's own
    /// arrays, not copied into one message per stream (``MapMessageEncoder/fullMapPieces(_:peers:compress:)``).
    public func pieces(compress: Bool, encoder: MapMessageEncoder? = nil) throws -> [[UInt8]] {
        if shared == nil, let peers {
            return try (encoder ?? MapMessageEncoder()).fullMapPieces(message, peers: peers, compress: compress)
        }
        return [try framed(compress: compress, encoder: encoder)]
    }

    /// The bytes for the stream.
    public func framed(compress: Bool, encoder: MapMessageEncoder? = nil) throws -> [UInt8] {
        if let shared { return try shared.framed(compress: compress, encoder: encoder) }
        if let peers {
            return try (encoder ?? MapMessageEncoder()).frameFullMap(message, peers: peers, compress: compress)
        }
        return try MapStreamFraming.frame(message, compress: compress, encoder: encoder)
    }
}

public final class MapSessionOutbox: AsyncSequence, Sendable {
    public typealias Element = MapResponse
    public typealias Failure = Never

    private struct State {
        /// Appended by the engine, not yet looked at by the writer.
        var pending: [MapOutgoing] = []
        /// Already merged, waiting to be taken one by one (the writer's side).
        var ready: [MapOutgoing] = []
        var readyIndex = 0
        var waiter: CheckedContinuation<MapOutgoing?, Never>?
        /// No more messages will be added (the engine ended the session).
        var finished = false
        /// The writer went away: drop everything.
        var cancelled = false
        var onTermination: (@Sendable () -> Void)?
        /// Counts for statistics: messages appended, and messages handed to the writer.
        var appended = 0
        var delivered = 0
        /// When the writer last took a message.
        var lastDelivery: ContinuousClock.Instant?
        /// An urgent message is among `pending`.
        var urgentPending = false
        /// The writer waiting out the pacing interval, and which wait it is (a stale timer wakes nothing).
        var pacer: CheckedContinuation<Void, Never>?
        var pacing = 0
        /// The current wait was ended before the writer got to sleep.
        var pacerWoken = false
        /// Times `pending` was merged while the writer was away (statistics), and its length after the last merge.
        var merges = 0
        var mergedCount = 0
    }

    /// Messages waiting for the writer beyond which they are merged as they arrive.
    static let mergeThreshold = 32

    private let state = Mutex(State())
    private let minimumInterval: Duration

    public init(minimumInterval: Duration = .zero) {
        self.minimumInterval = minimumInterval
    }

    /// Called once when the session ends, by ``finish()`` or by the writer going away.
    public func setOnTermination(_ handler: @escaping @Sendable () -> Void) {
        let runNow: Bool = state.withLock { s in
            if s.finished || s.cancelled { return true }
            s.onTermination = handler
            return false
        }
        if runNow { handler() }
    }

    /// Queues a message. Dropped once the session has ended. An `urgent` message (one that lets the client reach
    /// a peer) is not held back by pacing.
    public func yield(_ message: MapResponse, urgent: Bool = false) {
        append(MapOutgoing(message: message, shared: nil, urgent: urgent))
    }

    /// Queues a full map whose peers are shared entries (see ``MapOutgoing/peers``).
    public func yield(_ message: MapResponse, peers: [CachedPeer], urgent: Bool = false) {
        append(MapOutgoing(message: message, shared: nil, urgent: urgent, peers: peers))
    }

    /// Queues a message many sessions get unchanged (its encoding is shared).
    public func yield(_ shared: SharedMapMessage, urgent: Bool = false) {
        append(MapOutgoing(message: shared.message, shared: shared, urgent: urgent))
    }

    private func append(_ item: MapOutgoing) {
        let (resume, pacer): (CheckedContinuation<MapOutgoing?, Never>?, CheckedContinuation<Void, Never>?) = state.withLock { s in
            guard !s.finished && !s.cancelled else { return (nil, nil) }
            s.appended += 1
            if let waiter = s.waiter {
                s.waiter = nil
                s.delivered += 1
                return (waiter, nil)
            }
            s.pending.append(item)
            // A writer that cannot write (its reader is slow or gone) takes nothing: what piles up is merged here,
            // so the queue stays a few messages long however many changes come (O(1) per session, not O(changes)).
            // (What cannot merge, a full map or a DNS change, is rare; merging again only once the queue doubled keeps
            // the work per message O(1) even then.)
            if s.pending.count >= Swift.max(Self.mergeThreshold, 2 * s.mergedCount) {
                s.pending = Self.coalesce(s.pending)
                s.mergedCount = s.pending.count
                s.merges += 1
            }
            guard item.urgent else { return (nil, nil) }
            s.urgentPending = true
            return (nil, Self.takePacer(&s))
        }
        resume?.resume(returning: item)
        pacer?.resume()
    }

    /// Ends the current pacing wait: the waiting writer, or the wait about to start.
    private static func takePacer(_ s: inout State) -> CheckedContinuation<Void, Never>? {
        if let pacer = s.pacer {
            s.pacer = nil
            return pacer
        }
        s.pacerWoken = true
        return nil
    }

    private func wakePacer(_ pacing: Int) {
        let pacer = state.withLock { s -> CheckedContinuation<Void, Never>? in
            guard s.pacing == pacing else { return nil }
            return Self.takePacer(&s)
        }
        pacer?.resume()
    }

    /// Waits out `duration`, or until an urgent message arrives or the session ends. False when the calling task
    /// was cancelled.
    private func pace(_ duration: Duration, sleep: @escaping @Sendable (Duration) async throws -> Void) async -> Bool {
        let pacing: Int? = state.withLock { s in
            if s.urgentPending || s.cancelled || s.finished { return nil }
            s.pacing += 1
            s.pacerWoken = false
            return s.pacing
        }
        guard let pacing else { return !Task.isCancelled }
        let timer = Task { [weak self] in
            try? await sleep(duration)
            self?.wakePacer(pacing)
        }
        defer { timer.cancel() }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now: Bool = state.withLock { s in
                    if s.pacerWoken || s.cancelled || s.pacing != pacing { return true }
                    s.pacer = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            self.wakePacer(pacing)
        }
        return !Task.isCancelled
    }

    /// Ends the session: the writer still gets what is queued, then the end.
    public func finish() {
        let (waiter, handler) = state.withLock { s -> (CheckedContinuation<MapOutgoing?, Never>?, (@Sendable () -> Void)?) in
            guard !s.finished && !s.cancelled else { return (nil, nil) }
            s.finished = true
            let handler = s.onTermination
            s.onTermination = nil
            let waiter = s.waiter
            s.waiter = nil
            // What is queued goes out without waiting out the pacing interval.
            if let pacer = s.pacer {
                s.pacer = nil
                pacer.resume()
            }
            return (waiter, handler)
        }
        waiter?.resume(returning: nil)
        handler?()
    }

    /// The writer is gone: drops what is queued and ends the session.
    public func cancel() {
        let (waiter, handler) = state.withLock { s -> (CheckedContinuation<MapOutgoing?, Never>?, (@Sendable () -> Void)?) in
            guard !s.cancelled else { return (nil, nil) }
            s.cancelled = true
            s.pending = []
            s.ready = []
            s.readyIndex = 0
            if let pacer = s.pacer {
                s.pacer = nil
                pacer.resume()
            }
            let handler = s.onTermination
            s.onTermination = nil
            let waiter = s.waiter
            s.waiter = nil
            return (waiter, handler)
        }
        waiter?.resume(returning: nil)
        handler?()
    }

    /// Messages queued and not yet taken by the writer (merged ones count once).
    public var pendingCount: Int {
        state.withLock { $0.pending.count + $0.ready.count - $0.readyIndex }
    }

    /// Times what waited for the writer was merged before it took it (a writer that could not keep up).
    public var earlyMerges: Int { state.withLock { $0.merges } }

    /// (messages the engine queued, messages handed to the writer after merging).
    public var counts: (appended: Int, delivered: Int) {
        state.withLock { ($0.appended, $0.delivered) }
    }

    /// The next message: everything queued since the last call, merged; waits when nothing is queued.
    /// Nil when the session ended or the calling task was cancelled.
    public func next() async -> MapResponse? {
        await nextOutgoing()?.materialized
    }

    /// Like ``next()``, with the shared encoding of a message that went out unmerged. `sleep` waits out
    /// the pacing interval (the stream writer passes its event loop's timer).
    public func nextOutgoing(
        sleep: @escaping @Sendable (Duration) async throws -> Void = { try await Task.sleep(for: $0) }
    ) async -> MapOutgoing? {
        // Pacing: wait out the rest of the interval since the last message (what arrives meanwhile is
        // merged). Leftovers of a batch already merged go at once, and so does an urgent message: pacing
        // batches bursts, it must not delay a peer's endpoints (a first packet sent in that gap is lost).
        if minimumInterval > .zero {
            let (last, leftovers) = state.withLock { ($0.lastDelivery, $0.readyIndex < $0.ready.count) }
            if let last, !leftovers {
                let remaining = last.advanced(by: minimumInterval) - ContinuousClock.now
                if remaining > .zero, !(await pace(remaining, sleep: sleep)) {
                    cancel()
                    return nil
                }
            }
        }
        let item = await take()
        if item != nil, minimumInterval > .zero {
            let now = ContinuousClock.now
            state.withLock { $0.lastDelivery = now }
        }
        return item
    }

    /// Merges each run of mergeable messages; a message alone keeps its shared encoding.
    private static func coalesce(_ items: [MapOutgoing]) -> [MapOutgoing] {
        guard items.count > 1 else { return items }
        var out = [MapOutgoing]()
        var run = [MapOutgoing]()
        func flush() {
            if run.count == 1 {
                out.append(run[0])
            } else if run.count > 1, let merged = mergedPatches(run) {
                out.append(MapOutgoing(message: merged, shared: nil))
            } else if run.count > 1 {
                var merger = MapUpdateMerger()
                for item in run { merger.add(item.message) }
                if let merged = merger.message { out.append(MapOutgoing(message: merged, shared: nil)) }
            }
            run = []
        }
        for item in items {
            if item.peers == nil, MapUpdateMerger.canMerge(item.message) {
                run.append(item)
            } else {
                flush()
                out.append(item)
            }
        }
        flush()
        return out
    }

    /// A run of batches of peer patches (what a mass reconnect queues for a writer that is behind: thousands of patches
    /// each), merged without ``MapUpdateMerger``'s per-peer entries (a `Node` inline each, over a kilobyte, for 10,000
    /// peers per merge per stream): one patch per peer, merged in order, sorted by node ID, the last control time. The
    /// same message MapUpdateMerger makes of such a run; nil when the run holds anything but patches, control times and
    /// keep-alives, or no patch.
    static func mergedPatches(_ run: [MapOutgoing]) -> MapResponse? {
        var controlTime: TailcfgTime?
        var index = [Int64: Int]()
        var patches = [PeerChange]()
        for item in run {
            let m = item.message
            guard m.node == nil, m.peersChanged == nil, m.peersRemoved == nil, m.packetFilter == nil, m.userProfiles == nil
            else { return nil }
            if let time = m.controlTime { controlTime = time }
            // The client does not apply a keep-alive (MapUpdateMerger counts only its time).
            if m.keepAlive == true { continue }
            for change in m.peersChangedPatch ?? [] {
                if let i = index[change.nodeID] {
                    patches[i] = MapUpdateMerger.merge(patches[i], change)
                } else {
                    index[change.nodeID] = patches.count
                    patches.append(change)
                }
            }
        }
        guard !patches.isEmpty else { return nil }
        var out = MapResponse()
        out.controlTime = controlTime
        out.peersChangedPatch = patches.sorted { $0.nodeID < $1.nodeID }
        return out
    }

    private func take() async -> MapOutgoing? {
        enum Step {
            case item(MapOutgoing)
            case merge([MapOutgoing])
            case end
            case wait
        }
        let step: Step = state.withLock { s in
            if s.cancelled { return .end }
            if s.readyIndex < s.ready.count {
                let item = s.ready[s.readyIndex]
                s.readyIndex += 1
                s.delivered += 1
                return .item(item)
            }
            if !s.pending.isEmpty {
                let taken = s.pending
                s.pending = []
                s.mergedCount = 0
                s.urgentPending = false
                return .merge(taken)
            }
            return s.finished ? .end : .wait
        }
        switch step {
        case .item(let item):
            return item
        case .end:
            return nil
        case .merge(let taken):
            // Merging happens outside the lock; only this (single) consumer touches `ready`.
            return handOver(Self.coalesce(taken))
        case .wait:
            if Task.isCancelled {
                cancel()
                return nil
            }
            return await withTaskCancellationHandler {
                await withCheckedContinuation { (continuation: CheckedContinuation<MapOutgoing?, Never>) in
                    let immediate: Step? = state.withLock { s in
                        if s.cancelled { return .end }
                        if !s.pending.isEmpty {
                            let taken = s.pending
                            s.pending = []
                            s.mergedCount = 0
                            s.urgentPending = false
                            return .merge(taken)
                        }
                        if s.finished { return .end }
                        s.waiter = continuation
                        return nil
                    }
                    switch immediate {
                    case nil:
                        break
                    case .merge(let taken):
                        // A message arrived between the two looks.
                        continuation.resume(returning: handOver(Self.coalesce(taken)))
                    default:
                        continuation.resume(returning: nil)
                    }
                }
            } onCancel: {
                self.cancel()
            }
        }
    }

    /// Returns the first of `merged` and keeps the rest for the following calls.
    private func handOver(_ merged: [MapOutgoing]) -> MapOutgoing? {
        state.withLock { s in
            guard !s.cancelled, let first = merged.first else { return nil }
            s.ready = Array(merged.dropFirst())
            s.readyIndex = 0
            s.delivered += 1
            return first
        }
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let outbox: MapSessionOutbox
        public mutating func next() async -> MapResponse? { await outbox.next() }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(outbox: self) }
}
