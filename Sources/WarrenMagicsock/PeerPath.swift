// How magicsock reaches one peer: over DERP at first, and over a direct UDP path once a disco pong
// proves one (tailscale/tailscale:wgengine/magicsock/endpoint.go describes the same ideas: candidate
// addresses from control and from call-me-maybe, pings to each, the best pong wins, heartbeats keep
// it trusted, and the path falls back to DERP when pongs stop).
//
// Pure: time comes in as `now` (a monotonic duration since the socket started), randomness from the
// caller. `Magicsock` holds one of these per peer under its lock and performs what it returns.

import TailscaleKeys
import WarrenPacket
import WarrenTailcfg

/// Timing constants, as Tailscale's magicsock uses them.
public enum PathTiming {
    /// A direct path stays trusted this long after its last pong.
    public static let trustDuration: Duration = .milliseconds(6_500)
    /// Heartbeat pings to the best path while the peer is active.
    public static let heartbeatInterval: Duration = .seconds(3)
    /// A ping with no pong after this is forgotten.
    public static let pingTimeout: Duration = .seconds(5)
    /// At most one ping to the same address per this interval (except heartbeats and forced pings).
    public static let minimumPingInterval: Duration = .seconds(5)
    /// A peer that sent or received within this is active (heartbeats run).
    public static let sessionActiveTimeout: Duration = .seconds(45)
    /// Even with a direct path, look for a better one this often.
    public static let upgradeInterval: Duration = .seconds(60)
    /// Addresses learned from call-me-maybe are kept this long.
    public static let callMeMaybeLifetime: Duration = .seconds(60)
    /// Pending pings kept per peer (older ones are dropped).
    public static let maximumPendingPings = 64
}

/// Why a ping was sent.
public enum PingPurpose: Hashable, Sendable {
    /// Path discovery (and hole punching).
    case discovery
    /// Keeping the best path trusted.
    case heartbeat
    /// Asked for by the user (`warren ping`); the id matches the request.
    case user(UInt64)
}

/// One ping in flight.
public struct PendingPing: Hashable, Sendable {
    public var txID: [UInt8]
    /// Where it went: a UDP address, or nil for DERP.
    public var destination: AddrPort?
    public var sentAt: Duration
    public var purpose: PingPurpose
}

/// The state of the path to one peer.
public struct PeerPath: Sendable {
    public let nodeKey: NodePublic
    public var discoKey: DiscoPublic?
    /// The peer's home DERP region (0: unknown).
    public var homeDERP: Int
    /// Addresses from the network map (Node.Endpoints).
    public var controlEndpoints: [AddrPort] = []
    /// Addresses from call-me-maybe messages and pings received, with when they expire.
    public var learnedEndpoints: [AddrPort: Duration] = [:]
    /// The direct path in use, its round-trip time and until when it is trusted.
    public private(set) var bestAddress: AddrPort?
    public private(set) var bestLatency: Duration = .zero
    public private(set) var trustedUntil: Duration = .zero
    /// The last time an address was pinged.
    public private(set) var lastPing: [AddrPort: Duration] = [:]
    public private(set) var pending: [PendingPing] = []
    /// The last full discovery (pings to every candidate and a call-me-maybe).
    public private(set) var lastDiscovery: Duration?
    public private(set) var lastHeartbeat: Duration = .zero
    /// The last time data went to or came from the peer.
    public var lastActivity: Duration?
    /// The last pong heard and over which path.
    public private(set) var lastPong: (from: AddrPort?, latency: Duration, at: Duration)?
    /// When the best address last answered.
    public private(set) var lastBestPong: Duration = .zero

    public init(nodeKey: NodePublic, discoKey: DiscoPublic?, homeDERP: Int) {
        self.nodeKey = nodeKey
        self.discoKey = discoKey
        self.homeDERP = homeDERP
    }

    /// Every address worth pinging now.
    public func candidates(now: Duration) -> [AddrPort] {
        var seen = Set<AddrPort>()
        var out: [AddrPort] = []
        for a in controlEndpoints where seen.insert(a).inserted { out.append(a) }
        for (a, expiry) in learnedEndpoints.sorted(by: { $0.key.description < $1.key.description })
        where expiry > now && seen.insert(a).inserted { out.append(a) }
        return out
    }

    /// Whether the direct path may carry data now.
    public func hasTrustedPath(now: Duration) -> Bool { bestAddress != nil && now < trustedUntil }

    /// Where data to the peer goes now.
    public struct SendRoute: Equatable, Sendable {
        /// A direct path, when one is trusted (or still worth trying beside DERP).
        public var udp: AddrPort?
        /// Whether to send over DERP too.
        public var derp: Bool

        public init(udp: AddrPort?, derp: Bool) {
            self.udp = udp
            self.derp = derp
        }
    }

    public func route(now: Duration) -> SendRoute {
        if let best = bestAddress, now < trustedUntil { return SendRoute(udp: best, derp: false) }
        // Untrusted: DERP carries it; a path that was good until recently gets a copy too, so that
        // data flows the moment the peer answers there again.
        return SendRoute(udp: bestAddress, derp: true)
    }

    /// What to do after data was sent to (or received from) the peer at `now`.
    public struct Work: Equatable, Sendable {
        /// Addresses to ping, with their purpose.
        public var pings: [(AddrPort, PingPurpose)] = []
        /// Whether to send our endpoints over DERP (call-me-maybe).
        public var callMeMaybe = false

        public var isEmpty: Bool { pings.isEmpty && !callMeMaybe }

        public static func == (a: Work, b: Work) -> Bool {
            a.callMeMaybe == b.callMeMaybe && a.pings.map(\.0) == b.pings.map(\.0) && a.pings.map(\.1) == b.pings.map(\.1)
        }
    }

    /// Decides what to ping, given activity at `now`. `force` starts a full discovery whatever the
    /// timers say (the endpoints changed, or a call-me-maybe arrived).
    public mutating func work(now: Duration, force: Bool = false) -> Work {
        guard discoKey != nil else { return Work() }
        expirePings(now: now)
        var work = Work()
        let active = lastActivity.map { now - $0 < PathTiming.sessionActiveTimeout } ?? false
        let trusted = hasTrustedPath(now: now)
        let discoveryDue: Bool
        if force {
            discoveryDue = true
        } else if !trusted {
            discoveryDue = lastDiscovery.map { now - $0 >= PathTiming.minimumPingInterval } ?? true
        } else {
            discoveryDue = lastDiscovery.map { now - $0 >= PathTiming.upgradeInterval } ?? true
        }
        if discoveryDue && (active || force) {
            lastDiscovery = now
            for a in candidates(now: now) {
                if !force, let last = lastPing[a], now - last < PathTiming.minimumPingInterval { continue }
                work.pings.append((a, .discovery))
            }
            work.callMeMaybe = true
        } else if let best = bestAddress, active, now - lastHeartbeat >= PathTiming.heartbeatInterval,
                  !work.pings.contains(where: { $0.0 == best }) {
            work.pings.append((best, .heartbeat))
        }
        if work.pings.contains(where: { $0.0 == bestAddress }) { lastHeartbeat = now }
        return work
    }

    /// Records a ping sent.
    public mutating func notePingSent(txID: [UInt8], to destination: AddrPort?, purpose: PingPurpose, now: Duration) {
        if let destination { lastPing[destination] = now }
        pending.append(PendingPing(txID: txID, destination: destination, sentAt: now, purpose: purpose))
        if pending.count > PathTiming.maximumPendingPings { pending.removeFirst(pending.count - PathTiming.maximumPendingPings) }
    }

    /// A pong arrived from `source` (nil: over DERP) for `txID`. Returns the ping it answers (nil:
    /// unknown or answered from an address other than the one pinged, which proves nothing).
    public mutating func handlePong(txID: [UInt8], from source: AddrPort?, now: Duration) -> PendingPing? {
        expirePings(now: now)
        guard let index = pending.firstIndex(where: { $0.txID == txID }) else { return nil }
        let ping = pending.remove(at: index)
        guard ping.destination == source else { return nil }
        let latency = now - ping.sentAt
        lastPong = (source, latency, now)
        guard let source else { return ping }
        // A better path (or the current one, confirmed) becomes the best; a path much like the current
        // one does not displace it (no flapping between two equal paths). Another address that answers
        // while the best one missed its last heartbeat wins at once: the peer's NAT (or the peer) moved,
        // and waiting for the old path's trust to run out would leave traffic on a dead path.
        let grace = max(bestLatency * 2, .milliseconds(200))
        let bestMissedAPing = pending.contains {
            $0.destination == bestAddress && $0.sentAt <= ping.sentAt && now - $0.sentAt > grace
        }
        let bestSilent = bestAddress != nil && bestAddress != source
            && (bestMissedAPing || now - lastBestPong >= PathTiming.heartbeatInterval + .seconds(2))
        if bestAddress == nil || bestAddress == source || now >= trustedUntil || betterThanCurrent(latency) || bestSilent {
            bestAddress = source
            bestLatency = latency
        }
        if bestAddress == source {
            trustedUntil = now + PathTiming.trustDuration
            lastBestPong = now
        }
        return ping
    }

    private func betterThanCurrent(_ latency: Duration) -> Bool {
        // Tailscale switches when the new path is clearly better; 1 ms and 10% is the margin here.
        latency + .milliseconds(1) < bestLatency && latency * 10 < bestLatency * 9
    }

    /// The peer pinged us from `source` (so it is one of its addresses).
    public mutating func notePingFrom(_ source: AddrPort, now: Duration) {
        learnedEndpoints[source] = now + PathTiming.callMeMaybeLifetime
    }

    /// A call-me-maybe listed `endpoints`.
    public mutating func noteCallMeMaybe(_ endpoints: [AddrPort], now: Duration) {
        learnedEndpoints = learnedEndpoints.filter { $0.value > now }
        for e in endpoints { learnedEndpoints[e] = now + PathTiming.callMeMaybeLifetime }
    }

    /// Forgets the direct path (the network changed under us): traffic goes over DERP until a new
    /// pong.
    public mutating func resetPath() {
        lastBestPong = .zero
        bestAddress = nil
        bestLatency = .zero
        trustedUntil = .zero
        lastPing = [:]
        lastDiscovery = nil
    }

    private mutating func expirePings(now: Duration) {
        pending.removeAll { now - $0.sentAt > PathTiming.pingTimeout }
    }
}
