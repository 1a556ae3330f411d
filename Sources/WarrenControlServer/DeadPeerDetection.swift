// How long a control connection whose client died silently (power cut, cable pulled, a namespace torn down:
// no FIN, no RST) can look alive. A map stream only writes (keep-alives every 55 s), and a write to a dead
// peer succeeds into the socket buffer, so without this the stream, and the node's online state and its
// primary routes, would last until TCP gave up retransmitting (about 15 minutes on Linux).
//
// Two watches, one per case:
// - an idle connection (nothing unacknowledged): the kernel's TCP keep-alive probes it and resets it when the
//   client's kernel stops answering (`idle + interval * probes`, 10 s);
// - a connection with data outstanding: ``DeadPeerWatch`` reads TCP_INFO every `interval` and closes it when the
//   client's kernel acknowledged nothing for `unacknowledgedTimeout` while data was in flight, or left window
//   probes unanswered that long.
// Either way the channel closes, the map stream ends and the engine's offline path (and the route failover
// grace) runs. A process killed with kill -9 needs none of this: its kernel closes the socket and the stream
// ends at once.
//
// Not TCP_USER_TIMEOUT, which this used first: it also counts the time data waits behind a zero window (tcp(7)),
// so it cut clients that were alive but slow to read — a full map of 10,000 peers is over a megabyte, and the
// official client's 4 MiB HTTP/2 window lets all of it into the socket at once. The kernel ends such a connection
// without a reset, so the client is not told: in warren-control-bench, 780 of 10,000 streams opening at once were
// cut that way and their clients waited forever. A zero-window client answers the kernel's window probes; a dead one
// does not, and TCP_INFO tells the two apart.

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

    /// A dead client is noticed after at most `idle + interval * probes` of silence (10 s), or 10 to 14 s
    /// after data it did not acknowledge (looked at every `interval`, two looks in a row).
    public static let standard = DeadPeerDetection(idle: .seconds(4), interval: .seconds(2), probes: 3,
                                                   unacknowledgedTimeout: .seconds(10))

    public init(idle: Duration, interval: Duration, probes: Int, unacknowledgedTimeout: Duration) {
        self.idle = idle
        self.interval = interval
        self.probes = probes
        self.unacknowledgedTimeout = unacknowledgedTimeout
    }

    /// The longest a silently dead client's connection stays open.
    public var bound: Duration { max(idle + interval * probes, unacknowledgedTimeout + interval * 2) }

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
        #endif
        return bootstrap
    }
}

/// What one look at a connection's TCP_INFO says.
public struct PeerLiveness: Sendable, Hashable {
    /// Segments sent and not acknowledged.
    public var unacknowledgedSegments: UInt32
    /// Window or keep-alive probes sent and not answered.
    public var unansweredProbes: UInt8
    /// Milliseconds since the last acknowledgement came in.
    public var millisecondsSinceLastAck: UInt32

    public init(unacknowledgedSegments: UInt32, unansweredProbes: UInt8, millisecondsSinceLastAck: UInt32) {
        self.unacknowledgedSegments = unacknowledgedSegments
        self.unansweredProbes = unansweredProbes
        self.millisecondsSinceLastAck = millisecondsSinceLastAck
    }

    /// The peer's kernel stopped answering: data or probes are outstanding and nothing came back for `limit`. A
    /// client that is alive but does not read (zero window) answers the window probes, its kernel's ACKs keep coming,
    /// and it is never judged dead here, however long it does not read.
    public func isDead(after limit: Duration) -> Bool {
        guard unacknowledgedSegments > 0 || unansweredProbes > 0 else { return false }
        let (seconds, attoseconds) = limit.components
        let limitMilliseconds = seconds * 1000 + attoseconds / 1_000_000_000_000_000
        return Int64(millisecondsSinceLastAck) >= limitMilliseconds
    }
}

/// Closes its connection once ``PeerLiveness/isDead(after:)`` says so, looking every `interval` (see the top of this
/// file). First in an accepted connection's pipeline; it only watches.
final class DeadPeerWatch: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private let settings: DeadPeerDetection
    private var task: RepeatedTask?
    /// Looks in a row that found the peer dead. Two are needed: a window probe the kernel has just sent, not yet
    /// answered, to a client that has not read for a while (its window probes are spaced out, seconds apart) looks
    /// like a dead peer for one round trip; by the next look it has been answered.
    private var strikes = 0

    init(settings: DeadPeerDetection) { self.settings = settings }

    func handlerAdded(context: ChannelHandlerContext) {
        #if os(Linux)
        guard let provider = context.channel as? SocketOptionProvider else { return }
        let channel = context.channel
        let limit = settings.unacknowledgedTimeout
        let (seconds, attoseconds) = settings.interval.components
        let every = TimeAmount.nanoseconds(max(1, seconds * 1_000_000_000 + attoseconds / 1_000_000_000))
        task = context.eventLoop.scheduleRepeatedTask(initialDelay: every, delay: every) { task in
            guard channel.isActive else {
                task.cancel()
                return
            }
            provider.getTCPInfo().whenSuccess { info in
                let look = PeerLiveness(unacknowledgedSegments: info.tcpi_unacked, unansweredProbes: info.tcpi_probes,
                                        millisecondsSinceLastAck: info.tcpi_last_ack_recv)
                guard look.isDead(after: limit) else {
                    self.strikes = 0
                    return
                }
                self.strikes += 1
                if self.strikes >= 2 {
                    task.cancel()
                    channel.close(promise: nil)
                }
            }
        }
        #endif
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        task?.cancel()
        task = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        task?.cancel()
        task = nil
        context.fireChannelInactive()
    }
}
