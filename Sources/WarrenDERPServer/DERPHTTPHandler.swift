// The plain HTTP(S) side of the standalone relay: probes, the captive-portal check, a short page.

import NIOCore
import NIOHTTP1

/// Answers the requests that are not a DERP upgrade (those are taken by ``DERPHTTPUpgrader`` first).
final class DERPHTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private var head: HTTPRequestHead?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body:
            return
        case .end:
            guard let head else { return }
            self.head = nil
            respond(context: context, to: head)
        }
    }

    private func respond(context: ChannelHandlerContext, to head: HTTPRequestHead) {
        let path = String(head.uri.split(separator: "?", maxSplits: 1).first ?? "")
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
        if !keepAlive {
            let channel = context.channel
            done.whenComplete { _ in channel.close(promise: nil) }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
