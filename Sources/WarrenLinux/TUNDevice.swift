import CWarrenLinux

/// An error from a Linux system call, carrying its errno.
public struct SystemError: Error, Equatable, Sendable, CustomStringConvertible {
    public var call: String
    public var errno: Int32

    public init(_ call: String, errno: Int32) {
        self.call = call
        self.errno = errno
    }

    public var description: String { "\(call) failed: errno \(errno)" }
}

/// A Linux TUN device (IFF_TUN, IFF_NO_PI): one IP packet per read or write.
public final class TUNDevice: @unchecked Sendable {
    public let fileDescriptor: Int32
    public let name: String

    /// Creates (or attaches to) the TUN interface `name`.
    public init(name: String) throws {
        var actual = [CChar](repeating: 0, count: 16)
        let fd = cwarren_tun_open(name, &actual, actual.count)
        guard fd >= 0 else { throw SystemError("open TUN \(name)", errno: -fd) }
        fileDescriptor = fd
        self.name = String(decoding: actual.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
