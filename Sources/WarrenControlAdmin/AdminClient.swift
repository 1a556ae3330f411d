import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public struct AdminClientError: Error, CustomStringConvertible, Sendable {
    public var message: String
    /// The HTTP status when the server answered with an error.
    public var status: Int?
    public init(_ message: String, status: Int? = nil) {
        self.message = message
        self.status = status
    }
    public var description: String { message }
}

/// Where the admin API is: the server's Unix socket, or its URL with an API key.
public enum AdminEndpoint: Sendable, Equatable {
    case socket(path: String)
    case server(url: URL, apiKey: String?)
}

/// A client of the admin API, used by the `warren-control` subcommands and by tests.
public struct AdminClient: Sendable {
    public let endpoint: AdminEndpoint

    public init(_ endpoint: AdminEndpoint) { self.endpoint = endpoint }

    /// The socket's name inside a state directory.
    public static let socketName = "admin.sock"

    public static func socketPath(stateDirectory: String) -> String {
        (stateDirectory.hasSuffix("/") ? stateDirectory : stateDirectory + "/") + socketName
    }

    /// Sends one request and returns the status and body (any status).
    public func send(_ method: String, _ path: String, body: [UInt8]? = nil) async throws -> (status: Int, body: [UInt8]) {
        switch endpoint {
        case .socket(let socketPath):
            let socketPath = socketPath
            return try await Task.detached { try Self.sendOverSocket(socketPath, method, path, body) }.value
        case .server(let url, let apiKey):
            return try await Self.sendOverURL(url, apiKey, method, path, body)
        }
    }

    /// Sends one request with a JSON body and decodes a 2xx answer; an error answer becomes an `AdminClientError`
    /// carrying the server's message.
    public func call<Response: Decodable>(
        _ method: String, _ path: String, body: (some Encodable & Sendable)? = Optional<String>.none, as type: Response.Type
    ) async throws -> Response {
        let bytes = try body.map { Array(try JSONEncoder().encode($0)) }
        let (status, answer) = try await send(method, path, body: bytes)
        guard (200..<300).contains(status) else {
            if let error = try? JSONDecoder().decode(ErrorJSON.self, from: Data(answer)) {
                throw AdminClientError(error.error, status: status)
            }
            throw AdminClientError("the server answered \(status): \(String(decoding: answer.prefix(200), as: UTF8.self))", status: status)
        }
        do {
            return try JSONDecoder().decode(Response.self, from: Data(answer))
        } catch {
            throw AdminClientError("the server's answer is not the expected JSON (\(String(describing: Response.self)))")
        }
    }

    // MARK: Unix socket (plain POSIX: the CLI makes one short request)

    /// Whether something accepts connections on the socket (a live server, not a stale file).
    public static func socketAnswers(path: String) -> Bool {
        guard let fd = try? connectSocket(path) else { return false }
        close(fd)
        return true
    }

    private static func connectSocket(_ path: String) throws -> Int32 {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard pathBytes.count < capacity else { throw AdminClientError("socket path too long: \(path)") }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: pathBytes)
            raw[pathBytes.count] = 0
        }
        #if canImport(Glibc)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let fd = socket(AF_UNIX, SOCK_STREAM, 0)
        #endif
        guard fd >= 0 else { throw AdminClientError("socket(): \(String(cString: strerror(errno)))") }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard result == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw AdminClientError("cannot connect to \(path): \(reason)")
        }
        var timeout = timeval(tv_sec: 60, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    static func sendOverSocket(_ socketPath: String, _ method: String, _ path: String, _ body: [UInt8]?) throws -> (status: Int, body: [UInt8]) {
        let fd: Int32
        do {
            fd = try connectSocket(socketPath)
        } catch let error as AdminClientError {
            throw AdminClientError("\(error.message); is `warren-control serve` running with this --state-dir?")
        }
        defer { close(fd) }
        var request = "\(method) \(path) HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        if let body {
            request += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n"
        } else {
            request += "Content-Length: 0\r\n"
        }
        let bytes = Array((request + "\r\n").utf8) + (body ?? [])
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw AdminClientError("writing to \(socketPath) failed: \(String(cString: strerror(errno)))") }
            sent += n
        }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw AdminClientError("reading from \(socketPath) failed: \(String(cString: strerror(errno)))") }
            if n == 0 { break }
            response += buffer[0..<n]
            guard response.count <= 64 << 20 else { throw AdminClientError("the answer is too large") }
        }
        return try parseResponse(response)
    }

    /// Parses a complete HTTP/1.1 response (status line, headers, body up to Content-Length or to the end).
    static func parseResponse(_ bytes: [UInt8]) throws -> (status: Int, body: [UInt8]) {
        let separator: [UInt8] = [13, 10, 13, 10]
        guard let end = bytes.indices.first(where: { bytes[$0...].starts(with: separator) }) else {
            throw AdminClientError("the server's answer is not HTTP")
        }
        let headText = String(decoding: bytes[..<end], as: UTF8.self)
        let lines = headText.components(separatedBy: "\r\n")
        let statusParts = lines[0].split(separator: " ")
        guard statusParts.count >= 2, statusParts[0].hasPrefix("HTTP/1."), let status = Int(statusParts[1]), (100...599).contains(status) else {
            throw AdminClientError("the server's answer is not HTTP")
        }
        var body = Array(bytes[(end + 4)...])
        for line in lines.dropFirst() {
            let parts = line.split(separator: ":", maxSplits: 1)
            if parts.count == 2, parts[0].lowercased() == "content-length",
               let length = Int(parts[1].trimmingCharacters(in: .whitespaces)), length >= 0, length <= body.count {
                body = Array(body.prefix(length))
            }
        }
        return (status, body)
    }

    // MARK: URL (TCP, with an API key)

    static func sendOverURL(_ base: URL, _ apiKey: String?, _ method: String, _ path: String, _ body: [UInt8]?) async throws -> (status: Int, body: [UInt8]) {
        var text = base.absoluteString
        while text.hasSuffix("/") { text.removeLast() }
        guard let url = URL(string: text + path) else { throw AdminClientError("bad server URL \(base)") }
        var request = URLRequest(url: url)
        request.httpMethod = method
        request.timeoutInterval = 60
        if let apiKey { request.setValue("Bearer \(apiKey)", forHTTPHeaderField: "Authorization") }
        if let body {
            request.httpBody = Data(body)
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        let sendable = request
        return try await withCheckedThrowingContinuation { continuation in
            URLSession.shared.dataTask(with: sendable) { data, response, error in
                if let error {
                    continuation.resume(throwing: AdminClientError("cannot reach \(base): \(error.localizedDescription)"))
                } else if let http = response as? HTTPURLResponse {
                    continuation.resume(returning: (http.statusCode, Array(data ?? Data())))
                } else {
                    continuation.resume(throwing: AdminClientError("no HTTP answer from \(base)"))
                }
            }.resume()
        }
    }
}

extension AdminClient {
    /// `parseResponse`, for tests.
    public static func parseResponseForTesting(_ bytes: [UInt8]) throws -> (status: Int, body: [UInt8]) { try parseResponse(bytes) }
}
