#if os(Linux)
import Glibc
import WarrenLinux

/// A real TUN interface (`/dev/net/tun`), read in batches: after poll() says a packet is
/// waiting, non-blocking reads drain up to a batch without sleeping again.
public final class LinuxTUNInterface: TunnelInterface, @unchecked Sendable {
    public let device: TUNDevice
    public let mtu: Int
    public var name: String { device.name }

    /// Creates the interface `name`, sets its MTU and brings it up (addresses are the caller's job,
    /// as with wireguard-go and wg-quick).
    public init(name: String, mtu: Int = WireGuardDeviceConstants.defaultMTU) throws {
        device = try TUNDevice(name: name)
        try device.setMTU(mtu)
        try device.setUp(true)
        self.mtu = mtu
    }

    public func readPackets(into buffers: PacketBuffers, headroom: Int) throws -> Int {
        let room = buffers.slotSize - headroom - WireGuardDeviceConstants.tailroom
        var count = 0
        while count < buffers.capacity {
            let target = UnsafeMutableRawBufferPointer(start: buffers.slot(count) + headroom, count: room)
            let length: Int?
            do {
                length = try device.read(into: target)
            } catch {
                if !device.exists() { throw DeviceIOError.interfaceRemoved }
                throw error
            }
            guard let length else {
                if count > 0 { return count }
                if try !device.waitReadable() { throw DeviceIOError.closed }
                continue
            }
            if length == 0 { continue }
            buffers.offsets[count] = headroom
            buffers.lengths[count] = length
            count += 1
        }
        return count
    }

    public func writePackets(_ buffers: PacketBuffers, count: Int) throws {
        for i in 0..<count where buffers.lengths[i] > 0 {
            do {
                try device.write(UnsafeRawBufferPointer(buffers.packet(i)))
            } catch {
                if !device.exists() { throw DeviceIOError.interfaceRemoved }
                throw error
            }
        }
    }

    public func close() { device.wake() }
}
#endif
