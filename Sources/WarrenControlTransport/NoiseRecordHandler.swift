// The ts2021 transport on a NIO channel: inbound bytes are records to open, outbound bytes are sealed
// into records of at most 4096 bytes. Everything above it (HTTP/2) sees plaintext.

import NIOCore
import TailscaleControlProtocol

public final class NoiseRecordHandler: ChannelDuplexHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    private var sender: ControlRecordSender
    private var receiver: ControlRecordReceiver
    /// Plaintext sent before HTTP/2 (the early payload), written once the handler is added.
    private var earlyPayload: [UInt8]?

    public init(session: ControlSession, earlyPayload: [UInt8]? = nil) {
        sender = session.sender
        receiver = session.receiver
        self.earlyPayload = earlyPayload
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        if let early = earlyPayload, context.channel.isActive {
            earlyPayload = nil
            do {
                let sealed = try sender.seal(early)
                context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: sealed)), promise: nil)
            } catch {
                context.close(promise: nil)
            }
        }
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        receiver.append(buffer.readBytes(length: buffer.readableBytes) ?? [])
        do {
            var plaintext = [UInt8]()
            while let chunk = try receiver.nextPlaintext() { plaintext += chunk }
            if !plaintext.isEmpty {
                context.fireChannelRead(wrapInboundOut(context.channel.allocator.buffer(bytes: plaintext)))
            }
        } catch {
            // Out of sync or forged: nothing more on this connection can be trusted.
            context.close(promise: nil)
        }
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        var buffer = unwrapOutboundIn(data)
        let plaintext = buffer.readBytes(length: buffer.readableBytes) ?? []
        do {
            let sealed = try sender.seal(plaintext)
            context.write(wrapOutboundOut(context.channel.allocator.buffer(bytes: sealed)), promise: promise)
        } catch {
            promise?.fail(error)
            context.close(promise: nil)
        }
    }
}
