// Issue 14, engine side: pending interactive logins are bounded and expire, a pre-auth key is spent in the
// same transaction that creates the node (and a repeated request gets its node back), client-supplied host
// details are bounded and unknown ones never reach peers, errors sent to clients carry no internal details,
// and one node cannot hold unlimited map streams. In-process, on the engine, with an injected clock.

import Foundation
import Logging
import Synchronization
import TailscaleKeys
import WarrenControlClient
import WarrenControlStore
import WarrenPacket
import WarrenTailcfg
import WarrenTestSupport
import XCTest
@testable import WarrenControlServer

/// A store that counts reads and can be told to fail every write with an error naming a database path.
final class ProbeStore: ControlStore, @unchecked Sendable {
    let inner = MemoryControlStore()
    let reads = Atomic<Int>(0)
    let failWrites = Atomic<Bool>(false)

    func read<T: Sendable>(_ body: @escaping @Sendable (any StoreReading) throws -> T) async throws -> T {
        reads.add(1, ordering: .relaxed)
        return try await inner.read(body)
    }

    func transaction<T: Sendable>(_ body: @escaping @Sendable (any StoreTransaction) throws -> T) async throws -> T {
        if failWrites.load(ordering: .relaxed) {
            throw StoreError(.io, "disk I/O error (database or disk is full) at /var/lib/warren-secret/warren.sqlite")
        }
        return try await inner.transaction(body)
    }
}

extension ControlEngine {
    func openStreamCount(of id: Int64) -> Int { sessions[id]?.count ?? 0 }
}

final class HardeningEngineTests: XCTestCase {
    struct Rig {
        let engine: ControlEngine
        let store: any ControlStore
        let clock: ManualClock
        var generator = SeededKeyGenerator(seed: 1414)
    }

    func makeRig(store: any ControlStore = MemoryControlStore(), ipv4Prefix: IPPrefix? = nil,
                 configure: (inout ControlConfiguration) -> Void = { _ in }) async throws -> Rig {
        var configuration = ControlConfiguration(serverURL: "http://127.0.0.1:1")
        configuration.keepAliveInterval = .seconds(3600)
        configuration.mapUpdateInterval = .zero
        configuration.interactiveLoginWait = .seconds(30)
        if let ipv4Prefix { configuration.ipv4Prefix = ipv4Prefix }
        configure(&configuration)
        let directory = try StoreDirectory(store: store, ipv4Prefix: configuration.ipv4Prefix, ipv6Prefix: configuration.ipv6Prefix)
        var logger = Logger(label: "hardening")
        logger.logLevel = .critical
        let clock = ManualClock()
        let engine = ControlEngine(configuration: configuration, directory: directory, logger: logger, now: clock.reader)
        try await engine.load()
        return Rig(engine: engine, store: store, clock: clock)
    }

    func preAuthKey(_ store: any ControlStore, reusable: Bool) async throws -> (text: String, id: PreAuthKeyID) {
        try await store.transaction { tx in
            let owner = try tx.user(named: "alice") ?? tx.createUser(name: "alice", now: Date())
            var generator = SystemRandomNumberGenerator()
            let made = try tx.createPreAuthKey(userID: owner.id, options: PreAuthKeyOptions(reusable: reusable), now: Date(),
                                               generator: &generator)
            return (made.text, made.key.id)
        }
    }

    func request(_ nodeKey: NodePrivate, key: String? = nil, hostinfo: Hostinfo? = nil) -> RegisterRequest {
        var request = RegisterRequest()
        request.version = 130
        request.nodeKey = nodeKey.publicKey
        if let key { request.auth = RegisterResponseAuth(authKey: key) }
        var info = HostinfoFields()
        info.hostname = "box"
        request.hostinfo = hostinfo ?? Hostinfo(info)
        return request
    }

    // MARK: 2. Pending logins

    func testPendingLoginsExpireAfterFifteenMinutes() async throws {
        var rig = try await makeRig()
        let first = await rig.engine.register(request(NodePrivate.generate(using: &rig.generator)),
                                              machineKey: MachinePrivate.generate(using: &rig.generator).publicKey)
        XCTAssertFalse(first.authURL.isEmpty)
        rig.clock.advance(.seconds(16 * 60))
        let second = await rig.engine.register(request(NodePrivate.generate(using: &rig.generator)),
                                               machineKey: MachinePrivate.generate(using: &rig.generator).publicKey)
        XCTAssertFalse(second.authURL.isEmpty)
        let live = await rig.engine.pendingLoginIDs()
        XCTAssertEqual(live.count, 1, "the 16-minute-old login is gone")
        let stored = try await rig.store.read { try $0.pendingRegistrations() }
        XCTAssertEqual(stored.count, 1, "and its database row too")
        XCTAssertEqual(stored.first.map { second.authURL.hasSuffix("/" + $0.id) }, true)
    }

    func testPendingLoginsAreCappedInAll() async throws {
        var rig = try await makeRig()
        var refused: RegisterResponse?
        for _ in 0..<1_100 {
            let response = await rig.engine.register(request(NodePrivate.generate(using: &rig.generator)),
                                                     machineKey: MachinePrivate.generate(using: &rig.generator).publicKey)
            if !response.error.isEmpty {
                refused = response
                break
            }
        }
        let live = await rig.engine.pendingLoginIDs()
        XCTAssertLessThanOrEqual(live.count, 1_000)
        XCTAssertTrue(refused?.error.contains("too many interactive logins") == true, "\(refused?.error ?? "never refused")")
    }

    func testTheSameMachineAskingAgainGetsItsLoginNotANewOne() async throws {
        var rig = try await makeRig()
        let machine = MachinePrivate.generate(using: &rig.generator)
        let node = NodePrivate.generate(using: &rig.generator)
        let a = await rig.engine.register(request(node), machineKey: machine.publicKey)
        let b = await rig.engine.register(request(node), machineKey: machine.publicKey)
        XCTAssertEqual(a.authURL, b.authURL)
        let live = await rig.engine.pendingLoginIDs()
        XCTAssertEqual(live.count, 1)
    }

    /// A Followup long poll does not read the database over and over while it waits; an approval wakes it.
    func testFollowupWaitsWithoutPollingAndWakesOnApproval() async throws {
        let store = ProbeStore()
        var rig = try await makeRig(store: store)
        let machine = MachinePrivate.generate(using: &rig.generator)
        let node = NodePrivate.generate(using: &rig.generator)
        let started = await rig.engine.register(request(node), machineKey: machine.publicKey)
        var followup = request(node)
        followup.followup = started.authURL
        let engine = rig.engine
        let waiting = Task { await engine.register(followup, machineKey: machine.publicKey) }
        // Let the poll settle into its wait, then count the reads it makes over a while.
        try await Task.sleep(for: .milliseconds(300))
        let before = store.reads.load(ordering: .relaxed)
        try await Task.sleep(for: .milliseconds(1_600))
        XCTAssertEqual(store.reads.load(ordering: .relaxed) - before, 0, "the waiting poll read the database")
        let user = try await store.transaction { try $0.createUser(name: "bob", now: Date()) }
        let pendingIDs = await engine.pendingLoginIDs()
        let id = try XCTUnwrap(pendingIDs.first)
        _ = try await engine.approveInteractiveLogin(id: id, userID: user.id.rawValue)
        let reply = await waiting.value
        XCTAssertEqual(reply.error, "")
        XCTAssertEqual(reply.authURL, "")
    }

    // MARK: 3. One-off keys

    func testAOneOffKeyIsNotSpentWhenTheNodeCannotBeCreated() async throws {
        // A /30 has two addresses: the third registration fails (pool exhausted) after the key was checked.
        var rig = try await makeRig(ipv4Prefix: IPPrefix("100.64.0.0/30")!)
        let reusable = try await preAuthKey(rig.store, reusable: true)
        for _ in 0..<2 {
            let r = await rig.engine.register(request(NodePrivate.generate(using: &rig.generator), key: reusable.text),
                                              machineKey: MachinePrivate.generate(using: &rig.generator).publicKey)
            XCTAssertEqual(r.error, "")
        }
        let oneOff = try await preAuthKey(rig.store, reusable: false)
        let failed = await rig.engine.register(request(NodePrivate.generate(using: &rig.generator), key: oneOff.text),
                                               machineKey: MachinePrivate.generate(using: &rig.generator).publicKey)
        XCTAssertNotEqual(failed.error, "")
        let key = try await rig.store.read { try $0.preAuthKey(id: oneOff.id) }
        XCTAssertEqual(key?.used, false, "the key was spent although no node was created")
        XCTAssertEqual(key?.useCount, 0)
    }

    func testARepeatedRegistrationWithASpentOneOffKeyGetsItsNodeBack() async throws {
        var rig = try await makeRig()
        let oneOff = try await preAuthKey(rig.store, reusable: false)
        let machine = MachinePrivate.generate(using: &rig.generator)
        let node = NodePrivate.generate(using: &rig.generator)
        let first = await rig.engine.register(request(node, key: oneOff.text), machineKey: machine.publicKey)
        XCTAssertEqual(first.error, "")
        // The reply was lost; the client sends the same request again.
        let again = await rig.engine.register(request(node, key: oneOff.text), machineKey: machine.publicKey)
        XCTAssertEqual(again.error, "")
        XCTAssertEqual(again.machineAuthorized, true)
        let nodes = await rig.engine.allNodes()
        XCTAssertEqual(nodes.count, 1)
        // Another machine, or another node key, still cannot use it.
        let other = await rig.engine.register(request(NodePrivate.generate(using: &rig.generator), key: oneOff.text),
                                              machineKey: MachinePrivate.generate(using: &rig.generator).publicKey)
        XCTAssertTrue(other.error.contains("already been used"), other.error)
        let sameMachineNewKey = await rig.engine.register(request(NodePrivate.generate(using: &rig.generator), key: oneOff.text),
                                                          machineKey: machine.publicKey)
        XCTAssertTrue(sameMachineNewKey.error.contains("already been used"), sameMachineNewKey.error)
    }

    // MARK: 10. auth_key_id

    func testTheKeyThatRegisteredANodeIsRecorded() async throws {
        var rig = try await makeRig()
        let key = try await preAuthKey(rig.store, reusable: true)
        let machine = MachinePrivate.generate(using: &rig.generator)
        let r = await rig.engine.register(request(NodePrivate.generate(using: &rig.generator), key: key.text), machineKey: machine.publicKey)
        XCTAssertEqual(r.error, "")
        let stored = try await rig.store.read { try $0.node(machineKey: machine.publicKey) }
        XCTAssertEqual(stored?.authKeyID, key.id)
        XCTAssertEqual(stored?.registerMethod, .authKey)
    }

    // MARK: 4. Client-supplied fields

    func hostinfo(routes: Int = 0, unknown: [String: JSONValue] = [:], hostname: String = "box", services: Int = 0) -> Hostinfo {
        var info = HostinfoFields()
        info.hostname = hostname
        info.os = "linux"
        if routes > 0 {
            info.routableIPs = (0..<routes).map { IPPrefix("10.\($0 / 256 % 256).\($0 % 256).0/24")! }
        }
        if services > 0 { info.services = (0..<services).map { HostService(proto: "tcp", port: UInt16($0 % 65_000 + 1)) } }
        return Hostinfo(info, unknownFields: unknown)
    }

    func testOversizedHostinfoIsRefusedAtRegistrationAndInMapRequests() async throws {
        var rig = try await makeRig()
        let key = try await preAuthKey(rig.store, reusable: true)
        let huge: [(String, Hostinfo)] = [
            ("RoutableIPs", hostinfo(routes: 5_000)),
            ("Services", hostinfo(services: 2_000)),
            ("Hostname", hostinfo(hostname: String(repeating: "h", count: 5_000))),
        ]
        for (field, info) in huge {
            let r = await rig.engine.register(request(NodePrivate.generate(using: &rig.generator), key: key.text, hostinfo: info),
                                              machineKey: MachinePrivate.generate(using: &rig.generator).publicKey)
            XCTAssertTrue(r.error.contains(field), "\(field): \(r.error)")
        }
        let none = await rig.engine.allNodes()
        XCTAssertTrue(none.isEmpty)

        // A registered node cannot grow its Hostinfo or endpoints past the bounds through map requests either.
        let machine = MachinePrivate.generate(using: &rig.generator)
        let node = NodePrivate.generate(using: &rig.generator)
        let ok = await rig.engine.register(request(node, key: key.text), machineKey: machine.publicKey)
        XCTAssertEqual(ok.error, "")
        var map = MapRequest()
        map.version = 130
        map.nodeKey = node.publicKey
        map.stream = false
        map.omitPeers = true
        map.hostinfo = hostinfo(routes: 5_000)
        do {
            _ = try await rig.engine.map(map, machineKey: machine.publicKey)
            XCTFail("a 5,000-route Hostinfo was accepted")
        } catch let refusal as MapRefusal {
            XCTAssertEqual(refusal.status, 400)
            XCTAssertTrue(refusal.description.contains("RoutableIPs"), refusal.description)
        }
        map.hostinfo = nil
        map.endpoints = (0..<2_000).map { AddrPort(address: IPAddress("192.0.2.1")!, port: UInt16($0 + 1)) }
        do {
            _ = try await rig.engine.map(map, machineKey: machine.publicKey)
            XCTFail("2,000 endpoints were accepted")
        } catch let refusal as MapRefusal {
            XCTAssertEqual(refusal.status, 400)
            XCTAssertTrue(refusal.description.contains("Endpoints"), refusal.description)
        }
        let stored = await rig.engine.allNodes().first
        XCTAssertEqual(stored?.advertisedRoutes.count, 0)
        XCTAssertEqual(stored?.endpoints.count, 0)
    }

    func testUnknownHostinfoFieldsNeverReachPeers() async throws {
        var rig = try await makeRig()
        let key = try await preAuthKey(rig.store, reusable: true)
        let evilMachine = MachinePrivate.generate(using: &rig.generator)
        let evil = NodePrivate.generate(using: &rig.generator)
        let r = await rig.engine.register(
            request(evil, key: key.text, hostinfo: hostinfo(unknown: ["FutureField": .string(String(repeating: "x", count: 4_000))])),
            machineKey: evilMachine.publicKey)
        XCTAssertEqual(r.error, "")
        // Through a map request too.
        var lite = MapRequest()
        lite.version = 130
        lite.nodeKey = evil.publicKey
        lite.stream = false
        lite.omitPeers = true
        lite.hostinfo = hostinfo(unknown: ["OtherFuture": .string("y")])
        _ = try await rig.engine.map(lite, machineKey: evilMachine.publicKey)

        let viewerMachine = MachinePrivate.generate(using: &rig.generator)
        let viewer = NodePrivate.generate(using: &rig.generator)
        _ = await rig.engine.register(request(viewer, key: key.text), machineKey: viewerMachine.publicKey)
        var map = MapRequest()
        map.version = 130
        map.nodeKey = viewer.publicKey
        map.stream = false
        guard case .single(let response?) = try await rig.engine.map(map, machineKey: viewerMachine.publicKey) else {
            return XCTFail("no map")
        }
        let peer = try XCTUnwrap(response.peers?.first)
        XCTAssertEqual(peer.hostinfo?.unknownFields.isEmpty ?? true, true)
        let encoded = String(decoding: try TailcfgJSON.encode(response), as: UTF8.self)
        XCTAssertFalse(encoded.contains("FutureField"))
        XCTAssertFalse(encoded.contains("OtherFuture"))
    }

    // MARK: 10. Errors to clients

    func testErrorsSentToClientsCarryNoInternalPaths() async throws {
        let store = ProbeStore()
        var rig = try await makeRig(store: store)
        let key = try await preAuthKey(store, reusable: true)
        let machine = MachinePrivate.generate(using: &rig.generator)
        let node = NodePrivate.generate(using: &rig.generator)
        let ok = await rig.engine.register(request(node, key: key.text), machineKey: machine.publicKey)
        XCTAssertEqual(ok.error, "")
        store.failWrites.store(true, ordering: .relaxed)
        let failed = await rig.engine.register(request(NodePrivate.generate(using: &rig.generator), key: key.text),
                                               machineKey: MachinePrivate.generate(using: &rig.generator).publicKey)
        XCTAssertFalse(failed.error.isEmpty)
        XCTAssertFalse(failed.error.contains("/var/lib"), failed.error)
        XCTAssertFalse(failed.error.contains("sqlite"), failed.error)
        var map = MapRequest()
        map.version = 130
        map.nodeKey = node.publicKey
        map.stream = false
        map.omitPeers = true
        map.endpoints = [AddrPort("192.0.2.9:41641")!]
        do {
            _ = try await rig.engine.map(map, machineKey: machine.publicKey)
            XCTFail("the failed write went unnoticed")
        } catch {
            let refusal = try XCTUnwrap(error as? MapRefusal, "\(error)")
            XCTAssertEqual(refusal.status, 500)
            XCTAssertFalse(refusal.description.contains("/var/lib"), refusal.description)
        }
    }

    // MARK: 10. Map streams per node

    func testOneNodeCannotHoldUnlimitedMapStreams() async throws {
        var rig = try await makeRig()
        let key = try await preAuthKey(rig.store, reusable: true)
        let machine = MachinePrivate.generate(using: &rig.generator)
        let node = NodePrivate.generate(using: &rig.generator)
        _ = await rig.engine.register(request(node, key: key.text), machineKey: machine.publicKey)
        var map = MapRequest()
        map.version = 130
        map.nodeKey = node.publicKey
        map.stream = true
        var outboxes: [MapSessionOutbox] = []
        for _ in 0..<10 {
            guard case .stream(let outbox) = try await rig.engine.map(map, machineKey: machine.publicKey) else { return XCTFail() }
            outboxes.append(outbox)
        }
        let all = await rig.engine.allNodes()
        let id = try XCTUnwrap(all.first?.id)
        let open = await rig.engine.openStreamCount(of: id)
        XCTAssertLessThanOrEqual(open, 4)
        XCTAssertGreaterThanOrEqual(open, 1)
        guard open <= 4 else {
            for outbox in outboxes { outbox.finish() }
            return
        }
        // The oldest were closed: their streams end; the newest is served.
        var ended = 0
        for outbox in outboxes.prefix(6) {
            var iterator = outbox.makeAsyncIterator()
            while await iterator.next() != nil {}
            ended += 1
        }
        XCTAssertEqual(ended, 6)
        let online = await rig.engine.isOnline(id)
        XCTAssertTrue(online)
        for outbox in outboxes { outbox.finish() }
    }
}
