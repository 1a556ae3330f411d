import Foundation

/// A bounded blocking FIFO that can be closed and reopened: packets that arrive over DERP wait here
/// for the device's DERP receive thread. Full means dropped, as a full socket buffer drops.
final class DatagramQueue<Element: Sendable>: @unchecked Sendable {
    private let condition = NSCondition()
    private var items: [Element] = []
    private var head = 0
    private var closed = false
    let limit: Int

    init(limit: Int) { self.limit = limit }

    /// Appends unless closed or full; returns whether it was kept.
    @discardableResult
    func push(_ item: Element) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard !closed, items.count - head < limit else { return false }
        items.append(item)
        condition.signal()
        return true
    }

    /// Waits for at least one item and takes up to `maximum`; nil once closed.
    func pop(maximum: Int) -> [Element]? {
        condition.lock()
        defer { condition.unlock() }
        while items.count == head && !closed { condition.wait() }
        if closed { return nil }
        let n = min(maximum, items.count - head)
        let taken = Array(items[head..<(head + n)])
        head += n
        if head == items.count {
            items.removeAll(keepingCapacity: true)
            head = 0
        } else if head > 1024 {
            items.removeFirst(head)
            head = 0
        }
        return taken
    }

    func close() {
        condition.lock()
        closed = true
        condition.broadcast()
        condition.unlock()
    }

    func reopen() {
        condition.lock()
        closed = false
        items.removeAll()
        head = 0
        condition.unlock()
    }
}
