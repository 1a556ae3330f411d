// Big-endian reads from raw buffers. Callers check bounds before reading; these helpers
// do no checking of their own so that the parsers stay branch-light.

extension UnsafeRawBufferPointer {
    @inline(__always)
    func u8(_ offset: Int) -> UInt8 { self[offset] }

    @inline(__always)
    func u16(_ offset: Int) -> UInt16 {
        UInt16(self[offset]) << 8 | UInt16(self[offset + 1])
    }

    @inline(__always)
    func u32(_ offset: Int) -> UInt32 {
        UInt32(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    @inline(__always)
    func u64(_ offset: Int) -> UInt64 {
        UInt64(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }

    @inline(__always)
    func ipv4Address(_ offset: Int) -> IPAddress { .v4(u32(offset)) }

    @inline(__always)
    func ipv6Address(_ offset: Int) -> IPAddress { .v6(u64(offset), u64(offset + 8)) }

    /// The sub-buffer `range` (which the caller has checked lies inside the buffer).
    @inline(__always)
    func slice(_ range: Range<Int>) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: self[range])
    }
}
