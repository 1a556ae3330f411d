import WarrenPacket

/// Hands out tailnet addresses: one IPv4 and one IPv6 per node, in order, each at most once in the life of
/// the database.
///
/// The allocator walks forward from a cursor (the last address it handed out, kept in the store) and skips
/// - the prefix's first address (the network address; for IPv6 the subnet-router anycast) and, for IPv4, its last
///   (broadcast);
/// - Tailscale's service addresses: 100.100.100.0/24 (quad-100, 100.100.100.100, lives there) and
///   fd7a:115c:a1e0::53 (tailscale/tailscale:net/tsaddr);
/// - ChromeOS's VM range 100.115.92.0/23, which Tailscale never assigns from (net/tsaddr `ChromeOSVMRange`);
/// - Tailscale's special IPv6 sub-ranges: 4via6 fd7a:115c:a1e0:b1a::/64, the 4-to-6 range
///   fd7a:115c:a1e0:ab12:4843:cd96:6200::/104 and the ephemeral range fd7a:115c:a1e0:efe3::/64;
/// - every address `isTaken` reports (the store keeps every address ever handed out, so a deleted node's
///   address is not reused and a changed prefix cannot hand out an old address again).
/// It never wraps around: when the walk reaches the end of the prefix, the pool is exhausted.
public struct AddressAllocator: Sendable, Hashable {
    public static let defaultIPv4Prefix = IPPrefix("100.64.0.0/10")!
    public static let defaultIPv6Prefix = IPPrefix("fd7a:115c:a1e0::/48")!

    /// Ranges no node ever gets, whatever the configured prefixes.
    public static let reserved: [IPPrefix] = [
        IPPrefix("100.100.100.0/24")!,
        IPPrefix("100.115.92.0/23")!,
        IPPrefix("fd7a:115c:a1e0::53/128")!,
        IPPrefix("fd7a:115c:a1e0:b1a::/64")!,
        IPPrefix("fd7a:115c:a1e0:ab12:4843:cd96:6200::/104")!,
        IPPrefix("fd7a:115c:a1e0:efe3::/64")!,
    ]

    public let ipv4Prefix: IPPrefix
    public let ipv6Prefix: IPPrefix

    /// Throws `.invalid` unless the prefixes are of the right families and leave room for addresses
    /// (IPv4 at most /30, IPv6 at most /126).
    public init(ipv4Prefix: IPPrefix = defaultIPv4Prefix, ipv6Prefix: IPPrefix = defaultIPv6Prefix) throws {
        guard ipv4Prefix.address.version == .v4, ipv4Prefix.bits <= 30 else {
            throw StoreError(.invalid, "the IPv4 prefix must be an IPv4 prefix of /30 or shorter, not \(ipv4Prefix)")
        }
        guard ipv6Prefix.address.version == .v6, ipv6Prefix.bits <= 126 else {
            throw StoreError(.invalid, "the IPv6 prefix must be an IPv6 prefix of /126 or shorter, not \(ipv6Prefix)")
        }
        self.ipv4Prefix = ipv4Prefix.masked
        self.ipv6Prefix = ipv6Prefix.masked
    }

    /// Whether `address` may ever be handed out under this configuration (ignoring what is taken).
    public func isAssignable(_ address: IPAddress) -> Bool {
        let prefix = address.version == .v4 ? ipv4Prefix : ipv6Prefix
        guard prefix.contains(address), address != prefix.address else { return false }
        if address.version == .v4, address == Self.last(of: prefix) { return false }
        return !Self.reserved.contains { $0.contains(address) }
    }

    /// The next assignable address after `cursor` (or from the start of the prefix when the cursor is nil or
    /// outside it) that `isTaken` does not report. Throws `.exhausted` at the end of the prefix.
    /// `isTaken` is asked at most `maximumProbes` times, so a nearly full pool fails instead of spinning.
    public func next(
        _ version: IPVersion, after cursor: IPAddress?, maximumProbes: Int = 1 << 20,
        isTaken: (IPAddress) throws -> Bool
    ) throws -> IPAddress {
        let prefix = version == .v4 ? ipv4Prefix : ipv6Prefix
        var candidate: IPAddress
        if let cursor, prefix.contains(cursor) {
            guard let after = Self.successor(cursor) else { throw exhausted(prefix) }
            candidate = after
        } else {
            candidate = prefix.address
        }
        var probes = 0
        while prefix.contains(candidate) {
            if let range = Self.reserved.first(where: { $0.contains(candidate) }) {
                // Jump past the whole reserved range.
                guard let after = Self.successor(Self.last(of: range)) else { break }
                candidate = after
                continue
            }
            if isAssignable(candidate) {
                probes += 1
                if probes > maximumProbes { break }
                if try !isTaken(candidate) { return candidate }
            }
            guard let after = Self.successor(candidate) else { break }
            candidate = after
        }
        throw exhausted(prefix)
    }

    private func exhausted(_ prefix: IPPrefix) -> StoreError {
        StoreError(.exhausted, "no address left in \(prefix) that was never handed out")
    }

    /// The highest address of a prefix.
    static func last(of prefix: IPPrefix) -> IPAddress {
        switch prefix.address.masked(to: prefix.bits) {
        case .v4(let v):
            let hostBits = UInt32(32 - prefix.bits)
            return .v4(hostBits == 32 ? UInt32.max : v | ((1 << hostBits) &- 1))
        case .v6(let hi, let lo):
            let hostBits = 128 - prefix.bits
            if hostBits >= 64 {
                let hiMask: UInt64 = hostBits >= 128 ? UInt64.max : (1 << UInt64(hostBits - 64)) &- 1
                return .v6(hi | hiMask, UInt64.max)
            }
            return .v6(hi, lo | ((1 << UInt64(hostBits)) &- 1))
        }
    }

    /// The address one above, or nil at the top of the family's space.
    static func successor(_ address: IPAddress) -> IPAddress? {
        switch address {
        case .v4(let v):
            return v == UInt32.max ? nil : .v4(v + 1)
        case .v6(let hi, let lo):
            if lo != UInt64.max { return .v6(hi, lo + 1) }
            return hi == UInt64.max ? nil : .v6(hi + 1, 0)
        }
    }
}
