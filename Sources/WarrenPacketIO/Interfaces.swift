public import WarrenPacket

/// A UDP endpoint of a peer: address and port.
public struct WireGuardEndpoint: Hashable, Sendable, CustomStringConvertible {
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
}

/// Why an I/O interface stopped.
public enum DeviceIOError: Error, Equatable, Sendable {
    /// `close()` was called (or the bind is being rebound): stop reading.
    case closed
    /// The TUN interface was deleted from under the device.
    case interfaceRemoved
}

/// The device's side of a TUN interface: IP packets in and out, in batches.
///
/// Implementations: `LinuxTUNInterface` (a real /dev/net/tun device) and `MemoryTUN` (a twin for tests).
public protocol TunnelInterface: AnyObject, Sendable {
    /// The interface name ("wg0").
    var name: String { get }
    /// The MTU the device assumes for inner packets.
    var mtu: Int { get }
    /// Blocks until at least one packet is available, then fills slots 0..<n of `buffers` with
    /// packets placed at `headroom` bytes into each slot (`offsets`, `lengths` set). Returns n > 0,
    /// or throws `DeviceIOError.closed` / `.interfaceRemoved`.
    func readPackets(into buffers: PacketBuffers, headroom: Int) throws -> Int
    /// Writes the packets of slots 0..<count whose length is non-zero. Packets the system refuses are dropped.
    func writePackets(_ buffers: PacketBuffers, count: Int) throws
    /// Makes a blocked `readPackets` return (throwing `.closed`), now and later.
    func close()
}

/// The device's side of its UDP sockets, in batches.
///
/// Implementations: `LinuxBind` (an IPv4 and an IPv6 socket) and `MemoryBind` (a twin for tests).
public protocol PacketBind: AnyObject, Sendable {
    /// Opens the sockets on `port` (0: any free port), closing any previous ones (their receivers
    /// then throw `.closed`). Returns the bound port.
    func open(port: UInt16) throws -> UInt16
    /// How many receive loops to run (one per socket), each calling `receive(_:into:)` with its number.
    var receiverCount: Int { get }
    /// Blocks until datagrams arrive on receiver `receiver`, fills slots 0..<n (offset 0, length,
    /// source endpoint) and returns n > 0; throws `DeviceIOError.closed` when closed or rebound.
    func receive(_ receiver: Int, into buffers: PacketBuffers) throws -> Int
    /// Sends slots 0..<count whose length is non-zero, each to its endpoint. Drops what cannot be
    /// sent, and sets the length of each dropped slot to 0 (so that only what was sent is counted).
    func send(_ buffers: PacketBuffers, count: Int) throws
    /// Sends one datagram. Returns false when it was dropped (no route, no buffer space, ...).
    @discardableResult
    func send(_ datagram: UnsafeRawBufferPointer, to endpoint: WireGuardEndpoint) throws -> Bool
    /// Sets the fwmark of the sockets (0 clears it).
    func setMark(_ mark: UInt32) throws
    /// Closes the sockets; blocked receivers throw `.closed`.
    func close()
}
