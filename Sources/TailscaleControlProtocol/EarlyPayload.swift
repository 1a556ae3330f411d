// The optional "early payload" a server may send inside Noise before HTTP/2 starts
// (tailscale/tailscale:control/ts2021/conn.go): 5-byte magic FF FF FF 'T' 'S', a 4-byte big-endian
// length, then that many bytes of JSON (tailcfg.EarlyNoise). Its 9-byte header is the size of an HTTP/2
// frame header, so a client reads 9 bytes and checks for the magic; HTTP/2 never starts with FF FF FF.

public enum ControlEarlyPayload {
    public static let magic: [UInt8] = [0xFF, 0xFF, 0xFF, UInt8(ascii: "T"), UInt8(ascii: "S")]
    public static let headerLength = 9
    /// Clients refuse larger payloads.
    public static let maximumLength = 10 << 20

    /// Frames `json` as an early payload (to be sealed into records and sent before HTTP/2).
    public static func frame(json: [UInt8]) -> [UInt8] {
        var out = magic
        out.appendBigEndian(UInt32(truncatingIfNeeded: json.count))
        return out + json
    }

    public enum Detection: Equatable, Sendable {
        /// Fewer than 9 bytes so far.
        case needMoreBytes
        /// No early payload: the bytes are HTTP/2 and must be kept.
        case absent
        /// An early payload of `length` bytes follows the 9-byte header.
        case present(length: Int)
    }

    /// Looks at the first bytes the server sent after the handshake.
    public static func detect(_ prefix: some Collection<UInt8>) throws -> Detection {
        guard prefix.count >= headerLength else { return .needMoreBytes }
        let head = Array(prefix.prefix(headerLength))
        guard Array(head[0..<5]) == magic else { return .absent }
        let length = Int(head[5]) << 24 | Int(head[6]) << 16 | Int(head[7]) << 8 | Int(head[8])
        guard length <= maximumLength else { throw ControlProtocolError(.recordTooLarge(length)) }
        return .present(length: length)
    }
}
