// Full maps written from shared peer entries (``CachedPeer``): the peers cut into runs by node ID, each run compressed
// once as a zstd frame of its own and reused for every viewer with the same run. The bytes must decode to exactly the
// map written out whole, compressed or not.

import Foundation
import TailscaleKeys
import WarrenPacket
import WarrenControlTransport
import WarrenTailcfg
import XCTest
@testable import WarrenControlServer

final class FullMapChunkTests: XCTestCase {
    func tailnet(_ count: Int) -> TailnetSnapshot {
        var nodes = [Int64: ControlNode]()
        for i in 1...count {
            let key = Key32(bigEndianWords: (UInt64(i), 1, 2, 3))
            var node = ControlNode(id: Int64(i), machineKey: MachinePublic(raw: key), nodeKey: NodePublic(raw: key),
                                   userID: 1, hostname: "h\(i)", givenName: "h\(i)", created: TailcfgTime(secondsSince1970: 1_700_000_000, nanoseconds: 0))
            node.endpoints = [AddrPort(address: .v4(0xC633_6400 &+ UInt32(i)), port: 41641)]
            node.authorized = true
            nodes[node.id] = node
        }
        return TailnetSnapshot(nodes: nodes, users: [1: ControlUser(id: 1, name: "alice")], online: Set(nodes.keys))
    }

    func decode(_ framed: [UInt8], compressed: Bool) throws -> MapResponse {
        var decoder = MapStreamDecoder()
        decoder.append(framed)
        guard case .message(let body) = try decoder.parseStep() else { throw FullMapEncodingError() }
        let json = compressed ? try Zstd.decompress(body, maximumSize: 64 << 20) : body
        return try TailcfgJSON.decode(MapResponse.self, from: json)
    }

    func testChunkedFullMapsDecodeToTheWholeMapAndShareTheirRuns() throws {
        let net = tailnet(700)
        let builder = NetworkMapBuilder(configuration: ControlConfiguration(serverURL: "http://127.0.0.1:1"))
        let cache = PeerCache()
        let encoder = MapMessageEncoder()
        let now = TailcfgTime(secondsSince1970: 1_760_000_000, nanoseconds: 0)
        for viewerID: Int64 in [1, 300, 699, 700, 5] {
            let viewer = try XCTUnwrap(net.nodes[viewerID])
            let (map, peers) = builder.fullMapPlan(for: viewer, in: net, now: now, omitPeers: false, cache: cache)
            let list = try XCTUnwrap(peers)
            var whole = map
            whole.peers = list.map(\.node)
            XCTAssertEqual(whole, builder.fullMap(for: viewer, in: net, now: now, omitPeers: false))
            XCTAssertEqual(list.count, 699)
            for compress in [true, false] {
                let framed = try encoder.frameFullMap(map, peers: list, compress: compress)
                XCTAssertEqual(try decode(framed, compressed: compress), whole, "viewer \(viewerID), zstd \(compress)")
                if !compress {
                    XCTAssertEqual(Array(framed.dropFirst(4)), try TailcfgJSON.write(whole), "the same bytes as the whole map")
                }
            }
        }
        // 700 nodes are chunks 0, 1 and 2 (IDs by 256). Warm, each viewer compresses only its own chunk (which lacks
        // it) and reuses the other two, also when the viewers before it were in the same chunk.
        let before = encoder.chunkCounts
        for viewerID: Int64 in [2, 3, 4, 400] {
            let (map, peers) = builder.fullMapPlan(for: net.nodes[viewerID]!, in: net, now: now, omitPeers: false, cache: cache)
            _ = try encoder.frameFullMap(map, peers: peers!, compress: true)
        }
        let after = encoder.chunkCounts
        XCTAssertEqual(after.compressed - before.compressed, 4, "one own chunk per viewer: \(before) -> \(after)")
        XCTAssertEqual(after.reused - before.reused, 8, "two shared chunks per viewer: \(before) -> \(after)")
        // The entries are shared: a second viewer's map references the same objects.
        let a = builder.fullMapPlan(for: net.nodes[1]!, in: net, now: now, omitPeers: false, cache: cache).peers!
        let b = builder.fullMapPlan(for: net.nodes[2]!, in: net, now: now, omitPeers: false, cache: cache).peers!
        XCTAssertTrue(a.last === b.last)
        // A change to a node (here: offline) makes a new entry for it, and the old one is not reused.
        var offline = net
        offline.online.remove(700)
        let c = builder.fullMapPlan(for: net.nodes[1]!, in: offline, now: now, omitPeers: false, cache: cache).peers!
        XCTAssertFalse(c.last === a.last)
        XCTAssertEqual(c.last?.node.online, false)
        let framed = try encoder.frameFullMap(MapResponse(), peers: c, compress: true)
        XCTAssertEqual(try decode(framed, compressed: true).peers?.last?.online, false, "the changed chunk was compressed again")
    }
}
