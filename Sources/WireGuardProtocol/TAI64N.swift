// TAI64N timestamps (https://cr.yp.to/libtai/tai64.html): 8 bytes of big-endian seconds
// (2^62 + 10 + Unix seconds, as WireGuard writes them) and 4 bytes of big-endian nanoseconds.
// Like wireguard-go, the nanoseconds are rounded down to a multiple of 2^24 (about 16.8 ms) so
// that the timestamp does not leak a fine-grained clock.

/// A 12-byte TAI64N label, ordered as its bytes are.
public struct TAI64N: Hashable, Sendable, Comparable {
    /// 2^62 plus the 10 seconds TAI was ahead of UTC in 1970.
    static let base: UInt64 = 0x4000_0000_0000_000A
    static let whitenerMask: UInt32 = 0x00FF_FFFF

    public let seconds: UInt64
    public let nanoseconds: UInt32

    /// The smallest timestamp: every real one is newer.
    public static let zero = TAI64N(seconds: 0, nanoseconds: 0)

    public init(seconds: UInt64, nanoseconds: UInt32) {
        self.seconds = seconds
        self.nanoseconds = nanoseconds
    }

    /// The timestamp for a wall-clock time given as the time since 1970-01-01 UTC.
    public init(sinceUnixEpoch: Duration) {
        let (s, attoseconds) = sinceUnixEpoch.components
        let secs = s < 0 ? 0 : UInt64(s)
        let nanos = attoseconds < 0 ? 0 : UInt32(clamping: attoseconds / 1_000_000_000)
        seconds = Self.base &+ secs
        nanoseconds = nanos & ~Self.whitenerMask
    }

    /// Reads 12 bytes; nil for any other length.
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == 12 else { return nil }
        let a = Array(bytes)
        seconds = a[0..<8].reduce(0) { $0 << 8 | UInt64($1) }
        nanoseconds = a[8..<12].reduce(0) { $0 << 8 | UInt32($1) }
    }

    /// The 12 wire bytes.
    public var bytes: [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: seconds >> (56 - 8 * UInt64($0))) }
            + (0..<4).map { UInt8(truncatingIfNeeded: nanoseconds >> (24 - 8 * UInt32($0))) }
    }

    public static func < (a: TAI64N, b: TAI64N) -> Bool {
        (a.seconds, a.nanoseconds) < (b.seconds, b.nanoseconds)
    }
}
