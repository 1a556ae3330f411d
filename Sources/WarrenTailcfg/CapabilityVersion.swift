// The capability version: one integer the client bumps whenever it learns something new
// (tailscale/tailscale:tailcfg/tailcfg.go CurrentCapabilityVersion and its history list).

public typealias CapabilityVersion = Int

public enum CapabilityVersions {
    /// The newest version this code knows about (Tailscale 1.103, 2026-08).
    public static let current: CapabilityVersion = 145
    /// Headscale supports the last ten minor releases; 113 is Tailscale 1.80.
    public static let minimumSupported: CapabilityVersion = 113

    // Milestones a server has to respect.
    /// The client speaks ts2021 (Noise).
    public static let noise: CapabilityVersion = 28
    /// PeersChangedPatch with Key, DiscoKey, Online, LastSeen, KeyExpiry.
    public static let peersChangedPatchFull: CapabilityVersion = 36
    /// The client understands the early payload (EarlyNoise).
    public static let earlyNoise: CapabilityVersion = 49
    /// Streaming map requests carry no Hostinfo/Endpoints to act on.
    public static let streamingRequestsAreReadOnly: CapabilityVersion = 68
    /// MapResponse.PacketFilters (named incremental filters).
    public static let packetFilters: CapabilityVersion = 81
    /// Node.HomeDERP instead of the legacy "127.3.3.40:<region>" DERP string.
    public static let homeDERP: CapabilityVersion = 111
    /// A nil Node.AllowedIPs means "same as Addresses".
    public static let nilAllowedIPsMeansAddresses: CapabilityVersion = 112
}

/// The fake IP of the legacy Node.DERP string: "127.3.3.40:<region id>".
public enum LegacyDERP {
    public static let magicIP = "127.3.3.40"
    public static func string(region: Int) -> String { "\(magicIP):\(region)" }
}
