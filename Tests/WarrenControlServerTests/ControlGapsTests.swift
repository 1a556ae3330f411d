// HTTPS on the control listener, node-key expiry reaching the node and its peers, device approval
// (enforced, and kept across a restart) and the DERP admission endpoint, in-process over loopback with an
// injected clock.

import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization
import TailscaleKeys
import WarrenControlSQLite
import WarrenControlStore
import WarrenDERPClient
import WarrenDERPServer
import WarrenDERPTransport
import WarrenPacket
import WarrenTailcfg
import WarrenTestSupport
import XCTest
@testable import WarrenControlServer

/// A clock the test moves by hand.
final class ManualClock: Sendable {
    private let time: Mutex<TailcfgTime>
    init(_ start: TailcfgTime = TailcfgTime(secondsSince1970: 1_800_000_000, nanoseconds: 0)) { time = Mutex(start) }
    var now: TailcfgTime { time.withLock { $0 } }
    func advance(_ duration: Duration) { time.withLock { $0 = $0.adding(duration) } }
    var reader: @Sendable () -> TailcfgTime { { self.now } }
}

/// A certificate authority of the test's own and a leaf certificate for 127.0.0.1 it signed (openssl CLI).
struct TestCA {
    var directory: String
    var caFile: String { directory + "/ca.pem" }
    var certificateFile: String { directory + "/leaf.pem" }
    var keyFile: String { directory + "/leaf.key" }

    static func make(in directory: String) throws -> TestCA {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/openssl") else {
            throw XCTSkip("openssl is not installed; it makes the test's certificate authority")
        }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=critical,CA:FALSE\n"
            .write(toFile: directory + "/leaf.ext", atomically: true, encoding: .utf8)
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        let steps: [[String]] = [
            ["req", "-x509"] + ec + ["-keyout", "ca.key", "-out", "ca.pem", "-days", "3", "-subj", "/CN=wcg test CA",
                                     "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            ["req"] + ec + ["-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=127.0.0.1"],
            ["x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "leaf.pem",
             "-days", "2", "-extfile", "leaf.ext"],
        ]
        for arguments in steps {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
            process.arguments = arguments
            process.currentDirectoryURL = URL(fileURLWithPath: directory)
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            process.waitUntilExit()
            guard process.terminationStatus == 0 else {
                throw XCTSkip("openssl \(arguments[0]) failed (exit \(process.terminationStatus))")
            }
        }
        return TestCA(directory: directory)
    }

    func serverContext() throws -> NIOSSLContext {
        let certificate = try DERPCertificate.load(certificatePath: certificateFile, keyPath: keyFile)
        return try NIOSSLContext(configuration: certificate.serverTLSConfiguration())
    }

    /// A client that trusts only this CA.
    func clientContext() throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caFile))
        return try NIOSSLContext(configuration: configuration)
    }

    var leafPin: String {
        get throws { try DERPCertificate.load(certificatePath: certificateFile, keyPath: keyFile).pin }
    }
}

final class ControlGapsTests: XCTestCase {
    struct Harness {
        var server: ControlHTTPServer
        var store: any ControlStore
        var engine: ControlEngine
        var port: Int
        var controlKey: MachinePublic
    }

    func makeServer(store: any ControlStore = MemoryControlStore(), clock: ManualClock, tls: NIOSSLContext? = nil,
                    upgraders: UpgraderFactory? = nil,
                    configure: (inout ControlConfiguration) -> Void = { _ in }) async throws -> Harness {
        var configuration = ControlConfiguration(serverURL: "http://127.0.0.1:0")
        configuration.baseDomain = "gaps.warren"
        configure(&configuration)
        let directory = try StoreDirectory(store: store, ipv4Prefix: configuration.ipv4Prefix, ipv6Prefix: configuration.ipv6Prefix)
        var logger = Logger(label: "wcg")
        logger.logLevel = .warning
        let engine = ControlEngine(configuration: configuration, directory: directory, logger: logger, now: clock.reader)
        try await engine.load()
        var generator = TestGenerator(seed: 77)
        let key = MachinePrivate.generate(using: &generator)
        let server = try await ControlHTTPServer.start(
            engine: engine, controlKey: key,
            options: ControlServerOptions(host: "127.0.0.1", port: 0, extraUpgraders: upgraders, tls: tls), logger: logger)
        let port = try XCTUnwrap(server.port)
        return Harness(server: server, store: store, engine: engine, port: port, controlKey: key.publicKey)
    }

    func createKey(_ store: any ControlStore, options: PreAuthKeyOptions = PreAuthKeyOptions(reusable: true)) async throws -> String {
        try await store.transaction { tx in
            let owner = try tx.user(named: "alice") ?? tx.createUser(name: "alice", now: Date())
            var generator = SystemRandomNumberGenerator()
            return try tx.createPreAuthKey(userID: owner.id, options: options, now: Date(), generator: &generator).text
        }
    }

    /// A registered client with its map stream open, past the first (full) map.
    struct Joined {
        var client: TestControlClient
        var first: MapResponse
        var messages: AsyncThrowingStream<MapResponse, Error>.AsyncIterator
        var id: Int64 { first.node?.id ?? -1 }
    }

    func join(_ h: Harness, seed: UInt64, key: String, hostname: String, tls: NIOSSLContext? = nil,
              expectAuthorized: Bool = true) async throws -> Joined {
        let client = TestControlClient(port: h.port, seed: seed, tls: tls)
        try await client.connect(controlKey: h.controlKey)
        let registered = try await client.register(client.registerRequest(authKey: key, hostname: hostname))
        XCTAssertEqual(registered.error, "")
        XCTAssertEqual(registered.machineAuthorized, expectAuthorized)
        let (status, messages) = try await client.map(client.mapRequest(stream: true))
        XCTAssertEqual(status, 200)
        var iterator = messages.makeAsyncIterator()
        let first = try await next(&iterator)
        return Joined(client: client, first: first, messages: iterator)
    }

    /// The next message that is not a keep-alive; nil when the stream ended.
    func nextOrEnd(_ iterator: inout AsyncThrowingStream<MapResponse, Error>.AsyncIterator) async throws -> MapResponse? {
        while let message = try await iterator.next() {
            if message.keepAlive == true { continue }
            return message
        }
        return nil
    }

    func next(_ iterator: inout AsyncThrowingStream<MapResponse, Error>.AsyncIterator) async throws -> MapResponse {
        guard let message = try await nextOrEnd(&iterator) else { throw TestClientError(description: "map stream ended") }
        return message
    }

    // MARK: TLS

    func testControlProtocolKeyAndTheMountedRelayOverHTTPS() async throws {
        let ca = try TestCA.make(in: NSTemporaryDirectory() + "wcg-tls-\(getpid())")
        defer { try? FileManager.default.removeItem(atPath: ca.directory) }
        var rng = SeededGenerator(seed: 0x7C)
        let relay = DERPServer(configuration: DERPServerConfiguration(privateKey: NodePrivate.generate(using: &rng)))
        let h = try await makeServer(clock: ManualClock(), tls: try ca.serverContext(),
                                     upgraders: { @Sendable () -> [any HTTPServerProtocolUpgrader] in [DERPHTTPUpgrader(server: relay)] })
        defer { Task { await h.server.close() } }
        let trusted = try ca.clientContext()

        // GET /key over HTTPS; the same request in plain HTTP gets no answer.
        let keys = try await TestControlClient.fetchKey(host: "127.0.0.1", port: h.port, tls: trusted)
        XCTAssertEqual(keys.publicKey, h.controlKey)
        let plain = try? await TestControlClient.fetchKey(host: "127.0.0.1", port: h.port)
        XCTAssertNil(plain, "the listener answered plain HTTP although it serves TLS")

        // A client that does not trust the test CA cannot connect.
        let untrusted = try NIOSSLContext(configuration: .makeClientConfiguration())
        let stranger = try? await TestControlClient.fetchKey(host: "127.0.0.1", port: h.port, tls: untrusted)
        XCTAssertNil(stranger, "a client without the CA accepted the certificate")

        // Register and stream maps inside TLS; a second node arrives as an incremental update.
        let key = try await createKey(h.store)
        var a = try await join(h, seed: 1, key: key, hostname: "alpha", tls: trusted)
        XCTAssertEqual(a.first.node?.name, "alpha.gaps.warren.")
        let b = try await join(h, seed: 2, key: key, hostname: "beta", tls: trusted)
        XCTAssertEqual(b.first.peers?.map(\.name), ["alpha.gaps.warren."])
        var sawBeta = false
        while !sawBeta {
            let message = try await next(&a.messages)
            sawBeta = message.peersChanged?.contains { $0.name == "beta.gaps.warren." } == true
        }

        // The relay mounted on the same HTTPS listener: a DERP client that pins the listener's certificate.
        let endpoint = DERPClient.Endpoint(host: "127.0.0.1", port: h.port, trust: .pinned(try ca.leafPin))
        let derpClient = try await DERPClient.connect(to: endpoint, privateKey: a.client.nodeKey)
        XCTAssertEqual(derpClient.serverKey, relay.publicKey)
        await derpClient.close()
        await a.client.close()
        await b.client.close()
    }

    // MARK: Expiry

    func testAdminExpiryEndsTheNodesStreamAndPeersSeeItExpired() async throws {
        let clock = ManualClock()
        let h = try await makeServer(clock: clock)
        defer { Task { await h.server.close() } }
        let key = try await createKey(h.store)
        var a = try await join(h, seed: 11, key: key, hostname: "alpha")
        var b = try await join(h, seed: 12, key: key, hostname: "beta")
        let admitted = await DERPAdmitEndpoint.admits(a.client.nodeKey.publicKey, engine: h.engine)
        XCTAssertTrue(admitted)

        // What `warren-control nodes expire alpha` does: the admin API writes the expiry, then the server
        // re-reads the node (AdminWiring's hook).
        let aID = a.id
        let expiredAt = clock.now
        try await h.store.transaction { tx in
            var node = try tx.requireNode(id: NodeID(aID))
            node.expiry = expiredAt.date
            try tx.update(node)
        }
        clock.advance(.seconds(1))
        _ = try await h.engine.reloadNode(id: aID)

        // The peer sees alpha expired, with its key expiry in the past.
        var peerView: WarrenTailcfg.Node?
        while peerView == nil {
            let message = try await next(&b.messages)
            peerView = message.peersChanged?.first { $0.id == aID }
        }
        XCTAssertEqual(peerView?.expired, true)
        XCTAssertEqual(peerView?.keyExpiry.map { $0 <= clock.now }, true)
        // alpha gets itself expired, then its stream ends.
        var ownView: WarrenTailcfg.Node?
        while let message = try await nextOrEnd(&a.messages) {
            if let node = message.node { ownView = node }
        }
        XCTAssertEqual(ownView?.expired, true)
        XCTAssertEqual(ownView?.keyExpiry.map { $0 <= clock.now }, true)
        // It cannot open a new stream, and a relay asking control would refuse it.
        let again = try await a.client.post("/machine/map", json: try TailcfgJSON.encode(a.client.mapRequest(stream: true)))
        XCTAssertEqual(again.status, 403)
        let text = String(decoding: await again.collect(), as: UTF8.self)
        XCTAssertTrue(text.contains("expired"), text)
        let refused = await DERPAdmitEndpoint.admits(a.client.nodeKey.publicKey, engine: h.engine)
        XCTAssertFalse(refused)
        // A new full map for beta still lists alpha, as expired.
        let c = try await join(h, seed: 13, key: key, hostname: "gamma")
        XCTAssertEqual(c.first.peers?.first { $0.id == aID }?.expired, true)
        for client in [a.client, b.client, c.client] { await client.close() }
    }

    func testConfiguredKeyExpiryReachesConnectedPeersWhenTheTimePasses() async throws {
        let clock = ManualClock()
        let h = try await makeServer(clock: clock, configure: { $0.nodeKeyExpiry = .seconds(3600) })
        defer { Task { await h.server.close() } }
        let watcher = NodeKeyExpiryWatcher(engine: h.engine)
        let plainKey = try await createKey(h.store)
        let taggedKey = try await createKey(h.store, options: PreAuthKeyOptions(reusable: true, tags: ["tag:server"]))
        var a = try await join(h, seed: 21, key: plainKey, hostname: "laptop")
        var t = try await join(h, seed: 22, key: taggedKey, hostname: "server")
        XCTAssertNotNil(a.first.node?.keyExpiry, "an untagged node has a key expiry")
        XCTAssertNil(t.first.node?.keyExpiry, "a tagged node never expires")
        XCTAssertNotEqual(a.first.node?.expired, true)

        // The watcher sleeps until the next expiry (an hour from now), not longer.
        let wait = await watcher.nextWait()
        XCTAssertLessThanOrEqual(wait, .seconds(30))
        let longWatcher = NodeKeyExpiryWatcher(engine: h.engine, maximumInterval: .seconds(7200))
        let untilExpiry = await longWatcher.nextWait()
        XCTAssertGreaterThan(untilExpiry, .seconds(3590))
        XCTAssertLessThanOrEqual(untilExpiry, .seconds(3601))

        clock.advance(.seconds(1800))
        let early = await watcher.check()
        XCTAssertEqual(early, [])
        clock.advance(.seconds(1801))
        let due = await watcher.check()
        XCTAssertEqual(due, [a.id])

        var peerView: WarrenTailcfg.Node?
        while peerView == nil {
            let message = try await next(&t.messages)
            peerView = message.peersChanged?.first { $0.id == a.id }
        }
        XCTAssertEqual(peerView?.expired, true)
        var ownView: WarrenTailcfg.Node?
        while let message = try await nextOrEnd(&a.messages) {
            if let node = message.node { ownView = node }
        }
        XCTAssertEqual(ownView?.expired, true, "the node was not told that it expired before its stream ended")

        // Announced once; the tagged node never expires.
        clock.advance(.seconds(1000 * 86_400))
        let later = await watcher.check()
        XCTAssertEqual(later, [])
        let stillAdmitted = await DERPAdmitEndpoint.admits(t.client.nodeKey.publicKey, engine: h.engine)
        XCTAssertTrue(stillAdmitted)
        await a.client.close()
        await t.client.close()
    }

    /// The watcher as the server runs it (its own loop, sleeping at most `maximumInterval` between checks).
    func testTheRunningWatcherAnnouncesAnExpiry() async throws {
        let clock = ManualClock()
        let h = try await makeServer(clock: clock, configure: { $0.nodeKeyExpiry = .seconds(600) })
        defer { Task { await h.server.close() } }
        let key = try await createKey(h.store)
        let a = try await join(h, seed: 61, key: key, hostname: "short")
        var b = try await join(h, seed: 62, key: key, hostname: "watcher")
        let watcher = NodeKeyExpiryWatcher(engine: h.engine, maximumInterval: .milliseconds(50))
        let running = Task { try await watcher.run() }
        defer { running.cancel() }
        clock.advance(.seconds(601))
        var peerView: WarrenTailcfg.Node?
        while peerView == nil {
            let message = try await next(&b.messages)
            peerView = message.peersChanged?.first { $0.id == a.id }
        }
        XCTAssertEqual(peerView?.expired, true)
        await a.client.close()
        await b.client.close()
    }

    // MARK: Device approval

    func testDeviceApprovalIsEnforcedAndSurvivesARestart() async throws {
        let path = NSTemporaryDirectory() + "wcg-approval-\(getpid()).sqlite"
        let files = [path, path + "-wal", path + "-shm"]
        for file in files { try? FileManager.default.removeItem(atPath: file) }
        defer { for file in files { try? FileManager.default.removeItem(atPath: file) } }
        let clock = ManualClock()
        let store = try SQLiteControlStore(path: path)
        let approval: (inout ControlConfiguration) -> Void = { $0.requireDeviceApproval = true }
        let h = try await makeServer(store: store, clock: clock, configure: approval)
        let plainKey = try await createKey(store)
        let approvedKey = try await createKey(store, options: PreAuthKeyOptions(reusable: true, preApproved: true))

        var waiting = try await join(h, seed: 31, key: plainKey, hostname: "kiosk", expectAuthorized: false)
        XCTAssertEqual(waiting.first.node?.machineAuthorized, false)
        XCTAssertEqual(waiting.first.peers ?? [], [], "a device waiting for approval sees no peers")
        var admin = try await join(h, seed: 32, key: approvedKey, hostname: "desk")
        XCTAssertEqual(admin.first.peers ?? [], [], "a device waiting for approval is nobody's peer")
        let notYet = await DERPAdmitEndpoint.admits(waiting.client.nodeKey.publicKey, engine: h.engine)
        XCTAssertFalse(notYet)

        // `nodes approve kiosk`: the store says authorized, the server re-reads the node.
        let kioskID = waiting.id
        try await store.transaction { tx in
            var node = try tx.requireNode(id: NodeID(kioskID))
            node.authorized = true
            try tx.update(node)
        }
        _ = try await h.engine.reloadNode(id: kioskID)
        var fresh: MapResponse?
        while fresh == nil {
            let message = try await next(&waiting.messages)
            if message.peers != nil { fresh = message }
            XCTAssertNil(message.peersChanged, "a device waiting for approval was sent a peer")
        }
        XCTAssertEqual(fresh?.node?.machineAuthorized, true)
        XCTAssertEqual(fresh?.peers?.map(\.name), ["desk.gaps.warren."])
        var arrived = false
        while !arrived {
            let message = try await next(&admin.messages)
            arrived = message.peersChanged?.contains { $0.id == kioskID } == true
        }
        let nowAdmitted = await DERPAdmitEndpoint.admits(waiting.client.nodeKey.publicKey, engine: h.engine)
        XCTAssertTrue(nowAdmitted)

        // A third device waits; then the server restarts on the same database.
        let third = TestControlClient(port: h.port, seed: 33)
        try await third.connect(controlKey: h.controlKey)
        let thirdResponse = try await third.register(third.registerRequest(authKey: plainKey, hostname: "pending"))
        XCTAssertFalse(thirdResponse.machineAuthorized)
        for client in [waiting.client, admin.client, third] { await client.close() }
        await h.server.close()

        let reopened = try SQLiteControlStore(path: path)
        let restarted = try await makeServer(store: reopened, clock: clock, configure: approval)
        defer { Task { await restarted.server.close() } }
        let nodes = await restarted.engine.allNodes()
        XCTAssertEqual(Dictionary(uniqueKeysWithValues: nodes.map { ($0.givenName, $0.authorized) }),
                       ["kiosk": true, "desk": true, "pending": false])
        for (seed, hostname, authorized) in [(UInt64(31), "kiosk", true), (33, "pending", false)] {
            let client = TestControlClient(port: restarted.port, seed: seed)
            try await client.connect(controlKey: restarted.controlKey)
            let response = try await client.register(client.registerRequest(authKey: nil, hostname: hostname))
            XCTAssertEqual(response.error, "")
            XCTAssertEqual(response.machineAuthorized, authorized, hostname)
            await client.close()
        }
    }

    // MARK: DERP admission

    func testDERPRelayAdmitsOnlyNodesThatControlKnows() async throws {
        let h = try await makeServer(clock: ManualClock())
        defer { Task { await h.server.close() } }
        let key = try await createKey(h.store)
        let member = TestControlClient(port: h.port, seed: 41)
        try await member.connect(controlKey: h.controlKey)
        let registered = try await member.register(member.registerRequest(authKey: key, hostname: "member"))
        XCTAssertEqual(registered.error, "")

        // The relay warren-derp runs with --verify-clients-url http://…/verify.
        var rng = SeededGenerator(seed: 0x5D)
        var configuration = DERPServerConfiguration(privateKey: NodePrivate.generate(using: &rng))
        let url = try XCTUnwrap(URL(string: "http://127.0.0.1:\(h.port)/verify"))
        configuration.admission = DERPHTTPAdmission.make(url: url)
        let relay = DERPServer(configuration: configuration)
        let listener = try DERPListener(server: relay, host: "127.0.0.1", port: 0, tlsConfiguration: nil)
        let bound = try await listener.bind()
        defer { listener.close() }
        let endpoint = DERPClient.Endpoint(host: "127.0.0.1", port: try XCTUnwrap(bound.port), trust: nil)

        let admitted = try await DERPClient.connect(to: endpoint, privateKey: member.nodeKey)
        XCTAssertEqual(admitted.serverKey, relay.publicKey)
        _ = try await admitted.ping()
        await admitted.close()
        let stranger = NodePrivate.generate(using: &rng)
        do {
            let client = try await DERPClient.connect(to: endpoint, privateKey: stranger)
            _ = try await client.ping()
            XCTFail("the relay admitted a node key that control does not know")
        } catch {}

        // The endpoint itself: Go's JSON field names in and out; a body that is not a request is a 400.
        let answer = try await TestControlClient.rawHTTP(host: "127.0.0.1", port: h.port, request: Self.post(
            #"{"NodePublic":"\#(member.nodeKey.publicKey)","Source":"192.0.2.7"}"#))
        XCTAssertTrue(String(decoding: answer, as: UTF8.self).hasSuffix(#"{"Allow":true}"#))
        let unknown = try await TestControlClient.rawHTTP(host: "127.0.0.1", port: h.port, request: Self.post(
            #"{"NodePublic":"\#(stranger.publicKey)","Source":""}"#))
        XCTAssertTrue(String(decoding: unknown, as: UTF8.self).hasSuffix(#"{"Allow":false}"#))
        let bad = try await TestControlClient.rawHTTP(host: "127.0.0.1", port: h.port, request: Self.post(#"{"NodePublic":"nodekey:zz"}"#))
        XCTAssertTrue(String(decoding: bad, as: UTF8.self).hasPrefix("HTTP/1.1 400"))
        await member.close()
    }

    /// The warren-derp program with `--verify-clients-url` pointed at a control server's /verify.
    func testWarrenDERPProgramAsksControlWhomToAdmit() async throws {
        let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("warren-derp")
        guard FileManager.default.isExecutableFile(atPath: binary.path) else {
            throw XCTSkip("warren-derp is not built next to the tests (\(binary.path)); run swift build first")
        }
        let h = try await makeServer(clock: ManualClock())
        defer { Task { await h.server.close() } }
        let key = try await createKey(h.store)
        let member = TestControlClient(port: h.port, seed: 51)
        try await member.connect(controlKey: h.controlKey)
        let registered = try await member.register(member.registerRequest(authKey: key, hostname: "member"))
        XCTAssertEqual(registered.error, "")
        await member.close()

        let probe = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
        let port = try XCTUnwrap(probe.localAddress?.port)
        try await probe.close()
        let state = NSTemporaryDirectory() + "wcg-derp-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: state) }
        let process = Process()
        process.executableURL = binary
        process.arguments = ["--listen", "127.0.0.1:\(port)", "--stun-port", "0", "--plain-http", "--state-dir", state,
                             "--verify-clients-url", "http://127.0.0.1:\(h.port)/verify"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer {
            if process.isRunning { kill(process.processIdentifier, SIGTERM) }
            process.waitUntilExit()
        }
        let endpoint = DERPClient.Endpoint(host: "127.0.0.1", port: port, trust: nil)
        var admitted: DERPClient?
        for _ in 0..<200 where admitted == nil {
            admitted = try? await DERPClient.connect(to: endpoint, privateKey: member.nodeKey)
            if admitted == nil { try await Task.sleep(for: .milliseconds(50)) }
        }
        let client = try XCTUnwrap(admitted, "warren-derp did not admit the registered node key")
        _ = try await client.ping()
        await client.close()
        var rng = SeededGenerator(seed: 0x5E)
        do {
            let stranger = try await DERPClient.connect(to: endpoint, privateKey: NodePrivate.generate(using: &rng))
            _ = try await stranger.ping()
            XCTFail("warren-derp admitted a node key that control does not know")
        } catch {}
    }

    static func post(_ body: String) -> String {
        "POST /verify HTTP/1.1\r\nHost: control\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n"
            + "Connection: close\r\n\r\n" + body
    }

    func testAdmitRequestDecoder() throws {
        var rng = SeededGenerator(seed: 0xAD)
        let key = NodePrivate.generate(using: &rng).publicKey
        XCTAssertEqual(DERPAdmitEndpoint.Request(json: Array(#"{"NodePublic":"\#(key)","Source":"100.64.0.1"}"#.utf8)),
                       DERPAdmitEndpoint.Request(nodePublic: key, source: "100.64.0.1"))
        XCTAssertEqual(DERPAdmitEndpoint.Request(json: Array(#"{"NodePublic":"\#(key)"}"#.utf8))?.source, "")
        XCTAssertNil(DERPAdmitEndpoint.Request(json: Array(#"{"NodePublic":"\#(key)","Source":7}"#.utf8)))
        XCTAssertNil(DERPAdmitEndpoint.Request(json: Array(#"{"Source":"1.2.3.4"}"#.utf8)))
        XCTAssertNil(DERPAdmitEndpoint.Request(json: Array("[]".utf8)))
        XCTAssertEqual(String(decoding: DERPAdmitEndpoint.responseBody(allow: false), as: UTF8.self), #"{"Allow":false}"#)
        MutationFuzzer(seeds: [Array(#"{"NodePublic":"\#(key)","Source":"192.0.2.1"}"#.utf8)], iterations: 20_000).run { bytes in
            _ = DERPAdmitEndpoint.Request(json: bytes)
        }
    }
}
