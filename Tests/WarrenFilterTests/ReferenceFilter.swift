import WarrenFilter
import WarrenPacket
import WarrenTailcfg

/// A naive re-reading of Tailscale's filter semantics: every packet re-parses every rule's
/// strings and walks them in order. Slow on purpose; written without the compiled tables.
struct ReferenceFilter {
    var rules: [FilterRule]
    var local: [IPPrefix]
    var hasCapability: ((IPAddress, String) -> Bool)?
    var capacity: Int
    /// Most recently used first.
    var flows: [FlowKey] = []

    // MARK: Entries

    /// Whether the SrcIPs/DstPorts entry `text` contains `address`; false for "cap:" and bad entries.
    static func entry(_ text: String, contains address: IPAddress) -> Bool {
        if text == "*" { return true }
        if text.hasPrefix("cap:") { return false }
        if text.contains("/") {
            guard let prefix = IPPrefix(text), prefix.masked == prefix else { return false }
            return prefix.contains(address)
        }
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        if parts.count == 2 {
            guard let a = IPAddress(parts[0]), let b = IPAddress(parts[1]), a.version == b.version, a <= b else { return false }
            return address.version == a.version && a <= address && address <= b
        }
        return IPAddress(text) == address
    }

    /// Whether the entry is valid and has addresses of `version`.
    static func entry(_ text: String, hasFamily version: IPVersion) -> Bool {
        let probe: IPAddress = version == .v4 ? .v4(0) : .v6(0, 0)
        if text == "*" { return true }
        if text.hasPrefix("cap:") { return false }
        if text.contains("/") {
            guard let prefix = IPPrefix(text), prefix.masked == prefix else { return false }
            return prefix.address.version == probe.version
        }
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        if parts.count == 2 {
            guard let a = IPAddress(parts[0]), let b = IPAddress(parts[1]), a.version == b.version, a <= b else { return false }
            return a.version == version
        }
        return IPAddress(text)?.version == version
    }

    static func protocols(_ rule: FilterRule) -> [Int] {
        guard let list = rule.ipProto, !list.isEmpty else { return [6, 17, 1, 58] }
        return list.filter { (0...255).contains($0) }
    }

    static func capabilities(_ rule: FilterRule) -> [String] {
        rule.srcIPs.filter { $0.hasPrefix("cap:") }.map { String($0.dropFirst(4)) }
    }

    /// Whether the rule takes part in matching packets of `version` at all.
    static func inFamily(_ rule: FilterRule, _ version: IPVersion) -> Bool {
        let dsts = (rule.dstPorts ?? []).contains { entry($0.ip, hasFamily: version) }
        let srcs = rule.srcIPs.contains { entry($0, hasFamily: version) } || !capabilities(rule).isEmpty
        return dsts && srcs
    }

    func sourceMatches(_ rule: FilterRule, _ src: IPAddress, capabilities useCaps: Bool) -> Bool {
        if rule.srcIPs.contains(where: { Self.entry($0, contains: src) }) { return true }
        if useCaps, let test = hasCapability {
            return Self.capabilities(rule).contains { test(src, $0) }
        }
        return false
    }

    // MARK: Decisions

    static func isMulticast(_ a: IPAddress) -> Bool {
        ["224.0.0.0/4", "ff00::/8", "::ffff:224.0.0.0/100"].contains { IPPrefix($0)!.contains(a) }
    }

    static func isLinkLocal(_ a: IPAddress) -> Bool {
        ["169.254.0.0/16", "fe80::/10", "::ffff:169.254.0.0/112"].contains { IPPrefix($0)!.contains(a) }
    }

    mutating func inbound(_ p: PacketSummary) -> Verdict {
        if p.hasIPv6OptionHeaders { return .drop(.ipv6OptionHeaders) }
        var later = false
        if case .later(let offset) = p.fragment {
            if offset < 10 { return .drop(.fragmentOverlap) }
            later = true
        }
        if !later && p.version == .v4 && p.proto.rawValue == 0 { return .drop(.unknownProtocol) }
        if Self.isMulticast(p.dst) { return .drop(.multicast) }
        if Self.isLinkLocal(p.dst) && p.dst != IPAddress("169.254.169.254")! { return .drop(.linkLocal) }
        if later { return .accept(.fragment) }
        if !local.contains(where: { $0.contains(p.dst) }) { return .drop(.notLocalDestination) }
        let icmp: UInt8 = p.version == .v4 ? 1 : 58
        let family = rules.enumerated().filter { Self.inFamily($0.element, p.version) }
        if p.proto.rawValue == icmp {
            if p.transportLength >= 8 {
                let reply = p.version == .v4 ? p.icmpType == 0 : p.icmpType == 129
                let error = p.version == .v4 ? [3, 11, 12].contains(p.icmpType) : (1...4).contains(p.icmpType)
                if (reply && p.icmpCode == 0) || error { return .accept(.icmpResponse) }
            }
            for (i, rule) in family where sourceMatches(rule, p.src, capabilities: false)
                && (rule.dstPorts ?? []).contains(where: { Self.entry($0.ip, contains: p.dst) }) {
                return .accept(.icmpRule(i))
            }
            if let test = hasCapability {
                for (i, rule) in family where Self.capabilities(rule).contains(where: { test(p.src, $0) }) {
                    return .accept(.icmpRule(i))
                }
            }
            return .drop(.noRuleMatched)
        }
        switch p.proto.rawValue {
        case 6, 17, 132:
            if p.proto.rawValue == 6 && !(p.tcpFlags.contains(.syn) && !p.tcpFlags.contains(.ack)) {
                return .accept(.tcpNonSYN)
            }
            if p.proto.rawValue != 6 {
                let key = FlowKey(proto: p.proto, src: p.src, srcPort: p.srcPort, dst: p.dst, dstPort: p.dstPort)
                if let at = flows.firstIndex(of: key) {
                    flows.remove(at: at)
                    flows.insert(key, at: 0)
                    return .accept(.trackedFlow)
                }
            }
            for (i, rule) in family where Self.protocols(rule).contains(Int(p.proto.rawValue))
                && sourceMatches(rule, p.src, capabilities: true)
                && (rule.dstPorts ?? []).contains(where: {
                    Self.entry($0.ip, contains: p.dst) && $0.ports.first <= p.dstPort && p.dstPort <= $0.ports.last
                }) {
                return .accept(.rule(i))
            }
            return .drop(.noRuleMatched)
        case 99:
            return .accept(.tsmp)
        default:
            for (i, rule) in family where Self.protocols(rule).contains(Int(p.proto.rawValue))
                && sourceMatches(rule, p.src, capabilities: false)
                && (rule.dstPorts ?? []).contains(where: {
                    $0.ports == PortRange(first: 0, last: 65535) && Self.entry($0.ip, contains: p.dst)
                }) {
                return .accept(.rule(i))
            }
            return .drop(.noRuleMatched)
        }
    }

    mutating func outbound(_ p: PacketSummary) -> Verdict {
        var later = false
        if case .later(let offset) = p.fragment {
            if offset < 10 { return .drop(.fragmentOverlap) }
            later = true
        }
        if !later && p.version == .v4 && p.proto.rawValue == 0 { return .drop(.unknownProtocol) }
        if Self.isMulticast(p.dst) { return .drop(.multicast) }
        if Self.isLinkLocal(p.dst) && p.dst != IPAddress("169.254.169.254")! { return .drop(.linkLocal) }
        if later { return .accept(.fragment) }
        if [17, 132].contains(p.proto.rawValue) && !p.hasIPv6OptionHeaders {
            let key = FlowKey(proto: p.proto, src: p.dst, srcPort: p.dstPort, dst: p.src, dstPort: p.srcPort)
            flows.removeAll { $0 == key }
            flows.insert(key, at: 0)
            if flows.count > capacity { flows.removeLast() }
        }
        return .accept(.outbound)
    }
}
