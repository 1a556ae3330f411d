// What a DERP relay is told at start.

public import DERPProtocol
public import Logging
public import NIOCore
public import TailscaleKeys

/// Decides whether a node may use the relay (called once per connection, after its ClientInfo
/// opened). warren-control passes a closure that admits only its own nodes; `warren-derp` asks a
/// URL (``DERPHTTPAdmission``).
public typealias DERPAdmission = @Sendable (_ node: NodePublic, _ source: SocketAddress?) async -> Bool

/// Which of `keys` (clients connected now) may still use the relay; the others are disconnected
/// (``DERPServer/revalidate(_:)``, run by ``DERPRevalidator``). Admission alone is decided once, at login.
public typealias DERPRevalidation = @Sendable (_ keys: Set<NodePublic>) async -> Set<NodePublic>

/// Where packets for a key that is not connected here go. This is the seam for relay meshing
/// (tailscale/tailscale:derp/README.md: every node of a region connects to every other one with
/// the mesh key, learns who is where through WatchConns, and forwards one hop with ForwardPacket).
/// ``DERPMesh`` implements it (warren-derp --mesh-with); without one such packets are dropped and the sender gets
/// PeerGone(not here).
public protocol DERPMeshForwarder: Sendable {
    /// Forwards a packet for a key this relay does not serve. Returns false when no mesh peer has it.
    func forward(source: NodePublic, destination: NodePublic, packet: ByteBuffer) -> Bool
}

public struct DERPServerConfiguration: Sendable {
    /// The relay's own key (sent in ServerKey; ClientInfo and ServerInfo are boxed with it).
    public var privateKey: NodePrivate
    /// Packets queued per client, and again for disco packets, before the oldest is dropped
    /// (Tailscale: 32).
    public var sendQueueDepth: Int = 32
    /// Control frames (PeerGone, Pong, Health, KeepAlive) queued per client before new ones are dropped.
    public var controlQueueDepth: Int = 64
    /// A mesh watcher (WatchConns) gets the latest PeerPresent/PeerGone of each key that changed since its last write;
    /// when more keys than this wait (it reads too slowly, or the snapshot at WatchConns is larger), it is disconnected
    /// and logged: it reconnects and watches again, which sends the whole current set. Above warren-derp's largest
    /// connection cap, so that a snapshot always fits.
    public var meshWatcherQueueLimit: Int = 65_536
    /// A mesh watcher that has news waiting and could not be written to for this long is disconnected the same way
    /// (Tailscale's derper gives mesh peers a 30 s write timeout). Nil: no time limit.
    public var meshWatcherStallLimit: TimeAmount? = .seconds(30)
    /// How often a KeepAlive goes to each client (Tailscale: 60 s, jittered by up to 10% here).
    public var keepAliveInterval: TimeAmount = .seconds(Int64(DERPWire.keepAliveIntervalSeconds))
    /// Time a new connection has to send its ClientInfo and be admitted (Tailscale: 10 s).
    public var loginTimeout: TimeAmount = .seconds(10)
    /// On a listener with timers (``DERPListener``'s `limits`, or a server listener using WarrenListenerGuard), a
    /// DERP connection that reads nothing for this long is closed. A client that said `CanAckPings` and has been
    /// silent for a keep-alive interval is pinged, so that a live idle client answers in time (3x the
    /// keep-alive interval by default).
    public var idleTimeout: TimeAmount? = .seconds(3 * Int64(DERPWire.keepAliveIntervalSeconds))
    /// Nil admits everyone.
    public var admission: DERPAdmission?
    /// Clients presenting this key in ClientInfo are trusted mesh peers: they may WatchConns,
    /// ForwardPacket and ClosePeer, and skip admission.
    public var meshKey: DERPMeshKey?
    public var meshForwarder: (any DERPMeshForwarder)?
    public var logger: Logger

    public init(privateKey: NodePrivate, logger: Logger = Logger(label: "warren.derp")) {
        self.privateKey = privateKey
        self.logger = logger
    }
}
