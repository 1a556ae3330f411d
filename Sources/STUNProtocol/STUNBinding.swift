// Binding requests and responses the way Tailscale sends and accepts them
// (tailscale/tailscale:net/stun/stun.go).

import WarrenPacket

public enum STUNBinding {
    /// Tailscale's binding request: SOFTWARE "tailnode" (8 bytes, no padding) then FINGERPRINT; 40 bytes.
    public static func request(transactionID: [UInt8]) throws -> [UInt8] {
        try STUNMessage(type: STUNWire.bindingRequest, transactionID: transactionID, attributes: [
            STUNAttribute(type: STUNAttributeType.software, value: Array(STUNWire.tailscaleSoftware.utf8)),
        ]).encoded(fingerprint: true)
    }

    /// Parses a binding request as Tailscale's STUN server does, returning its transaction ID.
    ///
    /// With `requireTailscaleSoftware` (Tailscale's rule) the request must carry SOFTWARE "tailnode";
    /// either way it must end in a FINGERPRINT that matches.
    public static func parseRequest(_ bytes: some Collection<UInt8>, requireTailscaleSoftware: Bool = true) throws -> [UInt8] {
        let b = Array(bytes)
        let message = try STUNMessage(parsing: b)
        guard message.type == STUNWire.bindingRequest else { throw STUNError(.notBindingRequest) }
        if requireTailscaleSoftware {
            let software = Array(STUNWire.tailscaleSoftware.utf8)
            guard message.attributes.contains(where: { $0.type == STUNAttributeType.software && $0.value == software }) else {
                throw STUNError(.wrongSoftware)
            }
        }
        guard message.attributes.last?.type == STUNAttributeType.fingerprint else { throw STUNError(.noFingerprint) }
        guard STUNMessage.verifyFingerprint(b) else { throw STUNError(.wrongFingerprint) }
        return message.transactionID
    }

    /// A binding success response carrying XOR-MAPPED-ADDRESS (and, unless turned off, FINGERPRINT).
    public static func response(transactionID: [UInt8], address: IPAddress, port: UInt16,
                                software: String? = nil, fingerprint: Bool = true) throws -> [UInt8] {
        guard transactionID.count == 12 else { throw STUNError(.unencodable) }
        var attributes: [STUNAttribute] = []
        if let software { attributes.append(STUNAttribute(type: STUNAttributeType.software, value: Array(software.utf8))) }
        attributes.append(xorMappedAddress(transactionID: transactionID, address: address, port: port))
        return try STUNMessage(type: STUNWire.bindingSuccessResponse, transactionID: transactionID, attributes: attributes)
            .encoded(fingerprint: fingerprint)
    }

    /// The XOR-MAPPED-ADDRESS attribute (RFC 5389 15.2): the port XOR the cookie's top 16 bits; the
    /// address XOR the cookie (IPv4) or the cookie followed by the transaction ID (IPv6).
    public static func xorMappedAddress(transactionID: [UInt8], address: IPAddress, port: UInt16) -> STUNAttribute {
        let family: UInt8 = address.version == .v4 ? 0x01 : 0x02
        var value: [UInt8] = [0, family]
        value.appendBigEndian(port ^ 0x2112)
        let mask = STUNWire.magicCookie + transactionID
        value += address.bytes.enumerated().map { $0.element ^ ($0.offset < mask.count ? mask[$0.offset] : 0) }
        return STUNAttribute(type: STUNAttributeType.xorMappedAddress, value: value)
    }

    /// Parses a binding success response: transaction ID and the mapped address. XOR-MAPPED-ADDRESS
    /// (0x0020 or 0x8020) wins; MAPPED-ADDRESS is the fallback.
    public static func parseResponse(_ bytes: some Collection<UInt8>) throws -> (transactionID: [UInt8], address: IPAddress, port: UInt16) {
        let message = try STUNMessage(parsing: bytes)
        guard message.type == STUNWire.bindingSuccessResponse else { throw STUNError(.notSuccessResponse) }
        var xorMapped: (IPAddress, UInt16)?
        var mapped: (IPAddress, UInt16)?
        for attribute in message.attributes {
            switch attribute.type {
            case STUNAttributeType.xorMappedAddress, STUNAttributeType.xorMappedAddressAlternative:
                xorMapped = try decodeAddress(attribute.value, xorWith: STUNWire.magicCookie + message.transactionID)
            case STUNAttributeType.mappedAddress:
                mapped = try decodeAddress(attribute.value, xorWith: nil)
            default:
                continue
            }
        }
        guard let (address, port) = xorMapped ?? mapped else { throw STUNError(.noMappedAddress) }
        return (message.transactionID, address, port)
    }

    private static func decodeAddress(_ value: [UInt8], xorWith mask: [UInt8]?) throws -> (IPAddress, UInt16) {
        guard value.count >= 4 else { throw STUNError(.malformedAttributes) }
        let length: Int
        switch value[1] {
        case 0x01: length = 4
        case 0x02: length = 16
        default: throw STUNError(.malformedAttributes)
        }
        guard value.count >= 4 + length else { throw STUNError(.malformedAttributes) }
        var port = UInt16(value[2]) << 8 | UInt16(value[3])
        var raw = Array(value[4..<(4 + length)])
        if let mask {
            port ^= 0x2112
            raw = raw.enumerated().map { $0.element ^ mask[$0.offset] }
        }
        // 4 or 16 bytes by construction.
        guard var address = IPAddress(bytes: raw) else { throw STUNError(.malformedAttributes) }
        if case .v6(let hi, let lo) = address, hi == 0, lo >> 32 == 0xFFFF { address = .v4(UInt32(truncatingIfNeeded: lo)) }
        return (address, port)
    }
}
