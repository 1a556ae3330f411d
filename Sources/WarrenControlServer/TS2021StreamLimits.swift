// What one ts2021 connection (HTTP/2 inside Noise) may make the server hold: how many streams are open at once and
// how many request-body bytes wait in memory. Without these, NIOHTTP2's default (100 streams) times the 4 MiB body
// limit let one connection pin about 400 MiB.
//
// Tailscale's client (tailscale/tailscale:control/ts2021, control/controlclient) keeps one HTTP/2 connection to
// control (MaxConnsPerHost 1) and runs three routines on it (auth, map long poll, lite map updates) plus one-off
// requests (set-dns, audit-log, set-device-attr, tka, c2n answers): a handful of streams at once. When the server's
// limit is reached, Go's transport waits for a free stream instead of failing, and a stream refused with
// REFUSED_STREAM is retried. 32 leaves several times that margin.

import Logging
import NIOCore
import NIOHTTP2
import Synchronization

/// The bounds of one ts2021 connection.
struct TS2021Limits: Sendable {
    /// Streams open at once: advertised as SETTINGS_MAX_CONCURRENT_STREAMS and enforced by ``TS2021StreamGuard`` from
    /// the first stream (NIOHTTP2 applies an advertised value only once the client acknowledges it, and allows 100
    /// until then).
    var maxConcurrentStreams = 32
    /// Request-body bytes buffered at once by all the streams of one connection (twice the largest body one request
    /// may have, ``ControlStreamHandler/maximumBodyLength``).
    var maxBufferedBodyBytes = 8 << 20

    static let standard = TS2021Limits()

    /// The HTTP/2 settings the server sends first: NIOHTTP2's defaults (header list 16 KiB) with the stream limit.
    var initialSettings: HTTP2Settings {
        var settings = nioDefaultSettings.filter { $0.parameter != .maxConcurrentStreams }
        settings.append(HTTP2Setting(parameter: .maxConcurrentStreams, value: maxConcurrentStreams))
        return settings
    }
}

/// Request-body bytes buffered by every ts2021 connection of the process together: the per-connection budget times
/// the connection cap is still large, so a process-wide budget stops many connections from adding up.
final class TS2021ProcessBodyBudget: Sendable {
    /// 256 MiB: 32 connections each at their own budget.
    static let shared = TS2021ProcessBodyBudget(limit: 256 << 20)

    let limit: Int
    private let used = Atomic<Int>(0)
    private let peak = Atomic<Int>(0)

    init(limit: Int) { self.limit = limit }

    /// Takes `count` bytes from the budget; false (nothing taken) if that would pass the limit.
    func charge(_ count: Int) -> Bool {
        var current = used.load(ordering: .relaxed)
        while true {
            guard current + count <= limit else { return false }
            let (exchanged, original) = used.compareExchange(expected: current, desired: current + count, ordering: .relaxed)
            if exchanged {
                peak.max(current + count)
                return true
            }
            current = original
        }
    }

    func release(_ count: Int) { used.subtract(count, ordering: .relaxed) }

    /// Bytes buffered now, and the most ever buffered at once.
    var buffered: Int { used.load(ordering: .relaxed) }
    var highWater: Int { peak.load(ordering: .relaxed) }

    /// Starts the high-water mark again from what is buffered now (tests).
    func resetHighWater() { peak.store(buffered, ordering: .relaxed) }
}

private extension Atomic where Value == Int {
    func max(_ value: Int) {
        var current = load(ordering: .relaxed)
        while value > current {
            let (exchanged, original) = compareExchange(expected: current, desired: value, ordering: .relaxed)
            if exchanged { return }
            current = original
        }
    }
}

/// The streams and buffered bodies of one ts2021 connection. Shared by its stream handlers (on the connection's event
/// loop) and the tasks that decode their bodies (elsewhere), hence the lock.
final class TS2021ConnectionBudget: Sendable {
    enum Charge: Equatable {
        case taken
        /// Over this connection's budget.
        case overConnection
        /// Over the process-wide budget.
        case overProcess
    }

    let limits: TS2021Limits
    let process: TS2021ProcessBodyBudget
    private let logger: Logger
    private let peer: String
    private let state = Mutex(State())

    struct State {
        var openStreams = 0
        var bufferedBytes = 0
        var peakBufferedBytes = 0
        var refusedStreams = 0
        var refusedBodies = 0
    }

    init(limits: TS2021Limits = .standard, process: TS2021ProcessBodyBudget = .shared, logger: Logger, peer: String) {
        self.limits = limits
        self.process = process
        self.logger = logger
        self.peer = peer
    }

    /// A new stream: false when the connection already has ``TS2021Limits/maxConcurrentStreams`` open.
    func openStream() -> Bool {
        let (admitted, refusedSoFar) = state.withLock { s -> (Bool, Int) in
            guard s.openStreams < limits.maxConcurrentStreams else {
                s.refusedStreams += 1
                return (false, s.refusedStreams)
            }
            s.openStreams += 1
            return (true, 0)
        }
        if !admitted, refusedSoFar.nonzeroBitCount == 1 {  // the 1st, 2nd, 4th, 8th, ... refusal on this connection
            logger.notice("ts2021: stream refused (REFUSED_STREAM): too many streams open on one connection", metadata: [
                "peer": "\(peer)", "limit": "\(limits.maxConcurrentStreams)", "refused": "\(refusedSoFar)"])
        }
        return admitted
    }

    func closeStream() { state.withLock { $0.openStreams -= 1 } }

    /// Takes `count` body bytes from this connection's budget and the process's.
    func charge(_ count: Int) -> Charge {
        let result = state.withLock { s -> Charge in
            guard s.bufferedBytes + count <= limits.maxBufferedBodyBytes else { return .overConnection }
            guard process.charge(count) else { return .overProcess }
            s.bufferedBytes += count
            s.peakBufferedBytes = Swift.max(s.peakBufferedBytes, s.bufferedBytes)
            return .taken
        }
        if result != .taken {
            let refusedSoFar = state.withLock { s -> Int in
                s.refusedBodies += 1
                return s.refusedBodies
            }
            if refusedSoFar.nonzeroBitCount == 1 {
                let limit = result == .overConnection ? limits.maxBufferedBodyBytes : process.limit
                logger.notice(result == .overConnection
                              ? "ts2021: request refused (413): request bodies buffered on one connection over budget"
                              : "ts2021: request refused (503): request bodies buffered by all connections over budget",
                              metadata: ["peer": "\(peer)", "limit": "\(limit)", "refused": "\(refusedSoFar)"])
            }
        }
        return result
    }

    func release(_ count: Int) {
        guard count > 0 else { return }
        state.withLock { $0.bufferedBytes -= count }
        process.release(count)
    }

    /// For tests and logs.
    var snapshot: State { state.withLock { $0 } }
}

/// First in every ts2021 stream's pipeline: takes a stream slot from the connection's budget, and answers a stream
/// beyond the limit with RST_STREAM(REFUSED_STREAM) before anything of it is buffered (RFC 9113 8.7: safe to retry).
final class TS2021StreamGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias InboundOut = HTTP2Frame.FramePayload
    typealias OutboundIn = HTTP2Frame.FramePayload
    typealias OutboundOut = HTTP2Frame.FramePayload

    private let budget: TS2021ConnectionBudget
    private var admitted = false
    private var resetSent = false

    init(budget: TS2021ConnectionBudget) { self.budget = budget }

    func handlerAdded(context: ChannelHandlerContext) {
        admitted = budget.openStream()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        if admitted {
            admitted = false
            budget.closeStream()
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard admitted else {
            if !resetSent {
                resetSent = true
                context.writeAndFlush(wrapOutboundOut(.rstStream(.refusedStream)), promise: nil)
                context.close(promise: nil)
            }
            return
        }
        context.fireChannelRead(data)
    }
}
