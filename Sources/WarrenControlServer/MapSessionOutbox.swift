// The queue between the engine and one map stream's writer. The engine appends messages without waiting;
// the writer takes everything that piled up while it was busy and merges it (``MapUpdateMerger``), so a
// burst of changes costs a slow session a few messages instead of one per change. A writer also takes
// messages no more often than once per `minimumInterval`: the first change after a quiet time goes out at
// once, and a stream of changes leaves in batches, one per interval.

import Synchronization
import WarrenTailcfg

public final class MapSessionOutbox: AsyncSequence, Sendable {
    public typealias Element = MapResponse
    public typealias Failure = Never

    private struct State {
        /// Appended by the engine, not yet looked at by the writer.
        var pending: [MapResponse] = []
        /// Already merged, waiting to be taken one by one (the writer's side).
        var ready: [MapResponse] = []
        var readyIndex = 0
        var waiter: CheckedContinuation<MapResponse?, Never>?
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
    }

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

    /// Queues a message. Dropped once the session has ended.
    public func yield(_ message: MapResponse) {
        let resume: CheckedContinuation<MapResponse?, Never>? = state.withLock { s in
            guard !s.finished && !s.cancelled else { return nil }
            s.appended += 1
            if let waiter = s.waiter {
                s.waiter = nil
                s.delivered += 1
                return waiter
            }
            s.pending.append(message)
            return nil
        }
        resume?.resume(returning: message)
    }

    /// Ends the session: the writer still gets what is queued, then the end.
    public func finish() {
        let (waiter, handler) = state.withLock { s -> (CheckedContinuation<MapResponse?, Never>?, (@Sendable () -> Void)?) in
            guard !s.finished && !s.cancelled else { return (nil, nil) }
            s.finished = true
            let handler = s.onTermination
            s.onTermination = nil
            let waiter = s.waiter
            s.waiter = nil
            return (waiter, handler)
        }
        waiter?.resume(returning: nil)
        handler?()
    }

    /// The writer is gone: drops what is queued and ends the session.
    public func cancel() {
        let (waiter, handler) = state.withLock { s -> (CheckedContinuation<MapResponse?, Never>?, (@Sendable () -> Void)?) in
            guard !s.cancelled else { return (nil, nil) }
            s.cancelled = true
            s.pending = []
            s.ready = []
            s.readyIndex = 0
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

    /// (messages the engine queued, messages handed to the writer after merging).
    public var counts: (appended: Int, delivered: Int) {
        state.withLock { ($0.appended, $0.delivered) }
    }

    /// The next message: everything queued since the last call, merged; waits when nothing is queued.
    /// Nil when the session ended or the calling task was cancelled.
    public func next() async -> MapResponse? {
        // Pacing: wait out the rest of the interval since the last message (what arrives meanwhile is
        // merged). Leftovers of a batch already merged go at once.
        if minimumInterval > .zero {
            let (last, leftovers) = state.withLock { ($0.lastDelivery, $0.readyIndex < $0.ready.count) }
            if let last, !leftovers {
                let due = last.advanced(by: minimumInterval)
                if due > ContinuousClock.now {
                    do {
                        try await Task.sleep(until: due, clock: .continuous)
                    } catch {
                        cancel()
                        return nil
                    }
                }
            }
        }
        let message = await take()
        if message != nil, minimumInterval > .zero {
            let now = ContinuousClock.now
            state.withLock { $0.lastDelivery = now }
        }
        return message
    }

    private func take() async -> MapResponse? {
        enum Step {
            case message(MapResponse)
            case merge([MapResponse])
            case end
            case wait
        }
        let step: Step = state.withLock { s in
            if s.cancelled { return .end }
            if s.readyIndex < s.ready.count {
                let message = s.ready[s.readyIndex]
                s.readyIndex += 1
                s.delivered += 1
                return .message(message)
            }
            if !s.pending.isEmpty {
                let taken = s.pending
                s.pending = []
                return .merge(taken)
            }
            return s.finished ? .end : .wait
        }
        switch step {
        case .message(let message):
            return message
        case .end:
            return nil
        case .merge(let taken):
            // Merging happens outside the lock; only this (single) consumer touches `ready`.
            let merged = MapUpdateMerger.coalesce(taken)
            return state.withLock { s in
                guard !s.cancelled, let first = merged.first else { return nil }
                s.ready = Array(merged.dropFirst())
                s.readyIndex = 0
                s.delivered += 1
                return first
            }
        case .wait:
            if Task.isCancelled {
                cancel()
                return nil
            }
            let message = await withTaskCancellationHandler {
                await withCheckedContinuation { (continuation: CheckedContinuation<MapResponse?, Never>) in
                    let immediate: Step? = state.withLock { s in
                        if s.cancelled { return .end }
                        if !s.pending.isEmpty {
                            let taken = s.pending
                            s.pending = []
                            return .merge(taken)
                        }
                        if s.finished { return .end }
                        s.waiter = continuation
                        return nil
                    }
                    switch immediate {
                    case nil: break
                    case .merge(let taken):
                        // Rare: a message arrived between the two looks. Hand over the first, keep the rest.
                        let merged = MapUpdateMerger.coalesce(taken)
                        let first = state.withLock { s -> MapResponse? in
                            s.ready = Array(merged.dropFirst())
                            s.readyIndex = 0
                            if merged.first != nil { s.delivered += 1 }
                            return merged.first
                        }
                        continuation.resume(returning: first)
                    default:
                        continuation.resume(returning: nil)
                    }
                }
            } onCancel: {
                self.cancel()
            }
            return message
        }
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let outbox: MapSessionOutbox
        public mutating func next() async -> MapResponse? { await outbox.next() }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(outbox: self) }
}
