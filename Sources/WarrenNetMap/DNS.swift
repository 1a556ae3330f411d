// What the host's resolver should be told while the node runs (Tailscale's net/dns OSConfig): pure,
// from the map's DNSConfig and the preferences.

import WarrenDNS
import WarrenPacket
import WarrenTailcfg

/// The host's DNS settings while Warren runs.
public struct OSDNSConfig: Hashable, Sendable {
    /// MagicDNS's addresses (WarrenDNS's TailnetAddresses).
    public static let quad100V4 = TailnetAddresses.serviceIPv4
    public static let quad100V6 = TailnetAddresses.serviceIPv6

    /// The servers to use: MagicDNS.
    public var nameservers: [IPAddress]
    /// Search domains, in order (the tailnet's first, so short names resolve).
    public var searchDomains: [String]
    /// Domains whose queries must come to MagicDNS (split DNS, the tailnet's domain, its reverse zones),
    /// for resolvers that route by domain (systemd-resolved).
    public var matchDomains: [String]
    /// Every query comes to MagicDNS (control set global resolvers, or an exit node is in use), not only
    /// the match domains.
    public var takeOverAll: Bool

    public init(nameservers: [IPAddress] = [], searchDomains: [String] = [], matchDomains: [String] = [], takeOverAll: Bool = false) {
        self.nameservers = nameservers
        self.searchDomains = searchDomains
        self.matchDomains = matchDomains
        self.takeOverAll = takeOverAll
    }
}

extension NetworkMap {
    /// The host's DNS settings, or nil to leave the host alone: `--accept-dns=false`, or control sent no
    /// DNS configuration worth installing (no MagicDNS, no resolvers, no split DNS, no search domains).
    public func osDNSConfig(prefs: Prefs) -> OSDNSConfig? {
        guard prefs.acceptDNS, let dns = dnsConfig else { return nil }
        let magicDNS = dns.proxied == true
        let routes = (dns.routes ?? [:]).keys.map(Self.bareDomain).filter { !$0.isEmpty }.sorted()
        let search = (dns.domains ?? []).map(Self.bareDomain).filter { !$0.isEmpty }
        let global = !(dns.resolvers ?? []).isEmpty
        guard magicDNS || global || !routes.isEmpty || !search.isEmpty else { return nil }
        var match = routes
        if magicDNS {
            let tailnet = Self.bareDomain(domain)
            if !tailnet.isEmpty { match.append(tailnet) }
            match += ["64.100.in-addr.arpa", "0.e.1.a.c.5.1.1.a.7.d.f.ip6.arpa"]
        }
        var unique: [String] = []
        for d in match where !unique.contains(d) { unique.append(d) }
        var searchUnique: [String] = []
        for d in search where !searchUnique.contains(d) { searchUnique.append(d) }
        return OSDNSConfig(nameservers: [OSDNSConfig.quad100V4], searchDomains: searchUnique, matchDomains: unique,
                           takeOverAll: global || prefs.usesExitNode)
    }

    /// Lower case, without the final dot.
    static func bareDomain(_ name: String) -> String {
        let lower = name.lowercased()
        return lower.hasSuffix(".") ? String(lower.dropLast()) : lower
    }
}

extension NetworkMap {
    /// The MagicDNS resolver's configuration (Tailscale's dnsConfigForNetmap): every node's name (self
    /// included) with its Tailscale addresses; with MagicDNS on (DNSConfig.Proxied), the tailnet's domain
    /// answered here; control's extra records, split-DNS routes (a route without resolvers is answered
    /// here), global resolvers and search domains; `hostResolvers` (the host's own, as they were before
    /// Warren) for everything else. Resolver addresses that are not plain DNS (DoH, DoT) are left out.
    public func magicDNSConfig(prefs: Prefs, hostResolvers: [IPAddress]) -> MagicDNSConfig {
        var config = MagicDNSConfig()
        for node in [selfNode].compactMap({ $0 }) + peers {
            guard !node.name.isEmpty, let name = try? DNSName(node.name) else { continue }
            let addresses = (node.addresses ?? []).filter(\.isSingleAddress).map(\.address)
            guard !addresses.isEmpty else { continue }
            config.hosts[name.lowercased(), default: []] += addresses
        }
        let dns = dnsConfig ?? DNSConfig()
        if dns.proxied == true, !domain.isEmpty, let tailnet = try? DNSName(domain) {
            config.magicDNSDomains = [tailnet.lowercased()]
        } else {
            config.answersTailnetReverseZones = dns.proxied == true
        }
        config.extraRecords = (dns.extraRecords ?? []).map { MagicDNSExtraRecord(name: $0.name, type: $0.type ?? "", value: $0.value) }
        for (suffix, resolvers) in dns.routes ?? [:] {
            guard let name = try? DNSName(suffix) else { continue }
            config.routes[name.lowercased()] = (resolvers ?? []).compactMap { $0.addr.flatMap(DNSUpstream.init) }
        }
        config.globalResolvers = (dns.resolvers ?? []).compactMap { $0.addr.flatMap(DNSUpstream.init) }
        config.hostResolvers = hostResolvers.map { DNSUpstream(address: $0) }
        // DNS follows the exit node (Tailscale's dnsConfigForNetmap): when it proxies DNS, names no split
        // route covers go to its PeerAPI, unless control marked global resolvers for use with exit nodes.
        if let exit = exitNode(prefs: prefs), let proxy = exit.peerAPIDNSProxy {
            let kept = (dns.resolvers ?? []).filter { $0.useWithExitNode == true }.compactMap { $0.addr.flatMap(DNSUpstream.init) }
            config.globalResolvers = kept.isEmpty ? [proxy] : kept
            config.hostResolvers = [proxy]
        }
        config.searchDomains = (dns.domains ?? []).compactMap { try? DNSName($0) }
        return config
    }
}
