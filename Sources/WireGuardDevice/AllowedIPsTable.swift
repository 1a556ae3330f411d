public import WarrenPacket

/// Longest-prefix match from inner addresses to peers: which peer a packet is sent to, and
/// which peer may send from an address. A prefix belongs to at most one peer; adding it to a
/// peer takes it from any other.
///
/// Kept as two arrays sorted by prefix length (longest first), searched linearly: for the few
/// prefixes of a point-to-point or small mesh configuration this is a handful of comparisons
/// per packet and allocates nothing.
struct AllowedIPsTable<Owner: AnyObject & Sendable>: Sendable {
    private var v4: [(prefix: IPPrefix, owner: Owner)] = []
    private var v6: [(prefix: IPPrefix, owner: Owner)] = []

    /// Adds (or moves) `prefix` (masked) to `owner`.
    mutating func insert(_ prefix: IPPrefix, owner: Owner) {
        let p = prefix.masked
        remove(p)
        if p.address.version == .v4 {
            let at = v4.firstIndex { $0.prefix.bits < p.bits } ?? v4.endIndex
            v4.insert((p, owner), at: at)
        } else {
            let at = v6.firstIndex { $0.prefix.bits < p.bits } ?? v6.endIndex
            v6.insert((p, owner), at: at)
        }
    }

    /// Removes exactly `prefix` (masked).
    mutating func remove(_ prefix: IPPrefix) {
        let p = prefix.masked
        v4.removeAll { $0.prefix == p }
        v6.removeAll { $0.prefix == p }
    }

    /// Removes every prefix of `owner`.
    mutating func removeAll(of owner: Owner) {
        v4.removeAll { $0.owner === owner }
        v6.removeAll { $0.owner === owner }
    }

    /// The prefixes of `owner`, IPv4 first, each family in table order.
    func prefixes(of owner: Owner) -> [IPPrefix] {
        (v4 + v6).filter { $0.owner === owner }.map(\.prefix)
    }

    /// The owner of the longest prefix containing `address`.
    @inline(__always)
    func lookup(_ address: IPAddress) -> Owner? {
        switch address {
        case .v4:
            for entry in v4 where entry.prefix.contains(address) { return entry.owner }
        case .v6:
            for entry in v6 where entry.prefix.contains(address) { return entry.owner }
        }
        return nil
    }
}
