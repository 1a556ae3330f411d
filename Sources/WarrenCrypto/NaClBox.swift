import Crypto

/// NaCl's box (crypto_box_curve25519xsalsa20poly1305): public-key authenticated encryption.
///
/// Sender and recipient agree on `HSalsa20(X25519(secret, public), 16 zero bytes)`, and the
/// message is sealed with `NaClSecretBox` under that key. The sealed form is the 16-byte tag
/// followed by the ciphertext, as Go's `box.Seal` and libsodium's `crypto_box_easy` produce.
/// Tailscale uses it for disco messages and the DERP handshake.
///
/// ```swift
/// let sealed = try NaClBox.seal(message, nonce: nonce, recipientPublicKey: bob.publicKey, senderPrivateKey: alice)
/// let opened = try NaClBox.open(sealed, nonce: nonce, senderPublicKey: alice.publicKey, recipientPrivateKey: bob)
/// ```
///
/// A public key whose X25519 result is all zeros (a small-order point) is rejected with
/// `WarrenCryptoError.invalidPublicKey`, as libsodium does.
public enum NaClBox {
    /// The nonce size in bytes.
    public static let nonceByteCount = NaClSecretBox.nonceByteCount
    /// The size of the Poly1305 tag in bytes (the overhead of a sealed message).
    public static let tagByteCount = NaClSecretBox.tagByteCount

    /// The key shared by two parties, computed once and reused for many messages
    /// (crypto_box_beforenm; Go's `box.Precompute`).
    public struct SharedKey: Sendable {
        let bytes: [UInt8]

        /// Seals `plaintext` under this shared key (crypto_box_easy_afternm; Go's `box.SealAfterPrecomputation`).
        ///
        /// - Returns: The 16-byte tag followed by the ciphertext.
        /// - Throws: `WarrenCryptoError.invalidNonceSize` if `nonce` is not 24 bytes.
        public func seal(_ plaintext: [UInt8], nonce: [UInt8]) throws -> [UInt8] {
            try NaClSecretBox.seal(plaintext, key: bytes, nonce: nonce)
        }

        /// Opens a message sealed under this shared key (Go's `box.OpenAfterPrecomputation`).
        ///
        /// - Throws: `WarrenCryptoError.authenticationFailure` if the message was modified or sealed
        ///   with another key or nonce, `.ciphertextTooShort`, or `.invalidNonceSize`.
        public func open(_ sealed: [UInt8], nonce: [UInt8]) throws -> [UInt8] {
            try NaClSecretBox.open(sealed, key: bytes, nonce: nonce)
        }
    }

    /// Computes the shared key between `privateKey` and `publicKey` (symmetric: either party's
    /// private key with the other's public key gives the same result).
    ///
    /// - Throws: `WarrenCryptoError.invalidPublicKey` if the X25519 result is all zeros.
    public static func precompute(publicKey: Curve25519.KeyAgreement.PublicKey,
                                  privateKey: Curve25519.KeyAgreement.PrivateKey) throws -> SharedKey {
        let secret: SharedSecret
        do {
            secret = try privateKey.sharedSecretFromKeyAgreement(with: publicKey)
        } catch {
            throw WarrenCryptoError.invalidPublicKey
        }
        let raw = secret.withUnsafeBytes { [UInt8]($0) }
        guard !constantTimeEquals(raw, [UInt8](repeating: 0, count: raw.count)) else {
            throw WarrenCryptoError.invalidPublicKey
        }
        let zero = [UInt8](repeating: 0, count: 16)
        let key = raw.withUnsafeBytes { k in zero.withUnsafeBytes { Salsa20.hsalsa20(key: k, input: $0) } }
        return SharedKey(bytes: key)
    }

    /// Encrypts `plaintext` from the sender to the recipient.
    ///
    /// - Parameters:
    ///   - plaintext: The message.
    ///   - nonce: A 24-byte nonce, never reused for the same pair of keys.
    ///   - recipientPublicKey: The recipient's X25519 public key.
    ///   - senderPrivateKey: The sender's X25519 private key.
    /// - Returns: The 16-byte tag followed by the ciphertext.
    /// - Throws: `WarrenCryptoError.invalidNonceSize` or `.invalidPublicKey`.
    public static func seal(_ plaintext: [UInt8], nonce: [UInt8],
                            recipientPublicKey: Curve25519.KeyAgreement.PublicKey,
                            senderPrivateKey: Curve25519.KeyAgreement.PrivateKey) throws -> [UInt8] {
        guard nonce.count == nonceByteCount else { throw WarrenCryptoError.invalidNonceSize }
        return try precompute(publicKey: recipientPublicKey, privateKey: senderPrivateKey).seal(plaintext, nonce: nonce)
    }

    /// Checks and decrypts a message from the sender to the recipient.
    ///
    /// - Parameters:
    ///   - sealed: The tag followed by the ciphertext.
    ///   - nonce: The 24-byte nonce the sender used.
    ///   - senderPublicKey: The sender's X25519 public key.
    ///   - recipientPrivateKey: The recipient's X25519 private key.
    /// - Returns: The plaintext.
    /// - Throws: `WarrenCryptoError.authenticationFailure`, `.ciphertextTooShort`,
    ///   `.invalidNonceSize` or `.invalidPublicKey`.
    public static func open(_ sealed: [UInt8], nonce: [UInt8],
                            senderPublicKey: Curve25519.KeyAgreement.PublicKey,
                            recipientPrivateKey: Curve25519.KeyAgreement.PrivateKey) throws -> [UInt8] {
        guard nonce.count == nonceByteCount else { throw WarrenCryptoError.invalidNonceSize }
        return try precompute(publicKey: senderPublicKey, privateKey: recipientPrivateKey).open(sealed, nonce: nonce)
    }
}
