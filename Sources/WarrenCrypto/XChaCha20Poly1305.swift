import Crypto

/// AEAD_XChaCha20_Poly1305 (draft-irtf-cfrg-xchacha-03): ChaCha20-Poly1305 with a 24-byte nonce.
///
/// HChaCha20 turns the key and the first 16 bytes of the nonce into a subkey; the subkey then seals
/// with the RFC 8439 AEAD (swift-crypto's `ChaChaPoly`) under the nonce `00 00 00 00 || nonce[16..<24]`.
/// The long nonce may be chosen at random for every message. WireGuard uses this for cookie replies.
///
/// ```swift
/// let sealed = try XChaCha20Poly1305.seal(message, key: key, nonce: nonce, authenticating: header)
/// let opened = try XChaCha20Poly1305.open(sealed, key: key, nonce: nonce, authenticating: header)
/// ```
public enum XChaCha20Poly1305 {
    /// The key size in bytes.
    public static let keyByteCount = 32
    /// The nonce size in bytes.
    public static let nonceByteCount = 24
    /// The size of the authentication tag in bytes.
    public static let tagByteCount = 16

    /// Encrypts and authenticates `plaintext`, and authenticates `aad`.
    ///
    /// - Parameters:
    ///   - plaintext: The message to encrypt.
    ///   - key: A 32-byte key.
    ///   - nonce: A 24-byte nonce, never reused with the same key.
    ///   - aad: Associated data, authenticated but not encrypted.
    /// - Returns: The ciphertext (as long as `plaintext`) followed by the 16-byte tag.
    /// - Throws: `WarrenCryptoError.invalidKeySize` or `.invalidNonceSize`.
    public static func seal(_ plaintext: [UInt8], key: [UInt8], nonce: [UInt8],
                            authenticating aad: [UInt8] = []) throws -> [UInt8] {
        let (subkey, innerNonce) = try derive(key: key, nonce: nonce)
        let box = try ChaChaPoly.seal(plaintext, using: subkey, nonce: innerNonce, authenticating: aad)
        return Array(box.ciphertext) + Array(box.tag)
    }

    /// Checks the tag of `ciphertextAndTag` and `aad`, then decrypts.
    ///
    /// - Parameters:
    ///   - ciphertextAndTag: The ciphertext followed by the 16-byte tag, as `seal` returns it.
    ///   - key: The 32-byte key used to seal.
    ///   - nonce: The 24-byte nonce used to seal.
    ///   - aad: The associated data given to `seal`.
    /// - Returns: The plaintext.
    /// - Throws: `WarrenCryptoError.authenticationFailure` if anything was modified or the key or nonce
    ///   is wrong; `.ciphertextTooShort` if the input is shorter than a tag; `.invalidKeySize` or
    ///   `.invalidNonceSize` for badly sized parameters.
    public static func open(_ ciphertextAndTag: [UInt8], key: [UInt8], nonce: [UInt8],
                            authenticating aad: [UInt8] = []) throws -> [UInt8] {
        let (subkey, innerNonce) = try derive(key: key, nonce: nonce)
        guard ciphertextAndTag.count >= tagByteCount else { throw WarrenCryptoError.ciphertextTooShort }
        let split = ciphertextAndTag.count - tagByteCount
        do {
            let box = try ChaChaPoly.SealedBox(nonce: innerNonce,
                                               ciphertext: ciphertextAndTag[..<split],
                                               tag: ciphertextAndTag[split...])
            return Array(try ChaChaPoly.open(box, using: subkey, authenticating: aad))
        } catch {
            throw WarrenCryptoError.authenticationFailure
        }
    }

    private static func derive(key: [UInt8], nonce: [UInt8]) throws -> (SymmetricKey, ChaChaPoly.Nonce) {
        guard key.count == keyByteCount else { throw WarrenCryptoError.invalidKeySize }
        guard nonce.count == nonceByteCount else { throw WarrenCryptoError.invalidNonceSize }
        let subkey = key.withUnsafeBytes { k in
            nonce.withUnsafeBytes { n in
                HChaCha20.subkey(key: k, nonce: UnsafeRawBufferPointer(rebasing: n[0..<16]))
            }
        }
        let innerNonce = [UInt8](repeating: 0, count: 4) + nonce[16..<24]
        return (SymmetricKey(data: subkey), try ChaChaPoly.Nonce(data: innerNonce))
    }
}
