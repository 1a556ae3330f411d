// Issue 14, where the engine's bounds meet the listener: the per-source cap on pending logins sees the
// client's real address over ts2021; a chunked body over 1 MiB is refused whole (413), never served cut
// short; extra routes can answer with headers (Allow on a 405).

import Foundation
import Logging
import NIOCore
import NIOPosix
import TailscaleKeys
import WarrenControlClient
import WarrenControlStore
import WarrenTailcfg
import XCTest
@testable import WarrenControlServer

final class HardeningListenerFollowupTests: XCTestCase {
    struct AllowRoutes: PlainHTTPRoutes {
        func handle(_ request: PlainHTTPRequest) async -> PlainHTTPResponse? {
            guard request.path == "/api/v1/thing" else { return nil }
            if request.method == "GET" { return PlainHTTPResponse(status: 200, text: "thing\n") }
            return PlainHTTPResponse(status: 405, body: Array("method not allowed\n".utf8), headers: ["Allow": "GET"])
        }
    }

    func start(_ configure: (inout ControlConfiguration) -> Void = { _ in }) async throws -> (ControlHTTPServer, ControlEngine, Int) {
        var configuration = ControlConfiguration(serverURL: "http://127.0.0.1:0")
        configure(&configuration)
        let store = MemoryControlStore()
        let directory = try StoreDirectory(store: store, ipv4Prefix: configuration.ipv4Prefix, ipv6Prefix: configuration.ipv6Prefix)
        var logger = Logger(label: "followup")
        logger.logLevel = .critical
        let engine = ControlEngine(configuration: configuration, directory: directory, policy: AllowAllPolicy(), logger: logger)
        try await engine.load()
        var rng = SystemRandomNumberGenerator()
        let server = try await ControlHTTPServer.start(
            engine: engine, controlKey: .generate(using: &rng),
            options: ControlServerOptions(host: "127.0.0.1", port: 0, extraRoutes: AllowRoutes()), logger: logger)
        let port = try XCTUnwrap(server.port)
        await engine.setServerURL("http://127.0.0.1:\(port)")
        return (server, engine, port)
    }

    func testPendingLoginsAreCappedPerSourceOverTS2021() async throws {
        let (server, _, port) = try await start { $0.maxPendingLoginsPerSource = 3 }
        defer { Task { await server.close() } }
        let keys = try await TestControlClient.fetchKey(host: "127.0.0.1", port: port)
        var errors: [String] = []
        for i in 0..<4 {
            let client = TestControlClient(port: port, seed: UInt64(900 + i))
            try await client.connect(controlKey: keys.publicKey)
            let reply = try await client.register(client.registerRequest(authKey: nil, hostname: "anon\(i)"))
            errors.append(reply.error)
            await client.close()
        }
        XCTAssertEqual(errors.prefix(3).filter(\.isEmpty).count, 3, "the first three interactive logins: \(errors)")
        XCTAssertFalse(errors[3].isEmpty, "a fourth login from the same address was not refused")
    }

    func testAChunkedBodyOverTheLimitIsRefusedWhole() async throws {
        let (server, _, port) = try await start()
        defer { Task { await server.close() } }
        // 1 MiB + 241 bytes in chunks, then a closing chunk that alone would look like a small body.
        var request = "POST /api/v1/thing HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        let piece = String(repeating: "a", count: 64 * 1024)
        for _ in 0..<16 { request += String(16 * 4096, radix: 16) + "\r\n" + piece + "\r\n" }
        request += "f1\r\n" + String(repeating: "b", count: 241) + "\r\n"
        request += "2\r\n\"}\r\n0\r\n\r\n"
        let reply = String(decoding: try await TestControlClient.rawHTTP(host: "127.0.0.1", port: port, request: request), as: UTF8.self)
        XCTAssertTrue(reply.hasPrefix("HTTP/1.1 413"), String(reply.prefix(200)))
    }

    func testExtraRoutesCanAnswerWithHeaders() async throws {
        let (server, _, port) = try await start()
        defer { Task { await server.close() } }
        let reply = String(decoding: try await TestControlClient.rawHTTP(
            host: "127.0.0.1", port: port,
            request: "DELETE /api/v1/thing HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"), as: UTF8.self)
        XCTAssertTrue(reply.hasPrefix("HTTP/1.1 405"), String(reply.prefix(200)))
        XCTAssertTrue(reply.lowercased().contains("\r\nallow: get\r\n"), reply)
    }
}
