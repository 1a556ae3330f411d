// Subnet routes and exit nodes, pure: which peers offer an exit, which one to pick when the user asked
// for "auto:any", and prefix arithmetic for "everything but the local networks" (the default route as an
// exit node guards it, and the routes a client with LAN access keeps out of the tunnel).
// Semantics follow Tailscale's ipn/ipnlocal (shrinkDefaultRoute, suggestExitNode) and its Linux router.

import WarrenDNS
import WarrenPacket
import WarrenTailcfg

extension Node {
    /// Whether this peer offers itself as an exit node to us: control put a default route in its
    /// AllowedIPs (it does so only for viewers the policy lets use the internet through it).
    public var offersExitNode: Bool { (allowedIPs ?? []).contains { $0.isDefaultRoute } }

    /// Where this node answers DNS for peers that use it as exit node: its PeerAPI's /dns-query, when its
    /// Hostinfo announces "peerapi-dns-proxy" and a PeerAPI port for one of its addresses (IPv4 first).
    public var peerAPIDNSProxy: DNSUpstream? {
        let services = hostinfo?.known.services ?? []
        guard services.contains(where: { $0.proto == "peerapi-dns-proxy" }) else { return nil }
        for (proto, version) in [("peerapi4", IPVersion.v4), ("peerapi6", IPVersion.v6)] {
            guard let port = services.first(where: { $0.proto == proto })?.port, port != 0,
                  let address = (addresses ?? []).first(where: { $0.isSingleAddress && $0.address.version == version })?.address
            else { continue }
            return DNSUpstream(address: address, port: port, httpPath: "/dns-query")
        }
        return nil
    }

    /// The short name of the node: the first label of its MagicDNS name, else its host name.
    public var shortName: String {
        let label = name.split(separator: ".").first.map(String.init) ?? ""
        return label.isEmpty ? (hostinfo?.known.hostname ?? "") : label
    }
}

extension NetworkMap {
    /// Peers that offer an exit node, sorted by node ID.
    public var exitNodeCandidates: [Node] { peers.filter(\.offersExitNode) }

    /// The exit node "auto:any" should use: among online candidates, the one whose home relay region is
    /// the closest by `regionLatency` (seconds, from netcheck; unknown regions last), keeping `current`
    /// while it is online and among the closest, ties broken by the lowest node ID so that every run picks
    /// the same. Offline candidates are chosen only when no candidate is online or of unknown liveness.
    public func suggestExitNode(current: String?, regionLatency: [Int: Double]) -> Node? {
        let candidates = exitNodeCandidates
        guard !candidates.isEmpty else { return nil }
        let live = candidates.filter { $0.online != false }
        let pool = live.isEmpty ? candidates : live
        func latency(_ n: Node) -> Double { regionLatency[n.homeDERP ?? 0] ?? .infinity }
        let best = pool.map(latency).min() ?? .infinity
        let closest = pool.filter { latency($0) == best }
        if let current, let kept = closest.first(where: { $0.stableID == current }) { return kept }
        return closest.min { $0.id < $1.id }
    }

    /// Resolves what the user typed after `--exit-node` to a peer offering an exit: a Tailscale IP, the
    /// stable node ID, the full MagicDNS name (with or without the final dot) or the short name
    /// (case-insensitive, and unique among candidates).
    public func exitNode(named text: String) -> Result<Node, ExitNodeLookupError> {
        let query = text.lowercased().hasSuffix(".") ? String(text.lowercased().dropLast()) : text.lowercased()
        if let ip = IPAddress(query) {
            guard let node = peer(address: ip) else { return .failure(.noSuchNode(text)) }
            return node.offersExitNode ? .success(node) : .failure(.notAnExitNode(text))
        }
        let byID = peers.filter { $0.stableID.lowercased() == query }
        let byName = peers.filter { n in
            let full = n.name.lowercased().hasSuffix(".") ? String(n.name.lowercased().dropLast()) : n.name.lowercased()
            return full == query || n.shortName.lowercased() == query
        }
        let matches = byID.isEmpty ? byName : byID
        switch matches.count {
        case 0: return .failure(.noSuchNode(text))
        case 1: return matches[0].offersExitNode ? .success(matches[0]) : .failure(.notAnExitNode(text))
        default:
            let exits = matches.filter(\.offersExitNode)
            return exits.count == 1 ? .success(exits[0]) : .failure(.ambiguous(text))
        }
    }
}

public enum ExitNodeLookupError: Error, Equatable, CustomStringConvertible {
    case noSuchNode(String)
    case notAnExitNode(String)
    case ambiguous(String)

    public var description: String {
        switch self {
        case .noSuchNode(let s): return "no node found in the network map matching \(s.debugDescription)"
        case .notAnExitNode(let s): return "node \(s.debugDescription) is not advertising an exit node"
        case .ambiguous(let s): return "more than one node matches \(s.debugDescription); use its IP address"
        }
    }
}

extension IPPrefix {
    /// The two halves of this prefix (nil for a single address).
    public var halves: (IPPrefix, IPPrefix)? {
        guard bits < address.bitCount else { return nil }
        let low = masked
        let high: IPAddress
        switch low.address {
        case .v4(let v): high = .v4(v | (UInt32(1) << UInt32(31 - bits)))
        case .v6(let hi, let lo):
            high = bits < 64 ? .v6(hi | (UInt64(1) << UInt64(63 - bits)), lo) : .v6(hi, lo | (UInt64(1) << UInt64(127 - bits)))
        }
        return (IPPrefix(address: low.address, bits: bits + 1)!, IPPrefix(address: high, bits: bits + 1)!)
    }

    /// Whether the two prefixes share any address.
    public func overlaps(_ other: IPPrefix) -> Bool {
        address.version == other.address.version && (contains(other) || other.contains(self))
    }

    /// This prefix without the addresses of `excluded`, as the fewest prefixes that cover the rest, sorted.
    public func subtracting(_ excluded: [IPPrefix]) -> [IPPrefix] {
        let relevant = excluded.filter { $0.overlaps(self) }
        if relevant.isEmpty { return [masked] }
        if relevant.contains(where: { $0.contains(self) }) { return [] }
        guard let (a, b) = halves else { return [] }
        return (a.subtracting(relevant) + b.subtracting(relevant)).sorted()
    }
}

extension Prefs {
    /// The routes `--advertise-routes` and `--advertise-exit-node` ask for, checked as Tailscale's CLI checks
    /// them: each a prefix in canonical form (no host bits set), the two default routes only together
    /// (that is the exit node), duplicates removed, sorted.
    public static func advertisedRoutes(_ texts: [String], exitNode: Bool) throws(RouteSpecError) -> [IPPrefix] {
        var routes = Set<IPPrefix>()
        for raw in texts.flatMap({ $0.split(separator: ",") }) {
            let text = String(raw.filter { $0 != " " && $0 != "\t" })
            if text.isEmpty { continue }
            guard text.contains("/"), let prefix = IPPrefix(text) else { throw .invalid(text) }
            guard prefix.masked == prefix else { throw .hostBits(text, expected: prefix.masked.description) }
            routes.insert(prefix)
        }
        let v4 = routes.contains(.defaultRouteV4), v6 = routes.contains(.defaultRouteV6)
        if v4 != v6 { throw .halfExitNode }
        if exitNode {
            routes.insert(.defaultRouteV4)
            routes.insert(.defaultRouteV6)
        }
        return routes.sorted()
    }
}

public enum RouteSpecError: Error, Equatable, CustomStringConvertible {
    case invalid(String)
    case hostBits(String, expected: String)
    case halfExitNode

    public var description: String {
        switch self {
        case .invalid(let s): return "\(s.debugDescription) is not a valid IP prefix (want e.g. 10.0.0.0/24)"
        case .hostBits(let s, let expected): return "\(s) has non-address bits set; expected \(expected)"
        case .halfExitNode: return "0.0.0.0/0 and ::/0 must be advertised together (use --advertise-exit-node)"
        }
    }
}

