// The device's receiver indices: random 32-bit values, each naming one handshake or keypair of
// one peer, so that a response, cookie reply or transport message finds its peer in one lookup.

/// Random unique indices mapped to values (typically a peer identifier).
public struct IndexTable<Value: Sendable>: Sendable {
    private var entries: [UInt32: Value] = [:]

    public init() {}

    public var count: Int { entries.count }

    /// A fresh random index not in use, registered for `value`.
    public mutating func allocate(for value: Value, using rng: inout some RandomNumberGenerator) -> UInt32 {
        while true {
            let index = UInt32.random(in: .min ... .max, using: &rng)
            if entries[index] == nil {
                entries[index] = value
                return index
            }
        }
    }

    public subscript(index: UInt32) -> Value? { entries[index] }

    /// Frees `index`.
    public mutating func remove(_ index: UInt32) {
        entries[index] = nil
    }

    /// Frees every index whose value matches.
    public mutating func removeAll(where predicate: (Value) -> Bool) {
        entries = entries.filter { !predicate($0.value) }
    }
}
