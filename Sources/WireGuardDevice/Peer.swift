import Synchronization
import WarrenPacket
import WireGuardProtocol

/// One peer of the device: its configuration, its protocol state (`PeerSession`, which owns the
/// handshake, cookies, keypairs, timers and endpoint), the packets waiting for a session and the
/// statistics. Every mutable field is guarded by the device's state lock; keypairs are
/// thread-safe and are used for crypto outside that lock.
final class Peer: Hashable, @unchecked Sendable {
    typealias Session = PeerSession<WireGuardEndpoint>

    let publicKey: WireGuardPublicKey
    var presharedKey: WireGuardPresharedKey = .zero
    /// Persistent keepalive interval in seconds (0: off).
    var persistentKeepalive: UInt16 = 0
    /// The protocol state; nil while the device has no private key. After changing it, call
    /// `syncFromSession` (the data path reads the copies below, not the generic session).
    var session: Session?
    private(set) var hasSession = false
    /// The session's keypairs, copied after every event (three references: cheap to read per packet).
    private(set) var keypairs = KeypairSet()
    /// The session's endpoint, copied after every event.
    private var storedEndpoint: WireGuardEndpoint?

    var rxBytes: UInt64 = 0
    /// Bytes of datagrams the bind took for sending (counted after the send, outside the state lock).
    private let transmitted = Atomic<UInt64>(0)
    var txBytes: UInt64 { transmitted.load(ordering: .relaxed) }
    func countTransmitted(_ bytes: Int) { transmitted.add(UInt64(bytes), ordering: .relaxed) }
    /// Wall-clock time of the last completed handshake (seconds, nanoseconds since 1970).
    var lastHandshake: (seconds: Int64, nanoseconds: Int64) = (0, 0)
    /// Packets waiting for a session, oldest first (at most `stagedPacketLimit`).
    private(set) var staged: [[UInt8]] = []

    init(publicKey: WireGuardPublicKey) {
        self.publicKey = publicKey
    }

    static func == (a: Peer, b: Peer) -> Bool { a === b }
    func hash(into hasher: inout Hasher) { hasher.combine(ObjectIdentifier(self)) }

    /// Where packets for this peer go: configured, then the source of its last authenticated packet.
    var endpoint: WireGuardEndpoint? {
        get { storedEndpoint }
        set {
            storedEndpoint = newValue
            if hasSession { session!.endpoint = newValue }
        }
    }

    /// Copies what the data path reads from the session.
    func syncFromSession() {
        hasSession = session != nil
        if hasSession {
            keypairs = session!.keypairs
            storedEndpoint = session!.endpoint
        } else {
            keypairs = KeypairSet()
        }
    }

    var keepaliveInterval: Duration? { persistentKeepalive == 0 ? nil : .seconds(Int(persistentKeepalive)) }

    /// A fresh session for the device key `privateKey` (nil: none), keeping the configuration.
    /// The caller releases the old session's indices first.
    func resetSession(privateKey: WireGuardPrivateKey?, cipher: any TransportCipher.Type) {
        let endpoint = self.endpoint
        session = privateKey.map {
            Session(localStatic: $0, remoteStatic: publicKey, presharedKey: presharedKey, endpoint: endpoint,
                    persistentKeepaliveInterval: keepaliveInterval, cipher: cipher)
        }
        storedEndpoint = endpoint
        syncFromSession()
    }

    /// Queues a packet until a session exists, dropping the oldest beyond the limit.
    func stage(_ packet: UnsafeRawBufferPointer) {
        if staged.count >= WireGuardDeviceConstants.stagedPacketLimit { staged.removeFirst() }
        staged.append(Array(packet))
    }

    /// Takes every staged packet.
    func takeStaged() -> [[UInt8]] {
        defer { staged = [] }
        return staged
    }

    func dropStaged() { staged = [] }
}
