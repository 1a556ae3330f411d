// DERP v2 frames (tailscale/tailscale:derp/derp.go, derp_client.go, derpserver/derpserver.go).
//
// Every frame: 1-byte type, 4-byte big-endian payload length, payload.
//
//   0x01 ServerKey      S->C  8B magic "DERP🔑" + 32B server public key (+ bytes for future use)
//   0x02 ClientInfo     C->S  32B client public key + 24B nonce + NaCl box(JSON ClientInfo)
//   0x03 ServerInfo     S->C  24B nonce + NaCl box(JSON ServerInfo)
//   0x04 SendPacket     C->S  32B destination key + packet
//   0x05 RecvPacket     S->C  32B source key + packet (protocol v2)
//   0x06 KeepAlive      S->C  no payload
//   0x07 NotePreferred  C->S  1 byte: 1 if this is the client's home DERP, else 0
//   0x08 PeerGone       S->C  32B key + optional 1B reason (0 disconnected, 1 not here)
//   0x09 PeerPresent    S->C  32B key [+ 16B IP + 2B BE port [+ 1B flags]]
//   0x0a ForwardPacket  mesh  32B source key + 32B destination key + packet
//   0x10 WatchConns     mesh  no payload
//   0x11 ClosePeer      mesh  32B key
//   0x12 Ping / 0x13 Pong     8 bytes (a ping may carry up to 1000; the first 8 are echoed)
//   0x14 Health         S->C  UTF-8 problem text; empty clears the problem
//   0x15 Restarting     S->C  2 x 4B BE milliseconds: reconnect in, try for

import TailscaleKeys
import WarrenPacket

public enum DERPWire {
    /// "DERP🔑": 44 45 52 50 F0 9F 94 91.
    public static let magic: [UInt8] = Array("DERP🔑".utf8)
    public static let protocolVersion = 2
    public static let frameHeaderLength = 5
    public static let keyLength = 32
    public static let nonceLength = 24
    /// The largest packet a SendPacket, RecvPacket or ForwardPacket carries.
    public static let maximumPacketLength = 64 << 10
    /// The largest ServerInfo/ClientInfo JSON a client accepts (derp.go MaxInfoLen).
    public static let maximumInfoLength = 1 << 20
    /// Servers refuse larger ClientInfo frames (the client is not yet trusted).
    public static let maximumClientInfoFrameLength = 256 << 10
    /// Clients refuse any frame larger than this.
    public static let maximumFrameLength = 1 << 20
    /// Servers refuse larger pings.
    public static let maximumPingFrameLength = 1000
    /// The server sends a keep-alive at least this often (with jitter); twice this is a missed one.
    public static let keepAliveIntervalSeconds = 60
    /// Sent on the upgrade request when the client already knows the server key.
    public static let fastStartHeader = "Derp-Fast-Start"
    public static let idealNodeHeader = "Ideal-Node"
}

public enum DERPFrameType: UInt8, Sendable, CaseIterable {
    case serverKey = 0x01
    case clientInfo = 0x02
    case serverInfo = 0x03
    case sendPacket = 0x04
    case recvPacket = 0x05
    case keepAlive = 0x06
    case notePreferred = 0x07
    case peerGone = 0x08
    case peerPresent = 0x09
    case forwardPacket = 0x0A
    case watchConns = 0x10
    case closePeer = 0x11
    case ping = 0x12
    case pong = 0x13
    case health = 0x14
    case restarting = 0x15

    /// The largest payload this frame type may announce before the decoder gives up on the stream.
    public var maximumPayloadLength: Int {
        switch self {
        case .serverKey: return 1 << 10
        case .clientInfo: return DERPWire.maximumClientInfoFrameLength
        case .serverInfo: return DERPWire.nonceLength + DERPWire.maximumInfoLength
        case .sendPacket: return DERPWire.keyLength + DERPWire.maximumPacketLength
        case .forwardPacket: return 2 * DERPWire.keyLength + DERPWire.maximumPacketLength
        case .ping: return DERPWire.maximumPingFrameLength
        default: return DERPWire.maximumFrameLength
        }
    }
}

/// Why the server says a peer cannot be reached. Values other than the two on the wire are kept.
public struct DERPPeerGoneReason: RawRepresentable, Hashable, Sendable {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// The peer disconnected from this server.
    public static let disconnected = DERPPeerGoneReason(rawValue: 0x00)
    /// The server does not know the peer.
    public static let notHere = DERPPeerGoneReason(rawValue: 0x01)
}

/// The optional flags byte of a PeerPresent frame.
public struct DERPPeerPresentFlags: OptionSet, Hashable, Sendable {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let isRegular = DERPPeerPresentFlags(rawValue: 1 << 0)
    public static let isMeshPeer = DERPPeerPresentFlags(rawValue: 1 << 1)
    public static let isProber = DERPPeerPresentFlags(rawValue: 1 << 2)
    /// The client said this server is not its region's first (ideal) node.
    public static let notIdeal = DERPPeerPresentFlags(rawValue: 1 << 3)
}

public struct DERPPeerPresent: Hashable, Sendable {
    public var key: NodePublic
    /// Where the peer connected from, if the server said (older servers send only the key).
    public var address: IPAddress?
    public var port: UInt16
    /// Nil when the server sent no flags byte.
    public var flags: DERPPeerPresentFlags?

    public init(key: NodePublic, address: IPAddress? = nil, port: UInt16 = 0, flags: DERPPeerPresentFlags? = nil) {
        self.key = key
        self.address = address
        self.port = port
        self.flags = flags
    }
}

/// One DERP frame, parsed.
public enum DERPFrame: Hashable, Sendable {
    /// The server's key; `extra` holds any bytes after it (reserved for future use).
    case serverKey(NodePublic, extra: [UInt8] = [])
    /// The client's key and the sealed ClientInfo JSON (24-byte nonce + box).
    case clientInfo(clientKey: NodePublic, sealedInfo: [UInt8])
    /// The sealed ServerInfo JSON (24-byte nonce + box).
    case serverInfo(sealedInfo: [UInt8])
    case sendPacket(destination: NodePublic, packet: [UInt8])
    case recvPacket(source: NodePublic, packet: [UInt8])
    case keepAlive
    case notePreferred(Bool)
    case peerGone(NodePublic, reason: DERPPeerGoneReason)
    case peerPresent(DERPPeerPresent)
    case forwardPacket(source: NodePublic, destination: NodePublic, packet: [UInt8])
    case watchConns
    case closePeer(NodePublic)
    /// Eight bytes to echo in a pong.
    case ping([UInt8])
    case pong([UInt8])
    /// A problem with this connection; empty clears it.
    case health(String)
    case restarting(reconnectInMilliseconds: UInt32, tryForMilliseconds: UInt32)
    /// A frame type this implementation does not know; its payload was skipped.
    case unknown(type: UInt8, length: UInt32)
}

public struct DERPProtocolError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Code: Hashable, Sendable {
        /// The header announced more bytes than the frame type allows. The stream is unusable.
        case frameTooLarge(type: UInt8, length: UInt32)
        /// A whole frame with a payload of the wrong size or content (it was consumed; the stream
        /// is still in sync).
        case malformed(DERPFrameType)
        /// A frame cannot be encoded (packet larger than 64 KiB, ping not 8 bytes, ...).
        case unencodable(DERPFrameType)
        case badMagic
        /// The handshake received a frame it did not expect at this point.
        case unexpectedFrame(UInt8)
        case boxOpenFailed
        case invalidInfoJSON
        case decoderFailed
    }

    public let code: Code
    public init(_ code: Code) { self.code = code }

    public var description: String {
        switch code {
        case .frameTooLarge(let type, let length): return "DERP frame type \(type) of \(length) bytes is too large"
        case .malformed(let type): return "malformed DERP \(type) frame"
        case .unencodable(let type): return "cannot encode DERP \(type) frame"
        case .badMagic: return "DERP server key frame lacks the magic"
        case .unexpectedFrame(let type): return "unexpected DERP frame type \(type) during the handshake"
        case .boxOpenFailed: return "DERP info box did not open"
        case .invalidInfoJSON: return "DERP info JSON is invalid"
        case .decoderFailed: return "DERP stream failed earlier and is unusable"
        }
    }
}

extension DERPFrame {
    public var type: UInt8 {
        switch self {
        case .serverKey: return DERPFrameType.serverKey.rawValue
        case .clientInfo: return DERPFrameType.clientInfo.rawValue
        case .serverInfo: return DERPFrameType.serverInfo.rawValue
        case .sendPacket: return DERPFrameType.sendPacket.rawValue
        case .recvPacket: return DERPFrameType.recvPacket.rawValue
        case .keepAlive: return DERPFrameType.keepAlive.rawValue
        case .notePreferred: return DERPFrameType.notePreferred.rawValue
        case .peerGone: return DERPFrameType.peerGone.rawValue
        case .peerPresent: return DERPFrameType.peerPresent.rawValue
        case .forwardPacket: return DERPFrameType.forwardPacket.rawValue
        case .watchConns: return DERPFrameType.watchConns.rawValue
        case .closePeer: return DERPFrameType.closePeer.rawValue
        case .ping: return DERPFrameType.ping.rawValue
        case .pong: return DERPFrameType.pong.rawValue
        case .health: return DERPFrameType.health.rawValue
        case .restarting: return DERPFrameType.restarting.rawValue
        case .unknown(let type, _): return type
        }
    }

    /// The frame's payload (without the 5-byte header).
    public func payload() throws -> [UInt8] {
        func checkPacket(_ packet: [UInt8], _ type: DERPFrameType) throws {
            guard packet.count <= DERPWire.maximumPacketLength else { throw DERPProtocolError(.unencodable(type)) }
        }
        switch self {
        case .serverKey(let key, let extra):
            return DERPWire.magic + key.rawRepresentation + extra
        case .clientInfo(let key, let sealed):
            return key.rawRepresentation + sealed
        case .serverInfo(let sealed):
            return sealed
        case .sendPacket(let destination, let packet):
            try checkPacket(packet, .sendPacket)
            return destination.rawRepresentation + packet
        case .recvPacket(let source, let packet):
            try checkPacket(packet, .recvPacket)
            return source.rawRepresentation + packet
        case .keepAlive, .watchConns:
            return []
        case .notePreferred(let preferred):
            return [preferred ? 1 : 0]
        case .peerGone(let key, let reason):
            return key.rawRepresentation + [reason.rawValue]
        case .peerPresent(let present):
            var out = present.key.rawRepresentation
            guard let address = present.address else {
                guard present.flags == nil else { throw DERPProtocolError(.unencodable(.peerPresent)) }
                return out
            }
            out += address.mappedSixteenBytes
            out += [UInt8(truncatingIfNeeded: present.port >> 8), UInt8(truncatingIfNeeded: present.port)]
            if let flags = present.flags { out.append(flags.rawValue) }
            return out
        case .forwardPacket(let source, let destination, let packet):
            try checkPacket(packet, .forwardPacket)
            return source.rawRepresentation + destination.rawRepresentation + packet
        case .closePeer(let key):
            return key.rawRepresentation
        case .ping(let data):
            guard data.count == 8 else { throw DERPProtocolError(.unencodable(.ping)) }
            return data
        case .pong(let data):
            guard data.count == 8 else { throw DERPProtocolError(.unencodable(.pong)) }
            return data
        case .health(let text):
            let bytes = Array(text.utf8)
            guard bytes.count <= DERPWire.maximumFrameLength else { throw DERPProtocolError(.unencodable(.health)) }
            return bytes
        case .restarting(let reconnectIn, let tryFor):
            var out = [UInt8]()
            for value in [reconnectIn, tryFor] {
                for shift in stride(from: 24, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: value >> UInt32(shift))) }
            }
            return out
        case .unknown:
            throw DERPProtocolError(.unencodable(.keepAlive))
        }
    }

    /// The whole frame: header and payload.
    public func encoded() throws -> [UInt8] {
        let body = try payload()
        return DERPFrame.header(type: type, length: UInt32(body.count)) + body
    }

    public static func header(type: UInt8, length: UInt32) -> [UInt8] {
        [type, UInt8(truncatingIfNeeded: length >> 24), UInt8(truncatingIfNeeded: length >> 16),
         UInt8(truncatingIfNeeded: length >> 8), UInt8(truncatingIfNeeded: length)]
    }

    /// Parses a whole payload of a known frame type.
    public static func parse(type: DERPFrameType, payload p: ArraySlice<UInt8>) throws -> DERPFrame {
        let k = DERPWire.keyLength
        func key(_ offset: Int) -> NodePublic {
            // Callers check the length first.
            NodePublic(rawRepresentation: p[(p.startIndex + offset)..<(p.startIndex + offset + k)])!
        }
        func rest(_ offset: Int) -> [UInt8] { Array(p[(p.startIndex + offset)...]) }
        let malformed = DERPProtocolError(.malformed(type))
        switch type {
        case .serverKey:
            guard p.count >= DERPWire.magic.count + k else { throw malformed }
            guard Array(p.prefix(DERPWire.magic.count)) == DERPWire.magic else { throw DERPProtocolError(.badMagic) }
            return .serverKey(key(DERPWire.magic.count), extra: rest(DERPWire.magic.count + k))
        case .clientInfo:
            guard p.count >= k + DERPWire.nonceLength else { throw malformed }
            return .clientInfo(clientKey: key(0), sealedInfo: rest(k))
        case .serverInfo:
            guard p.count >= DERPWire.nonceLength else { throw malformed }
            return .serverInfo(sealedInfo: Array(p))
        case .sendPacket:
            guard p.count >= k else { throw malformed }
            return .sendPacket(destination: key(0), packet: rest(k))
        case .recvPacket:
            guard p.count >= k else { throw malformed }
            return .recvPacket(source: key(0), packet: rest(k))
        case .keepAlive:
            return .keepAlive
        case .notePreferred:
            guard p.count == 1 else { throw malformed }
            return .notePreferred(p[p.startIndex] != 0)
        case .peerGone:
            guard p.count >= k else { throw malformed }
            let reason = p.count > k ? DERPPeerGoneReason(rawValue: p[p.startIndex + k]) : .disconnected
            return .peerGone(key(0), reason: reason)
        case .peerPresent:
            guard p.count >= k else { throw malformed }
            var present = DERPPeerPresent(key: key(0))
            if p.count >= k + 18 {
                let ipStart = p.startIndex + k
                present.address = IPAddress(bytes: p[ipStart..<(ipStart + 16)])?.unmapped
                present.port = UInt16(p[ipStart + 16]) << 8 | UInt16(p[ipStart + 17])
                if p.count >= k + 19 { present.flags = DERPPeerPresentFlags(rawValue: p[ipStart + 18]) }
            }
            return .peerPresent(present)
        case .forwardPacket:
            guard p.count >= 2 * k else { throw malformed }
            return .forwardPacket(source: key(0), destination: key(k), packet: rest(2 * k))
        case .watchConns:
            guard p.isEmpty else { throw malformed }
            return .watchConns
        case .closePeer:
            guard p.count == k else { throw malformed }
            return .closePeer(key(0))
        case .ping:
            guard p.count >= 8 else { throw malformed }
            return .ping(Array(p.prefix(8)))
        case .pong:
            guard p.count >= 8 else { throw malformed }
            return .pong(Array(p.prefix(8)))
        case .health:
            return .health(String(decoding: p, as: UTF8.self))
        case .restarting:
            guard p.count >= 8 else { throw malformed }
            let b = Array(p.prefix(8))
            let first = b[0..<4].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            let second = b[4..<8].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            return .restarting(reconnectInMilliseconds: first, tryForMilliseconds: second)
        }
    }
}

extension IPAddress {
    /// 16 bytes; IPv4 as an IPv4-mapped IPv6 address (::ffff:a.b.c.d), as Go's As16 writes it.
    var mappedSixteenBytes: [UInt8] {
        switch self {
        case .v4: return [UInt8](repeating: 0, count: 10) + [0xFF, 0xFF] + bytes
        case .v6: return bytes
        }
    }

    /// An IPv4-mapped IPv6 address becomes the IPv4 address; anything else is unchanged.
    var unmapped: IPAddress {
        if case .v6(let hi, let lo) = self, hi == 0, lo >> 32 == 0xFFFF {
            return .v4(UInt32(truncatingIfNeeded: lo))
        }
        return self
    }
}
