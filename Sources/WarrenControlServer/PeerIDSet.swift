// The peers a map stream holds, as a bit per node ID. Every open stream keeps one, and in a tailnet of N nodes each
// holds nearly N IDs: as a Set<Int64> that was about 16 bytes per ID with its buckets (130 KB per stream at 10,000
// nodes, O(N²) in all), as bits it is N/8 bytes (1.25 KB at 10,000). The store hands out small sequential IDs; an ID
// outside the bit range (negative or past 2^24) goes to a plain set beside.

struct PeerIDSet: Sequence {
    private var words: [UInt64] = []
    private var outside: Set<Int64> = []
    private(set) var count = 0

    static let bitLimit: Int64 = 1 << 24

    init() {}

    /// Heap bytes held (the words' buffer and the set beside, estimated from capacities; for the memory account).
    var heapBytes: Int {
        (words.capacity > 0 ? 32 + words.capacity * 8 : 0) + (outside.capacity > 0 ? 48 + outside.capacity * 16 : 0)
    }

    init(_ ids: some Sequence<Int64>) {
        for id in ids { insert(id) }
    }

    func contains(_ id: Int64) -> Bool {
        guard id >= 0, id < Self.bitLimit else { return outside.contains(id) }
        let word = Int(id >> 6)
        return word < words.count && words[word] & (1 << UInt64(id & 63)) != 0
    }

    @discardableResult
    mutating func insert(_ id: Int64) -> (inserted: Bool, memberAfterInsert: Int64) {
        guard id >= 0, id < Self.bitLimit else {
            let inserted = outside.insert(id).inserted
            if inserted { count += 1 }
            return (inserted, id)
        }
        let word = Int(id >> 6), bit: UInt64 = 1 << UInt64(id & 63)
        if word >= words.count { words.append(contentsOf: repeatElement(0, count: word - words.count + 1)) }
        guard words[word] & bit == 0 else { return (false, id) }
        words[word] |= bit
        count += 1
        return (true, id)
    }

    @discardableResult
    mutating func remove(_ id: Int64) -> Int64? {
        guard id >= 0, id < Self.bitLimit else {
            guard outside.remove(id) != nil else { return nil }
            count -= 1
            return id
        }
        let word = Int(id >> 6), bit: UInt64 = 1 << UInt64(id & 63)
        guard word < words.count, words[word] & bit != 0 else { return nil }
        words[word] &= ~bit
        count -= 1
        return id
    }

    /// The IDs, ascending (those outside the bit range first).
    func makeIterator() -> IndexingIterator<[Int64]> {
        var ids = outside.sorted()
        ids.reserveCapacity(count)
        for (w, word) in words.enumerated() where word != 0 {
            var rest = word
            while rest != 0 {
                let bit = rest.trailingZeroBitCount
                ids.append(Int64(w) << 6 | Int64(bit))
                rest &= rest - 1
            }
        }
        return ids.makeIterator()
    }
}
