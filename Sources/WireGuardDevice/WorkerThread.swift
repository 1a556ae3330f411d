import Foundation

/// A named OS thread running one closure, which another thread can wait for.
///
/// The device's packet loops are blocking loops on their own threads (not tasks), so that a busy
/// loop never starves Swift's cooperative pool and no packet crosses a thread on its way through.
final class WorkerThread: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    private let thread: Thread

    init(name: String, _ body: @escaping @Sendable () -> Void) {
        let done = self.done
        thread = Thread {
            body()
            done.signal()
        }
        thread.name = name
        thread.stackSize = 1 << 20
        thread.start()
    }

    /// Waits until the closure has returned. Call at most once.
    func join() { done.wait() }
}
