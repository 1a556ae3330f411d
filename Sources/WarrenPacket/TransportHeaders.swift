// Zero-copy views of transport headers: TCP (RFC 9293 section 3.1), UDP (RFC 768),
// ICMPv4 (RFC 792) and ICMPv6 (RFC 4443). Each takes the bytes from the start of its header
// to the end of the IP datagram.

/// A TCP header: ports, sequence numbers, data offset, flags, window, checksum.
public struct TCPHeader {
    public static let minimumLength = 20
    public let buffer: UnsafeRawBufferPointer

    /// Needs the 20-byte fixed header; the data offset is not checked here (see `isDataOffsetValid`).
    public init?(_ buffer: UnsafeRawBufferPointer) {
        guard buffer.count >= Self.minimumLength else { return nil }
        self.buffer = buffer
    }

    public var sourcePort: UInt16 { buffer.u16(0) }
    public var destinationPort: UInt16 { buffer.u16(2) }
    public var sequenceNumber: UInt32 { buffer.u32(4) }
    public var acknowledgmentNumber: UInt32 { buffer.u32(8) }
    /// Data offset in 32-bit words.
    public var dataOffset: Int { Int(buffer[12] >> 4) }
    /// Header length in bytes (data offset × 4).
    public var headerLength: Int { dataOffset * 4 }
    public var flags: TCPFlags { TCPFlags(rawValue: buffer[13]) }
    public var window: UInt16 { buffer.u16(14) }
    public var checksum: UInt16 { buffer.u16(16) }
    public var urgentPointer: UInt16 { buffer.u16(18) }
    /// Data offset at least 5 and the header (with options) inside the buffer.
    public var isDataOffsetValid: Bool { dataOffset >= 5 && headerLength <= buffer.count }
    /// The segment's data, or nil if the data offset is invalid.
    public var payload: UnsafeRawBufferPointer? {
        isDataOffsetValid ? buffer.slice(headerLength..<buffer.count) : nil
    }
}

/// A UDP header: ports, length, checksum.
public struct UDPHeader {
    public static let length = 8
    public let buffer: UnsafeRawBufferPointer

    public init?(_ buffer: UnsafeRawBufferPointer) {
        guard buffer.count >= Self.length else { return nil }
        self.buffer = buffer
    }

    public var sourcePort: UInt16 { buffer.u16(0) }
    public var destinationPort: UInt16 { buffer.u16(2) }
    /// The Length field: header plus data, in bytes.
    public var length: Int { Int(buffer.u16(4)) }
    public var checksum: UInt16 { buffer.u16(6) }
    /// Length at least 8 and at most the bytes present.
    public var isLengthValid: Bool { length >= Self.length && length <= buffer.count }
    public var payload: UnsafeRawBufferPointer? {
        isLengthValid ? buffer.slice(Self.length..<length) : nil
    }
}

/// An ICMPv4 or ICMPv6 message: type, code, checksum, and the echo or error body.
public struct ICMPHeader {
    /// Type, code and checksum.
    public static let minimumLength = 4
    public let buffer: UnsafeRawBufferPointer
    public let version: IPVersion

    public init?(_ buffer: UnsafeRawBufferPointer, version: IPVersion) {
        guard buffer.count >= Self.minimumLength else { return nil }
        self.buffer = buffer
        self.version = version
    }

    public var type: UInt8 { buffer[0] }
    public var code: UInt8 { buffer[1] }
    public var checksum: UInt16 { buffer.u16(2) }

    public var isEchoRequest: Bool { ICMPMessage.isEchoRequest(type: type, version: version) }
    public var isEchoReply: Bool { ICMPMessage.isEchoReply(type: type, version: version) }
    /// Whether this is an error message that carries (the start of) the packet that caused it.
    public var isError: Bool { ICMPMessage.isError(type: type, version: version) }

    /// Identifier of an echo request or reply that has its 8-byte header.
    public var echoIdentifier: UInt16? {
        (isEchoRequest || isEchoReply) && buffer.count >= 8 ? buffer.u16(4) : nil
    }
    public var echoSequence: UInt16? {
        (isEchoRequest || isEchoReply) && buffer.count >= 8 ? buffer.u16(6) : nil
    }
    /// For an error message: the invoking packet, after the 8-byte ICMP header.
    public var invokingPacket: UnsafeRawBufferPointer? {
        isError && buffer.count >= 8 ? buffer.slice(8..<buffer.count) : nil
    }
}

/// ICMP type numbers that matter to the filter.
public enum ICMPMessage {
    // ICMPv4 (RFC 792)
    public static let v4EchoReply: UInt8 = 0
    public static let v4DestinationUnreachable: UInt8 = 3
    public static let v4EchoRequest: UInt8 = 8
    public static let v4TimeExceeded: UInt8 = 11
    public static let v4ParameterProblem: UInt8 = 12
    // ICMPv6 (RFC 4443)
    public static let v6DestinationUnreachable: UInt8 = 1
    public static let v6PacketTooBig: UInt8 = 2
    public static let v6TimeExceeded: UInt8 = 3
    public static let v6ParameterProblem: UInt8 = 4
    public static let v6EchoRequest: UInt8 = 128
    public static let v6EchoReply: UInt8 = 129

    public static func isEchoRequest(type: UInt8, version: IPVersion) -> Bool {
        type == (version == .v4 ? v4EchoRequest : v6EchoRequest)
    }

    public static func isEchoReply(type: UInt8, version: IPVersion) -> Bool {
        type == (version == .v4 ? v4EchoReply : v6EchoReply)
    }

    public static func isError(type: UInt8, version: IPVersion) -> Bool {
        switch version {
        case .v4: return type == v4DestinationUnreachable || type == v4TimeExceeded || type == v4ParameterProblem
        case .v6: return (1...4).contains(type)
        }
    }
}
