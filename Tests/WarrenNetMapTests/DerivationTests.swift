import TailscaleKeys
import WarrenNetMap
import WarrenPacket
import WarrenTailcfg
import XCTest

final class DerivationTests: XCTestCase {
    let now = Fixture.time(1_800_000_000)
    let p = Fixture.prefix

    /// Self 1; peer 2 plain (nil AllowedIPs); peer 3 a subnet router; peer 4 an exit node that also
    /// routes a subnet; peer 5 expired; peer 6 with no disco key and no DERP; peer 7 marked expired.
    private func map() -> NetworkMap {
        var response = MapResponse()
        response.node = Fixture.node(1)
        var router = Fixture.node(3)
        router.allowedIPs = [Fixture.v4(3), Fixture.v6(3), p("192.168.10.0/24"), p("10.1.0.0/16")]
        var exit = Fixture.node(4)
        exit.allowedIPs = [Fixture.v4(4), Fixture.v6(4), p("0.0.0.0/0"), p("::/0"), p("172.16.0.0/12")]
        exit.keyExpiry = Fixture.time(1_900_000_000)
        var expired = Fixture.node(5)
        expired.keyExpiry = Fixture.time(1_700_000_000)
        var unreachable = Fixture.node(6)
        unreachable.discoKey = nil
        unreachable.homeDERP = nil
        var marked = Fixture.node(7)
        marked.expired = true
        response.peers = [Fixture.node(2), router, exit, expired, unreachable, marked]
        response.packetFilter = [FilterRule(srcIPs: ["*"], dstPorts: [NetPortRange(ip: "*", ports: .all)])]
        return NetworkMap([response], now: now)
    }

    func testDefaultPrefs() {
        let config = map().wireGuardConfig(prefs: Prefs(), now: now)
        XCTAssertEqual(config.peers.map(\.nodeID), [2, 3, 4])
        XCTAssertEqual(config.skippedExpired, [5, 7])
        XCTAssertEqual(config.skippedUnreachable, [6])
        XCTAssertEqual(config.addresses, [Fixture.v4(1), Fixture.v6(1)])
        // nil AllowedIPs = Addresses; subnet and default routes left out.
        XCTAssertEqual(config.peers[0].allowedIPs, [Fixture.v4(2), Fixture.v6(2)])
        XCTAssertEqual(config.peers[1].allowedIPs, [Fixture.v4(3), Fixture.v6(3)])
        XCTAssertEqual(config.peers[2].allowedIPs, [Fixture.v4(4), Fixture.v6(4)])
        XCTAssertEqual(config.peers[0].key, Fixture.key(2))
        XCTAssertEqual(config.peers[0].discoKey, Fixture.disco(2))
        XCTAssertEqual(config.peers[0].homeDERP, 1)
        XCTAssertEqual(config.peers[0].endpoints, [AddrPort("192.0.2.2:41641")!])

        let router = map().routerConfig(prefs: Prefs(), now: now)
        XCTAssertEqual(router.localAddresses, [Fixture.v4(1), Fixture.v6(1)])
        XCTAssertEqual(router.routes, [p("100.64.0.0/10"), p("fd7a:115c:a1e0::/48")])
    }

    func testExpiryIsRelativeToNow() {
        let earlier = Fixture.time(1_600_000_000)
        XCTAssertEqual(map().wireGuardConfig(prefs: Prefs(), now: earlier).skippedExpired, [7])
        let later = Fixture.time(2_000_000_000)
        XCTAssertEqual(map().wireGuardConfig(prefs: Prefs(), now: later).skippedExpired, [4, 5, 7])
        var zero = Fixture.node(9)
        zero.keyExpiry = .goZero
        XCTAssertFalse(NetworkMap.isExpired(zero, now: now), "Go's zero time means no expiry")
    }

    func testAcceptRoutes() {
        let prefs = Prefs(acceptRoutes: true)
        let config = map().wireGuardConfig(prefs: prefs, now: now)
        XCTAssertEqual(config.peers[1].allowedIPs, [p("10.1.0.0/16"), Fixture.v4(3), p("192.168.10.0/24"), Fixture.v6(3)])
        XCTAssertEqual(config.peers[2].allowedIPs, [p("100.64.0.4/32"), p("172.16.0.0/12"), Fixture.v6(4)],
                       "subnets of an exit node yes, its default routes no")
        let router = map().routerConfig(prefs: prefs, now: now)
        XCTAssertEqual(router.routes, [p("10.1.0.0/16"), p("100.64.0.0/10"), p("172.16.0.0/12"), p("192.168.10.0/24"),
                                       p("fd7a:115c:a1e0::/48")])
    }

    func testExitNodeOnlyWhenSelected() {
        for prefs in [Prefs(exitNodeID: "n4"), Prefs(exitNodeIP: IPAddress("100.64.0.4")!)] {
            let config = map().wireGuardConfig(prefs: prefs, now: now)
            XCTAssertEqual(config.peers[2].allowedIPs, [p("0.0.0.0/0"), p("100.64.0.4/32"), p("::/0"), Fixture.v6(4)])
            XCTAssertEqual(config.peers[1].allowedIPs, [Fixture.v4(3), Fixture.v6(3)])
            XCTAssertEqual(map().exitNode(prefs: prefs)?.id, 4)
            let router = map().routerConfig(prefs: prefs, now: now)
            XCTAssertEqual(router.routes, [p("0.0.0.0/0"), p("100.64.0.0/10"), p("::/0"), p("fd7a:115c:a1e0::/48")])
        }
        // Selecting a peer that offers no default route gives it none.
        let config = map().wireGuardConfig(prefs: Prefs(exitNodeID: "n2"), now: now)
        XCTAssertEqual(config.peers[0].allowedIPs, [Fixture.v4(2), Fixture.v6(2)])
        XCTAssertNil(map().exitNode(prefs: Prefs(exitNodeID: "nope")))
    }

    func testFilterConfig() {
        let prefs = Prefs(shieldsUp: true, advertiseRoutes: [p("192.168.1.7/24"), p("0.0.0.0/0")], noSNAT: true)
        let filter = map().filterConfig(prefs: prefs)
        XCTAssertTrue(filter.shieldsUp)
        XCTAssertEqual(filter.rules.count, 1)
        // The node's addresses, the subnet it offers, and (0.0.0.0/0 advertised) the IPv4 internet without
        // the tailnet's range (RoutingTests has the exit node's own networks).
        let guarded = { (a: String) in filter.localAddresses.contains { $0.contains(IPAddress(a)!) } }
        XCTAssertTrue(filter.localAddresses.contains(Fixture.v4(1)) && filter.localAddresses.contains(Fixture.v6(1)))
        XCTAssertTrue(filter.localAddresses.contains(p("192.168.1.0/24")))
        XCTAssertTrue(guarded("8.8.8.8"))
        XCTAssertFalse(guarded("100.64.0.9"))
        XCTAssertFalse(guarded("2001:db8::1"), "::/0 is not advertised")
        let noExit = map().filterConfig(prefs: Prefs(advertiseRoutes: [p("192.168.1.7/24")]))
        XCTAssertEqual(noExit.localAddresses, [Fixture.v4(1), p("192.168.1.0/24"), Fixture.v6(1)])
        XCTAssertFalse(NetworkMap().filterConfig(prefs: Prefs()).shieldsUp)
        XCTAssertEqual(NetworkMap().filterConfig(prefs: Prefs()).rules, [])

        let router = map().routerConfig(prefs: prefs, now: now)
        XCTAssertEqual(router.subnetRoutes, [p("192.168.1.0/24")])
        XCTAssertFalse(router.snatSubnetRoutes)
    }

    func testLegacyDERPAndHelpers() {
        XCTAssertEqual(NetworkMap.legacyDERPRegion("127.3.3.40:12"), 12)
        XCTAssertNil(NetworkMap.legacyDERPRegion("127.3.3.40:"))
        XCTAssertNil(NetworkMap.legacyDERPRegion("127.3.3.41:1"))
        XCTAssertNil(NetworkMap.legacyDERPRegion("127.3.3.40:0"))
        var response = MapResponse()
        var legacy = Fixture.node(2)
        legacy.homeDERP = nil
        legacy.discoKey = nil
        legacy.legacyDERP = "127.3.3.40:3"
        response.peers = [legacy]
        let config = NetworkMap([response], now: now).wireGuardConfig(prefs: Prefs(), now: now)
        XCTAssertEqual(config.peers.map(\.homeDERP), [3], "legacy DERP string counts as a home region")
    }
}
