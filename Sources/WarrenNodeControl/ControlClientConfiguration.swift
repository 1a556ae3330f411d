// What the node's control client needs: where the server is, the node's keys, how it logs in, and what it
// says about itself. The caller persists the machine and node keys; the disco key is new at each start.

import Foundation
import NIOSSL
import TailscaleKeys
import WarrenTailcfg

public struct ControlClientConfiguration: Sendable {
    /// `http://host[:port]` or `https://host[:port]`.
    public var serverURL: String
    /// TLS for an https URL; nil: the system's trust roots (plus ``extraCAFile``).
    public var tls: NIOSSLContext?
    /// A PEM file of extra roots to trust for an https URL (a private CA).
    public var extraCAFile: String?
    public var machineKey: MachinePrivate
    public var nodeKey: NodePrivate
    /// The previous node key when rotating after expiry (the server moves the node to the new key).
    public var oldNodeKey: NodePublic?
    public var discoKey: DiscoPublic
    /// A pre-auth key (`tskey-...`), sent on this service's first registration only; nil: interactive login
    /// (or none needed: the server already knows this node key).
    public var authKey: String?
    public var hostinfo: Hostinfo
    public var ephemeral: Bool
    public var capabilityVersion: CapabilityVersion
    /// Reconnect delays (exponential with jitter).
    public var backoff: ReconnectBackoff
    /// No map message (keep-alives included) for this long: the stream is taken for dead (Tailscale: 120 s).
    public var watchdogTimeout: Duration
    /// The largest map message accepted, compressed and decompressed.
    public var maximumMapMessageSize: Int
    /// SO_MARK of the connections to control, so that the node's own routes never carry them.
    public var socketMark: UInt32?

    public init(serverURL: String, machineKey: MachinePrivate, nodeKey: NodePrivate, oldNodeKey: NodePublic? = nil,
                discoKey: DiscoPublic, authKey: String? = nil, hostinfo: Hostinfo = ControlClientConfiguration.defaultHostinfo(),
                ephemeral: Bool = false, capabilityVersion: CapabilityVersion = CapabilityVersions.current,
                tls: NIOSSLContext? = nil, extraCAFile: String? = nil, backoff: ReconnectBackoff = ReconnectBackoff(),
                watchdogTimeout: Duration = .seconds(120), maximumMapMessageSize: Int = 64 << 20) {
        self.serverURL = serverURL
        self.machineKey = machineKey
        self.nodeKey = nodeKey
        self.oldNodeKey = oldNodeKey
        self.discoKey = discoKey
        self.authKey = authKey
        self.hostinfo = hostinfo
        self.ephemeral = ephemeral
        self.capabilityVersion = capabilityVersion
        self.tls = tls
        self.extraCAFile = extraCAFile
        self.backoff = backoff
        self.watchdogTimeout = watchdogTimeout
        self.maximumMapMessageSize = maximumMapMessageSize
    }

    /// Hostinfo as a Linux Tailscale client fills it at start: host name, OS, and the version fields
    /// (NetInfo, endpoints' details come later from magicsock).
    public static func defaultHostinfo(hostname: String = ProcessInfo.processInfo.hostName) -> Hostinfo {
        var fields = HostinfoFields()
        fields.hostname = hostname.split(separator: ".").first.map(String.init) ?? hostname
        fields.os = "linux"
        fields.osVersion = ProcessInfo.processInfo.operatingSystemVersionString
        fields.ipnVersion = "1.80.0-warren"
        fields.goArch = Self.architecture
        fields.goVersion = "swift"
        return Hostinfo(fields)
    }

    static var architecture: String {
        #if arch(x86_64)
        "amd64"
        #elseif arch(arm64)
        "arm64"
        #else
        "unknown"
        #endif
    }
}

/// Exponential backoff with jitter for reconnects: `initial * 2^attempt`, capped at `maximum`, each delay
/// scaled by a random factor in [1 - jitter, 1].
public struct ReconnectBackoff: Sendable, Hashable {
    public var initial: Duration
    public var maximum: Duration
    public var jitter: Double

    public init(initial: Duration = .seconds(1), maximum: Duration = .seconds(30), jitter: Double = 0.5) {
        self.initial = initial
        self.maximum = maximum
        self.jitter = min(1, max(0, jitter))
    }

    /// The delay before attempt `attempt` (0 = the first retry); `random` in [0, 1).
    public func delay(attempt: Int, random: Double) -> Duration {
        let exponent = min(max(attempt, 0), 30)
        var base = initial * (1 << exponent)
        if base > maximum || base < .zero { base = maximum }
        let factor = 1 - jitter * min(1, max(0, random))
        return base * factor
    }
}
