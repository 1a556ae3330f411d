// The admin API's client, used by the `warren-control` subcommands and by tests: async-http-client over the server's
// Unix socket (`http+unix://`) or over HTTP(S) to its URL with an API key. Every request has a deadline and every
// answer a size bound, so a hung or misbehaving server cannot hang the command line.

import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

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
    /// The most one request may take, from connecting to the answer's last byte.
    public let timeout: Duration

    /// The default deadline of a request (the CLI takes another from WARREN_CLI_TIMEOUT).
    public static let defaultTimeout: Duration = .seconds(30)
    /// The largest answer read; a larger one is refused.
    public static let maximumAnswerBytes = 64 << 20

    public init(_ endpoint: AdminEndpoint, timeout: Duration = AdminClient.defaultTimeout) {
        self.endpoint = endpoint
        self.timeout = timeout
    }

    /// The socket's name inside a state directory.
    public static let socketName = "admin.sock"

    public static func socketPath(stateDirectory: String) -> String {
        (stateDirectory.hasSuffix("/") ? stateDirectory : stateDirectory + "/") + socketName
    }

    // MARK: The process's HTTP client

    private static let sharedClient = Mutex<HTTPClient?>(nil)

    /// The one HTTPClient of this process, made on first use. No redirects are followed (an API key is never sent
    /// elsewhere), answers are not decompressed, and a refused connection fails at once instead of being retried.
    static var httpClient: HTTPClient {
        sharedClient.withLock { client in
            if let client { return client }
            var pool = HTTPClient.Configuration.ConnectionPool()
            pool.retryConnectionEstablishment = false
            pool.idleTimeout = .seconds(5)
            var configuration = HTTPClient.Configuration(
                redirectConfiguration: .disallow, timeout: .init(connect: .seconds(10)), connectionPool: pool,
                decompression: .disabled)
            configuration.httpVersion = .http1Only
            let made = HTTPClient(eventLoopGroup: MultiThreadedEventLoopGroup.singleton, configuration: configuration)
            client = made
            return made
        }
    }

    /// Shuts the process's HTTP client down, if one was made (the CLI calls this before it exits; a later request
    /// makes a new one).
    public static func shutdownSharedHTTPClient() async {
        let client = sharedClient.withLock { client -> HTTPClient? in
            defer { client = nil }
            return client
        }
        try? await client?.shutdown()
    }

    // MARK: Requests

    /// Sends one request and returns the status and body (any status).
    public func send(_ method: String, _ path: String, body: [UInt8]? = nil) async throws -> (status: Int, body: [UInt8]) {
        var request = HTTPClientRequest(url: try url(path))
        request.method = HTTPMethod(rawValue: method)
        if case .server(_, let apiKey?) = endpoint { request.headers.add(name: "Authorization", value: "Bearer \(apiKey)") }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        let client = Self.httpClient, timeout = timeout, prepared = request
        let deadline = NIODeadline.now() + TimeAmount.nanoseconds(Self.nanoseconds(timeout))
        do {
            // The deadline bounds the answer's head; the race with a timer bounds the whole, body included.
            return try await withThrowingTaskGroup(of: (status: Int, body: [UInt8])?.self) { group in
                group.addTask {
                    let response = try await client.execute(prepared, deadline: deadline)
                    let bytes = try await response.body.collect(upTo: Self.maximumAnswerBytes)
                    return (Int(response.status.code), Array(buffer: bytes))
                }
                group.addTask {
                    try await Task.sleep(for: timeout)
                    return nil
                }
                defer { group.cancelAll() }
                guard let answer = try await group.next(), let answer else { throw HTTPClientError.deadlineExceeded }
                return answer
            }
        } catch {
            throw explain(error)
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

    /// The request's URL: `http+unix://` with the socket path as host, or the server's URL with `path` appended.
    private func url(_ path: String) throws -> String {
        switch endpoint {
        case .socket(let socketPath):
            guard let url = URL(httpURLWithSocketPath: socketPath, uri: path) else {
                throw AdminClientError("cannot use the socket path \(socketPath)")
            }
            return url.absoluteString
        case .server(let base, _):
            var text = base.absoluteString
            while text.hasSuffix("/") { text.removeLast() }
            guard URL(string: text + path) != nil else { throw AdminClientError("bad server URL \(base)") }
            return text + path
        }
    }

    /// What went wrong, said for the operator: where, why, and (on the socket) whether the server is running.
    private func explain(_ error: any Error) -> AdminClientError {
        if let error = error as? AdminClientError { return error }
        let place: String
        switch endpoint {
        case .socket(let path): place = path
        case .server(let url, _): place = url.absoluteString
        }
        let seconds = Double(Self.nanoseconds(timeout)) / 1e9
        if error is NIOTooManyBytesError {
            return AdminClientError("the answer from \(place) is larger than \(Self.maximumAnswerBytes >> 20) MiB")
        }
        if let error = error as? HTTPClientError {
            switch error {
            case .deadlineExceeded, .readTimeout, .writeTimeout:
                return AdminClientError("no answer from \(place) within \(String(format: "%g", seconds)) s (set WARREN_CLI_TIMEOUT to wait longer)")
            case .connectTimeout:
                return unreachable(place, "connecting timed out")
            case .remoteConnectionClosed:
                return AdminClientError("\(place) closed the connection before answering")
            default:
                return AdminClientError("the request to \(place) failed: \(error)")
            }
        }
        if let error = error as? IOError { return unreachable(place, String(cString: strerror(error.errnoCode))) }
        if let error = error as? NIOConnectionError {
            let reasons = error.connectionErrors.map { attempt -> String in
                if let io = attempt.error as? IOError { return String(cString: strerror(io.errnoCode)) }
                return String(describing: attempt.error)
            }
            return unreachable(place, reasons.first ?? error.dnsAError.map { "\($0)" } ?? "no address")
        }
        if let error = error as? SocketAddressError {
            return unreachable(place, String(describing: error))
        }
        return AdminClientError("the request to \(place) failed: \(error)")
    }

    private func unreachable(_ place: String, _ reason: String) -> AdminClientError {
        switch endpoint {
        case .socket:
            AdminClientError("cannot connect to \(place): \(reason); is `warren-control serve` running with this --state-dir?")
        case .server:
            AdminClientError("cannot reach \(place): \(reason)")
        }
    }

    static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }

    // MARK: Liveness of a socket

    /// Whether something accepts connections on the socket (a live server, not a stale file).
    public static func socketAnswers(path: String) -> Bool {
        guard let channel = try? ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.seconds(5)).connect(unixDomainSocketPath: path).wait() else { return false }
        try? channel.close().wait()
        return true
    }
}
