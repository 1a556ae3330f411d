// The disco datagram: magic "TS💬", the sender's disco public key, a 24-byte nonce, and a NaCl box
// (sender's disco private key to receiver's disco public key) holding a DiscoMessage. It travels
// as a UDP datagram on the WireGuard socket (told apart by the magic) or as a DERP packet.

internal import Crypto
import TailscaleKeys
import WarrenCrypto

/// The NaCl box key between our disco key and one peer's, computed once per peer (X25519 and
/// HSalsa20) and reused for every message either way.
public struct DiscoSharedKey: Sendable {
    let box: NaClBox.SharedKey
    /// The peer this key is shared with.
    public let peer: DiscoPublic

    /// - Throws: ``DiscoError/invalidPublicKey`` if `peer` is a low-order point.
    public init(privateKey: DiscoPrivate, peer: DiscoPublic) throws(DiscoError) {
        do {
            box = try NaClBox.precompute(
                publicKey: Curve25519.KeyAgreement.PublicKey(rawRepresentation: peer.rawRepresentation),
                privateKey: Curve25519.KeyAgreement.PrivateKey(rawRepresentation: privateKey.rawRepresentation))
        } catch {
            throw .invalidPublicKey
        }
        self.peer = peer
    }
}

/// Framing, sealing and opening of disco datagrams.
public enum DiscoPacket {
    /// "TS💬" in UTF-8.
    public static let magic: [UInt8] = [0x54, 0x53, 0xF0, 0x9F, 0x92, 0xAC]
    public static let keyByteCount = 32
    public static let nonceByteCount = 24
    /// Magic, sender key and nonce.
    public static let headerByteCount = 6 + 32 + 24
    /// The Poly1305 tag in front of the ciphertext.
    public static let tagByteCount = 16
    /// The shortest datagram that can hold a message: header, tag, type and version.
    public static let minimumMessageByteCount = headerByteCount + tagByteCount + 2

    /// Whether `datagram` starts with the magic and is long enough for magic, key and nonce (the
    /// demultiplexing check on the receive path; no allocation).
    @inlinable
    public static func looksLikeDisco(_ datagram: UnsafeRawBufferPointer) -> Bool {
        guard datagram.count >= 62 else { return false }
        return datagram[0] == 0x54 && datagram[1] == 0x53 && datagram[2] == 0xF0
            && datagram[3] == 0x9F && datagram[4] == 0x92 && datagram[5] == 0xAC
    }

    /// ``looksLikeDisco(_:)-(UnsafeRawBufferPointer)`` for byte collections.
    public static func looksLikeDisco(_ datagram: some Collection<UInt8>) -> Bool {
        if let answer = datagram.withContiguousStorageIfAvailable({ looksLikeDisco(UnsafeRawBufferPointer($0)) }) {
            return answer
        }
        return looksLikeDisco(Array(datagram))
    }

    /// The sender's disco key, read from the clear header (unauthenticated until the box opens);
    /// nil if the datagram does not look like disco.
    public static func senderKey(of datagram: UnsafeRawBufferPointer) -> DiscoPublic? {
        guard looksLikeDisco(datagram) else { return nil }
        return DiscoPublic(rawRepresentation: UnsafeRawBufferPointer(rebasing: datagram[6..<38]))
    }

    /// ``senderKey(of:)-(UnsafeRawBufferPointer)`` for byte collections.
    public static func senderKey(of datagram: some Collection<UInt8>) -> DiscoPublic? {
        if let answer = datagram.withContiguousStorageIfAvailable({ senderKey(of: UnsafeRawBufferPointer($0)) }) {
            return answer
        }
        return senderKey(of: Array(datagram))
    }

    /// Seals `message` from `sender` to `receiver`.
    ///
    /// - Parameter nonce: 24 bytes, never repeated for the same pair of keys (pass fresh random bytes).
    /// - Throws: ``DiscoError/invalidNonceSize`` or ``DiscoError/invalidPublicKey``.
    public static func seal(_ message: DiscoMessage, from sender: DiscoPrivate, to receiver: DiscoPublic,
                            nonce: [UInt8]) throws(DiscoError) -> [UInt8] {
        try seal(message, from: sender.publicKey, sharedKey: DiscoSharedKey(privateKey: sender, peer: receiver), nonce: nonce)
    }

    /// Seals with a key computed earlier; `senderPublic` is our own disco public key (it goes in the header).
    public static func seal(_ message: DiscoMessage, from senderPublic: DiscoPublic, sharedKey: DiscoSharedKey,
                            nonce: [UInt8]) throws(DiscoError) -> [UInt8] {
        guard nonce.count == nonceByteCount else { throw .invalidNonceSize }
        let sealed: [UInt8]
        do {
            sealed = try sharedKey.box.seal(message.encoded(), nonce: nonce)
        } catch {
            throw .invalidNonceSize
        }
        var out = [UInt8]()
        out.reserveCapacity(headerByteCount + sealed.count)
        out += magic
        out += senderPublic.rawRepresentation
        out += nonce
        out += sealed
        return out
    }

    /// Opens a datagram addressed to `receiver`.
    ///
    /// - Returns: The sender's disco key (authenticated by the box) and the message.
    /// - Throws: ``DiscoError/notDisco``, ``DiscoError/truncated``, ``DiscoError/invalidPublicKey``,
    ///   ``DiscoError/authenticationFailed``, or a message decoding error.
    public static func open(_ datagram: some Collection<UInt8>, with receiver: DiscoPrivate)
        throws(DiscoError) -> (sender: DiscoPublic, message: DiscoMessage) {
        let bytes = Array(datagram)
        guard let sender = senderKey(of: bytes) else { throw .notDisco }
        let key = try DiscoSharedKey(privateKey: receiver, peer: sender)
        return (sender, try open(bytes, sharedKey: key))
    }

    /// Opens a datagram with a key computed earlier for its sender (look the sender up with
    /// ``senderKey(of:)-(UnsafeRawBufferPointer)`` first).
    ///
    /// - Throws: ``DiscoError/notDisco``; ``DiscoError/authenticationFailed`` also when the header
    ///   names a sender other than `sharedKey.peer`; ``DiscoError/truncated``; a decoding error.
    public static func open(_ datagram: some Collection<UInt8>, sharedKey: DiscoSharedKey) throws(DiscoError) -> DiscoMessage {
        let bytes = Array(datagram)
        guard let sender = senderKey(of: bytes) else { throw .notDisco }
        guard sender == sharedKey.peer else { throw .authenticationFailed }
        guard bytes.count >= minimumMessageByteCount else { throw .truncated }
        let nonce = Array(bytes[38..<headerByteCount])
        let plaintext: [UInt8]
        do {
            plaintext = try sharedKey.box.open(Array(bytes[headerByteCount...]), nonce: nonce)
        } catch {
            throw .authenticationFailed
        }
        return try DiscoMessage(decoding: plaintext)
    }
}
