// The listening Unix socket of the configuration protocol, where `wg` finds a userspace device:
// /var/run/wireguard/<interface>.sock.
//
// As wireguard-go (ipc/uapi_unix.go, 0.0.20220316) does it: the directory is created with mode
// 0755, the socket is only accessible to its owner (mode 0700, wireguard-go binds under umask
// 077), and a socket file left behind by a dead process is replaced, while one that still
// answers a connection makes opening fail ("in use").

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Errors of opening or serving the UAPI socket, with the failing call and its errno.
public struct UAPIServerError: Error, Hashable, Sendable, CustomStringConvertible {
    public var operation: String
    public var errno: Int32

    public init(operation: String, errno: Int32) {
        self.operation = operation
        self.errno = errno
    }

    public var description: String {
        "UAPI socket: \(operation) failed: \(String(cString: strerror(errno))) (errno \(errno))"
    }
}

/// A bound and listening UAPI socket. Closing it (or deinit) closes the descriptor; the socket
/// file is removed by the server when it stops, or by `removeSocketFile()`.
public final class UAPIListener: Sendable {
    public static let defaultDirectory = "/var/run/wireguard"

    /// The listening descriptor.
    public let descriptor: Int32
    /// The path of the socket file.
    public let path: String
    /// The identity of the socket file this listener created (device, inode), to notice when it
    /// is removed or replaced.
    let fileIdentity: FileIdentity?

    struct FileIdentity: Hashable, Sendable {
        var device: UInt64
        var inode: UInt64
    }

    /// `<directory>/<interfaceName>.sock`.
    public static func socketPath(interfaceName: String, directory: String = defaultDirectory) -> String {
        "\(directory)/\(interfaceName).sock"
    }

    /// Creates the directory if needed and listens on `<directory>/<interfaceName>.sock`.
    public static func open(interfaceName: String, directory: String = defaultDirectory) throws(UAPIServerError)
        -> UAPIListener
    {
        guard !interfaceName.isEmpty, !interfaceName.contains("/") else {
            throw UAPIServerError(operation: "interface name \"\(interfaceName)\"", errno: EINVAL)
        }
        try makeDirectory(directory)
        let path = socketPath(interfaceName: interfaceName, directory: directory)
        do {
            return try bindAndListen(path: path)
        } catch where error.errno == EADDRINUSE {
            // Someone is still answering there: do not steal the socket.
            if Self.answersConnection(path: path) {
                throw UAPIServerError(operation: "bind \(path) (a live socket is there)", errno: EADDRINUSE)
            }
            guard unlink(path) == 0 || errno == ENOENT else {
                throw UAPIServerError(operation: "unlink stale \(path)", errno: errno)
            }
            return try bindAndListen(path: path)
        }
    }

    /// Adopts an already listening descriptor (for example one inherited from a parent that
    /// daemonized, as wireguard-go passes it in `WG_UAPI_FD`). `path` is the socket's file.
    public init(adopting descriptor: Int32, path: String) {
        self.descriptor = descriptor
        self.path = path
        fileIdentity = Self.identity(of: path)
    }

    private init(descriptor: Int32, path: String, identity: FileIdentity?) {
        self.descriptor = descriptor
        self.path = path
        fileIdentity = identity
    }

    deinit { close(descriptor) }

    /// Whether the socket file is still the one this listener created.
    public var socketFileIsOurs: Bool {
        guard let fileIdentity else { return Self.identity(of: path) != nil }
        return Self.identity(of: path) == fileIdentity
    }

    /// Removes the socket file if it is still this listener's.
    public func removeSocketFile() {
        if socketFileIsOurs { unlink(path) }
    }

    static func identity(of path: String) -> FileIdentity? {
        var info = stat()
        guard lstat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFSOCK else { return nil }
        return FileIdentity(device: UInt64(info.st_dev), inode: UInt64(info.st_ino))
    }

    private static func makeDirectory(_ directory: String) throws(UAPIServerError) {
        // Create each missing component with 0755 (like MkdirAll).
        var current = ""
        for component in directory.split(separator: "/", omittingEmptySubsequences: true) {
            current += "/" + component
            if mkdir(current, 0o755) != 0 && errno != EEXIST {
                throw UAPIServerError(operation: "mkdir \(current)", errno: errno)
            }
        }
    }

    /// Fills a sockaddr_un for `path`; nil if the path does not fit.
    static func withAddress<R>(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R? {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard bytes.count < capacity, !bytes.contains(0) else { return nil }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
    }

    private static func bindAndListen(path: String) throws(UAPIServerError) -> UAPIListener {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw UAPIServerError(operation: "socket", errno: errno) }
        guard let bound = withAddress(path, { bind(fd, $0, $1) }) else {
            close(fd)
            throw UAPIServerError(operation: "socket path \(path) too long", errno: ENAMETOOLONG)
        }
        if bound != 0 {
            let error = errno
            close(fd)
            throw UAPIServerError(operation: "bind \(path)", errno: error)
        }
        // wireguard-go's socket ends up 0700 (bound under umask 077). Changing the process-wide
        // umask would race with other threads, so restrict the file right after binding.
        if chmod(path, 0o700) != 0 || listen(fd, 16) != 0 {
            let error = errno
            close(fd)
            unlink(path)
            throw UAPIServerError(operation: "chmod/listen \(path)", errno: error)
        }
        return UAPIListener(descriptor: fd, path: path, identity: identity(of: path))
    }

    /// Whether a process accepts connections on `path`.
    static func answersConnection(path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return withAddress(path, { connect(fd, $0, $1) }) == 0
    }
}
