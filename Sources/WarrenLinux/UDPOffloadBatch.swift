#if os(Linux)
import CWarrenOffload
import Glibc
import WarrenPacket

/// UDP segmentation offload (UDP_SEGMENT, Linux 4.18) and receive coalescing (UDP_GRO, Linux 5.0)
/// on any UDP socket descriptor.
public enum UDPOffload {
    /// Whether the kernel knows UDP_SEGMENT for this socket.
    public static func supportsSegmentation(fileDescriptor: Int32) -> Bool {
        cwarren_offload_udp_gso_supported(fileDescriptor) == 1
    }

    /// Turns UDP_GRO on; returns false when the kernel refuses (then datagrams arrive one by one).
    /// With GRO on, receive buffers must hold 64 KB: a coalesced buffer is cut, not split, when short.
    @discardableResult
    public static func enableReceiveCoalescing(fileDescriptor: Int32, _ on: Bool = true) -> Bool {
        cwarren_offload_udp_set_gro(fileDescriptor, on ? 1 : 0) == 0
    }
}

/// Datagrams sent with sendmmsg, consecutive equal-sized datagrams to one destination going out
/// as one message with UDP_SEGMENT; and received with recvmmsg, with the UDP_GRO segment size.
///
/// Sending: `reset()`, `append(_:to:port:)` each datagram (its memory must stay valid until
/// `send`), then `send(on:)`. If the kernel refuses a segmented send (EIO from a device without
/// checksum offload; EINVAL or EMSGSIZE when gso_size exceeds the path MTU), segmentation is
/// switched off for this batch (set `segmentationEnabled` again to retry later, for example after
/// a rebind) and the rest goes out datagram by datagram. Receiving: `setReceiveBuffer` for each slot, `receive(on:count:)`,
/// then per message `receivedLength`, `segmentSize`, `source`; split with `UDPSegmentation`.
/// Allocates only in `init`. Not thread-safe: one batch per thread, and separate batches for
/// sending and receiving (a receive resets the send state).
public final class UDPOffloadBatch: @unchecked Sendable {
    private struct Datagram {
        var base: UnsafeRawPointer
        var length: Int
        var endpoint: cwarren_offload_endpoint
    }

    public let datagramCapacity: Int
    private let batch: OpaquePointer
    private let datagrams: UnsafeMutablePointer<Datagram>
    /// Per message of the current send: its first datagram.
    private let messageFirst: UnsafeMutablePointer<Int>
    private var count = 0
    /// Whether sends may use UDP_SEGMENT (cleared after the kernel refuses one).
    public var segmentationEnabled: Bool
    /// Statistics of the last `send`: messages handed to sendmmsg, datagrams dropped.
    public private(set) var lastMessageCount = 0
    public private(set) var lastDropped = 0

    public init(datagramCapacity: Int, segmentation: Bool = true) {
        precondition(datagramCapacity > 0)
        self.datagramCapacity = datagramCapacity
        guard let b = cwarren_offload_batch_create(UInt32(datagramCapacity), UInt32(datagramCapacity)) else {
            fatalError("out of memory for a UDP offload batch")
        }
        batch = b
        datagrams = .allocate(capacity: datagramCapacity)
        messageFirst = .allocate(capacity: datagramCapacity + 1)
        segmentationEnabled = segmentation
    }

    deinit {
        cwarren_offload_batch_destroy(batch)
        datagrams.deallocate()
        messageFirst.deallocate()
    }

    public func reset() { count = 0 }

    /// Queues one datagram. Returns false when the batch is full.
    @discardableResult
    public func append(_ datagram: UnsafeRawBufferPointer, to address: IPAddress, port: UInt16) -> Bool {
        guard count < datagramCapacity, let base = datagram.baseAddress else { return false }
        datagrams[count] = Datagram(base: base, length: datagram.count, endpoint: Self.endpoint(address, port))
        count += 1
        return true
    }

    /// Sends the queued datagrams. Returns how many sendmmsg messages it took.
    @discardableResult
    public func send(on fileDescriptor: Int32) throws -> Int {
        lastDropped = 0
        lastMessageCount = 0
        var start = 0
        while start < count {
            let usedSegmentation = segmentationEnabled
            buildMessages(from: start, segmentation: usedSegmentation)
            let messages = Int(cwarren_offload_batch_count(batch))
            var first = 0
            var fellBack = false
            while first < messages {
                let r = cwarren_offload_batch_send(fileDescriptor, batch, UInt32(first))
                if r > 0 {
                    first += Int(r)
                    continue
                }
                let e = r < 0 ? -r : EAGAIN
                let segmented = messageFirst[first + 1] - messageFirst[first] > 1
                if segmented && (e == EIO || e == EINVAL || e == EMSGSIZE) {
                    // The kernel or device cannot segment: resend from this message without it.
                    segmentationEnabled = false
                    start = messageFirst[first]
                    fellBack = true
                    break
                }
                if Self.isTransient(e) {
                    lastDropped += messageFirst[first + 1] - messageFirst[first]
                    first += 1
                    continue
                }
                throw SystemError("sendmmsg", errno: e)
            }
            lastMessageCount += fellBack ? first : messages
            if !fellBack { start = count }
        }
        return lastMessageCount
    }

    /// Fills the C batch with messages for datagrams start..<count.
    private func buildMessages(from start: Int, segmentation: Bool) {
        cwarren_offload_batch_reset(batch)
        var i = start
        var m = 0
        while i < count {
            let run = segmentation
                ? UDPSegmentation.runLength(from: i, count: count, length: { datagrams[$0].length },
                                            sameDestination: { Self.same(datagrams[$0].endpoint, datagrams[$1].endpoint) })
                : 1
            var endpoint = datagrams[i].endpoint
            let size = run > 1 ? UInt16(truncatingIfNeeded: datagrams[i].length) : 0
            _ = cwarren_offload_batch_begin(batch, &endpoint, size)
            messageFirst[m] = i
            for k in i..<(i + run) {
                _ = cwarren_offload_batch_append(batch, datagrams[k].base, datagrams[k].length)
            }
            m += 1
            i += run
        }
        messageFirst[m] = count
    }

    // MARK: receiving

    /// Points receive slot `index` at `buffer` (64 KB per slot when GRO is on).
    public func setReceiveBuffer(_ index: Int, _ buffer: UnsafeMutableRawBufferPointer) {
        _ = cwarren_offload_batch_set_receive(batch, UInt32(index), buffer.baseAddress, buffer.count)
    }

    /// recvmmsg without blocking into slots 0..<count. Returns how many arrived (0: none waiting).
    public func receive(on fileDescriptor: Int32, count: Int) throws -> Int {
        let r = cwarren_offload_batch_receive(fileDescriptor, batch, UInt32(min(count, datagramCapacity)))
        if r >= 0 { return Int(r) }
        if -r == EAGAIN || -r == EWOULDBLOCK { return 0 }
        throw SystemError("recvmmsg", errno: -r)
    }

    /// After a receive: the bytes in slot `index`, or nil when the kernel cut them (MSG_TRUNC).
    public func receivedLength(_ index: Int) -> Int? {
        if cwarren_offload_batch_truncated(batch, UInt32(index)) != 0 { return nil }
        return Int(cwarren_offload_batch_length(batch, UInt32(index)))
    }

    /// After a receive: the UDP_GRO size of each datagram in slot `index` (0: one datagram).
    public func segmentSize(_ index: Int) -> Int { Int(cwarren_offload_batch_gro_size(batch, UInt32(index))) }

    /// After a receive: the sender of slot `index`.
    public func source(_ index: Int) -> (address: IPAddress, port: UInt16)? {
        var e = cwarren_offload_endpoint()
        guard cwarren_offload_batch_source(batch, UInt32(index), &e) == 0 else { return nil }
        let address: IPAddress = withUnsafeBytes(of: &e.address) { raw in
            if e.family == 4 {
                return .v4(UInt32(raw[0]) << 24 | UInt32(raw[1]) << 16 | UInt32(raw[2]) << 8 | UInt32(raw[3]))
            }
            var hi: UInt64 = 0, lo: UInt64 = 0
            for i in 0..<8 { hi = hi << 8 | UInt64(raw[i]) }
            for i in 8..<16 { lo = lo << 8 | UInt64(raw[i]) }
            return .v6(hi, lo)
        }
        return (address, e.port)
    }

    // MARK: helpers

    static func endpoint(_ address: IPAddress, _ port: UInt16) -> cwarren_offload_endpoint {
        var e = cwarren_offload_endpoint()
        e.port = port
        withUnsafeMutableBytes(of: &e.address) { raw in
            switch address {
            case .v4(let v):
                e.family = 4
                for i in 0..<4 { raw[i] = UInt8(truncatingIfNeeded: v >> (24 - 8 * UInt32(i))) }
            case .v6(let hi, let lo):
                e.family = 6
                for i in 0..<8 { raw[i] = UInt8(truncatingIfNeeded: hi >> (56 - 8 * UInt64(i))) }
                for i in 0..<8 { raw[8 + i] = UInt8(truncatingIfNeeded: lo >> (56 - 8 * UInt64(i))) }
            }
        }
        return e
    }

    static func same(_ a: cwarren_offload_endpoint, _ b: cwarren_offload_endpoint) -> Bool {
        var a = a, b = b
        return a.family == b.family && a.port == b.port && a.scope_id == b.scope_id
            && withUnsafeBytes(of: &a.address) { x in withUnsafeBytes(of: &b.address) { y in memcmp(x.baseAddress!, y.baseAddress!, 16) == 0 } }
    }

    static func isTransient(_ e: Int32) -> Bool {
        e == EAGAIN || e == EWOULDBLOCK || e == ENOBUFS || e == ENETUNREACH || e == EHOSTUNREACH
            || e == ECONNREFUSED || e == EPERM || e == EADDRNOTAVAIL || e == EMSGSIZE || e == EINVAL || e == EIO
    }
}
#endif
