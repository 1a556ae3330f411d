import CWarrenOpenSSL

// ChaCha20-Poly1305 (RFC 8439) for WireGuard's data plane, in place and without allocating per
// packet: OpenSSL's EVP_chacha20_poly1305 with a cipher context that each thread keeps and reuses.

/// A ChaCha20-Poly1305 key for WireGuard transport messages (one per direction per session).
///
/// The nonce is WireGuard's: 4 zero bytes then the 64-bit little-endian packet counter. There is no
/// associated data. Operations run in place on caller memory through a `ChaCha20Poly1305Context`.
///
/// Thread safety: the key is immutable after creation and may be used from any number of threads
/// at once, each with its own `ChaCha20Poly1305Context`.
///
/// ```swift
/// let key = try ChaCha20Poly1305Key(sendingKeyBytes)
/// let context = ChaCha20Poly1305Context()          // one per thread
/// key.seal(counter: n, buffer: packet, plaintextCount: length, context: context)
/// ```
public final class ChaCha20Poly1305Key: @unchecked Sendable {
    /// The key size in bytes.
    public static let keyByteCount = 32
    /// The tag size in bytes; sealing writes it right after the ciphertext.
    public static let tagByteCount = 16

    /// 32 key bytes in memory owned by this object, written once in `init`, erased in `deinit`.
    private let keyBytes: UnsafeMutablePointer<UInt8>

    /// Errors from creating a key.
    public enum Error: Swift.Error, Sendable, Equatable {
        /// The key was not 32 bytes.
        case invalidKeySize
    }

    /// Creates a key from 32 bytes.
    ///
    /// - Throws: `ChaCha20Poly1305Key.Error.invalidKeySize` for any other length.
    public init<Bytes: Collection>(_ bytes: Bytes) throws where Bytes.Element == UInt8 {
        guard bytes.count == Self.keyByteCount else { throw Error.invalidKeySize }
        keyBytes = .allocate(capacity: Self.keyByteCount)
        _ = UnsafeMutableBufferPointer(start: keyBytes, count: Self.keyByteCount).initialize(from: bytes)
    }

    deinit {
        OPENSSL_cleanse(keyBytes, Self.keyByteCount)
        keyBytes.deallocate()
    }

    /// Encrypts `plaintextCount` bytes at the start of `buffer` in place and writes the 16-byte tag
    /// right after them.
    ///
    /// - Parameters:
    ///   - counter: The 64-bit counter that forms the nonce; never reuse one with the same key.
    ///   - buffer: Holds the plaintext at its start and room for the tag:
    ///     `buffer.count >= plaintextCount + 16`.
    ///   - plaintextCount: The number of bytes to encrypt (0 or more).
    ///   - context: The calling thread's context.
    ///
    /// A buffer too small or a length beyond `Int32.max - 16` is a programming error and traps.
    ///   - bigEndianCounter: The counter goes into the nonce big-endian (Tailscale's ts2021 records, controlbase)
    ///     instead of WireGuard's little-endian.
    public func seal(counter: UInt64, buffer: UnsafeMutableRawBufferPointer, plaintextCount: Int,
                     context: ChaCha20Poly1305Context, bigEndianCounter: Bool = false) {
        precondition(plaintextCount >= 0 && plaintextCount <= Int(Int32.max) - Self.tagByteCount,
                     "plaintextCount out of range")
        precondition(buffer.count >= plaintextCount + Self.tagByteCount, "buffer has no room for the tag")
        let ctx = context.ctx
        let ok = context.withNonce(counter: counter, bigEndian: bigEndianCounter) { nonce -> Bool in
            guard EVP_EncryptInit_ex(ctx, nil, nil, keyBytes, nonce) == 1 else { return false }
            var written: Int32 = 0
            if plaintextCount > 0 {
                let data = buffer.baseAddress!.assumingMemoryBound(to: UInt8.self)
                guard EVP_EncryptUpdate(ctx, data, &written, data, Int32(plaintextCount)) == 1 else { return false }
            }
            var finalWritten: Int32 = 0
            guard EVP_EncryptFinal_ex(ctx, nil, &finalWritten) == 1 else { return false }
            let tag = buffer.baseAddress! + plaintextCount
            return EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, Int32(Self.tagByteCount), tag) == 1
        }
        // EVP calls with a valid context and in-range lengths cannot fail.
        precondition(ok, "OpenSSL ChaCha20-Poly1305 seal failed")
    }

    /// Checks the tag and decrypts in place: the `ciphertextAndTagCount - 16` bytes at the start of
    /// `buffer` become the plaintext.
    ///
    /// - Parameters:
    ///   - counter: The counter the sender used.
    ///   - buffer: Holds the ciphertext followed by the tag.
    ///   - ciphertextAndTagCount: The number of bytes of ciphertext and tag.
    ///   - context: The calling thread's context.
    /// - Returns: `true` if the tag was right. On `false` (bad tag, or a count shorter than a tag or
    ///   larger than `buffer`) the ciphertext bytes are overwritten with zeros, so no unauthenticated
    ///   plaintext is left behind; drop the packet.
    ///   - bigEndianCounter: As in ``seal(counter:buffer:plaintextCount:context:bigEndianCounter:)``.
    public func open(counter: UInt64, buffer: UnsafeMutableRawBufferPointer, ciphertextAndTagCount: Int,
                     context: ChaCha20Poly1305Context, bigEndianCounter: Bool = false) -> Bool {
        guard ciphertextAndTagCount >= Self.tagByteCount, ciphertextAndTagCount <= buffer.count,
              ciphertextAndTagCount <= Int(Int32.max) else { return false }
        let ciphertextCount = ciphertextAndTagCount - Self.tagByteCount
        let ctx = context.ctx
        let ok = context.withNonce(counter: counter, bigEndian: bigEndianCounter) { nonce -> Bool in
            guard EVP_DecryptInit_ex(ctx, nil, nil, keyBytes, nonce) == 1 else { return false }
            let tag = buffer.baseAddress! + ciphertextCount
            guard EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, Int32(Self.tagByteCount), tag) == 1 else {
                return false
            }
            var written: Int32 = 0
            if ciphertextCount > 0 {
                let data = buffer.baseAddress!.assumingMemoryBound(to: UInt8.self)
                guard EVP_DecryptUpdate(ctx, data, &written, data, Int32(ciphertextCount)) == 1 else { return false }
            }
            var finalWritten: Int32 = 0
            return EVP_DecryptFinal_ex(ctx, nil, &finalWritten) == 1
        }
        if !ok, ciphertextCount > 0 {
            buffer.baseAddress!.initializeMemory(as: UInt8.self, repeating: 0, count: ciphertextCount)
        }
        return ok
    }
}

/// An OpenSSL cipher context for `ChaCha20Poly1305Key`, reused for every packet so that sealing and
/// opening allocate nothing.
///
/// Thread safety: a context is mutable state; use each one from one thread at a time (typically one
/// per worker thread). It works with any number of keys.
public final class ChaCha20Poly1305Context {
    let ctx: OpaquePointer
    /// The 12-byte nonce under construction: 4 zero bytes then the little-endian counter.
    private let nonce: UnsafeMutablePointer<UInt8>

    /// Creates a context. Traps if OpenSSL cannot allocate one or lacks ChaCha20-Poly1305
    /// (neither happens on a working system).
    public init() {
        guard let ctx = EVP_CIPHER_CTX_new() else { fatalError("EVP_CIPHER_CTX_new failed") }
        // Bind the cipher once; each packet then only sets the key and nonce, which allocates nothing.
        guard EVP_EncryptInit_ex(ctx, EVP_chacha20_poly1305(), nil, nil, nil) == 1 else {
            EVP_CIPHER_CTX_free(ctx)
            fatalError("OpenSSL has no ChaCha20-Poly1305")
        }
        self.ctx = ctx
        nonce = .allocate(capacity: 12)
        nonce.initialize(repeating: 0, count: 12)
    }

    deinit {
        EVP_CIPHER_CTX_free(ctx)
        nonce.deallocate()
    }

    @inline(__always)
    func withNonce<R>(counter: UInt64, bigEndian: Bool = false, _ body: (UnsafePointer<UInt8>) -> R) -> R {
        var value = counter
        for i in 0..<8 {
            nonce[bigEndian ? 11 - i : 4 + i] = UInt8(truncatingIfNeeded: value)
            value >>= 8
        }
        return body(nonce)
    }
}

@available(*, unavailable)
extension ChaCha20Poly1305Context: Sendable {}
