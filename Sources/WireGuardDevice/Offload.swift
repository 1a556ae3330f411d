// TUN offloads (IFF_VNET_HDR): with TSO enabled, the kernel hands the device TCP super-packets of
// up to 64 KB with a `virtio_net_hdr` in front (linux/virtio_net.h), and packets whose transport
// checksum is left for the device to finish. The device cuts super-packets into MTU-sized
// segments (as a NIC would) before encrypting them.
//
//     struct virtio_net_hdr {          // 10 bytes, host byte order
//         u8  flags;                   // VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
//         u8  gso_type;                // NONE 0, TCPV4 1, UDP 3, TCPV6 4; | ECN 0x80
//         u16 hdr_len;                 // length of the headers to copy into every segment
//         u16 gso_size;                // payload bytes per segment
//         u16 csum_start;              // where checksumming starts (the transport header)
//         u16 csum_offset;             // where the checksum sits, from csum_start
//     };

/// The virtio-net header the kernel puts before each packet on a TUN with IFF_VNET_HDR.
struct VirtioNetHeader: Equatable {
    static let size = 10
    static let needsChecksum: UInt8 = 1
    enum GSO: UInt8 { case none = 0, tcpV4 = 1, udp = 3, tcpV6 = 4 }

    var flags: UInt8 = 0
    var gsoType: UInt8 = 0
    var headerLength: UInt16 = 0
    var gsoSize: UInt16 = 0
    var checksumStart: UInt16 = 0
    var checksumOffset: UInt16 = 0

    init() {}

    init(_ p: UnsafeRawPointer) {
        flags = p.load(as: UInt8.self)
        gsoType = p.load(fromByteOffset: 1, as: UInt8.self)
        headerLength = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
        gsoSize = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 4, as: UInt16.self))
        checksumStart = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 6, as: UInt16.self))
        checksumOffset = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt16.self))
    }

    var gso: GSO? { GSO(rawValue: gsoType & 0x7f) }
}

/// Internet checksum (RFC 1071) helpers over raw memory.
enum InternetChecksum {
    /// The one's-complement sum of `count` bytes at `p` (16-bit big-endian words; an odd last
    /// byte is padded with zero), not folded and not complemented, added to `initial`.
    @inline(__always)
    static func sum(_ p: UnsafeRawPointer, count: Int, initial: UInt64 = 0) -> UInt64 {
        // Summing little-endian 64-bit words and swapping the folded result gives the same
        // one's-complement sum as summing big-endian 16-bit words (RFC 1071, byte order independence).
        var acc: UInt64 = 0
        var i = 0
        while i + 8 <= count {
            let w = p.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            let (s, o) = acc.addingReportingOverflow(w)
            acc = s &+ (o ? 1 : 0)
            i += 8
        }
        var tail: UInt64 = 0
        var shift: UInt64 = 0
        while i < count {
            tail |= UInt64(p.load(fromByteOffset: i, as: UInt8.self)) << shift
            shift += 8
            i += 1
        }
        let (s, o) = acc.addingReportingOverflow(tail)
        acc = s &+ (o ? 1 : 0)
        // Fold to 16 bits (still in little-endian word order), then swap to big-endian order.
        var folded = (acc & 0xffff_ffff) &+ (acc >> 32)
        folded = (folded & 0xffff) &+ (folded >> 16)
        folded = (folded & 0xffff) &+ (folded >> 16)
        folded = (folded & 0xffff) &+ (folded >> 16)
        let be = UInt64(UInt16(truncatingIfNeeded: folded).byteSwapped)
        return initial &+ be
    }

    /// Folds a sum to 16 bits and complements it.
    @inline(__always)
    static func finish(_ sum: UInt64) -> UInt16 {
        var s = sum
        while s >> 16 != 0 { s = (s & 0xffff) &+ (s >> 16) }
        return ~UInt16(truncatingIfNeeded: s)
    }

    /// Writes `value` big-endian at `p + offset`.
    @inline(__always)
    static func store(_ value: UInt16, _ p: UnsafeMutableRawPointer, at offset: Int) {
        p.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt16.self)
    }
}

enum Offload {
    /// Finishes a checksum the kernel left to the device (VIRTIO_NET_HDR_F_NEEDS_CSUM): the field
    /// holds the pseudo-header sum; the checksum covers everything from `start` to the end.
    /// False when the offsets do not fit the packet.
    static func completeChecksum(_ p: UnsafeMutableRawPointer, length: Int, start: Int, offset: Int) -> Bool {
        guard start >= 0, offset >= 0, start + offset + 2 <= length else { return false }
        let s = InternetChecksum.sum(p + start, count: length - start)
        InternetChecksum.store(InternetChecksum.finish(s), p, at: start + offset)
        return true
    }

    /// Cuts a TCP super-packet (IPv4 or IPv6, headers `transportStart` bytes of IP then the TCP
    /// header) into segments of at most `segmentSize` payload bytes. For each segment, `emit` gets
    /// a pointer to write it to (room for `maximumSegmentLength` bytes) and returns false to stop
    /// early (no room left). Returns the number of segments written, or nil for a malformed packet.
    ///
    /// Each segment gets the headers with: IPv4 total length, identification (+1 per segment) and
    /// header checksum; IPv6 payload length; TCP sequence number advanced by the payload before it;
    /// FIN and PSH only on the last segment, CWR only on the first; a complete TCP checksum.
    static func segmentTCP(_ packet: UnsafeRawPointer, length: Int, isV6: Bool, transportStart: Int, segmentSize: Int,
                           emit: (_ segmentLength: Int) -> UnsafeMutableRawPointer?) -> Int? {
        guard segmentSize > 0, transportStart >= (isV6 ? 40 : 20), transportStart + 20 <= length else { return nil }
        let tcpHeaderLength = Int(packet.load(fromByteOffset: transportStart + 12, as: UInt8.self) >> 4) * 4
        let headerLength = transportStart + tcpHeaderLength
        guard tcpHeaderLength >= 20, headerLength <= length else { return nil }
        let payloadLength = length - headerLength
        let firstSequence = UInt32(bigEndian: packet.loadUnaligned(fromByteOffset: transportStart + 4, as: UInt32.self))
        let flags = packet.load(fromByteOffset: transportStart + 13, as: UInt8.self)
        let v4ID = isV6 ? 0 : UInt16(bigEndian: packet.loadUnaligned(fromByteOffset: 4, as: UInt16.self))
        // Pseudo-header addresses (the length part is added per segment).
        let addressSum = isV6 ? InternetChecksum.sum(packet + 8, count: 32) : InternetChecksum.sum(packet + 12, count: 8)

        var written = 0
        var offset = 0
        repeat {
            let chunk = min(segmentSize, payloadLength - offset)
            let segmentLength = headerLength + chunk
            guard let out = emit(segmentLength) else { break }
            out.copyMemory(from: packet, byteCount: headerLength)
            (out + headerLength).copyMemory(from: packet + headerLength + offset, byteCount: chunk)
            let first = offset == 0
            let last = offset + chunk >= payloadLength
            if isV6 {
                InternetChecksum.store(UInt16(truncatingIfNeeded: segmentLength - 40), out, at: 4)
            } else {
                InternetChecksum.store(UInt16(truncatingIfNeeded: segmentLength), out, at: 2)
                InternetChecksum.store(v4ID &+ UInt16(truncatingIfNeeded: written), out, at: 4)
                InternetChecksum.store(0, out, at: 10)
                let ipHeaderLength = Int(out.load(as: UInt8.self) & 0x0f) * 4
                InternetChecksum.store(InternetChecksum.finish(InternetChecksum.sum(out, count: ipHeaderLength)), out, at: 10)
            }
            let tcp = out + transportStart
            tcp.storeBytes(of: (firstSequence &+ UInt32(truncatingIfNeeded: offset)).bigEndian, toByteOffset: 4, as: UInt32.self)
            var f = flags
            if !last { f &= ~0x09 }   // FIN, PSH
            if !first { f &= ~0x80 }  // CWR
            tcp.storeBytes(of: f, toByteOffset: 13, as: UInt8.self)
            InternetChecksum.store(0, tcp, at: 16)
            let tcpLength = segmentLength - transportStart
            var sum = addressSum
            sum &+= 6  // protocol TCP
            sum &+= UInt64(tcpLength)
            sum = InternetChecksum.sum(tcp, count: tcpLength, initial: sum)
            InternetChecksum.store(InternetChecksum.finish(sum), tcp, at: 16)
            written += 1
            offset += chunk
        } while offset < payloadLength
        return written
    }
}
