// A small ts2021 client for tests and the benchmark: register and map over a ControlConnection
// (WarrenControlTransport), with deterministic keys. The node's real client is WarrenNodeControl.

import Foundation
import NIOCore
import NIOSSL
import TailscaleKeys
import WarrenTailcfg
import WarrenControlTransport

public typealias ControlClientError = ControlTransportError

public final class ControlClient: @unchecked Sendable {
    public let machineKey: MachinePrivate
    public let nodeKey: NodePrivate
    public let discoKey: DiscoPublic
    public let host: String
    public let port: Int
    /// HTTPS to the control server (nil: plain HTTP).
    public let tls: NIOSSLContext?
    private var connection: ControlConnection?

    public init(host: String = "127.0.0.1", port: Int, seed: UInt64, tls: NIOSSLContext? = nil) {
        self.tls = tls
        var generator = SeededKeyGenerator(seed: seed)
        machineKey = MachinePrivate.generate(using: &generator)
        nodeKey = NodePrivate.generate(using: &generator)
        discoKey = DiscoPublic(raw: MachinePrivate.generate(using: &generator).publicKey.raw)
        self.host = host
        self.port = port
    }

    public var endpoint: ControlEndpoint { ControlEndpoint(host: host, port: port, tls: tls) }

    /// GET /key over HTTP/1.1, plain or with `tls`.
    public static func fetchKey(host: String, port: Int, tls: NIOSSLContext? = nil) async throws -> OverTLSPublicKeyResponse {
        try await ControlConnection.fetchServerKey(ControlEndpoint(host: host, port: port, tls: tls), capabilityVersion: 130)
    }

    /// Sends one raw request and returns everything the server sent until it closed.
    public static func rawHTTP(host: String, port: Int, tls: NIOSSLContext? = nil, request: String) async throws -> [UInt8] {
        try await ControlConnection.rawHTTP(ControlEndpoint(host: host, port: port, tls: tls), request: Array(request.utf8))
    }

    /// Opens the Noise channel and HTTP/2 on it.
    public func connect(controlKey: MachinePublic, version: UInt16 = 130) async throws {
        connection = try await ControlConnection.connect(to: endpoint, machineKey: machineKey, controlKey: controlKey,
                                                         protocolVersion: version)
    }

    public func post(_ path: String, json: [UInt8]) async throws -> ControlHTTPResponse {
        guard let connection else { throw ControlClientError(description: "not connected") }
        return try await connection.post(path, json: json)
    }

    public func registerRequest(authKey: String?, hostname: String) -> RegisterRequest {
        var request = RegisterRequest()
        request.version = 130
        request.nodeKey = nodeKey.publicKey
        if let authKey { request.auth = RegisterResponseAuth(authKey: authKey) }
        var info = HostinfoFields()
        info.hostname = hostname
        info.os = "linux"
        request.hostinfo = Hostinfo(info)
        return request
    }

    public func register(_ request: RegisterRequest) async throws -> RegisterResponse {
        let response = try await post("/machine/register", json: try TailcfgJSON.encode(request))
        guard response.status == 200 else { throw ControlClientError(description: "register: HTTP \(response.status)") }
        return try TailcfgJSON.decode(RegisterResponse.self, from: await response.collect())
    }

    public func mapRequest(stream: Bool, omitPeers: Bool = false, endpoints: [AddrPort]? = nil, compress: Bool = true) -> MapRequest {
        var request = MapRequest()
        request.version = 130
        request.nodeKey = nodeKey.publicKey
        request.discoKey = discoKey
        request.stream = stream
        request.omitPeers = omitPeers
        request.compress = compress ? "zstd" : nil
        request.endpoints = endpoints
        return request
    }

    /// Opens a map request and yields decoded messages.
    public func map(_ request: MapRequest) async throws -> (status: Int, messages: AsyncThrowingStream<MapResponse, Error>) {
        let (status, bodies) = try await mapBodies(request)
        let messages = AsyncThrowingStream<MapResponse, Error> { continuation in
            let task = Task {
                do {
                    for try await json in bodies { continuation.yield(try TailcfgJSON.decode(MapResponse.self, from: json)) }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
        return (status, messages)
    }

    /// Opens a map request and yields each message's JSON (unframed and decompressed, not decoded), for
    /// callers that look at a few fields of many large messages (the benchmark).
    public func mapBodies(_ request: MapRequest) async throws -> (status: Int, bodies: AsyncThrowingStream<[UInt8], Error>) {
        let response = try await post("/machine/map", json: try TailcfgJSON.encode(request))
        let compressed = request.compress == "zstd"
        let bodies = AsyncThrowingStream<[UInt8], Error> { continuation in
            let task = Task {
                var decoder = MapStreamDecoder()
                for await chunk in response.body {
                    decoder.append(chunk)
                    do {
                        while case .message(let body) = try decoder.parseStep() {
                            continuation.yield(compressed ? try Zstd.decompress(body, maximumSize: 64 << 20) : body)
                        }
                    } catch {
                        continuation.finish(throwing: error)
                        return
                    }
                }
                continuation.finish()
            }
            continuation.onTermination = { _ in task.cancel() }
        }
        return (response.status, bodies)
    }

    public func close() async {
        await connection?.close()
    }
}

/// Deterministic keys for tests and benchmarks (not for production).
public struct SeededKeyGenerator: RandomNumberGenerator {
    var state: UInt64
    public init(seed: UInt64) { state = seed &+ 0x9E37_79B9_7F4A_7C15 }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
