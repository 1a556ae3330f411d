// The ts2021 control channel's wire constants and message layouts
// (tailscale/tailscale:control/controlbase/messages.go, conn.go).
//
// Handshake initiation (client -> server, 101 bytes; sent base64 in the X-Tailscale-Handshake header):
//
//   2B  protocol version, big-endian (the client's capability version)
//   1B  type 0x01
//   2B  payload length, big-endian (96)
//   32B client ephemeral public key (clear)
//   48B client machine public key (encrypted, 32 + 16 tag)
//   16B tag over the empty payload
//
// Handshake response (server -> client, 51 bytes):
//
//   1B type 0x02 | 2B length (48) | 32B server ephemeral public key | 16B tag
//
// Error (server -> client, instead of a response): 1B type 0x03 | 2B length | text (unauthenticated).
// Transport record: 1B type 0x04 | 2B length | ChaCha20-Poly1305 ciphertext. A whole record is at most
// 4096 bytes, so at most 4093 bytes of ciphertext and 4077 of plaintext.

public enum ControlWire {
    /// The Noise protocol name, mixed into the initial handshake hash.
    public static let noiseProtocolName = "Noise_IK_25519_ChaChaPoly_BLAKE2s"
    /// The prologue is this prefix followed by the decimal protocol version.
    public static let prologuePrefix = "Tailscale Control Protocol v"

    public static let headerLength = 3
    public static let initiationHeaderLength = 5
    public static let initiationLength = 101
    public static let responseLength = 51
    public static let maximumMessageLength = 4096
    public static let maximumCiphertextLength = maximumMessageLength - headerLength
    public static let tagLength = 16
    public static let maximumPlaintextLength = maximumCiphertextLength - tagLength

    /// The HTTP upgrade for ts2021 (tailscale/tailscale:control/controlhttp/controlhttpcommon).
    public static let upgradeHeaderValue = "tailscale-control-protocol"
    public static let handshakeHeaderName = "X-Tailscale-Handshake"

    public static func prologue(version: UInt16) -> [UInt8] {
        Array((prologuePrefix + String(version)).utf8)
    }
}

/// The type byte of a control-channel message.
public enum ControlMessageType: UInt8, Sendable {
    case initiation = 1
    case response = 2
    case error = 3
    case record = 4
}

/// Everything that can go wrong on the control channel. The text never echoes peer input.
public struct ControlProtocolError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Code: Hashable, Sendable {
        case wrongInitiationLength
        case unexpectedMessageType(UInt8)
        case wrongPayloadLength
        case decryptionFailed
        case lowOrderKey
        case recordTooLarge(Int)
        case nonceExhausted
        case channelFailed
        /// The server answered the initiation with an error message; its text is an unauthenticated hint.
        case serverError(String)
    }

    public let code: Code

    public init(_ code: Code) { self.code = code }

    public var description: String {
        switch code {
        case .wrongInitiationLength: return "wrong handshake initiation size"
        case .unexpectedMessageType(let t): return "unexpected control message type \(t)"
        case .wrongPayloadLength: return "wrong handshake payload length"
        case .decryptionFailed: return "control message failed authentication"
        case .lowOrderKey: return "peer key is a low-order point"
        case .recordTooLarge(let n): return "control record of \(n) bytes exceeds the 4096-byte limit"
        case .nonceExhausted: return "control cipher nonces exhausted"
        case .channelFailed: return "control channel failed earlier and is unusable"
        case .serverError(let text): return "server refused handshake: \(text)"
        }
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
}

extension Collection where Element == UInt8 {
    /// Big-endian UInt16 at `offset` from the start; nil if out of range.
    func bigEndianUInt16(at offset: Int) -> UInt16? {
        guard offset >= 0, count >= offset + 2 else { return nil }
        let i = index(startIndex, offsetBy: offset)
        return UInt16(self[i]) << 8 | UInt16(self[index(after: i)])
    }
}
