import Foundation
import Synchronization
public import WarrenPacket

// In-memory twins of the TUN interface and the UDP bind, so that tests run whole devices in
// one process: packets are byte arrays in queues guarded by a condition variable.

/// A TUN interface in memory: `inject` is the system sending a packet into the tunnel;
/// `nextWritten` is what the device delivered to the system.
public final class MemoryTUN: TunnelInterface, @unchecked Sendable {
    public let name: String
    public let mtu: Int
    private let inbound = PacketQueue<[UInt8]>()
    private let outbound = PacketQueue<[UInt8]>()

    public init(name: String = "mem0", mtu: Int = PacketIOConstants.defaultMTU) {
        self.name = name
        self.mtu = mtu
    }

    /// Hands `packet` to the device as if the system had routed it into the interface.
    public func inject(_ packet: [UInt8]) { inbound.push(packet) }

    /// The next packet the device wrote, waiting up to `timeout`; nil if none came.
    public func nextWritten(timeout: Duration = .seconds(5)) -> [UInt8]? {
        let seconds = Double(timeout.components.seconds) + Double(timeout.components.attoseconds) * 1e-18
        return outbound.pop(maximum: 1, deadline: Date(timeIntervalSinceNow: seconds))?.first
    }

    public func readPackets(into buffers: PacketBuffers, headroom: Int) throws -> Int {
        guard let packets = inbound.pop(maximum: buffers.capacity) else { throw DeviceIOError.closed }
        var count = 0
        for packet in packets {
            let stored = packet.withUnsafeBytes { buffers.store($0, in: count, at: headroom) }
            if stored { count += 1 }
        }
        return count
    }

    public func writePackets(_ buffers: PacketBuffers, count: Int) throws {
        for i in 0..<count where buffers.lengths[i] > 0 {
            outbound.push(Array(UnsafeRawBufferPointer(buffers.packet(i))))
        }
    }

    public func close() { inbound.close() }
}

/// A set of `MemoryBind`s that can reach each other by endpoint, like hosts on one LAN.
public final class MemoryNetwork: Sendable {
    private let binds = Mutex<[WireGuardEndpoint: MemoryBind]>([:])

    public init() {}

    func register(_ bind: MemoryBind, at endpoint: WireGuardEndpoint) -> Bool {
        binds.withLock { table in
            if table[endpoint] != nil { return false }
            table[endpoint] = bind
            return true
        }
    }

    func unregister(_ endpoint: WireGuardEndpoint) { _ = binds.withLock { $0.removeValue(forKey: endpoint) } }

    func deliver(_ datagram: [UInt8], from source: WireGuardEndpoint, to destination: WireGuardEndpoint) {
        let target = binds.withLock { $0[destination] }
        target?.enqueue(datagram, from: source)
    }
}

/// A UDP bind in memory: one address on a `MemoryNetwork`; `open(port:)` picks the port.
public final class MemoryBind: PacketBind, @unchecked Sendable {
    public let network: MemoryNetwork
    /// The bind's address (changing it models the host moving to another network: roaming).
    public let address: Mutex<IPAddress>
    private let queue = PacketQueue<([UInt8], WireGuardEndpoint)>()
    private let bound = Mutex<WireGuardEndpoint?>(nil)
    private static let nextPort = Mutex<UInt16>(40000)
    /// While set, every send fails as a real socket's does without a route: datagrams are dropped
    /// and reported as such (for tests of what the device does then).
    public let failsSends = Atomic<Bool>(false)

    public init(network: MemoryNetwork, address: IPAddress) {
        self.network = network
        self.address = Mutex(address)
    }

    /// The endpoint the bind is reachable at, once open.
    public var localEndpoint: WireGuardEndpoint? { bound.withLock { $0 } }

    public var receiverCount: Int { 1 }

    public func open(port: UInt16) throws -> UInt16 {
        close()
        let address = self.address.withLock { $0 }
        var chosen = port
        while true {
            if port == 0 { chosen = Self.nextPort.withLock { p in p &+= 1; return p } }
            let endpoint = WireGuardEndpoint(address: address, port: chosen)
            if network.register(self, at: endpoint) {
                bound.withLock { $0 = endpoint }
                queue.reopen()
                return chosen
            }
            if port != 0 { throw DeviceIOError.closed }
        }
    }

    /// Moves the bind to another address, keeping its port (the peer sees a new source: roaming).
    public func move(to newAddress: IPAddress) {
        address.withLock { $0 = newAddress }
        bound.withLock { endpoint in
            guard let old = endpoint else { return }
            network.unregister(old)
            let moved = WireGuardEndpoint(address: newAddress, port: old.port)
            _ = network.register(self, at: moved)
            endpoint = moved
        }
    }

    func enqueue(_ datagram: [UInt8], from source: WireGuardEndpoint) { queue.push((datagram, source)) }

    /// For a bind used directly by a test (not by a device): the next datagram that arrived and
    /// its source, waiting up to `timeout`; nil if none came.
    public func nextReceived(timeout: Duration = .seconds(5)) -> ([UInt8], WireGuardEndpoint)? {
        let seconds = Double(timeout.components.seconds) + Double(timeout.components.attoseconds) * 1e-18
        return queue.pop(maximum: 1, deadline: Date(timeIntervalSinceNow: seconds))?.first
    }

    public func receive(_ receiver: Int, into buffers: PacketBuffers) throws -> Int {
        guard let items = queue.pop(maximum: buffers.capacity) else { throw DeviceIOError.closed }
        var count = 0
        for (bytes, source) in items {
            let stored = bytes.withUnsafeBytes { buffers.store($0, in: count, at: 0) }
            if stored {
                buffers.endpoints[count] = source
                count += 1
            }
        }
        return count
    }

    public func send(_ buffers: PacketBuffers, count: Int) throws {
        let source = localEndpoint
        let failing = failsSends.load(ordering: .relaxed)
        for i in 0..<count where buffers.lengths[i] > 0 {
            guard let source, !failing else {
                buffers.lengths[i] = 0
                continue
            }
            network.deliver(Array(UnsafeRawBufferPointer(buffers.packet(i))), from: source, to: buffers.endpoints[i])
        }
    }

    @discardableResult
    public func send(_ datagram: UnsafeRawBufferPointer, to endpoint: WireGuardEndpoint) throws -> Bool {
        guard let source = localEndpoint, !failsSends.load(ordering: .relaxed) else { return false }
        network.deliver(Array(datagram), from: source, to: endpoint)
        return true
    }

    public func setMark(_ mark: UInt32) throws {}

    public func close() {
        if let old = bound.withLock({ e -> WireGuardEndpoint? in defer { e = nil }; return e }) {
            network.unregister(old)
        }
        queue.close()
    }
}
