// Serves the configuration protocol on a listening UAPI socket with blocking I/O: one thread
// accepts, one thread per connection reads requests and writes answers (as wireguard-go runs
// one goroutine per connection). Handler calls are serialized. Not a hot path.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization
public import WireGuardUAPI

/// Serves `get=1`/`set=1` requests from `wg` (and anything else speaking the protocol) with a
/// `UAPIHandler`.
///
/// Usage by a device's run loop:
/// ```swift
/// let listener = try UAPIListener.open(interfaceName: "wg0")
/// let server = UAPIServer(listener: listener, handler: device)
/// server.start { reason in /* .socketRemoved: shut the device down, as wireguard-go does */ }
/// ...
/// server.stop()   // closes connections, removes the socket file
/// ```
public final class UAPIServer: Sendable {
    /// Why `run()` returned.
    public enum StopReason: Hashable, Sendable {
        /// `stop()` was called.
        case stopped
        /// The socket file was removed or replaced (wireguard-go shuts the device down then).
        case socketRemoved
        /// `accept`/`poll` failed with this errno.
        case failed(Int32)
    }

    public let listener: UAPIListener
    private let handler: any UAPIHandler
    /// Connections served at once (each has a thread); more are closed as soon as they are accepted.
    public let maximumConnections: Int
    /// A connection that sends nothing for this long is closed (`wg` writes its request at once).
    public let idleTimeoutMilliseconds: Int
    private let refused = Atomic<Int>(0)
    private let timedOut = Atomic<Int>(0)
    /// How often the accept loop checks that the socket file is still there, in milliseconds.
    private let socketCheckIntervalMilliseconds: Int32
    /// Serializes handler calls across connections.
    private let handlerLock = Mutex(())
    private let state = Mutex(State())
    /// A pipe whose write end wakes the accept loop for `stop()`.
    private let wakeRead: Int32
    private let wakeWrite: Int32

    private struct State {
        var stopping = false
        var running = false
        var connections: Set<Int32> = []
    }

    /// Connections served at once by default: `wg` opens one per command.
    public static let defaultMaximumConnections = 64
    /// Idle time before a connection is closed, by default.
    public static let defaultIdleTimeoutMilliseconds = 30_000

    public init(listener: UAPIListener, handler: some UAPIHandler, socketCheckIntervalMilliseconds: Int32 = 500,
                maximumConnections: Int = UAPIServer.defaultMaximumConnections,
                idleTimeoutMilliseconds: Int = UAPIServer.defaultIdleTimeoutMilliseconds) {
        self.listener = listener
        self.handler = handler
        self.maximumConnections = max(1, maximumConnections)
        self.idleTimeoutMilliseconds = max(1, idleTimeoutMilliseconds)
        self.socketCheckIntervalMilliseconds = socketCheckIntervalMilliseconds
        var fds: [Int32] = [-1, -1]
        if pipe(&fds) == 0 {
            _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
            _ = fcntl(fds[1], F_SETFD, FD_CLOEXEC)
        }
        wakeRead = fds[0]
        wakeWrite = fds[1]
    }

    deinit {
        if wakeRead >= 0 { close(wakeRead) }
        if wakeWrite >= 0 { close(wakeWrite) }
    }

    /// Connections open now.
    public var openConnections: Int { state.withLock { $0.connections.count } }
    /// Connections closed at accept because `maximumConnections` were open.
    public var refusedConnections: Int { refused.load(ordering: .relaxed) }
    /// Connections closed after `idleTimeoutMilliseconds` without a byte.
    public var timedOutConnections: Int { timedOut.load(ordering: .relaxed) }

    /// Runs `run()` on a new thread and calls `onStop` with its result.
    public func start(onStop: @escaping @Sendable (StopReason) -> Void = { _ in }) {
        spawnThread { [self] in onStop(run()) }
    }

    /// Accepts and serves connections until `stop()` is called or the socket file disappears.
    /// On return, open connections are shut down and the socket file is removed (if it is still
    /// ours). Call it once.
    public func run() -> StopReason {
        let alreadyRunning = state.withLock { s in
            defer { s.running = true }
            return s.running
        }
        guard !alreadyRunning else { return .failed(EALREADY) }
        let reason = acceptLoop()
        let open = state.withLock { s in
            s.stopping = true
            return s.connections
        }
        for fd in open { shutdown(fd, Int32(SHUT_RDWR)) }
        listener.removeSocketFile()
        return reason
    }

    /// Stops `run()` (from any thread). Safe to call more than once.
    public func stop() {
        state.withLock { $0.stopping = true }
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1)
    }

    private func acceptLoop() -> StopReason {
        while true {
            if state.withLock({ $0.stopping }) { return .stopped }
            if !listener.socketFileIsOurs { return .socketRemoved }
            var fds = [
                pollfd(fd: listener.descriptor, events: Int16(POLLIN), revents: 0),
                pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0),
            ]
            let ready = poll(&fds, nfds_t(fds.count), socketCheckIntervalMilliseconds)
            if ready < 0 {
                if errno == EINTR { continue }
                return .failed(errno)
            }
            if fds[1].revents != 0 { return .stopped }
            guard fds[0].revents != 0 else { continue }
            let connection = accept(listener.descriptor, nil, nil)
            if connection < 0 {
                switch errno {
                case EINTR, EAGAIN, ECONNABORTED, EMFILE, ENFILE, ENOBUFS, ENOMEM: continue
                default: return .failed(errno)
                }
            }
            _ = fcntl(connection, F_SETFD, FD_CLOEXEC)
            enum Admission { case served, full, stopping }
            let admission = state.withLock { s -> Admission in
                if s.stopping { return .stopping }
                if s.connections.count >= maximumConnections { return .full }
                s.connections.insert(connection)
                return .served
            }
            switch admission {
            case .stopping:
                close(connection)
                return .stopped
            case .full:
                // Over the cap: closed at once (each connection costs a thread).
                refused.add(1, ordering: .relaxed)
                close(connection)
                continue
            case .served:
                break
            }
            var timeout = timeval(tv_sec: idleTimeoutMilliseconds / 1000, tv_usec: Int((idleTimeoutMilliseconds % 1000) * 1000))
            _ = setsockopt(connection, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            _ = setsockopt(connection, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            spawnThread { [self] in
                serve(connection)
                state.withLock { _ = $0.connections.remove(connection) }
                close(connection)
            }
        }
    }

    /// Reads requests from one connection until it closes or misbehaves.
    private func serve(_ fd: Int32) {
        var connection = UAPIConnection()
        var buffer = [UInt8](repeating: 0, count: 16 << 10)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            let actions: [UAPIConnection.Action]
            if count > 0 {
                actions = connection.receive(buffer[..<count])
            } else if count == 0 {
                actions = connection.receiveEndOfInput()
            } else if errno == EINTR {
                continue
            } else {
                // EAGAIN: SO_RCVTIMEO passed without a byte.
                if errno == EAGAIN || errno == EWOULDBLOCK { timedOut.add(1, ordering: .relaxed) }
                return
            }
            for action in actions {
                switch action {
                case .request(let request):
                    let answer = handlerLock.withLock { _ in request.respond(using: handler) }
                    guard writeAll(fd, answer) else { return }
                case .close:
                    return
                }
            }
            if connection.isClosed { return }
        }
    }

    private func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes {
                send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL))
            }
            if written < 0 {
                if errno == EINTR { continue }
                return false
            }
            offset += written
        }
        return true
    }
}

/// Runs `body` on a new detached thread (blocking I/O; not for the data path).
func spawnThread(_ body: @escaping @Sendable () -> Void) {
    final class Box: Sendable {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
    let box = Unmanaged.passRetained(Box(body)).toOpaque()
    var thread = pthread_t()
    let result = pthread_create(&thread, nil, { raw in
        let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
        box.body()
        return nil
    }, box)
    if result == 0 {
        pthread_detach(thread)
    } else {
        Unmanaged<Box>.fromOpaque(box).release()
        body()
    }
}
