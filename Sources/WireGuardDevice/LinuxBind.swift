#if os(Linux)
import Synchronization
import WarrenLinux
import WarrenPacket

/// The device's UDP sockets: one IPv4 and one IPv6 (IPV6_V6ONLY) socket on the same port, with
/// large kernel buffers, read with recvmmsg and written with sendmmsg.
public final class LinuxBind: PacketBind, @unchecked Sendable {
    /// Kernel buffer size requested for each socket (SO_RCVBUFFORCE/SO_SNDBUFFORCE).
    public static let socketBufferSize = 7 << 20
    public static let batchCapacity = WireGuardDeviceConstants.batchSize

    private struct State {
        var sockets: [UDPSocket?] = [nil, nil]
        var mark: UInt32 = 0
    }

    private let state = Mutex(State())
    private let receiveBatches: [MessageBatch]
    private let sendBatch = Mutex(MessageBatch(capacity: LinuxBind.batchCapacity))

    public init() {
        receiveBatches = [MessageBatch(capacity: Self.batchCapacity), MessageBatch(capacity: Self.batchCapacity)]
    }

    public var receiverCount: Int { 2 }

    public func open(port: UInt16) throws -> UInt16 {
        close()
        var attempts = 0
        while true {
            attempts += 1
            let v4 = try UDPSocket(family: .v4, port: port)
            let bound = try v4.localPort()
            var v6: UDPSocket? = nil
            do {
                v6 = try UDPSocket(family: .v6, port: bound)
            } catch {
                if error.errno == 98 /* EADDRINUSE */ && port == 0 && attempts < 100 {
                    continue  // the kernel's choice for IPv4 is taken on IPv6: choose again
                }
                if error.errno != 97 /* EAFNOSUPPORT: no IPv6 here */ { throw error }
            }
            for socket in [v4, v6].compactMap({ $0 }) {
                try socket.setBufferSizes(Self.socketBufferSize)
            }
            let mark = state.withLock { $0.mark }
            if mark != 0 {
                try v4.setMark(mark)
                try v6?.setMark(mark)
            }
            state.withLock { $0.sockets = [v4, v6] }
            return bound
        }
    }

    public func setMark(_ mark: UInt32) throws {
        let sockets = state.withLock { s in
            s.mark = mark
            return s.sockets
        }
        for socket in sockets.compactMap({ $0 }) { try socket.setMark(mark) }
    }

    public func close() {
        let old = state.withLock { s in
            let old = s.sockets
            s.sockets = [nil, nil]
            return old
        }
        for socket in old.compactMap({ $0 }) { socket.wake() }
    }

    public func receive(_ receiver: Int, into buffers: PacketBuffers) throws -> Int {
        guard receiver >= 0, receiver < 2, let socket = state.withLock({ $0.sockets[receiver] }) else {
            throw DeviceIOError.closed
        }
        let batch = receiveBatches[receiver]
        let count = min(buffers.capacity, batch.capacity)
        for i in 0..<count { batch.setBuffer(i, buffers.slot(i), length: buffers.slotSize) }
        while true {
            let n = try socket.receive(batch, count: count)
            if n > 0 {
                for i in 0..<n {
                    buffers.offsets[i] = 0
                    buffers.lengths[i] = batch.receivedLength(i) ?? 0
                    if let source = batch.source(i) {
                        buffers.endpoints[i] = WireGuardEndpoint(address: source.address, port: source.port)
                    } else {
                        buffers.lengths[i] = 0
                    }
                }
                return n
            }
            if try !socket.waitReadable() { throw DeviceIOError.closed }
        }
    }

    public func send(_ buffers: PacketBuffers, count: Int) throws {
        let sockets = state.withLock { $0.sockets }
        try sendBatch.withLock { batch in
            for (family, socket) in zip([IPVersion.v4, .v6], sockets) {
                guard let socket else { continue }
                var k = 0
                for i in 0..<count where buffers.lengths[i] > 0 && buffers.endpoints[i].address.version == family {
                    batch.setBuffer(k, buffers.slot(i) + buffers.offsets[i], length: buffers.lengths[i])
                    let e = buffers.endpoints[i]
                    batch.setDestination(k, SocketAddress(address: e.address, port: e.port))
                    k += 1
                    if k == batch.capacity {
                        try Self.flush(batch, k, on: socket)
                        k = 0
                    }
                }
                if k > 0 { try Self.flush(batch, k, on: socket) }
            }
        }
    }

    private static func flush(_ batch: MessageBatch, _ count: Int, on socket: UDPSocket) throws {
        var sent = 0
        while sent < count {
            sent += try socket.send(batch, first: sent, count: count - sent)
        }
    }

    public func send(_ datagram: UnsafeRawBufferPointer, to endpoint: WireGuardEndpoint) throws {
        let index = endpoint.address.version == .v4 ? 0 : 1
        guard let socket = state.withLock({ $0.sockets[index] }) else { return }
        try socket.send(datagram, to: SocketAddress(address: endpoint.address, port: endpoint.port))
    }
}
#endif
