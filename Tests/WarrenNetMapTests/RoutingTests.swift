// Subnet routes and exit nodes, pure: prefix arithmetic, the --advertise-routes rules, exit node lookup and
// the auto:any choice, and what the router and the filter get from them.

import TailscaleKeys
import WarrenDNS
import WarrenNetMap
import WarrenPacket
import WarrenTailcfg
import WarrenTestSupport
import XCTest

final class RoutingTests: XCTestCase {
    let now = Fixture.time(1_800_000_000)
    let p = Fixture.prefix

    // MARK: Prefix arithmetic

    func testHalves() throws {
        let (a, b) = try XCTUnwrap(p("10.0.0.0/8").halves)
        XCTAssertEqual([a, b], [p("10.0.0.0/9"), p("10.128.0.0/9")])
        let (c, d) = try XCTUnwrap(p("::/0").halves)
        XCTAssertEqual([c, d], [p("::/1"), p("8000::/1")])
        let (e, f) = try XCTUnwrap(p("fd00::/64").halves)
        XCTAssertEqual([e, f], [p("fd00::/65"), p("fd00::8000:0:0:0/65")])
        XCTAssertNil(p("192.0.2.1/32").halves)
    }

    func testSubtractingOneNetworkFromTheDefaultRoute() {
        let rest = p("0.0.0.0/0").subtracting([p("192.168.1.0/24")])
        // 24 prefixes: one per bit of the removed network's prefix.
        XCTAssertEqual(rest.count, 24)
        XCTAssertFalse(rest.contains { $0.contains(IPAddress("192.168.1.77")!) })
        XCTAssertTrue(rest.contains { $0.contains(IPAddress("192.168.0.255")!) })
        XCTAssertTrue(rest.contains { $0.contains(IPAddress("192.168.2.0")!) })
        XCTAssertTrue(rest.contains { $0.contains(IPAddress("8.8.8.8")!) })
        // Pairwise disjoint.
        for (i, a) in rest.enumerated() { for b in rest[(i + 1)...] { XCTAssertFalse(a.overlaps(b), "\(a) \(b)") } }
    }

    /// Random prefixes removed from random prefixes: an address is in the result exactly when it is in the
    /// minuend and in none of the subtrahends (checked on random addresses and on every boundary).
    func testSubtractingAgreesWithMembershipOnRandomInputs() {
        var rng = SeededGenerator(seed: 0x5EED_0042)
        func randomPrefix(_ minBits: Int) -> IPPrefix {
            let bits = minBits + Int(rng.next() % UInt64(33 - minBits))
            return IPPrefix(address: .v4(UInt32(truncatingIfNeeded: rng.next())), bits: bits)!.masked
        }
        for _ in 0..<300 {
            let base = randomPrefix(0)
            let holes = (0..<Int(rng.next() % 5)).map { _ in randomPrefix(Int(base.bits)) }
            let rest = base.subtracting(holes)
            var probes = (0..<50).map { _ in IPAddress.v4(UInt32(truncatingIfNeeded: rng.next())) }
            for hole in holes + [base] {
                guard case .v4(let v) = hole.address else { continue }
                let size: UInt64 = hole.bits == 0 ? 1 << 32 : UInt64(1) << UInt64(32 - hole.bits)
                probes += [v, v &- 1, UInt32(truncatingIfNeeded: UInt64(v) + size - 1), UInt32(truncatingIfNeeded: UInt64(v) + size)].map { IPAddress.v4($0) }
            }
            for address in probes {
                let expected = base.contains(address) && !holes.contains { $0.contains(address) }
                XCTAssertEqual(rest.contains { $0.contains(address) }, expected, "\(base) - \(holes) at \(address)")
            }
        }
    }

    // MARK: --advertise-routes

    func testAdvertisedRoutesFollowTailscalesRules() throws {
        XCTAssertEqual(try Prefs.advertisedRoutes(["10.0.0.0/24,192.168.1.0/24", " 10.0.0.0/24"], exitNode: false),
                       [p("10.0.0.0/24"), p("192.168.1.0/24")])
        XCTAssertEqual(try Prefs.advertisedRoutes([], exitNode: true), [p("0.0.0.0/0"), p("::/0")])
        XCTAssertEqual(try Prefs.advertisedRoutes(["0.0.0.0/0,::/0"], exitNode: false), [p("0.0.0.0/0"), p("::/0")])
        XCTAssertEqual(try Prefs.advertisedRoutes([""], exitNode: false), [])
        XCTAssertThrowsError(try Prefs.advertisedRoutes(["10.0.0.1/24"], exitNode: false)) { error in
            XCTAssertEqual(error as? RouteSpecError, .hostBits("10.0.0.1/24", expected: "10.0.0.0/24"))
            XCTAssertEqual("\(error)", "10.0.0.1/24 has non-address bits set; expected 10.0.0.0/24")
        }
        XCTAssertThrowsError(try Prefs.advertisedRoutes(["0.0.0.0/0"], exitNode: false)) {
            XCTAssertEqual($0 as? RouteSpecError, .halfExitNode)
        }
        for bad in ["10.0.0.0", "10.0.0.0/33", "banana", "fd00::/129"] {
            XCTAssertThrowsError(try Prefs.advertisedRoutes([bad], exitNode: false), bad)
        }
    }

    func testPrefsWrittenBeforeTheNewFieldsStillLoad() throws {
        let old = #"{"wantRunning":true,"acceptRoutes":true,"exitNodeAllowLANAccess":false,"shieldsUp":false,"acceptDNS":true,"hostname":"h","advertiseRoutes":[],"advertiseTags":[],"loginServer":"http://x","runSSH":false,"noSNAT":false}"#
        let prefs = try JSONDecoder().decode(Prefs.self, from: Data(old.utf8))
        XCTAssertTrue(prefs.wantRunning && prefs.acceptRoutes)
        XCTAssertFalse(prefs.autoExitNode)
        let again = try JSONDecoder().decode(Prefs.self, from: JSONEncoder().encode(prefs))
        XCTAssertEqual(again, prefs)
    }

    // MARK: Exit nodes

    /// Self 1; peer 2 plain; exit nodes 3 (region 2), 4 (region 1) and 5 (region 1, offline); 6 is called
    /// "dup" like 7, which also offers an exit.
    private func exitMap(online5: Bool = false) -> NetworkMap {
        var response = MapResponse()
        response.node = Fixture.node(1)
        func exit(_ id: Int64, region: Int, online: Bool?) -> Node {
            var n = Fixture.node(id)
            n.allowedIPs = (n.addresses ?? []) + [p("0.0.0.0/0"), p("::/0")]
            n.homeDERP = region
            n.online = online
            return n
        }
        var dup6 = Fixture.node(6)
        dup6.name = "dup.tailnet.ts.net."
        var dup7 = exit(7, region: 3, online: true)
        dup7.name = "dup.other.ts.net."
        response.peers = [Fixture.node(2), exit(3, region: 2, online: true), exit(4, region: 1, online: true),
                          exit(5, region: 1, online: online5), dup6, dup7]
        return NetworkMap([response], now: now)
    }

    func testExitNodeLookupByIPNameAndID() {
        let map = exitMap()
        XCTAssertEqual(try map.exitNode(named: "100.64.0.3").get().id, 3)
        XCTAssertEqual(try map.exitNode(named: "HOST4").get().id, 4)
        XCTAssertEqual(try map.exitNode(named: "host4.tailnet.ts.net.").get().id, 4)
        XCTAssertEqual(try map.exitNode(named: "n3").get().id, 3)
        XCTAssertEqual(map.exitNode(named: "host2"), .failure(.notAnExitNode("host2")))
        XCTAssertEqual(map.exitNode(named: "100.64.0.2"), .failure(.notAnExitNode("100.64.0.2")))
        XCTAssertEqual(map.exitNode(named: "nobody"), .failure(.noSuchNode("nobody")))
        XCTAssertEqual(map.exitNode(named: "100.64.9.9"), .failure(.noSuchNode("100.64.9.9")))
        // Two nodes share a short name but only one offers an exit: that one.
        XCTAssertEqual(try map.exitNode(named: "dup").get().id, 7)
    }

    func testAutoChoiceTakesTheClosestOnlineAndSticks() {
        let map = exitMap()
        let latency = [1: 0.010, 2: 0.050, 3: 0.030]
        // Region 1 is the closest; 5 is offline, so 4.
        XCTAssertEqual(map.suggestExitNode(current: nil, regionLatency: latency)?.id, 4)
        // Unknown latencies: the lowest ID among online candidates.
        XCTAssertEqual(map.suggestExitNode(current: nil, regionLatency: [:])?.id, 3)
        // A current choice that is still among the best stays.
        XCTAssertEqual(exitMap(online5: true).suggestExitNode(current: "n5", regionLatency: latency)?.id, 5)
        // A current choice that went offline does not.
        XCTAssertEqual(map.suggestExitNode(current: "n5", regionLatency: latency)?.id, 4)
        XCTAssertNil(NetworkMap().suggestExitNode(current: nil, regionLatency: latency))
    }

    func testExitNodeRoutesAndLANAccess() {
        let map = exitMap()
        let lan = [p("192.168.1.20/24"), p("203.0.113.7/24")]
        var prefs = Prefs(exitNodeID: "n4")
        var router = map.routerConfig(prefs: prefs, now: now, hostPrefixes: lan)
        XCTAssertTrue(router.routes.contains(p("0.0.0.0/0")) && router.routes.contains(p("::/0")))
        XCTAssertEqual(router.localRoutes, [])
        prefs.exitNodeAllowLANAccess = true
        router = map.routerConfig(prefs: prefs, now: now, hostPrefixes: lan)
        // The host's networks stay outside the tunnel, as network addresses (Tailscale's LocalRoutes).
        XCTAssertEqual(router.localRoutes, [p("192.168.1.0/24"), p("203.0.113.0/24")])
        // No exit node in use: no local routes even with the flag.
        router = map.routerConfig(prefs: Prefs(exitNodeAllowLANAccess: true), now: now, hostPrefixes: lan)
        XCTAssertFalse(router.routes.contains(p("0.0.0.0/0")))
        XCTAssertEqual(router.localRoutes, [])
    }

    /// DNS follows the exit node when it announces a DNS proxy on its PeerAPI; control's resolvers marked
    /// for use with exit nodes win; a node chosen as exit without the proxy keeps the host's resolvers.
    func testMagicDNSUsesTheExitNodesPeerAPIWhenItProxiesDNS() {
        var response = MapResponse()
        response.node = Fixture.node(1)
        var proxy = Fixture.node(3)
        proxy.allowedIPs = (proxy.addresses ?? []) + [p("0.0.0.0/0"), p("::/0")]
        var info = Hostinfo(HostinfoFields())
        info.known.services = [HostService(proto: "peerapi4", port: 41234), HostService(proto: "peerapi6", port: 41234),
                               HostService(proto: "peerapi-dns-proxy", port: 1)]
        proxy.hostinfo = info
        var plain = Fixture.node(4)
        plain.allowedIPs = (plain.addresses ?? []) + [p("0.0.0.0/0"), p("::/0")]
        response.peers = [proxy, plain]
        var dns = DNSConfig()
        dns.resolvers = [DNSResolver(addr: "192.0.2.53")]
        response.dnsConfig = dns
        var map = NetworkMap([response], now: now)
        let host = [IPAddress("198.51.100.1")!]
        let doh = DNSUpstream(address: IPAddress("100.64.0.3")!, port: 41234, httpPath: "/dns-query")

        var config = map.magicDNSConfig(prefs: Prefs(exitNodeID: "n3"), hostResolvers: host)
        XCTAssertEqual(config.globalResolvers, [doh])
        XCTAssertEqual(config.hostResolvers, [doh])
        config = map.magicDNSConfig(prefs: Prefs(exitNodeID: "n4"), hostResolvers: host)
        XCTAssertEqual(config.globalResolvers, [DNSUpstream(address: IPAddress("192.0.2.53")!)])
        XCTAssertEqual(config.hostResolvers, [DNSUpstream(address: IPAddress("198.51.100.1")!)])
        config = map.magicDNSConfig(prefs: Prefs(), hostResolvers: host)
        XCTAssertEqual(config.hostResolvers, [DNSUpstream(address: IPAddress("198.51.100.1")!)])

        var marked = DNSResolver(addr: "192.0.2.54")
        marked.useWithExitNode = true
        dns.resolvers = [DNSResolver(addr: "192.0.2.53"), marked]
        var update = MapResponse()
        update.dnsConfig = dns
        map.apply(update, now: now)
        config = map.magicDNSConfig(prefs: Prefs(exitNodeID: "n3"), hostResolvers: host)
        XCTAssertEqual(config.globalResolvers, [DNSUpstream(address: IPAddress("192.0.2.54")!)])
        XCTAssertEqual(config.hostResolvers, [doh])
    }

    func testAnExitNodeGuardsTheInternetButNotItsOwnNetworks() {
        var response = MapResponse()
        response.node = Fixture.node(1)
        response.packetFilter = [FilterRule(srcIPs: ["*"], dstPorts: [NetPortRange(ip: "*", ports: .all)])]
        let map = NetworkMap([response], now: now)
        let host = [p("192.0.2.1/24"), p("203.0.113.30/24")]
        let prefs = Prefs(advertiseRoutes: [p("0.0.0.0/0"), p("::/0"), p("10.9.0.0/16")])
        let local = map.filterConfig(prefs: prefs, hostPrefixes: host).localAddresses
        func guarded(_ a: String) -> Bool { local.contains { $0.contains(IPAddress(a)!) } }
        XCTAssertTrue(guarded("198.51.100.10"))
        XCTAssertTrue(guarded("2001:db8::1"))
        XCTAssertTrue(guarded("10.9.3.4"), "an advertised subnet stays offered")
        XCTAssertTrue(guarded("192.0.2.1"), "the host's own address stays reachable")
        XCTAssertFalse(guarded("192.0.2.7"), "the exit node's LAN is not offered")
        XCTAssertFalse(guarded("203.0.113.8"))
        XCTAssertTrue(guarded("100.64.0.1"), "its own tailnet address")
        XCTAssertFalse(guarded("100.64.0.9"), "another node's tailnet address is not forwarded")
        let router = map.routerConfig(prefs: prefs, now: now)
        XCTAssertTrue(router.exitNode && router.forwards)
        XCTAssertEqual(router.subnetRoutes, [p("10.9.0.0/16")])
    }
}
