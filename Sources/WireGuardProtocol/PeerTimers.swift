// The five per-peer timers of WireGuard (paper section 6; wireguard-go device/timers.go), as a value:
// events set or cancel deadlines, `expire(now:)` reports the ones that have passed, and
// `nextDeadline` says when to call it again. No threads, no sleeping.
//
//   timer                 armed by                                  fires ->
//   retransmitHandshake   handshake initiated (5 s + jitter)         retry, or give up after 18 retries
//   sendKeepalive         data received, if not armed (10 s)         keepalive
//   newHandshake          data sent, if not armed (15 s + jitter)    new handshake (the peer went quiet)
//   zeroKeyMaterial       session derived, give-up (540 s)           erase all keys
//   persistentKeepalive   any authenticated packet in or out         keepalive
//
// Cancelled by: any authenticated packet sent -> sendKeepalive; any authenticated packet received ->
// newHandshake; handshake complete -> retransmitHandshake.

/// The highest jitter added to REKEY_TIMEOUT, in milliseconds (wireguard-go `RekeyTimeoutJitterMaxMs`).
public let rekeyTimeoutJitterMaxMilliseconds = 334

/// Handshake retransmissions before giving up: REKEY_ATTEMPT_TIME / REKEY_TIMEOUT.
public let maximumHandshakeRetries = 18

/// What an expired timer asks for.
public enum TimerEvent: Hashable, Sendable {
    /// No response to our initiation within REKEY_TIMEOUT: send a new one (a retry).
    case retransmitHandshake
    /// REKEY_ATTEMPT_TIME of retries went unanswered: stop, drop the packets waiting for a session.
    case handshakeGaveUp
    /// We received data and sent nothing back for KEEPALIVE_TIMEOUT: send a keepalive.
    case sendKeepalive
    /// We sent data and heard nothing back for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT: start a new handshake.
    case newHandshake
    /// No new session for 3 × REJECT_AFTER_TIME: erase every key of the peer.
    case zeroKeyMaterial
    /// The persistent keepalive interval passed without traffic: send a keepalive.
    case persistentKeepalive
}

/// The timers of one peer.
public struct PeerTimers: Sendable {
    public private(set) var retransmitHandshakeDeadline: ContinuousClock.Instant?
    public private(set) var sendKeepaliveDeadline: ContinuousClock.Instant?
    public private(set) var newHandshakeDeadline: ContinuousClock.Instant?
    public private(set) var zeroKeyMaterialDeadline: ContinuousClock.Instant?
    public private(set) var persistentKeepaliveDeadline: ContinuousClock.Instant?

    /// Retries of the current handshake so far.
    public private(set) var handshakeAttempts = 0
    var needAnotherKeepalive = false
    /// Whether the "about to expire" handshake of `keepKeyFreshReceiving` was already sent.
    public var sentLastMinuteHandshake = false
    /// Keepalive interval when traffic stops (nil or zero: off).
    public var persistentKeepaliveInterval: Duration?

    public init(persistentKeepaliveInterval: Duration? = nil) {
        self.persistentKeepaliveInterval = persistentKeepaliveInterval
    }

    static func jitter(using rng: inout some RandomNumberGenerator) -> Duration {
        .milliseconds(Int.random(in: 0..<rekeyTimeoutJitterMaxMilliseconds, using: &rng))
    }

    // MARK: Events

    /// After an authenticated data packet (not a keepalive) was sent.
    public mutating func dataSent(now: ContinuousClock.Instant, using rng: inout some RandomNumberGenerator) {
        if newHandshakeDeadline == nil {
            newHandshakeDeadline = now + WireGuardConstants.keepaliveTimeout + WireGuardConstants.rekeyTimeout
                + Self.jitter(using: &rng)
        }
    }

    /// After an authenticated data packet (not a keepalive) was received.
    public mutating func dataReceived(now: ContinuousClock.Instant) {
        if sendKeepaliveDeadline == nil {
            sendKeepaliveDeadline = now + WireGuardConstants.keepaliveTimeout
        } else {
            needAnotherKeepalive = true
        }
    }

    /// After any authenticated packet (handshake, data or keepalive) was sent.
    public mutating func anyAuthenticatedPacketSent() {
        sendKeepaliveDeadline = nil
    }

    /// After any authenticated packet (handshake, data or keepalive) was received.
    public mutating func anyAuthenticatedPacketReceived() {
        newHandshakeDeadline = nil
    }

    /// After a handshake initiation was sent.
    public mutating func handshakeInitiated(now: ContinuousClock.Instant, using rng: inout some RandomNumberGenerator) {
        retransmitHandshakeDeadline = now + WireGuardConstants.rekeyTimeout + Self.jitter(using: &rng)
    }

    /// After a response was consumed, or the first transport packet with a responder's new keypair arrived.
    public mutating func handshakeComplete() {
        retransmitHandshakeDeadline = nil
        handshakeAttempts = 0
        sentLastMinuteHandshake = false
    }

    /// After a new keypair was derived (either role).
    public mutating func sessionDerived(now: ContinuousClock.Instant) {
        zeroKeyMaterialDeadline = now + WireGuardConstants.rejectAfterTime * 3
    }

    /// Before any authenticated packet is sent and after one is received.
    public mutating func anyAuthenticatedPacketTraversal(now: ContinuousClock.Instant) {
        if let interval = persistentKeepaliveInterval, interval > .zero {
            persistentKeepaliveDeadline = now + interval
        }
    }

    /// Resets the retry count for a fresh (not retried) handshake.
    public mutating func resetHandshakeAttempts() {
        handshakeAttempts = 0
    }

    /// Cancels every timer (the peer or the device goes down).
    public mutating func stopAll() {
        retransmitHandshakeDeadline = nil
        sendKeepaliveDeadline = nil
        newHandshakeDeadline = nil
        zeroKeyMaterialDeadline = nil
        persistentKeepaliveDeadline = nil
        needAnotherKeepalive = false
    }

    // MARK: Expiry

    /// The earliest armed deadline: call `expire(now:)` then.
    public var nextDeadline: ContinuousClock.Instant? {
        [retransmitHandshakeDeadline, sendKeepaliveDeadline, newHandshakeDeadline, zeroKeyMaterialDeadline,
         persistentKeepaliveDeadline].compactMap { $0 }.min()
    }

    /// Fires every timer whose deadline is at or before `now`, in deadline order, and returns what
    /// each asks for. Timers re-armed by the expiry itself (another keepalive) are not fired again
    /// in the same call.
    public mutating func expire(now: ContinuousClock.Instant) -> [TimerEvent] {
        var events: [TimerEvent] = []
        var due: [(ContinuousClock.Instant, Int)] = []
        let all = [retransmitHandshakeDeadline, sendKeepaliveDeadline, newHandshakeDeadline,
                   zeroKeyMaterialDeadline, persistentKeepaliveDeadline]
        for (i, d) in all.enumerated() { if let d, d <= now { due.append((d, i)) } }
        due.sort { $0.0 < $1.0 || ($0.0 == $1.0 && $0.1 < $1.1) }
        for (deadline, which) in due {
            switch which {
            case 0:
                guard retransmitHandshakeDeadline == deadline else { continue }
                retransmitHandshakeDeadline = nil
                if handshakeAttempts > maximumHandshakeRetries {
                    sendKeepaliveDeadline = nil
                    if zeroKeyMaterialDeadline == nil {
                        zeroKeyMaterialDeadline = now + WireGuardConstants.rejectAfterTime * 3
                    }
                    events.append(.handshakeGaveUp)
                } else {
                    handshakeAttempts += 1
                    events.append(.retransmitHandshake)
                }
            case 1:
                guard sendKeepaliveDeadline == deadline else { continue }
                sendKeepaliveDeadline = nil
                events.append(.sendKeepalive)
                if needAnotherKeepalive {
                    needAnotherKeepalive = false
                    sendKeepaliveDeadline = now + WireGuardConstants.keepaliveTimeout
                }
            case 2:
                guard newHandshakeDeadline == deadline else { continue }
                newHandshakeDeadline = nil
                events.append(.newHandshake)
            case 3:
                guard zeroKeyMaterialDeadline == deadline else { continue }
                zeroKeyMaterialDeadline = nil
                events.append(.zeroKeyMaterial)
            default:
                guard persistentKeepaliveDeadline == deadline else { continue }
                persistentKeepaliveDeadline = nil
                if let interval = persistentKeepaliveInterval, interval > .zero {
                    events.append(.persistentKeepalive)
                }
            }
        }
        return events
    }
}
