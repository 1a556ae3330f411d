import Foundation
import WarrenTailcfg
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Why a LocalAPI call failed; `description` is one line for the CLI to print.
public enum LocalAPIClientError: Error, Sendable, Equatable, CustomStringConvertible {
    /// No socket file: the daemon is not running (or uses another --socket).
    case notRunning(socketPath: String)
    /// The socket file exists but nothing accepts on it (a daemon that died).
    case notListening(socketPath: String)
    case permissionDenied(socketPath: String)
    /// The daemon answered with an error status and message.
    case server(status: Int, message: String)
    /// No answer in time.
    case timedOut(socketPath: String)
    /// The answer was not the HTTP or JSON expected.
    case badAnswer(String)
    case other(String)

    public var description: String {
        switch self {
        case .notRunning(let path): return "warrend is not running (no socket at \(path))"
        case .notListening(let path): return "warrend is not running (nothing is listening on \(path))"
        case .permissionDenied(let path): return "cannot connect to \(path): permission denied (run as root)"
        case .server(_, let message): return message
        case .timedOut(let path): return "warrend did not answer in time on \(path)"
        case .badAnswer(let message): return "unexpected answer from warrend: \(message)"
        case .other(let message): return message
        }
    }

    /// The HTTP status for `.server` errors.
    public var status: Int? {
        if case .server(let status, _) = self { return status }
        return nil
    }
}

/// The CLI's side of the LocalAPI: one short HTTP/1.1 request per call over the unix socket, with blocking POSIX I/O.
public struct LocalAPIClient: Sendable {
    public let socketPath: String
    /// How long to wait for an answer (seconds), unless a call says otherwise.
    public var timeout: Double

    public init(socketPath: String = LocalAPIServer.defaultSocketPath, timeout: Double = 60) {
        self.socketPath = socketPath
        self.timeout = timeout
    }

    // MARK: the routes

    public func status(peers: Bool = true) async throws -> IPNStatus {
        try await call("GET", "status" + (peers ? "" : "?peers=false"), as: IPNStatus.self)
    }

    /// `timeout` bounds the wait for the daemon's answer (it may wait for control); nil uses `self.timeout`.
    public func up(_ request: UpRequest, timeout: Double? = nil) async throws -> UpResponse {
        try await call("POST", "up", body: Array(try LocalAPIJSON.encode(request)), timeout: timeout, as: UpResponse.self)
    }

    public func down() async throws {
        _ = try await call("POST", "down", as: JSONValue.self)
    }

    public func logout() async throws {
        _ = try await call("POST", "logout", as: JSONValue.self)
    }

    public func ping(ip: String, type: PingType = .disco, size: Int = 0, timeout: Double? = nil) async throws -> PingResult {
        var target = "ping?ip=\(Self.escape(ip))&type=\(type.rawValue)"
        if size > 0 { target += "&size=\(size)" }
        return try await call("POST", target, timeout: timeout, as: PingResult.self)
    }

    public func whois(_ address: String) async throws -> WhoIsResponse {
        try await call("GET", "whois?addr=\(Self.escape(address))", as: WhoIsResponse.self)
    }

    public func dnsQuery(name: String, type: String) async throws -> DNSQueryResponse {
        let n = name.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? name
        let t = type.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? type
        return try await call("GET", "dns-query?name=\(n)&type=\(t)", as: DNSQueryResponse.self)
    }

    public func dnsStatus() async throws -> DNSStatus {
        try await call("GET", "dns-status", as: DNSStatus.self)
    }

    public func suggestExitNode() async throws -> ExitNodeSuggestion {
        try await call("GET", "suggest-exit-node", as: ExitNodeSuggestion.self)
    }

    public func netcheck() async throws -> NetcheckReport {
        try await call("GET", "netcheck", as: NetcheckReport.self)
    }

    // MARK: plumbing

    /// Calls route `route` (with its query) and decodes a 2xx answer; error answers become `.server`.
    public func call<T: Decodable>(
        _ method: String, _ route: String, body: [UInt8]? = nil, timeout: Double? = nil, as type: T.Type
    ) async throws -> T {
        let answer = try await send(method, LocalAPIRouter.prefix + route, body: body, timeout: timeout)
        guard (200..<300).contains(answer.status) else {
            if let error = try? LocalAPIJSON.decode(LocalAPIErrorBody.self, from: Data(answer.body)) {
                throw LocalAPIClientError.server(status: answer.status, message: error.error)
            }
            let text = String(decoding: answer.body.prefix(200), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            throw LocalAPIClientError.server(status: answer.status, message: "HTTP \(answer.status): \(text)")
        }
        do {
            return try LocalAPIJSON.decode(T.self, from: Data(answer.body))
        } catch {
            throw LocalAPIClientError.badAnswer("the \(route.split(separator: "?").first ?? "") answer is not the JSON expected")
        }
    }

    /// Sends one raw request and returns the answer, whatever its status.
    public func send(_ method: String, _ target: String, body: [UInt8]? = nil, timeout: Double? = nil)
        async throws -> (status: Int, headers: [String: String], body: [UInt8])
    {
        let path = socketPath
        let seconds = timeout ?? self.timeout
        return try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(with: Result { try Self.exchange(path, method, target, body, seconds) })
            }
        }
    }

    /// Whether something accepts connections on `path`.
    public static func socketAnswers(_ path: String) -> Bool {
        guard let fd = try? connect(path, timeout: 2) else { return false }
        close(fd)
        return true
    }

    static func escape(_ text: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~:[]")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
    }

    private static func connect(_ path: String, timeout: Double) throws -> Int32 {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(path.utf8)
        guard pathBytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw LocalAPIClientError.other("socket path too long: \(path)")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: pathBytes)
            raw[pathBytes.count] = 0
        }
        #if canImport(Glibc)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let fd = socket(AF_UNIX, SOCK_STREAM, 0)
        #endif
        guard fd >= 0 else { throw LocalAPIClientError.other("socket(): \(String(cString: strerror(errno)))") }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                #if canImport(Glibc)
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                #else
                Darwin.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                #endif
            }
        }
        guard result == 0 else {
            let code = errno
            close(fd)
            switch code {
            case ENOENT, ENOTDIR: throw LocalAPIClientError.notRunning(socketPath: path)
            case ECONNREFUSED: throw LocalAPIClientError.notListening(socketPath: path)
            case EACCES, EPERM: throw LocalAPIClientError.permissionDenied(socketPath: path)
            default: throw LocalAPIClientError.other("cannot connect to \(path): \(String(cString: strerror(code)))")
            }
        }
        let whole = max(0.001, timeout)
        var time = timeval()
        time.tv_sec = .init(Int(whole))
        time.tv_usec = .init(Int((whole - Double(Int(whole))) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &time, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &time, socklen_t(MemoryLayout<timeval>.size))
        var one: Int32 = 1
        #if canImport(Darwin)
        setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, socklen_t(MemoryLayout<Int32>.size))
        #endif
        _ = one
        return fd
    }

    static func exchange(_ path: String, _ method: String, _ target: String, _ body: [UInt8]?, _ timeout: Double)
        throws -> (status: Int, headers: [String: String], body: [UInt8])
    {
        let fd = try connect(path, timeout: timeout)
        defer { close(fd) }
        var head = "\(method) \(target) HTTP/1.1\r\nHost: local-warrend.sock\r\nConnection: close\r\n"
        head += "Content-Length: \((body ?? []).count)\r\n"
        if body != nil { head += "Content-Type: application/json\r\n" }
        let bytes = Array((head + "\r\n").utf8) + (body ?? [])
        var sent = 0
        while sent < bytes.count {
            #if canImport(Glibc)
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            #else
            let n = bytes[sent...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            #endif
            if n < 0 && errno == EINTR { continue }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { throw LocalAPIClientError.timedOut(socketPath: path) }
            guard n > 0 else {
                // The server may answer early (413) and close; read what it said.
                break
            }
            sent += n
        }
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { throw LocalAPIClientError.timedOut(socketPath: path) }
            if n < 0 && errno == ECONNRESET && !answer.isEmpty { break }
            guard n >= 0 else {
                throw LocalAPIClientError.other("reading from \(path) failed: \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            answer += buffer[0..<n]
            if let parsed = try? parseResponse(answer, complete: false) { return parsed }
            guard answer.count <= 64 << 20 else { throw LocalAPIClientError.badAnswer("the answer is too large") }
        }
        return try parseResponse(answer, complete: true)
    }

    /// Parses an HTTP/1.1 answer. With `complete == false`, succeeds only once the whole Content-Length has arrived.
    static func parseResponse(_ bytes: [UInt8], complete: Bool) throws -> (status: Int, headers: [String: String], body: [UInt8]) {
        guard let end = bytes.firstRange(of: [13, 10, 13, 10]) else {
            throw LocalAPIClientError.badAnswer(bytes.isEmpty ? "the connection closed without an answer" : "not HTTP")
        }
        let lines = String(decoding: bytes[..<end.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
        let statusParts = lines[0].split(separator: " ")
        guard statusParts.count >= 2, statusParts[0].hasPrefix("HTTP/1."), let status = Int(statusParts[1]),
              (100...599).contains(status) else { throw LocalAPIClientError.badAnswer("not HTTP") }
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            let parts = line.split(separator: ":", maxSplits: 1)
            if parts.count == 2 {
                headers[parts[0].lowercased()] = parts[1].trimmingCharacters(in: .whitespaces)
            }
        }
        var body = Array(bytes[end.upperBound...])
        if let lengthText = headers["content-length"], let length = Int(lengthText), length >= 0 {
            guard length <= body.count else {
                throw LocalAPIClientError.badAnswer("the answer was cut short")
            }
            body = Array(body.prefix(length))
        } else if !complete {
            throw LocalAPIClientError.badAnswer("incomplete")
        }
        return (status, headers, body)
    }
}
