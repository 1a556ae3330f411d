// DNS over TCP frames each message with a two-octet length (RFC 1035 §4.2.2, RFC 7766 §8).

import NIOCore
import NIOPosix
#if canImport(Glibc)
import Glibc
#endif

/// Splits a TCP stream into DNS messages; a zero length or one above `maximumLength` is an error
/// (the pipeline closes the connection).
struct DNSTCPFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer
    let maximumLength: Int

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt16.self) else { return .needMoreData }
        guard length > 0, Int(length) <= maximumLength else { throw DNSServerError.badFrameLength(Int(length)) }
        guard buffer.readableBytes >= 2 + Int(length) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 2)
        context.fireChannelRead(wrapInboundOut(buffer.readSlice(length: Int(length))!))
        return .continue
    }

    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        try decode(context: context, buffer: &buffer)
    }
}

extension ByteBuffer {
    /// Writes `message` with its two-octet length in front.
    mutating func writeDNSFrame(_ message: some Collection<UInt8>) {
        writeInteger(UInt16(message.count))
        writeBytes(message)
    }
}

/// Errors of the DNS server and client.
public enum DNSServerError: Error, CustomStringConvertible, Sendable {
    /// A listener could not be bound.
    case bindFailed(address: String, reason: String)
    /// A TCP frame of length 0 or above the limit.
    case badFrameLength(Int)
    /// No answer within the time allowed.
    case timeout
    /// The peer closed the connection before answering.
    case connectionClosed
    /// The server was closed.
    case closed
    /// A DNS-over-HTTP upstream answered with something other than a DNS answer.
    case httpFailure(String)

    public var description: String {
        switch self {
        case .bindFailed(let address, let reason): return "cannot listen on \(address): \(reason)"
        case .badFrameLength(let length): return "DNS over TCP frame of bad length \(length)"
        case .timeout: return "DNS query timed out"
        case .connectionClosed: return "DNS connection closed before an answer"
        case .closed: return "DNS server closed"
        case .httpFailure(let reason): return "DNS over HTTP: \(reason)"
        }
    }
}

extension ChannelOptions.Types.SocketOption {
    /// SO_MARK on Linux; nil elsewhere.
    static var socketMark: ChannelOptions.Types.SocketOption? {
        #if os(Linux)
        return .init(level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_MARK))
        #else
        return nil
        #endif
    }
}

extension ChannelOptions.Types.SocketOption {
    /// IP_FREEBIND or IPV6_FREEBIND for the address's family on Linux; nil elsewhere.
    static func freebind(for address: SocketAddress) -> ChannelOptions.Types.SocketOption? {
        #if os(Linux)
        if address.protocol == .inet6 {
            return .init(level: SocketOptionLevel(IPPROTO_IPV6), name: SocketOptionName(IPV6_FREEBIND))
        }
        return .init(level: SocketOptionLevel(IPPROTO_IP), name: SocketOptionName(IP_FREEBIND))
        #else
        return nil
        #endif
    }
}

extension DatagramBootstrap {
    /// Sets SO_MARK (Linux) so that the node's policy routing keeps these packets out of the tunnel.
    func socketMark(_ mark: UInt32?) -> DatagramBootstrap {
        guard let mark, let option = ChannelOptions.Types.SocketOption.socketMark else { return self }
        return channelOption(option, value: SocketOptionValue(Int32(bitPattern: mark)))
    }
}

extension ClientBootstrap {
    /// Sets SO_MARK (Linux) so that the node's policy routing keeps these packets out of the tunnel.
    func socketMark(_ mark: UInt32?) -> ClientBootstrap {
        guard let mark, let option = ChannelOptions.Types.SocketOption.socketMark else { return self }
        return channelOption(option, value: SocketOptionValue(Int32(bitPattern: mark)))
    }
}
