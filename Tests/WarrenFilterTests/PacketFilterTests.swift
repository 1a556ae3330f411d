import XCTest
import WarrenFilter
import WarrenPacket
import WarrenTailcfg

func ip(_ text: String) -> IPAddress { IPAddress(text)! }

func dst(_ ip: String, _ first: UInt16, _ last: UInt16? = nil) -> NetPortRange {
    NetPortRange(ip: ip, ports: PortRange(first: first, last: last ?? first))
}

let me4 = ip("100.64.0.1"), me6 = ip("fd7a:115c:a1e0::1")
let peer4 = ip("100.64.0.2"), peer6 = ip("fd7a:115c:a1e0::2")
let stranger4 = ip("100.64.0.9"), stranger6 = ip("fd7a:115c:a1e0::9")
let localPrefixes = [IPPrefix("100.64.0.1/32")!, IPPrefix("fd7a:115c:a1e0::1/128")!, IPPrefix("10.0.0.0/24")!]
let t0 = Duration.seconds(0)

final class PacketFilterTests: XCTestCase {
    /// Peers may SSH in; one range of peers may reach a web port on a subnet route.
    let rules = [
        FilterRule(srcIPs: [peer4.description, peer6.description], dstPorts: [dst(me4.description, 22), dst(me6.description, 22)]),
        FilterRule(srcIPs: ["100.64.0.2-100.64.0.4", "fd7a:115c:a1e0::/126"], dstPorts: [dst("10.0.0.0/24", 80, 443)]),
    ]

    func filter(_ rules: [FilterRule]? = nil, capacity: Int = 512) -> PacketFilter {
        PacketFilter(rules: rules ?? self.rules, localAddresses: localPrefixes, connectionCapacity: capacity)
    }

    func testTCPNewFlowsNeedARule() {
        var f = filter()
        for (src, me) in [(peer4, me4), (peer6, me6)] {
            XCTAssertEqual(f.checkInbound(packet: PacketBuilder.tcp(src: src, dst: me, srcPort: 40000, dstPort: 22, flags: .syn), now: t0), .accept(.rule(0)))
            XCTAssertEqual(f.checkInbound(packet: PacketBuilder.tcp(src: src, dst: me, srcPort: 40000, dstPort: 23, flags: .syn), now: t0), .drop(.noRuleMatched))
        }
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.tcp(src: stranger4, dst: me4, srcPort: 1, dstPort: 22, flags: .syn), now: t0), .drop(.noRuleMatched))
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.tcp(src: stranger6, dst: me6, srcPort: 1, dstPort: 22, flags: .syn), now: t0), .drop(.noRuleMatched))
        // Ranges and CIDRs in SrcIPs, port ranges in DstPorts.
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.tcp(src: ip("100.64.0.4"), dst: ip("10.0.0.7"), srcPort: 1, dstPort: 443, flags: .syn), now: t0), .accept(.rule(1)))
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.tcp(src: ip("100.64.0.5"), dst: ip("10.0.0.7"), srcPort: 1, dstPort: 443, flags: .syn), now: t0), .drop(.noRuleMatched))
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.tcp(src: ip("100.64.0.3"), dst: ip("10.0.0.7"), srcPort: 1, dstPort: 444, flags: .syn), now: t0), .drop(.noRuleMatched))
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.tcp(src: ip("fd7a:115c:a1e0::3"), dst: me6, srcPort: 1, dstPort: 22, flags: .syn), now: t0), .drop(.noRuleMatched))
    }

    func testTCPWithoutBareSYNPasses() {
        var f = filter()
        for flags: TCPFlags in [.ack, [.syn, .ack], .rst, .fin, [.psh, .ack], []] {
            XCTAssertEqual(f.checkInbound(packet: PacketBuilder.tcp(src: stranger4, dst: me4, srcPort: 443, dstPort: 50000, flags: flags), now: t0), .accept(.tcpNonSYN), "\(flags)")
        }
        // Other bits alongside a bare SYN do not make it a continuing flow.
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.tcp(src: stranger4, dst: me4, srcPort: 443, dstPort: 50000, flags: [.syn, .ece, .cwr]), now: t0), .drop(.noRuleMatched))
    }

    func testUDPRepliesOnlyToFlowsThisNodeOpened() {
        var f = filter()
        let reply = PacketBuilder.udp(src: stranger4, dst: me4, srcPort: 53, dstPort: 40000)
        XCTAssertEqual(f.checkInbound(packet: reply, now: t0), .drop(.noRuleMatched))
        XCTAssertEqual(f.checkOutbound(packet: PacketBuilder.udp(src: me4, dst: stranger4, srcPort: 40000, dstPort: 53), now: t0), .accept(.outbound))
        XCTAssertEqual(f.checkInbound(packet: reply, now: t0), .accept(.trackedFlow))
        // Another port or another peer is another flow.
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.udp(src: stranger4, dst: me4, srcPort: 54, dstPort: 40000), now: t0), .drop(.noRuleMatched))
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.udp(src: peer4, dst: me4, srcPort: 53, dstPort: 40000), now: t0), .drop(.noRuleMatched))
        // IPv6 too; and TCP is not tracked (it needs no tracking).
        f.noteOutbound(PacketSummary(parsing: PacketBuilder.udp(src: me6, dst: stranger6, srcPort: 5, dstPort: 6))!, now: t0)
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.udp(src: stranger6, dst: me6, srcPort: 6, dstPort: 5), now: t0), .accept(.trackedFlow))
        f.noteOutbound(PacketSummary(parsing: PacketBuilder.tcp(src: me4, dst: stranger4, srcPort: 7, dstPort: 8, flags: .syn))!, now: t0)
        XCTAssertEqual(f.connections.count, 2)
        // A rule allows new UDP flows like TCP ones.
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.udp(src: peer4, dst: me4, srcPort: 9, dstPort: 22), now: t0), .accept(.rule(0)))
    }

    func testICMP() {
        var f = filter()
        // Echo requests pass to any address some rule opens (any port) to the source.
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.icmpEcho(src: peer4, dst: me4), now: t0), .accept(.icmpRule(0)))
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.icmpEcho(src: peer6, dst: me6), now: t0), .accept(.icmpRule(0)))
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.icmpEcho(src: ip("100.64.0.3"), dst: ip("10.0.0.1")), now: t0), .accept(.icmpRule(1)))
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.icmpEcho(src: stranger4, dst: me4), now: t0), .drop(.noRuleMatched))
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.icmpEcho(src: ip("100.64.0.3"), dst: me4), now: t0), .drop(.noRuleMatched))
        // Replies and errors always pass.
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.icmpEcho(src: stranger4, dst: me4, reply: true), now: t0), .accept(.icmpResponse))
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.icmpEcho(src: stranger6, dst: me6, reply: true), now: t0), .accept(.icmpResponse))
        let quoted = PacketBuilder.udp(src: me4, dst: stranger4, srcPort: 1, dstPort: 2)
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.icmpError(src: stranger4, dst: me4, type: 3, code: 1, invoking: quoted), now: t0), .accept(.icmpResponse))
        let quoted6 = PacketBuilder.udp(src: me6, dst: stranger6, srcPort: 1, dstPort: 2)
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.icmpError(src: stranger6, dst: me6, type: 2, rest: 1280, invoking: quoted6), now: t0), .accept(.icmpResponse))
        // A rule for TCP only still lets ICMP through to its addresses (Tailscale's matchIPsOnly).
        var tcpOnly = filter([FilterRule(srcIPs: ["*"], dstPorts: [dst("*", 22)], ipProto: [6])])
        XCTAssertEqual(tcpOnly.checkInbound(packet: PacketBuilder.icmpEcho(src: stranger4, dst: me4), now: t0), .accept(.icmpRule(0)))
        XCTAssertEqual(tcpOnly.checkInbound(packet: PacketBuilder.udp(src: stranger4, dst: me4, srcPort: 1, dstPort: 22), now: t0), .drop(.noRuleMatched))
    }

    func testProtocolsBeyondTheDefaults() {
        var f = filter([
            FilterRule(srcIPs: ["100.64.0.5"], dstPorts: [dst("*", 22)]),
            FilterRule(srcIPs: ["100.64.0.6"], dstPorts: [dst("*", 22)], ipProto: [132]),
            FilterRule(srcIPs: ["*"], dstPorts: [dst("*", 0, 65535)], ipProto: [47]),
            FilterRule(srcIPs: ["*"], dstPorts: [dst("*", 0, 65534)], ipProto: [50]),
            FilterRule(srcIPs: ["*"], dstPorts: [dst("*", 1, 65535)], ipProto: [-1, 256]),
        ])
        func sctp(_ src: IPAddress, _ port: UInt16) -> [UInt8] {
            PacketBuilder.ip(src: src, dst: me4, proto: .sctp, payload: PacketBuilder.be16(9) + PacketBuilder.be16(port) + [UInt8](repeating: 0, count: 8))
        }
        // SCTP only where IPProto lists it.
        XCTAssertEqual(f.checkInbound(packet: sctp(ip("100.64.0.5"), 22), now: t0), .drop(.noRuleMatched))
        XCTAssertEqual(f.checkInbound(packet: sctp(ip("100.64.0.6"), 22), now: t0), .accept(.rule(1)))
        XCTAssertEqual(f.checkInbound(packet: sctp(ip("100.64.0.6"), 23), now: t0), .drop(.noRuleMatched))
        // Portless protocols need the whole port range.
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.ip(src: stranger4, dst: me4, proto: IPProtocol(47), payload: [0, 0, 8, 0]), now: t0), .accept(.rule(2)))
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.ip(src: stranger6, dst: me6, proto: IPProtocol(47), payload: [0, 0, 8, 0]), now: t0), .accept(.rule(2)))
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.ip(src: stranger4, dst: me4, proto: IPProtocol(50), payload: [1, 2, 3, 4]), now: t0), .drop(.noRuleMatched))
        // Out-of-range IPProto numbers are ignored: that rule lists no protocol.
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.tcp(src: stranger4, dst: me4, srcPort: 1, dstPort: 80, flags: .syn), now: t0), .drop(.noRuleMatched))
        // SCTP replies are tracked like UDP.
        let out = PacketSummary(version: .v4, proto: .sctp, src: me4, dst: stranger4, srcPort: 5000, dstPort: 6000, length: 32, transportLength: 12)
        XCTAssertEqual(f.checkOutbound(out, now: t0), .accept(.outbound))
        let back = PacketSummary(version: .v4, proto: .sctp, src: stranger4, dst: me4, srcPort: 6000, dstPort: 5000, length: 32, transportLength: 12)
        XCTAssertEqual(f.checkInbound(back, now: t0), .accept(.trackedFlow))
        // TSMP passes.
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.ip(src: stranger4, dst: me4, proto: .tsmp, payload: [UInt8](repeating: 0, count: 8)), now: t0), .accept(.tsmp))
        // IPv4 protocol 0 is Tailscale's "unknown".
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.ip(src: stranger4, dst: me4, proto: .hopByHop, payload: [0, 0, 0, 0]), now: t0), .drop(.unknownProtocol))
    }

    func testWildcardsAndRuleOrder() {
        var f = filter([
            FilterRule(srcIPs: ["100.64.0.0/10"], dstPorts: [dst("100.64.0.1", 80)]),
            FilterRule(srcIPs: ["*"], dstPorts: [dst("*", 0, 65535)]),
        ])
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.tcp(src: stranger4, dst: me4, srcPort: 1, dstPort: 80, flags: .syn), now: t0), .accept(.rule(0)))
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.tcp(src: ip("8.8.8.8"), dst: me4, srcPort: 1, dstPort: 80, flags: .syn), now: t0), .accept(.rule(1)))
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.tcp(src: ip("2001:db8::1"), dst: me6, srcPort: 1, dstPort: 1, flags: .syn), now: t0), .accept(.rule(1)))
        // "*" in DstPorts still only reaches local addresses.
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.tcp(src: peer4, dst: ip("100.64.0.77"), srcPort: 1, dstPort: 80, flags: .syn), now: t0), .drop(.notLocalDestination))
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.tcp(src: peer6, dst: stranger6, srcPort: 1, dstPort: 80, flags: .ack), now: t0), .drop(.notLocalDestination))
        XCTAssertEqual(f.check(src: peer4, dst: me4, dstPort: 80, proto: .tcp), .accept(.rule(0)))
        XCTAssertEqual(f.check(src: peer4, dst: me6, dstPort: 80, proto: .tcp), .drop(.noRuleMatched))
    }

    func testBadEntriesAreSkippedAndReported() {
        let f = filter([
            FilterRule(srcIPs: ["10.1.2.3/8", "bogus", "100.64.0.9-100.64.0.1", "1.2.3.4-::1", peer4.description],
                       dstPorts: [dst("cap:foo", 22), dst("100.64.0.1/8", 22), dst(me4.description, 22)]),
        ])
        XCTAssertEqual(f.issues.map(\.entry), ["10.1.2.3/8", "bogus", "100.64.0.9-100.64.0.1", "1.2.3.4-::1", "cap:foo", "100.64.0.1/8"])
        XCTAssertTrue(f.issues.allSatisfy { $0.ruleIndex == 0 })
        XCTAssertEqual(f.check(src: peer4, dst: me4, dstPort: 22, proto: .tcp), .accept(.rule(0)))
        XCTAssertEqual(f.check(src: ip("10.9.9.9"), dst: me4, dstPort: 22, proto: .tcp), .drop(.noRuleMatched))
    }

    func testCapabilitySourcesAndCapGrants() {
        let holders: Set<IPAddress> = [ip("100.64.0.7")]
        var f = PacketFilter(rules: [
            FilterRule(srcIPs: ["cap:ssh-users"], dstPorts: [dst(me4.description, 22)]),
            FilterRule(srcIPs: ["*"], capGrant: [CapGrant(dsts: ["100.64.0.1/32"], capMap: ["example.com/cap/admin": [.string("x")]])]),
            FilterRule(srcIPs: ["100.64.0.0/10"], capGrant: [CapGrant(dsts: ["100.64.0.0/10", "fd7a:115c:a1e0::/48"], capMap: ["example.com/cap/admin": [.number(1)], "example.com/cap/web": []])]),
        ], localAddresses: localPrefixes, sourceHasCapability: { address, cap in cap == "ssh-users" && holders.contains(address) })
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.tcp(src: ip("100.64.0.7"), dst: me4, srcPort: 1, dstPort: 22, flags: .syn), now: t0), .accept(.rule(0)))
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.tcp(src: ip("100.64.0.8"), dst: me4, srcPort: 1, dstPort: 22, flags: .syn), now: t0), .drop(.noRuleMatched))
        // CapGrant rules grant capabilities, not packets.
        for port: UInt16 in [0, 22, 80, 65535] {
            XCTAssertEqual(f.check(src: stranger4, dst: me4, dstPort: port, proto: .tcp), .drop(.noRuleMatched))
            XCTAssertEqual(f.check(src: stranger4, dst: me4, dstPort: port, proto: .udp), .drop(.noRuleMatched))
        }
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.icmpEcho(src: stranger4, dst: me4), now: t0), .drop(.noRuleMatched))
        XCTAssertEqual(f.capabilities(src: stranger4, dst: me4), ["example.com/cap/admin": [.string("x"), .number(1)], "example.com/cap/web": []])
        XCTAssertEqual(f.capabilities(src: ip("8.8.8.8"), dst: me4), ["example.com/cap/admin": [.string("x")]])
        // As in Tailscale, a grant's destinations need not share the source's family.
        XCTAssertEqual(f.capabilities(src: stranger4, dst: me6), ["example.com/cap/admin": [.number(1)], "example.com/cap/web": []])
        XCTAssertEqual(f.capabilities(src: stranger4, dst: ip("fd7a:115c:a1e1::1")), [:])
        XCTAssertEqual(f.capabilities(src: stranger6, dst: me4), ["example.com/cap/admin": [.string("x")]])
        // A capability holder may ping this node (capability sources match ICMP whatever the destination, as in Tailscale).
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.icmpEcho(src: ip("100.64.0.7"), dst: ip("10.0.0.3")), now: t0), .accept(.icmpRule(0)))
        // Without a capability test, capability sources match nothing.
        let blind = PacketFilter(rules: f.rules, localAddresses: localPrefixes)
        XCTAssertEqual(blind.check(src: ip("100.64.0.7"), dst: me4, dstPort: 22, proto: .tcp), .drop(.noRuleMatched))
    }

    func testMulticastLinkLocalAndMalformed() {
        var f = filter([FilterRule(srcIPs: ["*"], dstPorts: [dst("*", 0, 65535)])])
        let cases: [(String, Verdict)] = [
            ("224.0.0.251", .drop(.multicast)), ("239.1.2.3", .drop(.multicast)), ("ff02::fb", .drop(.multicast)),
            ("::ffff:224.0.0.1", .drop(.multicast)), ("169.254.1.1", .drop(.linkLocal)), ("fe80::1", .drop(.linkLocal)),
            ("febf::1", .drop(.linkLocal)), ("::ffff:169.254.169.254", .drop(.linkLocal)),
            ("169.254.169.254", .drop(.notLocalDestination)), ("fec0::1", .drop(.notLocalDestination)),
        ]
        for (text, verdict) in cases {
            let d = ip(text)
            let s: IPAddress = d.version == .v4 ? stranger4 : stranger6
            XCTAssertEqual(f.checkInbound(packet: PacketBuilder.udp(src: s, dst: d, srcPort: 5353, dstPort: 5353), now: t0), verdict, text)
            if verdict != .drop(.notLocalDestination) {
                XCTAssertEqual(f.checkOutbound(packet: PacketBuilder.udp(src: d.version == .v4 ? me4 : me6, dst: d, srcPort: 1, dstPort: 2), now: t0), verdict, text)
            }
        }
        var withMetadata = PacketFilter(rules: [FilterRule(srcIPs: ["*"], dstPorts: [dst("*", 0, 65535)])],
                                        localAddresses: localPrefixes + [IPPrefix("169.254.169.254/32")!])
        XCTAssertEqual(withMetadata.checkInbound(packet: PacketBuilder.udp(src: stranger4, dst: ip("169.254.169.254"), srcPort: 1, dstPort: 53), now: t0), .accept(.rule(0)))
        XCTAssertEqual(f.checkInbound(packet: [], now: t0), .accept(.keepalive))
        XCTAssertEqual(f.checkInbound(packet: [0x45, 0, 0, 10], now: t0), .drop(.tooShort))
        var bad = PacketBuilder.udp(src: stranger4, dst: me4, srcPort: 1, dstPort: 2)
        bad[0] = 0x43
        XCTAssertEqual(f.checkInbound(packet: bad, now: t0), .drop(.malformed))
        XCTAssertEqual(f.checkOutbound(packet: bad, now: t0), .drop(.malformed))
    }

    func testFragments() {
        var f = filter()
        let segment = PacketBuilder.tcpSegment(src: peer4, dst: me4, srcPort: 1000, dstPort: 22, flags: .syn)
        // The first fragment is filtered on its ports.
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.ipv4(src: peer4, dst: me4, proto: .tcp, payload: segment, moreFragments: true), now: t0), .accept(.rule(0)))
        let denied = PacketBuilder.tcpSegment(src: stranger4, dst: me4, srcPort: 1000, dstPort: 22, flags: .syn)
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.ipv4(src: stranger4, dst: me4, proto: .tcp, payload: denied, moreFragments: true), now: t0), .drop(.noRuleMatched))
        // A first fragment too short for ports is malformed.
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.ipv4(src: peer4, dst: me4, proto: .tcp, payload: Array(segment[0..<12]), moreFragments: true), now: t0), .drop(.malformed))
        // Later fragments pass, even to non-local destinations, unless they overlap the transport header.
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.ipv4(src: stranger4, dst: me4, proto: .udp, payload: [1, 2, 3], fragmentOffset: 10), now: t0), .accept(.fragment))
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.ipv4(src: stranger4, dst: ip("100.64.0.50"), proto: .udp, payload: [1, 2, 3], fragmentOffset: 100), now: t0), .accept(.fragment))
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.ipv4(src: stranger4, dst: me4, proto: .udp, payload: [1, 2, 3], fragmentOffset: 9), now: t0), .drop(.fragmentOverlap))
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.ipv4(src: stranger4, dst: ip("224.0.0.1"), proto: .udp, payload: [1], fragmentOffset: 100), now: t0), .drop(.multicast))
        // IPv6 fragments alike.
        let v6Later = PacketBuilder.ipv6(src: stranger6, dst: me6, nextHeader: .ipv6Fragment,
            payload: PacketBuilder.ipv6FragmentHeader(nextHeader: .udp, offset: 150, moreFragments: false, identification: 9) + [1, 2])
        XCTAssertEqual(f.checkInbound(packet: v6Later, now: t0), .accept(.fragment))
        let v6Overlap = PacketBuilder.ipv6(src: stranger6, dst: me6, nextHeader: .ipv6Fragment,
            payload: PacketBuilder.ipv6FragmentHeader(nextHeader: .udp, offset: 1, moreFragments: false, identification: 9) + [1, 2])
        XCTAssertEqual(f.checkInbound(packet: v6Overlap, now: t0), .drop(.fragmentOverlap))
        let tcp6 = PacketBuilder.tcpSegment(src: peer6, dst: me6, srcPort: 1000, dstPort: 22, flags: .syn)
        let v6First = PacketBuilder.ipv6(src: peer6, dst: me6, nextHeader: .ipv6Fragment,
            payload: PacketBuilder.ipv6FragmentHeader(nextHeader: .tcp, offset: 0, moreFragments: true, identification: 9) + tcp6)
        XCTAssertEqual(f.checkInbound(packet: v6First, now: t0), .accept(.rule(0)))
        // Option headers: dropped as Tailscale does.
        let withOptions = PacketBuilder.ipv6(src: peer6, dst: me6, nextHeader: .ipv6DestinationOptions,
            payload: PacketBuilder.ipv6OptionsHeader(nextHeader: .tcp) + tcp6)
        XCTAssertEqual(f.checkInbound(packet: withOptions, now: t0), .drop(.ipv6OptionHeaders))
        // Outbound later fragments pass without being tracked.
        XCTAssertEqual(f.checkOutbound(packet: PacketBuilder.ipv4(src: me4, dst: stranger4, proto: .udp, payload: [1], fragmentOffset: 50), now: t0), .accept(.fragment))
        XCTAssertEqual(f.connections.count, 0)
    }

    func testReplacingRulesKeepsTrackedFlows() {
        var f = filter()
        _ = f.checkOutbound(packet: PacketBuilder.udp(src: me4, dst: stranger4, srcPort: 1, dstPort: 2), now: t0)
        f.replaceRules([], localAddresses: localPrefixes)
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.udp(src: stranger4, dst: me4, srcPort: 2, dstPort: 1), now: t0), .accept(.trackedFlow))
        XCTAssertEqual(f.checkInbound(packet: PacketBuilder.tcp(src: peer4, dst: me4, srcPort: 1, dstPort: 22, flags: .syn), now: t0), .drop(.noRuleMatched))
    }

    func testVerdictDescriptions() {
        XCTAssertEqual(Verdict.accept(.rule(3)).description, "accept: rule 3")
        XCTAssertEqual(Verdict.drop(.notLocalDestination).description, "drop: destination is not local")
        XCTAssertTrue(Verdict.accept(.tcpNonSYN).isAccepted)
        XCTAssertFalse(Verdict.drop(.malformed).isAccepted)
    }
}

extension PacketBuilder {
    static func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xFF)] }
}
