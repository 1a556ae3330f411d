#if os(Linux)
import CWarrenLinux
import Glibc
import WarrenPacket

/// A UDP socket address: IPv4 or IPv6 address and port.
public struct SocketAddress: Hashable, Sendable, CustomStringConvertible {
    public var address: IPAddress
    public var port: UInt16

    public init(address: IPAddress, port: UInt16) {
        self.address = address
        self.port = port
    }

    /// "192.0.2.1:51820" or "[2001:db8::1]:51820".
    public var description: String {
        switch address {
        case .v4: return "\(address):\(port)"
        case .v6: return "[\(address)]:\(port)"
        }
    }

    init(_ e: cwarren_endpoint) {
        var e = e
        port = e.port
        address = withUnsafeBytes(of: &e.address) { raw in
            if e.family == 4 {
                return .v4(UInt32(raw[0]) << 24 | UInt32(raw[1]) << 16 | UInt32(raw[2]) << 8 | UInt32(raw[3]))
            }
            var hi: UInt64 = 0, lo: UInt64 = 0
            for i in 0..<8 { hi = hi << 8 | UInt64(raw[i]) }
            for i in 8..<16 { lo = lo << 8 | UInt64(raw[i]) }
            return .v6(hi, lo)
        }
    }

    var cEndpoint: cwarren_endpoint {
        var e = cwarren_endpoint()
        e.port = port
        withUnsafeMutableBytes(of: &e.address) { raw in
            switch address {
            case .v4(let v):
                e.family = 4
                raw[0] = UInt8(truncatingIfNeeded: v >> 24)
                raw[1] = UInt8(truncatingIfNeeded: v >> 16)
                raw[2] = UInt8(truncatingIfNeeded: v >> 8)
                raw[3] = UInt8(truncatingIfNeeded: v)
            case .v6(let hi, let lo):
                e.family = 6
                for i in 0..<8 { raw[i] = UInt8(truncatingIfNeeded: hi >> (56 - 8 * UInt64(i))) }
                for i in 0..<8 { raw[8 + i] = UInt8(truncatingIfNeeded: lo >> (56 - 8 * UInt64(i))) }
            }
        }
        return e
    }
}

/// A non-blocking UDP socket bound to the wildcard address of one family (IPv6 sockets are
/// IPV6_V6ONLY, so an IPv4 and an IPv6 socket can share a port).
public final class UDPSocket: @unchecked Sendable {
    public let fileDescriptor: Int32
    public let family: IPVersion
    private let wakeDescriptor: Int32

    /// socket + bind. `port` 0 lets the kernel choose.
    public init(family: IPVersion, port: UInt16) throws(SystemError) {
        let fd = try SystemError.check(cwarren_udp_open(family == .v4 ? 4 : 6, port), "bind UDP \(family) port \(port)")
        let wake = cwarren_eventfd()
        if wake < 0 {
            Glibc.close(fd)
            throw SystemError("eventfd", errno: -wake)
        }
        fileDescriptor = fd
        wakeDescriptor = wake
        self.family = family
    }

    deinit {
        Glibc.close(fileDescriptor)
        Glibc.close(wakeDescriptor)
    }

    /// The bound port (getsockname).
    public func localPort() throws(SystemError) -> UInt16 {
        UInt16(truncatingIfNeeded: try SystemError.check(cwarren_udp_local_port(fileDescriptor), "getsockname"))
    }

    /// SO_RCVBUFFORCE/SO_SNDBUFFORCE (root), falling back to SO_RCVBUF/SO_SNDBUF.
    public func setBufferSizes(_ bytes: Int) throws(SystemError) {
        _ = try SystemError.check(cwarren_socket_set_buffers(fileDescriptor, Int32(clamping: bytes)), "SO_RCVBUF")
    }

    /// SO_RCVBUF as the kernel reports it (twice the requested size).
    public func receiveBufferSize() throws(SystemError) -> Int {
        Int(try SystemError.check(cwarren_socket_get_receive_buffer(fileDescriptor), "getsockopt SO_RCVBUF"))
    }

    /// SO_MARK (fwmark); 0 clears it.
    public func setMark(_ mark: UInt32) throws(SystemError) {
        _ = try SystemError.check(cwarren_socket_set_mark(fileDescriptor, mark), "SO_MARK")
    }

    /// UDP_GRO: the kernel may hand several datagrams from one sender as one buffer with a segment size.
    public func setGRO(_ on: Bool) throws(SystemError) {
        _ = try SystemError.check(cwarren_socket_set_gro(fileDescriptor, on ? 1 : 0), "UDP_GRO")
    }

    /// Whether UDP_SEGMENT (GSO on send) is available.
    public var supportsSegmentationOffload: Bool { cwarren_socket_supports_gso(fileDescriptor) == 1 }

    /// sendto. Returns false when the kernel had no room or no route (the datagram is dropped).
    @discardableResult
    public func send(_ datagram: UnsafeRawBufferPointer, to destination: SocketAddress) throws(SystemError) -> Bool {
        var e = destination.cEndpoint
        let r = cwarren_sendto(fileDescriptor, datagram.baseAddress, datagram.count, &e)
        if r >= 0 { return true }
        if Self.isTransient(-r) { return false }
        throw SystemError("sendto \(destination)", errno: -r)
    }

    /// What became of a segmented send.
    public enum SegmentedSendResult: Equatable, Sendable {
        /// The kernel took the datagrams.
        case sent
        /// The kernel refuses segmentation for this message: send the datagrams one by one.
        case refused
        /// A transient error (no buffer space, no route) dropped all of them.
        case dropped
    }

    /// Sends `count` datagrams (at most 64; `bases[i]`, `lengths[i]`) to `destination` as one
    /// UDP GSO message: all but the last must be `segmentSize` bytes. `.refused` when the kernel
    /// refuses segmentation for this message (EINVAL, EIO, EOPNOTSUPP, or EMSGSIZE: a segment
    /// larger than the path MTU, which the kernel would fragment if sent alone); `.dropped` when
    /// a transient error dropped the datagrams.
    public func sendSegments(bases: UnsafePointer<UnsafeMutableRawPointer?>, lengths: UnsafePointer<Int>, count: Int,
                             segmentSize: Int, to destination: SocketAddress) throws(SystemError) -> SegmentedSendResult {
        var e = destination.cEndpoint
        let r = cwarren_send_segments(fileDescriptor, &e, bases, lengths, UInt32(clamping: count), UInt16(clamping: segmentSize))
        if r >= 0 { return .sent }
        if -r == EINVAL || -r == EIO || -r == EOPNOTSUPP || -r == EMSGSIZE { return .refused }
        if Self.isTransient(-r) { return .dropped }
        throw SystemError("sendmsg UDP_SEGMENT \(destination)", errno: -r)
    }

    /// recvmmsg without blocking into the first `count` slots of `batch`. Returns how many arrived (0: none waiting).
    public func receive(_ batch: MessageBatch, count: Int) throws(SystemError) -> Int {
        let r = cwarren_recvmmsg(fileDescriptor, batch.pointer, UInt32(clamping: min(count, batch.capacity)), 1)
        if r >= 0 { return Int(r) }
        if -r == EAGAIN || -r == EWOULDBLOCK { return 0 }
        throw SystemError("recvmmsg", errno: -r)
    }

    /// sendmmsg of slots [first, first + count). Returns how many the kernel took (it may take
    /// fewer), or 0 when a transient error (no buffer space, unreachable) dropped slot `first`:
    /// continue from `first + 1` then.
    public func send(_ batch: MessageBatch, first: Int, count: Int) throws(SystemError) -> Int {
        let r = cwarren_sendmmsg(fileDescriptor, batch.pointer, UInt32(clamping: first), UInt32(clamping: count))
        if r >= 0 { return Int(r) }
        if Self.isTransient(-r) { return 0 }
        throw SystemError("sendmmsg", errno: -r)
    }

    /// Blocks until a datagram is readable, `wake()` was called, or the timeout passed (-1: none).
    public func waitReadable(timeoutMilliseconds: Int32 = -1) throws(SystemError) -> Bool {
        try SystemError.check(cwarren_poll_in(fileDescriptor, wakeDescriptor, timeoutMilliseconds), "poll UDP") == 1
    }

    /// Wakes every `waitReadable` now and from now on.
    public func wake() { _ = cwarren_eventfd_signal(wakeDescriptor) }

    static func isTransient(_ e: Int32) -> Bool {
        e == EAGAIN || e == EWOULDBLOCK || e == ENOBUFS || e == ENETUNREACH || e == EHOSTUNREACH
            || e == ECONNREFUSED || e == EPERM || e == EADDRNOTAVAIL || e == EAFNOSUPPORT || e == EINVAL
            || e == EMSGSIZE
    }
}

/// Preallocated headers for recvmmsg/sendmmsg: each slot points at caller-owned memory.
/// Not thread-safe: one batch per thread.
public final class MessageBatch: @unchecked Sendable {
    let pointer: OpaquePointer
    public let capacity: Int

    public init(capacity: Int) {
        guard let p = cwarren_msg_batch_create(UInt32(capacity)) else { fatalError("out of memory for a message batch") }
        pointer = p
        self.capacity = capacity
    }

    deinit { cwarren_msg_batch_destroy(pointer) }

    /// Points slot `index` at `buffer`.
    @inline(__always)
    public func setBuffer(_ index: Int, _ buffer: UnsafeMutableRawPointer, length: Int) {
        cwarren_msg_batch_set_buffer(pointer, UInt32(index), buffer, length)
    }

    /// The destination of slot `index` for sending.
    @inline(__always)
    public func setDestination(_ index: Int, _ destination: SocketAddress) {
        var e = destination.cEndpoint
        cwarren_msg_batch_set_endpoint(pointer, UInt32(index), &e)
    }

    /// UDP_SEGMENT for slot `index` (0: a single datagram).
    @inline(__always)
    public func setSegmentSize(_ index: Int, _ size: Int) {
        cwarren_msg_batch_set_segment_size(pointer, UInt32(index), UInt16(clamping: size))
    }

    /// After a receive: the length of slot `index` (nil when truncated).
    @inline(__always)
    public func receivedLength(_ index: Int) -> Int? {
        if cwarren_msg_batch_truncated(pointer, UInt32(index)) != 0 { return nil }
        return Int(cwarren_msg_batch_length(pointer, UInt32(index)))
    }

    /// After a receive: the sender of slot `index`.
    @inline(__always)
    public func source(_ index: Int) -> SocketAddress? {
        var e = cwarren_endpoint()
        guard cwarren_msg_batch_endpoint(pointer, UInt32(index), &e) == 0 else { return nil }
        return SocketAddress(e)
    }

    /// After a receive with UDP_GRO: the size of each coalesced datagram, or 0.
    @inline(__always)
    public func coalescedSegmentSize(_ index: Int) -> Int {
        Int(cwarren_msg_batch_gro_size(pointer, UInt32(index)))
    }
}
#endif
