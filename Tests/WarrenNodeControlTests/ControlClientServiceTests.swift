// The node's control client against an in-process warren-control over loopback: pre-auth and interactive
// login, device approval, incremental maps, endpoint updates, reconnects after a server restart, logout.
// Waits are bounded by a generous deadline so that a broken client fails instead of hanging; no test
// asserts how long anything took.

import Foundation
import Logging
import NIOCore
import NIOPosix
import TailscaleKeys
import WarrenControlServer
import WarrenControlStore
import WarrenControlTransport
@testable import WarrenNodeControl
import WarrenPacket
import WarrenTailcfg
import XCTest

struct TimedOut: Error, CustomStringConvertible {
    var description: String
}

/// Reads a service's events and waits for the ones a test expects.
final class EventLog: @unchecked Sendable {
    private let lock = NSLock()
    private var events: [ControlEvent] = []
    private var reader: Task<Void, Never>?

    init(_ stream: AsyncStream<ControlEvent>) {
        reader = Task { [weak self] in
            for await event in stream { self?.append(event) }
        }
    }

    private func append(_ event: ControlEvent) {
        lock.lock()
        events.append(event)
        lock.unlock()
    }

    var all: [ControlEvent] {
        lock.lock()
        defer { lock.unlock() }
        return events
    }

    /// Waits until an event after index `from` matches; returns it and its index.
    @discardableResult
    func wait<T>(from: Int = 0, _ what: String, deadline: Duration = .seconds(60),
                 _ match: (ControlEvent) -> T?) async throws -> (T, Int) {
        let clock = ContinuousClock()
        let end = clock.now.advanced(by: deadline)
        while clock.now < end {
            let snapshot = all
            if from < snapshot.count {
                for i in from..<snapshot.count {
                    if let value = match(snapshot[i]) { return (value, i) }
                }
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw TimedOut(description: "no \(what) event; saw \(all.map(Self.name))")
    }

    static func name(_ event: ControlEvent) -> String {
        switch event {
        case .needsLogin: "needsLogin"
        case .needsMachineAuth: "needsMachineAuth"
        case .loggedIn: "loggedIn"
        case .map(let m): m.node != nil ? "map(full)" : "map"
        case .disconnected(let r): "disconnected(\(r))"
        case .keyExpired: "keyExpired"
        case .loggedOut: "loggedOut"
        }
    }
}

final class ControlClientServiceTests: XCTestCase {
    final class Harness: @unchecked Sendable {
        var server: ControlHTTPServer
        var group: MultiThreadedEventLoopGroup
        let store: MemoryControlStore
        var engine: ControlEngine
        let port: Int
        let controlKey: MachinePrivate
        let configuration: ControlConfiguration
        let logger: Logger

        init(server: ControlHTTPServer, group: MultiThreadedEventLoopGroup, store: MemoryControlStore, engine: ControlEngine,
             port: Int, controlKey: MachinePrivate, configuration: ControlConfiguration, logger: Logger) {
            self.server = server
            self.group = group
            self.store = store
            self.engine = engine
            self.port = port
            self.controlKey = controlKey
            self.configuration = configuration
            self.logger = logger
        }

        var url: String { "http://127.0.0.1:\(port)" }

        static func makeEngine(_ configuration: ControlConfiguration, store: MemoryControlStore, logger: Logger) async throws -> ControlEngine {
            let directory = try StoreDirectory(store: store, ipv4Prefix: configuration.ipv4Prefix,
                                               ipv6Prefix: configuration.ipv6Prefix)
            let engine = ControlEngine(configuration: configuration, directory: directory, logger: logger)
            try await engine.load()
            return engine
        }

        /// Stops the server and drops every connection (its event loops go away), then serves the same store
        /// and key on the same port with a new engine: a restart of warren-control.
        func restart() async throws {
            await server.close()
            try await group.shutdownGracefully()
            group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            engine = try await Self.makeEngine(configuration, store: store, logger: logger)
            var lastError: (any Error)?
            for _ in 0..<100 {
                do {
                    server = try await ControlHTTPServer.start(engine: engine, controlKey: controlKey,
                                                               options: ControlServerOptions(host: "127.0.0.1", port: port),
                                                               logger: logger, group: group)
                    await engine.setServerURL(url)
                    return
                } catch {
                    lastError = error
                    try await Task.sleep(for: .milliseconds(50))
                }
            }
            throw lastError ?? TimedOut(description: "cannot listen again")
        }

        func close() async {
            await server.close()
            try? await group.shutdownGracefully()
        }
    }

    func makeServer(configure: (inout ControlConfiguration) -> Void = { _ in }) async throws -> Harness {
        var configuration = ControlConfiguration(serverURL: "http://127.0.0.1:0")
        configuration.baseDomain = "lab.warren"
        configuration.interactiveLoginWait = .seconds(2)
        configuration.mapUpdateInterval = .milliseconds(10)
        configure(&configuration)
        let store = MemoryControlStore()
        var logger = Logger(label: "test.control")
        logger.logLevel = .warning
        let engine = try await Harness.makeEngine(configuration, store: store, logger: logger)
        var generator = SystemRandomNumberGenerator()
        let key = MachinePrivate.generate(using: &generator)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = try await ControlHTTPServer.start(engine: engine, controlKey: key,
                                                       options: ControlServerOptions(host: "127.0.0.1", port: 0),
                                                       logger: logger, group: group)
        let port = try XCTUnwrap(server.port)
        await engine.setServerURL("http://127.0.0.1:\(port)")
        return Harness(server: server, group: group, store: store, engine: engine, port: port, controlKey: key,
                       configuration: configuration, logger: logger)
    }

    func createKey(_ store: MemoryControlStore, user: String = "alice",
                   options: PreAuthKeyOptions = PreAuthKeyOptions(reusable: true)) async throws -> String {
        try await store.transaction { tx in
            let owner = try tx.user(named: user) ?? tx.createUser(name: user, now: Date())
            var generator = SystemRandomNumberGenerator()
            return try tx.createPreAuthKey(userID: owner.id, options: options, now: Date(), generator: &generator).text
        }
    }

    func createUser(_ store: MemoryControlStore, _ name: String) async throws -> Int64 {
        try await store.transaction { tx -> Int64 in
            if let existing = try tx.user(named: name) { return existing.id.rawValue }
            return try tx.createUser(name: name, now: Date()).id.rawValue
        }
    }

    struct Node {
        var machineKey: MachinePrivate
        var nodeKey: NodePrivate
        var discoKey: DiscoPublic
    }

    func newNode() -> Node {
        var generator = SystemRandomNumberGenerator()
        return Node(machineKey: MachinePrivate.generate(using: &generator), nodeKey: NodePrivate.generate(using: &generator),
                    discoKey: DiscoPublic(raw: MachinePrivate.generate(using: &generator).publicKey.raw))
    }

    func configuration(_ h: Harness, _ node: Node, authKey: String?, hostname: String) -> ControlClientConfiguration {
        ControlClientConfiguration(serverURL: h.url, machineKey: node.machineKey, nodeKey: node.nodeKey, discoKey: node.discoKey,
                                   authKey: authKey, hostinfo: ControlClientConfiguration.defaultHostinfo(hostname: hostname),
                                   backoff: ReconnectBackoff(initial: .milliseconds(20), maximum: .milliseconds(200)))
    }

    func start(_ configuration: ControlClientConfiguration) -> (ControlClientService, EventLog, Task<Void, Never>) {
        var logger = Logger(label: "test.client")
        logger.logLevel = .warning
        let service = ControlClientService(configuration: configuration, logger: logger)
        let log = EventLog(service.events)
        let task = Task { await service.run() }
        return (service, log, task)
    }

    static func fullMap(_ event: ControlEvent) -> MapResponse? {
        if case .map(let m) = event, m.node != nil, m.peers != nil { return m }
        return nil
    }

    // MARK: Tests

    func testPreAuthKeyFullMapIncrementalJoinAndEndpointUpdate() async throws {
        let h = try await makeServer()
        let key = try await createKey(h.store)
        let nodeA = newNode()
        let (a, logA, taskA) = start(configuration(h, nodeA, authKey: key, hostname: "alpha"))
        defer { taskA.cancel() }

        let (login, _) = try await logA.wait("loggedIn") { if case .loggedIn(let r) = $0 { return r }; return nil }
        XCTAssertTrue(login.machineAuthorized)
        XCTAssertEqual(login.login.loginName, "alice")
        let (full, fullIndex) = try await logA.wait("full map", Self.fullMap)
        XCTAssertEqual(full.node?.key, nodeA.nodeKey.publicKey)
        XCTAssertEqual(full.node?.name, "alpha.lab.warren.")
        XCTAssertEqual(full.peers ?? [], [])

        // b joins: a gets it as an incremental PeersChanged.
        let nodeB = newNode()
        let (b, logB, taskB) = start(configuration(h, nodeB, authKey: key, hostname: "bravo"))
        defer { taskB.cancel() }
        try await logB.wait("b's full map", Self.fullMap)
        let (joined, joinIndex) = try await logA.wait(from: fullIndex + 1, "PeersChanged with b") { event -> Node? in
            guard case .map(let m) = event, m.peers == nil else { return nil }
            return m.peersChanged?.first { $0.key == nodeB.nodeKey.publicKey }.map { _ in nodeB }
        }
        XCTAssertEqual(joined.nodeKey.publicKey, nodeB.nodeKey.publicKey)

        // b's endpoints reach a's map (as a patch or an upsert).
        let endpoint = AddrPort(address: IPAddress("192.0.2.7")!, port: 41641)
        await b.updateEndpoints([endpoint], types: [1])
        try await logA.wait(from: joinIndex + 1, "b's endpoints") { event -> Bool? in
            guard case .map(let m) = event else { return nil }
            let patched = m.peersChangedPatch?.contains { $0.endpoints?.contains(endpoint) == true } ?? false
            let upserted = m.peersChanged?.contains { $0.key == nodeB.nodeKey.publicKey && $0.endpoints?.contains(endpoint) == true } ?? false
            return patched || upserted ? true : nil
        }
        let liteUpdates = await b.statistics.liteUpdates
        XCTAssertGreaterThanOrEqual(liteUpdates, 1)
        _ = a
        await h.close()
    }

    func testInteractiveLoginShowsAURLAndCompletesWhenApproved() async throws {
        let h = try await makeServer()
        let userID = try await createUser(h.store, "bob")
        let node = newNode()
        let (service, log, task) = start(configuration(h, node, authKey: nil, hostname: "laptop"))
        defer { task.cancel() }
        let (url, _) = try await log.wait("needsLogin") { event -> String? in
            if case .needsLogin(let url) = event { return url }
            return nil
        }
        let authURL = try XCTUnwrap(url)
        XCTAssertTrue(authURL.hasPrefix("\(h.url)/register/"), authURL)
        let id = try XCTUnwrap(authURL.split(separator: "/").last.map(String.init))
        try await h.engine.approveInteractiveLogin(id: id, userID: userID)
        let (login, _) = try await log.wait("loggedIn") { if case .loggedIn(let r) = $0 { return r }; return nil }
        XCTAssertEqual(login.login.loginName, "bob")
        let (full, _) = try await log.wait("full map", Self.fullMap)
        XCTAssertEqual(full.node?.key, node.nodeKey.publicKey)
        let registrations = await service.statistics.registrations
        XCTAssertEqual(registrations, 1)
        await h.close()
    }

    func testDeviceApprovalNeedsMachineAuthThenLoggedInAndMap() async throws {
        let h = try await makeServer { $0.requireDeviceApproval = true }
        let key = try await createKey(h.store)
        let node = newNode()
        let (_, log, task) = start(configuration(h, node, authKey: key, hostname: "kiosk"))
        defer { task.cancel() }
        let (_, waitIndex) = try await log.wait("needsMachineAuth") { if case .needsMachineAuth = $0 { return true }; return nil }
        let (unapproved, _) = try await log.wait("full map", Self.fullMap)
        XCTAssertEqual(unapproved.node?.machineAuthorized ?? false, false)

        let nodes = await h.engine.allNodes()
        var record = try XCTUnwrap(nodes.first)
        XCTAssertFalse(record.authorized)
        record.authorized = true
        try await h.engine.nodeChanged(record)
        let (login, loginIndex) = try await log.wait(from: waitIndex + 1, "loggedIn") { event -> RegisterResponse? in
            if case .loggedIn(let r) = event { return r }
            return nil
        }
        XCTAssertTrue(login.machineAuthorized)
        try await log.wait(from: loginIndex + 1, "authorized self node") { event -> Bool? in
            if case .map(let m) = event, m.node?.machineAuthorized == true { return true }
            return nil
        }
        await h.close()
    }

    func testServerRestartReconnectsWithoutRegisteringAgain() async throws {
        let h = try await makeServer()
        let key = try await createKey(h.store, options: PreAuthKeyOptions(reusable: false))
        let node = newNode()
        let (service, log, task) = start(configuration(h, node, authKey: key, hostname: "server"))
        defer { task.cancel() }
        let (_, firstIndex) = try await log.wait("full map", Self.fullMap)

        try await h.restart()
        let (_, lostIndex) = try await log.wait(from: firstIndex + 1, "disconnected") { event -> Bool? in
            if case .disconnected = event { return true }
            return nil
        }
        let (again, _) = try await log.wait(from: lostIndex + 1, "full map after the restart", Self.fullMap)
        XCTAssertEqual(again.node?.key, node.nodeKey.publicKey)
        let stats = await service.statistics
        XCTAssertEqual(stats.registrations, 1)
        XCTAssertGreaterThanOrEqual(stats.connections, 2)
        let serverRegistrations = await h.engine.statistics.registrations
        XCTAssertEqual(serverRegistrations, 0, "the restarted server saw a register request")
        XCTAssertFalse(log.all.contains { if case .needsLogin = $0 { return true }; return false })

        // A new service with the same keys and no auth key (a daemon restart) logs in without the key.
        task.cancel()
        await task.value
        let (second, log2, task2) = start(configuration(h, node, authKey: nil, hostname: "server"))
        defer { task2.cancel() }
        try await log2.wait("loggedIn") { if case .loggedIn = $0 { return true }; return nil }
        try await log2.wait("full map", Self.fullMap)
        let secondRegistrations = await second.statistics.registrations
        XCTAssertEqual(secondRegistrations, 1)
        XCTAssertFalse(log2.all.contains { if case .needsLogin = $0 { return true }; return false })
        await h.close()
    }

    func testLogoutExpiresTheNodeAndStopsTheService() async throws {
        let h = try await makeServer()
        let key = try await createKey(h.store)
        let node = newNode()
        let (service, log, task) = start(configuration(h, node, authKey: key, hostname: "leaving"))
        try await log.wait("full map", Self.fullMap)
        try await service.logout()
        try await log.wait("loggedOut") { if case .loggedOut = $0 { return true }; return nil }
        await task.value  // run() returns by itself
        let nodes = await h.engine.allNodes()
        let record = try XCTUnwrap(nodes.first)
        XCTAssertTrue(record.isExpired(at: h.engine.currentTime()))
        XCTAssertFalse(log.all.contains { if case .keyExpired = $0 { return true }; return false })

        // The same node key again: the server says it expired.
        let (_, log2, task2) = start(configuration(h, node, authKey: nil, hostname: "leaving"))
        try await log2.wait("keyExpired") { if case .keyExpired = $0 { return true }; return nil }
        await task2.value
        await h.close()
    }
}

final class ControlClientPieceTests: XCTestCase {
    func testBackoffGrowsIsCappedAndJittered() {
        let backoff = ReconnectBackoff(initial: .seconds(1), maximum: .seconds(30), jitter: 0.5)
        XCTAssertEqual(backoff.delay(attempt: 0, random: 0), .seconds(1))
        XCTAssertEqual(backoff.delay(attempt: 3, random: 0), .seconds(8))
        XCTAssertEqual(backoff.delay(attempt: 10, random: 0), .seconds(30))
        XCTAssertEqual(backoff.delay(attempt: 1000, random: 0), .seconds(30))
        XCTAssertEqual(backoff.delay(attempt: 3, random: 1), .seconds(4))
        for attempt in 0..<40 {
            let d = backoff.delay(attempt: attempt, random: 0.7)
            XCTAssertGreaterThan(d, .zero)
            XCTAssertLessThanOrEqual(d, .seconds(30))
        }
    }

    func testControlEndpointParsesURLs() throws {
        let plain = try ControlEndpoint(url: "http://127.0.0.1:8080")
        XCTAssertEqual(plain.host, "127.0.0.1")
        XCTAssertEqual(plain.port, 8080)
        XCTAssertNil(plain.tls)
        XCTAssertEqual(plain.hostHeader, "127.0.0.1:8080")
        let secure = try ControlEndpoint(url: "https://control.example.com/")
        XCTAssertEqual(secure.host, "control.example.com")
        XCTAssertEqual(secure.port, 443)
        XCTAssertNotNil(secure.tls)
        XCTAssertEqual(secure.hostHeader, "control.example.com")
        let v6 = try ControlEndpoint(url: "http://[::1]:9000/path")
        XCTAssertEqual(v6.host, "::1")
        XCTAssertEqual(v6.port, 9000)
        XCTAssertEqual(v6.hostHeader, "[::1]:9000")
        XCTAssertThrowsError(try ControlEndpoint(url: "ftp://x"))
        XCTAssertThrowsError(try ControlEndpoint(url: "http://x:99999"))
        XCTAssertThrowsError(try ControlEndpoint(url: "http://:80"))
    }

    func testHTTP1ResponseParsing() throws {
        let chunked = try HTTP1Response(parsing: Array("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n".utf8))
        XCTAssertEqual(chunked.status, 200)
        XCTAssertEqual(chunked.body, Array("abcde".utf8))
        let sized = try HTTP1Response(parsing: Array("HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nnoXX".utf8))
        XCTAssertEqual(sized.status, 404)
        XCTAssertEqual(sized.body, Array("no".utf8))
        XCTAssertThrowsError(try HTTP1Response(parsing: Array("garbage".utf8)))
        XCTAssertThrowsError(try HTTP1Response(parsing: Array("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab".utf8)))
    }
}

extension ControlClientServiceTests {
    func testWatchdogDropsASilentStreamAndReconnects() async throws {
        // The server's keep-alives are far apart; the client's watchdog is short.
        let h = try await makeServer { $0.keepAliveInterval = .seconds(3600) }
        let key = try await createKey(h.store)
        let node = newNode()
        var configuration = configuration(h, node, authKey: key, hostname: "quiet")
        configuration.watchdogTimeout = .milliseconds(300)
        let (service, log, task) = start(configuration)
        defer { task.cancel() }
        let (_, first) = try await log.wait("full map", ControlClientServiceTests.fullMap)
        let (_, lost) = try await log.wait(from: first + 1, "disconnected") { event -> Bool? in
            if case .disconnected = event { return true }
            return nil
        }
        try await log.wait(from: lost + 1, "full map again", ControlClientServiceTests.fullMap)
        let stats = await service.statistics
        XCTAssertEqual(stats.registrations, 1)
        XCTAssertGreaterThanOrEqual(stats.connections, 2)
        await h.close()
    }

    func testKeyExpiredByTheServerWhileStreaming() async throws {
        let h = try await makeServer()
        let key = try await createKey(h.store)
        let node = newNode()
        let (_, log, task) = start(configuration(h, node, authKey: key, hostname: "expiring"))
        try await log.wait("full map", ControlClientServiceTests.fullMap)
        let nodes = await h.engine.allNodes()
        try await h.engine.expireNode(id: try XCTUnwrap(nodes.first).id)
        try await log.wait("keyExpired") { if case .keyExpired = $0 { return true }; return nil }
        await task.value  // run() stops: the caller rotates the key
        await h.close()
    }

    func testPathOfPingURL() {
        XCTAssertEqual(ControlClientService.pathOfURL("https://control.example.com/machine/ping?x=1"), "/machine/ping?x=1")
        XCTAssertEqual(ControlClientService.pathOfURL("http://h:1"), "/")
        XCTAssertEqual(ControlClientService.pathOfURL("/p"), "/p")
        XCTAssertNil(ControlClientService.pathOfURL("nonsense"))
    }
}
