// The HTTP(S) side of the standalone relay: the DERP upgrade (plain and fast start), probes, the
// captive-portal check, a short page.

import NIOCore
import NIOHTTP1
import WarrenListenerGuard

/// Serves HTTP/1.1 until a `GET /derp` with `Upgrade: DERP`, then hands the connection to the relay:
/// writes the 101 (not for `Derp-Fast-Start: 1`, whose client does not read it), removes the HTTP
/// handlers (the decoder passes on any bytes that followed the request) and installs the relay.
final class DERPHTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let server: DERPServer
    private let encoder: HTTPResponseEncoder
    private let decoder: ByteToMessageHandler<HTTPRequestDecoder>
    private var head: HTTPRequestHead?

    init(server: DERPServer, encoder: HTTPResponseEncoder, decoder: ByteToMessageHandler<HTTPRequestDecoder>) {
        self.server = server
        self.encoder = encoder
        self.decoder = decoder
    }

    /// Adds the HTTP handlers and this one to a new connection.
    static func install(on pipeline: ChannelPipeline.SynchronousOperations, server: DERPServer) throws {
        let encoder = HTTPResponseEncoder()
        let decoder = ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes))
        try pipeline.addHandlers([encoder, decoder, DERPHTTPHandler(server: server, encoder: encoder, decoder: decoder)])
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body:
            return
        case .end:
            guard let head else { return }
            self.head = nil
            ConnectionTimeouts.enter(.serving, on: context.channel)
            respond(context: context, to: head)
        }
    }

    private func respond(context: ChannelHandlerContext, to head: HTTPRequestHead) {
        let path = String(head.uri.split(separator: "?", maxSplits: 1).first ?? "")
        if path == "/derp", DERPServer.isUpgradeRequest(head) {
            return upgrade(context: context, head: head)
        }
        var status = HTTPResponseStatus.ok
        var headers: HTTPHeaders
        var body = ""
        if DERPServer.probePaths.contains(path) {
            (status, headers) = DERPServer.probeResponse(method: head.method)
        } else if path == "/generate_204" {
            status = .noContent
            headers = DERPServer.noContentResponse(requestHeaders: head.headers)
        } else if path == "/derp" {
            status = .upgradeRequired
            body = "DERP requires connection upgrade\n"
            headers = ["Content-Type": "text/plain; charset=utf-8"]
        } else if path == "/" {
            body = "<html><body><h1>Warren DERP relay</h1><p>This is a DERP relay for a Warren or Tailscale tailnet.</p></body></html>\n"
            headers = ["Content-Type": "text/html; charset=utf-8"]
        } else {
            status = .notFound
            body = "not found\n"
            headers = ["Content-Type": "text/plain; charset=utf-8"]
        }
        if status != .noContent { headers.replaceOrAdd(name: "Content-Length", value: "\(head.method == .HEAD ? 0 : body.utf8.count)") }
        let keepAlive = head.isKeepAlive
        if !keepAlive { headers.replaceOrAdd(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        if !body.isEmpty, head.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        let channel = context.channel
        if !keepAlive {
            done.whenComplete { _ in channel.close(promise: nil) }
        } else {
            done.whenSuccess { ConnectionTimeouts.enter(.idle, on: channel) }
        }
    }

    private func upgrade(context: ChannelHandlerContext, head: HTTPRequestHead) {
        let pipeline = context.pipeline.syncOperations
        do {
            pipeline.removeHandler(encoder, promise: nil)
            if !DERPServer.isFastStart(head) {
                var response = "HTTP/1.1 101 Switching Protocols\r\n"
                for (name, value) in server.upgradeResponseHeaders { response += "\(name): \(value)\r\n" }
                context.writeAndFlush(NIOAny(context.channel.allocator.buffer(string: response + "\r\n")), promise: nil)
            }
            try server.installConnectionHandlers(on: pipeline, remoteAddress: context.channel.remoteAddress,
                                                 position: .after(self))
            ConnectionTimeouts.enter(.upgraded(readIdle: server.configuration.idleTimeout, writesCount: false), on: context.channel)
            pipeline.removeHandler(context: context, promise: nil)
            pipeline.removeHandler(decoder, promise: nil)  // forwards what followed the request to the relay
        } catch {
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
