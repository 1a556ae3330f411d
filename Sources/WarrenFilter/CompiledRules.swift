import WarrenPacket
import WarrenTailcfg

/// One filter rule as seen by one address family, in flat arrays so that matching touches
/// no reference counts: its sources are `sourceFirsts/Lasts[sources]`, its destinations
/// `destinations[destinationRange]`, its source capabilities `capabilities[capabilityRange]`.
struct CompiledRule: Sendable {
    /// Index of the rule in the list the filter was built from.
    var index: Int
    var protocols: ProtocolSet
    var sources: Range<Int>
    var destinations: Range<Int>
    var capabilities: Range<Int>
}

/// A destination of a rule: addresses and a port range (both inclusive).
struct CompiledDestination: Sendable {
    var addresses: AddressRange
    var firstPort: UInt16
    var lastPort: UInt16

    @inline(__always)
    var coversAllPorts: Bool { firstPort == 0 && lastPort == 65535 }
}

/// The rules of one address family (Tailscale's matches4 or matches6): a rule is kept for a
/// family when it has at least one destination of that family and at least one source of
/// that family or a source capability.
struct FamilyRules: Sendable {
    var rules: [CompiledRule] = []
    var sourceFirsts: [AddressKey] = []
    var sourceLasts: [AddressKey] = []
    var destinations: [CompiledDestination] = []
    var capabilities: [String] = []
    /// For each protocol number p, `byProtocol[protocolStart[p]..<protocolStart[p+1]]` are the
    /// positions in `rules` of the rules that list p, in rule order.
    var protocolStart: [Int32] = []
    var byProtocol: [Int32] = []
    /// Whether any rule has source capabilities (so capability tests may be needed).
    var hasCapabilities = false

    /// Builds the family's tables. Destinations that overlap no local address can never match
    /// (the filter drops packets to non-local destinations first) and are left out; the rule
    /// itself stays so that capability-based ICMP matching sees the same rules as Tailscale's.
    init(family: IPVersion, parsed: [ParsedRule], local: AddressSet) {
        for rule in parsed {
            let sources = rule.sources.filter { $0.0 == family }.map(\.1)
            let destinations = rule.destinations.filter { $0.version == family }
            guard !destinations.isEmpty, !sources.isEmpty || !rule.sourceCapabilities.isEmpty else { continue }
            let sourceStart = sourceFirsts.count
            for range in AddressRange.normalized(sources) {
                sourceFirsts.append(range.first)
                sourceLasts.append(range.last)
            }
            let destinationStart = self.destinations.count
            for d in destinations where local.overlaps(d.destination.addresses) {
                self.destinations.append(d.destination)
            }
            let capabilityStart = capabilities.count
            capabilities += rule.sourceCapabilities
            hasCapabilities = hasCapabilities || !rule.sourceCapabilities.isEmpty
            rules.append(CompiledRule(index: rule.index, protocols: rule.protocols,
                                      sources: sourceStart..<sourceFirsts.count,
                                      destinations: destinationStart..<self.destinations.count,
                                      capabilities: capabilityStart..<capabilities.count))
        }
        protocolStart = [0]
        for p in 0...255 {
            for (position, rule) in rules.enumerated() where rule.protocols.contains(UInt8(p)) {
                byProtocol.append(Int32(position))
            }
            protocolStart.append(Int32(byProtocol.count))
        }
    }

    init() {}
}

/// A rule's entries after parsing, before splitting by family.
struct ParsedRule {
    struct Destination {
        var version: IPVersion
        var destination: CompiledDestination
    }

    var index: Int
    var protocols: ProtocolSet
    var sources: [(IPVersion, AddressRange)] = []
    var sourceCapabilities: [String] = []
    var destinations: [Destination] = []

    /// Parses `rule`, recording skipped entries in `issues`.
    init(_ rule: FilterRule, index: Int, issues: inout [FilterRuleIssue]) {
        self.index = index
        protocols = ProtocolSet(ipProto: rule.ipProto)
        for text in rule.srcIPs {
            switch IPSetEntry.parse(text) {
            case .success(.ranges(let ranges)): sources += ranges
            case .success(.capability(let name)): sourceCapabilities.append(name)
            case .failure(let error):
                issues.append(FilterRuleIssue(ruleIndex: index, field: "SrcIPs", entry: text, message: error.message))
            }
        }
        for dst in rule.dstPorts ?? [] {
            switch IPSetEntry.parse(dst.ip) {
            case .success(.ranges(let ranges)):
                for (version, range) in ranges {
                    destinations.append(Destination(version: version, destination: CompiledDestination(
                        addresses: range, firstPort: dst.ports.first, lastPort: dst.ports.last)))
                }
            case .success(.capability(let name)):
                issues.append(FilterRuleIssue(ruleIndex: index, field: "DstPorts", entry: dst.ip,
                                              message: "unexpected capability \"\(name)\" in DstPorts"))
            case .failure(let error):
                issues.append(FilterRuleIssue(ruleIndex: index, field: "DstPorts", entry: dst.ip, message: error.message))
            }
        }
    }
}

/// Capability grants: which capabilities (with values) sources get on destinations. These
/// never allow packets.
struct CapabilityGrant: Sendable {
    var ruleIndex: Int
    var sources: [(IPVersion, AddressRange)]
    var destinations: [IPPrefix]
    var capabilities: [(String, [JSONValue])]
}
