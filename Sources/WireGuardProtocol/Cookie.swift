// MAC1, MAC2 and cookies (paper section 5.3 and 5.4.7; wireguard-go device/cookie.go).
//
//   mac1   = MAC(HASH("mac1----" || receiver's static public key), msg[0..<mac1 offset])
//   cookie = MAC(responder's secret (random, renewed every 120 s), sender's address bytes)
//   mac2   = MAC(cookie, msg[0..<mac2 offset])   (16 zero bytes when there is no fresh cookie)
//   cookie reply = XChaCha20-Poly1305(HASH("cookie--" || responder's static public key),
//                                      random 24-byte nonce, cookie, associated data = msg's mac1)
//
// The address bytes are what wireguard-go's `DstToBytes` writes for a UDP endpoint: the IP
// address (4 or 16 bytes) followed by the port, little-endian (Go's `netip.AddrPort.MarshalBinary`).

import WarrenCrypto
import WarrenPacket

/// MAC offsets for the two handshake messages (the MACs are the last 32 bytes).
enum MACLayout {
    static func offsets(forMessageOfSize size: Int) -> (mac1: Int, mac2: Int)? {
        switch size {
        case HandshakeInitiation.size: return (HandshakeInitiation.mac1Offset, HandshakeInitiation.mac2Offset)
        case HandshakeResponse.size: return (HandshakeResponse.mac1Offset, HandshakeResponse.mac2Offset)
        default: return nil
        }
    }
}

/// The responder's side: checks MAC1 and MAC2 of handshake messages sent to us and makes cookie
/// replies. One per device (it is keyed by the device's own public key).
public struct CookieChecker: Sendable {
    let mac1Key: [UInt8]
    let cookieKey: [UInt8]
    var secret: [UInt8] = .init(repeating: 0, count: 32)
    var secretSetAt: ContinuousClock.Instant?

    /// A checker for handshake messages sent to `localPublicKey`.
    public init(localPublicKey: WireGuardPublicKey) {
        mac1Key = Noise.hash(WireGuardConstants.labelMAC1, localPublicKey.rawRepresentation)
        cookieKey = Noise.hash(WireGuardConstants.labelCookie, localPublicKey.rawRepresentation)
    }

    /// The bytes a sender's UDP address contributes to its cookie: the IP address, then the port
    /// in little-endian order (as wireguard-go encodes its endpoints).
    public static func sourceBytes(address: IPAddress, port: UInt16) -> [UInt8] {
        address.bytes + [UInt8(truncatingIfNeeded: port), UInt8(truncatingIfNeeded: port >> 8)]
    }

    /// Whether a whole handshake message (type 1 or 2, exact size) carries a valid MAC1.
    /// Every handshake message without one is dropped.
    public func checkMAC1(_ message: [UInt8]) -> Bool {
        guard let o = MACLayout.offsets(forMessageOfSize: message.count) else { return false }
        let expected = Noise.mac(key: mac1Key, data: message[0..<o.mac1])
        return KeyText.constantTimeEqual(expected, Array(message[o.mac1..<o.mac2]))
    }

    /// Whether the message carries a MAC2 made with the cookie this sender (`source`) would get
    /// now. False when the secret is older than 120 s (no cookie handed out with it is valid).
    public func checkMAC2(_ message: [UInt8], source: [UInt8], now: ContinuousClock.Instant) -> Bool {
        guard let o = MACLayout.offsets(forMessageOfSize: message.count),
              let setAt = secretSetAt, now - setAt <= WireGuardConstants.cookieRefreshTime
        else { return false }
        let cookie = Noise.mac(key: secret, data: source)
        let expected = Noise.mac(key: cookie, data: message[0..<o.mac2])
        return KeyText.constantTimeEqual(expected, Array(message[o.mac2...]))
    }

    /// The cookie reply for a handshake message that arrived without a valid MAC2 while under load.
    /// Renews the secret when it is older than 120 s. Nil when `message` is not a handshake message.
    public mutating func makeReply(to message: [UInt8], source: [UInt8], now: ContinuousClock.Instant,
                                   using rng: inout some RandomNumberGenerator) -> CookieReply? {
        guard let o = MACLayout.offsets(forMessageOfSize: message.count) else { return nil }
        if secretSetAt.map({ now - $0 > WireGuardConstants.cookieRefreshTime }) ?? true {
            secret = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &rng) }
            secretSetAt = now
        }
        let cookie = Noise.mac(key: secret, data: source)
        let nonce = (0..<24).map { _ in UInt8.random(in: .min ... .max, using: &rng) }
        guard let sealed = try? XChaCha20Poly1305.seal(cookie, key: cookieKey, nonce: nonce,
                                                       authenticating: Array(message[o.mac1..<o.mac2]))
        else { return nil }
        return CookieReply(receiverIndex: WireBytes.u32(message, at: 4), nonce: nonce, encryptedCookie: sealed)
    }
}

/// What to do with a handshake message before any Noise work (wireguard-go `RoutineHandshake`).
public enum HandshakeScreening: Hashable, Sendable {
    /// MAC1 (and, under load, MAC2) are valid: go on.
    case process
    /// Drop silently (bad MAC1).
    case drop
    /// Under load without a valid MAC2: send this cookie reply to the source and drop the message.
    case reply(CookieReply)
}

extension CookieChecker {
    /// Screens a handshake message (type 1 or 2) from `source` (see `sourceBytes(address:port:)`):
    /// a bad MAC1 is dropped; when `underLoad`, a message without a valid MAC2 gets a cookie reply.
    /// (Under load wireguard-go also rate-limits per source address after this: see `HandshakeRateLimiter`.)
    public mutating func screen(_ message: [UInt8], source: [UInt8], underLoad: Bool, now: ContinuousClock.Instant,
                                using rng: inout some RandomNumberGenerator) -> HandshakeScreening {
        guard checkMAC1(message) else { return .drop }
        guard underLoad else { return .process }
        if checkMAC2(message, source: source, now: now) { return .process }
        guard let reply = makeReply(to: message, source: source, now: now, using: &rng) else { return .drop }
        return .reply(reply)
    }
}

/// The sender's side, one per peer: writes MAC1 (and MAC2 while it holds a fresh cookie) into
/// handshake messages sent to that peer, and takes in the peer's cookie replies.
public struct CookieGenerator: Sendable {
    let mac1Key: [UInt8]
    let cookieKey: [UInt8]
    var lastMAC1: [UInt8]?
    var cookie: [UInt8]?
    var cookieSetAt: ContinuousClock.Instant?

    /// A generator for messages sent to the peer with static key `remotePublicKey`.
    public init(remotePublicKey: WireGuardPublicKey) {
        mac1Key = Noise.hash(WireGuardConstants.labelMAC1, remotePublicKey.rawRepresentation)
        cookieKey = Noise.hash(WireGuardConstants.labelCookie, remotePublicKey.rawRepresentation)
    }

    /// Whether a cookie younger than 120 s is held (the next message will carry MAC2).
    public func hasFreshCookie(now: ContinuousClock.Instant) -> Bool {
        guard cookie != nil, let setAt = cookieSetAt else { return false }
        return now - setAt <= WireGuardConstants.cookieRefreshTime
    }

    /// Fills in MAC1 and MAC2 of a whole handshake message (type 1 or 2). Remembers MAC1: a cookie
    /// reply to this message is checked against it.
    public mutating func addMACs(to message: inout [UInt8], now: ContinuousClock.Instant) {
        guard let o = MACLayout.offsets(forMessageOfSize: message.count) else { return }
        let mac1 = Noise.mac(key: mac1Key, data: message[0..<o.mac1])
        message.replaceSubrange(o.mac1..<o.mac2, with: mac1)
        lastMAC1 = mac1
        guard hasFreshCookie(now: now), let cookie else { return }
        let mac2 = Noise.mac(key: cookie, data: message[0..<o.mac2])
        message.replaceSubrange(o.mac2..<(o.mac2 + 16), with: mac2)
    }

    /// Takes in a cookie reply from this peer. False when it does not decrypt (it must answer the
    /// last message we sent).
    @discardableResult
    public mutating func consume(_ reply: CookieReply, now: ContinuousClock.Instant) -> Bool {
        guard let lastMAC1,
              let plain = try? XChaCha20Poly1305.open(reply.encryptedCookie, key: cookieKey, nonce: reply.nonce,
                                                      authenticating: lastMAC1),
              plain.count == 16
        else { return false }
        cookie = plain
        cookieSetAt = now
        return true
    }
}
