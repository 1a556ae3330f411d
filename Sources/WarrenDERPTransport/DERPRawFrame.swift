// DERP frames over NIO: a ByteBuffer decoder shared by the relay and the client engine.
//
// Wire format (tailscale/tailscale:derp/derp.go): 1-byte type, 4-byte big-endian payload length,
// payload. The per-type limits come from DERPProtocol (`DERPFrameType.maximumPayloadLength`).

public import DERPProtocol
public import NIOCore
public import TailscaleKeys

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
        // The packet frames without an intermediate copy.
        if known == .recvPacket || known == .sendPacket {
            var rest = payload
            guard let key = rest.readDERPNodeKey() else { throw DERPProtocolError(.malformed(known)) }
            let packet = Array(rest.readableBytesView)
            return known == .recvPacket ? .recvPacket(source: key, packet: packet) : .sendPacket(destination: key, packet: packet)
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

extension ByteBuffer {
    /// Reads a 32-byte node key, or returns nil (reading nothing) if fewer bytes remain.
    public mutating func readDERPNodeKey() -> NodePublic? {
        guard readableBytes >= DERPWire.keyLength,
              let w0 = getInteger(at: readerIndex, as: UInt64.self), let w1 = getInteger(at: readerIndex + 8, as: UInt64.self),
              let w2 = getInteger(at: readerIndex + 16, as: UInt64.self), let w3 = getInteger(at: readerIndex + 24, as: UInt64.self)
        else { return nil }
        moveReaderIndex(forwardBy: DERPWire.keyLength)
        return NodePublic(raw: Key32(bigEndianWords: (w0, w1, w2, w3)))
    }

    /// Writes a node key's 32 bytes.
    @discardableResult
    public mutating func writeDERPNodeKey(_ key: NodePublic) -> Int {
        let words = key.raw.bigEndianWords
        return writeMultipleIntegers(words.0, words.1, words.2, words.3)
    }
}

extension DERPFrame {
    /// The disco magic "TS💬" that starts every disco message (tailscale/tailscale:disco/disco.go).
    public static let discoMagic: [UInt8] = [0x54, 0x53, 0xF0, 0x9F, 0x92, 0xAC]
}
