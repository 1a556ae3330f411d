// An IP address and port, as Go's netip.AddrPort marshals: "1.2.3.4:41641" or "[2001:db8::1]:41641".

import WarrenPacket

public struct AddrPort: Codable, Hashable, Sendable, CustomStringConvertible, LosslessStringConvertible {
    public var address: IPAddress
    public var port: UInt16

    public init(address: IPAddress, port: UInt16) {
        self.address = address
        self.port = port
    }

    public var description: String {
        address.version == .v4 ? "\(address):\(port)" : "[\(address)]:\(port)"
    }

    public init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":") else { return nil }
        let portText = text[text.index(after: colon)...]
        guard !portText.isEmpty, portText.count <= 5, portText.allSatisfy({ $0.isASCII && $0.isNumber }),
              let port = UInt16(portText) else { return nil }
        var host = text[..<colon]
        if host.hasPrefix("[") {
            guard host.hasSuffix("]") else { return nil }
            host = host.dropFirst().dropLast()
            guard host.contains(":"), let address = IPAddress(host) else { return nil }
            self.init(address: address, port: port)
        } else {
            guard !host.contains(":"), let address = IPAddress(host) else { return nil }
            self.init(address: address, port: port)
        }
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        guard let value = AddrPort(try container.decode(String.self)) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "invalid address:port")
        }
        self = value
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}
