import Foundation
import WarrenFastAEAD
public import WireGuardProtocol

/// `TransportCipher` over `WarrenFastAEAD`: ChaCha20-Poly1305 in place on OpenSSL with a cipher
/// context per thread (kept in thread-local storage), so that sealing and opening a packet
/// allocate nothing. The device uses it for every keypair unless told otherwise.
public struct FastTransportCipher: TransportCipher {
    let key: ChaCha20Poly1305Key

    public init(key: [UInt8]) {
        // The handshake always derives 32-byte keys.
        guard let k = try? ChaCha20Poly1305Key(key) else { preconditionFailure("transport keys are 32 bytes") }
        self.key = k
    }

    public func sealInPlace(_ buffer: UnsafeMutableRawBufferPointer, count: Int, counter: UInt64) {
        key.seal(counter: counter, buffer: buffer, plaintextCount: count, context: ThreadCipherContext.current)
    }

    public func openInPlace(_ buffer: UnsafeMutableRawBufferPointer, counter: UInt64) -> Bool {
        key.open(counter: counter, buffer: buffer, ciphertextAndTagCount: buffer.count,
                 context: ThreadCipherContext.current)
    }
}

/// The calling thread's `ChaCha20Poly1305Context`, made on first use and freed when the thread ends.
enum ThreadCipherContext {
    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        let rc = pthread_key_create(&key) { raw in
            guard let raw else { return }
            Unmanaged<ChaCha20Poly1305Context>.fromOpaque(raw).release()
        }
        precondition(rc == 0, "pthread_key_create failed")
        return key
    }()

    static var current: ChaCha20Poly1305Context {
        if let raw = pthread_getspecific(key) {
            return Unmanaged<ChaCha20Poly1305Context>.fromOpaque(raw).takeUnretainedValue()
        }
        let context = ChaCha20Poly1305Context()
        pthread_setspecific(key, Unmanaged.passRetained(context).toOpaque())
        return context
    }
}
