// The four WireGuard messages, byte-exact (paper section 5.4; wireguard-go device/noise-protocol.go).
// Every integer is little-endian; the first byte is the type and the next three are reserved (zero).
//
//  1 handshake initiation (148 bytes)      2 handshake response (92 bytes)
//    type u8, reserved [3], sender u32        type u8, reserved [3], sender u32, receiver u32
//    ephemeral [32]                           ephemeral [32]
//    static    [32 + 16]                      empty     [0 + 16]
//    timestamp [12 + 16]                      mac1 [16], mac2 [16]
//    mac1 [16], mac2 [16]
//
//  3 cookie reply (64 bytes)               4 transport data (16 + n bytes, n >= 16)
//    type u8, reserved [3], receiver u32      type u8, reserved [3], receiver u32, counter u64
//    nonce [24], cookie [16 + 16]             packet [n] (ciphertext of the padded packet + 16-byte tag)

/// Why bytes could not be read as a WireGuard message.
public struct MessageError: Error, Hashable, Sendable {
    public enum Code: Hashable, Sendable {
        case wrongType
        case wrongSize
    }

    public let code: Code
    public init(_ code: Code) { self.code = code }
}

/// The message type (the first four bytes, little-endian).
public enum MessageType: UInt32, Sendable {
    case handshakeInitiation = 1
    case handshakeResponse = 2
    case cookieReply = 3
    case transportData = 4

    /// The type of a datagram, or nil when the type is unknown or the size does not fit it
    /// (types 1–3 have one exact size; type 4 needs at least 32 bytes).
    public init?(datagram bytes: some Collection<UInt8>) {
        guard bytes.count >= 4 else { return nil }
        guard let type = MessageType(rawValue: WireBytes.u32(bytes, at: 0)) else { return nil }
        switch type {
        case .handshakeInitiation: guard bytes.count == HandshakeInitiation.size else { return nil }
        case .handshakeResponse: guard bytes.count == HandshakeResponse.size else { return nil }
        case .cookieReply: guard bytes.count == CookieReply.size else { return nil }
        case .transportData: guard bytes.count >= TransportHeader.minimumMessageSize else { return nil }
        }
        self = type
    }
}

enum WireBytes {
    static func u32(_ bytes: some Collection<UInt8>, at offset: Int) -> UInt32 {
        var v: UInt32 = 0
        var i = bytes.index(bytes.startIndex, offsetBy: offset)
        for shift in 0..<4 {
            v |= UInt32(bytes[i]) << (8 * UInt32(shift))
            i = bytes.index(after: i)
        }
        return v
    }

    static func u64(_ bytes: some Collection<UInt8>, at offset: Int) -> UInt64 {
        UInt64(u32(bytes, at: offset)) | UInt64(u32(bytes, at: offset + 4)) << 32
    }

    static func append(_ v: UInt32, to out: inout [UInt8]) {
        for i in 0..<4 { out.append(UInt8(truncatingIfNeeded: v >> (8 * UInt32(i)))) }
    }

    static func append(_ v: UInt64, to out: inout [UInt8]) {
        for i in 0..<8 { out.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) }
    }

    static func slice(_ bytes: [UInt8], _ from: Int, _ count: Int) -> [UInt8] {
        Array(bytes[from..<(from + count)])
    }

    static func checkedArray(_ bytes: some Collection<UInt8>, type: MessageType, size: Int) throws -> [UInt8] {
        guard bytes.count == size else { throw MessageError(.wrongSize) }
        let a = Array(bytes)
        guard u32(a, at: 0) == type.rawValue else { throw MessageError(.wrongType) }
        return a
    }
}

/// Message 1: the initiator's first handshake message.
public struct HandshakeInitiation: Hashable, Sendable {
    public static let size = 148
    /// Where MAC1 starts: MAC1 covers the bytes before it.
    public static let mac1Offset = 116
    /// Where MAC2 starts: MAC2 covers the bytes before it.
    public static let mac2Offset = 132

    public var senderIndex: UInt32
    /// The initiator's ephemeral public key (32 bytes).
    public var ephemeral: [UInt8]
    /// The initiator's static public key, sealed (48 bytes).
    public var encryptedStatic: [UInt8]
    /// The TAI64N timestamp, sealed (28 bytes).
    public var encryptedTimestamp: [UInt8]
    public var mac1: [UInt8]
    public var mac2: [UInt8]

    public init(senderIndex: UInt32, ephemeral: [UInt8], encryptedStatic: [UInt8], encryptedTimestamp: [UInt8],
                mac1: [UInt8] = .init(repeating: 0, count: 16), mac2: [UInt8] = .init(repeating: 0, count: 16)) {
        precondition(ephemeral.count == 32 && encryptedStatic.count == 48 && encryptedTimestamp.count == 28
            && mac1.count == 16 && mac2.count == 16, "HandshakeInitiation field sizes")
        self.senderIndex = senderIndex
        self.ephemeral = ephemeral
        self.encryptedStatic = encryptedStatic
        self.encryptedTimestamp = encryptedTimestamp
        self.mac1 = mac1
        self.mac2 = mac2
    }

    /// Parses exactly 148 bytes of type 1.
    public init(bytes: some Collection<UInt8>) throws {
        let b = try WireBytes.checkedArray(bytes, type: .handshakeInitiation, size: Self.size)
        senderIndex = WireBytes.u32(b, at: 4)
        ephemeral = WireBytes.slice(b, 8, 32)
        encryptedStatic = WireBytes.slice(b, 40, 48)
        encryptedTimestamp = WireBytes.slice(b, 88, 28)
        mac1 = WireBytes.slice(b, 116, 16)
        mac2 = WireBytes.slice(b, 132, 16)
    }

    /// The 148 wire bytes.
    public var bytes: [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(Self.size)
        WireBytes.append(MessageType.handshakeInitiation.rawValue, to: &out)
        WireBytes.append(senderIndex, to: &out)
        out += ephemeral
        out += encryptedStatic
        out += encryptedTimestamp
        out += mac1
        out += mac2
        return out
    }
}

/// Message 2: the responder's answer.
public struct HandshakeResponse: Hashable, Sendable {
    public static let size = 92
    public static let mac1Offset = 60
    public static let mac2Offset = 76

    public var senderIndex: UInt32
    public var receiverIndex: UInt32
    /// The responder's ephemeral public key (32 bytes).
    public var ephemeral: [UInt8]
    /// The empty payload, sealed (16 bytes: just the tag).
    public var encryptedNothing: [UInt8]
    public var mac1: [UInt8]
    public var mac2: [UInt8]

    public init(senderIndex: UInt32, receiverIndex: UInt32, ephemeral: [UInt8], encryptedNothing: [UInt8],
                mac1: [UInt8] = .init(repeating: 0, count: 16), mac2: [UInt8] = .init(repeating: 0, count: 16)) {
        precondition(ephemeral.count == 32 && encryptedNothing.count == 16 && mac1.count == 16 && mac2.count == 16,
                     "HandshakeResponse field sizes")
        self.senderIndex = senderIndex
        self.receiverIndex = receiverIndex
        self.ephemeral = ephemeral
        self.encryptedNothing = encryptedNothing
        self.mac1 = mac1
        self.mac2 = mac2
    }

    /// Parses exactly 92 bytes of type 2.
    public init(bytes: some Collection<UInt8>) throws {
        let b = try WireBytes.checkedArray(bytes, type: .handshakeResponse, size: Self.size)
        senderIndex = WireBytes.u32(b, at: 4)
        receiverIndex = WireBytes.u32(b, at: 8)
        ephemeral = WireBytes.slice(b, 12, 32)
        encryptedNothing = WireBytes.slice(b, 44, 16)
        mac1 = WireBytes.slice(b, 60, 16)
        mac2 = WireBytes.slice(b, 76, 16)
    }

    /// The 92 wire bytes.
    public var bytes: [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(Self.size)
        WireBytes.append(MessageType.handshakeResponse.rawValue, to: &out)
        WireBytes.append(senderIndex, to: &out)
        WireBytes.append(receiverIndex, to: &out)
        out += ephemeral
        out += encryptedNothing
        out += mac1
        out += mac2
        return out
    }
}

/// Message 3: a cookie for a sender that must prove its address (sent when under load).
public struct CookieReply: Hashable, Sendable {
    public static let size = 64

    /// The sender index of the handshake message this answers.
    public var receiverIndex: UInt32
    /// The XChaCha20-Poly1305 nonce (24 bytes).
    public var nonce: [UInt8]
    /// The 16-byte cookie, sealed (32 bytes).
    public var encryptedCookie: [UInt8]

    public init(receiverIndex: UInt32, nonce: [UInt8], encryptedCookie: [UInt8]) {
        precondition(nonce.count == 24 && encryptedCookie.count == 32, "CookieReply field sizes")
        self.receiverIndex = receiverIndex
        self.nonce = nonce
        self.encryptedCookie = encryptedCookie
    }

    /// Parses exactly 64 bytes of type 3.
    public init(bytes: some Collection<UInt8>) throws {
        let b = try WireBytes.checkedArray(bytes, type: .cookieReply, size: Self.size)
        receiverIndex = WireBytes.u32(b, at: 4)
        nonce = WireBytes.slice(b, 8, 24)
        encryptedCookie = WireBytes.slice(b, 32, 32)
    }

    /// The 64 wire bytes.
    public var bytes: [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(Self.size)
        WireBytes.append(MessageType.cookieReply.rawValue, to: &out)
        WireBytes.append(receiverIndex, to: &out)
        out += nonce
        out += encryptedCookie
        return out
    }
}

/// The 16-byte header of message 4 (transport data).
public struct TransportHeader: Hashable, Sendable {
    public static let size = 16
    /// Header plus the tag of an empty payload: a keepalive.
    public static let minimumMessageSize = 32
    /// Payloads are padded with zeros to a multiple of this before encryption.
    public static let paddingMultiple = 16

    public var receiverIndex: UInt32
    public var counter: UInt64

    public init(receiverIndex: UInt32, counter: UInt64) {
        self.receiverIndex = receiverIndex
        self.counter = counter
    }

    /// Reads the header of a type-4 message of at least 32 bytes.
    public init(message bytes: some Collection<UInt8>) throws {
        guard bytes.count >= Self.minimumMessageSize else { throw MessageError(.wrongSize) }
        guard WireBytes.u32(bytes, at: 0) == MessageType.transportData.rawValue else { throw MessageError(.wrongType) }
        receiverIndex = WireBytes.u32(bytes, at: 4)
        counter = WireBytes.u64(bytes, at: 8)
    }

    /// Reads the header from raw memory without copying (nil when too short or not type 4).
    public init?(messageBuffer buffer: UnsafeRawBufferPointer) {
        guard buffer.count >= Self.minimumMessageSize,
              buffer.loadUnaligned(fromByteOffset: 0, as: UInt32.self).littleEndian == MessageType.transportData.rawValue
        else { return nil }
        receiverIndex = buffer.loadUnaligned(fromByteOffset: 4, as: UInt32.self).littleEndian
        counter = buffer.loadUnaligned(fromByteOffset: 8, as: UInt64.self).littleEndian
    }

    /// The 16 header bytes.
    public var bytes: [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(Self.size)
        WireBytes.append(MessageType.transportData.rawValue, to: &out)
        WireBytes.append(receiverIndex, to: &out)
        WireBytes.append(counter, to: &out)
        return out
    }

    /// Writes the header into the first 16 bytes of `buffer`.
    public func write(to buffer: UnsafeMutableRawBufferPointer) {
        precondition(buffer.count >= Self.size)
        buffer.storeBytes(of: MessageType.transportData.rawValue.littleEndian, toByteOffset: 0, as: UInt32.self)
        buffer.storeBytes(of: receiverIndex.littleEndian, toByteOffset: 4, as: UInt32.self)
        buffer.storeBytes(of: counter.littleEndian, toByteOffset: 8, as: UInt64.self)
    }

    /// How many zero bytes to append to a packet of `count` bytes before sealing, as wireguard-go
    /// computes it: up to the next multiple of 16, but never beyond `mtu` (0 means no limit).
    public static func paddingCount(forPacketOfSize count: Int, mtu: Int) -> Int {
        var last = count
        let round = { (n: Int) in (n + paddingMultiple - 1) & ~(paddingMultiple - 1) }
        if mtu <= 0 { return round(last) - last }
        if last > mtu { last %= mtu }
        return min(round(last), mtu) - last
    }
}
