// tailcfg.Hostinfo and NetInfo: what a client reports about itself. Every field is optional on the wire
// (Go's omitzero/omitempty); nil here means absent.

import WarrenPacket

/// A client's description of itself, keeping fields this code does not know.
public typealias Hostinfo = PreservingUnknownFields<HostinfoFields>

public struct HostinfoFields: KnownJSONFields {
    public var ipnVersion: String?
    public var frontendLogID: String?
    public var backendLogID: String?
    public var os: String?
    public var osVersion: String?
    public var container: Bool?
    public var env: String?
    public var distro: String?
    public var distroVersion: String?
    public var distroCodeName: String?
    public var app: String?
    public var desktop: Bool?
    public var package: String?
    public var deviceModel: String?
    public var pushDeviceToken: String?
    public var hostname: String?
    public var shieldsUp: Bool?
    public var shareeNode: Bool?
    public var noLogsNoSupport: Bool?
    public var wireIngress: Bool?
    public var ingressEnabled: Bool?
    public var allowsUpdate: Bool?
    public var machine: String?
    public var goArch: String?
    public var goArchVar: String?
    public var goVersion: String?
    /// Subnet routes (and 0.0.0.0/0, ::/0 for an exit node) the client offers.
    public var routableIPs: [IPPrefix]?
    /// Tags the client asks for (`--advertise-tags`).
    public var requestTags: [String]?
    public var wolMACs: [String]?
    public var services: [HostService]?
    public var netInfo: NetInfo?
    public var sshHostKeys: [String]?
    public var cloud: String?
    public var userspace: Bool?
    public var userspaceRouter: Bool?
    public var appConnector: Bool?
    public var servicesHash: String?
    public var peerRelay: Bool?
    public var exitNodeID: String?
    public var location: HostLocation?
    public var stateEncrypted: Bool?

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case ipnVersion = "IPNVersion", frontendLogID = "FrontendLogID", backendLogID = "BackendLogID", os = "OS"
        case osVersion = "OSVersion", container = "Container", env = "Env", distro = "Distro"
        case distroVersion = "DistroVersion", distroCodeName = "DistroCodeName", app = "App", desktop = "Desktop"
        case package = "Package", deviceModel = "DeviceModel", pushDeviceToken = "PushDeviceToken", hostname = "Hostname"
        case shieldsUp = "ShieldsUp", shareeNode = "ShareeNode", noLogsNoSupport = "NoLogsNoSupport"
        case wireIngress = "WireIngress", ingressEnabled = "IngressEnabled", allowsUpdate = "AllowsUpdate"
        case machine = "Machine", goArch = "GoArch", goArchVar = "GoArchVar", goVersion = "GoVersion"
        case routableIPs = "RoutableIPs", requestTags = "RequestTags", wolMACs = "WoLMACs", services = "Services"
        case netInfo = "NetInfo", sshHostKeys = "sshHostKeys", cloud = "Cloud", userspace = "Userspace"
        case userspaceRouter = "UserspaceRouter", appConnector = "AppConnector", servicesHash = "ServicesHash"
        case peerRelay = "PeerRelay", exitNodeID = "ExitNodeID", location = "Location", stateEncrypted = "StateEncrypted"
    }

    public static let knownFieldNames = Set(CodingKeys.allCases.map(\.rawValue))
}

/// A service a host advertises (tailcfg.Service), such as "peerapi4" on some port.
public struct HostService: Codable, Hashable, Sendable {
    public var proto: String
    public var port: UInt16
    public var description: String?

    public init(proto: String, port: UInt16, description: String? = nil) {
        self.proto = proto
        self.port = port
        self.description = description
    }

    enum CodingKeys: String, CodingKey { case proto = "Proto", port = "Port", description = "Description" }
}

public struct HostLocation: Codable, Hashable, Sendable {
    public var country: String?
    public var countryCode: String?
    public var city: String?
    public var cityCode: String?
    public var latitude: Double?
    public var longitude: Double?
    public var priority: Int?

    public init() {}

    enum CodingKeys: String, CodingKey {
        case country = "Country", countryCode = "CountryCode", city = "City", cityCode = "CityCode"
        case latitude = "Latitude", longitude = "Longitude", priority = "Priority"
    }
}

/// The client's view of its network (from netcheck).
public struct NetInfo: Codable, Hashable, Sendable {
    /// True behind a "hard" NAT (the mapping changes with the destination).
    public var mappingVariesByDestIP: Bool?
    public var workingIPv6: Bool?
    public var osHasIPv6: Bool?
    public var workingUDP: Bool?
    public var workingICMPv4: Bool?
    public var havePortMap: Bool?
    public var upnp: Bool?
    public var pmp: Bool?
    public var pcp: Bool?
    /// The home DERP region.
    public var preferredDERP: Int?
    public var linkType: String?
    /// "<region id>-v4" / "-v6" to seconds.
    public var derpLatency: [String: Double]?
    public var firewallMode: String?

    public init() {}

    enum CodingKeys: String, CodingKey {
        case mappingVariesByDestIP = "MappingVariesByDestIP", workingIPv6 = "WorkingIPv6", osHasIPv6 = "OSHasIPv6"
        case workingUDP = "WorkingUDP", workingICMPv4 = "WorkingICMPv4", havePortMap = "HavePortMap", upnp = "UPnP"
        case pmp = "PMP", pcp = "PCP", preferredDERP = "PreferredDERP", linkType = "LinkType"
        case derpLatency = "DERPLatency", firewallMode = "FirewallMode"
    }
}
