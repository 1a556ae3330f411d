// Errors of the offload helpers (GSO segmentation, GRO coalescing, virtio-net headers).

/// Why an offload operation refused its input. The packet is then dropped (or, for the
/// coalescer, written through unchanged); no partial output is promised.
public struct OffloadError: Error, Equatable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        /// Fewer than 10 bytes where a virtio-net header was expected.
        public static let truncatedHeader = Code(name: "truncated virtio-net header")
        /// A gso_type Linux does not define (or UFO, VIRTIO_NET_HDR_GSO_UDP, which is not supported).
        public static let unsupportedGSOType = Code(name: "unsupported gso_type")
        /// The packet does not match its header: wrong IP version or protocol, offsets outside the
        /// packet, a zero gso_size, IPv4 options or IPv6 extension headers in the way, too long.
        public static let malformedPacket = Code(name: "malformed packet")
        /// The caller's output room ran out (the caller sized it too small).
        public static let outputTooSmall = Code(name: "output too small")
        public var description: String { name }
    }

    public var code: Code
    /// What exactly was wrong, for a log line.
    public var detail: String

    public init(_ code: Code, _ detail: String) {
        self.code = code
        self.detail = detail
    }

    public static func == (a: OffloadError, b: OffloadError) -> Bool { a.code == b.code }

    public var description: String { "\(code): \(detail)" }
}
