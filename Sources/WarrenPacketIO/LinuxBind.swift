#if os(Linux)
import Synchronization
import Glibc
import WarrenLinux
import WarrenPacket

/// The device's UDP sockets: one IPv4 and one IPv6 (IPV6_V6ONLY) socket on the same port, with
/// large kernel buffers (SO_RCVBUFFORCE/SO_SNDBUFFORCE, 7 MB).
///
/// Sending: a run of datagrams to one endpoint goes out as one UDP GSO message (UDP_SEGMENT), so
/// that it crosses the kernel's UDP/IP stack once; everything else through sendmmsg. Receiving:
/// recvmmsg with UDP GRO on, so datagrams the kernel coalesced arrive as one buffer and are split
/// into the device's slots here.
public final class LinuxBind: PacketBind, @unchecked Sendable {
    /// Kernel buffer size requested for each socket (SO_RCVBUFFORCE/SO_SNDBUFFORCE).
    public static let socketBufferSize = 7 << 20
    public static let batchCapacity = PacketIOConstants.batchSize

    private struct State {
        var sockets: [UDPSocket?] = [nil, nil]
        var mark: UInt32 = 0
    }

    private let state = Mutex(State())
    private let receivers: [GROReceiver]
    private let sendBatch = Mutex(MessageBatch(capacity: LinuxBind.batchCapacity))
    /// Scratch arrays for UDP GSO sends (guarded by `sendBatch`).
    private let gsoBases = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: 64)
    private let gsoLengths = UnsafeMutablePointer<Int>.allocate(capacity: 64)
    /// For each message of `sendBatch`, the slot it came from (guarded by `sendBatch`).
    private let batchSlots = UnsafeMutablePointer<Int>.allocate(capacity: LinuxBind.batchCapacity)
    /// Whether UDP GSO is used for runs of datagrams to one endpoint (off after the kernel refuses it).
    private let segmentationOffload = Atomic<Bool>(true)

    /// Whether receives ask for UDP GRO.
    private let receiveCoalescing: Bool

    /// `segmentationOffload`: send runs of equal-sized datagrams to one endpoint with UDP GSO
    /// (when the kernel supports it). `receiveCoalescing`: turn UDP GRO on for receives.
    public init(segmentationOffload: Bool = true, receiveCoalescing: Bool = true) {
        self.segmentationOffload.store(segmentationOffload, ordering: .relaxed)
        self.receiveCoalescing = receiveCoalescing
        receivers = [GROReceiver(), GROReceiver()]
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
                // Coalesced receives (UDP GRO) where the kernel offers them; plain datagrams otherwise.
                if receiveCoalescing { try? socket.setGRO(true) }
            }
            let mark = state.withLock { $0.mark }
            if mark != 0 {
                try v4.setMark(mark)
                try v6?.setMark(mark)
            }
            for r in receivers { r.reset() }
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
        let r = receivers[receiver]
        if !r.hasPending {
            while true {
                let n = try socket.receive(r.batch, count: r.batch.capacity)
                if n > 0 {
                    r.received(n)
                    break
                }
                if try !socket.waitReadable() { throw DeviceIOError.closed }
            }
        }
        return r.fill(buffers)
    }

    deinit {
        gsoBases.deallocate()
        gsoLengths.deallocate()
        batchSlots.deallocate()
    }

    public func send(_ buffers: PacketBuffers, count: Int) throws {
        let sockets = state.withLock { $0.sockets }
        let useGSO = segmentationOffload.load(ordering: .relaxed)
        try sendBatch.withLock { batch in
            for (family, socket) in zip([IPVersion.v4, .v6], sockets) {
                guard let socket else {
                    // No socket for this family (no IPv6 here, or closed): nothing of it goes out.
                    for i in 0..<count where buffers.lengths[i] > 0 && buffers.endpoints[i].address.version == family {
                        buffers.lengths[i] = 0
                    }
                    continue
                }
                var k = 0
                var i = 0
                while i < count {
                    guard buffers.lengths[i] > 0, buffers.endpoints[i].address.version == family else {
                        i += 1
                        continue
                    }
                    // A run of datagrams to one endpoint, all as long as the first but the last.
                    let endpoint = buffers.endpoints[i]
                    let size = buffers.lengths[i]
                    let run = useGSO
                        ? UDPSegmentation.runLength(from: i, count: count, length: { buffers.lengths[$0] },
                                                    sameDestination: { buffers.endpoints[$0] == buffers.endpoints[$1] })
                        : 1
                    if run > 1 {
                        // Keep the order: what is queued for sendmmsg goes first.
                        if k > 0 {
                            try flush(batch, k, on: socket, buffers)
                            k = 0
                        }
                        for m in 0..<run {
                            gsoBases[m] = buffers.slot(i + m) + buffers.offsets[i + m]
                            gsoLengths[m] = buffers.lengths[i + m]
                        }
                        let j = i + run
                        let destination = SocketAddress(address: endpoint.address, port: endpoint.port)
                        switch try socket.sendSegments(bases: gsoBases, lengths: gsoLengths, count: run, segmentSize: size,
                                                       to: destination) {
                        case .sent:
                            i = j
                            continue
                        case .dropped:
                            for m in i..<j { buffers.lengths[m] = 0 }
                            i = j
                            continue
                        case .refused:
                            break
                        }
                        // Refused: send this run one by one. Datagrams larger than an Ethernet path
                        // MTU need fragments (no GSO for them); for smaller ones GSO is off from now on.
                        if size <= 1_472 { segmentationOffload.store(false, ordering: .relaxed) }
                        for m in i..<j where buffers.lengths[m] > 0 {
                            batch.setBuffer(k, buffers.slot(m) + buffers.offsets[m], length: buffers.lengths[m])
                            batch.setDestination(k, destination)
                            batchSlots[k] = m
                            k += 1
                            if k == batch.capacity {
                                try flush(batch, k, on: socket, buffers)
                                k = 0
                            }
                        }
                        i = j
                        continue
                    }
                    batch.setBuffer(k, buffers.slot(i) + buffers.offsets[i], length: size)
                    batch.setDestination(k, SocketAddress(address: endpoint.address, port: endpoint.port))
                    batchSlots[k] = i
                    k += 1
                    if k == batch.capacity {
                        try flush(batch, k, on: socket, buffers)
                        k = 0
                    }
                    i += 1
                }
                if k > 0 { try flush(batch, k, on: socket, buffers) }
            }
        }
    }

    /// sendmmsg of the first `count` messages of `batch`; a message a transient error dropped
    /// has its slot's length set to 0.
    private func flush(_ batch: MessageBatch, _ count: Int, on socket: UDPSocket, _ buffers: PacketBuffers) throws {
        var sent = 0
        while sent < count {
            let n = try socket.send(batch, first: sent, count: count - sent)
            if n == 0 {
                buffers.lengths[batchSlots[sent]] = 0
                sent += 1
            } else {
                sent += n
            }
        }
    }

    @discardableResult
    public func send(_ datagram: UnsafeRawBufferPointer, to endpoint: WireGuardEndpoint) throws -> Bool {
        let index = endpoint.address.version == .v4 ? 0 : 1
        guard let socket = state.withLock({ $0.sockets[index] }) else { return false }
        return try socket.send(datagram, to: SocketAddress(address: endpoint.address, port: endpoint.port))
    }
}

/// Receive memory for one socket: recvmmsg into a few 64 KB buffers (each may hold several
/// datagrams of one sender coalesced by UDP GRO), then handed to the device one datagram per slot,
/// keeping what does not fit for the next call. Used by one receiving thread only.
final class GROReceiver: @unchecked Sendable {
    static let messages = 8
    static let messageSize = 65_536
    let batch = MessageBatch(capacity: GROReceiver.messages)
    private let memory = UnsafeMutableRawPointer.allocate(byteCount: GROReceiver.messages * GROReceiver.messageSize,
                                                          alignment: 64)
    private var lengths = [Int](repeating: 0, count: GROReceiver.messages)
    private var segmentSizes = [Int](repeating: 0, count: GROReceiver.messages)
    private var sources = [WireGuardEndpoint](repeating: WireGuardEndpoint(address: .v4(0), port: 0),
                                              count: GROReceiver.messages)
    private var count = 0
    /// The message being handed out, and the datagram of it that comes next.
    private var index = 0
    private var datagram = 0

    init() {
        for i in 0..<Self.messages { batch.setBuffer(i, memory + i * Self.messageSize, length: Self.messageSize) }
    }

    deinit { memory.deallocate() }

    var hasPending: Bool { index < count }

    func reset() {
        count = 0
        index = 0
        datagram = 0
    }

    /// Takes note of `n` messages just received into `batch`.
    func received(_ n: Int) {
        count = n
        index = 0
        datagram = 0
        for i in 0..<n {
            lengths[i] = batch.receivedLength(i) ?? 0  // truncated: dropped
            segmentSizes[i] = batch.coalescedSegmentSize(i)
            if let source = batch.source(i) {
                sources[i] = WireGuardEndpoint(address: source.address, port: source.port)
            } else {
                lengths[i] = 0
            }
        }
    }

    /// Copies pending datagrams into the slots of `buffers` (offset 0); returns how many.
    func fill(_ buffers: PacketBuffers) -> Int {
        var out = 0
        while out < buffers.capacity && index < count {
            let length = lengths[index], size = segmentSizes[index]
            let datagrams = UDPSegmentation.datagramCount(length: length, segmentSize: size)
            if datagram < datagrams {
                let range = UDPSegmentation.datagramRange(datagram, length: length, segmentSize: size)
                let from = UnsafeRawBufferPointer(start: memory + index * Self.messageSize + range.lowerBound, count: range.count)
                buffers.store(from, in: out, at: 0)
                buffers.endpoints[out] = sources[index]
                out += 1
                datagram += 1
            }
            // Done with this message (or it held nothing): on to the next, so that `hasPending` is exact.
            if datagram >= datagrams {
                index += 1
                datagram = 0
            }
        }
        return out
    }
}
#endif
