// The plaintext of a disco message (what travels inside the NaCl box): a type byte, a version
// byte, then the type's payload. Layouts follow Tailscale's disco package; decoders are lax about
// extra bytes at the end (a newer sender may append fields), strict about bytes that are missing.

import TailscaleKeys
import WarrenPacket
import WarrenTailcfg

/// A disco ping: "are you there on this path?". The receiver answers with a ``DiscoPong`` carrying
/// the same transaction ID and the source address it saw.
public struct DiscoPing: Hashable, Sendable {
    /// The transaction ID: 12 random bytes chosen by the sender. The encoder writes exactly 12 bytes
    /// (a shorter value is zero-filled, a longer one cut).
    public var txID: [UInt8]
    /// The sender's node (WireGuard) key, as the sender claims it; absent from very old senders.
    /// Never trust it alone: match it against the network map's disco-key-to-node relation.
    public var nodeKey: NodePublic?
    /// Zero bytes after the fields, used to probe the path MTU.
    ///
    /// The wire form cannot tell padding from a node key: a ping without a key but with 32 or more
    /// bytes of padding decodes as an all-zero key (read as absent) and 32 fewer padding bytes, as
    /// Tailscale's decoder reads it.
    public var padding: Int

    public init(txID: [UInt8], nodeKey: NodePublic? = nil, padding: Int = 0) {
        self.txID = txID
        self.nodeKey = nodeKey
        self.padding = padding
    }
}

/// The answer to a ping: its transaction ID and the UDP source address the responder saw (a STUN
/// reply, in effect).
public struct DiscoPong: Hashable, Sendable {
    /// The 12-byte transaction ID of the ping being answered.
    public var txID: [UInt8]
    /// The source of the ping as the responder saw it. IPv4 travels as a v4-mapped IPv6 address and
    /// decodes back to IPv4.
    public var source: AddrPort

    public init(txID: [UInt8], source: AddrPort) {
        self.txID = txID
        self.source = source
    }
}

/// A disco message, decoded.
public enum DiscoMessage: Hashable, Sendable {
    case ping(DiscoPing)
    case pong(DiscoPong)
    /// "Call me maybe": the sender's candidate endpoints, so that the receiver pings them back and
    /// both sides punch holes at once. Sent over DERP only. May be empty.
    case callMeMaybe([AddrPort])
    /// A type this code does not know (the peer-relay messages 4 to 9, or something newer). Callers
    /// ignore it. Encoding one writes the type and version bytes alone.
    case unknown(type: UInt8)

    /// The type bytes on the wire.
    public enum MessageType {
        public static let ping: UInt8 = 0x01
        public static let pong: UInt8 = 0x02
        public static let callMeMaybe: UInt8 = 0x03
    }

    /// The version byte this code writes.
    public static let version: UInt8 = 0

    /// Bytes of a transaction ID.
    public static let txIDByteCount = 12
    /// Bytes of one endpoint in a pong or call-me-maybe: a 16-byte address and a 2-byte big-endian port.
    public static let endpointByteCount = 18

    /// The type byte of this message.
    public var type: UInt8 {
        switch self {
        case .ping: return MessageType.ping
        case .pong: return MessageType.pong
        case .callMeMaybe: return MessageType.callMeMaybe
        case .unknown(let type): return type
        }
    }

    /// The plaintext form: type byte, version byte (0), payload.
    public func encoded() -> [UInt8] {
        var out: [UInt8] = [type, Self.version]
        switch self {
        case .ping(let ping):
            out.reserveCapacity(2 + Self.txIDByteCount + (ping.nodeKey == nil ? 0 : 32) + max(0, ping.padding))
            Self.appendTxID(ping.txID, to: &out)
            if let key = ping.nodeKey, !key.isZero { out += key.rawRepresentation }
            if ping.padding > 0 { out += repeatElement(0, count: ping.padding) }
        case .pong(let pong):
            out.reserveCapacity(2 + Self.txIDByteCount + Self.endpointByteCount)
            Self.appendTxID(pong.txID, to: &out)
            Self.appendEndpoint(pong.source, to: &out)
        case .callMeMaybe(let endpoints):
            out.reserveCapacity(2 + endpoints.count * Self.endpointByteCount)
            for endpoint in endpoints { Self.appendEndpoint(endpoint, to: &out) }
        case .unknown:
            break
        }
        return out
    }

    /// Decodes a plaintext (type, version, payload).
    ///
    /// Unknown types decode to ``unknown(type:)``; a version other than 0 is read with the version 0
    /// layout; bytes after a known layout are ignored.
    ///
    /// - Throws: ``DiscoError/truncated`` if fewer than the two header bytes arrive or a known
    ///   type's fixed fields are cut short; ``DiscoError/partialEndpoint`` if a call-me-maybe ends
    ///   inside an endpoint.
    public init(decoding plaintext: some Collection<UInt8>) throws(DiscoError) {
        let bytes = Array(plaintext)
        guard bytes.count >= 2 else { throw .truncated }
        let type = bytes[0]
        let payload = bytes[2...]
        switch type {
        case MessageType.ping:
            guard payload.count >= Self.txIDByteCount else { throw .truncated }
            let txID = Array(payload.prefix(Self.txIDByteCount))
            var rest = payload.dropFirst(Self.txIDByteCount)
            var nodeKey: NodePublic?
            if rest.count >= 32 {
                let key = NodePublic(rawRepresentation: rest.prefix(32))
                nodeKey = (key?.isZero ?? true) ? nil : key
                rest = rest.dropFirst(32)
            }
            self = .ping(DiscoPing(txID: txID, nodeKey: nodeKey, padding: rest.count))
        case MessageType.pong:
            guard payload.count >= Self.txIDByteCount + Self.endpointByteCount else { throw .truncated }
            let txID = Array(payload.prefix(Self.txIDByteCount))
            let source = Self.readEndpoint(payload.dropFirst(Self.txIDByteCount).prefix(Self.endpointByteCount))
            self = .pong(DiscoPong(txID: txID, source: source))
        case MessageType.callMeMaybe:
            guard payload.count % Self.endpointByteCount == 0 else { throw .partialEndpoint }
            var endpoints: [AddrPort] = []
            endpoints.reserveCapacity(payload.count / Self.endpointByteCount)
            var start = payload.startIndex
            while start < payload.endIndex {
                endpoints.append(Self.readEndpoint(payload[start..<start + Self.endpointByteCount]))
                start += Self.endpointByteCount
            }
            self = .callMeMaybe(endpoints)
        default:
            self = .unknown(type: type)
        }
    }

    private static func appendTxID(_ txID: [UInt8], to out: inout [UInt8]) {
        out += txID.prefix(txIDByteCount)
        if txID.count < txIDByteCount { out += repeatElement(0, count: txIDByteCount - txID.count) }
    }

    /// 16 bytes of address (IPv4 as v4-mapped IPv6) and the port, big-endian.
    static func appendEndpoint(_ endpoint: AddrPort, to out: inout [UInt8]) {
        switch endpoint.address {
        case .v4:
            out += repeatElement(0, count: 10)
            out += [0xFF, 0xFF]
            out += endpoint.address.bytes
        case .v6:
            out += endpoint.address.bytes
        }
        out.append(UInt8(truncatingIfNeeded: endpoint.port >> 8))
        out.append(UInt8(truncatingIfNeeded: endpoint.port))
    }

    /// Reads 18 bytes written by ``appendEndpoint(_:to:)``; a v4-mapped address becomes IPv4.
    static func readEndpoint(_ bytes: ArraySlice<UInt8>) -> AddrPort {
        let s = bytes.startIndex
        var hi: UInt64 = 0, lo: UInt64 = 0
        for i in 0..<8 {
            hi = hi << 8 | UInt64(bytes[s + i])
            lo = lo << 8 | UInt64(bytes[s + 8 + i])
        }
        let address: IPAddress = (hi == 0 && lo >> 32 == 0xFFFF)
            ? .v4(UInt32(truncatingIfNeeded: lo)) : .v6(hi, lo)
        let port = UInt16(bytes[s + 16]) << 8 | UInt16(bytes[s + 17])
        return AddrPort(address: address, port: port)
    }
}

/// Why a disco datagram or message was rejected.
public enum DiscoError: Error, Hashable, Sendable {
    /// The datagram does not start with the disco magic, or is shorter than magic, key and nonce.
    case notDisco
    /// The box or the message inside it is shorter than its fixed fields.
    case truncated
    /// The box did not open: wrong key, or the datagram was modified.
    case authenticationFailed
    /// The peer's public key is a low-order point (its X25519 result is zero).
    case invalidPublicKey
    /// A call-me-maybe ended inside an endpoint.
    case partialEndpoint
    /// A nonce other than 24 bytes was passed to the sealer.
    case invalidNonceSize
}
