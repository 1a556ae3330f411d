// The node-side packet filter: Tailscale's semantics (wgengine/filter) over Warren's packet
// summaries. Inbound packets from peers are checked against the node's filter rules; outbound
// packets are always allowed, and their UDP and SCTP flows are remembered so that replies get
// back in.
//
// Inbound, in order:
//  1. an empty packet (WireGuard keepalive) passes; 1 to 19 bytes, or anything that does not
//     parse, is dropped;
//  2. IPv6 with Hop-by-Hop, Routing or Destination Options headers is dropped; a later fragment
//     at an offset under 80 bytes is dropped (RFC 1858); IPv4 protocol 0 is dropped;
//  3. multicast destinations, and link-local unicast ones other than 169.254.169.254, are dropped;
//  4. a later fragment passes (it has no ports; reassembly fails without the first fragment,
//     which was filtered on its ports);
//  5. a destination that is not one of the node's local addresses is dropped;
//  6. by protocol:
//     - ICMP: echo replies and error messages pass; anything else passes if some rule (of any
//       protocol, any port) lets the source reach the destination address, or if any rule has a
//       source capability the source holds;
//     - TCP: a packet without SYN, or with SYN and ACK, passes (a new connection needs a bare
//       SYN); a bare SYN passes if a rule lists TCP and matches source, destination and port;
//     - UDP and SCTP: a reply on a flow this node opened passes; otherwise a rule listing the
//       protocol must match source, destination and port;
//     - TSMP (99) passes;
//     - any other protocol passes if a rule lists it and matches source and destination with
//       the whole port range 0-65535.
// Rules: SrcIPs are addresses, "*", CIDRs (no host bits), ranges "a-b" or "cap:<name>"
// (sources holding a node capability, through `sourceHasCapability`); an empty IPProto means
// TCP, UDP, ICMPv4 and ICMPv6; CapGrant entries grant capabilities and never allow packets.

import WarrenPacket
import WarrenTailcfg

public struct PacketFilter: Sendable {
    /// Whether the node at an address holds a node capability (for "cap:" sources).
    public typealias CapabilityTest = @Sendable (IPAddress, String) -> Bool

    /// Later fragments must start at or beyond this many 8-byte blocks: 60 bytes of IPv4
    /// header and 20 of TCP header (RFC 1858).
    public static let minimumLaterFragmentOffset: UInt16 = (60 + 20) / 8
    /// Tailscale's connection-table size.
    public static let defaultConnectionCapacity = 512

    public private(set) var rules: [FilterRule]
    public private(set) var localAddresses: [IPPrefix]
    /// Entries that could not be parsed and were skipped.
    public private(set) var issues: [FilterRuleIssue]
    /// Flows this node opened, keyed as their replies arrive.
    public private(set) var connections: ConnectionTable

    private var family4: FamilyRules
    private var family6: FamilyRules
    private var local4: AddressSet
    private var local6: AddressSet
    private var grants: [CapabilityGrant]
    private let sourceHasCapability: CapabilityTest?

    public init(rules: [FilterRule], localAddresses: [IPPrefix], sourceHasCapability: CapabilityTest? = nil,
                connectionCapacity: Int = PacketFilter.defaultConnectionCapacity, idleTimeout: Duration? = nil) {
        self.sourceHasCapability = sourceHasCapability
        connections = ConnectionTable(capacity: connectionCapacity, idleTimeout: idleTimeout)
        self.rules = []
        self.localAddresses = []
        issues = []
        family4 = FamilyRules()
        family6 = FamilyRules()
        local4 = AddressSet()
        local6 = AddressSet()
        grants = []
        replaceRules(rules, localAddresses: localAddresses)
    }

    /// Compiles new rules and local addresses, keeping the flows already tracked (as
    /// Tailscale's filter shares state with the filter it replaces).
    public mutating func replaceRules(_ rules: [FilterRule], localAddresses: [IPPrefix]) {
        self.rules = rules
        self.localAddresses = localAddresses
        var issues: [FilterRuleIssue] = []
        let parsed = rules.enumerated().map { ParsedRule($0.element, index: $0.offset, issues: &issues) }
        local4 = AddressSet(localAddresses.filter { $0.address.version == .v4 }.map(AddressRange.init))
        local6 = AddressSet(localAddresses.filter { $0.address.version == .v6 }.map(AddressRange.init))
        family4 = FamilyRules(family: .v4, parsed: parsed, local: local4)
        family6 = FamilyRules(family: .v6, parsed: parsed, local: local6)
        grants = []
        for (index, rule) in rules.enumerated() {
            guard let capGrants = rule.capGrant, !capGrants.isEmpty else { continue }
            let sources = parsed[index].sources
            for grant in capGrants {
                var destinations: [IPPrefix] = []
                for text in grant.dsts {
                    if let prefix = IPPrefix(text) {
                        destinations.append(prefix)
                    } else {
                        issues.append(FilterRuleIssue(ruleIndex: index, field: "CapGrant", entry: text,
                                                      message: "invalid prefix"))
                    }
                }
                let capabilities = (grant.capMap ?? [:]).sorted { $0.key < $1.key }.map { ($0.key, $0.value ?? []) }
                grants.append(CapabilityGrant(ruleIndex: index, sources: sources, destinations: destinations,
                                              capabilities: capabilities))
            }
        }
        self.issues = issues
    }

    // MARK: Inbound

    /// Decides on a raw packet from a peer.
    public mutating func checkInbound(packet: UnsafeRawBufferPointer, now: Duration) -> Verdict {
        if packet.isEmpty { return .accept(.keepalive) }
        if packet.count < IPv4Header.minimumLength { return .drop(.tooShort) }
        guard let summary = PacketSummary(parsing: packet) else { return .drop(.malformed) }
        return checkInbound(summary, now: now)
    }

    public mutating func checkInbound(packet: [UInt8], now: Duration) -> Verdict {
        packet.withUnsafeBytes { checkInbound(packet: $0, now: now) }
    }

    /// Decides on a parsed packet from a peer. A hit in the connection table counts as a use.
    public mutating func checkInbound(_ packet: PacketSummary, now: Duration) -> Verdict {
        if let verdict = inboundPrecheck(packet) { return verdict }
        if packet.proto == .udp || packet.proto == .sctp,
           connections.lookup(FlowKey(proto: packet.proto, src: packet.src, srcPort: packet.srcPort,
                                      dst: packet.dst, dstPort: packet.dstPort), now: now) {
            return .accept(.trackedFlow)
        }
        return matchRules(packet)
    }

    /// What the rules say about a new flow (a TCP SYN, or a UDP/SCTP packet that is no reply,
    /// or an ICMP echo request for ICMP) from `src` to `dst`:`dstPort`; ignores tracked flows.
    /// For explanations ("why may A reach B on port P?").
    public func check(src: IPAddress, dst: IPAddress, dstPort: UInt16, proto: IPProtocol) -> Verdict {
        guard src.version == dst.version else { return .drop(.noRuleMatched) }
        var packet = PacketSummary(version: src.version, proto: proto, src: src, dst: dst, dstPort: dstPort,
                                   length: 40, transportLength: 20)
        if proto == .tcp { packet.tcpFlags = .syn }
        if packet.isICMP { packet.icmpType = src.version == .v4 ? ICMPMessage.v4EchoRequest : ICMPMessage.v6EchoRequest }
        return inboundPrecheck(packet) ?? matchRules(packet)
    }

    /// Steps 2 to 6 up to rule matching; nil means "ask the connection table, then the rules".
    private func inboundPrecheck(_ p: PacketSummary) -> Verdict? {
        if p.hasIPv6OptionHeaders { return .drop(.ipv6OptionHeaders) }
        let later: Bool
        if case .later(let offset) = p.fragment {
            if offset < Self.minimumLaterFragmentOffset { return .drop(.fragmentOverlap) }
            later = true
        } else {
            later = false
        }
        if !later && p.version == .v4 && p.proto == .hopByHop { return .drop(.unknownProtocol) }
        if p.dst.isMulticast { return .drop(.multicast) }
        if p.dst.isLinkLocalUnicast && p.dst != Self.cloudMetadataAddress { return .drop(.linkLocal) }
        if later { return .accept(.fragment) }
        let isLocal = p.version == .v4 ? local4.contains(AddressKey(p.dst)) : local6.contains(AddressKey(p.dst))
        if !isLocal { return .drop(.notLocalDestination) }
        switch p.proto {
        case .tcp:
            if !p.tcpFlags.isInitialSYN { return .accept(.tcpNonSYN) }
        case .tsmp:
            return .accept(.tsmp)
        default:
            if p.isICMP && (p.isICMPEchoReply || p.isICMPError) { return .accept(.icmpResponse) }
        }
        return nil
    }

    private func matchRules(_ p: PacketSummary) -> Verdict {
        p.version == .v4 ? Self.matchRules(p, family4, sourceHasCapability) : Self.matchRules(p, family6, sourceHasCapability)
    }

    private static func matchRules(_ p: PacketSummary, _ rules: borrowing FamilyRules,
                                   _ sourceHasCapability: CapabilityTest?) -> Verdict {
        let src = AddressKey(p.src), dst = AddressKey(p.dst)
        let index: Int?
        if p.isICMP {
            index = rules.firstAddressMatch(src: src, dst: dst, srcAddress: p.src, capabilityTest: sourceHasCapability)
            return index.map { .accept(.icmpRule($0)) } ?? .drop(.noRuleMatched)
        }
        switch p.proto {
        case .tcp, .udp, .sctp:
            index = rules.firstMatch(proto: p.proto.rawValue, src: src, dst: dst, port: p.dstPort,
                                     srcAddress: p.src, capabilityTest: sourceHasCapability)
        default:
            index = rules.firstAllPortsMatch(proto: p.proto.rawValue, src: src, dst: dst)
        }
        return index.map { .accept(.rule($0)) } ?? .drop(.noRuleMatched)
    }

    // MARK: Outbound

    /// Records an outbound packet to a peer (UDP and SCTP flows, so that replies get in) and
    /// decides on it: only multicast, link-local, malformed and overlapping-fragment packets
    /// are dropped.
    public mutating func checkOutbound(_ p: PacketSummary, now: Duration) -> Verdict {
        let later: Bool
        if case .later(let offset) = p.fragment {
            if offset < Self.minimumLaterFragmentOffset { return .drop(.fragmentOverlap) }
            later = true
        } else {
            later = false
        }
        if !later && p.version == .v4 && p.proto == .hopByHop { return .drop(.unknownProtocol) }
        if p.dst.isMulticast { return .drop(.multicast) }
        if p.dst.isLinkLocalUnicast && p.dst != Self.cloudMetadataAddress { return .drop(.linkLocal) }
        if later { return .accept(.fragment) }
        if (p.proto == .udp || p.proto == .sctp) && !p.hasIPv6OptionHeaders {
            // Keyed as the reply will arrive: source and destination swapped.
            connections.insert(FlowKey(proto: p.proto, src: p.dst, srcPort: p.dstPort, dst: p.src, dstPort: p.srcPort),
                               now: now)
        }
        return .accept(.outbound)
    }

    public mutating func checkOutbound(packet: UnsafeRawBufferPointer, now: Duration) -> Verdict {
        if packet.isEmpty { return .accept(.keepalive) }
        if packet.count < IPv4Header.minimumLength { return .drop(.tooShort) }
        guard let summary = PacketSummary(parsing: packet) else { return .drop(.malformed) }
        return checkOutbound(summary, now: now)
    }

    public mutating func checkOutbound(packet: [UInt8], now: Duration) -> Verdict {
        packet.withUnsafeBytes { checkOutbound(packet: $0, now: now) }
    }

    /// Same as `checkOutbound`, for callers that only want the flow recorded.
    public mutating func noteOutbound(_ p: PacketSummary, now: Duration) {
        _ = checkOutbound(p, now: now)
    }

    // MARK: Capabilities

    /// The capabilities (with their values) that `src` has on `dst` from the rules' CapGrants.
    public func capabilities(src: IPAddress, dst: IPAddress) -> [String: [JSONValue]] {
        var out: [String: [JSONValue]] = [:]
        let key = AddressKey(src)
        for grant in grants where grant.sources.contains(where: { $0.0 == src.version && $0.1.contains(key) }) {
            for prefix in grant.destinations where prefix.contains(dst) {
                for (name, values) in grant.capabilities { out[name, default: []] += values }
            }
        }
        return out
    }

    /// GCP's metadata and DNS address, the one link-local destination Tailscale lets through.
    static let cloudMetadataAddress = IPAddress.v4(0xA9FE_A9FE)
}

extension IPAddress {
    /// 224.0.0.0/4 or ff00::/8 (IPv4-mapped addresses judged as IPv4).
    var isMulticast: Bool {
        switch self {
        case .v4(let v): return v >> 28 == 0xE
        case .v6(let hi, let lo):
            if hi == 0, lo >> 32 == 0xFFFF { return IPAddress.v4(UInt32(truncatingIfNeeded: lo)).isMulticast }
            return hi >> 56 == 0xFF
        }
    }

    /// 169.254.0.0/16 or fe80::/10 (IPv4-mapped addresses judged as IPv4).
    var isLinkLocalUnicast: Bool {
        switch self {
        case .v4(let v): return v >> 16 == 0xA9FE
        case .v6(let hi, let lo):
            if hi == 0, lo >> 32 == 0xFFFF { return IPAddress.v4(UInt32(truncatingIfNeeded: lo)).isLinkLocalUnicast }
            return hi >> 54 == 0xFE80 >> 6
        }
    }
}
