// A zero-copy view of an IPv4 header (RFC 791 section 3.1).
//
//     0                   1                   2                   3
//     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//    |Version|  IHL  |Type of Service|          Total Length         |
//    |         Identification        |Flags|      Fragment Offset    |
//    |  Time to Live |    Protocol   |         Header Checksum       |
//    |                       Source Address                          |
//    |                    Destination Address                        |
//    |                    Options                    |    Padding    |

/// A validated view of an IPv4 packet. Valid only while the buffer it was made from is.
///
/// Validation: version 4, IHL at least 5 (20 bytes), the header inside the buffer, and a
/// Total Length of at least the header length and at most the buffer length (bytes past
/// Total Length are link padding and not part of the datagram).
public struct IPv4Header {
    public static let minimumLength = 20

    /// The whole buffer the packet was read from.
    public let buffer: UnsafeRawBufferPointer

    public init?(_ buffer: UnsafeRawBufferPointer) {
        guard buffer.count >= Self.minimumLength, buffer[0] >> 4 == 4 else { return nil }
        let headerLength = Int(buffer[0] & 0x0F) * 4
        let totalLength = Int(buffer.u16(2))
        guard headerLength >= Self.minimumLength, headerLength <= totalLength, totalLength <= buffer.count else {
            return nil
        }
        self.buffer = buffer
    }

    /// Header length in bytes (IHL × 4), 20 to 60.
    public var headerLength: Int { Int(buffer[0] & 0x0F) * 4 }
    public var typeOfService: UInt8 { buffer[1] }
    /// Length of the datagram (header and payload) in bytes.
    public var totalLength: Int { Int(buffer.u16(2)) }
    public var identification: UInt16 { buffer.u16(4) }
    public var dontFragment: Bool { buffer[6] & 0x40 != 0 }
    public var moreFragments: Bool { buffer[6] & 0x20 != 0 }
    /// Fragment offset in 8-byte blocks.
    public var fragmentOffset: UInt16 { buffer.u16(6) & 0x1FFF }
    public var isFragment: Bool { moreFragments || fragmentOffset != 0 }
    public var timeToLive: UInt8 { buffer[8] }
    public var protocolNumber: IPProtocol { IPProtocol(buffer[9]) }
    public var headerChecksum: UInt16 { buffer.u16(10) }
    public var source: IPAddress { buffer.ipv4Address(12) }
    public var destination: IPAddress { buffer.ipv4Address(16) }
    /// Options (0 to 40 bytes).
    public var options: UnsafeRawBufferPointer { buffer.slice(Self.minimumLength..<headerLength) }
    /// The datagram's payload: from the end of the header to Total Length.
    public var payload: UnsafeRawBufferPointer { buffer.slice(headerLength..<totalLength) }

    /// Whether the header checksum is correct.
    public var isChecksumValid: Bool {
        var sum = InternetChecksum()
        sum.add(buffer.slice(0..<headerLength))
        return sum.verifies
    }

    /// The checksum for `header` (20 to 60 bytes) as if its checksum field were zero.
    public static func computeChecksum(header: UnsafeRawBufferPointer) -> UInt16 {
        var sum = InternetChecksum()
        sum.add(header.slice(0..<10))
        sum.add(header.slice(12..<header.count))
        return sum.checksum
    }
}
