#if os(Linux)
import CWarrenLinux
import Glibc

/// A Linux TUN device (IFF_TUN, IFF_NO_PI): one IP packet per read or write.
///
/// The descriptor is non-blocking; `waitReadable` blocks in poll() until a packet arrives or
/// `wake()` is called from another thread, so a reader thread never spins and can be stopped.
public final class TUNDevice: @unchecked Sendable {
    public let fileDescriptor: Int32
    public let name: String
    private let wakeDescriptor: Int32

    /// Whether every read and write carries a 10-byte `virtio_net_hdr` (IFF_VNET_HDR).
    public let hasVirtioHeader: Bool

    /// Creates (or attaches to) the TUN interface `name`; with `virtioHeader`, IFF_VNET_HDR.
    public init(name: String, virtioHeader: Bool = false) throws(SystemError) {
        var actual = [CChar](repeating: 0, count: 16)
        let fd = try SystemError.check(cwarren_tun_open(name, virtioHeader ? 1 : 0, &actual, actual.count),
                                       "open TUN \(name)")
        hasVirtioHeader = virtioHeader
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
        let wake = cwarren_eventfd()
        if wake < 0 {
            Glibc.close(fd)
            throw SystemError("eventfd", errno: -wake)
        }
        fileDescriptor = fd
        wakeDescriptor = wake
        self.name = String(decoding: actual.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    deinit {
        Glibc.close(fileDescriptor)
        Glibc.close(wakeDescriptor)
    }

    /// Reads one packet without blocking. Returns its length, or nil when none is waiting.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> Int? {
        while true {
            let n = Glibc.read(fileDescriptor, buffer.baseAddress, buffer.count)
            if n >= 0 { return n }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return nil }
            throw SystemError("read TUN \(name)", errno: e)
        }
    }

    /// TUNSETOFFLOAD: which offloads the kernel may hand over (checksum, TSO for IPv4/IPv6, and
    /// USO for IPv4/IPv6: UDP super-packets, gso_type UDP_L4; kernels before 6.2 refuse it).
    /// Needs IFF_VNET_HDR.
    public func setOffloads(checksum: Bool, tcpSegmentation: Bool, udpSegmentation: Bool = false) throws(SystemError) {
        var flags: UInt32 = 0
        if checksum { flags |= cwarren_tun_offload_csum }
        if tcpSegmentation { flags |= cwarren_tun_offload_tso4 | cwarren_tun_offload_tso6 }
        if udpSegmentation { flags |= cwarren_tun_offload_uso4 | cwarren_tun_offload_uso6 }
        _ = try SystemError.check(cwarren_tun_set_offload(fileDescriptor, flags), "TUNSETOFFLOAD \(name)")
    }

    /// Sets the transmit queue length of the interface (SIOCSIFTXQLEN): packets the kernel may
    /// queue for the device to read.
    public func setTransmitQueueLength(_ length: Int) throws(SystemError) {
        _ = try SystemError.check(cwarren_if_set_txqlen(name, Int32(clamping: length)), "SIOCSIFTXQLEN \(name)")
    }

    /// Writes one packet. Returns false when the kernel had no room (EAGAIN/ENOBUFS): the packet is dropped.
    @discardableResult
    public func write(_ packet: UnsafeRawBufferPointer) throws(SystemError) -> Bool {
        while true {
            let n = Glibc.write(fileDescriptor, packet.baseAddress, packet.count)
            if n >= 0 { return true }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK || e == ENOBUFS { return false }
            // The kernel refuses malformed packets (EINVAL) and packets for a down link (EIO):
            // those are drops, not failures of the device.
            if e == EINVAL || e == EIO { return false }
            throw SystemError("write TUN \(name)", errno: e)
        }
    }

    /// Blocks until a packet is readable, `wake()` was called, or `timeoutMilliseconds` passed (-1: no limit).
    /// Returns false when woken or timed out.
    public func waitReadable(timeoutMilliseconds: Int32 = -1) throws(SystemError) -> Bool {
        let r = try SystemError.check(cwarren_poll_in(fileDescriptor, wakeDescriptor, timeoutMilliseconds), "poll TUN")
        return r == 1
    }

    /// Wakes every `waitReadable` now and from now on (used to stop the reader).
    public func wake() { _ = cwarren_eventfd_signal(wakeDescriptor) }

    /// The interface's MTU (SIOCGIFMTU).
    public func mtu() throws(SystemError) -> Int {
        Int(try SystemError.check(cwarren_if_get_mtu(name), "SIOCGIFMTU \(name)"))
    }

    /// Sets the interface's MTU (SIOCSIFMTU).
    public func setMTU(_ mtu: Int) throws(SystemError) {
        _ = try SystemError.check(cwarren_if_set_mtu(name, Int32(clamping: mtu)), "SIOCSIFMTU \(name)")
    }

    /// Sets or clears IFF_UP (SIOCSIFFLAGS).
    public func setUp(_ up: Bool) throws(SystemError) {
        _ = try SystemError.check(cwarren_if_set_up(name, up ? 1 : 0), "SIOCSIFFLAGS \(name)")
    }

    /// Whether the interface is up (IFF_UP in SIOCGIFFLAGS).
    public func isUp() throws(SystemError) -> Bool {
        let flags = try SystemError.check(cwarren_if_get_flags(name), "SIOCGIFFLAGS \(name)")
        return flags & cwarren_iff_up != 0
    }

    /// Whether an interface with this name still exists (if_nametoindex). A deleted TUN
    /// interface makes reads fail; this tells "deleted" apart from other errors.
    public func exists() -> Bool { cwarren_if_index(name) > 0 }
}
#endif
