// A relay on loopback TLS with its self-signed certificate, and clients pinned to it.

import DERPProtocol
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import TailscaleKeys
import WarrenDERPClient
import WarrenDERPServer
import WarrenDERPTransport
import WarrenTestSupport
import XCTest

final class RelayHarness: @unchecked Sendable {
    let server: DERPServer
    let listener: DERPListener
    let certificate: DERPCertificate
    let port: Int
    private var rng: SeededGenerator

    init(configure: (inout DERPServerConfiguration) -> Void = { _ in }, seed: UInt64 = 0xD5) async throws {
        rng = SeededGenerator(seed: seed)
        certificate = try DERPCertificate.selfSigned(hostnames: ["127.0.0.1", "localhost"])
        var configuration = DERPServerConfiguration(privateKey: NodePrivate.generate(using: &rng))
        configure(&configuration)
        server = DERPServer(configuration: configuration)
        listener = try DERPListener(server: server, host: "127.0.0.1", port: 0, tlsConfiguration: try certificate.serverTLSConfiguration())
        port = try await listener.bind().port ?? 0
    }

    var endpoint: DERPClient.Endpoint { DERPClient.Endpoint(host: "127.0.0.1", port: port, trust: .pinned(certificate.pin)) }

    func newKey() -> NodePrivate { NodePrivate.generate(using: &rng) }

    func connect(_ key: NodePrivate? = nil, info: DERPClientInfo = DERPClientInfo(canAckPings: true)) async throws -> DERPClient {
        try await DERPClient.connect(to: endpoint, privateKey: key ?? newKey(), info: info, loginTimeout: .seconds(10))
    }

    func stop() { listener.close() }
}

/// Reads frames from one client, in order, with a bound on waiting.
final class FrameReader: @unchecked Sendable {
    private var iterator: DERPClient.Frames.AsyncIterator

    init(_ client: DERPClient) { iterator = client.frames.makeAsyncIterator() }

    /// The next frame that `accept` returns non-nil for (others skipped), or nil when the
    /// connection ends or `limit` frames went by.
    func next<T>(limit: Int = 10_000, _ accept: (DERPFrame) -> T?) async throws -> T? {
        for _ in 0..<limit {
            guard let frame = await iterator.next() else { return nil }
            if let value = accept(frame) { return value }
        }
        return nil
    }

    func nextPacket() async throws -> (NodePublic, [UInt8])? {
        try await next { frame in
            if case .recvPacket(let source, let packet) = frame { return (source, packet) }
            return nil
        }
    }
}

/// Runs `body` with a deadline so that a broken relay fails the test instead of hanging it.
func withDeadline<T: Sendable>(seconds: Int64 = 20, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: .seconds(seconds))
            return nil
        }
        guard let first = try await group.next(), let value = first else {
            group.cancelAll()
            throw DeadlineExceeded()
        }
        group.cancelAll()
        return value
    }
}

struct DeadlineExceeded: Error {}

/// Polls `condition` every 10 ms, up to `attempts` times (a bound on waiting, not a timing assertion).
func eventually(attempts: Int = 3000, _ condition: () -> Bool) async throws -> Bool {
    for _ in 0..<attempts {
        if condition() { return true }
        try await Task.sleep(for: .milliseconds(10))
    }
    return condition()
}

/// Fails the test unless `condition` becomes true while ``eventually(attempts:_:)`` polls.
func assertEventually(_ message: String = "condition never became true", file: StaticString = #filePath, line: UInt = #line,
                      _ condition: () -> Bool) async throws {
    if try await !eventually(condition) { XCTFail(message, file: file, line: line) }
}
