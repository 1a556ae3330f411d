/// Errors thrown by the primitives in `WarrenCrypto`.
///
/// Like swift-crypto's `CryptoKitError`, the cases are few and flat: callers rarely need more than
/// "the input had the wrong size" or "it did not authenticate".
public enum WarrenCryptoError: Error, Sendable, Equatable {
    /// A key had the wrong number of bytes for the algorithm.
    case invalidKeySize
    /// A nonce had the wrong number of bytes for the algorithm.
    case invalidNonceSize
    /// A sealed message was shorter than its authentication tag.
    case ciphertextTooShort
    /// The authentication tag did not match: the message, its associated data, the key or the nonce is wrong.
    case authenticationFailure
    /// A Curve25519 public key was unusable: its X25519 result with our private key is all zeros
    /// (a small-order point).
    case invalidPublicKey
}
