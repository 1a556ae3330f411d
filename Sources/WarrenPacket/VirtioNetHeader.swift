// The virtio-net header that a Linux TUN device with IFF_VNET_HDR puts in front of every
// packet it hands to user space and expects in front of every packet written to it
// (include/uapi/linux/virtio_net.h; the TUN side is drivers/net/tun.c with
// include/linux/virtio_net.h, virtio_net_hdr_to_skb / virtio_net_hdr_from_skb).
//
//     struct virtio_net_hdr {      // 10 bytes (TUNSETVNETHDRSZ 10)
//         u8   flags;              // NEEDS_CSUM 1, DATA_VALID 2, RSC_INFO 4
//         u8   gso_type;           // NONE 0, TCPV4 1, UDP 3 (UFO), TCPV6 4, UDP_L4 5; | ECN 0x80
//         le16 hdr_len;            // bytes of headers (IP + transport) to repeat in every segment
//         le16 gso_size;           // payload bytes per segment (the MSS for TCP)
//         le16 csum_start;         // where the transport checksum's coverage starts (the L4 header)
//         le16 csum_offset;        // where the checksum field sits, counted from csum_start
//     };
//
// Byte order: a TUN device uses the "legacy" virtio layout, i.e. the host's byte order unless
// TUNSETVNETLE/TUNSETVNETBE says otherwise. Warren runs on little-endian hosts (x86-64, arm64),
// so the fields are read and written little-endian.
//
// With NEEDS_CSUM the transport checksum field holds only the folded pseudo-header sum (not
// complemented) and whoever finishes the packet adds the sum from csum_start to the end.
// Linux fills hdr_len with the length of the skb's linear part, which can exceed the real
// headers, so the segmenter recomputes the header length from the TCP data offset.

/// A decoded `struct virtio_net_hdr`.
public struct VirtioNetHeader: Equatable, Sendable {
    /// The header's size on the wire (set with TUNSETVNETHDRSZ).
    public static let size = 10

    public struct Flags: OptionSet, Hashable, Sendable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        /// VIRTIO_NET_HDR_F_NEEDS_CSUM: the transport checksum is left to finish (csum_start/offset).
        public static let needsChecksum = Flags(rawValue: 1)
        /// VIRTIO_NET_HDR_F_DATA_VALID: the checksum was already verified.
        public static let dataValid = Flags(rawValue: 2)
        /// VIRTIO_NET_HDR_F_RSC_INFO.
        public static let rscInfo = Flags(rawValue: 4)
    }

    public enum GSOType: UInt8, Sendable {
        /// A single packet.
        case none = 0
        /// TCP over IPv4, cut at gso_size (VIRTIO_NET_HDR_GSO_TCPV4).
        case tcpV4 = 1
        /// UDP fragmentation offload (VIRTIO_NET_HDR_GSO_UDP): IP fragments; not supported here.
        case udpFragmentation = 3
        /// TCP over IPv6 (VIRTIO_NET_HDR_GSO_TCPV6).
        case tcpV6 = 4
        /// UDP segmentation, one datagram per gso_size bytes (VIRTIO_NET_HDR_GSO_UDP_L4).
        case udpL4 = 5
    }

    public var flags: Flags
    public var gsoType: GSOType
    /// VIRTIO_NET_HDR_GSO_ECN: the segments carry ECN (the CWR flag stays on the first).
    public var ecn: Bool
    public var headerLength: UInt16
    public var gsoSize: UInt16
    public var checksumStart: UInt16
    public var checksumOffset: UInt16

    public init(flags: Flags = [], gsoType: GSOType = .none, ecn: Bool = false, headerLength: UInt16 = 0,
                gsoSize: UInt16 = 0, checksumStart: UInt16 = 0, checksumOffset: UInt16 = 0) {
        self.flags = flags
        self.gsoType = gsoType
        self.ecn = ecn
        self.headerLength = headerLength
        self.gsoSize = gsoSize
        self.checksumStart = checksumStart
        self.checksumOffset = checksumOffset
    }

    /// Decodes the first 10 bytes of `bytes`. Throws `.truncatedHeader` for fewer bytes and
    /// `.unsupportedGSOType` for a gso_type Linux does not define. Unknown flag bits are kept.
    public init(decoding bytes: UnsafeRawBufferPointer) throws(OffloadError) {
        guard bytes.count >= Self.size, let base = bytes.baseAddress else {
            throw OffloadError(.truncatedHeader, "\(bytes.count) bytes")
        }
        let rawType = base.load(fromByteOffset: 1, as: UInt8.self)
        guard let type = GSOType(rawValue: rawType & 0x7F) else {
            throw OffloadError(.unsupportedGSOType, "gso_type \(rawType)")
        }
        flags = Flags(rawValue: base.load(as: UInt8.self))
        gsoType = type
        ecn = rawType & 0x80 != 0
        headerLength = UInt16(littleEndian: base.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
        gsoSize = UInt16(littleEndian: base.loadUnaligned(fromByteOffset: 4, as: UInt16.self))
        checksumStart = UInt16(littleEndian: base.loadUnaligned(fromByteOffset: 6, as: UInt16.self))
        checksumOffset = UInt16(littleEndian: base.loadUnaligned(fromByteOffset: 8, as: UInt16.self))
    }

    /// Writes the 10-byte header at `p`.
    @inlinable
    public func encode(into p: UnsafeMutableRawPointer) {
        p.storeBytes(of: flags.rawValue, as: UInt8.self)
        p.storeBytes(of: gsoType.rawValue | (ecn ? 0x80 : 0), toByteOffset: 1, as: UInt8.self)
        p.storeBytes(of: headerLength.littleEndian, toByteOffset: 2, as: UInt16.self)
        p.storeBytes(of: gsoSize.littleEndian, toByteOffset: 4, as: UInt16.self)
        p.storeBytes(of: checksumStart.littleEndian, toByteOffset: 6, as: UInt16.self)
        p.storeBytes(of: checksumOffset.littleEndian, toByteOffset: 8, as: UInt16.self)
    }

    /// The header as 10 bytes.
    public var bytes: [UInt8] {
        var out = [UInt8](repeating: 0, count: Self.size)
        out.withUnsafeMutableBytes { encode(into: $0.baseAddress!) }
        return out
    }
}
