// STUN messages (RFC 5389) as Tailscale's net/stun uses them.
//
//    0                   1                   2                   3
//    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |0 0|     STUN Message Type     |         Message Length        |
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |                         Magic Cookie                          |
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//   |                     Transaction ID (96 bits)                  |
//   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// then attributes: 2B type, 2B value length, value padded to a multiple of 4 bytes (RFC 5389 15).

internal import Crypto

public enum STUNWire {
    public static let headerLength = 20
    public static let magicCookie: [UInt8] = [0x21, 0x12, 0xA4, 0x42]
    public static let bindingRequest: UInt16 = 0x0001
    public static let bindingSuccessResponse: UInt16 = 0x0101
    /// XOR'ed into the CRC-32 of the message for FINGERPRINT ("STUN" in ASCII).
    public static let fingerprintXOR: UInt32 = 0x5354_554E
    /// What Tailscale's client puts in SOFTWARE, and what Tailscale's STUN server insists on.
    public static let tailscaleSoftware = "tailnode"
}

/// Attribute types used here.
public enum STUNAttributeType {
    public static let mappedAddress: UInt16 = 0x0001
    public static let username: UInt16 = 0x0006
    public static let messageIntegrity: UInt16 = 0x0008
    public static let xorMappedAddress: UInt16 = 0x0020
    public static let priority: UInt16 = 0x0024
    /// Not in the RFC, but some servers send XOR-MAPPED-ADDRESS under this number; Tailscale accepts it.
    public static let xorMappedAddressAlternative: UInt16 = 0x8020
    public static let software: UInt16 = 0x8022
    public static let fingerprint: UInt16 = 0x8028
    public static let iceControlled: UInt16 = 0x8029
}

public struct STUNAttribute: Hashable, Sendable {
    public var type: UInt16
    public var value: [UInt8]

    public init(type: UInt16, value: [UInt8]) {
        self.type = type
        self.value = value
    }
}

public struct STUNError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Code: Hashable, Sendable {
        case notSTUN
        case malformedAttributes
        case notBindingRequest
        case notSuccessResponse
        case wrongSoftware
        case noFingerprint
        case wrongFingerprint
        case noMappedAddress
        case unencodable
    }

    public let code: Code
    public init(_ code: Code) { self.code = code }

    public var description: String {
        switch code {
        case .notSTUN: return "not a STUN message"
        case .malformedAttributes: return "STUN message has malformed attributes"
        case .notBindingRequest: return "STUN message is not a binding request"
        case .notSuccessResponse: return "STUN message is not a binding success response"
        case .wrongSoftware: return "STUN request did not come from Tailscale software"
        case .noFingerprint: return "STUN request does not end in a fingerprint"
        case .wrongFingerprint: return "STUN fingerprint does not match"
        case .noMappedAddress: return "STUN response has no mapped address"
        case .unencodable: return "STUN message too large to encode"
        }
    }
}

/// A STUN message: type, transaction ID and attributes in order.
public struct STUNMessage: Hashable, Sendable {
    public var type: UInt16
    /// Twelve bytes.
    public var transactionID: [UInt8]
    public var attributes: [STUNAttribute]

    public init(type: UInt16, transactionID: [UInt8], attributes: [STUNAttribute] = []) {
        self.type = type
        self.transactionID = transactionID
        self.attributes = attributes
    }

    public func attribute(_ type: UInt16) -> [UInt8]? { attributes.first { $0.type == type }?.value }

    /// True if `bytes` starts like a STUN message (RFC 5389 section 6: top two bits zero, magic cookie).
    public static func looksLikeSTUN(_ bytes: some Collection<UInt8>) -> Bool {
        guard bytes.count >= STUNWire.headerLength else { return false }
        let b = Array(bytes.prefix(8))
        return b[0] & 0xC0 == 0 && Array(b[4..<8]) == STUNWire.magicCookie
    }

    /// Parses a message. Attributes are read within the header's length; bytes after it are ignored
    /// (as Tailscale does for responses). Attribute values are returned without padding.
    public init(parsing bytes: some Collection<UInt8>) throws {
        let b = Array(bytes)
        guard Self.looksLikeSTUN(b) else { throw STUNError(.notSTUN) }
        type = UInt16(b[0]) << 8 | UInt16(b[1])
        transactionID = Array(b[8..<20])
        let length = Int(b[2]) << 8 | Int(b[3])
        guard STUNWire.headerLength + length <= b.count else { throw STUNError(.malformedAttributes) }
        attributes = try Self.parseAttributes(b[STUNWire.headerLength..<(STUNWire.headerLength + length)])
    }

    static func parseAttributes(_ body: ArraySlice<UInt8>) throws -> [STUNAttribute] {
        var out: [STUNAttribute] = []
        var i = body.startIndex
        while i < body.endIndex {
            guard body.endIndex - i >= 4 else { throw STUNError(.malformedAttributes) }
            let type = UInt16(body[i]) << 8 | UInt16(body[i + 1])
            let length = Int(body[i + 2]) << 8 | Int(body[i + 3])
            let padded = (length + 3) & ~3
            i += 4
            guard body.endIndex - i >= padded else { throw STUNError(.malformedAttributes) }
            out.append(STUNAttribute(type: type, value: Array(body[i..<(i + length)])))
            i += padded
        }
        return out
    }

    /// Encodes the message.
    ///
    /// - Parameters:
    ///   - paddingByte: what fills attribute padding (RFC 5389 lets it be anything; RFC 5769's vectors
    ///     use spaces).
    ///   - messageIntegrityKey: if set, appends MESSAGE-INTEGRITY (HMAC-SHA1; for short-term
    ///     credentials the key is the password).
    ///   - fingerprint: appends FINGERPRINT last.
    public func encoded(paddingByte: UInt8 = 0, messageIntegrityKey: [UInt8]? = nil, fingerprint: Bool = false) throws -> [UInt8] {
        var body = [UInt8]()
        for attribute in attributes {
            guard attribute.value.count <= Int(UInt16.max) else { throw STUNError(.unencodable) }
            body.appendAttribute(attribute.type, attribute.value, paddingByte: paddingByte)
        }
        guard transactionID.count == 12 else { throw STUNError(.unencodable) }
        func header(bodyLength: Int) throws -> [UInt8] {
            guard bodyLength <= Int(UInt16.max) else { throw STUNError(.unencodable) }
            var h = [UInt8(truncatingIfNeeded: type >> 8), UInt8(truncatingIfNeeded: type),
                     UInt8(truncatingIfNeeded: bodyLength >> 8), UInt8(truncatingIfNeeded: bodyLength)]
            h += STUNWire.magicCookie + transactionID
            return h
        }
        if let key = messageIntegrityKey {
            // The HMAC covers the message up to the attribute, with the length already counting it.
            let covered = try header(bodyLength: body.count + 24) + body
            let mac = HMAC<Insecure.SHA1>.authenticationCode(for: covered, using: SymmetricKey(data: key))
            body.appendAttribute(STUNAttributeType.messageIntegrity, Array(mac), paddingByte: paddingByte)
        }
        if fingerprint {
            let covered = try header(bodyLength: body.count + 8) + body
            var value = [UInt8]()
            value.appendBigEndian(CRC32.checksum(covered) ^ STUNWire.fingerprintXOR)
            body.appendAttribute(STUNAttributeType.fingerprint, value, paddingByte: paddingByte)
        }
        return try header(bodyLength: body.count) + body
    }

    /// Checks MESSAGE-INTEGRITY in the raw message `bytes` against `key` (RFC 5389 15.4).
    public static func verifyMessageIntegrity(_ bytes: some Collection<UInt8>, key: [UInt8]) -> Bool {
        let b = Array(bytes)
        guard let offset = attributeOffsets(b).first(where: { $0.type == STUNAttributeType.messageIntegrity }),
              offset.length == 20 else { return false }
        var covered = Array(b[0..<offset.start])
        let adjusted = offset.start - STUNWire.headerLength + 24
        covered[2] = UInt8(truncatingIfNeeded: adjusted >> 8)
        covered[3] = UInt8(truncatingIfNeeded: adjusted)
        let mac = Array(HMAC<Insecure.SHA1>.authenticationCode(for: covered, using: SymmetricKey(data: key)))
        let given = Array(b[(offset.start + 4)..<(offset.start + 24)])
        return zip(mac, given).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }

    /// Checks that the message ends in a FINGERPRINT matching the bytes before it (RFC 5389 15.5).
    public static func verifyFingerprint(_ bytes: some Collection<UInt8>) -> Bool {
        let b = Array(bytes)
        guard let last = attributeOffsets(b).last, last.type == STUNAttributeType.fingerprint, last.length == 4,
              last.start + 8 == b.count else { return false }
        let given = b[(last.start + 4)..<(last.start + 8)].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        return given == CRC32.checksum(b[0..<last.start]) ^ STUNWire.fingerprintXOR
    }

    /// Start offsets (of the attribute header) and value lengths of each attribute in a raw message.
    static func attributeOffsets(_ b: [UInt8]) -> [(type: UInt16, start: Int, length: Int)] {
        guard looksLikeSTUN(b) else { return [] }
        let end = min(b.count, STUNWire.headerLength + (Int(b[2]) << 8 | Int(b[3])))
        var out: [(UInt16, Int, Int)] = []
        var i = STUNWire.headerLength
        while end - i >= 4 {
            let length = Int(b[i + 2]) << 8 | Int(b[i + 3])
            let padded = (length + 3) & ~3
            guard end - i - 4 >= padded else { return [] }
            out.append((UInt16(b[i]) << 8 | UInt16(b[i + 1]), i, length))
            i += 4 + padded
        }
        return i == end ? out : []
    }
}

extension Array where Element == UInt8 {
    mutating func appendBigEndian(_ value: UInt16) {
        append(UInt8(truncatingIfNeeded: value >> 8))
        append(UInt8(truncatingIfNeeded: value))
    }

    mutating func appendBigEndian(_ value: UInt32) {
        for shift in stride(from: 24, through: 0, by: -8) { append(UInt8(truncatingIfNeeded: value >> UInt32(shift))) }
    }

    mutating func appendAttribute(_ type: UInt16, _ value: [UInt8], paddingByte: UInt8) {
        appendBigEndian(type)
        appendBigEndian(UInt16(truncatingIfNeeded: value.count))
        append(contentsOf: value)
        let padding = (4 - value.count % 4) % 4
        append(contentsOf: [UInt8](repeating: paddingByte, count: padding))
    }
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), as FINGERPRINT uses.
public enum CRC32 {
    private static let table: [UInt32] = (0..<256).map { n -> UInt32 in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    public static func checksum(_ bytes: some Sequence<UInt8>) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes { crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
        return crc ^ 0xFFFF_FFFF
    }
}
