// warren-filter-bench: packets per second per core through WarrenFilter (raw bytes -> parse
// -> filter) on one thread, for a realistic rule set (50 rules, 200 source CIDRs) and a mix
// of packets. Run on demand: swift run -c release warren-filter-bench [seconds-per-case]

import WarrenFilter
import WarrenPacket
import WarrenTailcfg

var rng = SystemRandomNumberGenerator()
let me4 = IPAddress("100.64.0.1")!, me6 = IPAddress("fd7a:115c:a1e0::1")!
let local = [IPPrefix("100.64.0.1/32")!, IPPrefix("fd7a:115c:a1e0::1/128")!, IPPrefix("10.20.0.0/16")!]

// 50 rules; each has 4 source CIDRs (200 in all, IPv4 and IPv6), and 1-3 destinations with ports.
var rules: [FilterRule] = []
var sourcePrefixes: [String] = []
for r in 0..<50 {
    var srcs: [String] = []
    for k in 0..<4 {
        let n = r * 4 + k
        let prefix = n % 5 == 4 ? "fd7a:115c:a1e0:\(String(n, radix: 16))::/64" : "100.\(64 + n % 64).\(n).0/24"
        srcs.append(prefix)
        sourcePrefixes.append(prefix)
    }
    var dsts = [NetPortRange(ip: me4.description, ports: PortRange(first: UInt16(1000 + r * 10), last: UInt16(1000 + r * 10 + 5))),
                NetPortRange(ip: me6.description, ports: PortRange(first: UInt16(1000 + r * 10), last: UInt16(1000 + r * 10 + 5)))]
    if r % 3 == 0 { dsts.append(NetPortRange(ip: "10.20.\(r).0/24", ports: PortRange(first: 443, last: 443))) }
    if r % 10 == 9 { dsts.append(NetPortRange(ip: "100.99.0.0/16", ports: .all)) }  // not local: pruned
    rules.append(FilterRule(srcIPs: srcs, dstPorts: dsts, ipProto: r % 7 == 6 ? [6] : nil))
}

func sourceAddress(_ prefix: String, host: UInt64) -> IPAddress {
    let p = IPPrefix(prefix)!
    switch p.address {
    case .v4(let v): return .v4(v | UInt32(host & 0xFF))
    case .v6(let hi, _): return .v6(hi, host)
    }
}

// The mix: new flows allowed and denied, continuing TCP, UDP replies, ICMP, fragments, both families.
var packets: [[UInt8]] = []
var filter = PacketFilter(rules: rules, localAddresses: local)
for i in 0..<4096 {
    let rule = Int.random(in: 0..<50, using: &rng)
    let prefix = sourcePrefixes[rule * 4 + Int.random(in: 0..<4, using: &rng)]
    let src = sourceAddress(prefix, host: UInt64.random(in: 1...200, using: &rng))
    let me = src.version == .v4 ? me4 : me6
    let port = UInt16(1000 + rule * 10 + Int.random(in: 0...8, using: &rng))
    switch i % 10 {
    case 0, 1:
        packets.append(PacketBuilder.tcp(src: src, dst: me, srcPort: 40000, dstPort: port, flags: .syn))
    case 2, 3, 4:
        packets.append(PacketBuilder.tcp(src: src, dst: me, srcPort: port, dstPort: 40000, flags: [.ack, .psh], payload: [UInt8](repeating: 7, count: 64)))
    case 5, 6:
        // A reply to a flow this node opened.
        _ = filter.checkOutbound(packet: PacketBuilder.udp(src: me, dst: src, srcPort: UInt16(30000 + i % 400), dstPort: 53), now: .zero)
        packets.append(PacketBuilder.udp(src: src, dst: me, srcPort: 53, dstPort: UInt16(30000 + i % 400), payload: [UInt8](repeating: 1, count: 48)))
    case 7:
        packets.append(PacketBuilder.udp(src: src, dst: me, srcPort: 5000, dstPort: port, payload: [1, 2, 3, 4]))
    case 8:
        packets.append(PacketBuilder.icmpEcho(src: src, dst: me, identifier: UInt16(i), sequence: 1))
    default:
        let stranger: IPAddress = src.version == .v4 ? .v4(0x0808_0808) : IPAddress("2001:db8::1")!
        packets.append(PacketBuilder.tcp(src: stranger, dst: me, srcPort: 1, dstPort: 22, flags: .syn))
    }
}

let seconds = CommandLine.arguments.count > 1 ? Double(CommandLine.arguments[1]) ?? 2 : 2
let clock = ContinuousClock()

@MainActor func measure(_ name: String, _ body: (Int) -> Int) {
    // Warm up, then run whole passes over the mix until the time is up.
    _ = body(1)
    var count = 0, accepted = 0
    let start = clock.now
    let budget = Duration.milliseconds(Int64(seconds * 1000))
    while clock.now - start < budget {
        accepted &+= body(8)
        count += 8 * packets.count
    }
    let elapsed = clock.now - start
    let secs = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    let rate = Double(count) / secs
    let nsPerPacket = secs * 1e9 / Double(count)
    print("\(name): \(Int(rate)) packets/s per core (\(String(Int(nsPerPacket * 10) / 10)) ns/packet, accepted \(accepted) of \(count))")
}

print("rules: \(rules.count), source CIDRs: \(sourcePrefixes.count), packets in mix: \(packets.count), issues: \(filter.issues.count)")
let summaries = packets.map { PacketSummary(parsing: $0)! }

measure("parse only          ") { passes in
    var n = 0
    for _ in 0..<passes { for p in packets where PacketSummary(parsing: p) != nil { n &+= 1 } }
    return n
}
measure("filter (parsed)     ") { passes in
    var n = 0
    for _ in 0..<passes { for s in summaries where filter.checkInbound(s, now: .seconds(1)).isAccepted { n &+= 1 } }
    return n
}
measure("parse + filter (raw)") { passes in
    var n = 0
    for _ in 0..<passes { for p in packets where filter.checkInbound(packet: p, now: .seconds(1)).isAccepted { n &+= 1 } }
    return n
}
