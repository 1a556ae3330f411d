// The map builder: node wire form, DNS configuration, and the packet-filter hook.

import TailscaleKeys
import WarrenPacket
import WarrenTailcfg
import XCTest
@testable import WarrenControlServer

final class NetworkMapBuilderTests: XCTestCase {
    func node(_ id: Int64, _ name: String, user: Int64 = 1) -> ControlNode {
        var generator = TestGenerator(seed: UInt64(id))
        var n = ControlNode(id: id, machineKey: MachinePrivate.generate(using: &generator).publicKey,
                            nodeKey: NodePrivate.generate(using: &generator).publicKey, userID: user, hostname: name,
                            givenName: name, created: TailcfgTime(secondsSince1970: 1_800_000_000))
        n.ipv4 = IPAddress("100.64.0.\(id)")
        n.ipv6 = IPAddress("fd7a:115c:a1e0::\(id)")
        n.homeDERP = 900
        return n
    }

    func testFullMapListsSortedPeersWithNamesAddressesAndDERP() {
        var configuration = ControlConfiguration(serverURL: "http://x")
        configuration.baseDomain = "corp.example"
        let builder = NetworkMapBuilder(configuration: configuration)
        let nodes: [Int64: ControlNode] = [3: node(3, "c"), 1: node(1, "a"), 2: node(2, "b")]
        let tailnet = TailnetSnapshot(nodes: nodes, users: [1: ControlUser(id: 1, name: "alice")], online: [2])
        let map = builder.fullMap(for: nodes[1]!, in: tailnet, now: TailcfgTime(secondsSince1970: 1_900_000_000), omitPeers: false)
        XCTAssertEqual(map.node?.name, "a.corp.example.")
        XCTAssertEqual(map.peers?.map(\.id), [2, 3])
        XCTAssertEqual(map.peers?.map(\.name), ["b.corp.example.", "c.corp.example."])
        XCTAssertEqual(map.peers?.first?.online, true)
        XCTAssertEqual(map.peers?.last?.online, false)
        XCTAssertEqual(map.peers?.first?.addresses?.map(\.description), ["100.64.0.2/32", "fd7a:115c:a1e0::2/128"])
        XCTAssertEqual(map.peers?.first?.homeDERP, 900)
        XCTAssertEqual(map.peers?.first?.legacyDERP, "127.3.3.40:900")
        XCTAssertEqual(map.userProfiles?.map(\.loginName), ["alice"])
    }

    /// A user with an e-mail address logs in as it (headscale's Username(): e-mail, else name), and the profile
    /// carries the picture; a user without either shows its name and no picture.
    func testUserProfilesCarryTheLoginAndThePicture() {
        let builder = NetworkMapBuilder(configuration: ControlConfiguration(serverURL: "http://x"))
        let nodes: [Int64: ControlNode] = [1: node(1, "a", user: 1), 2: node(2, "b", user: 2)]
        let users: [Int64: ControlUser] = [
            1: ControlUser(id: 1, name: "alice", email: "alice@example.com", pictureURL: "https://example.com/a.png"),
            2: ControlUser(id: 2, name: "bob"),
        ]
        let map = builder.fullMap(for: nodes[1]!, in: TailnetSnapshot(nodes: nodes, users: users, online: []),
                                  now: TailcfgTime(secondsSince1970: 1_900_000_000), omitPeers: false)
        let profiles = (map.userProfiles ?? []).sorted { $0.id < $1.id }
        XCTAssertEqual(profiles.map(\.loginName), ["alice@example.com", "bob"])
        XCTAssertEqual(profiles.map(\.profilePicURL), ["https://example.com/a.png", nil])
    }

    func testDNSConfigHasSearchDomainMagicDNSRouteSplitDNSAndResolvers() throws {
        var configuration = ControlConfiguration(serverURL: "http://x")
        configuration.baseDomain = "lab.warren"
        configuration.dns.nameservers = ["1.1.1.1"]
        configuration.dns.splitDNS = ["corp.example": ["10.0.0.53"]]
        configuration.dns.extraRecords = [DNSRecord(name: "db.lab.warren", type: "A", value: "100.64.0.9")]
        let dns = NetworkMapBuilder(configuration: configuration).dnsConfig()
        XCTAssertEqual(dns.proxied, true)
        XCTAssertEqual(dns.domains, ["lab.warren"])
        XCTAssertEqual(dns.resolvers?.map(\.addr), ["1.1.1.1"])
        XCTAssertEqual(dns.routes?["corp.example."]??.map(\.addr), ["10.0.0.53"])
        XCTAssertEqual(dns.routes?["lab.warren."]??.count, 0)
        let json = String(decoding: try TailcfgJSON.encode(dns), as: UTF8.self)
        XCTAssertTrue(json.contains(#""lab.warren.":[]"#), json)
    }

    func testPolicyHookDecidesVisibilityAndRules() {
        struct OnlyEvenPeers: PacketFilterPolicy {
            func filterRules(for node: ControlNode, in tailnet: TailnetSnapshot) -> [FilterRule] { [] }
            func canSee(_ node: ControlNode, _ peer: ControlNode, in tailnet: TailnetSnapshot) -> Bool { peer.id % 2 == 0 }
        }
        let builder = NetworkMapBuilder(configuration: ControlConfiguration(serverURL: "http://x"), policy: OnlyEvenPeers())
        let nodes: [Int64: ControlNode] = [1: node(1, "a"), 2: node(2, "b"), 3: node(3, "c")]
        let map = builder.fullMap(for: nodes[1]!, in: TailnetSnapshot(nodes: nodes, users: [:], online: []),
                                  now: TailcfgTime(secondsSince1970: 0), omitPeers: false)
        XCTAssertEqual(map.peers?.map(\.id), [2])
        XCTAssertEqual(map.packetFilter, [])
        // An empty filter is sent as [] (block everything), not left out (unchanged).
        XCTAssertTrue(String(decoding: try! TailcfgJSON.encode(map), as: UTF8.self).contains(#""PacketFilter":[]"#))
    }

    func testMagicDNSLabelsGetSuffixesOnCollision() {
        XCTAssertEqual(MagicDNSLabel.sanitize("Web Server_01.local"), "web-server-01-local")
        XCTAssertEqual(MagicDNSLabel.unique("web", taken: ["web", "web-1"]), "web-2")
        XCTAssertEqual(MagicDNSLabel.unique("db", taken: ["web"]), "db")
    }
}
