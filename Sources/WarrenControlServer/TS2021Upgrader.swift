// POST /ts2021: the HTTP/1.1 upgrade into the Noise channel (tailscale/tailscale:control/controlhttp).
//
//   client: POST /ts2021, Upgrade: tailscale-control-protocol, Connection: upgrade,
//           X-Tailscale-Handshake: base64(101-byte Noise IK initiation)
//   server: 101 Switching Protocols (Upgrade: tailscale-control-protocol), then the 51-byte response,
//           then Noise records carrying HTTP/2 with prior knowledge.

import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTP2
import TailscaleControlProtocol
import TailscaleKeys
import WarrenControlTransport
import WarrenListenerGuard

/// One per connection: it keeps the handshake it accepted between the two upgrade steps.
final class TS2021Upgrader: HTTPServerProtocolUpgrader {
    let supportedProtocol = ControlWire.upgradeHeaderValue
    // NIO also wants required headers listed in Connection, which Tailscale clients do not do; the
    // handshake header is checked in buildUpgradeResponse instead.
    let requiredUpgradeHeaders: [String] = []

    private let controlKey: MachinePrivate
    private let engine: ControlEngine
    private let logger: Logger
    private let httpHandler: any RemovableChannelHandler
    private var accepted: ControlServerHandshake.Accepted?
    /// A session with no open stream that carried nothing for this long is closed.
    private let idleTimeout: TimeAmount?
    /// Streams and request-body bytes one connection may hold.
    private let limits: TS2021Limits

    init(controlKey: MachinePrivate, engine: ControlEngine, logger: Logger, httpHandler: any RemovableChannelHandler,
         idleTimeout: TimeAmount? = nil, limits: TS2021Limits = .standard) {
        self.idleTimeout = idleTimeout
        self.limits = limits
        self.controlKey = controlKey
        self.engine = engine
        self.logger = logger
        self.httpHandler = httpHandler
    }

    func buildUpgradeResponse(channel: Channel, upgradeRequest: HTTPRequestHead,
                              initialResponseHeaders: HTTPHeaders) -> EventLoopFuture<HTTPHeaders> {
        guard upgradeRequest.method == .POST, upgradeRequest.uri.split(separator: "?").first == "/ts2021",
              let header = upgradeRequest.headers.first(name: ControlWire.handshakeHeaderName),
              let initiation = Data(base64Encoded: header) else {
            return channel.eventLoop.makeFailedFuture(ControlProtocolError(.wrongInitiationLength))
        }
        do {
            var generator = SystemRandomNumberGenerator()
            accepted = try ControlServerHandshake.respond(to: Array(initiation), controlKey: controlKey,
                                                          ephemeral: MachinePrivate.generate(using: &generator))
        } catch {
            logger.notice("ts2021 handshake rejected", metadata: ["error": "\(error)"])
            return channel.eventLoop.makeFailedFuture(error)
        }
        return channel.eventLoop.makeSucceededFuture(initialResponseHeaders)
    }

    func upgrade(context: ChannelHandlerContext, upgradeRequest: HTTPRequestHead) -> EventLoopFuture<Void> {
        guard let accepted else { return context.eventLoop.makeFailedFuture(ControlProtocolError(.channelFailed)) }
        self.accepted = nil
        let machineKey = accepted.machineKey
        let engine = engine
        let logger = logger
        // The plain-HTTP handler has no more work on this connection.
        context.pipeline.syncOperations.removeHandler(httpHandler, promise: nil)
        // The 51-byte response goes out in clear, ahead of the record layer.
        context.writeAndFlush(NIOAny(context.channel.allocator.buffer(bytes: accepted.response)), promise: nil)
        do {
            let pipeline = context.pipeline.syncOperations
            let records = NoiseRecordHandler(session: accepted.session)
            try pipeline.addHandler(records, position: .after(context.handler))
            // NIOHTTP2 answers a connection error with GOAWAY and leaves the connection open: close it then.
            try pipeline.addHandler(HTTP2GoAwayCloser(logger: logger), position: .after(records))
            // Streams at once and buffered request bodies are bounded per connection (TS2021StreamLimits.swift).
            let budget = TS2021ConnectionBudget(
                limits: limits, logger: logger,
                peer: "\(context.channel.remoteAddress?.description ?? "?") machine \(machineKey.shortString)")
            var http2 = NIOHTTP2Handler.ConnectionConfiguration()
            http2.initialSettings = limits.initialSettings
            _ = try pipeline.configureHTTP2Pipeline(
                mode: .server, connectionConfiguration: http2, streamConfiguration: .init(), position: .last
            ) { stream in
                stream.eventLoop.makeCompletedFuture {
                    try stream.pipeline.syncOperations.addHandlers([
                        TS2021StreamGuard(budget: budget),
                        HTTP2FramePayloadToHTTP1ServerCodec(),
                        ControlStreamHandler(engine: engine, machineKey: machineKey, logger: logger, budget: budget),
                    ])
                }
            }
            ConnectionTimeouts.enter(.upgraded(readIdle: idleTimeout, writesCount: true), on: context.channel)
            logger.debug("ts2021 session established", metadata: ["machine": "\(machineKey)",
                                                                   "version": "\(accepted.session.protocolVersion)"])
            return context.eventLoop.makeSucceededVoidFuture()
        } catch {
            return context.eventLoop.makeFailedFuture(error)
        }
    }
}

/// Between the Noise records and HTTP/2 on the server: follows the HTTP/2 frames going out and, once a GOAWAY
/// with an error code has been written (NIOHTTP2's answer to a connection error: bad preface, malformed or
/// out-of-place frames, flow-control violations, too many resets), closes the connection. A GOAWAY with
/// NO_ERROR (a graceful goodbye) leaves it to finish.
final class HTTP2GoAwayCloser: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private static let frameHeaderLength = 9
    private static let goAwayType: UInt8 = 0x7

    private let logger: Logger
    private var header: [UInt8] = []
    private var payloadRemaining = 0
    /// The first 8 payload bytes of the GOAWAY being written (last stream ID, error code).
    private var goAwayPayload: [UInt8]?
    private var closing = false

    init(logger: Logger) { self.logger = logger }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard !closing, let errorCode = scan(unwrapOutboundIn(data)) else {
            return context.write(data, promise: promise)
        }
        closing = true
        logger.debug("ts2021: HTTP/2 connection error, closing after GOAWAY", metadata: ["code": "\(errorCode)"])
        let channel = context.channel
        let written = promise ?? context.eventLoop.makePromise()
        written.futureResult.whenComplete { _ in channel.close(promise: nil) }
        context.write(data, promise: written)
        context.flush()
    }

    /// Advances over the frames in `buffer`; returns the error code of a GOAWAY whose code is not NO_ERROR.
    private func scan(_ buffer: ByteBuffer) -> UInt32? {
        let bytes = buffer.readableBytesView
        var index = bytes.startIndex
        var found: UInt32?
        while index < bytes.endIndex {
            if payloadRemaining > 0 {
                let count = min(payloadRemaining, bytes.endIndex - index)
                if var payload = goAwayPayload {
                    let take = min(8 - payload.count, count)
                    payload += bytes[index..<(index + take)]
                    goAwayPayload = payload
                    if payload.count == 8 {
                        let code = payload[4..<8].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
                        if code != 0 { found = code }
                        goAwayPayload = nil
                    }
                }
                index += count
                payloadRemaining -= count
                if payloadRemaining == 0 { goAwayPayload = nil }
                continue
            }
            header.append(bytes[index])
            index += 1
            guard header.count == Self.frameHeaderLength else { continue }
            payloadRemaining = Int(header[0]) << 16 | Int(header[1]) << 8 | Int(header[2])
            goAwayPayload = header[3] == Self.goAwayType && payloadRemaining >= 8 ? [] : nil
            header.removeAll(keepingCapacity: true)
        }
        return found
    }
}
