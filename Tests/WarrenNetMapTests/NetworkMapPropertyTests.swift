import Foundation
import TailscaleKeys
import WarrenNetMap
import WarrenPacket
import WarrenTailcfg
import WarrenTestSupport
import XCTest

/// Random streams of deltas, applied one message at a time, must give the same map as one full
/// message describing the final state. The generator keeps its own model of that state: each
/// operation changes the model directly and then is written as the message field that says so.
final class NetworkMapPropertyTests: XCTestCase {
    struct Model {
        var selfNode: Node?
        var peers: [Int64: Node] = [:]
        var derpMap: DERPMap?
        var dnsConfig: DNSConfig?
        var domain = ""
        var filters: [String: [FilterRule]] = [:]
        var profiles: [Int64: UserProfile] = [:]
        var ssh: JSONValue?
        var collectServices = false
        var controlTime: TailcfgTime?

        /// One message that describes the whole model (peers deliberately unsorted).
        func fullMessage(using rng: inout SeededGenerator) -> MapResponse {
            var m = MapResponse()
            m.node = selfNode
            m.peers = Array(peers.values).shuffled(using: &rng)
            m.derpMap = derpMap
            m.dnsConfig = dnsConfig
            m.domain = domain
            var named: [String: [FilterRule]?] = ["*": nil]
            for (name, rules) in filters { named[name] = rules }
            m.packetFilters = named
            m.userProfiles = Array(profiles.values)
            m.sshPolicy = ssh
            m.collectServices = collectServices
            m.controlTime = controlTime
            return m
        }
    }

    struct Generator {
        var rng: SeededGenerator
        let now: TailcfgTime

        mutating func chance(_ p: Double) -> Bool { Double.random(in: 0..<1, using: &rng) < p }
        mutating func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &rng) }
        mutating func id() -> Int64 { Int64(int(1...24)) }
        mutating func time() -> TailcfgTime { TailcfgTime(secondsSince1970: Int64(int(1_700_000_000...1_900_000_000))) }

        mutating func endpoints() -> [AddrPort] {
            (0..<int(0...3)).map { _ in AddrPort("198.51.100.\(int(1...254)):\(int(1...65535))")! }
        }

        mutating func capMap() -> NodeCapMap {
            var map: NodeCapMap = [:]
            for name in ["https://tailscale.com/cap/ssh", "funnel", "x"] where chance(0.5) {
                map[name] = chance(0.3) ? .some(nil) : [.string("v\(int(0...3))"), .number(Double(int(0...9)))]
            }
            return map
        }

        mutating func node(_ id: Int64) -> Node {
            var n = Fixture.node(id, user: Int64(int(1...4)))
            n.key = Fixture.key(int(1...5000))
            n.discoKey = chance(0.8) ? Fixture.disco(int(1...200)) : nil
            if chance(0.4) { n.allowedIPs = (n.addresses ?? []) + [IPPrefix("10.\(int(0...255)).0.0/16")!] }
            n.endpoints = chance(0.8) ? endpoints() : nil
            n.homeDERP = chance(0.8) ? int(1...9) : nil
            n.online = chance(0.7) ? chance(0.5) : nil
            n.lastSeen = chance(0.5) ? time() : nil
            n.keyExpiry = chance(0.5) ? time() : nil
            n.cap = chance(0.8) ? int(100...140) : nil
            n.capMap = chance(0.5) ? capMap() : nil
            n.tags = chance(0.3) ? ["tag:server"] : nil
            n.name = "h\(id)-\(int(0...9)).tailnet.ts.net."
            return n
        }

        mutating func rules() -> [FilterRule] {
            (0..<int(0...2)).map { _ in
                FilterRule(srcIPs: ["100.64.0.\(int(1...30))"],
                           dstPorts: [NetPortRange(ip: "*", ports: PortRange(first: UInt16(int(1...100)), last: 200))])
            }
        }

        mutating func profile() -> UserProfile {
            let id = Int64(int(1...4))
            return UserProfile(id: id, loginName: "u\(id)@example.com", displayName: "User \(id) v\(int(0...5))")
        }

        /// The first message of a stream: full, and it changes the model to what it says.
        mutating func first(_ model: inout Model) -> MapResponse {
            model.selfNode = node(100)
            for _ in 0..<int(1...10) { let id = id(); model.peers[id] = node(id) }
            model.derpMap = DERPMap(regions: [:], omitDefaultRegions: chance(0.5))
            model.domain = "tailnet\(int(0...3)).ts.net"
            model.filters = ["base": rules()]
            for _ in 0..<int(0...3) { let p = profile(); model.profiles[p.id] = p }
            var m = model.fullMessage(using: &rng)
            m.packetFilters = nil
            m.packetFilter = model.filters["base"]
            return m
        }

        /// A random delta message, applied to the model in the order the reducer reads the fields.
        mutating func delta(_ model: inout Model) -> MapResponse {
            var m = MapResponse()
            if chance(0.1) { m.node = node(100); model.selfNode = m.node }
            if chance(0.05) {
                // A new full list mid-stream.
                var all: [Int64: Node] = [:]
                for _ in 0..<int(1...8) { let id = id(); all[id] = node(id) }
                model.peers = all
                m.peers = Array(all.values).shuffled(using: &rng)
            } else {
                if chance(0.3) {
                    m.peersRemoved = (0..<int(1...3)).map { _ in id() }
                    for id in m.peersRemoved! { model.peers[id] = nil }
                }
                if chance(0.4) {
                    m.peersChanged = (0..<int(1...3)).map { _ in node(id()) }
                    for n in m.peersChanged! { model.peers[n.id] = n }
                }
                if chance(0.3) {
                    var seen: [String: Bool] = [:]
                    for _ in 0..<int(1...4) { seen[String(id())] = chance(0.5) }
                    for (key, value) in seen where model.peers[Int64(key)!] != nil {
                        model.peers[Int64(key)!]!.lastSeen = value ? now : nil
                    }
                    m.peerSeenChange = seen
                }
                if chance(0.3) {
                    var online: [String: Bool] = [:]
                    for _ in 0..<int(1...4) { online[String(id())] = chance(0.5) }
                    for (key, value) in online where model.peers[Int64(key)!] != nil {
                        model.peers[Int64(key)!]!.online = value
                    }
                    m.onlineChange = online
                }
                if chance(0.5) {
                    m.peersChangedPatch = (0..<int(1...4)).map { _ in patch(&model) }
                }
            }
            if chance(0.1) { model.derpMap = DERPMap(regions: [:], omitDefaultRegions: chance(0.5)); m.derpMap = model.derpMap }
            if chance(0.1) {
                var dns = DNSConfig()
                dns.domains = ["d\(int(0...9)).example"]
                model.dnsConfig = dns
                m.dnsConfig = dns
            }
            if chance(0.1) {
                m.domain = chance(0.3) ? "" : "tailnet\(int(0...3)).ts.net"
                if m.domain != "" { model.domain = m.domain! }
            }
            if chance(0.15) { m.packetFilter = rules(); model.filters["base"] = m.packetFilter }
            if chance(0.2) {
                var named: [String: [FilterRule]?] = [:]
                if chance(0.3) { named["*"] = .some(nil); model.filters = [:] }
                for name in ["a", "b", "base"] where chance(0.4) {
                    let value: [FilterRule]? = chance(0.3) ? nil : rules()
                    named[name] = .some(value)
                }
                for (name, value) in named where name != "*" { model.filters[name] = value }
                m.packetFilters = named
            }
            if chance(0.2) {
                m.userProfiles = (0..<int(1...2)).map { _ in profile() }
                for p in m.userProfiles! { model.profiles[p.id] = p }
            }
            if chance(0.1) { model.ssh = .object(["rules": .array([.string("r\(int(0...9))")])]); m.sshPolicy = model.ssh }
            if chance(0.1) { model.collectServices = chance(0.5); m.collectServices = model.collectServices }
            if chance(0.2) { model.controlTime = time(); m.controlTime = model.controlTime }
            return m
        }

        /// A patch of random fields of a random peer (sometimes one that does not exist: dropped).
        mutating func patch(_ model: inout Model) -> PeerChange {
            let id = id()
            var change = PeerChange(nodeID: id)
            guard var n = model.peers[id] else {
                change.online = true
                return change
            }
            if chance(0.3) { let v = int(1...9); change.derpRegion = v; n.homeDERP = v }
            if chance(0.3) { let v = int(100...140); change.cap = v; n.cap = v }
            if chance(0.3) { let v = capMap(); change.capMap = v; n.capMap = v }
            if chance(0.3) { let v = endpoints(); change.endpoints = v; n.endpoints = v }
            if chance(0.2) { let v = Fixture.key(int(1...5000)); change.key = v; n.key = v }
            if chance(0.2) { let v = Data(rng.bytes(count: 8)); change.keySignature = v; n.keySignature = v }
            if chance(0.2) { let v = Fixture.disco(int(1...200)); change.discoKey = v; n.discoKey = v }
            if chance(0.3) { let v = chance(0.5); change.online = v; n.online = v }
            if chance(0.3) { let v = time(); change.lastSeen = v; n.lastSeen = v }
            if chance(0.3) { let v = time(); change.keyExpiry = v; n.keyExpiry = v }
            model.peers[id] = n
            return change
        }
    }

    func testIncrementalEqualsFull() {
        for run in 0..<600 {
            let now = TailcfgTime(secondsSince1970: 1_800_000_000 + Int64(run))
            var generator = Generator(rng: SeededGenerator(seed: 0x6E74_0000 + UInt64(run)), now: now)
            var model = Model()
            var map = NetworkMap()
            map.apply(generator.first(&model), now: now)
            for _ in 0..<generator.int(1...15) {
                map.apply(generator.delta(&model), now: now)
                if generator.chance(0.1) { map.apply(.keepAliveMessage, now: now) }
            }
            let full = NetworkMap([model.fullMessage(using: &generator.rng)], now: now)
            guard map == full else {
                XCTFail("run \(run): incremental map differs from the full one\n"
                        + "peers \(map.peers.map(\.id)) vs \(full.peers.map(\.id))\n"
                        + "first differing peer: \(zip(map.peers, full.peers).first { $0 != $1 }.map { "\($0)\n\($1)" } ?? "-")\n"
                        + "filters \(map.namedPacketFilters == full.namedPacketFilters) profiles \(map.userProfiles == full.userProfiles)")
                return
            }
            // The lookups agree with the list.
            for peer in map.peers {
                XCTAssertEqual(map.peer(id: peer.id), peer)
                for prefix in peer.addresses ?? [] { XCTAssertNotNil(map.peer(address: prefix.address)) }
            }
            XCTAssertEqual(map.peers.map(\.id), map.peers.map(\.id).sorted())
        }
    }
}
