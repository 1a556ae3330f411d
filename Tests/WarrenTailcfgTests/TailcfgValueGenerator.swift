// Random tailcfg values from a seed, for comparing the hand-written JSON writer with the Codable path.

import Foundation
import TailscaleKeys
import WarrenPacket
import WarrenTestSupport
@testable import WarrenTailcfg

/// Random tailcfg values from a seed. `presence` is the chance that an optional field is set (1 sets
/// every field). Values are chosen so that decoding the JSON gives the same value back: what Go and
/// this code write lossily (an empty payload, a JSON null where the field is optional) is avoided.
struct TailcfgValueGenerator {
    var random: SeededGenerator
    var presence: Double
    /// Python's json module writes -0.0 as "-0.0" where Swift writes "-0"; the Python cross-check
    /// turns this off to compare bytes.
    var allowNegativeZero = true

    init(seed: UInt64, presence: Double = 0.5) {
        random = SeededGenerator(seed: seed)
        self.presence = presence
    }

    mutating func chance(_ p: Double) -> Bool { Double.random(in: 0..<1, using: &random) < p }
    mutating func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &random) }
    mutating func pick<T>(_ items: [T]) -> T { items[int(0...(items.count - 1))] }

    mutating func maybe<T>(_ make: (inout TailcfgValueGenerator) -> T) -> T? {
        chance(presence) ? make(&self) : nil
    }

    mutating func list<T>(_ count: ClosedRange<Int>, _ make: (inout TailcfgValueGenerator) -> T) -> [T] {
        (0..<int(count)).map { _ in make(&self) }
    }

    /// Pieces that are hard to escape: every control character, quotes, backslashes, slashes, DEL,
    /// non-ASCII of every UTF-8 length, line/paragraph separators, a BOM, combining marks.
    static let awkwardPieces: [String] = {
        var pieces = ["", "a", "host-1", "tailnet.ts.net.", "\"", "\\", "/", "\\\"", "\u{7F}", "é", "e\u{301}", "ß",
                      "日本語", "😀", "👩‍👩‍👧", "\u{2028}", "\u{2029}", "\u{FEFF}", "\u{10FFFF}", "{\"not\":\"json\"}",
                      "</script>", "tag:server", "https://example.com/a?b=c&d=e", " ", "\u{00A0}"]
        for c in 0..<0x20 { pieces.append(String(UnicodeScalar(UInt8(c)))) }
        return pieces
    }()

    mutating func string() -> String {
        (0..<int(0...4)).map { _ in pick(Self.awkwardPieces) }.joined()
    }

    mutating func int64() -> Int64 {
        switch int(0...5) {
        case 0: pick([0, 1, -1, Int64.max, Int64.min, 1 << 53, (1 << 53) + 1, -(1 << 53) - 1])
        case 1: Int64.random(in: Int64.min...Int64.max, using: &random)
        default: Int64(int(0...100_000))
        }
    }

    mutating func smallInt() -> Int { chance(0.2) ? Int(int64()) : int(-5...70_000) }

    mutating func double() -> Double {
        switch int(0...4) {
        case 0:
            var specials: [Double] = [0, 0.5, 1, 100, 1e15, 1e16, 1e20, 1e-5, 1e-7, 48.1, -11.5, 0.1, 123456789.125,
                                      5e-324, 1.7976931348623157e308, 9007199254740993, 1234567890123456789]
            if allowNegativeZero { specials.append(-0.0) }
            return pick(specials)
        case 1: return Double(int64())
        case 2: return Double(bitPattern: random.next() & 0x7FEF_FFFF_FFFF_FFFF)  // finite, any magnitude
        default: return Double(int(-1000...1000)) / 8
        }
    }

    mutating func time() -> TailcfgTime {
        if chance(0.1) { return .goZero }
        // Years 0 to 9999.
        let seconds = Int64.random(in: -62_167_219_200...253_402_300_799, using: &random)
        let nanos: Int32 = pick([0, 500_000_000, 123_456_789, 100, 1, 999_999_999, Int32(int(0...999_999_999))])
        return TailcfgTime(secondsSince1970: seconds, nanoseconds: nanos)
    }

    mutating func address() -> IPAddress {
        switch int(0...3) {
        case 0: return .v4(UInt32.random(in: 0...UInt32.max, using: &random))
        case 1: return .v6(0, 0xFFFF_0000_0000 | UInt64(UInt32.random(in: 0...UInt32.max, using: &random)))
        default:
            // Groups that are often zero, so that every position and length of a zero run occurs.
            var words: (UInt64, UInt64) = (0, 0)
            for i in 0..<8 {
                let group: UInt64 = chance(0.5) ? 0 : pick([1, 0xFFFF, 0xA, 0x100, UInt64(int(0...0xFFFF))])
                if i < 4 { words.0 = words.0 << 16 | group } else { words.1 = words.1 << 16 | group }
            }
            return .v6(words.0, words.1)
        }
    }

    mutating func prefix() -> IPPrefix {
        let a = address()
        return IPPrefix(address: a, bits: int(0...(a.version == .v4 ? 32 : 128)))!
    }

    mutating func addrPort() -> AddrPort { AddrPort(address: address(), port: UInt16(int(0...65535))) }

    mutating func key32() -> Key32 {
        Key32(bigEndianWords: (random.next(), random.next(), chance(0.1) ? 0 : random.next(), random.next()))
    }

    mutating func bytes() -> [UInt8] { (0..<int(1...40)).map { _ in UInt8(int(0...255)) } }

    mutating func jsonValue(depth: Int = 0) -> JSONValue {
        switch int(0...(depth >= 3 ? 3 : 5)) {
        case 0: return .null
        case 1: return .bool(chance(0.5))
        case 2: return .number(double())
        case 3: return .string(string())
        case 4: return .array(list(0...3) { $0.jsonValue(depth: depth + 1) })
        default:
            var object = [String: JSONValue]()
            for _ in 0..<int(0...3) { object[string()] = jsonValue(depth: depth + 1) }
            return .object(object)
        }
    }

    /// A top-level optional JSONValue: never JSON null (that would decode as nil).
    mutating func presentJSONValue() -> JSONValue {
        var value = jsonValue()
        while value == .null { value = jsonValue() }
        return value
    }

    mutating func dictionary<V>(_ make: (inout TailcfgValueGenerator) -> V) -> [String: V] {
        var out = [String: V]()
        for _ in 0..<int(0...4) { out[string()] = make(&self) }
        return out
    }

    mutating func capMap() -> NodeCapMap {
        dictionary { g in g.chance(0.2) ? nil : g.list(0...2) { $0.jsonValue() } }
    }

    mutating func resolver() -> DNSResolver {
        var r = DNSResolver(addr: string())
        if !chance(presence) { r.addr = nil }
        r.bootstrapResolution = maybe { $0.list(0...2) { $0.address() } }
        r.useWithExitNode = maybe { $0.chance(0.5) }
        return r
    }

    mutating func hostinfo() -> Hostinfo {
        var h = HostinfoFields()
        h.ipnVersion = maybe { $0.string() }
        h.frontendLogID = maybe { $0.string() }
        h.backendLogID = maybe { $0.string() }
        h.os = maybe { $0.string() }
        h.osVersion = maybe { $0.string() }
        h.container = maybe { $0.chance(0.5) }
        h.env = maybe { $0.string() }
        h.distro = maybe { $0.string() }
        h.distroVersion = maybe { $0.string() }
        h.distroCodeName = maybe { $0.string() }
        h.app = maybe { $0.string() }
        h.desktop = maybe { $0.chance(0.5) }
        h.package = maybe { $0.string() }
        h.deviceModel = maybe { $0.string() }
        h.pushDeviceToken = maybe { $0.string() }
        h.hostname = maybe { $0.string() }
        h.shieldsUp = maybe { $0.chance(0.5) }
        h.shareeNode = maybe { $0.chance(0.5) }
        h.noLogsNoSupport = maybe { $0.chance(0.5) }
        h.wireIngress = maybe { $0.chance(0.5) }
        h.ingressEnabled = maybe { $0.chance(0.5) }
        h.allowsUpdate = maybe { $0.chance(0.5) }
        h.machine = maybe { $0.string() }
        h.goArch = maybe { $0.string() }
        h.goArchVar = maybe { $0.string() }
        h.goVersion = maybe { $0.string() }
        h.routableIPs = maybe { $0.list(0...3) { $0.prefix() } }
        h.requestTags = maybe { $0.list(0...2) { $0.string() } }
        h.wolMACs = maybe { $0.list(0...2) { $0.string() } }
        h.services = maybe { $0.list(0...3) { g in
            HostService(proto: g.string(), port: UInt16(g.int(0...65535)), description: g.maybe { $0.string() })
        } }
        h.netInfo = maybe { g in
            var n = NetInfo()
            n.mappingVariesByDestIP = g.maybe { $0.chance(0.5) }
            n.workingIPv6 = g.maybe { $0.chance(0.5) }
            n.osHasIPv6 = g.maybe { $0.chance(0.5) }
            n.workingUDP = g.maybe { $0.chance(0.5) }
            n.workingICMPv4 = g.maybe { $0.chance(0.5) }
            n.havePortMap = g.maybe { $0.chance(0.5) }
            n.upnp = g.maybe { $0.chance(0.5) }
            n.pmp = g.maybe { $0.chance(0.5) }
            n.pcp = g.maybe { $0.chance(0.5) }
            n.preferredDERP = g.maybe { $0.smallInt() }
            n.linkType = g.maybe { $0.string() }
            n.derpLatency = g.maybe { $0.dictionary { $0.double() } }
            n.firewallMode = g.maybe { $0.string() }
            return n
        }
        h.sshHostKeys = maybe { $0.list(0...2) { $0.string() } }
        h.cloud = maybe { $0.string() }
        h.userspace = maybe { $0.chance(0.5) }
        h.userspaceRouter = maybe { $0.chance(0.5) }
        h.appConnector = maybe { $0.chance(0.5) }
        h.servicesHash = maybe { $0.string() }
        h.peerRelay = maybe { $0.chance(0.5) }
        h.exitNodeID = maybe { $0.string() }
        h.location = maybe { g in
            var l = HostLocation()
            l.country = g.maybe { $0.string() }
            l.countryCode = g.maybe { $0.string() }
            l.city = g.maybe { $0.string() }
            l.cityCode = g.maybe { $0.string() }
            l.latitude = g.maybe { $0.double() }
            l.longitude = g.maybe { $0.double() }
            l.priority = g.maybe { $0.smallInt() }
            return l
        }
        h.stateEncrypted = maybe { $0.chance(0.5) }
        // Unknown members (what a newer client sent), never one of the known names.
        var unknown = [String: JSONValue]()
        if chance(presence) {
            for _ in 0..<int(1...3) {
                let name = pick(["Zzz", "FutureField", "aNew", "_x", "IPNVersion2", "OS_", "sshHostKeysV2", ""]) + string()
                if !HostinfoFields.knownFieldNames.contains(name) { unknown[name] = jsonValue() }
            }
        }
        return Hostinfo(h, unknownFields: unknown)
    }

    mutating func node() -> Node {
        var n = Node()
        n.id = int64()
        n.stableID = string()
        n.name = string()
        n.user = int64()
        n.sharer = maybe { $0.int64() }
        n.key = NodePublic(raw: key32())
        n.keyExpiry = maybe { $0.time() }
        n.keySignature = maybe { g in Data(g.chance(0.2) ? [] : g.bytes()) }
        n.machine = maybe { MachinePublic(raw: $0.key32()) }
        n.discoKey = maybe { DiscoPublic(raw: $0.key32()) }
        n.addresses = maybe { $0.list(0...2) { $0.prefix() } }
        n.allowedIPs = maybe { $0.list(0...4) { $0.prefix() } }
        n.endpoints = maybe { $0.list(0...3) { $0.addrPort() } }
        n.legacyDERP = maybe { $0.string() }
        n.homeDERP = maybe { $0.smallInt() }
        n.hostinfo = maybe { $0.hostinfo() }
        n.created = maybe { $0.time() }
        n.cap = maybe { $0.smallInt() }
        n.tags = maybe { $0.list(0...3) { $0.string() } }
        n.primaryRoutes = maybe { $0.list(0...2) { $0.prefix() } }
        n.lastSeen = maybe { $0.time() }
        n.online = maybe { $0.chance(0.5) }
        n.machineAuthorized = maybe { $0.chance(0.5) }
        n.capabilities = maybe { $0.list(0...2) { $0.string() } }
        n.capMap = maybe { $0.capMap() }
        n.unsignedPeerAPIOnly = maybe { $0.chance(0.5) }
        n.computedName = maybe { $0.string() }
        n.computedNameWithHost = maybe { $0.string() }
        n.dataPlaneAuditLogID = maybe { $0.string() }
        n.expired = maybe { $0.chance(0.5) }
        n.selfNodeV4MasqAddrForThisPeer = maybe { $0.address() }
        n.selfNodeV6MasqAddrForThisPeer = maybe { $0.address() }
        n.isWireGuardOnly = maybe { $0.chance(0.5) }
        n.isJailed = maybe { $0.chance(0.5) }
        n.exitNodeDNSResolvers = maybe { $0.list(0...2) { $0.resolver() } }
        return n
    }

    mutating func peerChange() -> PeerChange {
        var p = PeerChange(nodeID: int64())
        p.derpRegion = maybe { $0.smallInt() }
        p.cap = maybe { $0.smallInt() }
        p.capMap = maybe { $0.capMap() }
        p.endpoints = maybe { $0.list(0...3) { $0.addrPort() } }
        p.key = maybe { NodePublic(raw: $0.key32()) }
        p.keySignature = maybe { Data($0.bytes()) }
        p.discoKey = maybe { DiscoPublic(raw: $0.key32()) }
        p.online = maybe { $0.chance(0.5) }
        p.lastSeen = maybe { $0.time() }
        p.keyExpiry = maybe { $0.time() }
        return p
    }

    mutating func filterRule() -> FilterRule {
        FilterRule(srcIPs: list(0...3) { $0.string() },
                   dstPorts: maybe { $0.list(0...3) { g in
                       NetPortRange(ip: g.string(), ports: PortRange(first: UInt16(g.int(0...65535)), last: UInt16(g.int(0...65535))))
                   } },
                   ipProto: maybe { $0.list(0...3) { $0.smallInt() } },
                   capGrant: maybe { $0.list(0...2) { g in
                       CapGrant(dsts: g.list(0...2) { $0.string() },
                                capMap: g.maybe { $0.capMap() })
                   } })
    }

    mutating func derpMap() -> DERPMap {
        var regions = [Int: DERPRegion]()
        for _ in 0..<int(0...4) {
            let id = chance(0.2) ? Int(int64()) : int(1...1000)
            var region = DERPRegion(regionID: id, regionCode: string(), regionName: string(), nodes: [])
            region.nodes = maybe { $0.list(0...2) { g in
                var node = DERPNode(name: g.string(), regionID: g.smallInt(), hostName: g.string())
                node.certName = g.maybe { $0.string() }
                node.ipv4 = g.maybe { $0.string() }
                node.ipv6 = g.maybe { $0.string() }
                node.stunPort = g.maybe { $0.smallInt() }
                node.stunOnly = g.maybe { $0.chance(0.5) }
                node.derpPort = g.maybe { $0.smallInt() }
                node.insecureForTests = g.maybe { $0.chance(0.5) }
                node.stunTestIP = g.maybe { $0.string() }
                node.canPort80 = g.maybe { $0.chance(0.5) }
                return node
            } }
            region.latitude = maybe { $0.double() }
            region.longitude = maybe { $0.double() }
            region.avoid = maybe { $0.chance(0.5) }
            region.noMeasureNoHome = maybe { $0.chance(0.5) }
            regions[id] = region
        }
        var map = DERPMap(regions: regions, omitDefaultRegions: chance(presence) ? true : nil)
        map.homeParams = maybe { g in
            var scores = [Int: Double]()
            for _ in 0..<g.int(1...3) { scores[g.int(-5...2000)] = g.double() }
            return DERPHomeParams(regionScore: g.chance(g.presence) ? scores : nil)
        }
        return map
    }

    mutating func dnsConfig() -> DNSConfig {
        var d = DNSConfig()
        d.resolvers = maybe { $0.list(0...2) { $0.resolver() } }
        d.routes = maybe { $0.dictionary { g in g.chance(0.3) ? nil : g.list(0...2) { $0.resolver() } } }
        d.fallbackResolvers = maybe { $0.list(0...2) { $0.resolver() } }
        d.domains = maybe { $0.list(0...3) { $0.string() } }
        d.proxied = maybe { $0.chance(0.5) }
        d.nameservers = maybe { $0.list(0...2) { $0.address() } }
        d.certDomains = maybe { $0.list(0...2) { $0.string() } }
        d.extraRecords = maybe { $0.list(0...2) { g in DNSRecord(name: g.string(), type: g.maybe { $0.string() }, value: g.string()) } }
        d.exitNodeFilteredSet = maybe { $0.list(0...2) { $0.string() } }
        return d
    }

    mutating func userProfile() -> UserProfile {
        var u = UserProfile(id: int64(), loginName: string(), displayName: string(), profilePicURL: maybe { $0.string() })
        u.groups = maybe { $0.list(0...2) { $0.string() } }
        return u
    }

    mutating func sshPolicy() -> SSHPolicy {
        SSHPolicy(rules: list(0...2) { g in
            var rule = SSHRule(
                principals: g.list(0...2) { g in
                    SSHPrincipal(nodeIP: g.maybe { $0.string() }, node: g.maybe { $0.string() },
                                 userLogin: g.maybe { $0.string() }, any: g.maybe { $0.chance(0.5) })
                },
                sshUsers: g.dictionary { $0.string() },
                action: g.maybe { g in
                    SSHAction(message: g.maybe { $0.string() }, reject: g.maybe { $0.chance(0.5) },
                              accept: g.maybe { $0.chance(0.5) }, sessionDuration: g.maybe { $0.int64() },
                              allowAgentForwarding: g.maybe { $0.chance(0.5) }, holdAndDelegate: g.maybe { $0.string() },
                              allowLocalPortForwarding: g.maybe { $0.chance(0.5) },
                              allowRemotePortForwarding: g.maybe { $0.chance(0.5) })
                },
                acceptEnv: g.maybe { $0.list(0...2) { $0.string() } })
            rule.ruleExpires = g.maybe { $0.time() }
            return rule
        })
    }

    mutating func pingRequest() -> PingRequest {
        var p = PingRequest(url: string())
        p.urlIsNoise = maybe { $0.chance(0.5) }
        p.log = maybe { $0.chance(0.5) }
        p.types = maybe { $0.string() }
        p.ip = maybe { $0.address() }
        p.payload = maybe { $0.bytes() }
        return p
    }

    mutating func mapResponse() -> MapResponse {
        var r = MapResponse()
        r.mapSessionHandle = maybe { $0.string() }
        r.seq = maybe { $0.int64() }
        r.keepAlive = maybe { $0.chance(0.5) }
        r.pingRequest = maybe { $0.pingRequest() }
        r.popBrowserURL = maybe { $0.string() }
        r.node = maybe { $0.node() }
        r.derpMap = maybe { $0.derpMap() }
        r.peers = maybe { $0.list(0...3) { $0.node() } }
        r.peersChanged = maybe { $0.list(0...2) { $0.node() } }
        r.peersRemoved = maybe { $0.list(0...3) { $0.int64() } }
        r.peersChangedPatch = maybe { $0.list(0...3) { $0.peerChange() } }
        r.peerSeenChange = maybe { $0.dictionary { $0.chance(0.5) } }
        r.onlineChange = maybe { $0.dictionary { $0.chance(0.5) } }
        r.dnsConfig = maybe { $0.dnsConfig() }
        r.domain = maybe { $0.string() }
        r.collectServices = maybe { $0.chance(0.5) }
        r.packetFilter = maybe { $0.list(0...3) { $0.filterRule() } }
        r.packetFilters = maybe { $0.dictionary { g in g.chance(0.3) ? nil : g.list(0...2) { $0.filterRule() } } }
        r.userProfiles = maybe { $0.list(0...3) { $0.userProfile() } }
        r.health = maybe { $0.list(0...2) { $0.string() } }
        r.displayMessages = maybe { $0.dictionary { $0.jsonValue() } }
        r.sshPolicy = maybe { $0.presentJSONValue() }
        r.controlTime = maybe { $0.time() }
        r.tkaInfo = maybe { $0.presentJSONValue() }
        r.domainDataPlaneAuditLogID = maybe { $0.string() }
        r.debug = maybe { $0.presentJSONValue() }
        r.controlDialPlan = maybe { $0.presentJSONValue() }
        r.clientVersion = maybe { $0.presentJSONValue() }
        return r
    }
}
