import XCTest
import WarrenFilter
import WarrenPacket
import WarrenTailcfg
import WarrenTestSupport

/// Raw bytes -> parse -> filter, over mutated packets of every kind: never a crash, and the
/// verdict on bytes is the verdict on their parse (and the reference's).
final class FilterFuzzTests: XCTestCase {
    func testFuzzFullPath() {
        let me4 = IPAddress("100.64.0.1")!, peer4 = IPAddress("100.64.0.2")!
        let me6 = IPAddress("fd7a:115c:a1e0::1")!, peer6 = IPAddress("fd7a:115c:a1e0::2")!
        let rules = [
            FilterRule(srcIPs: ["100.64.0.0/10", "fd7a:115c:a1e0::/48"], dstPorts: [NetPortRange(ip: "*", ports: PortRange(first: 22, last: 22))]),
            FilterRule(srcIPs: ["*"], dstPorts: [NetPortRange(ip: "*", ports: .all)], ipProto: [47, 132]),
        ]
        let local = [IPPrefix("100.64.0.1/32")!, IPPrefix("fd7a:115c:a1e0::1/128")!]
        var filter = PacketFilter(rules: rules, localAddresses: local, connectionCapacity: 8)
        var reference = ReferenceFilter(rules: rules, local: local, hasCapability: nil, capacity: 8)
        let tcp6 = PacketBuilder.tcpSegment(src: peer6, dst: me6, srcPort: 9, dstPort: 22, flags: .syn)
        let seeds: [[UInt8]] = [
            PacketBuilder.tcp(src: peer4, dst: me4, srcPort: 40000, dstPort: 22, flags: .syn),
            PacketBuilder.tcp(src: peer6, dst: me6, srcPort: 40000, dstPort: 22, flags: .ack, payload: [1, 2]),
            PacketBuilder.udp(src: peer4, dst: me4, srcPort: 53, dstPort: 40000, payload: [7]),
            PacketBuilder.udp(src: peer6, dst: me6, srcPort: 53, dstPort: 40000),
            PacketBuilder.icmpEcho(src: peer4, dst: me4),
            PacketBuilder.icmpEcho(src: peer6, dst: me6, reply: true),
            PacketBuilder.icmpError(src: peer4, dst: me4, type: 11, invoking: PacketBuilder.udp(src: me4, dst: peer4, srcPort: 1, dstPort: 2)),
            PacketBuilder.ipv4(src: peer4, dst: me4, proto: .udp, payload: [1, 2, 3, 4], moreFragments: true, fragmentOffset: 12),
            PacketBuilder.ip(src: peer4, dst: me4, proto: IPProtocol(47), payload: [0, 0, 8, 0]),
            PacketBuilder.ipv6(src: peer6, dst: me6, nextHeader: .ipv6Fragment,
                               payload: PacketBuilder.ipv6FragmentHeader(nextHeader: .tcp, offset: 0, moreFragments: true, identification: 3) + tcp6),
            PacketBuilder.ipv6(src: peer6, dst: me6, nextHeader: .hopByHop, payload: PacketBuilder.ipv6OptionsHeader(nextHeader: .tcp) + tcp6),
        ]
        var step = 0
        MutationFuzzer(seeds: seeds, iterations: 30_000, maximumLength: 256, seed: 0xF1F1).run { input in
            step += 1
            let now = Duration.milliseconds(step)
            let outbound = step % 4 == 0
            let verdict = outbound ? filter.checkOutbound(packet: input, now: now) : filter.checkInbound(packet: input, now: now)
            if input.isEmpty {
                XCTAssertEqual(verdict, .accept(.keepalive))
            } else if input.count < 20 {
                XCTAssertEqual(verdict, .drop(.tooShort))
            } else if let summary = PacketSummary(parsing: input) {
                XCTAssertEqual(verdict, outbound ? reference.outbound(summary) : reference.inbound(summary), "\(summary)")
            } else {
                XCTAssertEqual(verdict, .drop(.malformed))
            }
        }
        XCTAssertEqual(filter.connections.flowsByRecency, reference.flows)
    }
}
