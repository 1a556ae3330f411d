// The timers of one connection, first in its pipeline (it sees the raw bytes, TLS included).
//
//   request   from accept (and from the first byte after an idle wait) until a request was read in full:
//             `handshakeTimeout` (TLS handshake, head and body, or the upgrade request), then closed
//   serving   the request is being answered: no timer
//   idle      the answer went out and the connection stays for another: `idleTimeout` with nothing read
//             or written, then closed
//   upgraded  the connection carries another protocol: closed after `readIdle` with nothing read (and,
//             when `writesCount`, nothing written), and never while inner streams are open
//
// The application's handlers move a connection between these (``ConnectionTimeouts/enter(_:on:)``); a
// connection whose handlers say nothing stays in `request` and is closed after `handshakeTimeout`.

public import NIOCore

/// Where a connection is, for its timers.
public enum ConnectionPhase: Sendable, Hashable {
    case serving
    case idle
    case upgraded(readIdle: TimeAmount?, writesCount: Bool)
}

public enum ConnectionTimeouts {
    /// Tells the connection's timers where it is. A no-op on a connection without timers. Call on its event loop.
    public static func enter(_ phase: ConnectionPhase, on channel: any Channel) {
        run(on: channel) { $0.enter(phase) }
    }

    /// An inner stream (an HTTP/2 stream of an upgraded connection) opened or closed on `channel` (the connection).
    public static func streamOpened(on channel: any Channel) { run(on: channel) { $0.streamOpened() } }
    public static func streamClosed(on channel: any Channel) { run(on: channel) { $0.streamClosed() } }

    private static func run(on channel: any Channel, _ body: @escaping (ConnectionTimeoutHandler) -> Void) {
        if channel.eventLoop.inEventLoop {
            if let handler = try? channel.pipeline.syncOperations.handler(type: ConnectionTimeoutHandler.self) { body(handler) }
        } else {
            let bound = NIOLoopBound(body, eventLoop: channel.eventLoop)
            channel.eventLoop.execute {
                if let handler = try? channel.pipeline.syncOperations.handler(type: ConnectionTimeoutHandler.self) { bound.value(handler) }
            }
        }
    }
}

public final class ConnectionTimeoutHandler: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    private enum Mode: Equatable {
        case request(since: NIODeadline)
        case serving
        case idle
        case upgraded(readIdle: TimeAmount?, writesCount: Bool)
    }

    private let listenerGuard: ListenerGuard
    private var mode: Mode = .request(since: .now())
    private var lastActivity: NIODeadline = .now()
    private var streams = 0
    private var timer: Scheduled<Void>?
    private var timerDeadline: NIODeadline?
    private var context: ChannelHandlerContext?

    init(guard: ListenerGuard) { self.listenerGuard = `guard` }

    public func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        mode = .request(since: .now())
        rearm()
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        cancelTimer()
        self.context = nil
    }

    public func channelInactive(context: ChannelHandlerContext) {
        cancelTimer()
        context.fireChannelInactive()
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        lastActivity = .now()
        if mode == .idle {
            mode = .request(since: lastActivity)
            rearm()
        }
        context.fireChannelRead(data)
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch mode {
        case .idle, .upgraded(_, true): lastActivity = .now()
        default: break
        }
        context.write(data, promise: promise)
    }

    func enter(_ phase: ConnectionPhase) {
        switch phase {
        case .serving: mode = .serving
        case .idle: mode = .idle
        case .upgraded(let readIdle, let writesCount): mode = .upgraded(readIdle: readIdle, writesCount: writesCount)
        }
        lastActivity = .now()
        rearm()
    }

    func streamOpened() {
        streams += 1
        rearm()
    }

    func streamClosed() {
        streams = max(0, streams - 1)
        lastActivity = .now()
        rearm()
    }

    /// When the connection is due to close, in its current mode (nil: not while in it).
    private var deadline: (NIODeadline, String)? {
        switch mode {
        case .request(let since):
            return listenerGuard.limits.handshakeTimeout.map { (since + $0, "handshake") }
        case .serving:
            return nil
        case .idle:
            return listenerGuard.limits.idleTimeout.map { (lastActivity + $0, "idle") }
        case .upgraded(let readIdle, _):
            guard streams == 0, let readIdle else { return nil }
            return (lastActivity + readIdle, "idle")
        }
    }

    /// Keeps one timer at the current deadline or earlier; a timer that fires early re-arms for the rest
    /// (reads move the deadline without touching the timer).
    private func rearm() {
        guard let context else { return }
        guard let (due, _) = deadline else { return cancelTimer() }
        if let scheduled = timerDeadline, scheduled <= due, timer != nil { return }
        cancelTimer()
        timerDeadline = due
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(deadline: due) { bound.value.fired() }
    }

    private func cancelTimer() {
        timer?.cancel()
        timer = nil
        timerDeadline = nil
    }

    private func fired() {
        timer = nil
        timerDeadline = nil
        guard let context, let (due, which) = deadline else { return }
        if due > .now() { return rearm() }
        listenerGuard.timerFired(which, remote: context.channel.remoteAddress)
        context.close(promise: nil)
    }
}

/// For plain HTTP/1.1 servers without upgrades: put it after the HTTP codec; it moves the connection to
/// `serving` once a request was read in full and to `idle` once the answer was written.
public final class HTTPPhaseObserver<Request, Response>: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = Request
    public typealias InboundOut = Request
    public typealias OutboundIn = Response
    public typealias OutboundOut = Response

    private let isEnd: (Request) -> Bool
    private let isResponseEnd: (Response) -> Bool

    public init(isEnd: @escaping (Request) -> Bool, isResponseEnd: @escaping (Response) -> Bool) {
        self.isEnd = isEnd
        self.isResponseEnd = isResponseEnd
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if isEnd(unwrapInboundIn(data)) { ConnectionTimeouts.enter(.serving, on: context.channel) }
        context.fireChannelRead(data)
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard isResponseEnd(unwrapOutboundIn(data)) else { return context.write(data, promise: promise) }
        let channel = context.channel
        let done = promise ?? context.eventLoop.makePromise()
        done.futureResult.whenSuccess { ConnectionTimeouts.enter(.idle, on: channel) }
        context.write(data, promise: done)
    }
}
