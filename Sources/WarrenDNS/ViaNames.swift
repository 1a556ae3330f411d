// Tailscale's 4via6 names: an IPv4 address behind a subnet router with a site ID, written as
// "192-168-1-2-via-7" (optionally under the tailnet's domain), or in the two older forms
// "via-7.192.168.1.2" and "192.168.1.2.via-7". They resolve (AAAA) to the address
// fd7a:115c:a1e0:b1a:<site ID, 32 bits>:<IPv4 address> in the 4via6 range fd7a:115c:a1e0:b1a::/64.

import WarrenPacket

enum ViaNames {
    /// fd7a:115c:a1e0:b1a::/64's upper half.
    static let rangeHigh: UInt64 = 0xFD7A_115C_A1E0_0B1A

    /// The 4via6 address a name stands for, or nil when it is not such a name. `localDomains` are
    /// the domains the newest form may sit under (besides none at all).
    static func address(for name: DNSName, localDomains: [DNSName]) -> IPAddress? {
        guard mentionsVia(name.wire) else { return nil }
        let labels = name.labels.map { String(decoding: $0, as: UTF8.self).lowercased() }
        guard !labels.isEmpty else { return nil }
        var site: Substring, v4: String
        if labels[0].contains("-via-") {
            let rest = name.parent!
            guard rest.isRoot || localDomains.contains(where: { rest.isSubdomain(of: $0) })
                || labels.suffix(2) == ["ts", "net"] || labels.suffix(2) == ["tailscale", "net"] else { return nil }
            guard let cut = labels[0].firstRange(of: "-via-") else { return nil }
            site = labels[0][cut.upperBound...]
            v4 = String(labels[0][..<cut.lowerBound].map { $0 == "-" ? "." : $0 })
        } else if labels[0].hasPrefix("via-"), labels.count == 5 {
            site = labels[0].dropFirst(4)
            v4 = labels[1...].joined(separator: ".")
        } else if labels.count == 5, labels[4].hasPrefix("via-") {
            site = labels[4].dropFirst(4)
            v4 = labels[..<4].joined(separator: ".")
        } else {
            return nil
        }
        guard case .v4(let address)? = IPAddress(v4), let siteID = parseSiteID(site) else { return nil }
        return .v6(rangeHigh, UInt64(siteID) << 32 | UInt64(address))
    }

    /// Whether "via-" occurs in the wire form (case-insensitive): a cheap test before parsing.
    private static func mentionsVia(_ wire: [UInt8]) -> Bool {
        guard wire.count >= 4 else { return false }
        for i in 0...(wire.count - 4)
        where DNSName.lower(wire[i]) == 0x76 && DNSName.lower(wire[i + 1]) == 0x69
            && DNSName.lower(wire[i + 2]) == 0x61 && wire[i + 3] == 0x2D {
            return true
        }
        return false
    }

    /// Decimal, or hexadecimal after "0x" (as Go's ParseUint with base 0 reads them for this).
    private static func parseSiteID(_ text: Substring) -> UInt32? {
        if text.hasPrefix("0x") { return UInt32(text.dropFirst(2), radix: 16) }
        guard text.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        return UInt32(text)
    }
}
