// Merging the incremental map messages that piled up for one session into fewer messages that leave the
// client in the same state. When many nodes come online at once (a restart of the server, a burst of
// joins), every session is sent one small message per change; a writer that is behind would encode,
// compress, seal and send each one. Merged, a burst of N changes costs each session one message.
//
// A Tailscale client applies one MapResponse in this order (tailscale/tailscale:
// control/controlclient/map.go, updatePeersStateFromResponse): PeersRemoved, then PeersChanged (upserts),
// then PeersChangedPatch (only to peers it holds); DERPRegion and Cap patch only when non-zero, every
// other patch field when present. A message with KeepAlive set is not applied at all. The merge keeps,
// for each peer, the net effect of the messages in order:
//
//   removed                      -> removed
//   upsert (after anything)      -> that upsert (earlier patches are older than it)
//   patch after an upsert        -> the upsert plus the patch
//   patch after a patch          -> one patch, the later fields winning
//   patch after a removal        -> dropped (the client ignores patches to peers it does not hold)
//
// Only messages made of the fields below are merged; any other message (a full map, DNS or DERP
// changes, SSH policy, named filters, ...) is passed through unchanged and in order, so nothing is
// reordered across it.

import WarrenTailcfg

struct MapUpdateMerger {
    private struct PeerEntry {
        var removed = false
        var upsert: Node?
        var patch: PeerChange?
    }

    private var node: Node?
    private var peers: [Int64: PeerEntry] = [:]
    private var packetFilter: [FilterRule]?
    private var profiles: [Int64: UserProfile] = [:]
    private var controlTime: TailcfgTime?
    private var onlyKeepAlives = true
    private var first: MapResponse?
    private(set) var count = 0

    init() {}

    /// Whether `message` carries only fields this merger knows how to combine.
    static func canMerge(_ message: MapResponse) -> Bool {
        var rest = message
        rest.node = nil
        rest.peersChanged = nil
        rest.peersRemoved = nil
        rest.peersChangedPatch = nil
        rest.packetFilter = nil
        rest.userProfiles = nil
        rest.keepAlive = nil
        rest.controlTime = nil
        return rest == MapResponse()
    }

    /// Adds the next message (which must pass ``canMerge(_:)``).
    mutating func add(_ message: MapResponse) {
        count += 1
        if count == 1 { first = message }
        if message.controlTime != nil { controlTime = message.controlTime }
        // A keep-alive is not applied by the client: only its control time counts.
        if message.keepAlive == true { return }
        if message.node != nil || message.peersChanged != nil || message.peersRemoved != nil
            || message.peersChangedPatch != nil || message.packetFilter != nil || message.userProfiles != nil {
            onlyKeepAlives = false
        }
        if let node = message.node { self.node = node }
        for id in message.peersRemoved ?? [] {
            peers[id] = PeerEntry(removed: true)
        }
        for node in message.peersChanged ?? [] {
            peers[node.id] = PeerEntry(upsert: node)
        }
        for change in message.peersChangedPatch ?? [] {
            var entry = peers[change.nodeID] ?? PeerEntry()
            if entry.removed && entry.upsert == nil { continue }
            entry.patch = entry.patch.map { Self.merge($0, change) } ?? change
            peers[change.nodeID] = entry
        }
        if let filter = message.packetFilter { packetFilter = filter }
        for profile in message.userProfiles ?? [] { profiles[profile.id] = profile }
    }

    /// The one message equivalent to everything added (nil if nothing was).
    var message: MapResponse? {
        guard count > 0 else { return nil }
        // One message is sent as it came.
        if count == 1 { return first }
        var out = MapResponse()
        out.controlTime = controlTime
        if onlyKeepAlives {
            out.keepAlive = true
            return out
        }
        out.node = node
        var removed = [Int64](), changed = [Node](), patches = [PeerChange]()
        for id in peers.keys.sorted() {
            guard let entry = peers[id] else { continue }
            if let upsert = entry.upsert {
                changed.append(upsert)
            } else if entry.removed {
                removed.append(id)
            }
            if let patch = entry.patch { patches.append(patch) }
        }
        out.peersRemoved = removed.isEmpty ? nil : removed
        out.peersChanged = changed.isEmpty ? nil : changed
        out.peersChangedPatch = patches.isEmpty ? nil : patches
        out.packetFilter = packetFilter
        out.userProfiles = profiles.isEmpty ? nil : profiles.keys.sorted().compactMap { profiles[$0] }
        return out
    }

    /// `later` applied on top of `earlier`, as the client would apply the two in turn.
    static func merge(_ earlier: PeerChange, _ later: PeerChange) -> PeerChange {
        var out = earlier
        if let v = later.derpRegion, v != 0 { out.derpRegion = v }
        if let v = later.cap, v != 0 { out.cap = v }
        if let v = later.capMap { out.capMap = v }
        if let v = later.endpoints { out.endpoints = v }
        if let v = later.key { out.key = v }
        if let v = later.keySignature { out.keySignature = v }
        if let v = later.discoKey { out.discoKey = v }
        if let v = later.online { out.online = v }
        if let v = later.lastSeen { out.lastSeen = v }
        if let v = later.keyExpiry { out.keyExpiry = v }
        return out
    }

    /// Merges each run of mergeable messages into one; other messages stay as they are, in order.
    static func coalesce(_ messages: [MapResponse]) -> [MapResponse] {
        guard messages.count > 1 else { return messages }
        var out = [MapResponse]()
        var run = MapUpdateMerger()
        for message in messages {
            if canMerge(message) {
                run.add(message)
            } else {
                if let merged = run.message { out.append(merged) }
                run = MapUpdateMerger()
                out.append(message)
            }
        }
        if let merged = run.message { out.append(merged) }
        return out
    }
}
