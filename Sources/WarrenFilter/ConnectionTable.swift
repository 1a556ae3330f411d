import WarrenPacket

/// A UDP or SCTP flow as seen on an inbound packet: protocol, source and destination.
public struct FlowKey: Hashable, Sendable {
    public var proto: IPProtocol
    public var src: IPAddress
    public var srcPort: UInt16
    public var dst: IPAddress
    public var dstPort: UInt16

    public init(proto: IPProtocol, src: IPAddress, srcPort: UInt16, dst: IPAddress, dstPort: UInt16) {
        self.proto = proto
        self.src = src
        self.srcPort = srcPort
        self.dst = dst
        self.dstPort = dstPort
    }
}

/// A bounded table of flows with least-recently-used eviction, as Tailscale's filter keeps
/// (flowtrack.Cache, 512 entries): inserting into a full table evicts the flow used least
/// recently; a lookup that hits counts as a use. Optionally, flows idle for longer than
/// `idleTimeout` are forgotten (Tailscale has no timeout; nil keeps that behaviour).
///
/// Times are `Duration`s since any fixed origin the caller chooses (a monotonic clock).
public struct ConnectionTable: Sendable {
    public let capacity: Int
    public let idleTimeout: Duration?

    private var slots: [FlowKey: Int] = [:]
    private var keys: [FlowKey] = []
    private var lastUsed: [Duration] = []
    /// Doubly linked list through slot numbers, most recent at `head`; -1 ends it.
    private var newer: [Int] = []
    private var older: [Int] = []
    private var head = -1
    private var tail = -1

    public init(capacity: Int = 512, idleTimeout: Duration? = nil) {
        precondition(capacity > 0, "a connection table needs room for at least one flow")
        self.capacity = capacity
        self.idleTimeout = idleTimeout
        slots.reserveCapacity(capacity)
    }

    public var count: Int { slots.count }

    /// Records a use of `key` at `now`, inserting it (and evicting the least recently used
    /// flow if the table is full). Returns the evicted flow, if any.
    @discardableResult
    public mutating func insert(_ key: FlowKey, now: Duration) -> FlowKey? {
        if let slot = slots[key] {
            lastUsed[slot] = now
            moveToFront(slot)
            return nil
        }
        if keys.count < capacity {
            let slot = keys.count
            keys.append(key)
            lastUsed.append(now)
            newer.append(-1)
            older.append(-1)
            slots[key] = slot
            linkAtFront(slot)
            return nil
        }
        let slot = tail
        let evicted = keys[slot]
        slots[evicted] = nil
        unlink(slot)
        keys[slot] = key
        lastUsed[slot] = now
        slots[key] = slot
        linkAtFront(slot)
        return evicted
    }

    /// Whether `key` is in the table (and not idle too long); a hit counts as a use.
    public mutating func lookup(_ key: FlowKey, now: Duration) -> Bool {
        guard let slot = slots[key] else { return false }
        if let timeout = idleTimeout, now - lastUsed[slot] > timeout {
            remove(slot)
            return false
        }
        lastUsed[slot] = now
        moveToFront(slot)
        return true
    }

    /// Whether `key` is present, without counting as a use.
    public func contains(_ key: FlowKey) -> Bool { slots[key] != nil }

    /// The flows from most to least recently used.
    public var flowsByRecency: [FlowKey] {
        var out: [FlowKey] = []
        var slot = head
        while slot >= 0 {
            out.append(keys[slot])
            slot = older[slot]
        }
        return out
    }

    public mutating func removeAll() {
        self = ConnectionTable(capacity: capacity, idleTimeout: idleTimeout)
    }

    // MARK: List plumbing

    private mutating func remove(_ slot: Int) {
        slots[keys[slot]] = nil
        unlink(slot)
        // Keep slots dense: move the last slot into the hole.
        let last = keys.count - 1
        if slot != last {
            let moved = keys[last]
            let movedNewer = newer[last], movedOlder = older[last]
            keys[slot] = moved
            lastUsed[slot] = lastUsed[last]
            newer[slot] = movedNewer
            older[slot] = movedOlder
            if movedNewer >= 0 { older[movedNewer] = slot } else { head = slot }
            if movedOlder >= 0 { newer[movedOlder] = slot } else { tail = slot }
            slots[moved] = slot
        }
        keys.removeLast()
        lastUsed.removeLast()
        newer.removeLast()
        older.removeLast()
    }

    private mutating func moveToFront(_ slot: Int) {
        guard slot != head else { return }
        unlink(slot)
        linkAtFront(slot)
    }

    private mutating func unlink(_ slot: Int) {
        let n = newer[slot], o = older[slot]
        if n >= 0 { older[n] = o } else { head = o }
        if o >= 0 { newer[o] = n } else { tail = n }
        newer[slot] = -1
        older[slot] = -1
    }

    private mutating func linkAtFront(_ slot: Int) {
        newer[slot] = -1
        older[slot] = head
        if head >= 0 { newer[head] = slot }
        head = slot
        if tail < 0 { tail = slot }
    }
}
