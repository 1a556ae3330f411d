// An in-process control engine with map sessions that record what they receive, for the policy tests:
// nodes register and open streams directly on the engine (no sockets), each stream's messages are folded
// into the state a client would hold (self node, peers, packet filter, SSH policy).

import Foundation
import Logging
import Synchronization
import TailscaleKeys
import WarrenControlClient
import WarrenControlStore
import WarrenPacket
import WarrenPolicy
import WarrenTailcfg
import XCTest
@testable import WarrenControlServer

/// What one map session has received, folded as a client folds it.
final class SessionRecorder: Sendable {
    struct State {
        var messages = 0
        var selfNode: WarrenTailcfg.Node?
        var peers: [Int64: WarrenTailcfg.Node] = [:]
        var filter: [FilterRule]?
        var ssh: SSHPolicy?
        var ended = false
    }

    let state = Mutex(State())

    func record(_ m: MapResponse) {
        state.withLock { s in
            s.messages += 1
            if let node = m.node { s.selfNode = node }
            if let peers = m.peers { s.peers = Dictionary(uniqueKeysWithValues: peers.map { ($0.id, $0) }) }
            for p in m.peersChanged ?? [] { s.peers[p.id] = p }
            for patch in m.peersChangedPatch ?? [] {
                if let online = patch.online { s.peers[patch.nodeID]?.online = online }
            }
            for id in m.peersRemoved ?? [] { s.peers[id] = nil }
            if let f = m.packetFilter { s.filter = f }
            if let value = m.sshPolicy, let bytes = try? TailcfgJSON.encode(value) {
                s.ssh = try? TailcfgJSON.decode(SSHPolicy.self, from: bytes)
            }
        }
    }

    var snapshot: State { state.withLock { $0 } }
}

struct PolicyHarness {
    let engine: ControlEngine
    let store: MemoryControlStore
    let policy: CompiledPolicy
    var recorders: [Int64: SessionRecorder] = [:]
    /// Each joined node's map stream (the engine's queue: what piles up is merged before it is read).
    var outboxes: [Int64: MapSessionOutbox] = [:]
    /// Each joined node's machine and node keys (to send it more requests).
    var keys: [Int64: (machine: MachinePrivate, node: NodePrivate)] = [:]
    var consumers: [Task<Void, Never>] = []
    var generator = SeededKeyGenerator(seed: 99)

    init(policyText: String?, configure: (inout ControlConfiguration) -> Void = { _ in }) async throws {
        var configuration = ControlConfiguration(serverURL: "http://127.0.0.1:1")
        configuration.baseDomain = "lab.warren"
        configuration.keepAliveInterval = .seconds(3600)
        configuration.mapUpdateInterval = .zero
        configure(&configuration)
        store = MemoryControlStore()
        let directory = try StoreDirectory(store: store, ipv4Prefix: configuration.ipv4Prefix, ipv6Prefix: configuration.ipv6Prefix)
        policy = CompiledPolicy(policy: try policyText.map { try PolicyParser.parse($0) })
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        engine = ControlEngine(configuration: configuration, directory: directory, policy: policy, logger: logger)
        try await engine.load()
    }

    func preAuthKey(user: String, tags: [String] = []) async throws -> String {
        try await store.transaction { tx in
            let owner = try tx.user(named: user) ?? tx.createUser(name: user, now: Date())
            var generator = SystemRandomNumberGenerator()
            return try tx.createPreAuthKey(userID: owner.id, options: PreAuthKeyOptions(reusable: true, tags: tags),
                                           now: Date(), generator: &generator).text
        }
    }

    /// Registers a node and opens its map stream; returns its ID.
    @discardableResult
    mutating func join(key: String, hostname: String, routes: [IPPrefix] = []) async throws -> Int64 {
        let machine = MachinePrivate.generate(using: &generator)
        let nodeKey = NodePrivate.generate(using: &generator)
        var request = RegisterRequest()
        request.version = 130
        request.nodeKey = nodeKey.publicKey
        request.auth = RegisterResponseAuth(authKey: key)
        var info = HostinfoFields()
        info.hostname = hostname
        info.os = "linux"
        if !routes.isEmpty { info.routableIPs = routes }
        request.hostinfo = Hostinfo(info)
        let response = await engine.register(request, machineKey: machine.publicKey)
        XCTAssertEqual(response.error, "")
        var map = MapRequest()
        map.version = 130
        map.nodeKey = nodeKey.publicKey
        map.stream = true
        guard case .stream(let stream) = try await engine.map(map, machineKey: machine.publicKey) else {
            throw TestClientError(description: "no stream")
        }
        let all = await engine.allNodes()
        let id = try XCTUnwrap(all.first { $0.nodeKey == nodeKey.publicKey }?.id)
        let recorder = SessionRecorder()
        recorders[id] = recorder
        outboxes[id] = stream
        keys[id] = (machine, nodeKey)
        consumers.append(Task {
            for await message in stream { recorder.record(message) }
            recorder.state.withLock { $0.ended = true }
        })
        return id
    }

    /// Waits until every message the engine queued has reached its recorder: each stream's queue is empty
    /// and its recorder has folded in every (merged) message the queue handed out.
    func settle(file: StaticString = #filePath, line: UInt = #line) async {
        // Twice in a row, a millisecond apart: a writer that has just taken the queue to merge it has not
        // counted the merged message as delivered yet, and for that instant the queue looks drained.
        var drainedBefore = false
        for _ in 0..<20_000 {
            let drained = recorders.allSatisfy { id, recorder in
                guard let outbox = outboxes[id] else { return true }
                return outbox.pendingCount == 0 && recorder.snapshot.messages >= outbox.counts.delivered
            }
            if drained && drainedBefore { return }
            drainedBefore = drained
            try? await Task.sleep(for: .milliseconds(1))
        }
        XCTFail("map messages did not arrive", file: file, line: line)
    }

    /// Changes a node in the store as the admin API does, then tells the engine (AdminWiring's hook).
    func adminUpdate(_ id: Int64, _ change: @escaping @Sendable (inout WarrenControlStore.Node) -> Void) async throws {
        try await store.transaction { tx in
            guard var node = try tx.node(id: NodeID(id)) else { return }
            change(&node)
            try tx.update(node)
        }
        _ = try await engine.reloadNode(id: id)
    }

    /// What a fresh, whole compile of the policy gives each node, by node ID.
    func freshCompile() async throws -> [Int64: NodePolicy] {
        let nodes = await engine.allNodes()
        let users = try await store.read { try $0.users() }
        let byID = Dictionary(uniqueKeysWithValues: users.map { ($0.id.rawValue, $0.name) })
        let tailnet = Tailnet(
            users: users.sorted { $0.id < $1.id }.map { TailnetUser(id: Int($0.id.rawValue), name: $0.name, email: $0.name) },
            nodes: nodes.map { n in
                TailnetNode(name: n.givenName, user: n.tags.isEmpty ? byID[n.userID] : nil, tags: n.tags, addresses: n.addresses,
                            advertisedRoutes: n.advertisedRoutes, approvedRoutes: n.approvedRoutes)
            })
        let compiled = try XCTUnwrap(policy.policy.map { PolicyEngine(policy: $0, tailnet: tailnet).compileAll() })
        var out: [Int64: NodePolicy] = [:]
        for n in nodes { out[n.id] = compiled[n.givenName] }
        return out
    }

    func stop() {
        for c in consumers { c.cancel() }
    }
}

extension ControlNode {
    /// A node "n<id>" of `user` at 100.64.0.<id> and fd7a:115c:a1e0::<id>, its keys from `seed` + id (policy tests).
    static func policyTestNode(_ id: Int64, user: Int64, seed: UInt64) -> ControlNode {
        var generator = TestGenerator(seed: UInt64(id) + seed)
        var n = ControlNode(id: id, machineKey: MachinePrivate.generate(using: &generator).publicKey,
                            nodeKey: NodePrivate.generate(using: &generator).publicKey, userID: user, hostname: "n\(id)",
                            givenName: "n\(id)", created: TailcfgTime(secondsSince1970: 1_800_000_000))
        n.ipv4 = IPAddress("100.64.0.\(id)")
        n.ipv6 = IPAddress("fd7a:115c:a1e0::\(id)")
        return n
    }
}
