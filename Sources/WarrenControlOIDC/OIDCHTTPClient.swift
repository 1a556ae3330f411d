// The relying party's HTTP requests to the provider (discovery, JWKS, token, userinfo), bounded in time and size.

import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// One answer from the provider.
public struct OIDCHTTPResponse: Sendable {
    public var status: Int
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    public init(status: Int, headers: [(name: String, value: String)] = [], body: [UInt8]) {
        self.status = status
        self.headers = headers
        self.body = body
    }
}

/// How the relying party talks HTTP (AsyncHTTPClient in production; tests may substitute their own).
public protocol OIDCHTTPClient: Sendable {
    /// Sends the request; throws ``OIDCError`` (`.network`) when the provider cannot be reached in time or
    /// answers with more than the size bound.
    func send(method: String, url: String, headers: [(name: String, value: String)], body: [UInt8]?) async throws(OIDCError) -> OIDCHTTPResponse
}

/// AsyncHTTPClient's shared client, each request bounded by `timeout` and each answer by `maximumBodySize`.
/// Redirects are not followed (a provider's endpoints are the URLs its discovery document names).
public struct AsyncOIDCHTTPClient: OIDCHTTPClient {
    public var timeout: Duration
    public var maximumBodySize: Int
    /// One client for the process (as AsyncHTTPClient's own shared client, it lives as long as the process).
    private static let client: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        configuration.timeout = .init(connect: .seconds(5), read: .seconds(10))
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }()

    public init(timeout: Duration = .seconds(10), maximumBodySize: Int = 1 << 20) {
        self.timeout = timeout
        self.maximumBodySize = maximumBodySize
    }

    public func send(method: String, url: String, headers: [(name: String, value: String)], body: [UInt8]?) async throws(OIDCError) -> OIDCHTTPResponse {
        var request = HTTPClientRequest(url: url)
        request.method = HTTPMethod(rawValue: method)
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(ByteBuffer(bytes: body)) }
        let seconds = Int64(timeout.components.seconds) + (timeout.components.attoseconds > 0 ? 1 : 0)
        do {
            let response = try await Self.client.execute(request, timeout: .seconds(seconds))
            let bytes = try await response.body.collect(upTo: maximumBodySize)
            return OIDCHTTPResponse(status: Int(response.status.code),
                                    headers: response.headers.map { ($0.name, $0.value) },
                                    body: Array(buffer: bytes))
        } catch let error as NIOTooManyBytesError {
            _ = error
            throw OIDCError(.network, "\(method) \(url): the answer is larger than \(maximumBodySize) bytes")
        } catch {
            throw OIDCError(.network, "\(method) \(url): \(Self.describe(error))")
        }
    }

    /// A short reason for a transport error (AsyncHTTPClient's errors print as their case names).
    static func describe(_ error: any Error) -> String {
        if let client = error as? HTTPClientError {
            switch client {
            case .deadlineExceeded, .readTimeout, .connectTimeout: return "timed out"
            default: return "\(client)"
            }
        }
        return "\(error)"
    }
}
