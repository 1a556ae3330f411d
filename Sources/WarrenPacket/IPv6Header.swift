// A zero-copy view of an IPv6 header (RFC 8200 section 3) and a bounded walk over its
// extension headers (section 4).
//
//    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//    |Version| Traffic Class |           Flow Label                  |
//    |         Payload Length        |  Next Header  |   Hop Limit   |
//    |                 Source Address (128 bits)                     |
//    |              Destination Address (128 bits)                   |
//
// Hop-by-Hop (0), Routing (43) and Destination Options (60) share a layout: Next Header,
// Hdr Ext Len (in 8-octet units, not counting the first 8 octets), then data. The Fragment
// header (44) is 8 octets: Next Header, Reserved, Fragment Offset (13 bits) | Res (2) | M (1),
// Identification (32).

/// A validated view of an IPv6 packet. Valid only while the buffer it was made from is.
///
/// Validation: version 6, the 40-byte header inside the buffer, and 40 + Payload Length at
/// most the buffer length (bytes past that are link padding).
public struct IPv6Header {
    public static let length = 40
    /// The most extension headers `walkExtensionHeaders` steps over before giving up.
    public static let maximumExtensionHeaders = 8

    public let buffer: UnsafeRawBufferPointer

    public init?(_ buffer: UnsafeRawBufferPointer) {
        guard buffer.count >= Self.length, buffer[0] >> 4 == 6,
              Self.length + Int(buffer.u16(4)) <= buffer.count else { return nil }
        self.buffer = buffer
    }

    public var trafficClass: UInt8 { UInt8(truncatingIfNeeded: buffer.u16(0) >> 4) }
    public var flowLabel: UInt32 { buffer.u32(0) & 0x000F_FFFF }
    public var payloadLength: Int { Int(buffer.u16(4)) }
    /// Header length plus payload length.
    public var totalLength: Int { Self.length + payloadLength }
    public var nextHeader: IPProtocol { IPProtocol(buffer[6]) }
    public var hopLimit: UInt8 { buffer[7] }
    public var source: IPAddress { buffer.ipv6Address(8) }
    public var destination: IPAddress { buffer.ipv6Address(24) }
    public var payload: UnsafeRawBufferPointer { buffer.slice(Self.length..<totalLength) }

    /// Where the extension-header chain ends.
    public struct Chain: Hashable, Sendable {
        /// The protocol of the header that follows the last extension header walked: the
        /// upper-layer protocol, or for a later fragment the Fragment header's Next Header.
        public var upperProtocol: IPProtocol
        /// Offset of that header from the start of the packet.
        public var upperOffset: Int
        /// Number of Hop-by-Hop, Routing and Destination Options headers stepped over.
        public var optionHeaderCount: Int
        /// The Fragment header's fields, if there was one.
        public var fragment: Fragment?
    }

    public struct Fragment: Hashable, Sendable {
        /// Offset in 8-byte blocks.
        public var offset: UInt16
        public var moreFragments: Bool
        public var identification: UInt32

        public init(offset: UInt16, moreFragments: Bool, identification: UInt32) {
            self.offset = offset
            self.moreFragments = moreFragments
            self.identification = identification
        }
    }

    /// Walks Hop-by-Hop, Routing, Destination Options and Fragment headers, at most
    /// `maximumExtensionHeaders` of them. Stops at the first other header, or after a Fragment
    /// header of a later fragment (what follows is not a header). Returns nil for a chain that
    /// runs past the datagram, is too long, has Hop-by-Hop anywhere but first (RFC 8200
    /// section 4.1), or has two Fragment headers.
    public func walkExtensionHeaders() -> Chain? {
        let end = totalLength
        var next = nextHeader
        var offset = Self.length
        var options = 0
        var fragment: Fragment?
        for index in 0...Self.maximumExtensionHeaders {
            switch next {
            case .hopByHop, .ipv6Routing, .ipv6DestinationOptions:
                guard index < Self.maximumExtensionHeaders, offset + 8 <= end else { return nil }
                if next == .hopByHop && index != 0 { return nil }
                let length = (Int(buffer[offset + 1]) + 1) * 8
                guard offset + length <= end else { return nil }
                next = IPProtocol(buffer[offset])
                offset += length
                options += 1
            case .ipv6Fragment:
                guard index < Self.maximumExtensionHeaders, fragment == nil, offset + 8 <= end else { return nil }
                let field = buffer.u16(offset + 2)
                let found = Fragment(offset: field >> 3, moreFragments: field & 1 != 0,
                                     identification: buffer.u32(offset + 4))
                fragment = found
                next = IPProtocol(buffer[offset])
                offset += 8
                if found.offset != 0 {
                    return Chain(upperProtocol: next, upperOffset: offset, optionHeaderCount: options, fragment: found)
                }
            default:
                return Chain(upperProtocol: next, upperOffset: offset, optionHeaderCount: options, fragment: fragment)
            }
        }
        return nil
    }
}
