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

    init(controlKey: MachinePrivate, engine: ControlEngine, logger: Logger, httpHandler: any RemovableChannelHandler) {
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
            try pipeline.addHandler(NoiseRecordHandler(session: accepted.session), position: .after(context.handler))
            _ = try pipeline.configureHTTP2Pipeline(
                mode: .server, connectionConfiguration: .init(), streamConfiguration: .init(), position: .last
            ) { stream in
                stream.eventLoop.makeCompletedFuture {
                    try stream.pipeline.syncOperations.addHandlers([
                        HTTP2FramePayloadToHTTP1ServerCodec(),
                        ControlStreamHandler(engine: engine, machineKey: machineKey, logger: logger),
                    ])
                }
            }
            logger.debug("ts2021 session established", metadata: ["machine": "\(machineKey)",
                                                                   "version": "\(accepted.session.protocolVersion)"])
            return context.eventLoop.makeSucceededVoidFuture()
        } catch {
            return context.eventLoop.makeFailedFuture(error)
        }
    }
}
