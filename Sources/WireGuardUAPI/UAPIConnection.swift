// The framing of one UAPI connection: a pure state machine that turns received bytes into
// requests, and requests into answers. The socket server only moves bytes.
//
// On the wire (https://www.wireguard.com/xplatform/, and wireguard-go's device/uapi.go `IpcHandle`):
//
//     get=1\n\n                   ->  key=value\n ... errno=0\n\n
//     set=1\nkey=value\n ... \n   ->  errno=N\n\n        (N = 0, or a negative errno)
//
// Several requests may follow one another on the same connection. Any other first line closes
// the connection without an answer. `get=1\n` followed by anything but `\n` is answered with
// EINVAL (one byte consumed) and the connection goes on. A `set=1` cut short by end of input is
// still applied, as wireguard-go does.

/// What the device does with requests. The device engine implements it; the server calls it,
/// one request at a time (calls never overlap).
public protocol UAPIHandler: Sendable {
    /// The current configuration and statistics, for `get=1`.
    func snapshot() -> DeviceSnapshot
    /// Applies a whole parsed `set=1` request. Throw `.portInUse` when binding `listenPort` (or
    /// setting `fwmark`) fails, `.invalidValue` for a value the device refuses, `.unknown` for
    /// anything else. The update reaches the handler only if the entire request parsed.
    func apply(_ update: DeviceConfigUpdate) throws(UAPIError)
}

/// One complete request read from a connection.
public enum UAPIRequest: Equatable, Sendable {
    case get
    case set(DeviceConfigUpdate)
    /// A request that was malformed: answered with this error's errno, nothing applied.
    case invalid(UAPIError)

    /// Runs the request against `handler` and returns the complete answer.
    public func respond(using handler: some UAPIHandler) -> [UInt8] {
        switch self {
        case .get:
            return Array(handler.snapshot().getResponse.utf8)
        case .set(let update):
            do throws(UAPIError) {
                try handler.apply(update)
                return UAPIConnection.answer(errno: 0)
            } catch {
                return UAPIConnection.answer(errno: error.wireErrno)
            }
        case .invalid(let error):
            return UAPIConnection.answer(errno: error.wireErrno)
        }
    }
}

/// Reads requests out of a connection's byte stream.
public struct UAPIConnection: Sendable {
    public enum Action: Equatable, Sendable {
        /// Answer this request (in order), then carry on reading.
        case request(UAPIRequest)
        /// Close the connection (after writing the answers of earlier actions).
        case close
    }

    /// The longest first line (`get=1`/`set=1`) looked at before giving up on the connection.
    public static let maximumOperationLineLength = 64
    /// The largest `set=1` body accepted; more is answered with EIO and the connection closed.
    public static let maximumSetRequestLength = 16 << 20

    private enum State: Sendable {
        case awaitingOperation
        case awaitingGetTerminator
        case readingSet
        case closed
    }

    private var state = State.awaitingOperation
    private var buffer: [UInt8] = []
    private var readIndex = 0
    /// The lines of the `set=1` being read.
    private var setLines: [ArraySlice<UInt8>] = []
    private var setLength = 0

    public init() {}

    /// Whether the connection should be closed (no more input is read).
    public var isClosed: Bool { if case .closed = state { return true } else { return false } }

    /// Feeds received bytes; returns what to do, in order.
    public mutating func receive(_ bytes: some Collection<UInt8>) -> [Action] {
        guard !isClosed else { return [] }
        buffer.append(contentsOf: bytes)
        var actions: [Action] = []
        loop: while true {
            switch step() {
            case .needMoreBytes: break loop
            case .progressed: continue
            case .action(let action):
                actions.append(action)
                if isClosed {
                    if action != .close { actions.append(.close) }
                    break loop
                }
            }
        }
        compact()
        return actions
    }

    /// The peer closed its side: a `set=1` in progress is applied with what was read.
    public mutating func receiveEndOfInput() -> [Action] {
        defer { state = .closed; buffer = []; readIndex = 0; setLines = [] }
        switch state {
        case .readingSet:
            if readIndex < buffer.count { setLines.append(buffer[readIndex...]) }
            return [.request(finishSet()), .close]
        case .awaitingOperation, .awaitingGetTerminator:
            return [.close]
        case .closed:
            return []
        }
    }

    /// `errno=N` and the blank line that ends every answer.
    public static func answer(errno: Int32) -> [UInt8] { Array("errno=\(errno)\n\n".utf8) }

    private enum StepResult {
        case needMoreBytes
        case progressed
        case action(Action)
    }

    /// One step of parsing (a loop, not recursion: a request may have very many lines).
    private mutating func step() -> StepResult {
        switch state {
        case .closed:
            return .needMoreBytes
        case .awaitingOperation:
            guard let line = nextLine() else {
                if buffer.count - readIndex > Self.maximumOperationLineLength {
                    state = .closed
                    return .action(.close)
                }
                return .needMoreBytes
            }
            switch String(decoding: line, as: UTF8.self) {
            case "get=1":
                state = .awaitingGetTerminator
                return .progressed
            case "set=1":
                state = .readingSet
                setLines = []
                setLength = 0
                return .progressed
            default:
                state = .closed
                return .action(.close)
            }
        case .awaitingGetTerminator:
            guard readIndex < buffer.count else { return .needMoreBytes }
            let byte = buffer[readIndex]
            readIndex += 1
            state = .awaitingOperation
            if byte == UInt8(ascii: "\n") { return .action(.request(.get)) }
            return .action(.request(.invalid(UAPIError(.invalidValue, "trailing character after get=1"))))
        case .readingSet:
            guard let line = nextLine() else {
                let pending = buffer.count - readIndex
                if pending > DeviceConfigUpdate.maximumLineLength || setLength + pending > Self.maximumSetRequestLength {
                    state = .closed
                    return .action(.request(.invalid(UAPIError(.io, "set request too long"))))
                }
                return .needMoreBytes
            }
            let content = line.last == UInt8(ascii: "\r") ? line.dropLast() : line
            if content.isEmpty {
                state = .awaitingOperation
                return .action(.request(finishSet()))
            }
            setLength += line.count + 1
            setLines.append(Array(line)[...])
            if line.count > DeviceConfigUpdate.maximumLineLength || setLength > Self.maximumSetRequestLength {
                state = .closed
                return .action(.request(.invalid(UAPIError(.io, "set request too long"))))
            }
            return .progressed
        }
    }

    private mutating func finishSet() -> UAPIRequest {
        defer { setLines = []; setLength = 0 }
        do throws(UAPIError) {
            return .set(try DeviceConfigUpdate(parsingSetLines: setLines))
        } catch {
            return .invalid(error)
        }
    }

    /// The next `\n`-terminated line (without the `\n`), or nil if none is complete yet.
    private mutating func nextLine() -> ArraySlice<UInt8>? {
        guard let newline = buffer[readIndex...].firstIndex(of: UInt8(ascii: "\n")) else { return nil }
        let line = buffer[readIndex..<newline]
        readIndex = newline + 1
        return line
    }

    private mutating func compact() {
        if readIndex > 0 {
            buffer.removeSubrange(0..<readIndex)
            readIndex = 0
        }
    }
}
