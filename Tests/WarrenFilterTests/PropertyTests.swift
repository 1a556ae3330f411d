import XCTest
import WarrenFilter
import WarrenPacket
import WarrenTailcfg
import WarrenTestSupport

/// Random rules and random packets, seeded: the compiled filter must give exactly the naive
/// reference's verdicts (including which rule matched and the connection-table effects).
final class PropertyTests: XCTestCase {
    static let sourceEntries = [
        "*", "100.64.0.1", "100.64.0.2", "100.64.0.0/30", "100.64.0.2-100.64.0.4", "100.64.0.0/10", "10.0.0.0/8",
        "10.1.2.3/8", "0.0.0.0/0", "fd7a:115c:a1e0::2", "fd7a:115c:a1e0::/126", "fd7a:115c:a1e0::2-fd7a:115c:a1e0::3",
        "::/0", "cap:x", "cap:y", "bogus", "100.64.0.9-100.64.0.1", "8.8.8.8", "::ffff:100.64.0.2",
    ]
    static let destinationEntries = [
        "*", "100.64.0.1", "100.64.0.0/31", "100.64.0.100", "fd7a:115c:a1e0::1", "fd7a:115c:a1e0::/127", "10.0.0.0/8",
        "10.0.0.0/24", "cap:z", "100.64.0.1-100.64.0.3", "fd7a:115c:a1e0::1/64", "169.254.169.254", "::ffff:100.64.0.1",
    ]
    static let portRanges = [(0, 65535), (22, 22), (80, 443), (1000, 2000), (500, 100), (0, 0), (65535, 65535)]
    static let protocolLists: [[Int]?] = [nil, [], [6], [17], [132], [47], [6, 17, 1, 58], [-1, 300], [1], [58, 47, 132], [0, 99]]
    static let addresses = [
        "100.64.0.1", "100.64.0.2", "100.64.0.3", "100.64.0.4", "100.64.0.5", "100.64.0.100", "10.0.0.1", "10.0.0.200",
        "10.0.1.1", "10.1.2.3", "8.8.8.8", "224.0.0.251", "169.254.1.1", "169.254.169.254", "255.255.255.255",
        "fd7a:115c:a1e0::1", "fd7a:115c:a1e0::2", "fd7a:115c:a1e0::3", "fd7a:115c:a1e0::9", "fe80::1", "ff02::1",
        "::ffff:169.254.1.1", "::ffff:100.64.0.1", "2001:db8::1",
    ].map { IPAddress($0)! }
    static let local = [IPPrefix("100.64.0.1/32")!, IPPrefix("fd7a:115c:a1e0::1/128")!, IPPrefix("10.0.0.0/24")!,
                        IPPrefix("169.254.169.254/32")!, IPPrefix("::ffff:100.64.0.1/128")!]

    static func randomRules(_ rng: inout SeededGenerator) -> [FilterRule] {
        (0..<Int.random(in: 0...8, using: &rng)).map { _ in
            let srcs = (0..<Int.random(in: 0...3, using: &rng)).map { _ in sourceEntries.randomElement(using: &rng)! }
            let dsts = (0..<Int.random(in: 0...3, using: &rng)).map { _ -> NetPortRange in
                let (a, b) = portRanges.randomElement(using: &rng)!
                return NetPortRange(ip: destinationEntries.randomElement(using: &rng)!, ports: PortRange(first: UInt16(a), last: UInt16(b)))
            }
            if Int.random(in: 0..<8, using: &rng) == 0 {
                return FilterRule(srcIPs: srcs, capGrant: [CapGrant(dsts: ["100.64.0.0/10"], capMap: ["c": []])])
            }
            return FilterRule(srcIPs: srcs, dstPorts: dsts, ipProto: protocolLists.randomElement(using: &rng)!)
        }
    }

    static func randomPacket(_ rng: inout SeededGenerator) -> PacketSummary {
        let v6 = Bool.random(using: &rng)
        let pool = addresses.filter { ($0.version == .v6) == v6 }
        let src = pool.randomElement(using: &rng)!
        let dst = Int.random(in: 0..<3, using: &rng) == 0 ? (v6 ? IPAddress("fd7a:115c:a1e0::1")! : IPAddress("100.64.0.1")!)
                                                          : pool.randomElement(using: &rng)!
        let protos: [UInt8] = [6, 6, 17, 17, 1, 58, 132, 47, 99, 0, 2, 50]
        let proto = IPProtocol(protos.randomElement(using: &rng)!)
        let version: IPVersion = v6 ? .v6 : .v4
        var p = PacketSummary(version: version, proto: proto, src: src, dst: dst)
        let ports: [UInt16] = [22, 80, 443, 1500, 0, 65535, 100, 53]
        p.srcPort = ports.randomElement(using: &rng)!
        p.dstPort = ports.randomElement(using: &rng)!
        let flagChoices: [TCPFlags] = [.syn, [.syn, .ack], .ack, .fin, .rst, [], [.syn, .ece]]
        p.tcpFlags = flagChoices.randomElement(using: &rng)!
        let icmpTypes: [UInt8] = [0, 3, 8, 11, 12, 128, 129, 1, 2, 4, 135]
        p.icmpType = icmpTypes.randomElement(using: &rng)!
        p.icmpCode = UInt8.random(in: 0...1, using: &rng)
        let lengths = [4, 8, 20]
        p.transportLength = lengths.randomElement(using: &rng)!
        p.length = 60
        switch Int.random(in: 0..<10, using: &rng) {
        case 0: p.fragment = .first
        case 1: p.fragment = .later(offset: 5)
        case 2: p.fragment = .later(offset: 200)
        default: break
        }
        if v6 && Int.random(in: 0..<10, using: &rng) == 0 { p.hasIPv6OptionHeaders = true }
        return p
    }

    func testMatchesReferenceOnRandomRulesAndPackets() {
        var rng = SeededGenerator(seed: 0xF117E5)
        let holders: Set<IPAddress> = [IPAddress("100.64.0.3")!, IPAddress("fd7a:115c:a1e0::3")!]
        let test: PacketFilter.CapabilityTest = { address, cap in cap == "x" && holders.contains(address) }
        var checked = 0, accepted = 0
        for round in 0..<300 {
            let rules = Self.randomRules(&rng)
            let capacity = Int.random(in: 1...6, using: &rng)
            let useCaps = round % 2 == 0
            let capabilityTest: PacketFilter.CapabilityTest? = useCaps ? test : nil
            var filter = PacketFilter(rules: rules, localAddresses: Self.local, sourceHasCapability: capabilityTest,
                                      connectionCapacity: capacity)
            var reference = ReferenceFilter(rules: rules, local: Self.local, hasCapability: capabilityTest, capacity: capacity)
            for step in 0..<150 {
                let packet = Self.randomPacket(&rng)
                let now = Duration.seconds(step)
                if Int.random(in: 0..<3, using: &rng) == 0 {
                    // Outbound from a local address: swap so that src is ours.
                    var out = packet
                    out.src = packet.version == .v4 ? IPAddress("100.64.0.1")! : IPAddress("fd7a:115c:a1e0::1")!
                    out.dst = packet.src
                    XCTAssertEqual(filter.checkOutbound(out, now: now), reference.outbound(out), "rules \(rules) packet \(out)")
                } else {
                    let expected = reference.inbound(packet)
                    let got = filter.checkInbound(packet, now: now)
                    XCTAssertEqual(got, expected, "rules \(rules) packet \(packet)")
                    if got != expected { return }
                    checked += 1
                    if got.isAccepted { accepted += 1 }
                }
                XCTAssertEqual(filter.connections.flowsByRecency, reference.flows)
            }
        }
        // The generator must exercise both outcomes.
        XCTAssertGreaterThan(accepted, checked / 10)
        XCTAssertLessThan(accepted, checked * 9 / 10)
    }

    /// `check` (used for explanations) agrees with the reference on synthetic new flows.
    func testCheckAgreesWithReferenceForNewFlows() {
        var rng = SeededGenerator(seed: 99)
        for _ in 0..<300 {
            let rules = Self.randomRules(&rng)
            let filter = PacketFilter(rules: rules, localAddresses: Self.local)
            var reference = ReferenceFilter(rules: rules, local: Self.local, hasCapability: nil, capacity: 1)
            for _ in 0..<40 {
                let v6 = Bool.random(using: &rng)
                let pool = Self.addresses.filter { ($0.version == .v6) == v6 }
                let src = pool.randomElement(using: &rng)!, dst = pool.randomElement(using: &rng)!
                let proto = IPProtocol([6, 17, 132, 47].randomElement(using: &rng)!)
                let port = [22, 80, 443, 1500, 0].randomElement(using: &rng)!
                var synthetic = PacketSummary(version: src.version, proto: proto, src: src, dst: dst, dstPort: UInt16(port),
                                              length: 40, transportLength: 20)
                if proto == .tcp { synthetic.tcpFlags = .syn }
                XCTAssertEqual(filter.check(src: src, dst: dst, dstPort: UInt16(port), proto: proto), reference.inbound(synthetic))
            }
        }
    }
}
