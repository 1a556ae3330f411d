// The packet filter between the WireGuard device and the system: every packet from the tailnet is
// checked (Tailscale's stateful, receiver-enforced filter, WarrenFilter.PacketFilter) before the
// system sees it, and every packet the system sends into the tunnel is noted so that replies to
// flows this node opened get back in. A filter update swaps the rules and keeps the flow table.

import Synchronization
import WarrenFilter
import WarrenPacket
import WarrenTailcfg
import WireGuardDevice

public final class FilteringTUN: TunnelInterface, @unchecked Sendable {
    let inner: any TunnelInterface
    private let filter: Mutex<PacketFilter>
    private let epoch = ContinuousClock.now
    /// Packets dropped by the filter (for status and tests).
    public let dropped = Atomic<UInt64>(0)

    public init(_ inner: any TunnelInterface) {
        self.inner = inner
        filter = Mutex(PacketFilter(rules: [], localAddresses: []))
    }

    public var name: String { inner.name }
    public var mtu: Int { inner.mtu }

    /// Installs new rules for the node's addresses; `shieldsUp` admits no new inbound flow.
    public func update(rules: [FilterRule], localAddresses: [IPPrefix], shieldsUp: Bool) {
        filter.withLock { $0.replaceRules(shieldsUp ? [] : rules, localAddresses: localAddresses) }
    }

    /// Whether the rules let `src` open a TCP connection to `dst`:`port` (for the PeerAPI's checks).
    public func allows(src: IPAddress, dst: IPAddress, port: UInt16) -> Bool {
        filter.withLock { $0.check(src: src, dst: dst, dstPort: port, proto: .tcp).isAccepted }
    }

    /// The capabilities the rules grant `src` on `dst` (for whois).
    public func capabilities(src: IPAddress, dst: IPAddress) -> [String: [JSONValue]] {
        filter.withLock { $0.capabilities(src: src, dst: dst) }
    }

    private var now: Duration { ContinuousClock.now - epoch }

    public func readPackets(into buffers: PacketBuffers, headroom: Int) throws -> Int {
        let n = try inner.readPackets(into: buffers, headroom: headroom)
        let now = now
        filter.withLock { f in
            for i in 0..<n where buffers.lengths[i] > 0 {
                if !f.checkOutbound(packet: UnsafeRawBufferPointer(buffers.packet(i)), now: now).isAccepted {
                    buffers.lengths[i] = 0
                }
            }
        }
        return n
    }

    public func writePackets(_ buffers: PacketBuffers, count: Int) throws {
        let now = now
        var drops: UInt64 = 0
        filter.withLock { f in
            for i in 0..<count where buffers.lengths[i] > 0 {
                if !f.checkInbound(packet: UnsafeRawBufferPointer(buffers.packet(i)), now: now).isAccepted {
                    buffers.lengths[i] = 0
                    drops += 1
                }
            }
        }
        if drops > 0 { dropped.add(drops, ordering: .relaxed) }
        try inner.writePackets(buffers, count: count)
    }

    public func close() { inner.close() }
}
