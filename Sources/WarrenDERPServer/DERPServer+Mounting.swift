// How an HTTP server hands a connection to the relay.
//
// Two ways, for two kinds of HTTP server:
//
// 1. NIO's upgrade machinery: put ``DERPHTTPUpgrader`` in the upgraders given to
//    `configureHTTPServerPipeline(withServerUpgrade:)`; it answers the 101 and installs the relay
//    right after the upgrade handler (HTTP handlers added after it may stay; they see no bytes).
// 2. Any other server: answer `GET /derp` + `Upgrade: DERP` yourself with a 101 carrying
//    ``DERPServer/upgradeResponseHeaders`` (none for `Derp-Fast-Start: 1`), remove your HTTP
//    handlers (keeping bytes that followed the request), then call
//    ``DERPServer/installConnectionHandlers(on:remoteAddress:)`` on the channel.
//
// `/derp/probe` and `/derp/latency-check` answer through ``DERPServer/probeResponse(method:)``.

public import NIOCore
public import NIOHTTP1
import TailscaleKeys
import WarrenDERPTransport
import WarrenListenerGuard

extension DERPServer {
    /// Installs the DERP frame decoder and connection handler in `pipeline` at `position` (by
    /// default last) and sends the ServerKey frame. Call on the channel's event loop, once the HTTP
    /// decoder is gone. The relay's handler consumes every read, so HTTP handlers left after it
    /// never see DERP bytes.
    public func installConnectionHandlers(on pipeline: ChannelPipeline.SynchronousOperations, remoteAddress: SocketAddress?,
                                          position: ChannelPipeline.SynchronousOperations.Position = .last) throws {
        try pipeline.addHandlers([ByteToMessageHandler(DERPRawFrameDecoder()), DERPServerConnectionHandler(server: self, remote: remoteAddress)],
                                 position: position)
    }

    /// ``installConnectionHandlers(on:remoteAddress:)`` from any thread.
    public func installConnectionHandlers(on channel: any Channel) -> EventLoopFuture<Void> {
        channel.eventLoop.submit {
            try self.installConnectionHandlers(on: channel.pipeline.syncOperations, remoteAddress: channel.remoteAddress)
        }
    }

    /// The headers of the `101 Switching Protocols` answer (tailscale/tailscale:derp/derpserver/handler.go).
    public var upgradeResponseHeaders: HTTPHeaders {
        [
            "Upgrade": "DERP",
            "Connection": "Upgrade",
            "Derp-Version": "\(DERPWireConstants.protocolVersion)",
            "Derp-Public-Key": publicKey.raw.hex,
        ]
    }

    /// Whether a request asks for the DERP upgrade (`Upgrade: DERP`, any case; WebSocket is not served).
    public static func isUpgradeRequest(_ head: HTTPRequestHead) -> Bool {
        head.headers["Upgrade"].contains { $0.lowercased() == "derp" }
    }

    /// Whether the client skips reading the 101 (`Derp-Fast-Start: 1`).
    public static func isFastStart(_ head: HTTPRequestHead) -> Bool {
        head.headers[DERPWireConstants.fastStartHeader].first == "1"
    }

    /// The paths the relay answers over plain HTTP(S) requests.
    public static let probePaths: Set<String> = ["/derp/probe", "/derp/latency-check"]

    /// The answer to `/derp/probe` and `/derp/latency-check`: 200 with
    /// `Access-Control-Allow-Origin: *` for GET and HEAD, 405 otherwise.
    public static func probeResponse(method: HTTPMethod) -> (HTTPResponseStatus, HTTPHeaders) {
        switch method {
        case .GET, .HEAD: return (.ok, ["Access-Control-Allow-Origin": "*", "Content-Length": "0"])
        default: return (.methodNotAllowed, ["Content-Length": "0"])
        }
    }

    /// The answer to Tailscale's captive-portal check `/generate_204`: 204, echoing a well-formed
    /// `X-Tailscale-Challenge` as `X-Tailscale-Response: response <challenge>`.
    public static func noContentResponse(requestHeaders: HTTPHeaders) -> HTTPHeaders {
        var headers: HTTPHeaders = ["Cache-Control": "no-cache, no-store, must-revalidate, no-transform, max-age=0"]
        func allowed(_ byte: UInt8) -> Bool {
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
                || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || Array(".-_:".utf8).contains(byte)
        }
        if let challenge = requestHeaders["X-Tailscale-Challenge"].first, challenge.utf8.count <= 64, challenge.utf8.allSatisfy(allowed) {
            headers.add(name: "X-Tailscale-Response", value: "response " + challenge)
        }
        return headers
    }
}

import DERPProtocol

enum DERPWireConstants {
    static let protocolVersion = DERPWire.protocolVersion
    static let fastStartHeader = DERPWire.fastStartHeader
}

/// NIO's HTTP server upgrader for `Upgrade: DERP`: answers the 101 with the relay's headers and
/// installs the relay on the connection. (A fast-start client, which does not read the 101, needs
/// the second mounting path; Tailscale clients use fast start only with a "meta certificate",
/// which Warren does not serve.)
public struct DERPHTTPUpgrader: HTTPServerProtocolUpgrader, Sendable {
    public let server: DERPServer
    public let supportedProtocol = "derp"
    public let requiredUpgradeHeaders: [String] = []

    public init(server: DERPServer) { self.server = server }

    public func buildUpgradeResponse(channel: any Channel, upgradeRequest: HTTPRequestHead,
                                     initialResponseHeaders: HTTPHeaders) -> EventLoopFuture<HTTPHeaders> {
        guard upgradeRequest.uri.split(separator: "?").first == "/derp" else {
            return channel.eventLoop.makeFailedFuture(DERPUpgradeError.wrongPath)
        }
        var headers = initialResponseHeaders
        for (name, value) in server.upgradeResponseHeaders where !headers.contains(name: name) { headers.add(name: name, value: value) }
        headers.replaceOrAdd(name: "Upgrade", value: "DERP")
        return channel.eventLoop.makeSucceededFuture(headers)
    }

    /// Installs the relay right after NIO's upgrade handler (whose context this is), so that the
    /// bytes it replays and everything after reach the relay, not the server's own HTTP handlers.
    public func upgrade(context: ChannelHandlerContext, upgradeRequest: HTTPRequestHead) -> EventLoopFuture<Void> {
        context.eventLoop.makeCompletedFuture {
            try server.installConnectionHandlers(on: context.pipeline.syncOperations, remoteAddress: context.channel.remoteAddress,
                                                 position: .after(context.handler))
            ConnectionTimeouts.enter(.upgraded(readIdle: server.configuration.idleTimeout, writesCount: false), on: context.channel)
        }
    }
}

public enum DERPUpgradeError: Error, Hashable, Sendable {
    /// `Upgrade: DERP` on a path other than /derp.
    case wrongPath
}
