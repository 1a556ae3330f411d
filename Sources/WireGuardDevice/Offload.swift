#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

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
    enum GSO: UInt8 { case none = 0, tcpV4 = 1, udp = 3, tcpV6 = 4, udpL4 = 5 }

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
    /// header) into segments of at most `segmentSize` payload bytes, starting at `payloadOffset`
    /// bytes into the payload (0 at first; a later call resumes where an earlier one stopped).
    /// For each segment, `emit` gets its length and returns where to write it, or nil to stop
    /// (no room left). Returns the payload offset reached (the payload length when done), or nil
    /// for a malformed packet.
    ///
    /// Each segment gets the headers with: IPv4 total length, identification (+1 per segment) and
    /// header checksum; IPv6 payload length; TCP sequence number advanced by the payload before it;
    /// FIN and PSH only on the last segment, CWR only on the first; a complete TCP checksum.
    static func segmentTCP(_ packet: UnsafeRawPointer, length: Int, isV6: Bool, transportStart: Int, segmentSize: Int,
                           from payloadOffset: Int = 0,
                           emit: (_ segmentLength: Int) -> UnsafeMutableRawPointer?) -> Int? {
        guard segmentSize > 0, transportStart >= (isV6 ? 40 : 20), transportStart + 20 <= length else { return nil }
        let tcpHeaderLength = Int(packet.load(fromByteOffset: transportStart + 12, as: UInt8.self) >> 4) * 4
        let headerLength = transportStart + tcpHeaderLength
        guard tcpHeaderLength >= 20, headerLength <= length else { return nil }
        if !isV6 {
            let ipHeaderLength = Int(packet.load(as: UInt8.self) & 0x0f) * 4
            guard ipHeaderLength >= 20, ipHeaderLength <= transportStart else { return nil }
        }
        let payloadLength = length - headerLength
        guard payloadOffset >= 0, payloadOffset <= payloadLength else { return nil }
        let firstSequence = UInt32(bigEndian: packet.loadUnaligned(fromByteOffset: transportStart + 4, as: UInt32.self))
        let flags = packet.load(fromByteOffset: transportStart + 13, as: UInt8.self)
        let v4ID = isV6 ? 0 : UInt16(bigEndian: packet.loadUnaligned(fromByteOffset: 4, as: UInt16.self))
        // Pseudo-header addresses (the length part is added per segment).
        let addressSum = isV6 ? InternetChecksum.sum(packet + 8, count: 32) : InternetChecksum.sum(packet + 12, count: 8)

        var offset = payloadOffset
        repeat {
            let chunk = min(segmentSize, payloadLength - offset)
            let segmentLength = headerLength + chunk
            guard let out = emit(segmentLength) else { break }
            out.copyMemory(from: packet, byteCount: headerLength)
            if chunk > 0 { (out + headerLength).copyMemory(from: packet + headerLength + offset, byteCount: chunk) }
            let first = offset == 0
            let last = offset + chunk >= payloadLength
            if isV6 {
                InternetChecksum.store(UInt16(truncatingIfNeeded: segmentLength - 40), out, at: 4)
            } else {
                let index = UInt16(truncatingIfNeeded: offset / segmentSize)
                InternetChecksum.store(UInt16(truncatingIfNeeded: segmentLength), out, at: 2)
                InternetChecksum.store(v4ID &+ index, out, at: 4)
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
            offset += chunk
        } while offset < payloadLength
        return offset
    }

    /// The TCP flow facts of one IPv4 or IPv6 packet that coalescing needs; nil when it is not a
    /// plain TCP segment (IPv4 options or fragments, IPv6 extension headers, flags other than
    /// ACK and PSH, no payload, or lengths that disagree).
    struct TCPSegmentInfo {
        var isV6: Bool
        var transportStart: Int
        var headerLength: Int
        var payloadLength: Int
        var sequence: UInt32
        var flags: UInt8

        init?(_ p: UnsafeRawPointer, length: Int) {
            guard length >= 40 else { return nil }
            let first = p.load(as: UInt8.self)
            if first == 0x45 {
                guard p.load(fromByteOffset: 9, as: UInt8.self) == 6,
                      UInt16(bigEndian: p.loadUnaligned(fromByteOffset: 6, as: UInt16.self)) & 0x3fff == 0,
                      Int(UInt16(bigEndian: p.loadUnaligned(fromByteOffset: 2, as: UInt16.self))) == length
                else { return nil }
                isV6 = false
                transportStart = 20
            } else if first >> 4 == 6 {
                guard length >= 60, p.load(fromByteOffset: 6, as: UInt8.self) == 6,
                      Int(UInt16(bigEndian: p.loadUnaligned(fromByteOffset: 4, as: UInt16.self))) + 40 == length
                else { return nil }
                isV6 = true
                transportStart = 40
            } else {
                return nil
            }
            let tcpHeaderLength = Int(p.load(fromByteOffset: transportStart + 12, as: UInt8.self) >> 4) * 4
            headerLength = transportStart + tcpHeaderLength
            guard tcpHeaderLength >= 20, headerLength < length else { return nil }
            payloadLength = length - headerLength
            flags = p.load(fromByteOffset: transportStart + 13, as: UInt8.self)
            guard flags & 0x10 != 0, flags & ~0x18 == 0 else { return nil }  // ACK, maybe PSH
            sequence = UInt32(bigEndian: p.loadUnaligned(fromByteOffset: transportStart + 4, as: UInt32.self))
        }
    }

    /// Whether two segments belong to one flow and may be merged: equal IP headers apart from
    /// lengths, identification and checksum (IPv4) or payload length (IPv6), equal TCP headers
    /// apart from sequence number, PSH and checksum (same ports, acknowledgment, window, options).
    static func sameFlow(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ info: TCPSegmentInfo) -> Bool {
        let t = info.transportStart
        if info.isV6 {
            guard memcmp(a, b, 4) == 0, memcmp(a + 6, b + 6, 34) == 0 else { return false }
        } else {
            guard memcmp(a, b, 2) == 0, memcmp(a + 6, b + 6, 4) == 0, memcmp(a + 12, b + 12, 8) == 0 else { return false }
        }
        return memcmp(a + t, b + t, 4) == 0                // ports
            && memcmp(a + t + 8, b + t + 8, 5) == 0         // acknowledgment, data offset
            && memcmp(a + t + 14, b + t + 14, 2) == 0       // window
            && memcmp(a + t + 18, b + t + 18, info.headerLength - t - 18) == 0  // urgent pointer, options
    }

    /// Merges the TCP segments of one flow that follow one another in `buffers` from slot `first`
    /// into one super-packet with a virtio-net header (GSO TCPv4/TCPv6, checksum left partial) at
    /// `out`. Returns the slot after the last one merged and the bytes to write, or nil when fewer
    /// than two segments could be merged (write the packet on its own then).
    static func coalesceTCP(_ buffers: PacketBuffers, from first: Int, count: Int, into out: UnsafeMutableRawPointer,
                            capacity: Int) -> (next: Int, length: Int)? {
        let head = UnsafeRawPointer(buffers.slot(first) + buffers.offsets[first])
        guard let info = TCPSegmentInfo(head, length: buffers.lengths[first]), info.flags & 0x08 == 0 else { return nil }
        let segmentSize = info.payloadLength
        let limit = min(capacity - VirtioNetHeader.size, info.isV6 ? 65_535 + 40 : 65_535)
        var total = info.headerLength + segmentSize
        var expected = info.sequence &+ UInt32(truncatingIfNeeded: segmentSize)
        var merged = 1
        var flags = info.flags
        var j = first + 1
        var end = first + 1
        let packet = out + VirtioNetHeader.size
        while j < count {
            let length = buffers.lengths[j]
            if length == 0 {
                j += 1
                continue
            }
            let p = UnsafeRawPointer(buffers.slot(j) + buffers.offsets[j])
            guard let next = TCPSegmentInfo(p, length: length), next.isV6 == info.isV6,
                  next.headerLength == info.headerLength, next.sequence == expected,
                  next.payloadLength <= segmentSize, total + next.payloadLength <= limit,
                  sameFlow(head, p, info)
            else { break }
            if merged == 1 { packet.copyMemory(from: head, byteCount: total) }
            (packet + total).copyMemory(from: p + next.headerLength, byteCount: next.payloadLength)
            total += next.payloadLength
            expected = expected &+ UInt32(truncatingIfNeeded: next.payloadLength)
            merged += 1
            flags |= next.flags
            j += 1
            end = j
            if next.payloadLength < segmentSize || next.flags & 0x08 != 0 { break }
        }
        guard merged > 1 else { return nil }
        let t = info.transportStart
        // IP lengths and checksum.
        if info.isV6 {
            InternetChecksum.store(UInt16(truncatingIfNeeded: total - 40), packet, at: 4)
        } else {
            InternetChecksum.store(UInt16(truncatingIfNeeded: total), packet, at: 2)
            InternetChecksum.store(0, packet, at: 10)
            InternetChecksum.store(InternetChecksum.finish(InternetChecksum.sum(packet, count: 20)), packet, at: 10)
        }
        packet.storeBytes(of: flags, toByteOffset: t + 13, as: UInt8.self)
        // Partial checksum: the folded pseudo-header sum, for the kernel to finish (or trust).
        var sum = info.isV6 ? InternetChecksum.sum(packet + 8, count: 32) : InternetChecksum.sum(packet + 12, count: 8)
        sum &+= 6
        sum &+= UInt64(total - t)
        InternetChecksum.store(~InternetChecksum.finish(sum), packet, at: t + 16)
        // virtio_net_hdr
        out.storeBytes(of: VirtioNetHeader.needsChecksum, toByteOffset: 0, as: UInt8.self)
        out.storeBytes(of: info.isV6 ? VirtioNetHeader.GSO.tcpV6.rawValue : VirtioNetHeader.GSO.tcpV4.rawValue,
                       toByteOffset: 1, as: UInt8.self)
        out.storeBytes(of: UInt16(truncatingIfNeeded: info.headerLength).littleEndian, toByteOffset: 2, as: UInt16.self)
        out.storeBytes(of: UInt16(truncatingIfNeeded: segmentSize).littleEndian, toByteOffset: 4, as: UInt16.self)
        out.storeBytes(of: UInt16(truncatingIfNeeded: t).littleEndian, toByteOffset: 6, as: UInt16.self)
        out.storeBytes(of: UInt16(16).littleEndian, toByteOffset: 8, as: UInt16.self)
        return (end, VirtioNetHeader.size + total)
    }

    /// Merges consecutive UDP datagrams of one flow with equal payload sizes (the last may be
    /// shorter) from slot `first` into one UDP GSO packet (VIRTIO_NET_HDR_GSO_UDP_L4, checksum left
    /// partial) at `out`: the kernel moves it through IP once and splits it at the socket. Returns
    /// the slot after the last one merged and the bytes to write, or nil when fewer than two merge.
    static func coalesceUDP(_ buffers: PacketBuffers, from first: Int, count: Int, into out: UnsafeMutableRawPointer,
                            capacity: Int) -> (next: Int, length: Int)? {
        let head = UnsafeRawPointer(buffers.slot(first) + buffers.offsets[first])
        guard let info = UDPDatagramInfo(head, length: buffers.lengths[first]) else { return nil }
        let t = info.transportStart
        let segmentSize = info.payloadLength
        let limit = min(capacity - VirtioNetHeader.size, info.isV6 ? 65_535 + 40 : 65_535)
        var total = t + 8 + segmentSize
        var merged = 1
        var j = first + 1
        var end = first + 1
        let packet = out + VirtioNetHeader.size
        while j < count, merged < 64 {
            let length = buffers.lengths[j]
            if length == 0 {
                j += 1
                continue
            }
            let p = UnsafeRawPointer(buffers.slot(j) + buffers.offsets[j])
            guard let next = UDPDatagramInfo(p, length: length), next.isV6 == info.isV6,
                  next.payloadLength <= segmentSize, next.payloadLength > 0, total + next.payloadLength <= limit
            else { break }
            if info.isV6 {
                guard memcmp(head, p, 4) == 0, memcmp(head + 6, p + 6, 34) == 0 else { break }
            } else {
                guard memcmp(head, p, 2) == 0, memcmp(head + 6, p + 6, 4) == 0, memcmp(head + 12, p + 12, 8) == 0 else { break }
            }
            guard memcmp(head + t, p + t, 4) == 0 else { break }  // ports
            if merged == 1 { packet.copyMemory(from: head, byteCount: total) }
            (packet + total).copyMemory(from: p + t + 8, byteCount: next.payloadLength)
            total += next.payloadLength
            merged += 1
            j += 1
            end = j
            if next.payloadLength < segmentSize { break }
        }
        guard merged > 1 else { return nil }
        if info.isV6 {
            InternetChecksum.store(UInt16(truncatingIfNeeded: total - 40), packet, at: 4)
        } else {
            InternetChecksum.store(UInt16(truncatingIfNeeded: total), packet, at: 2)
            InternetChecksum.store(0, packet, at: 10)
            InternetChecksum.store(InternetChecksum.finish(InternetChecksum.sum(packet, count: 20)), packet, at: 10)
        }
        InternetChecksum.store(UInt16(truncatingIfNeeded: total - t), packet, at: t + 4)
        var sum = info.isV6 ? InternetChecksum.sum(packet + 8, count: 32) : InternetChecksum.sum(packet + 12, count: 8)
        sum &+= 17
        sum &+= UInt64(total - t)
        InternetChecksum.store(~InternetChecksum.finish(sum), packet, at: t + 6)
        out.storeBytes(of: VirtioNetHeader.needsChecksum, toByteOffset: 0, as: UInt8.self)
        out.storeBytes(of: VirtioNetHeader.GSO.udpL4.rawValue, toByteOffset: 1, as: UInt8.self)
        out.storeBytes(of: UInt16(truncatingIfNeeded: t + 8).littleEndian, toByteOffset: 2, as: UInt16.self)
        out.storeBytes(of: UInt16(truncatingIfNeeded: segmentSize).littleEndian, toByteOffset: 4, as: UInt16.self)
        out.storeBytes(of: UInt16(truncatingIfNeeded: t).littleEndian, toByteOffset: 6, as: UInt16.self)
        out.storeBytes(of: UInt16(6).littleEndian, toByteOffset: 8, as: UInt16.self)
        return (end, VirtioNetHeader.size + total)
    }

    /// The facts of a plain UDP datagram (IPv4 without options or fragments, IPv6 without
    /// extension headers) that coalescing needs.
    struct UDPDatagramInfo {
        var isV6: Bool
        var transportStart: Int
        var payloadLength: Int

        init?(_ p: UnsafeRawPointer, length: Int) {
            guard length >= 28 else { return nil }
            let first = p.load(as: UInt8.self)
            if first == 0x45 {
                guard p.load(fromByteOffset: 9, as: UInt8.self) == 17,
                      UInt16(bigEndian: p.loadUnaligned(fromByteOffset: 6, as: UInt16.self)) & 0x3fff == 0,
                      Int(UInt16(bigEndian: p.loadUnaligned(fromByteOffset: 2, as: UInt16.self))) == length
                else { return nil }
                isV6 = false
                transportStart = 20
            } else if first >> 4 == 6 {
                guard length >= 48, p.load(fromByteOffset: 6, as: UInt8.self) == 17,
                      Int(UInt16(bigEndian: p.loadUnaligned(fromByteOffset: 4, as: UInt16.self))) + 40 == length
                else { return nil }
                isV6 = true
                transportStart = 40
            } else {
                return nil
            }
            guard Int(UInt16(bigEndian: p.loadUnaligned(fromByteOffset: transportStart + 4, as: UInt16.self)))
                    == length - transportStart else { return nil }
            payloadLength = length - transportStart - 8
            guard payloadLength > 0 else { return nil }
        }
    }
}
