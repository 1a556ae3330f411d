// Planning for UDP GSO (UDP_SEGMENT, Linux 4.18) and splitting after UDP GRO (UDP_GRO, Linux 5.0).
//
// UDP_SEGMENT: one sendmsg carries a buffer that the kernel (or NIC) cuts into datagrams of
// gso_size bytes, the last one possibly shorter; all go to the same destination. Limits
// (net/ipv4/udp.c, udp_send_skb): at most UDP_MAX_SEGMENTS (64) datagrams, the whole payload
// within one IP packet's length (65,535 minus IP and UDP headers), gso_size > 0.
// UDP_GRO: recvmsg returns several datagrams of one sender back to back, with a UDP_GRO control
// message giving the size of each but the last.

/// Splits a run of datagrams into UDP GSO sends and a GRO-received buffer into datagrams.
public enum UDPSegmentation {
    /// The kernel's UDP_MAX_SEGMENTS on every kernel that has UDP GSO.
    public static let maximumSegments = 64
    /// Payload bytes one GSO send may carry over IPv6 (65,535 - 8; IPv4 allows 20 more, kept equal).
    public static let maximumPayload = 65535 - 8 - 40

    /// How many datagrams, starting at `start` of `count`, can go in one GSO send: all to the same
    /// destination (`sameDestination(start, i)`), all of `length(start)` bytes but the last, which
    /// may be shorter. Returns at least 1 (a lone datagram is sent without UDP_SEGMENT).
    @inlinable
    public static func runLength(from start: Int, count: Int, length: (Int) -> Int,
                                 sameDestination: (_ first: Int, _ other: Int) -> Bool) -> Int {
        guard start < count else { return 0 }
        let size = length(start)
        guard size > 0 else { return 1 }
        var total = size
        var i = start + 1
        while i < count && i - start < maximumSegments {
            let l = length(i)
            guard l > 0, l <= size, total + l <= maximumPayload, sameDestination(start, i) else { break }
            total += l
            i += 1
            if l < size { break }  // a shorter datagram can only be the last
        }
        return i - start
    }

    /// How many datagrams a GRO-received buffer of `length` bytes holds, given the UDP_GRO
    /// segment size (0 or >= length: one datagram).
    @inlinable
    public static func datagramCount(length: Int, segmentSize: Int) -> Int {
        guard length > 0 else { return 0 }
        guard segmentSize > 0, segmentSize < length else { return 1 }
        return (length + segmentSize - 1) / segmentSize
    }

    /// Byte range of datagram `index` in a GRO-received buffer.
    @inlinable
    public static func datagramRange(_ index: Int, length: Int, segmentSize: Int) -> Range<Int> {
        guard segmentSize > 0, segmentSize < length else { return 0..<length }
        let start = index * segmentSize
        return start..<min(length, start + segmentSize)
    }
}
