import WarrenPacket

// The three matchers of Tailscale's filter (match.go), over one family's flat tables. Each
// returns the index of the first rule (in rule order) that matches, or nil.
extension FamilyRules {
    /// Protocol listed, source in the rule's sources (or holding one of its capabilities),
    /// and a destination that contains the address and the port.
    func firstMatch(proto: UInt8, src: AddressKey, dst: AddressKey, port: UInt16, srcAddress: IPAddress,
                    capabilityTest: PacketFilter.CapabilityTest?) -> Int? {
        let start = Int(protocolStart[Int(proto)]), end = Int(protocolStart[Int(proto) + 1])
        if start == end { return nil }
        return rules.withUnsafeBufferPointer { rules in
            byProtocol.withUnsafeBufferPointer { byProtocol in
                destinations.withUnsafeBufferPointer { destinations in
                    sourceFirsts.withUnsafeBufferPointer { firsts in
                        sourceLasts.withUnsafeBufferPointer { lasts -> Int? in
                            for k in start..<end {
                                let rule = rules[Int(byProtocol[k])]
                                var reaches = false
                                for d in rule.destinations {
                                    let destination = destinations[d]
                                    if port >= destination.firstPort && port <= destination.lastPort
                                        && destination.addresses.contains(dst) {
                                        reaches = true
                                        break
                                    }
                                }
                                if !reaches { continue }
                                if AddressSet.contains(src, firsts: UnsafeBufferPointer(rebasing: firsts[rule.sources]),
                                                       lasts: UnsafeBufferPointer(rebasing: lasts[rule.sources])) {
                                    return rule.index
                                }
                                if let test = capabilityTest,
                                   capabilities[rule.capabilities].contains(where: { test(srcAddress, $0) }) {
                                    return rule.index
                                }
                            }
                            return nil
                        }
                    }
                }
            }
        }
    }

    /// For ICMP: any rule (any protocol, any port) whose sources contain the source and
    /// whose destinations contain the destination; failing that, any rule with a source
    /// capability that the source holds, whatever its destinations.
    func firstAddressMatch(src: AddressKey, dst: AddressKey, srcAddress: IPAddress,
                           capabilityTest: PacketFilter.CapabilityTest?) -> Int? {
        for rule in rules {
            guard rule.destinations.contains(where: { destinations[$0].addresses.contains(dst) }) else { continue }
            if sourcesContain(rule, src) { return rule.index }
        }
        if let test = capabilityTest, hasCapabilities {
            for rule in rules where capabilities[rule.capabilities].contains(where: { test(srcAddress, $0) }) {
                return rule.index
            }
        }
        return nil
    }

    /// For protocols without ports: the protocol listed, the source in the rule's sources, and
    /// a destination covering every port that contains the address.
    func firstAllPortsMatch(proto: UInt8, src: AddressKey, dst: AddressKey) -> Int? {
        let start = Int(protocolStart[Int(proto)]), end = Int(protocolStart[Int(proto) + 1])
        for k in start..<end {
            let rule = rules[Int(byProtocol[k])]
            guard sourcesContain(rule, src) else { continue }
            if rule.destinations.contains(where: { destinations[$0].coversAllPorts && destinations[$0].addresses.contains(dst) }) {
                return rule.index
            }
        }
        return nil
    }

    private func sourcesContain(_ rule: CompiledRule, _ src: AddressKey) -> Bool {
        sourceFirsts.withUnsafeBufferPointer { firsts in
            sourceLasts.withUnsafeBufferPointer { lasts in
                AddressSet.contains(src, firsts: UnsafeBufferPointer(rebasing: firsts[rule.sources]),
                                    lasts: UnsafeBufferPointer(rebasing: lasts[rule.sources]))
            }
        }
    }
}
