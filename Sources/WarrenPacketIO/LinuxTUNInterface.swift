#if os(Linux)
import Glibc
import Synchronization
import WarrenLinux
import WarrenPacket

/// A real TUN interface (`/dev/net/tun`), read in batches: after poll() says a packet is
/// waiting, non-blocking reads drain up to a batch without sleeping again.
///
/// With offloads (the default), the interface is opened with IFF_VNET_HDR and TSO: the kernel
/// hands over TCP super-packets of up to 64 KB, which are cut into MTU-sized segments here (see
/// `GSOSegmenter`), and checksums it left for the device are completed. A super-packet whose segments
/// do not all fit in the caller's batch is kept and continued at the next read. Writes go through a
/// `PacketCoalescer`: segments of one TCP flow (and datagrams of one UDP flow) become one
/// super-packet per write; packets that stay alone are written from their slot.
public final class LinuxTUNInterface: TunnelInterface, @unchecked Sendable {
    public let device: TUNDevice
    public let mtu: Int
    public var name: String { device.name }
    /// Whether reads and writes carry a virtio-net header (offloads on).
    public let offloads: Bool

    /// The packet being cut into segments: read from the device, not yet fully handed out.
    private let jumbo: UnsafeMutableRawPointer
    private static let jumboSize = VirtioNetHeader.size + 65_536
    private var pendingLength = 0
    private var pendingHeader = VirtioNetHeader()
    private var pendingIndex = 0

    /// Packets the kernel may queue for the device before dropping (the default of 500 drops
    /// bursts while the device is busy encrypting).
    public static let transmitQueueLength = 4_000

    /// Creates the interface `name`, sets its MTU and brings it up (addresses are the caller's job,
    /// as with wireguard-go and wg-quick).
    public init(name: String, mtu: Int = PacketIOConstants.defaultMTU, offloads: Bool = true) throws {
        var dev = try TUNDevice(name: name, virtioHeader: offloads)
        var on = offloads
        if offloads {
            do {
                try dev.setOffloads(checksum: true, tcpSegmentation: true)
            } catch {
                // No offloads here: reopen without the virtio-net header.
                dev = try TUNDevice(name: name, virtioHeader: false)
                on = false
            }
        }
        device = dev
        self.offloads = on
        try device.setMTU(mtu)
        try? device.setTransmitQueueLength(Self.transmitQueueLength)
        try device.setUp(true)
        self.mtu = mtu
        jumbo = .allocate(byteCount: Self.jumboSize, alignment: 64)
    }

    /// The coalescer for writes and the slot of each packet added to it (guarded: two inbound threads write).
    private let coalescing = Mutex(WriteCoalescing())
    /// Whether UDP datagrams are coalesced too (off when the kernel refuses UDP GSO from TUN).
    private let udpCoalescing = Atomic<Bool>(true)

    deinit { jumbo.deallocate() }

    public func readPackets(into buffers: PacketBuffers, headroom: Int) throws -> Int {
        offloads ? try readWithOffloads(into: buffers, headroom: headroom) : try readPlain(into: buffers, headroom: headroom)
    }

    private func readPlain(into buffers: PacketBuffers, headroom: Int) throws -> Int {
        let room = buffers.slotSize - headroom - PacketIOConstants.tailroom
        var count = 0
        while count < buffers.capacity {
            let target = UnsafeMutableRawBufferPointer(start: buffers.slot(count) + headroom, count: room)
            guard let length = try read(into: target) else {
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

    private func read(into target: UnsafeMutableRawBufferPointer) throws -> Int? {
        do {
            return try device.read(into: target)
        } catch {
            if !device.exists() { throw DeviceIOError.interfaceRemoved }
            throw error
        }
    }

    private func readWithOffloads(into buffers: PacketBuffers, headroom: Int) throws -> Int {
        let room = buffers.slotSize - headroom - PacketIOConstants.tailroom
        var count = 0
        while count < buffers.capacity {
            if pendingLength == 0 {
                guard let n = try read(into: UnsafeMutableRawBufferPointer(start: jumbo, count: Self.jumboSize)) else {
                    if count > 0 { return count }
                    if try !device.waitReadable() { throw DeviceIOError.closed }
                    continue
                }
                guard n > VirtioNetHeader.size,
                      let header = try? VirtioNetHeader(decoding: UnsafeRawBufferPointer(start: jumbo, count: n))
                else { continue }
                pendingHeader = header
                pendingLength = n - VirtioNetHeader.size
                pendingIndex = 0
            }
            let packet = UnsafeRawBufferPointer(start: jumbo + VirtioNetHeader.size, count: pendingLength)
            let slotsBefore = count
            // Cut into segments (a packet without GSO is copied, its checksum finished), as many as
            // the batch has room for; the rest of a super-packet waits for the next batch.
            let reached: Int
            do {
                reached = try GSOSegmenter.segment(packet, header: pendingHeader, resumingAt: pendingIndex) { _, length in
                    guard count < buffers.capacity, length <= room else { return nil }
                    buffers.offsets[count] = headroom
                    buffers.lengths[count] = length
                    count += 1
                    return buffers.slot(count - 1) + headroom
                }
            } catch {
                pendingLength = 0  // malformed, or an offload we did not ask for: dropped
                continue
            }
            let total = (try? GSOSegmenter.segmentCount(packet, header: pendingHeader)) ?? reached
            if reached >= total || (count == slotsBefore && count == 0) {
                pendingLength = 0  // done (or cannot make progress at all: dropped)
            } else {
                pendingIndex = reached
                return count  // the batch is full; continue this packet next time
            }
        }
        return count
    }

    public func writePackets(_ buffers: PacketBuffers, count: Int) throws {
        guard offloads else {
            for i in 0..<count where buffers.lengths[i] > 0 { try write(UnsafeRawBufferPointer(buffers.packet(i))) }
            return
        }
        try coalescing.withLock { state in
            let coalescer = state.coalescer
            var i = 0
            while i < count {
                // Packets of one flow go to the kernel as one super-packet (GRO); see `PacketCoalescer`.
                coalescer.reset()
                coalescer.coalescesUDP = udpCoalescing.load(ordering: .relaxed)
                var added = 0
                while i < count {
                    if buffers.lengths[i] > 0 {
                        guard coalescer.add(UnsafeRawBufferPointer(buffers.packet(i))) else { break }
                        state.slots[added] = i
                        added += 1
                    }
                    i += 1
                }
                coalescer.finish()
                for o in 0..<coalescer.outputCount {
                    if let k = coalescer.singleInput(ofOutput: o) {
                        try writeAlone(buffers, state.slots[k], scratch: state.scratch)
                        continue
                    }
                    if try write(coalescer.output(o)) { continue }
                    if coalescer.gsoType(ofOutput: o) == .udpL4 {
                        // The kernel refuses UDP GSO from user space: from now on, and for these, one by one.
                        udpCoalescing.store(false, ordering: .relaxed)
                        for k in coalescer.inputs(ofOutput: o) { try writeAlone(buffers, state.slots[k], scratch: state.scratch) }
                    }
                }
            }
        }
    }

    /// Writes slot `slot` on its own behind a zeroed virtio-net header (no offload), in the room
    /// before the packet; without that room, copied behind one in `scratch`.
    private func writeAlone(_ buffers: PacketBuffers, _ slot: Int, scratch: UnsafeMutableRawPointer) throws {
        let offset = buffers.offsets[slot]
        let length = buffers.lengths[slot]
        let start: UnsafeMutableRawPointer
        if offset >= VirtioNetHeader.size {
            start = buffers.slot(slot) + offset - VirtioNetHeader.size
        } else {
            guard length <= WriteCoalescing.scratchSize - VirtioNetHeader.size else { return }  // not an IP packet: dropped
            start = scratch
            (scratch + VirtioNetHeader.size).copyMemory(from: buffers.slot(slot) + offset, byteCount: length)
        }
        start.initializeMemory(as: UInt8.self, repeating: 0, count: VirtioNetHeader.size)
        try write(UnsafeRawBufferPointer(start: start, count: length + VirtioNetHeader.size))
    }

    @discardableResult
    private func write(_ packet: UnsafeRawBufferPointer) throws -> Bool {
        do {
            return try device.write(packet)
        } catch {
            if !device.exists() { throw DeviceIOError.interfaceRemoved }
            throw error
        }
    }

    public func close() { device.wake() }
}

/// The TUN write path's coalescer, and for each packet added to it the slot it came from.
struct WriteCoalescing: ~Copyable {
    static let capacity = PacketIOConstants.batchSize
    let coalescer = PacketCoalescer(maximumPackets: WriteCoalescing.capacity)
    let slots = UnsafeMutablePointer<Int>.allocate(capacity: WriteCoalescing.capacity)
    /// For a packet without room for the header before it.
    static let scratchSize = PacketCoalescer.maximumOutputLength
    let scratch = UnsafeMutableRawPointer.allocate(byteCount: WriteCoalescing.scratchSize, alignment: 64)
    deinit {
        slots.deallocate()
        scratch.deallocate()
    }
}
#endif
