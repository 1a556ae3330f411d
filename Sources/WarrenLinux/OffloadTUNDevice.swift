#if os(Linux)
import CWarrenOffload
import Glibc
import WarrenPacket

/// TUN offloads the kernel may use toward user space (TUNSETOFFLOAD's TUN_F_* flags).
public struct TUNOffloads: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// TUN_F_CSUM: packets may arrive with the transport checksum unfinished (NEEDS_CSUM).
    public static let checksum = TUNOffloads(rawValue: 1 << 0)
    /// TUN_F_TSO4 / TUN_F_TSO6: TCP super-packets of up to 64 KB.
    public static let tso4 = TUNOffloads(rawValue: 1 << 1)
    public static let tso6 = TUNOffloads(rawValue: 1 << 2)
    /// TUN_F_TSO_ECN: TCP super-packets with CWR set.
    public static let tsoECN = TUNOffloads(rawValue: 1 << 3)
    /// TUN_F_USO4 / TUN_F_USO6 (Linux 6.2): UDP super-packets (gso_type UDP_L4); both or neither.
    public static let uso4 = TUNOffloads(rawValue: 1 << 4)
    public static let uso6 = TUNOffloads(rawValue: 1 << 5)

    /// Everything the segmenter handles.
    public static let all: TUNOffloads = [.checksum, .tso4, .tso6, .tsoECN, .uso4, .uso6]

    var kernelFlags: UInt32 {
        var f: UInt32 = 0
        if contains(.checksum) { f |= cwarren_offload_tun_f_csum }
        if contains(.tso4) { f |= cwarren_offload_tun_f_tso4 }
        if contains(.tso6) { f |= cwarren_offload_tun_f_tso6 }
        if contains(.tsoECN) { f |= cwarren_offload_tun_f_tso_ecn }
        if contains(.uso4) { f |= cwarren_offload_tun_f_uso4 }
        if contains(.uso6) { f |= cwarren_offload_tun_f_uso6 }
        return f
    }

    public var description: String {
        let names: [(TUNOffloads, String)] = [(.checksum, "csum"), (.tso4, "tso4"), (.tso6, "tso6"), (.tsoECN, "tso_ecn"),
                                              (.uso4, "uso4"), (.uso6, "uso6")]
        let on = names.filter { contains($0.0) }.map(\.1)
        return on.isEmpty ? "none" : on.joined(separator: ",")
    }
}

/// A Linux TUN device opened with IFF_VNET_HDR: every read starts with a 10-byte virtio-net
/// header (`VirtioNetHeader`) and may be a TCP/UDP super-packet of up to 64 KB; every write must
/// start with one (all zero for a plain packet). Non-blocking; `waitReadable` polls.
///
/// Offloads are negotiated at open: the requested set is tried first, then without USO (kernels
/// before 6.2), then checksum offload only, then none (the header is still there).
public final class OffloadTUNDevice: @unchecked Sendable {
    /// Bytes to reserve for one read: the header plus the largest super-packet.
    public static let maximumReadLength = VirtioNetHeader.size + 65535 + 40

    public let fileDescriptor: Int32
    public let name: String
    /// What TUNSETOFFLOAD accepted.
    public let offloads: TUNOffloads

    /// Creates (or attaches to) the TUN interface `name` with virtio-net headers.
    public init(name: String, requesting requested: TUNOffloads = .all) throws {
        var actual = [CChar](repeating: 0, count: 16)
        let fd = cwarren_offload_tun_open(name, Int32(VirtioNetHeader.size), &actual, actual.count)
        guard fd >= 0 else { throw SystemError("open TUN \(name) with IFF_VNET_HDR", errno: -fd) }
        var candidates = [requested]
        let withoutUSO = requested.subtracting([.uso4, .uso6])
        if withoutUSO != requested { candidates.append(withoutUSO) }
        if requested.contains(.checksum) { candidates.append(.checksum) }
        candidates.append([])
        var accepted: TUNOffloads? = nil
        var lastError: Int32 = 0
        for candidate in candidates {
            let r = cwarren_offload_tun_set_offload(fd, candidate.kernelFlags)
            if r == 0 {
                accepted = candidate
                break
            }
            lastError = -r
        }
        guard let accepted else {
            Glibc.close(fd)
            throw SystemError("TUNSETOFFLOAD \(name)", errno: lastError)
        }
        fileDescriptor = fd
        offloads = accepted
        self.name = String(decoding: actual.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    deinit { Glibc.close(fileDescriptor) }

    /// The vnet header size the kernel uses (TUNGETVNETHDRSZ).
    public func headerSize() throws -> Int {
        let r = cwarren_offload_tun_get_vnet_header_size(fileDescriptor)
        guard r >= 0 else { throw SystemError("TUNGETVNETHDRSZ", errno: -r) }
        return Int(r)
    }

    /// Whether IFF_VNET_HDR is set on the device (TUNGETIFF).
    public func hasVirtioHeader() throws -> Bool {
        let r = cwarren_offload_tun_get_flags(fileDescriptor)
        guard r >= 0 else { throw SystemError("TUNGETIFF", errno: -r) }
        return r & cwarren_offload_iff_vnet_hdr != 0
    }

    /// Reads one header + packet without blocking. Returns its length, or nil when none waits.
    /// `buffer` should hold `maximumReadLength` bytes (a shorter read is cut by the kernel).
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int? {
        while true {
            let n = Glibc.read(fileDescriptor, buffer.baseAddress, buffer.count)
            if n >= 0 { return n }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return nil }
            throw SystemError("read TUN \(name)", errno: e)
        }
    }

    /// Writes one header + packet. Returns false when the kernel refused or had no room (dropped).
    @discardableResult
    public func write(_ bytes: UnsafeRawBufferPointer) throws -> Bool {
        while true {
            let n = Glibc.write(fileDescriptor, bytes.baseAddress, bytes.count)
            if n >= 0 { return true }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK || e == ENOBUFS || e == EINVAL || e == EIO { return false }
            throw SystemError("write TUN \(name)", errno: e)
        }
    }

    /// Blocks up to `timeoutMilliseconds` (-1: no limit) for a readable packet.
    public func waitReadable(timeoutMilliseconds: Int32 = -1) throws -> Bool {
        let r = cwarren_offload_poll_in(fileDescriptor, timeoutMilliseconds)
        guard r >= 0 else { throw SystemError("poll TUN", errno: -r) }
        return r == 1
    }
}
#endif
