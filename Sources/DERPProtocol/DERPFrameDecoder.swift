// Incremental DERP frame decoder: feed it bytes as they arrive, in any split, and pull frames.

/// Turns a DERP byte stream into ``DERPFrame``s.
///
/// - Known frame types are buffered whole, up to their type's limit (64 KiB + key for packets,
///   256 KiB for ClientInfo, 1 MiB otherwise); a header announcing more makes the decoder fail for good.
/// - Unknown frame types are reported as ``DERPFrame/unknown(type:length:)`` as soon as their header
///   arrives, and their payload is discarded as it streams in (never buffered), as Tailscale's server
///   and client skip them.
/// - A whole frame whose payload has the wrong shape is consumed and reported by throwing
///   ``DERPProtocolError/Code/malformed(_:)``; the decoder stays in sync and may be used further.
public struct DERPFrameDecoder: Sendable {
    private var buffer: [UInt8] = []
    private var start = 0
    private var skipping = 0
    private var failed = false

    public init() {}

    public mutating func append(_ bytes: some Sequence<UInt8>) {
        if start > 0 && start >= buffer.count / 2 {
            buffer.removeFirst(start)
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    /// Bytes fed but not yet consumed.
    public var bufferedByteCount: Int { buffer.count - start }

    /// The next frame, or nil when more bytes are needed.
    public mutating func nextFrame() throws -> DERPFrame? {
        guard !failed else { throw DERPProtocolError(.decoderFailed) }
        if skipping > 0 {
            let drop = min(skipping, buffer.count - start)
            start += drop
            skipping -= drop
            if skipping > 0 { return nil }
        }
        let available = buffer.count - start
        guard available >= DERPWire.frameHeaderLength else { return nil }
        let typeByte = buffer[start]
        var length: UInt32 = 0
        for i in 1...4 { length = length << 8 | UInt32(buffer[start + i]) }

        guard let type = DERPFrameType(rawValue: typeByte) else {
            start += DERPWire.frameHeaderLength
            skipping = Int(length)
            let drop = min(skipping, buffer.count - start)
            start += drop
            skipping -= drop
            return .unknown(type: typeByte, length: length)
        }
        guard length <= UInt32(type.maximumPayloadLength) else {
            failed = true
            throw DERPProtocolError(.frameTooLarge(type: typeByte, length: length))
        }
        let total = DERPWire.frameHeaderLength + Int(length)
        guard available >= total else { return nil }
        let payload = buffer[(start + DERPWire.frameHeaderLength)..<(start + total)]
        start += total
        return try DERPFrame.parse(type: type, payload: payload)
    }
}
