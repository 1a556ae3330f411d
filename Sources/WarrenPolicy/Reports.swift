import WarrenPacket
import WarrenTailcfg

/// What `warren-control policy compile` prints for one node.
public struct CompiledNodeReport: Codable, Sendable {
    public var packet_filter_rules: [FilterRule]
    public var ssh_rules: [SSHRule]
    public var peers: [String]
}

/// Whether a flow is allowed, and by what.
public struct FlowExplanation: Sendable, Equatable, CustomStringConvertible {
    public var allowed: Bool
    /// The rule that allows it (nil when nothing does).
    public var origin: RuleOrigin?
    public var from: String
    public var to: String
    public var port: UInt16
    public var proto: Int

    public var description: String {
        let name = [6: "tcp", 17: "udp", 1: "icmp", 58: "icmp"][proto] ?? "proto \(proto)"
        guard allowed, let origin else {
            return "denied: nothing allows \(from) to reach \(to):\(port) over \(name)"
        }
        return "allowed: \(from) may reach \(to):\(port) over \(name) by \(origin.kind.rawValue)[\(origin.index)] "
            + "(line \(origin.position.line), column \(origin.position.column))"
    }
}

extension PolicyEngine {
    /// The compile report: node name to its filter rules, SSH rules and peers.
    public func report(only node: String? = nil) -> [String: CompiledNodeReport] {
        var out: [String: CompiledNodeReport] = [:]
        for name in nodeNames where node == nil || name == node {
            out[name] = CompiledNodeReport(packet_filter_rules: packetFilter(for: name),
                                           ssh_rules: sshPolicy(for: name)?.rules ?? [], peers: peers(for: name))
        }
        return out
    }
}

extension PolicyCompiler {
    /// The compile report: node name to its filter rules, SSH rules and peers.
    public func report(only node: String? = nil) -> [String: CompiledNodeReport] {
        var out: [String: CompiledNodeReport] = [:]
        let peers = peerBits()
        for (i, n) in tailnet.nodes.enumerated() where node == nil || n.name == node {
            out[n.name] = CompiledNodeReport(
                packet_filter_rules: packetFilter(node: n),
                ssh_rules: sshPolicy(node: n)?.rules ?? [],
                peers: peers[i].members.filter { $0 != i }.map { tailnet.nodes[$0].name }.sorted())
        }
        return out
    }

    /// Whether `from` may open a flow to `to` on `port` over `proto` (IANA number), and which rule allows it.
    public func explain(from: String, to: String, port: UInt16, proto: Int) -> FlowExplanation? {
        guard let a = indexByName[from], let b = indexByName[to] else { return nil }
        return explainFlow(from: tailnet.nodes[a], to: tailnet.nodes[b], port: port, proto: proto)
    }
}

extension PolicyEngine {
    /// Whether `from` may open a flow to `to` on `port` over `proto` (IANA number), and which rule allows it:
    /// `warren-control policy explain`, on the compiler the server runs.
    public func explain(from: String, to: String, port: UInt16, proto: Int) -> FlowExplanation? {
        guard let source = node(named: from), let destination = node(named: to) else { return nil }
        return explainFlow(from: source, to: destination, port: port, proto: proto)
    }
}

extension PolicySemantics {
    /// Reads the destination's own packet filter, as the destination enforces it.
    func explainFlow(from source: TailnetNode, to destination: TailnetNode, port: UInt16, proto: Int) -> FlowExplanation {
        var result = FlowExplanation(allowed: false, origin: nil, from: source.name, to: destination.name, port: port, proto: proto)
        for r in reducedRules(for: destination) where !r.isCapRule && source.addresses.contains(where: r.srcSet.contains) {
            if let p = r.proto, !p.contains(proto) { continue }
            if r.proto == nil && ![6, 17, 1, 58].contains(proto) { continue }
            for d in r.dsts where destination.addresses.contains(where: d.set.contains) {
                let portMatters = proto == 6 || proto == 17 || proto == 132
                if portMatters && !(d.ports.first <= port && port <= d.ports.last) { continue }
                result.allowed = true
                result.origin = d.origin ?? r.origin
                return result
            }
        }
        return result
    }
}
