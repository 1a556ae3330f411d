// Tailscale's packet-filter wire types (tailcfg.FilterRule and friends), with Go's JSON field names.

/// A port range, both ends inclusive. `0...65535` means every port.
public struct PortRange: Codable, Hashable, Sendable {
    public var first: UInt16
    public var last: UInt16

    public init(first: UInt16, last: UInt16) {
        self.first = first
        self.last = last
    }

    public static let all = PortRange(first: 0, last: 65535)

    enum CodingKeys: String, CodingKey {
        case first = "First"
        case last = "Last"
    }
}

/// A destination: an IP, CIDR, range or `*`, and the ports on it.
public struct NetPortRange: Codable, Hashable, Sendable {
    /// As Tailscale writes it: "*", "100.64.0.1", "10.0.0.0/8", "fd7a:115c:a1e0::1", ...
    public var ip: String
    public var ports: PortRange

    public init(ip: String, ports: PortRange) {
        self.ip = ip
        self.ports = ports
    }

    enum CodingKeys: String, CodingKey {
        case ip = "IP"
        case ports = "Ports"
    }
}

/// Peer capability name to its values (tailcfg.PeerCapMap). A nil list is JSON null: Tailscale sends a
/// capability that carries no arguments (such as the companion `tailscale.com/cap/drive-sharer`) as null.
public typealias PeerCapMap = [String: [JSONValue]?]

/// A capability granted to the sources on the destinations (from `grants` with `app`).
public struct CapGrant: Codable, Hashable, Sendable {
    public var dsts: [String]
    /// Capability name to a list of raw JSON values (nil: null), kept as text.
    public var capMap: PeerCapMap?

    public init(dsts: [String], capMap: PeerCapMap?) {
        self.dsts = dsts
        self.capMap = capMap
    }

    enum CodingKeys: String, CodingKey {
        case dsts = "Dsts"
        case capMap = "CapMap"
    }
}

/// One packet-filter rule as a node receives it.
public struct FilterRule: Codable, Hashable, Sendable {
    public var srcIPs: [String]
    public var dstPorts: [NetPortRange]?
    /// IANA protocol numbers; nil or empty means TCP, UDP, ICMPv4 and ICMPv6.
    public var ipProto: [Int]?
    public var capGrant: [CapGrant]?

    public init(srcIPs: [String], dstPorts: [NetPortRange]? = nil, ipProto: [Int]? = nil, capGrant: [CapGrant]? = nil) {
        self.srcIPs = srcIPs
        self.dstPorts = dstPorts
        self.ipProto = ipProto
        self.capGrant = capGrant
    }

    enum CodingKeys: String, CodingKey {
        case srcIPs = "SrcIPs"
        case dstPorts = "DstPorts"
        case ipProto = "IPProto"
        case capGrant = "CapGrant"
    }
}

/// Any JSON value, for fields whose shape Tailscale leaves open (capability values).
public indirect enum JSONValue: Codable, Hashable, Sendable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let n = try? c.decode(Double.self) { self = .number(n) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .number(let n): try c.encode(n)
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }
}
