import Foundation
import NIOCore
import NIOSSL
import WarrenDERPTransport
import WarrenPacket
import WireGuardDevice

/// How a node is put together: where it keeps state, which devices and sockets it uses. The
/// defaults are a real Linux node; tests pass in-memory twins.
public struct NodeOptions: Sendable {
    /// Where keys and preferences live (`--state-dir`).
    public var stateDirectory: String
    /// The LocalAPI's unix socket (`--socket`); nil serves none.
    public var socketPath: String?
    /// The TUN interface's name (`--tun`).
    public var tunName: String = "warren0"
    /// The UDP port (`--port`); 0 picks one.
    public var port: UInt16 = 41641
    /// The TUN's MTU.
    public var mtu: Int = 1280
    /// Makes the TUN interface; nil: a Linux TUN device named `tunName`.
    public var makeTUN: (@Sendable (_ name: String, _ mtu: Int) throws -> any TunnelInterface)?
    /// Makes the UDP bind; nil: Linux sockets.
    public var makeBind: (@Sendable () -> any PacketBind)?
    /// The router; nil: `ip` on `tunName`.
    public var router: (any RouterConfigurator)?
    /// The host addresses offered as endpoints; nil: the interfaces' addresses.
    public var localAddresses: (@Sendable () -> [IPAddress])?
    /// The networks the host's interfaces sit on (for exit node LAN access and what an exit node
    /// offers); nil: read from the interfaces.
    public var hostPrefixes: (@Sendable () -> [IPPrefix])?
    /// Whether magicsock sends STUN probes.
    public var stun = true
    /// Extra trust for the control server's TLS (a test CA), beside the system's.
    public var controlTLS: NIOSSLContext?
    /// Trust for every DERP node (tests); nil: as the DERP map says.
    public var derpTrustOverride: DERPServerTrust?
    /// How the host's DNS is configured; nil: systemd-resolved when it manages /etc/resolv.conf, else the
    /// file itself (with an in-memory router: nothing is touched).
    public var hostDNS: (any HostDNSConfigurator)?
    /// Where MagicDNS listens; nil: 100.100.100.100:53 and [fd7a:115c:a1e0::53]:53 on the TUN (with an
    /// in-memory router: nowhere).
    public var dnsListenAddresses: [SocketAddress]?
    /// How often magicsock's timers run.
    public var magicsockTick: Duration = .seconds(1)
    /// How long `up` waits for Running (or a login URL) before it answers with the current state.
    public var upTimeout: Duration = .seconds(120)

    public init(stateDirectory: String, socketPath: String? = nil) {
        self.stateDirectory = stateDirectory
        self.socketPath = socketPath
    }
}
