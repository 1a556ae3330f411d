// tailcfg.MapResponse and what it carries. Delta semantics (from tailcfg.go): a nil field means
// "unchanged since the previous message in this stream", except where noted.

import WarrenPacket

public struct MapResponse: Codable, Hashable, Sendable {
    public var mapSessionHandle: String?
    public var seq: Int64?
    /// A keep-alive carries nothing else the client acts on except PingRequest, ControlTime and PopBrowserURL.
    public var keepAlive: Bool?
    public var pingRequest: PingRequest?
    public var popBrowserURL: String?
    /// The requesting node itself.
    public var node: Node?
    public var derpMap: DERPMap?
    /// The full peer list, sorted by ID (first message of a stream).
    public var peers: [Node]?
    /// Peers added or changed (upserts).
    public var peersChanged: [Node]?
    public var peersRemoved: [Int64]?
    public var peersChangedPatch: [PeerChange]?
    /// Node ID (as a decimal string key) to "seen recently".
    public var peerSeenChange: [String: Bool]?
    public var onlineChange: [String: Bool]?
    public var dnsConfig: DNSConfig?
    public var domain: String?
    public var collectServices: Bool?
    /// Nil: unchanged. Empty (encoded as `[]`): block everything.
    public var packetFilter: [FilterRule]?
    /// Named incremental filters; a nil value (JSON null) deletes that name; the key "*" with nil clears all.
    public var packetFilters: [String: [FilterRule]?]?
    /// Only new or changed profiles.
    public var userProfiles: [UserProfile]?
    public var health: [String]?
    public var displayMessages: [String: JSONValue]?
    public var sshPolicy: JSONValue?
    public var controlTime: TailcfgTime?
    public var tkaInfo: JSONValue?
    public var domainDataPlaneAuditLogID: String?
    public var debug: JSONValue?
    public var controlDialPlan: JSONValue?
    public var clientVersion: JSONValue?

    public init() {}

    /// `{"KeepAlive":true}`.
    public static var keepAliveMessage: MapResponse {
        var response = MapResponse()
        response.keepAlive = true
        return response
    }

    enum CodingKeys: String, CodingKey {
        case mapSessionHandle = "MapSessionHandle", seq = "Seq", keepAlive = "KeepAlive", pingRequest = "PingRequest"
        case popBrowserURL = "PopBrowserURL", node = "Node", derpMap = "DERPMap", peers = "Peers"
        case peersChanged = "PeersChanged", peersRemoved = "PeersRemoved", peersChangedPatch = "PeersChangedPatch"
        case peerSeenChange = "PeerSeenChange", onlineChange = "OnlineChange", dnsConfig = "DNSConfig"
        case domain = "Domain", collectServices = "CollectServices", packetFilter = "PacketFilter"
        case packetFilters = "PacketFilters", userProfiles = "UserProfiles", health = "Health"
        case displayMessages = "DisplayMessages", sshPolicy = "SSHPolicy", controlTime = "ControlTime"
        case tkaInfo = "TKAInfo", domainDataPlaneAuditLogID = "DomainDataPlaneAuditLogID", debug = "Debug"
        case controlDialPlan = "ControlDialPlan", clientVersion = "ClientVersion"
    }
}

/// A request for the client to prove liveness or ping a peer (tailcfg.PingRequest).
public struct PingRequest: Codable, Hashable, Sendable {
    public var url: String
    public var urlIsNoise: Bool?
    public var log: Bool?
    /// Comma-separated: "disco", "TSMP", "ICMP", "peerapi".
    public var types: String?
    public var ip: IPAddress?
    public var payload: [UInt8]?

    public init(url: String) { self.url = url }

    enum CodingKeys: String, CodingKey {
        case url = "URL", urlIsNoise = "URLIsNoise", log = "Log", types = "Types", ip = "IP", payload = "Payload"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        url = try c.decodeIfPresent(String.self, forKey: .url) ?? ""
        urlIsNoise = try c.decodeIfPresent(Bool.self, forKey: .urlIsNoise)
        log = try c.decodeIfPresent(Bool.self, forKey: .log)
        types = try c.decodeIfPresent(String.self, forKey: .types)
        ip = try c.decodeIfPresent(IPAddress.self, forKey: .ip)
        // Go encodes []byte as base64.
        if let text = try c.decodeIfPresent(String.self, forKey: .payload) {
            guard let bytes = Base64.decode(text) else {
                throw DecodingError.dataCorruptedError(forKey: .payload, in: c, debugDescription: "invalid base64")
            }
            payload = bytes
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(url, forKey: .url)
        try c.encodeIfPresent(urlIsNoise, forKey: .urlIsNoise)
        try c.encodeIfPresent(log, forKey: .log)
        try c.encodeIfPresent(types, forKey: .types)
        try c.encodeIfPresent(ip, forKey: .ip)
        if let payload, !payload.isEmpty { try c.encode(Base64.encode(payload), forKey: .payload) }
    }
}

/// The DNS configuration a node should apply (tailcfg.DNSConfig).
public struct DNSConfig: Codable, Hashable, Sendable {
    /// Upstream resolvers ("override local DNS").
    public var resolvers: [DNSResolver]?
    /// Split DNS: suffix to resolvers; an empty list means quad-100 answers itself.
    public var routes: [String: [DNSResolver]?]?
    public var fallbackResolvers: [DNSResolver]?
    /// Search domains.
    public var domains: [String]?
    /// MagicDNS on.
    public var proxied: Bool?
    public var nameservers: [IPAddress]?
    public var certDomains: [String]?
    public var extraRecords: [DNSRecord]?
    public var exitNodeFilteredSet: [String]?

    public init() {}

    enum CodingKeys: String, CodingKey {
        case resolvers = "Resolvers", routes = "Routes", fallbackResolvers = "FallbackResolvers", domains = "Domains"
        case proxied = "Proxied", nameservers = "Nameservers", certDomains = "CertDomains"
        case extraRecords = "ExtraRecords", exitNodeFilteredSet = "ExitNodeFilteredSet"
    }
}

/// dnstype.Resolver: an IP, "IP:port", or a DoH URL.
public struct DNSResolver: Codable, Hashable, Sendable {
    public var addr: String?
    public var bootstrapResolution: [IPAddress]?
    public var useWithExitNode: Bool?

    public init(addr: String) { self.addr = addr }

    enum CodingKeys: String, CodingKey {
        case addr = "Addr", bootstrapResolution = "BootstrapResolution", useWithExitNode = "UseWithExitNode"
    }
}

/// An extra A/AAAA record served by quad-100.
public struct DNSRecord: Codable, Hashable, Sendable {
    public var name: String
    /// "A", "AAAA" or absent (inferred from the value).
    public var type: String?
    public var value: String

    public init(name: String, type: String? = nil, value: String) {
        self.name = name
        self.type = type
        self.value = value
    }

    enum CodingKeys: String, CodingKey { case name = "Name", type = "Type", value = "Value" }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decodeIfPresent(String.self, forKey: .name) ?? ""
        type = try c.decodeIfPresent(String.self, forKey: .type)
        value = try c.decodeIfPresent(String.self, forKey: .value) ?? ""
    }
}

/// Standard base64 (with padding), as Go encodes []byte.
enum Base64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    static func encode(_ bytes: [UInt8]) -> String {
        var out = [UInt8]()
        var i = 0
        while i < bytes.count {
            let n = min(3, bytes.count - i)
            let b0 = bytes[i], b1 = n > 1 ? bytes[i + 1] : 0, b2 = n > 2 ? bytes[i + 2] : 0
            out.append(alphabet[Int(b0 >> 2)])
            out.append(alphabet[Int((b0 & 3) << 4 | b1 >> 4)])
            out.append(n > 1 ? alphabet[Int((b1 & 15) << 2 | b2 >> 6)] : UInt8(ascii: "="))
            out.append(n > 2 ? alphabet[Int(b2 & 63)] : UInt8(ascii: "="))
            i += 3
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func decode(_ text: String) -> [UInt8]? {
        var lookup = [UInt8: UInt8]()
        for (i, c) in alphabet.enumerated() { lookup[c] = UInt8(i) }
        let chars = Array(text.utf8)
        guard chars.count % 4 == 0 else { return nil }
        var out = [UInt8]()
        var i = 0
        while i < chars.count {
            let quad = chars[i..<(i + 4)]
            let pads = quad.reversed().prefix { $0 == UInt8(ascii: "=") }.count
            guard pads <= 2, i + 4 == chars.count || pads == 0 else { return nil }
            var values = [UInt8]()
            for c in quad.prefix(4 - pads) {
                guard let v = lookup[c] else { return nil }
                values.append(v)
            }
            while values.count < 4 { values.append(0) }
            out.append(values[0] << 2 | values[1] >> 4)
            if pads < 2 { out.append(values[1] << 4 | values[2] >> 2) }
            if pads < 1 { out.append(values[2] << 6 | values[3]) }
            i += 4
        }
        return out
    }
}
