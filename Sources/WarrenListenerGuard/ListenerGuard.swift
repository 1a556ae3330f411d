// Bounds for one listener: a connection cap enforced at accept (the excess is closed at once, with one log
// line per burst), back-off when accept fails for lack of descriptors (EMFILE, ENFILE: NIO's future-based
// `ServerBootstrap.bind` installs no `AcceptBackoffHandler`, and without one the event loop retries the
// failing accept at once, spinning a core), and per-connection timers (``ConnectionTimeoutHandler``).
//
// A listener wires it in two places:
//
//     ServerBootstrap(group: group)
//         .serverChannelInitializer { guard.installOnServerChannel($0) }
//         .childChannelInitializer { channel in ... try guard.installConnectionHandlers(on: channel.pipeline.syncOperations) ... }
//
// and its handlers say where a connection is (``ConnectionTimeouts/enter(_:on:)``).

public import Logging
public import NIOCore
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The bounds of one listener. nil or 0 turns a bound off (the default for library users).
public struct ListenerLimits: Sendable, Hashable {
    /// Connections open at once; the ones over it are closed as soon as they are accepted. 0: no cap.
    public var maximumConnections: Int
    /// Time a connection has to deliver its first request in full (TLS handshake, request head and body, or the
    /// upgrade request), and again for each later request once its first byte arrived.
    public var handshakeTimeout: TimeAmount?
    /// Time a connection may wait between requests (HTTP keep-alive) with nothing in either direction.
    public var idleTimeout: TimeAmount?
    /// How long accepting pauses after accept failed for lack of descriptors or memory.
    public var acceptBackoff: TimeAmount

    public init(maximumConnections: Int = 0, handshakeTimeout: TimeAmount? = nil, idleTimeout: TimeAmount? = nil,
                acceptBackoff: TimeAmount = .seconds(1)) {
        self.maximumConnections = maximumConnections
        self.handshakeTimeout = handshakeTimeout
        self.idleTimeout = idleTimeout
        self.acceptBackoff = acceptBackoff
    }

    /// No cap and no timers (accept back-off stays).
    public static let unlimited = ListenerLimits()
}

/// Counts and enforces one listener's bounds. Shared by the listening channel and every connection.
public final class ListenerGuard: Sendable {
    public let name: String
    public let limits: ListenerLimits
    let logger: Logger
    private let open = Atomic<Int>(0)
    private let refused = Atomic<Int>(0)
    private let timedOut = Atomic<Int>(0)
    private let acceptFailures = Atomic<Int>(0)
    private let bursts = Mutex<Bursts>(Bursts())

    private struct Bursts {
        var capReached = false
        var refusedInBurst = 0
        var acceptFailing = false
        var failuresInBurst = 0
    }

    public init(name: String, limits: ListenerLimits, logger: Logger = Logger(label: "warren.listener")) {
        self.name = name
        self.limits = limits
        self.logger = logger
    }

    /// Connections open now.
    public var openConnections: Int { open.load(ordering: .relaxed) }
    /// Connections closed at accept because the cap was reached.
    public var refusedConnections: Int { refused.load(ordering: .relaxed) }
    /// Connections closed by a handshake or idle timer.
    public var timedOutConnections: Int { timedOut.load(ordering: .relaxed) }
    /// Accepts that failed with EMFILE, ENFILE, ENOBUFS or ENOMEM.
    public var failedAccepts: Int { acceptFailures.load(ordering: .relaxed) }

    /// For `serverChannelInitializer`: back-off on accept errors, then the connection cap.
    public func installOnServerChannel(_ channel: any Channel) -> EventLoopFuture<Void> {
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(AcceptPauseHandler(guard: self))
            try channel.pipeline.syncOperations.addHandler(ConnectionCapHandler(guard: self))
        }
    }

    /// For `childChannelInitializer`, before any other handler: the connection's timers.
    public func installConnectionHandlers(on pipeline: ChannelPipeline.SynchronousOperations) throws {
        guard limits.handshakeTimeout != nil || limits.idleTimeout != nil else { return }
        try pipeline.addHandler(ConnectionTimeoutHandler(guard: self), position: .first)
    }

    static func isResourceExhaustion(_ error: IOError) -> Bool {
        [EMFILE, ENFILE, ENOBUFS, ENOMEM].contains(error.errnoCode)
    }

    func acceptFailed(_ error: IOError) {
        acceptFailures.add(1, ordering: .relaxed)
        let first = bursts.withLock { b -> Bool in
            b.failuresInBurst += 1
            defer { b.acceptFailing = true }
            return !b.acceptFailing
        }
        if first {
            logger.warning("\(name) listener: accept failed; pausing accepts", metadata: [
                "error": "\(error)", "pause": "\(limits.acceptBackoff)", "open-connections": "\(openConnections)",
                "descriptor-limit": "\(DescriptorLimit.current().soft)",
            ])
        }
    }

    /// A connection was accepted: false when it is over the cap (the caller closes it).
    func admit() -> Bool {
        let now = open.wrappingAdd(1, ordering: .relaxed).newValue
        let cap = limits.maximumConnections
        if cap > 0, now > cap {
            open.subtract(1, ordering: .relaxed)
            refused.add(1, ordering: .relaxed)
            let first = bursts.withLock { b -> Bool in
                b.refusedInBurst += 1
                defer { b.capReached = true }
                return !b.capReached
            }
            if first {
                logger.warning("\(name) listener: connection cap reached; closing new connections until some close",
                               metadata: ["cap": "\(cap)"])
            }
            return false
        }
        let ended = bursts.withLock { b -> (cap: Int?, accept: Int?) in
            var out: (cap: Int?, accept: Int?) = (nil, nil)
            if b.capReached, cap <= 0 || now < cap { out.cap = b.refusedInBurst; b.capReached = false; b.refusedInBurst = 0 }
            if b.acceptFailing { out.accept = b.failuresInBurst; b.acceptFailing = false; b.failuresInBurst = 0 }
            return out
        }
        if let count = ended.cap { logger.notice("\(name) listener: below its connection cap again", metadata: ["refused": "\(count)"]) }
        if let count = ended.accept { logger.notice("\(name) listener: accepting again", metadata: ["failed-accepts": "\(count)"]) }
        return true
    }

    func closed() { open.subtract(1, ordering: .relaxed) }

    func timerFired(_ which: String, remote: SocketAddress?) {
        timedOut.add(1, ordering: .relaxed)
        logger.debug("\(name) listener: closing connection", metadata: ["reason": "\(which) timeout",
                                                                         "remote": "\(remote.map { "\($0)" } ?? "?")"])
    }
}

/// On the listening channel: when accept fails for lack of descriptors or memory, stops reading (autoRead off,
/// which takes the socket out of epoll) for `acceptBackoff`, then reads again.
///
/// NIO's `AcceptBackoffHandler` does not do here: it delays the next `read()`, but after a failed accept the
/// channel's read stays pending and the listening socket stays in epoll, so the loop wakes at once and fails again
/// (seen with strace under a 256-descriptor limit: ~9,000 failing accept4 calls a second, a core busy).
final class AcceptPauseHandler: ChannelInboundHandler {
    typealias InboundIn = any Channel
    typealias InboundOut = any Channel

    private let listenerGuard: ListenerGuard
    private var resume: Scheduled<Void>?

    init(guard: ListenerGuard) { self.listenerGuard = `guard` }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let ioError = error as? IOError, ListenerGuard.isResourceExhaustion(ioError) else {
            return context.fireErrorCaught(error)
        }
        listenerGuard.acceptFailed(ioError)
        guard resume == nil, let options = context.channel.syncOptions else { return }
        try? options.setOption(.autoRead, value: false)
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        resume = context.eventLoop.scheduleTask(in: listenerGuard.limits.acceptBackoff) {
            let (handler, context) = bound.value
            handler.resume = nil
            guard context.channel.isActive else { return }
            try? context.channel.syncOptions?.setOption(.autoRead, value: true)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        resume?.cancel()
        resume = nil
    }
}

/// On the listening channel: counts connections and closes those over the cap before they are set up.
final class ConnectionCapHandler: ChannelInboundHandler {
    typealias InboundIn = any Channel
    typealias InboundOut = any Channel

    private let listenerGuard: ListenerGuard

    init(guard: ListenerGuard) { self.listenerGuard = `guard` }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let child = unwrapInboundIn(data)
        guard listenerGuard.admit() else {
            child.close(promise: nil)
            return
        }
        let listenerGuard = self.listenerGuard
        child.closeFuture.whenComplete { _ in listenerGuard.closed() }
        context.fireChannelRead(data)
    }
}

/// The process's open-file limit.
public enum DescriptorLimit {
    public static func current() -> (soft: UInt64, hard: UInt64) {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return (0, 0) }
        return (UInt64(limit.rlim_cur), UInt64(limit.rlim_max))
    }

    /// Raises the soft limit to the hard limit (bounded by the kernel's `fs.nr_open`) where allowed; returns
    /// the limits in force afterwards.
    @discardableResult
    public static func raise() -> (soft: UInt64, hard: UInt64) {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return (0, 0) }
        // RLIM_INFINITY is all ones; the kernel refuses more than fs.nr_open for this limit.
        var target = UInt64(limit.rlim_max)
        if target > 1 << 20 {
            let nrOpen = (try? String(contentsOfFile: "/proc/sys/fs/nr_open", encoding: .utf8))
                .flatMap { UInt64($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? (1 << 20)
            target = min(target, nrOpen)
        }
        if target > UInt64(limit.rlim_cur) {
            var raised = limit
            raised.rlim_cur = rlim_t(target)
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised)
        }
        return current()
    }
}
