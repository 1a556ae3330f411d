#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import WarrenPacket

// Coalescing for TUN writes (IFF_VNET_HDR): consecutive decrypted TCP segments (and UDP datagrams)
// of one flow go to the kernel as one GSO super-packet with a virtio-net header, so the kernel's
// receive path runs once per super-packet. The virtio-net header, segmentation of the kernel's
// super-packets and the checksum arithmetic are WarrenPacket's (`VirtioNetHeader`, `GSOSegmenter`,
// `FastChecksum`); what is here works in place on the device's `PacketBuffers` (no copy of
// packets that do not merge).

enum Offload {
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
            FastChecksum.store(UInt16(truncatingIfNeeded: total - 40), packet, at: 4)
        } else {
            FastChecksum.store(UInt16(truncatingIfNeeded: total), packet, at: 2)
            FastChecksum.store(0, packet, at: 10)
            FastChecksum.store(FastChecksum.finish(FastChecksum.sum(packet, count: 20)), packet, at: 10)
        }
        packet.storeBytes(of: flags, toByteOffset: t + 13, as: UInt8.self)
        // Partial checksum: the folded pseudo-header sum, for the kernel to finish (or trust).
        let sum = FastChecksum.pseudoHeader(packet, isV6: info.isV6, proto: 6, length: total - t)
        FastChecksum.store(UInt16(truncatingIfNeeded: sum), packet, at: t + 16)
        VirtioNetHeader(flags: .needsChecksum, gsoType: info.isV6 ? .tcpV6 : .tcpV4,
                        headerLength: UInt16(truncatingIfNeeded: info.headerLength),
                        gsoSize: UInt16(truncatingIfNeeded: segmentSize),
                        checksumStart: UInt16(truncatingIfNeeded: t), checksumOffset: 16).encode(into: out)
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
            FastChecksum.store(UInt16(truncatingIfNeeded: total - 40), packet, at: 4)
        } else {
            FastChecksum.store(UInt16(truncatingIfNeeded: total), packet, at: 2)
            FastChecksum.store(0, packet, at: 10)
            FastChecksum.store(FastChecksum.finish(FastChecksum.sum(packet, count: 20)), packet, at: 10)
        }
        FastChecksum.store(UInt16(truncatingIfNeeded: total - t), packet, at: t + 4)
        let sum = FastChecksum.pseudoHeader(packet, isV6: info.isV6, proto: 17, length: total - t)
        FastChecksum.store(UInt16(truncatingIfNeeded: sum), packet, at: t + 6)
        VirtioNetHeader(flags: .needsChecksum, gsoType: .udpL4,
                        headerLength: UInt16(truncatingIfNeeded: t + 8),
                        gsoSize: UInt16(truncatingIfNeeded: segmentSize),
                        checksumStart: UInt16(truncatingIfNeeded: t), checksumOffset: 6).encode(into: out)
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
