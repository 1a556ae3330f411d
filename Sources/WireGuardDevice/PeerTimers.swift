import WireGuardProtocol

/// The per-peer timers of WireGuard (paper section 6.2-6.5, the kernel's timers.c), as deadlines
/// that events set and clear; `expired(now:)` reports which fired. Pure: time and jitter are passed in.
///
/// | timer | armed by | fires after | action |
/// |---|---|---|---|
/// | retransmitHandshake | an initiation sent | REKEY_TIMEOUT + jitter | send a new initiation (at most MAX attempts) |
/// | sendKeepalive | a data packet received (none pending) | KEEPALIVE_TIMEOUT | send a keepalive |
/// | newHandshake | a data packet sent (none pending) | KEEPALIVE + REKEY_TIMEOUT + jitter | initiate a handshake |
/// | zeroKeys | a session derived | 3 × REJECT_AFTER_TIME | forget every keypair |
/// | persistentKeepalive | any authenticated packet in or out | the configured interval | send a keepalive |
struct PeerTimers {
    /// REKEY_ATTEMPT_TIME / REKEY_TIMEOUT: initiations sent before giving up.
    static let maximumHandshakeAttempts = 18

    struct Actions: OptionSet {
        let rawValue: UInt8
        static let retransmitHandshake = Actions(rawValue: 1)
        static let giveUpHandshake = Actions(rawValue: 2)
        static let sendKeepalive = Actions(rawValue: 4)
        static let newHandshake = Actions(rawValue: 8)
        static let zeroKeys = Actions(rawValue: 16)
        static let persistentKeepalive = Actions(rawValue: 32)
    }

    typealias Instant = ContinuousClock.Instant

    private(set) var retransmitHandshake: Instant?
    private(set) var sendKeepalive: Instant?
    private(set) var newHandshake: Instant?
    private(set) var zeroKeys: Instant?
    private(set) var persistentKeepalive: Instant?
    /// Whether another keepalive is owed after the pending one (data kept arriving).
    private var keepaliveOwed = false
    private(set) var handshakeAttempts = 0
    /// Seconds; 0 = off.
    var persistentKeepaliveInterval: UInt16 = 0

    /// The earliest armed deadline.
    var nextDeadline: Instant? {
        [retransmitHandshake, sendKeepalive, newHandshake, zeroKeys, persistentKeepalive].compactMap { $0 }.min()
    }

    mutating func dataSent(now: Instant, jitter: Duration) {
        if newHandshake == nil {
            newHandshake = now + WireGuardConstants.keepaliveTimeout + WireGuardConstants.rekeyTimeout + jitter
        }
    }

    mutating func dataReceived(now: Instant) {
        if sendKeepalive == nil {
            sendKeepalive = now + WireGuardConstants.keepaliveTimeout
        } else {
            keepaliveOwed = true
        }
    }

    mutating func anyAuthenticatedPacketSent() { sendKeepalive = nil }

    mutating func anyAuthenticatedPacketReceived() { newHandshake = nil }

    mutating func anyAuthenticatedPacketTraversal(now: Instant) {
        if persistentKeepaliveInterval > 0 {
            persistentKeepalive = now + .seconds(Int(persistentKeepaliveInterval))
        }
    }

    /// An initiation went out (first or retransmitted).
    mutating func handshakeInitiated(now: Instant, jitter: Duration) {
        retransmitHandshake = now + WireGuardConstants.rekeyTimeout + jitter
    }

    mutating func handshakeComplete() {
        retransmitHandshake = nil
        handshakeAttempts = 0
    }

    mutating func sessionDerived(now: Instant) {
        zeroKeys = now + WireGuardConstants.rejectAfterTime * 3
    }

    /// Interval changed: arm or clear the persistent keepalive.
    mutating func setPersistentKeepalive(_ seconds: UInt16, now: Instant) {
        persistentKeepaliveInterval = seconds
        persistentKeepalive = seconds > 0 ? now + .seconds(Int(seconds)) : nil
    }

    /// Forget everything (peer removed or keys zeroed by configuration).
    mutating func stopAll() {
        let interval = persistentKeepaliveInterval
        self = PeerTimers()
        persistentKeepaliveInterval = interval
    }

    /// Clears the timers that fired at `now` and says what to do.
    mutating func expired(now: Instant) -> Actions {
        var actions: Actions = []
        if let t = retransmitHandshake, t <= now {
            retransmitHandshake = nil
            if handshakeAttempts >= Self.maximumHandshakeAttempts {
                actions.insert(.giveUpHandshake)
                handshakeAttempts = 0
                newHandshake = nil
                if zeroKeys == nil { zeroKeys = now + WireGuardConstants.rejectAfterTime * 3 }
            } else {
                handshakeAttempts += 1
                actions.insert(.retransmitHandshake)
            }
        }
        if let t = sendKeepalive, t <= now {
            sendKeepalive = nil
            actions.insert(.sendKeepalive)
            if keepaliveOwed {
                keepaliveOwed = false
                sendKeepalive = now + WireGuardConstants.keepaliveTimeout
            }
        }
        if let t = newHandshake, t <= now {
            newHandshake = nil
            actions.insert(.newHandshake)
        }
        if let t = zeroKeys, t <= now {
            zeroKeys = nil
            actions.insert(.zeroKeys)
        }
        if let t = persistentKeepalive, t <= now {
            persistentKeepalive = nil
            actions.insert(.persistentKeepalive)
        }
        return actions
    }
}
