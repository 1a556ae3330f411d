// How long a control connection whose client died silently (power cut, cable pulled, a namespace torn down:
// no FIN, no RST) can look alive. A map stream only writes (keep-alives every 55 s), and a write to a dead
// peer succeeds into the socket buffer, so without this the stream, and the node's online state and its
// primary routes, would last until TCP gave up retransmitting (about 15 minutes on Linux).
//
// The kernel's TCP keep-alive probes an idle connection and resets it when the client's kernel stops
// answering; TCP_USER_TIMEOUT bounds the time written data may stay unacknowledged (a keep-alive or a map
// update sent to a dead client). Either way the channel closes, the map stream ends and the engine's
// offline path (and the route failover grace) runs. A process killed with kill -9 needs none of this: its
// kernel closes the socket and the stream ends at once.

import NIOCore
import NIOPosix
#if canImport(Glibc)
import Glibc
#endif

public struct DeadPeerDetection: Sendable, Hashable {
    /// Idle time before the first probe.
    public var idle: Duration
    /// Time between probes.
    public var interval: Duration
    /// Unanswered probes before the connection is reset.
    public var probes: Int
    /// Longest time written data may stay unacknowledged.
    public var unacknowledgedTimeout: Duration

    /// A dead client is noticed after at most `idle + interval * probes` of silence (10 s), or 10 s
    /// after a write it did not acknowledge.
    public static let standard = DeadPeerDetection(idle: .seconds(4), interval: .seconds(2), probes: 3,
                                                   unacknowledgedTimeout: .seconds(10))

    public init(idle: Duration, interval: Duration, probes: Int, unacknowledgedTimeout: Duration) {
        self.idle = idle
        self.interval = interval
        self.probes = probes
        self.unacknowledgedTimeout = unacknowledgedTimeout
    }

    /// The longest a silently dead client's connection stays open.
    public var bound: Duration { max(idle + interval * probes, unacknowledgedTimeout) }

    static func seconds(_ d: Duration) -> SocketOptionValue { SocketOptionValue(max(1, d.components.seconds)) }
}

extension ServerBootstrap {
    /// Sets TCP keep-alive and the user timeout on every accepted connection (Linux; elsewhere only
    /// SO_KEEPALIVE with the system's timings).
    func deadPeerDetection(_ settings: DeadPeerDetection?) -> ServerBootstrap {
        guard let settings else { return self }
        var bootstrap = childChannelOption(.socketOption(.so_keepalive), value: 1)
        #if os(Linux)
        bootstrap = bootstrap
            .childChannelOption(.tcpOption(NIOBSDSocket.Option(rawValue: TCP_KEEPIDLE)), value: DeadPeerDetection.seconds(settings.idle))
            .childChannelOption(.tcpOption(NIOBSDSocket.Option(rawValue: TCP_KEEPINTVL)), value: DeadPeerDetection.seconds(settings.interval))
            .childChannelOption(.tcpOption(NIOBSDSocket.Option(rawValue: TCP_KEEPCNT)), value: SocketOptionValue(max(1, settings.probes)))
            .childChannelOption(.tcpOption(NIOBSDSocket.Option(rawValue: CInt(TCP_USER_TIMEOUT))),
                                value: SocketOptionValue(max(1, settings.unacknowledgedTimeout.components.seconds * 1000)))
        #endif
        return bootstrap
    }
}
