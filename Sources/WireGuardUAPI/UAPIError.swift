// Errors of the configuration protocol and the errno values they carry on the wire.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A failed `get` or `set`, answered as `errno=-N` (the negated POSIX errno of `code`).
///
/// The codes are those of wireguard-go's `ipc` package (0.0.20220316, ipc/uapi_unix.go), which
/// `wg` prints as the text of the errno:
///
/// | code | errno | when (in wireguard-go and here) |
/// |---|---|---|
/// | `invalidValue` | EINVAL | a value that does not parse (key, number, endpoint, prefix, a flag other than `true`, `protocol_version` other than `1`), an unknown key, a `get=1` not followed by a blank line |
/// | `protocolViolation` | EPROTO | a line without `=` |
/// | `io` | EIO | the request cannot be read (a line longer than 65536 bytes), or the answer cannot be written |
/// | `portInUse` | EADDRINUSE | the device cannot bind `listen_port` or set `fwmark` |
/// | `unknown` | ENOANO | any other failure of the device |
public struct UAPIError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        /// The positive POSIX errno; the wire carries its negation.
        public let errno: Int32
        private let name: String

        private init(errno: Int32, name: String) {
            self.errno = errno
            self.name = name
        }

        /// EINVAL: a malformed value or an unknown key.
        public static let invalidValue = Code(errno: EINVAL, name: "invalid value")
        /// EPROTO: a line that is not `key=value`.
        public static let protocolViolation = Code(errno: EPROTO, name: "protocol violation")
        /// EIO: reading the request or writing the answer failed.
        public static let io = Code(errno: EIO, name: "I/O error")
        /// EADDRINUSE: the listen port (or fwmark) could not be applied to the socket.
        public static let portInUse = Code(errno: EADDRINUSE, name: "port in use")
        /// ENOANO: anything else (wireguard-go's `IpcErrorUnknown` is 55 on every platform).
        public static let unknown = Code(errno: 55, name: "unknown error")

        public var description: String { "\(name) (errno \(errno))" }
    }

    public var code: Code
    /// A human-readable explanation for logs; never sent on the wire.
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// The value of the `errno=` line that answers this error (negative).
    public var wireErrno: Int32 { -code.errno }

    public var description: String { "UAPI \(code): \(message)" }
}
