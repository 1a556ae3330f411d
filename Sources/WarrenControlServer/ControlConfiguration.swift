// What the engine needs to know about the tailnet it serves. The executable fills it from flags and
// the YAML file.

import WarrenPacket
import WarrenTailcfg

public struct ControlConfiguration: Sendable {
    /// The URL clients use (`--login-server`); also the base of interactive login URLs.
    public var serverURL: String
    /// MagicDNS suffix: nodes are `<name>.<baseDomain>`.
    public var baseDomain: String = "warren.internal"
    public var ipv4Prefix: IPPrefix = IPPrefix("100.64.0.0/10")!
    public var ipv6Prefix: IPPrefix = IPPrefix("fd7a:115c:a1e0::/48")!
    public var dns: DNSSettings = DNSSettings()
    /// Regions sent in every full map.
    public var derpMap: DERPMap = DERPMap()
    /// How long a node key stays valid after login; nil: forever. Tagged nodes never expire.
    public var nodeKeyExpiry: Duration? = .seconds(180 * 24 * 3600)
    /// The least time between two messages on one map stream. A change to a quiet stream goes out at once;
    /// changes that come faster (a burst of joins, a server restart) are merged into one message per
    /// interval (see MapSessionOutbox).
    public var mapUpdateInterval: Duration = .milliseconds(250)
    /// How often an idle map stream carries a keep-alive (clients give up after 120 s of silence).
    public var keepAliveInterval: Duration = .seconds(55)
    /// How long a subnet router whose last map stream ended still counts as online for the primary
    /// election: a stream that comes back within it keeps the router's routes; past it, the routes it was
    /// primary for fail over to another online router (and peers are told).
    public var routeFailoverGrace: Duration = .seconds(3)
    /// How long an ephemeral node may stay disconnected before it is deleted.
    public var ephemeralInactivityTimeout: Duration = .seconds(120)
    /// New nodes (other than those of pre-approved keys) wait for an admin's approval.
    public var requireDeviceApproval: Bool = false
    /// How long a Followup register request waits for `nodes register` before answering again.
    public var interactiveLoginWait: Duration = .seconds(60)
    /// How long an interactive login waits for approval before it is forgotten (headscale: 15 minutes).
    public var pendingLoginLifetime: Duration = .seconds(15 * 60)
    /// Interactive logins waiting for approval, in all (unauthenticated: each costs memory and a database row).
    public var maxPendingLogins: Int = 1000
    /// Interactive logins waiting for approval from one source address.
    public var maxPendingLoginsPerSource: Int = 16
    /// Concurrent map streams of one node; a new one past this closes the oldest.
    public var maxMapStreamsPerNode: Int = 4

    public init(serverURL: String) { self.serverURL = serverURL }
}

public struct DNSSettings: Sendable, Hashable {
    public var magicDNS: Bool = true
    /// Global nameservers (IP, IP:port or DoH URL); set means "override local DNS".
    public var nameservers: [String] = []
    /// Split DNS: domain to its nameservers.
    public var splitDNS: [String: [String]] = [:]
    public var searchDomains: [String] = []
    public var extraRecords: [DNSRecord] = []

    public init() {}
}
