import Foundation

/// A bounded blocking FIFO that can be closed and reopened: the in-memory twins' queues, the device's
/// handshake queue, and magicsock's queue of packets that arrived over DERP.
public final class PacketQueue<Element: Sendable>: @unchecked Sendable {
    private let condition = NSCondition()
    private var items: [Element] = []
    private var closed = false
    public let limit: Int

    public init(limit: Int = 4096) { self.limit = limit }

    /// Appends unless closed or full (then the item is dropped, as a full socket would).
    public func push(_ item: Element) {
        condition.lock()
        defer { condition.unlock() }
        guard !closed, items.count < limit else { return }
        items.append(item)
        condition.broadcast()
    }

    /// Waits for at least one item (or the deadline) and takes up to `maximum`. Nil when closed.
    public func pop(maximum: Int, deadline: Date = .distantFuture) -> [Element]? {
        condition.lock()
        defer { condition.unlock() }
        while items.isEmpty && !closed {
            // (Foundation on Linux traps on `wait(until: .distantFuture)`.)
            if deadline == .distantFuture {
                condition.wait()
            } else if !condition.wait(until: deadline) {
                return []
            }
        }
        if items.isEmpty { return nil }
        let n = min(maximum, items.count)
        let taken = Array(items.prefix(n))
        items.removeFirst(n)
        return taken
    }

    /// How many items are waiting.
    public var count: Int {
        condition.lock()
        defer { condition.unlock() }
        return items.count
    }

    public func close() {
        condition.lock()
        closed = true
        condition.broadcast()
        condition.unlock()
    }

    public func reopen() {
        condition.lock()
        closed = false
        items.removeAll()
        condition.unlock()
    }
}

