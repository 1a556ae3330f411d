// DERP frames over NIO: a ByteBuffer decoder shared by the relay and the client engine.
//
// Wire format (tailscale/tailscale:derp/derp.go): 1-byte type, 4-byte big-endian payload length,
// payload. The per-type limits come from DERPProtocol (`DERPFrameType.maximumPayloadLength`).

public import DERPProtocol
public import NIOCore

/// One DERP frame as it came off the wire: its type byte and its payload, not yet interpreted.
public struct DERPRawFrame: Sendable, Hashable {
    public var type: UInt8
    public var payload: ByteBuffer

    public init(type: UInt8, payload: ByteBuffer) {
        self.type = type
        self.payload = payload
    }

    /// The frame interpreted. Unknown types become ``DERPFrame/unknown(type:length:)``; a known type
    /// with a payload of the wrong shape throws ``DERPProtocolError``.
    public func parsed() throws -> DERPFrame {
        guard let known = DERPFrameType(rawValue: type) else {
            return .unknown(type: type, length: UInt32(truncatingIfNeeded: payload.readableBytes))
        }
        return try DERPFrame.parse(type: known, payload: Array(payload.readableBytesView)[...])
    }
}

/// Splits a DERP byte stream into ``DERPRawFrame``s.
///
/// A header announcing more than its type allows (64 KiB + key for packets, 256 KiB for ClientInfo,
/// 1 MiB otherwise, 1 MiB for unknown types) throws: the stream cannot be trusted further and the
/// connection is closed. Frames are returned as slices of the input, without copying.
public struct DERPRawFrameDecoder: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = DERPRawFrame

    public init() {}

    public mutating func decode(buffer: inout ByteBuffer) throws -> DERPRawFrame? {
        let start = buffer.readerIndex
        guard let type = buffer.getInteger(at: start, as: UInt8.self),
              let length = buffer.getInteger(at: start + 1, as: UInt32.self) else { return nil }
        let limit = DERPFrameType(rawValue: type)?.maximumPayloadLength ?? DERPWire.maximumFrameLength
        guard length <= UInt32(limit) else { throw DERPProtocolError(.frameTooLarge(type: type, length: length)) }
        guard buffer.readableBytes >= DERPWire.frameHeaderLength + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: DERPWire.frameHeaderLength)
        guard let payload = buffer.readSlice(length: Int(length)) else { return nil }
        return DERPRawFrame(type: type, payload: payload)
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> DERPRawFrame? {
        try decode(buffer: &buffer)
    }
}

extension ByteBuffer {
    /// Writes a whole frame (header and payload).
    @discardableResult
    public mutating func writeDERPFrame(_ frame: DERPFrame) throws -> Int {
        writeBytes(try frame.encoded())
    }

    /// Writes a frame header: type and big-endian payload length.
    @discardableResult
    public mutating func writeDERPFrameHeader(type: DERPFrameType, length: Int) -> Int {
        writeInteger(type.rawValue) + writeInteger(UInt32(truncatingIfNeeded: length))
    }
}

extension DERPFrame {
    /// The disco magic "TS💬" that starts every disco message (tailscale/tailscale:disco/disco.go).
    public static let discoMagic: [UInt8] = [0x54, 0x53, 0xF0, 0x9F, 0x92, 0xAC]
}
