// Peer patches (coming online, going offline, last seen, endpoints, disco key, home relay, capability version) go to
// the streams in batches: every patch made meanwhile is merged per node, and each open stream gets one message with
// all of them. So a mass reconnect (a restart of the server: N streams opening at once) costs each stream one
// message carrying everyone's online state, instead of N-1 messages per stream; N(N-1)/2 patches in all before.
//
// When a batch goes out:
// - a batch with nothing urgent in it (coming online, last seen, capability version) waits `map_update_interval`,
//   the same interval the stream writers pace by, so it adds at most one interval to what pacing already allowed;
//   with many streams open it waits 100 µs per online node if that is longer (1 s at 10,000 nodes);
// - a batch with an urgent patch (what lets peers reach a node: its endpoints, disco key or home relay; and its going
//   offline, which clients act on: they leave an offline exit node, and the route failover's order depends on it)
//   goes as soon as the engine is free (a task queued on the actor), and passes the writers' pacing;
// - any other message about peers (a new or rewritten entry, a removal, routers, policy results) first sends the
//   batch, so every stream sees the changes in the order they happened.
//
// A stream opening gets everyone's online state in its full map; a batch skips the streams that opened after its
// last patch was made. A patch goes only to the streams that hold the peer (``Session/knownPeers``), as the client
// would ignore the others (tailscale's controlclient applies PeersChangedPatch only to peers it has) and they must not
// learn of nodes the policy hides.

import WarrenTailcfg

/// The patches waiting to be sent, merged per node.
struct PeerChangeBatch {
    var patches: [Int64: PeerChange] = [:]
    /// One of `patches` must not wait for the pacing interval.
    var urgent = false
    /// Counts patches made (a session notes it when its full map is built).
    var sequence = 0
    /// `sequence` at the newest of `patches`.
    var newest = 0
    /// The task that will send the batch, and whether it is the immediate one.
    var flush: Task<Void, Never>?
    var flushIsImmediate = false
}

extension ControlEngine {
    /// Whether a patch carries something a peer needs at once (see the top of this file).
    static func isUrgent(_ patch: PeerChange) -> Bool {
        patch.endpoints != nil || patch.discoKey != nil || patch.derpRegion != nil || patch.online == false
            || patch.key != nil || patch.keyExpiry != nil
    }

    /// Adds a patch to the batch and makes sure a send is scheduled.
    func enqueuePeerChange(_ patch: PeerChange) {
        peerChangeBatch.sequence += 1
        peerChangeBatch.newest = peerChangeBatch.sequence
        let id = patch.nodeID
        if let earlier = peerChangeBatch.patches[id] {
            var merged = MapUpdateMerger.merge(earlier, patch)
            // Back online: a last-seen time from the going offline no longer applies.
            if patch.online == true, patch.lastSeen == nil { merged.lastSeen = nil }
            peerChangeBatch.patches[id] = merged
        } else {
            peerChangeBatch.patches[id] = patch
        }
        let urgent = Self.isUrgent(patch)
        if urgent { peerChangeBatch.urgent = true }
        if urgent || configuration.mapUpdateInterval <= .zero {
            guard !peerChangeBatch.flushIsImmediate else { return }
            peerChangeBatch.flush?.cancel()
            peerChangeBatch.flushIsImmediate = true
            peerChangeBatch.flush = Task { [weak self] in await self?.flushPeerChanges() }
        } else if peerChangeBatch.flush == nil {
            // A batch costs one message per open stream: with many streams it waits longer (100 µs per node online,
            // 1 s at 10,000), so that while streams keep opening the batches cost a bounded share of the CPU, not one
            // message per stream per interval.
            let interval = max(configuration.mapUpdateInterval, .microseconds(100 * sessions.count))
            peerChangeBatch.flush = Task { [weak self] in
                try? await Task.sleep(for: interval)
                guard !Task.isCancelled else { return }
                await self?.flushPeerChanges()
            }
        }
    }

    /// Patches waiting in the batch (tests).
    var batchedPeerChangeCount: Int { peerChangeBatch.patches.count }

    /// Sends the batch now: one message to each open stream that holds one of its peers and opened before its
    /// newest patch. Returns the number of messages queued.
    @discardableResult
    func flushPeerChanges() -> Int {
        let batch = peerChangeBatch
        peerChangeBatch.patches = [:]
        peerChangeBatch.urgent = false
        peerChangeBatch.flush?.cancel()
        peerChangeBatch.flush = nil
        peerChangeBatch.flushIsImmediate = false
        // Nodes deleted meanwhile were already removed from every map.
        let patches = batch.patches.keys.sorted().compactMap { id in nodes[id] != nil ? batch.patches[id] : nil }
        guard !patches.isEmpty else { return 0 }
        var all = MapResponse()
        all.peersChangedPatch = patches
        let shared = SharedMapMessage(all)
        var sent = 0
        for (viewerID, viewerSessions) in sessions {
            for session in viewerSessions.values where session.openedAt < batch.newest {
                // Usually the session holds every peer in the batch, and gets the message every stream gets.
                var known = 0
                for patch in patches where patch.nodeID == viewerID || session.knownPeers.contains(patch.nodeID) {
                    known += 1
                }
                if known == patches.count {
                    session.outbox.yield(shared, urgent: batch.urgent)
                } else if known > 0 {
                    var own = MapResponse()
                    own.peersChangedPatch = patches.filter { session.knownPeers.contains($0.nodeID) }
                    guard own.peersChangedPatch?.isEmpty == false else { continue }
                    session.outbox.yield(own, urgent: batch.urgent)
                } else {
                    continue
                }
                sent += 1
            }
        }
        statistics.incrementalUpdatesSent += sent
        return sent
    }
}
