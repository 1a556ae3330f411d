// The map message encoder: hand-written JSON with a cache of encoded peers, which must give exactly
// the bytes of the Codable path whatever is cached, and which the server uses for every map message.

import Foundation
import TailscaleKeys
import WarrenPacket
import WarrenTailcfg
import WarrenControlTransport
import XCTest
@testable import WarrenControlServer

/// Compares JSON as text, reporting where the first difference is (the messages are long).
func assertSameJSON(_ actual: [UInt8], _ expected: [UInt8], file: StaticString = #filePath, line: UInt = #line) {
    guard actual != expected else { return }
    let at = zip(actual, expected).prefix { $0 == $1 }.count
    func around(_ bytes: [UInt8]) -> String {
        String(decoding: bytes[max(0, at - 80)..<min(bytes.count, at + 80)], as: UTF8.self)
    }
    XCTFail("JSON differs at byte \(at) (lengths \(actual.count), \(expected.count)):\n  got      \(around(actual))\n  expected \(around(expected))",
            file: file, line: line)
}

final class MapMessageEncoderTests: XCTestCase {
    func tailnet(count: Int) -> TailnetSnapshot {
        var nodes = [Int64: ControlNode]()
        for i in 1...count {
            let id = Int64(i)
            var generator = TestGenerator(seed: UInt64(i))
            var node = ControlNode(id: id, machineKey: MachinePrivate.generate(using: &generator).publicKey,
                                   nodeKey: NodePrivate.generate(using: &generator).publicKey, userID: Int64(i % 3 + 1),
                                   hostname: "host \(i) \"quoted\"\n", givenName: "host-\(i)",
                                   created: TailcfgTime(secondsSince1970: 1_800_000_000, nanoseconds: Int32(i * 1000)))
            node.ipv4 = .v4(0x6440_0000 + UInt32(i))
            node.ipv6 = .v6(0xfd7a_115c_a1e0_0000, UInt64(i))
            node.endpoints = [AddrPort(address: .v4(0xC000_0200 + UInt32(i)), port: 41641)]
            node.homeDERP = i % 2 == 0 ? 900 : 0
            node.capabilityVersion = 130
            var info = HostinfoFields()
            info.hostname = "host-\(i) ✓"
            info.os = "linux"
            node.hostinfo = Hostinfo(info, unknownFields: i % 5 == 0 ? ["FutureThing": .array([.number(1.5)])] : [:])
            node.tags = i % 4 == 0 ? ["tag:server"] : []
            node.lastSeen = TailcfgTime(secondsSince1970: 1_800_000_100)
            nodes[id] = node
        }
        let users = Dictionary(uniqueKeysWithValues: (1...3).map { (Int64($0), ControlUser(id: Int64($0), name: "user\($0)")) })
        return TailnetSnapshot(nodes: nodes, users: users, online: Set(nodes.keys.filter { $0 % 3 != 0 }))
    }

    let builder = NetworkMapBuilder(configuration: ControlConfiguration(serverURL: "http://127.0.0.1"))
    let now = TailcfgTime(secondsSince1970: 1_900_000_000, nanoseconds: 5)

    func testCachedPeersGiveTheBytesOfTheCodablePath() throws {
        var net = tailnet(count: 40)
        let encoder = MapMessageEncoder()
        let map1 = builder.fullMap(for: net.nodes[1]!, in: net, now: now, omitPeers: false)
        assertSameJSON(try encoder.encode(map1), try TailcfgJSON.encode(map1))
        XCTAssertEqual(encoder.statistics.peerMisses, 39)
        XCTAssertEqual(encoder.statistics.peerHits, 0)

        // Another viewer: every peer but node 1 (new to the cache) comes from the cache.
        let map2 = builder.fullMap(for: net.nodes[2]!, in: net, now: now, omitPeers: false)
        assertSameJSON(try encoder.encode(map2), try TailcfgJSON.encode(map2))
        XCTAssertEqual(encoder.statistics.peerHits, 38)
        XCTAssertEqual(encoder.statistics.peerMisses, 40)

        // Changes to peers (online, host details, key) are never served from the cache.
        net.online.remove(4)
        net.nodes[5]!.hostinfo?.hostname = "renamed"
        var generator = TestGenerator(seed: 999)
        net.nodes[6]!.nodeKey = NodePrivate.generate(using: &generator).publicKey
        let map3 = builder.fullMap(for: net.nodes[2]!, in: net, now: now, omitPeers: false)
        let bytes3 = try encoder.encode(map3)
        assertSameJSON(bytes3, try TailcfgJSON.encode(map3))
        XCTAssertEqual(encoder.statistics.peerMisses, 43)
        let decoded = try TailcfgJSON.decode(MapResponse.self, from: bytes3)
        XCTAssertEqual(decoded.peers?.first { $0.id == 4 }?.online, false)
        XCTAssertEqual(decoded.peers?.first { $0.id == 5 }?.hostinfo?.hostname, "renamed")
        XCTAssertEqual(decoded.peers?.first { $0.id == 6 }?.key, net.nodes[6]!.nodeKey)
        XCTAssertEqual(decoded, map3)
        XCTAssertEqual(encoder.statistics.messages, 3)
    }

    func testIncrementalMessagesUseTheCacheToo() throws {
        let net = tailnet(count: 10)
        let encoder = MapMessageEncoder()
        var message = MapResponse()
        message.peersChanged = [builder.wireNode(net.nodes[3]!, in: net, now: now)]
        message.userProfiles = builder.userProfiles(for: [3], in: net)
        // The same change goes to many viewers: encoded once.
        for _ in 0..<5 { assertSameJSON(try encoder.encode(message), try TailcfgJSON.encode(message)) }
        XCTAssertEqual(encoder.statistics.peerMisses, 1)
        XCTAssertEqual(encoder.statistics.peerHits, 4)
        // Messages without peers go through the writer as well.
        var patch = MapResponse()
        patch.peersChangedPatch = [PeerChange(nodeID: 3)]
        patch.controlTime = now
        assertSameJSON(try encoder.encode(patch), try TailcfgJSON.encode(patch))
        XCTAssertEqual(try encoder.encode(.keepAliveMessage), Array(#"{"KeepAlive":true}"#.utf8))
        XCTAssertEqual(encoder.statistics.messages, 7)
    }

    func testASmallCacheStaysCorrectAndBounded() throws {
        let net = tailnet(count: 30)
        let encoder = MapMessageEncoder(capacity: 8)
        for viewer in [1, 2, 3, 1, 30, 2] as [Int64] {
            let map = builder.fullMap(for: net.nodes[viewer]!, in: net, now: now, omitPeers: false)
            assertSameJSON(try encoder.encode(map), try TailcfgJSON.encode(map))
            XCTAssertLessThanOrEqual(encoder.cachedPeerCount, 16)
        }
        encoder.removeAll()
        XCTAssertEqual(encoder.cachedPeerCount, 0)
    }

    func testConcurrentStreamsShareTheCacheSafely() async throws {
        let net = tailnet(count: 60)
        let encoder = MapMessageEncoder()
        let builder = builder
        let now = now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for viewer in 1...12 {
                group.addTask {
                    for round in 0..<3 {
                        var map = builder.fullMap(for: net.nodes[Int64(viewer)]!, in: net, now: now, omitPeers: false)
                        if round == 1, var first = map.peers?.first {
                            first.online = !(first.online ?? false)
                            map.peers?[0] = first
                        }
                        let bytes = try encoder.encode(map)
                        guard bytes == (try TailcfgJSON.encode(map)) else {
                            throw TestClientError(description: "viewer \(viewer) round \(round): bytes differ")
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        XCTAssertEqual(encoder.statistics.messages, 36)
        XCTAssertEqual(encoder.statistics.peerHits + encoder.statistics.peerMisses, 36 * 59)
    }

    func testFramingUsesTheWriter() throws {
        let net = tailnet(count: 5)
        let map = builder.fullMap(for: net.nodes[1]!, in: net, now: now, omitPeers: false)
        let encoder = MapMessageEncoder()
        for compress in [false, true] {
            let framed = try MapStreamFraming.frame(map, compress: compress, encoder: encoder)
            var decoder = MapStreamDecoder()
            decoder.append(framed)
            guard case .message(let body) = try decoder.parseStep() else { return XCTFail("no message") }
            let json = compress ? try Zstd.decompress(body, maximumSize: 1 << 20) : body
            assertSameJSON(json, try TailcfgJSON.encode(map))
        }
        XCTAssertEqual(encoder.statistics.messages, 2)
        XCTAssertEqual(try MapStreamFraming.frame(map, compress: false), try MapStreamFraming.frame(map, compress: false, encoder: encoder))
    }
}

extension ControlServerLoopbackTests {
    /// Three nodes join one after another; each streams (with and without zstd). Every message the
    /// clients decode was written by the engine's map encoder, and the same PeersChanged sent to two
    /// viewers is encoded once.
    func testEveryStreamedMapMessageGoesThroughTheMapEncoder() async throws {
        let h = try await makeServer()
        defer { Task { await h.server.close() } }
        let key = try await createKey(h.store)
        var clients = [TestControlClient]()
        var iterators = [AsyncThrowingStream<MapResponse, Error>.AsyncIterator]()
        var received = 0
        for seed in 41...43 {
            let client = TestControlClient(port: h.port, seed: UInt64(seed))
            try await client.connect(controlKey: h.controlKey)
            let registered = try await client.register(client.registerRequest(authKey: key, hostname: "node-\(seed)"))
            XCTAssertEqual(registered.error, "")
            // The earlier streams learn about the newcomer.
            for i in iterators.indices {
                let joined = try await next(&iterators[i])
                XCTAssertEqual(joined.peersChanged?.first?.key, client.nodeKey.publicKey)
                received += 1
            }
            let (status, messages) = try await client.map(client.mapRequest(stream: true, compress: seed != 42))
            XCTAssertEqual(status, 200)
            var iterator = messages.makeAsyncIterator()
            let first = try await next(&iterator)
            received += 1
            XCTAssertEqual(Set(first.peers?.map(\.key) ?? []), Set(clients.map(\.nodeKey.publicKey)))
            // ... and see it come online.
            for i in iterators.indices {
                let online = try await next(&iterators[i])
                XCTAssertEqual(online.peersChangedPatch?.first?.online, true)
                received += 1
            }
            clients.append(client)
            iterators.append(iterator)
        }
        XCTAssertEqual(received, 9)
        let statistics = h.engine.mapEncoder.statistics
        XCTAssertGreaterThanOrEqual(statistics.messages, received)
        XCTAssertGreaterThanOrEqual(statistics.peerHits, 1, "the PeersChanged for node 3 went to two viewers")
        for client in clients { await client.close() }
    }
}
