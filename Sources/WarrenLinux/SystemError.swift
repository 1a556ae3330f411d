/// An error from a Linux system call, carrying its errno.
public struct SystemError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What was called, with enough context to find it in a log ("open TUN wg0").
    public var call: String
    public var errno: Int32

    public init(_ call: String, errno: Int32) {
        self.call = call
        self.errno = errno
    }

    public var description: String { "\(call) failed: errno \(errno)" }

    /// Turns the shims' "non-negative or -errno" convention into a value or a thrown error.
    @inline(__always)
    static func check(_ result: Int32, _ call: @autoclosure () -> String) throws(SystemError) -> Int32 {
        if result < 0 { throw SystemError(call(), errno: -result) }
        return result
    }
}
