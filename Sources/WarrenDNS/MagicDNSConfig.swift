// What the MagicDNS resolver knows: the tailnet's names and addresses, the records control adds,
// and where to send everything else (split DNS routes, global resolvers, the host's own).

import WarrenPacket

/// A resolver to forward to: an address and port (plain DNS over UDP, and TCP when needed).
public struct DNSUpstream: Hashable, Sendable, CustomStringConvertible {
    public var address: IPAddress
    public var port: UInt16
    /// DNS over plain HTTP (RFC 8484's wire format, POST application/dns-message) at this path on
    /// address:port, instead of DNS on port 53: what an exit node's PeerAPI serves its clients
    /// ("http://100.64.0.1:PORT/dns-query" in Tailscale's DNS configuration). Nil: plain DNS.
    public var httpPath: String?

    public init(address: IPAddress, port: UInt16 = 53, httpPath: String? = nil) {
        self.address = address
        self.port = port
        self.httpPath = httpPath
    }

    /// Parses "192.0.2.1", "192.0.2.1:5353", "2001:db8::1" or "[2001:db8::1]:5353". Other forms
    /// Tailscale's DNSConfig can hold (DoH "https://" and DoT "tls://" URLs) are not plain upstreams
    /// and give nil.
    public init?(_ text: some StringProtocol) {
        var text = Substring(text)
        if text.hasPrefix("http://") {
            // http://IP:PORT/path, the port written out (an exit node's PeerAPI); https and names are not
            // plain upstreams.
            text = text.dropFirst("http://".count)
            guard let slash = text.firstIndex(of: "/") else { return nil }
            let hostPort = text[..<slash]
            let hasPort = hostPort.hasPrefix("[") ? hostPort.contains("]:") : (hostPort.contains(":") && IPAddress(hostPort) == nil)
            guard hasPort, let inner = DNSUpstream(hostPort), inner.httpPath == nil else { return nil }
            self.init(address: inner.address, port: inner.port, httpPath: String(text[slash...]))
            return
        }
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), let address = IPAddress(text[text.index(after: text.startIndex)..<close])
            else { return nil }
            let rest = text[text.index(after: close)...]
            if rest.isEmpty {
                self.init(address: address)
            } else {
                guard rest.hasPrefix(":"), let port = UInt16(rest.dropFirst()), port != 0 else { return nil }
                self.init(address: address, port: port)
            }
        } else if let address = IPAddress(text) {
            self.init(address: address)
        } else if let colon = text.lastIndex(of: ":"), let address = IPAddress(text[..<colon]), address.version == .v4,
                  let port = UInt16(text[text.index(after: colon)...]), port != 0 {
            self.init(address: address, port: port)
        } else {
            return nil
        }
    }

    public var description: String {
        let hostPort = address.version == .v4 ? "\(address):\(port)" : "[\(address)]:\(port)"
        return httpPath.map { "http://\(hostPort)\($0)" } ?? hostPort
    }
}

/// One of control's DNSConfig.ExtraRecords: a name, a type ("" means A or AAAA by the value), and a
/// value in text form.
public struct MagicDNSExtraRecord: Hashable, Sendable {
    public var name: String
    public var type: String
    public var value: String

    public init(name: String, type: String = "", value: String) {
        self.name = name
        self.type = type
        self.value = value
    }
}

/// The resolver's whole configuration, rebuilt from the network map on every change.
public struct MagicDNSConfig: Hashable, Sendable {
    /// Fully qualified node names and their addresses (the node's own name among them).
    public var hosts: [DNSName: [IPAddress]]
    /// The tailnet's MagicDNS domains (e.g. "tail1234.ts.net."): unknown names under them get
    /// NXDOMAIN, and single-label names are looked up under them.
    public var magicDNSDomains: [DNSName]
    /// Records control adds (DNSConfig.ExtraRecords). Types "", "A" and "AAAA" add addresses (as
    /// Tailscale does); "TXT" and "CNAME" are answered too; other types are ignored.
    public var extraRecords: [MagicDNSExtraRecord]
    /// Split DNS: a domain suffix and the resolvers for names under it; an empty list means the
    /// names are answered here (NXDOMAIN for unknown ones), as Tailscale does for its own domains.
    /// A route for "." catches every name no longer route matches.
    public var routes: [DNSName: [DNSUpstream]]
    /// Control's global nameservers (DNSConfig.Resolvers), for names no route matches.
    public var globalResolvers: [DNSUpstream]
    /// The host's own resolvers as they were before Warren changed anything; used when control
    /// sets no global nameservers.
    public var hostResolvers: [DNSUpstream]
    /// Search domains for the host's configuration; single-label names are also looked up under them.
    public var searchDomains: [DNSName]
    /// TTL of local answers (Tailscale: 600 s).
    public var ttl: UInt32
    /// Answer reverse lookups in 100.64.0.0/10 and fd7a:115c:a1e0::/48 here, with NXDOMAIN for
    /// addresses no node has (Tailscale adds these zones as local routes when MagicDNS is on).
    public var answersTailnetReverseZones: Bool

    public init(hosts: [DNSName: [IPAddress]] = [:], magicDNSDomains: [DNSName] = [],
                extraRecords: [MagicDNSExtraRecord] = [], routes: [DNSName: [DNSUpstream]] = [:],
                globalResolvers: [DNSUpstream] = [], hostResolvers: [DNSUpstream] = [],
                searchDomains: [DNSName] = [], ttl: UInt32 = 600, answersTailnetReverseZones: Bool = true) {
        self.hosts = hosts
        self.magicDNSDomains = magicDNSDomains
        self.extraRecords = extraRecords
        self.routes = routes
        self.globalResolvers = globalResolvers
        self.hostResolvers = hostResolvers
        self.searchDomains = searchDomains
        self.ttl = ttl
        self.answersTailnetReverseZones = answersTailnetReverseZones
    }

    /// Prefixes reached through the tunnel (the tailnet's ranges and accepted subnet routes, not an exit
    /// node's default routes): an upstream inside them is asked through the tunnel, without the socket
    /// mark that keeps the node's other traffic out of it (a split-DNS resolver on a tailnet or routed
    /// address, as Tailscale dials those through its own stack).
    public var tunnelRoutes: [IPPrefix] = []

    /// Whether `upstream` is reached through the tunnel.
    public func isThroughTunnel(_ upstream: DNSUpstream) -> Bool {
        upstream.httpPath != nil || tunnelRoutes.contains { $0.contains(upstream.address) }
    }
}
