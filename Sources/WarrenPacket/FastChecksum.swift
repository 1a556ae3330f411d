// The Internet checksum (RFC 1071) over raw memory, 4 bytes at a time, for the offload paths
// that checksum every byte of every packet (`InternetChecksum` is the byte-at-a-time,
// incremental version for everything else).
//
// RFC 1071 section 2(B), byte order independence: summing the words in the machine's byte
// order and swapping the folded result gives the same sum as summing big-endian 16-bit words.
// Here 32-bit words are read as little-endian values into a 64-bit accumulator (no carries to
// track for inputs below 2^32 words), folded to 16 bits and swapped once at the end, so the
// result is the same on every host.

public enum FastChecksum {
    /// The folded (not complemented) ones' complement sum of `count` bytes at `p`, as a
    /// big-endian-order 16-bit value. An odd last byte is padded with a zero byte.
    @inlinable
    public static func sum(_ p: UnsafeRawPointer, count: Int) -> UInt32 {
        var acc: UInt64 = 0
        var i = 0
        while i + 16 <= count {
            acc &+= UInt64(UInt32(littleEndian: p.loadUnaligned(fromByteOffset: i, as: UInt32.self)))
            acc &+= UInt64(UInt32(littleEndian: p.loadUnaligned(fromByteOffset: i + 4, as: UInt32.self)))
            acc &+= UInt64(UInt32(littleEndian: p.loadUnaligned(fromByteOffset: i + 8, as: UInt32.self)))
            acc &+= UInt64(UInt32(littleEndian: p.loadUnaligned(fromByteOffset: i + 12, as: UInt32.self)))
            i += 16
        }
        while i + 4 <= count {
            acc &+= UInt64(UInt32(littleEndian: p.loadUnaligned(fromByteOffset: i, as: UInt32.self)))
            i += 4
        }
        var shift: UInt64 = 0
        while i < count {
            acc &+= UInt64(p.load(fromByteOffset: i, as: UInt8.self)) << shift
            shift += 8
            i += 1
        }
        while acc >> 16 != 0 { acc = (acc & 0xFFFF) &+ (acc >> 16) }
        return UInt32(UInt16(truncatingIfNeeded: acc).byteSwapped)
    }

    /// Ones' complement addition of already folded (or small) sums, folded again.
    @inlinable
    public static func add(_ a: UInt32, _ b: UInt32) -> UInt32 {
        var s = UInt64(a) &+ UInt64(b)
        while s >> 16 != 0 { s = (s & 0xFFFF) &+ (s >> 16) }
        return UInt32(s)
    }

    /// The TCP/UDP pseudo-header sum (RFC 9293 3.1, RFC 768, RFC 8200 8.1) for the packet at `ip`:
    /// the addresses read from the IP header, `proto` and the upper-layer `length`.
    @inlinable
    public static func pseudoHeader(_ ip: UnsafeRawPointer, isV6: Bool, proto: UInt8, length: Int) -> UInt32 {
        let addresses = isV6 ? sum(ip + 8, count: 32) : sum(ip + 12, count: 8)
        let lengthSum = add(UInt32(truncatingIfNeeded: length >> 16), UInt32(truncatingIfNeeded: length & 0xFFFF))
        return add(add(addresses, UInt32(proto)), lengthSum)
    }

    /// The value for a checksum field: the complement of the folded sum.
    @inlinable
    public static func finish(_ sum: UInt32) -> UInt16 { ~UInt16(truncatingIfNeeded: sum) }

    @inlinable
    public static func store(_ value: UInt16, _ p: UnsafeMutableRawPointer, at offset: Int) {
        p.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt16.self)
    }

    @inlinable
    public static func load16(_ p: UnsafeRawPointer, at offset: Int) -> UInt16 {
        UInt16(bigEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    @inlinable
    public static func load32(_ p: UnsafeRawPointer, at offset: Int) -> UInt32 {
        UInt32(bigEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }
}
