// One DERP connection on the relay, from the first byte after the HTTP upgrade to the close.

import DERPProtocol
import Logging
import NIOCore
import TailscaleKeys
import WarrenDERPTransport

/// The relay side of one connection: sends ServerKey, opens ClientInfo, asks admission, answers
/// ServerInfo, then relays. Frames that do not parse close the connection; unknown frame types and
/// server-to-client types sent by a client are skipped, as Tailscale's server does.
final class DERPServerConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = DERPRawFrame
    typealias OutboundOut = ByteBuffer

    private enum State {
        case awaitingClientInfo
        case admitting(pending: [DERPRawFrame])
        case established(DERPServedClient)
        case closed
    }

    /// Frames a client may send while its admission is being decided.
    private static let maximumPendingFrames = 64
    /// PeerGone(not here) is sent once per unknown key; the memory of that is this big at most.
    private static let maximumNotHereKeys = 1024

    private let server: DERPServer
    private let remote: SocketAddress?
    private var state = State.awaitingClientInfo
    private var handshake: DERPServerHandshake
    private var loginTimeout: Scheduled<Void>?
    private var keepAlive: RepeatedTask?
    private var lastDestination: NodePublic?
    private var lastTargetConnection: UInt64 = 0
    private var notHereSent: Set<NodePublic> = []
    /// Whether a frame arrived since the last keep-alive tick (a silent client that acks pings is pinged).
    private var readSinceTick = true

    init(server: DERPServer, remote: SocketAddress?) {
        self.server = server
        self.remote = remote
        self.handshake = DERPServerHandshake(serverKey: server.publicKey)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        var greeting = context.channel.allocator.buffer(capacity: 45)
        greeting.writeBytes(handshake.serverKeyFrame)
        context.writeAndFlush(wrapOutboundOut(greeting), promise: nil)
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        loginTimeout = context.eventLoop.scheduleTask(in: server.configuration.loginTimeout) { [server] in
            server.counters.connectionsRefused.add(1, ordering: .relaxed)
            server.logger.debug("DERP login timed out", metadata: ["remote": "\(bound.value.remoteAddress.map { "\($0)" } ?? "?")"])
            bound.value.close(promise: nil)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        tearDown()
    }

    func channelInactive(context: ChannelHandlerContext) {
        tearDown()
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if case .established(let client) = state, context.channel.isWritable { client.drain() }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is DERPProtocolError { server.counters.protocolErrors.add(1, ordering: .relaxed) }
        server.logger.debug("DERP connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        readSinceTick = true
        switch state {
        case .awaitingClientInfo:
            login(context: context, frame: frame)
        case .admitting(var pending):
            guard pending.count < Self.maximumPendingFrames else { return fail(context, "too many frames before admission") }
            state = .closed  // avoid a copy while appending
            pending.append(frame)
            state = .admitting(pending: pending)
        case .established(let client):
            handle(context: context, client: client, frame: frame)
        case .closed:
            return
        }
    }

    // MARK: - Login

    private func login(context: ChannelHandlerContext, frame raw: DERPRawFrame) {
        let serverInfoFrame: [UInt8]
        do {
            let sealer = DERPNaClSealer(privateKey: server.configuration.privateKey, nonce: randomNonce)
            serverInfoFrame = try handshake.receive(try raw.parsed(), sealer: sealer)
        } catch {
            server.counters.connectionsRefused.add(1, ordering: .relaxed)
            return fail(context, "login failed: \(error)")
        }
        guard case .established(let key, let info) = handshake.state else { return fail(context, "login did not complete") }
        let canMesh = server.configuration.meshKey.map { mine in info.meshKey.map { $0 == mine } ?? false } ?? false
        guard !canMesh, let admission = server.configuration.admission else {
            return finishLogin(context: context, key: key, info: info, canMesh: canMesh, serverInfoFrame: serverInfoFrame)
        }
        state = .admitting(pending: [])
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let loop = context.eventLoop
        let remote = self.remote
        Task {
            let allowed = await admission(key, remote)
            loop.execute {
                let (handler, context) = bound.value
                guard case .admitting(let pending) = handler.state else { return }
                guard allowed else {
                    handler.server.counters.connectionsRefused.add(1, ordering: .relaxed)
                    handler.server.logger.info("DERP client not admitted", metadata: ["key": "\(key.shortString)"])
                    handler.state = .closed
                    context.close(promise: nil)
                    return
                }
                handler.finishLogin(context: context, key: key, info: info, canMesh: false, serverInfoFrame: serverInfoFrame)
                for frame in pending {
                    guard case .established(let client) = handler.state else { return }
                    handler.handle(context: context, client: client, frame: frame)
                }
            }
        }
    }

    private func finishLogin(context: ChannelHandlerContext, key: NodePublic, info: DERPClientInfo, canMesh: Bool,
                             serverInfoFrame: [UInt8]) {
        loginTimeout?.cancel()
        loginTimeout = nil
        guard let client = server.register(key: key, channel: context.channel, info: info, remote: remote, canMesh: canMesh) else {
            state = .closed
            context.close(promise: nil)
            return
        }
        state = .established(client)
        var buffer = context.channel.allocator.buffer(capacity: serverInfoFrame.count)
        buffer.writeBytes(serverInfoFrame)
        context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
        let interval = server.configuration.keepAliveInterval
        let jitter = TimeAmount.nanoseconds(Int64.random(in: 0...max(0, interval.nanoseconds / 10)))
        let pingSilent = info.canAckPings && server.configuration.idleTimeout != nil
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        keepAlive = context.eventLoop.scheduleRepeatedTask(initialDelay: interval + jitter, delay: interval) { _ in
            client.enqueueControl(.keepAlive)
            // The listener's idle timer counts what the client sends; a live client answers the ping.
            let handler = bound.value
            if pingSilent, !handler.readSinceTick { client.enqueueControl(.ping(randomPingData())) }
            handler.readSinceTick = false
        }
    }

    // MARK: - Relaying

    private func handle(context: ChannelHandlerContext, client: DERPServedClient, frame raw: DERPRawFrame) {
        // Admission taken back (node deleted or expired): nothing more from this connection, it is closing.
        guard !client.revoked.load(ordering: .relaxed) else { return }
        guard let type = DERPFrameType(rawValue: raw.type) else { return }  // unknown: skipped
        switch type {
        case .sendPacket:
            var payload = raw.payload
            guard let destination = payload.readDERPKey() else { return fail(context, "short SendPacket") }
            let (outcome, target) = server.relay(from: client, to: destination, packet: payload,
                                                 knownTarget: destination == lastDestination ? lastTargetConnection : nil)
            lastDestination = destination
            lastTargetConnection = target
            if outcome == .unknownDestination, !notHereSent.contains(destination) {
                if notHereSent.count >= Self.maximumNotHereKeys { notHereSent.removeAll() }
                notHereSent.insert(destination)
                client.enqueueControl(.peerGone(destination, reason: .notHere))
            } else if outcome != .unknownDestination, !notHereSent.isEmpty {
                notHereSent.remove(destination)
            }
        case .forwardPacket:
            guard client.canMesh else { return fail(context, "ForwardPacket from a client that is not a mesh peer") }
            var payload = raw.payload
            guard let source = payload.readDERPKey(), let destination = payload.readDERPKey() else {
                return fail(context, "short ForwardPacket")
            }
            _ = server.deliverForwarded(source: source, destination: destination, packet: payload)
        case .notePreferred:
            guard raw.payload.readableBytes == 1, let byte = raw.payload.getInteger(at: raw.payload.readerIndex, as: UInt8.self) else {
                return fail(context, "NotePreferred of \(raw.payload.readableBytes) bytes")
            }
            client.preferred.store(byte != 0, ordering: .relaxed)
        case .ping:
            guard let data = raw.payload.getBytes(at: raw.payload.readerIndex, length: 8) else { return fail(context, "short Ping") }
            if client.enqueueControlIfRoom(.pong(data)) { server.counters.pingsAnswered.add(1, ordering: .relaxed) }
        case .watchConns:
            guard client.canMesh else { return fail(context, "WatchConns from a client that is not a mesh peer") }
            server.addWatcher(client)
        case .closePeer:
            guard client.canMesh else { return fail(context, "ClosePeer from a client that is not a mesh peer") }
            var payload = raw.payload
            guard payload.readableBytes == DERPWire.keyLength, let key = payload.readDERPKey() else { return fail(context, "bad ClosePeer") }
            server.closePeer(key)
        case .keepAlive, .pong, .clientInfo, .serverKey, .serverInfo, .recvPacket, .peerGone, .peerPresent, .health, .restarting:
            return  // not for a server, or nothing to do: skipped
        }
    }

    // MARK: - Helpers

    private func fail(_ context: ChannelHandlerContext, _ reason: String) {
        server.counters.protocolErrors.add(1, ordering: .relaxed)
        server.logger.debug("closing DERP connection", metadata: ["reason": "\(reason)"])
        tearDown()
        context.close(promise: nil)
    }

    private func tearDown() {
        loginTimeout?.cancel()
        loginTimeout = nil
        keepAlive?.cancel()
        keepAlive = nil
        if case .established(let client) = state { server.unregister(client) }
        state = .closed
    }
}

private func randomPingData() -> [UInt8] {
    var generator = SystemRandomNumberGenerator()
    return (0..<8).map { _ in UInt8.random(in: 0...255, using: &generator) }
}

@Sendable private func randomNonce() -> [UInt8] {
    var generator = SystemRandomNumberGenerator()
    return (0..<DERPWire.nonceLength).map { _ in UInt8.random(in: 0...255, using: &generator) }
}

extension ByteBuffer {
    /// Reads a 32-byte key, or nil (reading nothing) if fewer bytes remain.
    mutating func readDERPKey() -> NodePublic? {
        readDERPNodeKey()
    }
}

extension DERPServedClient {
    /// Queues a Pong only while the client reads: a client that floods pings without reading
    /// gets no more than the control queue.
    func enqueueControlIfRoom(_ frame: DERPFrame) -> Bool {
        guard let bytes = try? frame.encoded() else { return false }
        var buffer = channel.allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        return enqueueControl(buffer)
    }
}
