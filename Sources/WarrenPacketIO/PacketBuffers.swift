/// Preallocated packet memory for one thread of the device: `capacity` slots of `slotSize`
/// bytes, each with an offset and a length into its slot and a remote endpoint.
///
/// A slot is laid out so that a packet can be encrypted or decrypted in place:
///
///     slot start                       offset          offset+length
///     |  headroom (WireGuard header)   |  packet bytes  |  room for padding and the tag  |
///
/// Not thread-safe: each thread owns its buffers. Nothing here allocates after `init`.
public final class PacketBuffers: @unchecked Sendable {
    public let capacity: Int
    public let slotSize: Int
    public let base: UnsafeMutableRawPointer
    /// Per slot: where the packet starts inside the slot.
    public let offsets: UnsafeMutablePointer<Int>
    /// Per slot: the packet's length (0 = nothing to send or write).
    public let lengths: UnsafeMutablePointer<Int>
    /// Per slot: the remote endpoint (source after a receive, destination for a send).
    public let endpoints: UnsafeMutablePointer<WireGuardEndpoint>

    public init(capacity: Int, slotSize: Int) {
        precondition(capacity > 0 && slotSize > 0)
        self.capacity = capacity
        self.slotSize = slotSize
        base = UnsafeMutableRawPointer.allocate(byteCount: capacity * slotSize, alignment: 64)
        offsets = .allocate(capacity: capacity)
        offsets.initialize(repeating: 0, count: capacity)
        lengths = .allocate(capacity: capacity)
        lengths.initialize(repeating: 0, count: capacity)
        endpoints = .allocate(capacity: capacity)
        endpoints.initialize(repeating: WireGuardEndpoint(address: .v4(0), port: 0), count: capacity)
    }

    deinit {
        base.deallocate()
        offsets.deallocate()
        lengths.deallocate()
        endpoints.deinitialize(count: capacity)
        endpoints.deallocate()
    }

    /// The start of slot `index`.
    // Inlinable: the device calls these per packet from another module.
    @inlinable @inline(__always)
    public func slot(_ index: Int) -> UnsafeMutableRawPointer { base + index * slotSize }

    /// The packet bytes of slot `index` (from its offset, `lengths[index]` long).
    @inlinable @inline(__always)
    public func packet(_ index: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: slot(index) + offsets[index], count: lengths[index])
    }

    /// Copies `bytes` into slot `index` at `offset`; returns false when it does not fit.
    @discardableResult
    @inlinable
    public func store(_ bytes: UnsafeRawBufferPointer, in index: Int, at offset: Int) -> Bool {
        guard offset >= 0, bytes.count <= slotSize - offset else { return false }
        if let source = bytes.baseAddress, bytes.count > 0 {
            (slot(index) + offset).copyMemory(from: source, byteCount: bytes.count)
        }
        offsets[index] = offset
        lengths[index] = bytes.count
        return true
    }
}
