// The client's pipeline: HTTP upgrade, then DERP frames (login, pings, everything else upward).

import DERPProtocol
import NIOCore
import TailscaleKeys
import WarrenDERPTransport

/// Writes `GET /derp` with `Upgrade: DERP` when the channel becomes active, swallows the response
/// header (it must be `101`), then passes bytes through.
final class DERPClientUpgradeHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private static let maximumHeaderLength = 16 << 10
    private let hostHeader: String
    private var header: ByteBuffer?
    private var upgraded = false
    private var pendingWrites: [(ByteBuffer, EventLoopPromise<Void>?)] = []

    init(hostHeader: String) { self.hostHeader = hostHeader }

    func channelActive(context: ChannelHandlerContext) {
        let request = "GET /derp HTTP/1.1\r\nHost: \(hostHeader)\r\nUser-Agent: warren-derp-client\r\n"
            + "Connection: Upgrade\r\nUpgrade: DERP\r\n\r\n"
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: request)), promise: nil)
        context.fireChannelActive()
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { channelActive(context: context) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !upgraded else { return context.fireChannelRead(data) }
        var bytes = unwrapInboundIn(data)
        var header = self.header ?? context.channel.allocator.buffer(capacity: 512)
        header.writeBuffer(&bytes)
        let view = header.readableBytesView
        guard let end = view.firstRange(of: [13, 10, 13, 10]) else {
            self.header = header
            if header.readableBytes > Self.maximumHeaderLength {
                context.fireErrorCaught(DERPClientError.responseHeaderTooLarge)
                context.close(promise: nil)
            }
            return
        }
        let headerText = String(decoding: view[view.startIndex..<end.lowerBound], as: UTF8.self)
        let statusLine = headerText.split(separator: "\r\n", maxSplits: 1).first.map(String.init) ?? ""
        let parts = statusLine.split(separator: " ")
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), parts[1] == "101" else {
            context.fireErrorCaught(DERPClientError.upgradeRefused(statusLine: statusLine))
            context.close(promise: nil)
            return
        }
        upgraded = true
        var rest = header
        rest.moveReaderIndex(to: end.upperBound)
        self.header = nil
        for (buffer, promise) in pendingWrites { context.write(wrapOutboundOut(buffer), promise: promise) }
        if !pendingWrites.isEmpty { context.flush() }
        pendingWrites = []
        if rest.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(rest)) }
    }

    /// Writes before the 101 wait (the server would read them as HTTP otherwise).
    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard upgraded else {
            pendingWrites.append((unwrapOutboundIn(data), promise))
            return
        }
        context.write(data, promise: promise)
    }
}

/// Logs in (ServerKey -> ClientInfo -> ServerInfo), answers the server's pings, matches pongs to
/// ``DERPClient/ping(timeout:)``, and passes every other frame upward as a ``DERPFrame``.
final class DERPClientConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = DERPRawFrame
    typealias OutboundOut = ByteBuffer

    struct Login: Sendable {
        var serverKey: NodePublic
        var serverInfo: DERPServerInfo
    }

    private var handshake: DERPClientHandshake
    private let sealer: DERPNaClSealer
    private let login: EventLoopPromise<Login>
    private let frames: DERPClient.Frames.Source
    private var established = false
    private var pings: [[UInt8]: EventLoopPromise<Void>] = [:]
    /// Frames of the current read burst, handed to the consumer together at read-complete.
    private var burst: [DERPFrame] = []

    init(privateKey: NodePrivate, info: DERPClientInfo, login: EventLoopPromise<Login>, frames: DERPClient.Frames.Source) {
        self.frames = frames
        self.handshake = DERPClientHandshake(clientKey: privateKey.publicKey, clientInfo: info)
        self.sealer = DERPNaClSealer(privateKey: privateKey, nonce: {
            var generator = SystemRandomNumberGenerator()
            return (0..<DERPWire.nonceLength).map { _ in UInt8.random(in: 0...255, using: &generator) }
        })
        self.login = login
    }

    func awaitPong(_ data: [UInt8], promise: EventLoopPromise<Void>) {
        pings[data] = promise
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let raw = unwrapInboundIn(data)
        let frame: DERPFrame
        do { frame = try raw.parsed() } catch {
            return fail(context: context, error)
        }
        guard established else {
            do {
                let reply = try handshake.receive(frame, sealer: sealer)
                if !reply.isEmpty { context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: reply)), promise: nil) }
                if case .established(let server, let info) = handshake.state {
                    established = true
                    login.succeed(Login(serverKey: server, serverInfo: info))
                }
            } catch {
                fail(context: context, error)
            }
            return
        }
        switch frame {
        case .ping(let data):
            // A Pong always encodes (8 bytes).
            if let pong = try? DERPFrame.pong(data).encoded() {
                context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: pong)), promise: nil)
            }
        case .pong(let data):
            if let promise = pings.removeValue(forKey: data) { promise.succeed() } else { deliver(frame, context: context) }
        default:
            deliver(frame, context: context)
        }
    }

    private func deliver(_ frame: DERPFrame, context: ChannelHandlerContext) {
        burst.append(frame)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flushBurst(context: context)
        context.fireChannelReadComplete()
    }

    private func flushBurst(context: ChannelHandlerContext) {
        guard !burst.isEmpty else { return }
        let result = frames.yield(contentsOf: burst)
        burst.removeAll(keepingCapacity: true)
        if result == .stopProducing {
            context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        login.fail(DERPClientError.connectionClosed)
        for promise in pings.values { promise.fail(DERPClientError.connectionClosed) }
        pings = [:]
        flushBurst(context: context)
        frames.finish()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(context: context, error)
    }

    private func fail(context: ChannelHandlerContext, _ error: any Error) {
        login.fail(error)
        context.fireErrorCaught(error)
        context.close(promise: nil)
    }
}
