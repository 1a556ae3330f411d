/// MagicDNS labels: a node's `givenName` is one DNS label (RFC 1035 letters, digits and hyphens, at most 63
/// characters, lowercase), derived from the hostname the machine reports and made unique with a numeric suffix
/// ("web", "web-1", "web-2", …), as Tailscale does for a name already taken.
public enum DNSLabel {
    public static let maximumLength = 63

    /// The label for a hostname: lowercased, anything but [a-z0-9-] becomes "-", runs of "-" collapse, no "-" at
    /// either end, cut to 63 characters; "node" when nothing is left.
    public static func sanitize(_ hostname: String) -> String {
        var out: [UInt8] = []
        for byte in hostname.lowercased().utf8 {
            if out.count >= maximumLength { break }
            let isAllowed = (0x61...0x7A).contains(byte) || (0x30...0x39).contains(byte)
            if isAllowed {
                out.append(byte)
            } else if out.last != UInt8(ascii: "-") && !out.isEmpty {
                out.append(UInt8(ascii: "-"))
            }
        }
        while out.last == UInt8(ascii: "-") { out.removeLast() }
        return out.isEmpty ? "node" : String(decoding: out, as: UTF8.self)
    }

    /// Whether `label` is already a valid, lowercase label.
    public static func isValid(_ label: String) -> Bool {
        !label.isEmpty && label.utf8.count <= maximumLength && sanitize(label) == label
    }

    /// `base` if `isTaken` says it is free, else `base-1`, `base-2`, … (the base cut so the result fits).
    public static func unique(_ base: String, isTaken: (String) throws -> Bool) throws -> String {
        if try !isTaken(base) { return base }
        var n = 1
        while true {
            let suffix = "-\(n)"
            var head = String(base.prefix(maximumLength - suffix.count))
            while head.hasSuffix("-") { head.removeLast() }
            let candidate = (head.isEmpty ? "node" : head) + suffix
            if try !isTaken(candidate) { return candidate }
            n += 1
        }
    }
}
