// tailcfg.DERPMap, DERPRegion, DERPNode (tailscale/tailscale:tailcfg/derpmap.go).

/// The relay servers a tailnet uses. JSON object keys of Regions are region IDs as decimal strings.
public struct DERPMap: Codable, Hashable, Sendable {
    public var homeParams: DERPHomeParams?
    public var regions: [Int: DERPRegion]
    /// Drop Tailscale's default regions (for custom maps merged client-side).
    public var omitDefaultRegions: Bool?

    public init(regions: [Int: DERPRegion] = [:], omitDefaultRegions: Bool? = nil) {
        self.regions = regions
        self.omitDefaultRegions = omitDefaultRegions
    }

    enum CodingKeys: String, CodingKey {
        case homeParams = "HomeParams", regions = "Regions", omitDefaultRegions = "omitDefaultRegions"
    }

    // Int-keyed dictionaries would encode as arrays; Go writes an object with decimal keys.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        homeParams = try c.decodeIfPresent(DERPHomeParams.self, forKey: .homeParams)
        omitDefaultRegions = try c.decodeIfPresent(Bool.self, forKey: .omitDefaultRegions)
        let raw = try c.decodeIfPresent([String: DERPRegion].self, forKey: .regions) ?? [:]
        regions = try Self.intKeyed(raw, codingPath: c.codingPath)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(homeParams, forKey: .homeParams)
        try c.encode(Dictionary(uniqueKeysWithValues: regions.map { (String($0.key), $0.value) }), forKey: .regions)
        if omitDefaultRegions == true { try c.encode(true, forKey: .omitDefaultRegions) }
    }

    static func intKeyed<V>(_ raw: [String: V], codingPath: [any CodingKey]) throws -> [Int: V] {
        var out = [Int: V]()
        for (key, value) in raw {
            guard let id = Int(key) else {
                throw DecodingError.dataCorrupted(.init(codingPath: codingPath, debugDescription: "region ID \(key) is not an integer"))
            }
            out[id] = value
        }
        return out
    }
}

public struct DERPHomeParams: Codable, Hashable, Sendable {
    /// Region ID to a latency multiplier (below 1 prefers the region).
    public var regionScore: [Int: Double]?

    public init(regionScore: [Int: Double]? = nil) { self.regionScore = regionScore }

    enum CodingKeys: String, CodingKey { case regionScore = "RegionScore" }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if let raw = try c.decodeIfPresent([String: Double].self, forKey: .regionScore) {
            regionScore = try DERPMap.intKeyed(raw, codingPath: c.codingPath)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        if let regionScore, !regionScore.isEmpty {
            try c.encode(Dictionary(uniqueKeysWithValues: regionScore.map { (String($0.key), $0.value) }), forKey: .regionScore)
        }
    }
}

public struct DERPRegion: Codable, Hashable, Sendable {
    /// Positive; 900 and up are conventionally custom regions.
    public var regionID: Int
    public var regionCode: String
    public var regionName: String
    public var latitude: Double?
    public var longitude: Double?
    public var avoid: Bool?
    public var noMeasureNoHome: Bool?
    public var nodes: [DERPNode]?

    public init(regionID: Int, regionCode: String, regionName: String, nodes: [DERPNode]) {
        self.regionID = regionID
        self.regionCode = regionCode
        self.regionName = regionName
        self.nodes = nodes
    }

    enum CodingKeys: String, CodingKey {
        case regionID = "RegionID", regionCode = "RegionCode", regionName = "RegionName", latitude = "Latitude"
        case longitude = "Longitude", avoid = "Avoid", noMeasureNoHome = "NoMeasureNoHome", nodes = "Nodes"
    }
}

public struct DERPNode: Codable, Hashable, Sendable {
    public var name: String
    public var regionID: Int
    public var hostName: String
    /// "sha256-raw:<hex>" pins a self-signed certificate.
    public var certName: String?
    /// An IPv4 address, or "none" to disable IPv4.
    public var ipv4: String?
    public var ipv6: String?
    /// 0 means 3478; -1 disables STUN.
    public var stunPort: Int?
    public var stunOnly: Bool?
    /// 0 means 443.
    public var derpPort: Int?
    /// Skip TLS verification (tests only).
    public var insecureForTests: Bool?
    public var stunTestIP: String?
    public var canPort80: Bool?

    public init(name: String, regionID: Int, hostName: String) {
        self.name = name
        self.regionID = regionID
        self.hostName = hostName
    }

    enum CodingKeys: String, CodingKey {
        case name = "Name", regionID = "RegionID", hostName = "HostName", certName = "CertName", ipv4 = "IPv4"
        case ipv6 = "IPv6", stunPort = "STUNPort", stunOnly = "STUNOnly", derpPort = "DERPPort"
        case insecureForTests = "InsecureForTests", stunTestIP = "STUNTestIP", canPort80 = "CanPort80"
    }
}
