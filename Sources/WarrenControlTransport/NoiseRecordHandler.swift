// The ts2021 transport on a NIO channel: inbound bytes are records to open, outbound bytes are sealed
// into records of at most 4096 bytes. Everything above it (HTTP/2) sees plaintext.
//
// Both directions work in place (OpenSSL's ChaCha20-Poly1305 through WarrenFastAEAD, one cipher context per
// event-loop thread): a write's plaintext is copied once, into the buffer it is sealed in; a read is opened
// where it arrived and its plaintext copied once, out. The first version went through swift-crypto's
// Data-based API with an array per record: seven copies of every byte and several allocations per record.
// Measured with warren-control-bench at 10,000 streams (a mass reconnect: 12 GB of full maps), sealing and
// opening records took 15 % of the server's CPU and more of the clients'.

import NIOCore
import NIOPosix
import TailscaleControlProtocol
import WarrenFastAEAD

public final class NoiseRecordHandler: ChannelDuplexHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    private var sender: ControlRecordSender
    private var receiver: ControlRecordReceiver
    /// Plaintext sent before HTTP/2 (the early payload), written once the handler is added.
    private var earlyPayload: [UInt8]?
    /// The start of a record whose end has not arrived yet.
    private var pending: ByteBuffer?

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
        let incoming = unwrapInboundIn(data)
        var buffer: ByteBuffer
        if var partial = pending {
            pending = nil
            var more = incoming
            partial.writeBuffer(&more)
            buffer = partial
        } else {
            buffer = incoming
        }
        var plaintext = context.channel.allocator.buffer(capacity: buffer.readableBytes)
        let cipher = Self.cipherContext
        do {
            let consumed = try buffer.withUnsafeMutableReadableBytes { raw in
                try receiver.openRecords(in: raw, context: cipher) { plaintext.writeBytes($0) }
            }
            buffer.moveReaderIndex(forwardBy: consumed)
        } catch {
            // Out of sync or forged: nothing more on this connection can be trusted.
            context.close(promise: nil)
            return
        }
        // A partial record waits for the rest, in a buffer of its own size (not the whole read's).
        if buffer.readableBytes > 0 {
            var rest = context.channel.allocator.buffer(capacity: ControlWire.maximumMessageLength)
            rest.writeBuffer(&buffer)
            pending = rest
        }
        if plaintext.readableBytes > 0 {
            context.fireChannelRead(wrapInboundOut(plaintext))
        }
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let buffer = unwrapOutboundIn(data)
        let length = ControlRecordSender.sealedLength(plaintextCount: buffer.readableBytes)
        var sealed = context.channel.allocator.buffer(capacity: length)
        let cipher = Self.cipherContext
        do {
            try buffer.withUnsafeReadableBytes { plaintext in
                _ = try sealed.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { out in
                    try sender.seal(plaintext, into: out, context: cipher)
                }
            }
        } catch {
            promise?.fail(error)
            context.close(promise: nil)
            return
        }
        context.write(wrapOutboundOut(sealed), promise: promise)
    }

    /// The calling thread's cipher context (a handler runs on its channel's event loop, one thread).
    private static var cipherContext: ChaCha20Poly1305Context {
        if let existing = contexts.currentValue { return existing }
        let made = ChaCha20Poly1305Context()
        contexts.currentValue = made
        return made
    }

    nonisolated(unsafe) private static let contexts = ThreadSpecificVariable<ChaCha20Poly1305Context>()
}
