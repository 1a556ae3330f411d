import Foundation
import TailscaleKeys
import WarrenNetMap
import WarrenPacket
import WarrenTailcfg
import XCTest

final class NetworkMapReducerTests: XCTestCase {
    let now = Fixture.time(1_800_000_000)

    private func first() -> MapResponse {
        var response = MapResponse()
        response.node = Fixture.node(1)
        response.peers = [Fixture.node(4), Fixture.node(2), Fixture.node(3)]
        response.derpMap = DERPMap(regions: [:])
        response.domain = "tailnet.ts.net"
        response.packetFilter = [FilterRule(srcIPs: ["*"], dstPorts: [NetPortRange(ip: "*", ports: .all)])]
        response.userProfiles = [UserProfile(id: 1, loginName: "a@example.com", displayName: "A")]
        response.collectServices = true
        return response
    }

    func testFullMessageSortsAndIndexes() {
        let map = NetworkMap([first()], now: now)
        XCTAssertEqual(map.selfNode?.id, 1)
        XCTAssertEqual(map.peers.map(\.id), [2, 3, 4])
        XCTAssertEqual(map.peer(id: 3)?.stableID, "n3")
        XCTAssertNil(map.peer(id: 1))
        XCTAssertEqual(map.peer(nodeKey: Fixture.key(4))?.id, 4)
        XCTAssertEqual(map.peer(address: IPAddress("100.64.0.2")!)?.id, 2)
        XCTAssertEqual(map.peer(address: IPAddress("fd7a:115c:a1e0::3")!)?.id, 3)
        XCTAssertNil(map.peer(address: IPAddress("100.64.0.9")!))
        XCTAssertEqual(map.node(address: IPAddress("100.64.0.1")!)?.id, 1)
        XCTAssertEqual(map.peers(discoKey: Fixture.disco(2)).map(\.id), [2])
        XCTAssertEqual(map.userProfile(of: map.peers[0])?.loginName, "a@example.com")
        XCTAssertEqual(map.domain, "tailnet.ts.net")
        XCTAssertTrue(map.collectServices)
        XCTAssertTrue(map.hasPacketFilter)
        XCTAssertEqual(map.packetFilterRules.count, 1)
    }

    func testDeltas() {
        var map = NetworkMap([first()], now: now)
        let before = map

        map.apply(.keepAliveMessage, now: now)
        XCTAssertEqual(map, before, "keep-alives change nothing")
        map.apply(MapResponse(), now: now)
        XCTAssertEqual(map, before, "an empty message changes nothing")

        var delta = MapResponse()
        delta.peersRemoved = [3, 99]
        var changed = Fixture.node(5)
        changed.legacyDERP = "127.3.3.40:7"
        changed.homeDERP = nil
        delta.peersChanged = [changed, Fixture.node(2, user: 2)]
        delta.onlineChange = ["4": true, "99": true, "junk": false]
        delta.peerSeenChange = ["2": true, "4": false]
        var patch = PeerChange(nodeID: 4)
        patch.derpRegion = 9
        patch.endpoints = [AddrPort("[2001:db8::1]:1")!]
        patch.keyExpiry = Fixture.time(5)
        delta.peersChangedPatch = [patch, PeerChange(nodeID: 77)]
        delta.userProfiles = [UserProfile(id: 2, loginName: "b@example.com", displayName: "B")]
        map.apply(delta, now: now)

        XCTAssertEqual(map.peers.map(\.id), [2, 4, 5])
        XCTAssertEqual(map.peer(id: 5)?.homeDERP, 7, "legacy DERP string read")
        XCTAssertNil(map.peer(id: 5)?.legacyDERP)
        XCTAssertEqual(map.peer(id: 2)?.user, 2)
        XCTAssertEqual(map.peer(id: 2)?.lastSeen, now)
        XCTAssertEqual(map.peer(id: 4)?.online, true)
        XCTAssertNil(map.peer(id: 4)?.lastSeen)
        XCTAssertEqual(map.peer(id: 4)?.homeDERP, 9)
        XCTAssertEqual(map.peer(id: 4)?.endpoints, [AddrPort("[2001:db8::1]:1")!])
        XCTAssertEqual(map.peer(id: 4)?.keyExpiry, Fixture.time(5))
        XCTAssertEqual(map.peer(id: 4)?.discoKey, Fixture.disco(4), "fields absent from the patch stay")
        XCTAssertNil(map.peer(address: IPAddress("100.64.0.3")!))
        XCTAssertEqual(map.peer(address: IPAddress("100.64.0.5")!)?.id, 5)
        XCTAssertEqual(map.userProfiles.keys.sorted(), [1, 2], "profiles merge")
        XCTAssertEqual(map.domain, "tailnet.ts.net")
        XCTAssertEqual(map.selfNode, before.selfNode)

        // Patched key: the key index follows.
        var rekey = MapResponse()
        var change = PeerChange(nodeID: 2)
        change.key = Fixture.key(200)
        rekey.peersChangedPatch = [change]
        map.apply(rekey, now: now)
        XCTAssertEqual(map.peer(nodeKey: Fixture.key(200))?.id, 2)
        XCTAssertNil(map.peer(nodeKey: Fixture.key(2)))

        // A later full list replaces everything and the same message's deltas are not read.
        var full = MapResponse()
        full.peers = [Fixture.node(8)]
        full.peersRemoved = [8]
        map.apply(full, now: now)
        XCTAssertEqual(map.peers.map(\.id), [8])
        XCTAssertNil(map.peer(id: 4))
    }

    func testPacketFilters() {
        var map = NetworkMap()
        XCTAssertFalse(map.hasPacketFilter)
        XCTAssertEqual(map.packetFilterRules, [])
        let a = FilterRule(srcIPs: ["100.64.0.2"], dstPorts: [NetPortRange(ip: "*", ports: PortRange(first: 22, last: 22))])
        let b = FilterRule(srcIPs: ["*"], dstPorts: [NetPortRange(ip: "*", ports: PortRange(first: 80, last: 80))])

        var m = MapResponse()
        m.packetFilter = [a]
        map.apply(m, now: now)
        XCTAssertEqual(map.packetFilterRules, [a])

        map.apply(MapResponse(), now: now)
        XCTAssertEqual(map.packetFilterRules, [a], "nil is unchanged")

        m = MapResponse()
        m.packetFilters = ["zz": [b]]
        map.apply(m, now: now)
        XCTAssertEqual(map.packetFilterRules, [a, b], "named filters concatenate in name order (base < zz)")

        m = MapResponse()
        m.packetFilters = ["*": nil, "aa": [b]]
        map.apply(m, now: now)
        XCTAssertEqual(map.namedPacketFilters, ["aa": [b]], "\"*\": null clears first")

        m = MapResponse()
        m.packetFilters = ["aa": nil]
        map.apply(m, now: now)
        XCTAssertEqual(map.namedPacketFilters, [:])
        XCTAssertTrue(map.hasPacketFilter)

        m = MapResponse()
        m.packetFilter = []
        map.apply(m, now: now)
        XCTAssertEqual(map.namedPacketFilters, ["base": []], "empty non-nil: block all")
        XCTAssertEqual(map.packetFilterRules, [])
    }

    func testPacketFilterDecodedFromJSON() throws {
        let json = #"{"PacketFilters":{"*":null,"base":[{"SrcIPs":["*"],"DstPorts":[{"IP":"*","Ports":{"First":0,"Last":65535}}]}]},"Domain":"x.ts.net"}"#
        let response = try JSONDecoder().decode(MapResponse.self, from: Data(json.utf8))
        let map = NetworkMap([response], now: now)
        XCTAssertEqual(map.namedPacketFilters.keys.sorted(), ["base"])
        XCTAssertEqual(map.domain, "x.ts.net")
    }

    func testSelfAndSettingsNilMeansUnchanged() {
        var map = NetworkMap([first()], now: now)
        var dns = DNSConfig()
        dns.domains = ["example.com"]
        var m = MapResponse()
        m.dnsConfig = dns
        m.sshPolicy = .object([:])
        m.controlTime = Fixture.time(42)
        m.collectServices = false
        map.apply(m, now: now)
        XCTAssertEqual(map.dnsConfig?.domains, ["example.com"])
        XCTAssertEqual(map.sshPolicy, .object([:]))
        XCTAssertEqual(map.controlTime, Fixture.time(42))
        XCTAssertFalse(map.collectServices)
        XCTAssertEqual(map.selfNode?.id, 1)

        m = MapResponse()
        m.domain = ""
        var me = Fixture.node(1)
        me.name = "renamed."
        m.node = me
        map.apply(m, now: now)
        XCTAssertEqual(map.domain, "tailnet.ts.net", "empty domain is unchanged")
        XCTAssertEqual(map.dnsConfig?.domains, ["example.com"])
        XCTAssertEqual(map.selfNode?.name, "renamed.")
    }
}
