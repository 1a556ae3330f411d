import WarrenPacket
import WireGuardProtocol

/// One peer of the device. Every mutable field is guarded by the device's state lock; the
/// keypairs themselves are thread-safe and are used for crypto outside that lock.
final class Peer: @unchecked Sendable {
    let publicKey: WireGuardPublicKey
    var presharedKey: WireGuardPresharedKey = .zero
    /// Nil while the device has no private key.
    var handshake: NoiseHandshake?
    var cookies: CookieGenerator
    var endpoint: WireGuardEndpoint?

    /// The session in use; `next` is a responder's session waiting for its first data message.
    var current: Keypair?
    var previous: Keypair?
    var next: Keypair?

    var rxBytes: UInt64 = 0
    var txBytes: UInt64 = 0
    /// Wall-clock time of the last completed handshake (seconds, nanoseconds since 1970).
    var lastHandshake: (seconds: Int64, nanoseconds: Int64) = (0, 0)
    var lastInitiationSent: ContinuousClock.Instant?
    var timers = PeerTimers()
    /// Packets waiting for a session, oldest first (bounded).
    var staged: [[UInt8]] = []

    init(publicKey: WireGuardPublicKey) {
        self.publicKey = publicKey
        cookies = CookieGenerator(remotePublicKey: publicKey)
    }

    /// The keypairs that have an index in the device's table.
    var keypairs: [Keypair] { [current, previous, next].compactMap { $0 } }

    /// Queues a packet until a session exists, dropping the oldest beyond the limit.
    func stage(_ packet: UnsafeRawBufferPointer) {
        if staged.count >= WireGuardDeviceConstants.stagedPacketLimit { staged.removeFirst() }
        staged.append(Array(packet))
    }
}
