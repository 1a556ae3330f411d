// Cryptokey routing (paper section 2): each peer owns a set of prefixes. An outgoing packet goes to
// the peer owning the longest prefix that contains its destination; an incoming decrypted packet is
// accepted only if the longest prefix containing its source belongs to the peer that sent it.
//
// One path-compressed binary trie per address family, kept in an array of nodes so that lookups
// walk indices and never allocate. Keys are 128-bit: an IPv4 address sits in the top 32 bits.

import WarrenPacket

/// A longest-prefix-match table from IPv4 and IPv6 prefixes to peers.
public struct AllowedIPs<Peer: Hashable & Sendable>: Sendable {
    struct Key: Hashable, Sendable {
        var hi: UInt64
        var lo: UInt64

        func bit(_ i: Int) -> Int {
            i < 64 ? Int(truncatingIfNeeded: (hi >> UInt64(63 - i)) & 1) : Int(truncatingIfNeeded: (lo >> UInt64(127 - i)) & 1)
        }

        /// How many leading bits `self` and `other` share (128 when equal).
        func commonBits(_ other: Key) -> Int {
            let x = hi ^ other.hi
            if x != 0 { return x.leadingZeroBitCount }
            return 64 + (lo ^ other.lo).leadingZeroBitCount
        }

        func masked(_ bits: Int) -> Key {
            if bits <= 0 { return Key(hi: 0, lo: 0) }
            if bits < 64 { return Key(hi: hi & ~(UInt64.max >> UInt64(bits)), lo: 0) }
            if bits == 64 { return Key(hi: hi, lo: 0) }
            if bits >= 128 { return self }
            return Key(hi: hi, lo: lo & ~(UInt64.max >> UInt64(bits - 64)))
        }
    }

    struct Node: Sendable {
        var key: Key
        var bits: Int
        var peer: Peer?
        var children: (Int, Int) = (-1, -1)
        var parent: Int

        func child(_ b: Int) -> Int { b == 0 ? children.0 : children.1 }
        mutating func setChild(_ b: Int, _ index: Int) {
            if b == 0 { children.0 = index } else { children.1 = index }
        }
    }

    private var nodes: [Node] = []
    private var free: [Int] = []
    private var root4 = -1
    private var root6 = -1
    /// How many prefixes the table holds.
    public private(set) var count = 0

    public init() {}

    static func key(_ address: IPAddress) -> (Key, Int) {
        switch address {
        case .v4(let v): return (Key(hi: UInt64(v) << 32, lo: 0), 32)
        case .v6(let hi, let lo): return (Key(hi: hi, lo: lo), 128)
        }
    }

    private func root(isV4: Bool) -> Int { isV4 ? root4 : root6 }

    private mutating func setRoot(isV4: Bool, _ index: Int) {
        if isV4 { root4 = index } else { root6 = index }
    }

    private mutating func makeNode(_ node: Node) -> Int {
        if let i = free.popLast() {
            nodes[i] = node
            return i
        }
        nodes.append(node)
        return nodes.count - 1
    }

    /// Points whatever pointed at `old` (the parent's child slot or the root) at `new`.
    private mutating func replace(_ old: Int, with new: Int, isV4: Bool) {
        let parent = nodes[old].parent
        if parent < 0 {
            setRoot(isV4: isV4, new)
        } else if nodes[parent].children.0 == old {
            nodes[parent].children.0 = new
        } else {
            nodes[parent].children.1 = new
        }
        if new >= 0 { nodes[new].parent = parent }
    }

    // MARK: Changing

    /// Gives `prefix` (host bits ignored) to `peer`; a prefix already present moves to `peer`.
    public mutating func insert(_ prefix: IPPrefix, peer: Peer) {
        let isV4 = prefix.address.version == .v4
        let (fullKey, _) = Self.key(prefix.address)
        let bits = prefix.bits
        let key = fullKey.masked(bits)
        var current = root(isV4: isV4)
        if current < 0 {
            setRoot(isV4: isV4, makeNode(Node(key: key, bits: bits, peer: peer, parent: -1)))
            count += 1
            return
        }
        while true {
            let node = nodes[current]
            let common = min(node.key.commonBits(key), node.bits, bits)
            if common == node.bits && node.bits == bits {
                if node.peer == nil { count += 1 }
                nodes[current].peer = peer
                return
            }
            if common == node.bits {
                // `node` is a shorter prefix of the new one: go down.
                let b = key.bit(node.bits)
                let next = node.child(b)
                if next < 0 {
                    let leaf = makeNode(Node(key: key, bits: bits, peer: peer, parent: current))
                    nodes[current].setChild(b, leaf)
                    count += 1
                    return
                }
                current = next
                continue
            }
            if common == bits {
                // The new prefix is a shorter prefix of `node`: it goes above it.
                let above = makeNode(Node(key: key, bits: bits, peer: peer, parent: node.parent))
                replace(current, with: above, isV4: isV4)
                nodes[above].setChild(node.key.bit(bits), current)
                nodes[current].parent = above
                count += 1
                return
            }
            // They part after `common` bits: a branch node holds both.
            let branch = makeNode(Node(key: key.masked(common), bits: common, peer: nil, parent: node.parent))
            replace(current, with: branch, isV4: isV4)
            let leaf = makeNode(Node(key: key, bits: bits, peer: peer, parent: branch))
            nodes[branch].setChild(key.bit(common), leaf)
            nodes[branch].setChild(node.key.bit(common), current)
            nodes[current].parent = branch
            count += 1
            return
        }
    }

    private func find(_ prefix: IPPrefix) -> Int? {
        let (fullKey, _) = Self.key(prefix.address)
        let key = fullKey.masked(prefix.bits)
        var current = root(isV4: prefix.address.version == .v4)
        while current >= 0 {
            let node = nodes[current]
            if node.bits > prefix.bits || node.key.commonBits(key) < node.bits { return nil }
            if node.bits == prefix.bits { return node.peer == nil ? nil : current }
            current = node.child(key.bit(node.bits))
        }
        return nil
    }

    /// Removes the node's prefix and splices out nodes that no longer carry a prefix or a branch.
    private mutating func clear(_ index: Int, isV4: Bool) {
        nodes[index].peer = nil
        count -= 1
        var current = index
        while current >= 0, nodes[current].peer == nil {
            let (c0, c1) = nodes[current].children
            if c0 >= 0 && c1 >= 0 { break }
            let parent = nodes[current].parent
            replace(current, with: c0 >= 0 ? c0 : c1, isV4: isV4)
            nodes[current].children = (-1, -1)
            free.append(current)
            current = parent
        }
    }

    /// Removes one prefix (host bits ignored). Returns the peer that owned it.
    @discardableResult
    public mutating func remove(_ prefix: IPPrefix) -> Peer? {
        guard let i = find(prefix) else { return nil }
        let peer = nodes[i].peer
        clear(i, isV4: prefix.address.version == .v4)
        return peer
    }

    /// Removes every prefix of `peer`.
    public mutating func removeAll(of peer: Peer) {
        for prefix in prefixes(of: peer) { remove(prefix) }
    }

    // MARK: Reading

    /// The prefixes `peer` owns, sorted.
    public func prefixes(of peer: Peer) -> [IPPrefix] {
        entries.filter { $0.peer == peer }.map(\.prefix)
    }

    /// Every (prefix, peer), sorted by prefix.
    public var entries: [(prefix: IPPrefix, peer: Peer)] {
        var out: [(IPPrefix, Peer)] = []
        for (r, isV4) in [(root4, true), (root6, false)] {
            var stack = r >= 0 ? [r] : []
            while let i = stack.popLast() {
                let node = nodes[i]
                if let peer = node.peer {
                    let address: IPAddress = isV4 ? .v4(UInt32(truncatingIfNeeded: node.key.hi >> 32))
                                                  : .v6(node.key.hi, node.key.lo)
                    if let prefix = IPPrefix(address: address, bits: node.bits) { out.append((prefix, peer)) }
                }
                if node.children.0 >= 0 { stack.append(node.children.0) }
                if node.children.1 >= 0 { stack.append(node.children.1) }
            }
        }
        return out.sorted { $0.0 < $1.0 }
    }

    /// The peer owning the longest prefix that contains `address`.
    public func lookup(_ address: IPAddress) -> Peer? {
        let (key, _) = Self.key(address)
        return lookup(key: key, isV4: address.version == .v4)
    }

    private func lookup(key: Key, isV4: Bool) -> Peer? {
        var best: Peer?
        var current = root(isV4: isV4)
        let maxBits = isV4 ? 32 : 128
        while current >= 0 {
            let node = nodes[current]
            if node.key.commonBits(key) < node.bits { break }
            if let p = node.peer { best = p }
            if node.bits >= maxBits { break }
            current = node.child(key.bit(node.bits))
        }
        return best
    }

    /// The peer for an outgoing IP packet: longest match of its destination address.
    /// Nil for a packet too short for its IP version or of another version. Does not allocate.
    public func lookupDestination(packet: UnsafeRawBufferPointer) -> Peer? {
        lookup(packet: packet, v4Offset: 16, v6Offset: 24)
    }

    /// The peer the source address of a decrypted IP packet belongs to (it must be the peer that
    /// sent it). Nil for a packet too short for its IP version or of another version. Does not allocate.
    public func lookupSource(packet: UnsafeRawBufferPointer) -> Peer? {
        lookup(packet: packet, v4Offset: 12, v6Offset: 8)
    }

    public func lookupDestination(packet: [UInt8]) -> Peer? {
        packet.withUnsafeBytes { lookupDestination(packet: $0) }
    }

    public func lookupSource(packet: [UInt8]) -> Peer? {
        packet.withUnsafeBytes { lookupSource(packet: $0) }
    }

    private func lookup(packet: UnsafeRawBufferPointer, v4Offset: Int, v6Offset: Int) -> Peer? {
        guard let first = packet.first else { return nil }
        switch first >> 4 {
        case 4:
            guard packet.count >= 20 else { return nil }
            let a = UInt32(bigEndian: packet.loadUnaligned(fromByteOffset: v4Offset, as: UInt32.self))
            return lookup(key: Key(hi: UInt64(a) << 32, lo: 0), isV4: true)
        case 6:
            guard packet.count >= 40 else { return nil }
            let hi = UInt64(bigEndian: packet.loadUnaligned(fromByteOffset: v6Offset, as: UInt64.self))
            let lo = UInt64(bigEndian: packet.loadUnaligned(fromByteOffset: v6Offset + 8, as: UInt64.self))
            return lookup(key: Key(hi: hi, lo: lo), isV4: false)
        default:
            return nil
        }
    }
}
