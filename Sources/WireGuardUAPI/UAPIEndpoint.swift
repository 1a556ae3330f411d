// A peer's UDP endpoint as the configuration protocol writes it: "192.0.2.1:51820" or "[2001:db8::1]:51820".

public import WarrenPacket

/// An IP address and UDP port, in the text form of the `endpoint=` key.
public struct UAPIEndpoint: Hashable, Sendable, CustomStringConvertible {
    public var address: IPAddress
    public var port: UInt16

    public init(address: IPAddress, port: UInt16) {
        self.address = address
        self.port = port
    }

    /// Parses `a.b.c.d:port` or `[IPv6]:port`; the port is decimal, 0 to 65535. IPv6 scoped
    /// addresses (`[fe80::1%eth0]:port`) are refused: Warren has no use for them. Host names are
    /// not resolved here (`wg` resolves them before it sends the request).
    public init?(_ text: some StringProtocol) {
        let text = Substring(text)
        guard let colon = text.lastIndex(of: ":") else { return nil }
        let hostPart = text[..<colon]
        let portPart = text[text.index(after: colon)...]
        guard let port = parseDecimal(portPart, maximum: UInt64(UInt16.max)) else { return nil }
        let address: IPAddress
        if hostPart.first == "[" {
            guard hostPart.count >= 2, hostPart.last == "]" else { return nil }
            let inner = hostPart.dropFirst().dropLast()
            guard let v6 = IPAddress(inner), v6.version == .v6 else { return nil }
            address = v6
        } else {
            guard !hostPart.contains(":"), let v4 = IPAddress(hostPart), v4.version == .v4 else { return nil }
            address = v4
        }
        self.init(address: address, port: UInt16(port))
    }

    public var description: String {
        switch address.version {
        case .v4: return "\(address):\(port)"
        case .v6: return "[\(address)]:\(port)"
        }
    }
}

/// Parses an unsigned decimal number as Go's `strconv.ParseUint(s, 10, bits)` does: ASCII
/// digits only (leading zeros allowed), no sign, no spaces, at most `maximum`.
func parseDecimal(_ text: some StringProtocol, maximum: UInt64) -> UInt64? {
    var value: UInt64 = 0
    var sawDigit = false
    for c in text.utf8 {
        guard c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9") else { return nil }
        let (times10, o1) = value.multipliedReportingOverflow(by: 10)
        let (sum, o2) = times10.addingReportingOverflow(UInt64(c - UInt8(ascii: "0")))
        guard !o1, !o2, sum <= maximum else { return nil }
        value = sum
        sawDigit = true
    }
    return sawDigit ? value : nil
}
