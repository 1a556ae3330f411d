/// The filter's decision on one packet, with the reason, so that a decision can be explained.
public enum Verdict: Hashable, Sendable, CustomStringConvertible {
    case accept(AcceptReason)
    case drop(DropReason)

    public enum AcceptReason: Hashable, Sendable {
        /// An empty packet: a WireGuard keepalive.
        case keepalive
        /// The filter rule at this index (in the list the filter was built from) allows it.
        case rule(Int)
        /// ICMP (not a reply): the rule at this index opens some port of the destination to
        /// the source, which Tailscale takes to allow ICMP too.
        case icmpRule(Int)
        /// An ICMP echo reply or error message: always let in.
        case icmpResponse
        /// TCP without SYN, or with SYN and ACK: a continuing flow (new flows need a SYN).
        case tcpNonSYN
        /// A reply on a UDP or SCTP flow this node opened.
        case trackedFlow
        /// A later fragment: it has no ports to match; the receiver's reassembly drops it if
        /// the first fragment was dropped.
        case fragment
        /// Tailscale's own node-to-node messages (IP protocol 99).
        case tsmp
        /// An outbound packet (outbound traffic is never filtered, only recorded).
        case outbound
    }

    public enum DropReason: Hashable, Sendable {
        /// 1 to 19 bytes.
        case tooShort
        /// Does not parse (see `PacketSummary`).
        case malformed
        /// IPv4 protocol 0 (Tailscale's "unknown").
        case unknownProtocol
        case multicast
        /// A link-local unicast destination (other than 169.254.169.254).
        case linkLocal
        /// A later fragment whose offset reaches into the first 80 bytes, where the transport
        /// header of the first fragment is (RFC 1858).
        case fragmentOverlap
        /// IPv6 with Hop-by-Hop, Routing or Destination Options headers (Tailscale does not
        /// walk them and drops such packets unless a rule names the header's number).
        case ipv6OptionHeaders
        /// The destination is not one of this node's addresses.
        case notLocalDestination
        /// No rule allows this new inbound flow.
        case noRuleMatched
    }

    public var isAccepted: Bool {
        if case .accept = self { return true }
        return false
    }

    public var description: String {
        switch self {
        case .accept(let reason):
            switch reason {
            case .keepalive: return "accept: keepalive"
            case .rule(let i): return "accept: rule \(i)"
            case .icmpRule(let i): return "accept: ICMP to an address rule \(i) opens"
            case .icmpResponse: return "accept: ICMP reply or error"
            case .tcpNonSYN: return "accept: TCP packet of an existing flow"
            case .trackedFlow: return "accept: reply on a flow this node opened"
            case .fragment: return "accept: later fragment"
            case .tsmp: return "accept: TSMP"
            case .outbound: return "accept: outbound"
            }
        case .drop(let reason):
            switch reason {
            case .tooShort: return "drop: too short"
            case .malformed: return "drop: malformed"
            case .unknownProtocol: return "drop: unknown protocol"
            case .multicast: return "drop: multicast destination"
            case .linkLocal: return "drop: link-local destination"
            case .fragmentOverlap: return "drop: fragment overlapping the transport header"
            case .ipv6OptionHeaders: return "drop: IPv6 option headers"
            case .notLocalDestination: return "drop: destination is not local"
            case .noRuleMatched: return "drop: no rule matched"
            }
        }
    }
}
