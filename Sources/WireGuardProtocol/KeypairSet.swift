// A peer's keypairs (wireguard-go device/keypair.go and BeginSymmetricSession):
//   current   sends and receives
//   previous  receives only: packets still in flight across a rekey
//   next      the responder's new keypair, unconfirmed: it becomes current when the first transport
//             packet encrypted with it arrives (the initiator's key confirmation).

/// The current, previous and next keypairs of one peer.
public struct KeypairSet: Sendable {
    public private(set) var current: Keypair?
    public private(set) var previous: Keypair?
    public private(set) var next: Keypair?

    public init() {}

    /// Every keypair held, for looking up an index.
    public var all: [Keypair] { [current, previous, next].compactMap { $0 } }

    /// The keypair whose local index is `index`, if this peer holds it.
    public func keypair(forLocalIndex index: UInt32) -> Keypair? {
        if let k = current, k.localIndex == index { return k }
        if let k = next, k.localIndex == index { return k }
        if let k = previous, k.localIndex == index { return k }
        return nil
    }

    /// Installs a freshly derived keypair. As initiator it becomes current at once (the old current
    /// moves to previous, or an unconfirmed next does); as responder it waits in `next`.
    /// Returns the keypairs dropped (release their indices).
    public mutating func install(_ keypair: Keypair) -> [Keypair] {
        var dropped: [Keypair] = []
        if keypair.isInitiator {
            if let n = next {
                next = nil
                if let c = current { dropped.append(c) }
                if let p = previous { dropped.append(p) }
                previous = n
            } else {
                if let p = previous { dropped.append(p) }
                previous = current
            }
            current = keypair
        } else {
            if let n = next { dropped.append(n) }
            if let p = previous { dropped.append(p) }
            next = keypair
            previous = nil
        }
        return dropped
    }

    /// Call after a transport packet authenticated with `keypair`. When it is `next`, it becomes
    /// current (the old current becomes previous) and `promoted` is true. Returns the keypair dropped.
    public mutating func received(with keypair: Keypair) -> (promoted: Bool, dropped: Keypair?) {
        guard let n = next, n === keypair else { return (false, nil) }
        let old = previous
        previous = current
        current = n
        next = nil
        return (true, old)
    }

    /// Forgets every keypair; returns them (release their indices).
    public mutating func removeAll() -> [Keypair] {
        let dropped = all
        current = nil
        previous = nil
        next = nil
        return dropped
    }
}
