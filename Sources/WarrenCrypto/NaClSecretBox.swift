// NaCl's crypto_secretbox_xsalsa20poly1305 in the "easy" layout of libsodium's
// crypto_secretbox_easy and Go's golang.org/x/crypto/nacl/secretbox: tag, then ciphertext.

/// NaCl's secretbox: XSalsa20 encryption with a Poly1305 tag, under a 32-byte key and a 24-byte nonce.
///
/// The first 32 bytes of the XSalsa20 key stream become the one-time Poly1305 key; the message is
/// encrypted with the key stream that follows. The sealed form is the 16-byte tag followed by the
/// ciphertext (the same length as the plaintext), which is what `secretbox.Seal` in Go and
/// `crypto_secretbox_easy` in libsodium produce. There is no associated data.
public enum NaClSecretBox {
    /// The key size in bytes.
    public static let keyByteCount = 32
    /// The nonce size in bytes.
    public static let nonceByteCount = 24
    /// The size of the Poly1305 tag in bytes (the overhead of a sealed message).
    public static let tagByteCount = 16

    /// Encrypts and authenticates `plaintext`.
    ///
    /// - Parameters:
    ///   - plaintext: The message.
    ///   - key: A 32-byte secret key.
    ///   - nonce: A 24-byte nonce, never reused with the same key (random nonces are safe).
    /// - Returns: The 16-byte tag followed by the ciphertext.
    /// - Throws: `WarrenCryptoError.invalidKeySize` or `.invalidNonceSize`.
    public static func seal(_ plaintext: [UInt8], key: [UInt8], nonce: [UInt8]) throws -> [UInt8] {
        try checkSizes(key: key, nonce: nonce)
        var stream = [UInt8](repeating: 0, count: 32)
        stream.append(contentsOf: plaintext)
        Salsa20.xsalsa20XOR(&stream, key: key, nonce: nonce)
        let tag = stream.withUnsafeBytes { all in
            Poly1305.tag(message: UnsafeRawBufferPointer(rebasing: all[32...]),
                         key: UnsafeRawBufferPointer(rebasing: all[0..<32]))
        }
        return tag + stream[32...]
    }

    /// Checks the tag, then decrypts.
    ///
    /// - Parameters:
    ///   - sealed: The tag followed by the ciphertext, as `seal` returns it.
    ///   - key: The 32-byte key used to seal.
    ///   - nonce: The 24-byte nonce used to seal.
    /// - Returns: The plaintext.
    /// - Throws: `WarrenCryptoError.authenticationFailure` if any byte was changed or the key or
    ///   nonce is wrong, `.ciphertextTooShort` for input shorter than a tag, `.invalidKeySize` or
    ///   `.invalidNonceSize` for badly sized parameters.
    public static func open(_ sealed: [UInt8], key: [UInt8], nonce: [UInt8]) throws -> [UInt8] {
        try checkSizes(key: key, nonce: nonce)
        guard sealed.count >= tagByteCount else { throw WarrenCryptoError.ciphertextTooShort }
        // The Poly1305 key is the first 32 bytes of the key stream; compute it, check, then decrypt.
        var polyKey = [UInt8](repeating: 0, count: 32)
        Salsa20.xsalsa20XOR(&polyKey, key: key, nonce: nonce)
        let expected = sealed.withUnsafeBytes { all in
            polyKey.withUnsafeBytes { Poly1305.tag(message: UnsafeRawBufferPointer(rebasing: all[tagByteCount...]), key: $0) }
        }
        guard constantTimeEquals(expected, sealed[0..<tagByteCount]) else {
            throw WarrenCryptoError.authenticationFailure
        }
        var stream = [UInt8](repeating: 0, count: 32)
        stream.append(contentsOf: sealed[tagByteCount...])
        Salsa20.xsalsa20XOR(&stream, key: key, nonce: nonce)
        return Array(stream[32...])
    }

    private static func checkSizes(key: [UInt8], nonce: [UInt8]) throws {
        guard key.count == keyByteCount else { throw WarrenCryptoError.invalidKeySize }
        guard nonce.count == nonceByteCount else { throw WarrenCryptoError.invalidNonceSize }
    }
}
