// Bounds on what a client may put into the tailnet through register and map requests. Whatever a node
// reports about itself (Hostinfo, endpoints) is copied into every peer's map, so one node could otherwise
// make every map megabytes long. Requests over a bound are refused with a text that names the field;
// Hostinfo members this server does not model are dropped (never stored, never sent to peers).
// docs/limits.md lists these bounds.

import WarrenTailcfg

public enum ClientInputLimits {
    /// Hostinfo, as JSON, after unknown members are dropped.
    public static let hostinfoBytes = 16 * 1024
    /// Hostinfo.Hostname (a DNS name is at most 253 bytes; a little room for what clients send).
    public static let hostnameBytes = 256
    /// Any other Hostinfo string (OS, versions, IDs, device model...).
    public static let stringBytes = 256
    public static let routableIPs = 1024
    public static let services = 256
    public static let requestTags = 64
    public static let sshHostKeys = 16
    public static let sshHostKeyBytes = 4096
    public static let wolMACs = 16
    /// NetInfo.DERPLatency entries (two per DERP region).
    public static let derpLatencies = 512
    /// Endpoints (and their types) in one map request.
    public static let endpoints = 128

    /// The Hostinfo to keep, without the members this server does not model, or a refusal naming the field.
    public static func sanitize(_ hostinfo: Hostinfo) throws(ClientInputRefusal) -> Hostinfo {
        let h = hostinfo.known
        func count(_ name: String, _ n: Int?, _ limit: Int) throws(ClientInputRefusal) {
            if let n, n > limit { throw ClientInputRefusal("Hostinfo.\(name) has \(n) entries; at most \(limit) are accepted") }
        }
        func text(_ name: String, _ value: String?, _ limit: Int) throws(ClientInputRefusal) {
            if let value, value.utf8.count > limit {
                throw ClientInputRefusal("Hostinfo.\(name) is \(value.utf8.count) bytes; at most \(limit) are accepted")
            }
        }
        try text("Hostname", h.hostname, hostnameBytes)
        let strings: [(String, String?)] = [
            ("IPNVersion", h.ipnVersion), ("FrontendLogID", h.frontendLogID), ("BackendLogID", h.backendLogID), ("OS", h.os),
            ("OSVersion", h.osVersion), ("Env", h.env), ("Distro", h.distro), ("DistroVersion", h.distroVersion),
            ("DistroCodeName", h.distroCodeName), ("App", h.app), ("Package", h.package), ("DeviceModel", h.deviceModel),
            ("PushDeviceToken", h.pushDeviceToken), ("Machine", h.machine), ("GoArch", h.goArch), ("GoArchVar", h.goArchVar),
            ("GoVersion", h.goVersion), ("Cloud", h.cloud), ("ServicesHash", h.servicesHash), ("ExitNodeID", h.exitNodeID),
            ("NetInfo.LinkType", h.netInfo?.linkType), ("NetInfo.FirewallMode", h.netInfo?.firewallMode),
            ("Location.Country", h.location?.country), ("Location.CountryCode", h.location?.countryCode),
            ("Location.City", h.location?.city), ("Location.CityCode", h.location?.cityCode),
        ]
        for (name, value) in strings { try text(name, value, stringBytes) }
        try count("RoutableIPs", h.routableIPs?.count, routableIPs)
        try count("Services", h.services?.count, services)
        for service in h.services ?? [] {
            try text("Services.Proto", service.proto, stringBytes)
            try text("Services.Description", service.description, stringBytes)
        }
        try count("RequestTags", h.requestTags?.count, requestTags)
        for tag in h.requestTags ?? [] { try text("RequestTags", tag, 64) }
        try count("sshHostKeys", h.sshHostKeys?.count, sshHostKeys)
        for key in h.sshHostKeys ?? [] { try text("sshHostKeys", key, sshHostKeyBytes) }
        try count("WoLMACs", h.wolMACs?.count, wolMACs)
        for mac in h.wolMACs ?? [] { try text("WoLMACs", mac, 64) }
        try count("NetInfo.DERPLatency", h.netInfo?.derpLatency?.count, derpLatencies)
        for key in h.netInfo?.derpLatency?.keys ?? [:].keys { try text("NetInfo.DERPLatency", key, 64) }
        let kept = Hostinfo(h)
        let size = (try? TailcfgJSON.encode(kept).count) ?? Int.max
        guard size <= hostinfoBytes else {
            throw ClientInputRefusal("Hostinfo is \(size) bytes as JSON; at most \(hostinfoBytes) are accepted")
        }
        return kept
    }

    public static func checkEndpoints(_ endpoints: [AddrPort]?, types: [Int]?) throws(ClientInputRefusal) {
        if let n = endpoints?.count, n > Self.endpoints {
            throw ClientInputRefusal("Endpoints has \(n) entries; at most \(Self.endpoints) are accepted")
        }
        if let n = types?.count, n > Self.endpoints {
            throw ClientInputRefusal("EndpointTypes has \(n) entries; at most \(Self.endpoints) are accepted")
        }
    }
}

/// A client-supplied value over a bound.
public struct ClientInputRefusal: Error, Hashable, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ text: String) { description = text }
}
