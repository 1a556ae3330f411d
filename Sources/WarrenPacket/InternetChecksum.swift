// The Internet checksum (RFC 1071): the ones' complement of the ones' complement sum of
// 16-bit big-endian words, an odd trailing byte padded with zero. TCP, UDP and ICMPv6 add a
// pseudo-header (RFC 9293 section 3.1, RFC 768, RFC 8200 section 8.1); ICMPv4 does not.

/// An incremental Internet checksum accumulator.
public struct InternetChecksum: Sendable {
    private var sum: UInt64 = 0
    /// Whether an odd byte is waiting for its partner (so the next byte is a low byte).
    private var odd = false

    public init() {}

    public mutating func add(_ bytes: UnsafeRawBufferPointer) {
        var i = 0
        if odd, !bytes.isEmpty {
            sum &+= UInt64(bytes[0])
            odd = false
            i = 1
        }
        while i + 1 < bytes.count {
            sum &+= UInt64(bytes[i]) << 8 | UInt64(bytes[i + 1])
            i += 2
        }
        if i < bytes.count {
            sum &+= UInt64(bytes[i]) << 8
            odd = true
        }
    }

    public mutating func add(_ bytes: some Sequence<UInt8>) {
        for byte in bytes {
            sum &+= odd ? UInt64(byte) : UInt64(byte) << 8
            odd.toggle()
        }
    }

    public mutating func add(word: UInt16) {
        precondition(!odd, "add(word:) after an odd number of bytes")
        sum &+= UInt64(word)
    }

    public mutating func add(address: IPAddress) {
        switch address {
        case .v4(let v):
            add(word: UInt16(truncatingIfNeeded: v >> 16))
            add(word: UInt16(truncatingIfNeeded: v))
        case .v6(let hi, let lo):
            for half in [hi, lo] {
                for shift in stride(from: 48, through: 0, by: -16) {
                    add(word: UInt16(truncatingIfNeeded: half >> UInt64(shift)))
                }
            }
        }
    }

    /// Adds the TCP/UDP/ICMPv6 pseudo-header: both addresses, the upper-layer length and protocol.
    public mutating func addPseudoHeader(source: IPAddress, destination: IPAddress, protocol proto: IPProtocol, length: Int) {
        add(address: source)
        add(address: destination)
        let length32 = UInt32(truncatingIfNeeded: length)
        add(word: UInt16(truncatingIfNeeded: length32 >> 16))
        add(word: UInt16(truncatingIfNeeded: length32))
        add(word: UInt16(proto.rawValue))
    }

    /// The folded ones' complement sum (not complemented).
    public var foldedSum: UInt16 {
        var s = sum
        while s > 0xFFFF { s = (s & 0xFFFF) + (s >> 16) }
        return UInt16(s)
    }

    /// The value to store in a checksum field (computed with that field zeroed).
    public var checksum: UInt16 { ~foldedSum }

    /// Over data that includes a correct checksum field, the folded sum is 0xFFFF.
    public var verifies: Bool { foldedSum == 0xFFFF }
}
