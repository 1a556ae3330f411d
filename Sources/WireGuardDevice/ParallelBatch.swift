import Foundation
import Synchronization

/// Per-packet work of one batch that `ParallelBatch` may run on two threads: `process(i)` must only
/// touch memory that belongs to packet i (and thread-safe objects).
protocol BatchWork: AnyObject, Sendable {
    func process(_ index: Int)
}

/// Spreads the per-packet work of one batch (encryption or decryption) over the calling thread
/// and one helper thread, so that one direction of traffic can use both cores.
///
/// Work stealing: both threads claim packet indices from one atomic word (a generation number and
/// the next index), so the caller never waits for a helper that has not been scheduled yet: it
/// then does the whole batch itself, and only waits for items the helper already claimed. A
/// helper that wakes late for an old batch cannot claim anything from a newer one (the generation
/// differs). Small batches run inline.
final class ParallelBatch: @unchecked Sendable {
    /// Batches smaller than this run on the calling thread alone.
    static let minimumParallelCount = 8

    private struct Job {
        var generation = 0
        var count = 0
        var work: (any BatchWork)?
    }

    private let wake = DispatchSemaphore(value: 0)
    /// generation << 32 | next index
    private let claims = Atomic<Int>(0)
    private let finished = Atomic<Int>(0)
    private let stopping = Atomic<Bool>(false)
    private let current = Mutex(Job())
    private var generation = 0
    private var helper: WorkerThread?

    init(name: String) {
        helper = WorkerThread(name: name) { [self] in helperLoop() }
    }

    /// Stops the helper thread (call once, from the owner, when its loop ends).
    func shutdown() {
        stopping.store(true, ordering: .releasing)
        wake.signal()
        helper?.join()
        helper = nil
    }

    /// Runs `work.process(i)` for every i in 0..<count, on this thread and the helper; returns
    /// when all are done. Call from one thread only.
    func run(_ work: any BatchWork, count: Int) {
        guard count >= Self.minimumParallelCount, helper != nil, count < 1 << 31 else {
            for i in 0..<count { work.process(i) }
            return
        }
        generation = (generation + 1) & 0x7fff_ffff
        let g = generation
        current.withLock { $0 = Job(generation: g, count: count, work: work) }
        finished.store(0, ordering: .relaxed)
        claims.store(g << 32, ordering: .releasing)
        wake.signal()
        Self.claimAll(work, generation: g, count: count, claims: claims, finished: finished)
        while finished.load(ordering: .acquiring) < count { sched_yield() }
        current.withLock { $0.work = nil }
    }

    private static func claimAll(_ work: any BatchWork, generation: Int, count: Int,
                                 claims: borrowing Atomic<Int>, finished: borrowing Atomic<Int>) {
        var value = claims.load(ordering: .acquiring)
        while true {
            guard value >> 32 == generation, value & 0xffff_ffff < count else { return }
            let (exchanged, original) = claims.compareExchange(expected: value, desired: value + 1,
                                                               ordering: .acquiringAndReleasing)
            if !exchanged {
                value = original
                continue
            }
            work.process(value & 0xffff_ffff)
            finished.wrappingAdd(1, ordering: .releasing)
            value = claims.load(ordering: .acquiring)
        }
    }

    private func helperLoop() {
        while true {
            wake.wait()
            if stopping.load(ordering: .acquiring) { return }
            let job = current.withLock { $0 }
            guard let work = job.work else { continue }
            Self.claimAll(work, generation: job.generation, count: job.count, claims: claims, finished: finished)
        }
    }
}
