import Foundation
import NIOCore
import NIOPosix
import WarrenPacket
import WarrenTestSupport
import XCTest
@testable import WarrenDNS
@testable import WarrenDNSServer

/// A tiny upstream DNS server for the tests, on UDP and TCP of one loopback port: it answers with
/// what `respond` makes of each query and logs what it saw.
final class UpstreamTwin: @unchecked Sendable {
    struct Seen: Equatable {
        var id: UInt16
        var transport: DNSTransport
        var name: String
        var ednsSize: UInt16?
    }

    private let lock = NSLock()
    private var log: [Seen] = []
    private var channels: [Channel] = []
    let respond: @Sendable (DNSMessage, DNSTransport) -> DNSMessage?
    private(set) var port = 0

    init(respond: @escaping @Sendable (DNSMessage, DNSTransport) -> DNSMessage?) {
        self.respond = respond
    }

    var seen: [Seen] { lock.withLock { log } }
    var upstream: DNSUpstream { DNSUpstream(address: IPAddress("127.0.0.1")!, port: UInt16(port)) }

    func answer(_ bytes: ByteBuffer, transport: DNSTransport) -> [UInt8]? {
        guard let query = try? DNSMessage(bytes: Array(bytes.readableBytesView)) else { return nil }
        lock.withLock {
            log.append(Seen(id: query.header.id, transport: transport, name: query.questions.first?.name.description ?? "",
                            ednsSize: query.edns?.udpPayloadSize))
        }
        return try? respond(query, transport)?.encoded()
    }

    func start() async throws {
        let group = MultiThreadedEventLoopGroup.singleton
        let udp = try await DatagramBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(UDPHandler(twin: self)) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        port = udp.localAddress!.port!
        let tcp = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(DNSTCPFrameDecoder(maximumLength: 65535)))
                    try channel.pipeline.syncOperations.addHandler(TCPHandler(twin: self))
                }
            }
            .bind(host: "127.0.0.1", port: port).get()
        lock.withLock { channels = [udp, tcp] }
    }

    func close() async {
        for channel in lock.withLock({ channels }) { try? await channel.close() }
    }

    final class UDPHandler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>
        typealias OutboundOut = AddressedEnvelope<ByteBuffer>
        let twin: UpstreamTwin
        init(twin: UpstreamTwin) { self.twin = twin }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let envelope = unwrapInboundIn(data)
            guard let reply = twin.answer(envelope.data, transport: .udp) else { return }
            context.writeAndFlush(wrapOutboundOut(AddressedEnvelope(remoteAddress: envelope.remoteAddress,
                                                                    data: context.channel.allocator.buffer(bytes: reply))), promise: nil)
        }
    }

    final class TCPHandler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let twin: UpstreamTwin
        init(twin: UpstreamTwin) { self.twin = twin }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard let reply = twin.answer(unwrapInboundIn(data), transport: .tcp) else { return }
            var buffer = context.channel.allocator.buffer(capacity: reply.count + 2)
            buffer.writeDNSFrame(reply)
            context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
        }
    }
}

final class DNSServerTests: XCTestCase {
    func name(_ text: String) -> DNSName { try! DNSName(text) }

    /// Answers every A query with `count` addresses in 192.0.2.0/24.
    static func addresses(_ query: DNSMessage, count: Int) -> DNSMessage {
        var response = query
        response.header.isResponse = true
        response.header.recursionAvailable = true
        let q = query.questions[0]
        response.answers = (0..<count).map { DNSResourceRecord.address(name: q.name, .v4(0xC000_0200 + UInt32($0)), ttl: 30) }
        return response
    }

    func makeConfig(upstreams: [DNSUpstream]) -> MagicDNSConfig {
        MagicDNSConfig(hosts: [name("alice.tail1234.ts.net"): [IPAddress("100.64.0.1")!]],
                       magicDNSDomains: [name("tail1234.ts.net")], globalResolvers: upstreams)
    }

    func startServer(_ config: MagicDNSConfig, options: DNSServer.Options = DNSServer.Options()) async throws
        -> (DNSServer, SocketAddress) {
        let server = try await DNSServer.start(config: config, listeningOn: [try SocketAddress(ipAddress: "127.0.0.1", port: 0)],
                                               options: options)
        let udp = server.boundAddresses.first { $0.transport == .udp }!.address
        XCTAssertEqual(server.boundAddresses.first { $0.transport == .tcp }?.address.port, udp.port)
        return (server, udp)
    }

    let client = DNSClient(timeout: .seconds(3))

    func testLocalAnswersOverUDPAndTCP() async throws {
        let (server, address) = try await startServer(makeConfig(upstreams: []))
        for transport in [DNSTransport.udp, .tcp] {
            let response = try await client.query(.query(id: 0x1111, name: name("Alice"), type: .a), server: address, over: transport)
            XCTAssertEqual(response.header.id, 0x1111)
            XCTAssertEqual(response.answers.map(\.data), [.a(IPAddress("100.64.0.1")!)])
            XCTAssertEqual(response.edns?.udpPayloadSize, 1232)
            let nx = try await client.query(.query(id: 2, name: name("nobody.tail1234.ts.net"), type: .a), server: address, over: transport)
            XCTAssertEqual(nx.header.responseCode, .nameError)
        }
        // No upstream at all: SERVFAIL for outside names.
        let servfail = try await client.query(.query(id: 3, name: name("example.org"), type: .a), server: address)
        XCTAssertEqual(servfail.header.responseCode, .serverFailure)
        // update() takes effect for the next query.
        var config = server.config
        config.hosts[name("dave.tail1234.ts.net")] = [IPAddress("100.64.0.4")!]
        server.update(config)
        let dave = try await client.query(.query(id: 4, name: name("dave.tail1234.ts.net"), type: .a), server: address)
        XCTAssertEqual(dave.answers.map(\.data), [.a(IPAddress("100.64.0.4")!)])
        await server.close()
    }

    /// Runs dig (BIND's own parser, independent of ours) against the server when it is installed.
    func dig(_ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/dig")
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: output, as: UTF8.self)
    }

    func testDigReadsTheServersAnswers() async throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/dig") else { throw XCTSkip("dig is not installed") }
        var config = makeConfig(upstreams: [])
        config.hosts[name("alice.tail1234.ts.net")]!.append(IPAddress("fd7a:115c:a1e0::1")!)
        config.extraRecords = [MagicDNSExtraRecord(name: "note.tail1234.ts.net", type: "TXT", value: "hi there")]
        let (server, address) = try await startServer(config)
        let port = "\(address.port!)"
        let base = ["@127.0.0.1", "-p", port, "+tries=1", "+time=2"]
        let a = try dig(base + ["alice", "A", "+short"])
        XCTAssertEqual(a.split(separator: "\n"), ["100.64.0.1"])
        let aaaa = try dig(base + ["ALICE.tail1234.ts.net", "AAAA", "+short", "+tcp"])
        XCTAssertEqual(aaaa.split(separator: "\n"), ["fd7a:115c:a1e0::1"])
        let ptr = try dig(base + ["-x", "100.64.0.1", "+short"])
        XCTAssertEqual(ptr.split(separator: "\n"), ["alice.tail1234.ts.net."])
        let txt = try dig(base + ["note.tail1234.ts.net", "TXT", "+short"])
        XCTAssertEqual(txt.split(separator: "\n"), ["\"hi there\""])
        let nx = try dig(base + ["nobody.tail1234.ts.net", "A"])
        XCTAssertTrue(nx.contains("status: NXDOMAIN"), nx)
        XCTAssertTrue(nx.contains("flags: qr aa rd ra"), nx)
        XCTAssertTrue(nx.contains("EDNS: version: 0, flags:; udp: 1232"), nx)
        let badvers = try dig(base + ["alice", "A", "+edns=1", "+noednsnegotiation"])
        XCTAssertTrue(badvers.contains("status: BADVERS"), badvers)
        await server.close()
    }

    func testForwardRewritesTheIDAndRestoresIt() async throws {
        let twin = UpstreamTwin { q, _ in Self.addresses(q, count: 1) }
        try await twin.start()
        let (server, address) = try await startServer(makeConfig(upstreams: [twin.upstream]))
        for id in [UInt16(0x1234), 0x1234, 0x1234, 0x1234] {
            let response = try await client.query(.query(id: id, name: name("www.example.org"), type: .a, edns: EDNS(udpPayloadSize: 4096)),
                                                  server: address)
            XCTAssertEqual(response.header.id, id)
            XCTAssertEqual(response.answers.map(\.data), [.a(IPAddress("192.0.2.0")!)])
        }
        let seen = twin.seen
        XCTAssertEqual(seen.count, 4)
        XCTAssertTrue(seen.allSatisfy { $0.transport == .udp && $0.name == "www.example.org." })
        XCTAssertTrue(seen.contains { $0.id != 0x1234 }, "the upstream sees the server's IDs, not the client's")
        XCTAssertTrue(seen.allSatisfy { $0.ednsSize == 1232 }, "the advertised size is clamped to the UDP cap")
        await server.close()
        await twin.close()
    }

    func testTruncatedUpstreamAnswerIsFetchedOverTCP() async throws {
        let twin = UpstreamTwin { q, transport in
            var r = Self.addresses(q, count: transport == .udp ? 0 : 3)
            r.header.isTruncated = transport == .udp
            return r
        }
        try await twin.start()
        let (server, address) = try await startServer(makeConfig(upstreams: [twin.upstream]))
        let response = try await client.query(.query(id: 9, name: name("big.example.org"), type: .a), server: address)
        XCTAssertFalse(response.header.isTruncated)
        XCTAssertEqual(response.answers.count, 3)
        XCTAssertEqual(twin.seen.map(\.transport), [.udp, .tcp])
        await server.close()
        await twin.close()
    }

    func testLargeUpstreamAnswerIsCutToTheClientsSize() async throws {
        // Over TCP the upstream sends 100 records (1,600+ octets); a UDP client without EDNS gets
        // what fits in 512 octets and TC.
        let twin = UpstreamTwin { q, transport in
            var r = Self.addresses(q, count: transport == .udp ? 0 : 100)
            r.header.isTruncated = transport == .udp
            return r
        }
        try await twin.start()
        let (server, address) = try await startServer(makeConfig(upstreams: [twin.upstream]))
        let bytes = try await client.exchange(try DNSMessage.query(id: 5, name: name("huge.example.org"), type: .a, edns: nil).encoded(),
                                              with: address, over: .udp)
        XCTAssertLessThanOrEqual(bytes.count, 512)
        let response = try DNSMessage(bytes: bytes)
        XCTAssertTrue(response.header.isTruncated)
        XCTAssertEqual(response.header.id, 5)
        XCTAssertGreaterThan(response.answers.count, 20)
        // Over TCP the client gets them all, and the server asks the upstream over TCP directly.
        let all = try await client.query(.query(id: 6, name: name("huge.example.org"), type: .a, edns: nil), server: address, over: .tcp)
        XCTAssertEqual(all.answers.count, 100)
        XCTAssertEqual(twin.seen.map(\.transport), [.udp, .tcp, .tcp])
        await server.close()
        await twin.close()
    }

    func testSilentUpstreamTimesOutAndTheNextAnswers() async throws {
        let silent = UpstreamTwin { _, _ in nil }
        let good = UpstreamTwin { q, _ in Self.addresses(q, count: 1) }
        try await silent.start()
        try await good.start()
        var options = DNSServer.Options()
        options.upstreamTimeout = .milliseconds(300)
        let (server, address) = try await startServer(makeConfig(upstreams: [silent.upstream, good.upstream]), options: options)
        let started = Date()
        let response = try await client.query(.query(id: 77, name: name("slow.example.org"), type: .a), server: address)
        XCTAssertEqual(response.header.id, 77)
        XCTAssertEqual(response.answers.count, 1)
        XCTAssertEqual(silent.seen.count, 1)
        XCTAssertEqual(good.seen.count, 1)
        XCTAssertGreaterThanOrEqual(Date().timeIntervalSince(started), 0.3)

        await server.close()
        await good.close()

        // Only silent upstreams: SERVFAIL once the query's deadline passes (400 ms for the first,
        // the 100 ms left for the second, the third never asked), not after three upstream timeouts.
        options.upstreamTimeout = .milliseconds(400)
        options.queryTimeout = .milliseconds(500)
        let (strict, strictAddress) = try await startServer(
            makeConfig(upstreams: [silent.upstream, silent.upstream, silent.upstream]), options: options)
        let begun = Date()
        let failed = try await client.query(.query(id: 78, name: name("slow.example.org"), type: .a), server: strictAddress)
        let elapsed = Date().timeIntervalSince(begun)
        XCTAssertEqual(failed.header.id, 78)
        XCTAssertEqual(failed.header.responseCode, .serverFailure)
        XCTAssertEqual(silent.seen.count, 1 + 2)
        XCTAssertGreaterThanOrEqual(elapsed, 0.49)
        XCTAssertLessThan(elapsed, 1.1)
        await strict.close()
        await silent.close()
    }

    func testForwardsBeyondTheCapAreDropped() async throws {
        let silent = UpstreamTwin { _, _ in nil }
        try await silent.start()
        var options = DNSServer.Options()
        options.maximumInFlightForwards = 1
        options.upstreamTimeout = .milliseconds(500)
        options.queryTimeout = .milliseconds(500)
        let (server, address) = try await startServer(makeConfig(upstreams: [silent.upstream]), options: options)
        let (client, one) = (self.client, DNSMessage.query(id: 1, name: name("one.example.org"), type: .a))
        async let first = client.query(one, server: address)
        // Wait until the first forward holds the only slot.
        while server.forwardsInFlight == 0 { try await Task.sleep(nanoseconds: 5_000_000) }
        do {
            _ = try await client.exchange(try DNSMessage.query(id: 2, name: name("two.example.org"), type: .a).encoded(),
                                          with: address, over: .udp, timeout: .milliseconds(300))
            XCTFail("a forward beyond the cap must be dropped")
        } catch DNSServerError.timeout {}
        // Local answers are not forwards: they still come.
        let local = try await client.query(.query(id: 3, name: name("alice"), type: .a), server: address)
        XCTAssertEqual(local.answers.count, 1)
        let firstResponse = try await first
        XCTAssertEqual(firstResponse.header.responseCode, .serverFailure)
        XCTAssertEqual(silent.seen.map(\.name), ["one.example.org."])
        while server.forwardsInFlight != 0 { try await Task.sleep(nanoseconds: 5_000_000) }
        await server.close()
        await silent.close()
    }

    func testIdleTCPConnectionsAreClosed() async throws {
        var options = DNSServer.Options()
        options.tcpIdleTimeout = .milliseconds(200)
        let (server, address) = try await startServer(makeConfig(upstreams: []), options: options)
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(to: address).get()
        let started = Date()
        try await channel.closeFuture.get()
        let elapsed = Date().timeIntervalSince(started)
        XCTAssertGreaterThanOrEqual(elapsed, 0.15)
        XCTAssertLessThan(elapsed, 2)
        await server.close()
    }

    func testNonlocalBindWhenAsked() async throws {
        var options = DNSServer.Options()
        options.allowsNonlocalBind = true
        let server = try await DNSServer.start(config: MagicDNSConfig(), listeningOn: [try SocketAddress(ipAddress: "192.0.2.77", port: 0)],
                                               options: options)
        XCTAssertEqual(server.boundAddresses.count, 2)
        XCTAssertTrue(server.boundAddresses.allSatisfy { $0.address.ipAddress == "192.0.2.77" })
        await server.close()
    }

    func testMalformedQueriesGetFORMERROrNothing() async throws {
        let (server, address) = try await startServer(makeConfig(upstreams: []))
        // A header that promises a question, and no question.
        let headerOnly: [UInt8] = [0xAB, 0xCD, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]
        let formerr = try DNSMessage(bytes: try await client.exchange(headerOnly, with: address, over: .udp))
        XCTAssertEqual(formerr.header.id, 0xABCD)
        XCTAssertEqual(formerr.header.responseCode, .formatError)
        // A pointer loop in the question.
        let loop = headerOnly + [0xC0, 12, 0, 1, 0, 1]
        let formerr2 = try DNSMessage(bytes: try await client.exchange(loop, with: address, over: .tcp))
        XCTAssertEqual(formerr2.header.responseCode, .formatError)
        // A response sent to the server: silence.
        var response = headerOnly
        response[2] |= 0x80
        do {
            _ = try await client.exchange(response, with: address, over: .udp, timeout: .milliseconds(300))
            XCTFail("a response must not be answered")
        } catch DNSServerError.timeout {}
        // A TCP frame above the limit closes the connection; the server keeps serving.
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(to: address).get()
        var big = channel.allocator.buffer(capacity: 2)
        big.writeInteger(UInt16(60000))
        try await channel.writeAndFlush(big)
        try await channel.closeFuture.get()
        let ok = try await client.query(.query(id: 1, name: name("alice"), type: .a), server: address, over: .tcp)
        XCTAssertEqual(ok.answers.count, 1)
        await server.close()
    }

    /// Mutated and random datagrams and TCP streams do not stop the server from answering.
    func testServerSurvivesFuzzedInput() async throws {
        let (server, address) = try await startServer(makeConfig(upstreams: []))
        let seeds = try DNSFuzzTests.seeds()
        var inputs: [[UInt8]] = []
        MutationFuzzer(seeds: seeds, iterations: 2_000, maximumLength: 1500, seed: 0x5E4).run { inputs.append($0) }
        let group = MultiThreadedEventLoopGroup.singleton
        let sender = try await DatagramBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get()
        for input in inputs {
            let envelope = AddressedEnvelope(remoteAddress: address, data: sender.allocator.buffer(bytes: input))
            try await sender.writeAndFlush(envelope)
        }
        try await sender.close()
        // Over TCP: the inputs as frames on a few connections, some with lying lengths.
        for chunk in stride(from: 0, to: 200, by: 50) {
            let channel = try await ClientBootstrap(group: group).connect(to: address).get()
            var buffer = channel.allocator.buffer(capacity: 4096)
            for input in inputs[chunk..<(chunk + 50)] {
                buffer.writeInteger(UInt16(truncatingIfNeeded: input.count + (input.first.map { Int($0 % 3) } ?? 0)))
                buffer.writeBytes(input)
            }
            try? await channel.writeAndFlush(buffer)
            try? await channel.close()
        }
        // The server still answers. A datagram sent while the socket's receive queue is still full of the flood
        // may be dropped by the kernel, so ask as a stub resolver does: again after a timeout, a few times.
        for transport in [DNSTransport.udp, .tcp] {
            var answer: DNSMessage?
            var lastError: (any Error)?
            for _ in 0..<5 where answer == nil {
                do {
                    answer = try await client.query(.query(id: 1, name: name("alice"), type: .a), server: address, over: transport)
                } catch {
                    lastError = error
                }
            }
            XCTAssertEqual(answer?.answers.count, 1, "no answer over \(transport) after the fuzzing: \(lastError.map { "\($0)" } ?? "")")
        }
        await server.close()
    }

    func testBindFailureNamesTheAddress() async throws {
        do {
            _ = try await DNSServer.start(config: MagicDNSConfig(), listeningOn: [try SocketAddress(ipAddress: "192.0.2.77", port: 0)])
            XCTFail("binding an address the host does not have must fail")
        } catch let error as DNSServerError {
            XCTAssertTrue(error.description.contains("192.0.2.77"), error.description)
        }
        // The port of a running server is taken.
        let (server, address) = try await startServer(makeConfig(upstreams: []))
        do {
            _ = try await DNSServer.start(config: MagicDNSConfig(), listeningOn: [address])
            XCTFail("a taken port must fail")
        } catch let error as DNSServerError {
            XCTAssertTrue(error.description.contains("127.0.0.1"), error.description)
        }
        await server.close()
    }

    func testForwardingSocketsCarryTheMark() async throws {
        guard getuid() == 0 else { throw XCTSkip("SO_MARK needs CAP_NET_ADMIN") }
        let twin = UpstreamTwin { q, _ in Self.addresses(q, count: 1) }
        try await twin.start()
        let (server, address) = try await startServer(makeConfig(upstreams: [twin.upstream]), options: DNSServer.Options(socketMark: 0x80000))
        let response = try await client.query(.query(id: 1, name: name("marked.example.org"), type: .a), server: address)
        XCTAssertEqual(response.answers.count, 1)
        // The option really reaches the socket: a client with a mark reads it back.
        let channel = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton).socketMark(0x80000)
            .bind(host: "127.0.0.1", port: 0).get()
        let mark = try await channel.getOption(.socketOption(.init(rawValue: SO_MARK))).get()
        XCTAssertEqual(UInt32(mark), 0x80000)
        try await channel.close()
        await server.close()
        await twin.close()
    }
}
