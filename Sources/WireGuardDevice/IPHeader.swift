public import WarrenPacket

/// The few IP header fields the device reads from a packet, without copying it.
enum IPHeader {
    /// The destination address of an IPv4 or IPv6 packet; nil when the packet is too short or not IP.
    @inline(__always)
    static func destination(_ p: UnsafeRawPointer, length: Int) -> IPAddress? {
        address(p, length: length, v4Offset: 16, v6Offset: 24)
    }

    /// The source address of an IPv4 or IPv6 packet.
    @inline(__always)
    static func source(_ p: UnsafeRawPointer, length: Int) -> IPAddress? {
        address(p, length: length, v4Offset: 12, v6Offset: 8)
    }

    /// The packet's length as its header states it (IPv4 total length, IPv6 40 + payload length):
    /// decrypted packets carry zero padding after it.
    @inline(__always)
    static func statedLength(_ p: UnsafeRawPointer, length: Int) -> Int? {
        guard length >= 1 else { return nil }
        switch p.load(as: UInt8.self) >> 4 {
        case 4:
            guard length >= 20 else { return nil }
            return Int(p.load(fromByteOffset: 2, as: UInt8.self)) << 8 | Int(p.load(fromByteOffset: 3, as: UInt8.self))
        case 6:
            guard length >= 40 else { return nil }
            return 40 + (Int(p.load(fromByteOffset: 4, as: UInt8.self)) << 8 | Int(p.load(fromByteOffset: 5, as: UInt8.self)))
        default:
            return nil
        }
    }

    @inline(__always)
    private static func address(_ p: UnsafeRawPointer, length: Int, v4Offset: Int, v6Offset: Int) -> IPAddress? {
        guard length >= 1 else { return nil }
        switch p.load(as: UInt8.self) >> 4 {
        case 4:
            guard length >= 20 else { return nil }
            return .v4(UInt32(bigEndian: p.loadUnaligned(fromByteOffset: v4Offset, as: UInt32.self)))
        case 6:
            guard length >= 40 else { return nil }
            return .v6(
                UInt64(bigEndian: p.loadUnaligned(fromByteOffset: v6Offset, as: UInt64.self)),
                UInt64(bigEndian: p.loadUnaligned(fromByteOffset: v6Offset + 8, as: UInt64.self)))
        default:
            return nil
        }
    }
}
