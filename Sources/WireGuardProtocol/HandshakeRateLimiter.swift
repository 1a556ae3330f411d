// Per-source rate limit on handshake messages while under load (wireguard-go ratelimiter/, the
// kernel's ratelimiter.c): after a message passed MAC2 (its sender proved it owns the address),
// each source IP address may still only start 20 handshakes per second, with bursts of 5, so that
// one address cannot make the device spend all its time on Diffie-Hellman.
//
// A token bucket per address, measured in nanoseconds of credit: every message costs 1/20 s,
// credit accrues with time, and at most 5 messages' worth is banked. Entries idle for more than a
// second are swept (they would be full again anyway).

import WarrenPacket

/// Token buckets of handshake messages per source IP address. Time is passed in.
public struct HandshakeRateLimiter: Sendable {
    /// Messages per second one address may send in the long run.
    public static let messagesPerSecond: Int64 = 20
    /// Messages one address may send at once after a quiet period.
    public static let burst: Int64 = 5
    /// Entries idle this long are full again and are forgotten.
    public static let idleTime: Duration = .seconds(1)

    static let cost: Int64 = 1_000_000_000 / messagesPerSecond
    static let capacity: Int64 = cost * burst

    struct Bucket: Sendable {
        var credit: Int64
        var last: ContinuousClock.Instant
    }

    private var buckets: [IPAddress: Bucket] = [:]
    private var lastSweep: ContinuousClock.Instant?

    public init() {}

    /// How many addresses are tracked now.
    public var count: Int { buckets.count }

    /// Whether a handshake message from `address` may be processed at `now` (and, if so, charges
    /// it). Messages refused here are dropped without an answer.
    public mutating func allow(_ address: IPAddress, now: ContinuousClock.Instant) -> Bool {
        sweep(now: now)
        var bucket = buckets[address] ?? Bucket(credit: Self.capacity, last: now)
        if now > bucket.last {
            bucket.credit = min(Self.capacity, bucket.credit &+ Self.nanoseconds(now - bucket.last))
            bucket.last = now
        }
        let allowed = bucket.credit >= Self.cost
        if allowed { bucket.credit -= Self.cost }
        buckets[address] = bucket
        return allowed
    }

    /// Forgets every address (the device goes down).
    public mutating func reset() {
        buckets = [:]
        lastSweep = nil
    }

    private mutating func sweep(now: ContinuousClock.Instant) {
        guard let last = lastSweep else {
            lastSweep = now
            return
        }
        guard now - last >= Self.idleTime else { return }
        lastSweep = now
        buckets = buckets.filter { now - $0.value.last <= Self.idleTime }
    }

    /// A non-negative duration in nanoseconds, saturating (a clock far in the future cannot overflow).
    static func nanoseconds(_ d: Duration) -> Int64 {
        let (seconds, attoseconds) = d.components
        guard seconds >= 0 else { return 0 }
        guard seconds < 1_000_000_000 else { return Int64.max / 2 }
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
