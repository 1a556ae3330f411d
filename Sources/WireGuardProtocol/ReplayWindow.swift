// The receive-side anti-replay window for transport counters: an RFC 6479 style ring of 64-bit
// blocks. The ring holds 128 blocks (8,192 bits); one block is kept as slack for sliding, so any
// counter up to 8,128 below the highest one seen is still judged exactly (as in wireguard-go).

/// Accepts each counter at most once, and none that is too far behind the newest.
public struct ReplayWindow: Sendable {
    static let blockBits: UInt64 = 64
    static let blockCount: UInt64 = 128
    /// How far behind the newest counter a counter may be and still be accepted.
    public static let windowSize: UInt64 = (blockCount - 1) * blockBits

    private var blocks = [UInt64](repeating: 0, count: Int(blockCount))
    /// The highest counter accepted so far (0 before any).
    public private(set) var newest: UInt64 = 0

    public init() {}

    /// Checks `counter` and records it. Returns false for a repeat, for a counter more than
    /// `windowSize` behind the newest, and for any counter >= `limit`.
    public mutating func accept(_ counter: UInt64,
                                limit: UInt64 = WireGuardConstants.rejectAfterMessages) -> Bool {
        guard counter < limit else { return false }
        let block = counter / Self.blockBits
        if counter > newest {
            // Slide forward: clear the blocks between the old newest and the new one.
            let current = newest / Self.blockBits
            let steps = min(block - current, Self.blockCount)
            var i: UInt64 = 1
            while i <= steps {
                blocks[Int((current &+ i) % Self.blockCount)] = 0
                i += 1
            }
            newest = counter
        } else if newest - counter > Self.windowSize {
            return false
        }
        let slot = Int(block % Self.blockCount)
        let bit = UInt64(1) << (counter % Self.blockBits)
        if blocks[slot] & bit != 0 { return false }
        blocks[slot] |= bit
        return true
    }

    /// Forgets everything (a fresh window).
    public mutating func reset() {
        self = ReplayWindow()
    }
}
