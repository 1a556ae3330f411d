// Issue 14 part A, the control listener under hostile connections (in process, short timers):
// silent and idle keep-alive connections are closed after the configured timers, a slowloris head is cut
// at the handshake timeout, connections over the cap are closed at once while /key still answers, and an
// HTTP/2 protocol error inside ts2021 closes the TCP connection (not only a GOAWAY).

import Foundation
import Logging
import NIOCore
import NIOPosix
import Synchronization
import TailscaleControlProtocol
import TailscaleKeys
import WarrenControlStore
import WarrenControlTransport
import WarrenListenerGuard
import XCTest
@testable import WarrenControlServer

final class ListenerHardeningTests: XCTestCase {
    private func startServer(limits: ListenerLimits) async throws -> (ControlHTTPServer, MachinePrivate) {
        let configuration = ControlConfiguration(serverURL: "http://127.0.0.1:0")
        let store = MemoryControlStore()
        let directory = try StoreDirectory(store: store, ipv4Prefix: configuration.ipv4Prefix, ipv6Prefix: configuration.ipv6Prefix)
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        let engine = ControlEngine(configuration: configuration, directory: directory, logger: logger)
        try await engine.load()
        var generator = SystemRandomNumberGenerator()
        let key = MachinePrivate.generate(using: &generator)
        let server = try await ControlHTTPServer.start(
            engine: engine, controlKey: key, options: ControlServerOptions(host: "127.0.0.1", port: 0, limits: limits), logger: logger)
        return (server, key)
    }

    /// A raw TCP connection that keeps what it reads.
    final class RawConnection: @unchecked Sendable {
        let channel: any Channel
        let received: Bytes

        init(channel: any Channel, received: Bytes) {
            self.channel = channel
            self.received = received
        }

        static func open(port: Int) async throws -> RawConnection {
            let received = Bytes()
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .channelInitializer { ch in
                    ch.eventLoop.makeCompletedFuture { try ch.pipeline.syncOperations.addHandler(Collector(received)) }
                }
                .connect(host: "127.0.0.1", port: port).get()
            return RawConnection(channel: channel, received: received)
        }

        func send(_ text: String) async throws { try await channel.writeAndFlush(ByteBuffer(string: text)) }
        var text: String { String(decoding: received.withLock { $0 }, as: UTF8.self) }
    }

    final class Bytes: Sendable {
        private let bytes = Mutex<[UInt8]>([])
        func withLock<T>(_ body: (inout [UInt8]) -> T) -> T { bytes.withLock { body(&$0) } }
    }

    final class Collector: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let received: Bytes
        init(_ received: Bytes) { self.received = received }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var buffer = unwrapInboundIn(data)
            let bytes = buffer.readBytes(length: buffer.readableBytes) ?? []
            received.withLock { $0 += bytes }
        }
    }

    /// Waits (bounded) until every connection was closed by the server; fails naming how many stayed open.
    private func assertAllClosed(_ connections: [RawConnection], within seconds: Int64, _ what: String,
                                 file: StaticString = #filePath, line: UInt = #line) async {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while ContinuousClock.now < deadline, connections.contains(where: { $0.channel.isActive }) {
            try? await Task.sleep(for: .milliseconds(100))
        }
        let open = connections.filter { $0.channel.isActive }.count
        XCTAssertEqual(open, 0, "\(open) of \(connections.count) \(what) connections still open after \(seconds) s", file: file, line: line)
        for connection in connections { try? await connection.channel.close() }
    }

    func testSilentAndIdleKeepAliveConnectionsAreClosedAfterTheirTimers() async throws {
        let (server, _) = try await startServer(limits: ListenerLimits(handshakeTimeout: .seconds(1), idleTimeout: .seconds(1)))
        defer { Task { await server.close() } }
        let port = try XCTUnwrap(server.port)
        var silent: [RawConnection] = []
        for _ in 0..<40 { silent.append(try await RawConnection.open(port: port)) }
        var idle: [RawConnection] = []
        for _ in 0..<10 {
            let connection = try await RawConnection.open(port: port)
            try await connection.send("GET /key HTTP/1.1\r\nHost: x\r\n\r\n")
            idle.append(connection)
        }
        await assertAllClosed(silent, within: 10, "silent")
        await assertAllClosed(idle, within: 10, "idle keep-alive")
        // The keep-alive connections got their answer before they idled out.
        for connection in idle { XCTAssertTrue(connection.text.hasPrefix("HTTP/1.1 200"), connection.text) }
        XCTAssertGreaterThanOrEqual(server.listenerGuard.timedOutConnections, 50)
    }

    func testSlowlorisHeadIsCutAtTheHandshakeTimeout() async throws {
        let (server, _) = try await startServer(limits: ListenerLimits(handshakeTimeout: .seconds(1), idleTimeout: .seconds(30)))
        defer { Task { await server.close() } }
        let port = try XCTUnwrap(server.port)
        var slow: [RawConnection] = []
        for _ in 0..<10 {
            let connection = try await RawConnection.open(port: port)
            try await connection.send("GET /key HTTP/1.1\r\nHost: x\r\n")
            slow.append(connection)
        }
        // One more header line every 200 ms: activity, but the head never completes.
        let trickle = Task {
            for i in 0..<60 {
                for connection in slow where connection.channel.isActive { try? await connection.send("X-Slow-\(i): y\r\n") }
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
        defer { trickle.cancel() }
        await assertAllClosed(slow, within: 10, "slowloris")
    }

    func testConnectionsOverTheCapAreClosedAtOnceAndKeyStillAnswers() async throws {
        let (server, key) = try await startServer(limits: ListenerLimits(maximumConnections: 20, handshakeTimeout: .seconds(60)))
        defer { Task { await server.close() } }
        let port = try XCTUnwrap(server.port)
        var held: [RawConnection] = []
        for _ in 0..<19 { held.append(try await RawConnection.open(port: port)) }
        try await assertEventuallyTrue { server.listenerGuard.openConnections == 19 }
        // 19 held + these 10: the first fits, the other nine are closed as soon as they are accepted.
        var extra: [RawConnection] = []
        for _ in 0..<10 { extra.append(try await RawConnection.open(port: port)) }
        try await assertEventuallyTrue { extra.filter { $0.channel.isActive }.count == 1 }
        XCTAssertEqual(server.listenerGuard.refusedConnections, 9)
        // The open slot serves a normal client.
        if let slot = extra.first(where: { $0.channel.isActive }) { try await slot.channel.close() }
        try await assertEventuallyTrue { server.listenerGuard.openConnections == 19 }
        let response = try await ControlConnection.fetchServerKey(ControlEndpoint(host: "127.0.0.1", port: port), capabilityVersion: 130)
        XCTAssertEqual(response.publicKey, key.publicKey)
        for connection in held + extra { try? await connection.channel.close() }
    }

    /// A DATA frame on stream 0 is a connection error (RFC 9113 6.1): NIOHTTP2 answers GOAWAY(PROTOCOL_ERROR); the
    /// server must then close the TCP connection.
    func testHTTP2ProtocolErrorInsideTS2021ClosesTheConnection() async throws {
        let (server, key) = try await startServer(limits: .unlimited)
        defer { Task { await server.close() } }
        let port = try XCTUnwrap(server.port)
        var generator = SystemRandomNumberGenerator()
        let handshake = try ControlClientHandshake(machineKey: MachinePrivate.generate(using: &generator), controlKey: key.publicKey,
                                                   protocolVersion: 130, ephemeral: MachinePrivate.generate(using: &generator))
        let connection = try await RawConnection.open(port: port)
        try await connection.send("POST /ts2021 HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: tailscale-control-protocol\r\n"
                                  + "X-Tailscale-Handshake: \(Data(handshake.initiation).base64EncodedString())\r\n\r\n")
        // The 101, then the 51-byte handshake response.
        var head = 0
        try await assertEventuallyTrue {
            let bytes = connection.received.withLock { $0 }
            guard let end = bytes.firstRange(of: Array("\r\n\r\n".utf8)) else { return false }
            head = end.upperBound
            return bytes.count >= end.upperBound + ControlWire.responseLength
        }
        XCTAssertTrue(connection.text.hasPrefix("HTTP/1.1 101"), connection.text)
        let response = connection.received.withLock { Array($0[head..<(head + ControlWire.responseLength)]) }
        let session = try handshake.receiveResponse(bytes: response)
        // Sealed by hand: this client never decrypts (a decryption failure of its own must not be what closes).
        var frames: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
        frames += [0, 0, 0, 0x4, 0, 0, 0, 0, 0]  // SETTINGS, empty
        frames += [0, 0, 1, 0x0, 0, 0, 0, 0, 0, 0x41]  // DATA on stream 0: PROTOCOL_ERROR
        var sender = session.sender
        try await connection.channel.writeAndFlush(ByteBuffer(bytes: try sender.seal(frames)))
        await assertAllClosed([connection], within: 10, "ts2021 after an HTTP/2 protocol error")
        // What the server sent: its SETTINGS and a GOAWAY with PROTOCOL_ERROR (1).
        var receiver = session.receiver
        receiver.append(connection.received.withLock { Array($0[(head + ControlWire.responseLength)...]) })
        let plaintext = try receiver.drainPlaintext()
        var index = 0
        var goAwayCode: UInt32?
        while index + 9 <= plaintext.count {
            let high = Int(plaintext[index]) << 16
            let middle = Int(plaintext[index + 1]) << 8
            let length = high | middle | Int(plaintext[index + 2])
            if plaintext[index + 3] == 0x7, index + 17 <= plaintext.count {
                var code: UInt32 = 0
                for byte in plaintext[(index + 13)..<(index + 17)] { code = code << 8 | UInt32(byte) }
                goAwayCode = code
            }
            index += 9 + length
        }
        XCTAssertEqual(goAwayCode, 1)
    }

    private func assertEventuallyTrue(seconds: Int = 10, _ condition: @escaping () async throws -> Bool,
                                      file: StaticString = #filePath, line: UInt = #line) async throws {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while ContinuousClock.now < deadline {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        XCTFail("condition never became true", file: file, line: line)
        throw CancellationError()
    }
}
