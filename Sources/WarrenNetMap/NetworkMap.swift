// The network map: the whole state a node knows about its tailnet, folded from the stream of
// MapResponse messages (the first one full, later ones deltas) as Tailscale's map session does.
// Pure: the caller passes the current time for the one delta that needs it (PeerSeenChange).

import TailscaleKeys
import WarrenPacket
import WarrenTailcfg

/// The node's view of its tailnet after the messages applied so far.
public struct NetworkMap: Hashable, Sendable {
    /// This node, as control describes it (nil until the first message carries it).
    public private(set) var selfNode: Node?
    /// Peers sorted by node ID. Legacy "127.3.3.40:N" DERP strings are read into ``Node/homeDERP``.
    public private(set) var peers: [Node] = []
    public private(set) var derpMap: DERPMap?
    public private(set) var dnsConfig: DNSConfig?
    /// The tailnet's MagicDNS domain ("" until sent).
    public private(set) var domain: String = ""
    /// The named packet filters (the legacy single `PacketFilter` is the name "base").
    public private(set) var namedPacketFilters: [String: [FilterRule]] = [:]
    /// Whether any packet filter has arrived. Before one does, nothing inbound is allowed.
    public private(set) var hasPacketFilter = false
    /// User profiles by user ID, merged across messages (control sends only new or changed ones).
    public private(set) var userProfiles: [Int64: UserProfile] = [:]
    /// The SSH policy as sent (nil: none yet).
    public private(set) var sshPolicy: JSONValue?
    public private(set) var collectServices = false
    /// Control's clock at the last message that carried it.
    public private(set) var controlTime: TailcfgTime?

    // Lookups, rebuilt whenever the peers change.
    private var indexByID: [Int64: Int] = [:]
    private var idByKey: [NodePublic: Int64] = [:]
    private var idByAddress: [IPAddress: Int64] = [:]

    public init() {}

    /// The map after applying `responses` in order to an empty map.
    public init(_ responses: [MapResponse], now: TailcfgTime) {
        for response in responses { apply(response, now: now) }
    }

    // MARK: Derived views and lookups

    /// The packet filter: every named filter's rules, concatenated in name order (Tailscale's order).
    /// Empty means "allow nothing inbound", as does a map without any filter yet.
    public var packetFilterRules: [FilterRule] {
        namedPacketFilters.keys.sorted().flatMap { namedPacketFilters[$0]! }
    }

    public func peer(id: Int64) -> Node? { indexByID[id].map { peers[$0] } }

    public func peer(nodeKey: NodePublic) -> Node? { idByKey[nodeKey].flatMap(peer(id:)) }

    /// The peer one of whose Tailscale addresses (``Node/addresses``, not routes) is `address`.
    public func peer(address: IPAddress) -> Node? { idByAddress[address].flatMap(peer(id:)) }

    /// Peers announcing `discoKey` (more than one during a node-key rotation).
    public func peers(discoKey: DiscoPublic) -> [Node] { peers.filter { $0.discoKey == discoKey } }

    /// The node (self or a peer) owning the Tailscale address `address`, for WhoIs.
    public func node(address: IPAddress) -> Node? {
        if let me = selfNode, (me.addresses ?? []).contains(where: { $0.isSingleAddress && $0.address == address }) {
            return me
        }
        return peer(address: address)
    }

    /// The profile of the user owning `node`.
    public func userProfile(of node: Node) -> UserProfile? { userProfiles[node.user] }

    // MARK: Applying messages

    /// Folds one message of the map stream in.
    ///
    /// - Keep-alives change nothing.
    /// - `Node`, `DERPMap`, `DNSConfig`, `SSHPolicy`, `CollectServices`, `ControlTime`: nil is unchanged;
    ///   `Domain`: empty is unchanged.
    /// - A non-empty `Peers` replaces the whole peer list, and then the peer deltas of the same
    ///   message are not read. Otherwise, in this order: `PeersRemoved`, `PeersChanged` (whole
    ///   nodes, upserted), `PeerSeenChange` (true: last seen `now`; false: unknown), `OnlineChange`,
    ///   `PeersChangedPatch` (only the fields present; patches for unknown IDs are dropped).
    /// - `PacketFilter` non-nil sets the filter named "base" (empty: block all); `PacketFilters`
    ///   sets or (with null) deletes named filters, and `"*": null` first clears them all.
    /// - `UserProfiles` are merged by ID.
    public mutating func apply(_ response: MapResponse, now: TailcfgTime) {
        if response.keepAlive == true { return }
        if let node = response.node { selfNode = Self.normalized(node) }
        applyPeers(response, now: now)
        if let map = response.derpMap { derpMap = map }
        if let dns = response.dnsConfig { dnsConfig = dns }
        if let domain = response.domain, !domain.isEmpty { self.domain = domain }
        if let base = response.packetFilter {
            namedPacketFilters["base"] = base
            hasPacketFilter = true
        }
        if let named = response.packetFilters {
            hasPacketFilter = true
            if let clear = named["*"], clear == nil { namedPacketFilters = [:] }
            for (name, rules) in named where name != "*" {
                namedPacketFilters[name] = rules
            }
        }
        for profile in response.userProfiles ?? [] { userProfiles[profile.id] = profile }
        if let ssh = response.sshPolicy { sshPolicy = ssh }
        if let collect = response.collectServices { collectServices = collect }
        if let time = response.controlTime { controlTime = time }
    }

    /// This map after `response`.
    public func applying(_ response: MapResponse, now: TailcfgTime) -> NetworkMap {
        var copy = self
        copy.apply(response, now: now)
        return copy
    }

    private mutating func applyPeers(_ response: MapResponse, now: TailcfgTime) {
        if let full = response.peers, !full.isEmpty {
            var byID: [Int64: Node] = [:]
            for node in full { byID[node.id] = Self.normalized(node) }
            setPeers(byID)
            return
        }
        let hasDeltas = !(response.peersRemoved ?? []).isEmpty || !(response.peersChanged ?? []).isEmpty
            || !(response.peerSeenChange ?? [:]).isEmpty || !(response.onlineChange ?? [:]).isEmpty
            || !(response.peersChangedPatch ?? []).isEmpty
        guard hasDeltas else { return }

        var byID: [Int64: Node] = [:]
        byID.reserveCapacity(peers.count)
        for node in peers { byID[node.id] = node }
        for id in response.peersRemoved ?? [] { byID[id] = nil }
        for node in response.peersChanged ?? [] { byID[node.id] = Self.normalized(node) }
        for (key, seen) in response.peerSeenChange ?? [:] {
            guard let id = Int64(key), byID[id] != nil else { continue }
            byID[id]!.lastSeen = seen ? now : nil
        }
        for (key, online) in response.onlineChange ?? [:] {
            guard let id = Int64(key), byID[id] != nil else { continue }
            byID[id]!.online = online
        }
        for change in response.peersChangedPatch ?? [] {
            guard var node = byID[change.nodeID] else { continue }
            Self.patch(&node, with: change)
            byID[change.nodeID] = node
        }
        setPeers(byID)
    }

    /// Applies the fields present in `change` (a zero DERP region or capability version is absent).
    static func patch(_ node: inout Node, with change: PeerChange) {
        if let region = change.derpRegion, region != 0 {
            node.homeDERP = region
            node.legacyDERP = nil
        }
        if let cap = change.cap, cap != 0 { node.cap = cap }
        if let capMap = change.capMap { node.capMap = capMap }
        if let endpoints = change.endpoints { node.endpoints = endpoints }
        if let key = change.key { node.key = key }
        if let signature = change.keySignature { node.keySignature = signature }
        if let disco = change.discoKey { node.discoKey = disco }
        if let online = change.online { node.online = online }
        if let seen = change.lastSeen { node.lastSeen = seen }
        if let expiry = change.keyExpiry { node.keyExpiry = expiry }
    }

    /// The legacy DERP string "127.3.3.40:N" read into `homeDERP` (when that is absent) and dropped,
    /// as Tailscale upgrades nodes it receives.
    static func normalized(_ node: Node) -> Node {
        var node = node
        if let legacy = node.legacyDERP {
            if node.homeDERP == nil || node.homeDERP == 0, let region = Self.legacyDERPRegion(legacy) {
                node.homeDERP = region
            }
            node.legacyDERP = nil
        }
        return node
    }

    /// The region of a legacy DERP string "127.3.3.40:<region>"; nil for anything else.
    public static func legacyDERPRegion(_ text: String) -> Int? {
        let prefix = "127.3.3.40:"
        guard text.hasPrefix(prefix), let region = Int(text.dropFirst(prefix.count)), region > 0 else { return nil }
        return region
    }

    private mutating func setPeers(_ byID: [Int64: Node]) {
        peers = byID.values.sorted { $0.id < $1.id }
        indexByID = [:]
        idByKey = [:]
        idByAddress = [:]
        indexByID.reserveCapacity(peers.count)
        for (index, node) in peers.enumerated() {
            indexByID[node.id] = index
            if !node.key.isZero, idByKey[node.key] == nil { idByKey[node.key] = node.id }
            for prefix in node.addresses ?? [] where prefix.isSingleAddress {
                if idByAddress[prefix.address] == nil { idByAddress[prefix.address] = node.id }
            }
        }
    }
}
