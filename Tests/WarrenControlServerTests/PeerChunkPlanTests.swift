// The engine's full-map plan from runs of shared entries (PeerChunks: a run copied whole while no record in it
// changed, no node in it came online or went offline and no key in it expired) against the map built from scratch,
// over random sequences of what happens to a tailnet: streams opening and closing, records changing, devices
// approved and unapproved, nodes deleted and added, keys expiring as time passes, subnet routers (whose entries depend
// on the viewer). The engine's own contract is kept as the engine keeps it: a record change drops the node's entry
// (PeerCache.remove), online changes go through OnlineNodes.

import Foundation
import TailscaleKeys
import WarrenPacket
import WarrenTailcfg
import WarrenTestSupport
import XCTest
@testable import WarrenControlServer

final class PeerChunkPlanTests: XCTestCase {
    struct World {
        var nodes: [Int64: ControlNode] = [:]
        var online = OnlineNodes()
        var now = TailcfgTime(secondsSince1970: 1_760_000_000, nanoseconds: 0)
        let cache = PeerCache(trustsRecords: true)

        var snapshot: TailnetSnapshot {
            TailnetSnapshot(nodes: nodes, users: [1: ControlUser(id: 1, name: "alice"), 2: ControlUser(id: 2, name: "bob")],
                            online: online.members, onlineStamps: online.stamps)
        }

        mutating func put(_ node: ControlNode) {
            let old = nodes[node.id]
            nodes[node.id] = node
            cache.remove(node.id, membership: old?.authorized != node.authorized)
        }

        mutating func delete(_ id: Int64) {
            guard nodes.removeValue(forKey: id) != nil else { return }
            cache.remove(id)
            online.remove(id)
        }
    }

    static func node(_ id: Int64, user: Int64, now: TailcfgTime) -> ControlNode {
        let key = Key32(bigEndianWords: (UInt64(id), 7, 8, 9))
        var node = ControlNode(id: id, machineKey: MachinePublic(raw: key), nodeKey: NodePublic(raw: key), userID: user,
                               hostname: "h\(id)", givenName: "h\(id)", created: now)
        node.ipv4 = .v4(0x6440_0000 &+ UInt32(id))
        node.endpoints = [AddrPort(address: .v4(0xC633_6400 &+ UInt32(id)), port: 41641)]
        node.keyExpiry = TailcfgTime(secondsSince1970: now.secondsSince1970 + 3600 * Int64(1 + id % 5), nanoseconds: 0)
        return node
    }

    func testChunkedPlanEqualsTheMapBuiltFromScratchThroughRandomChanges() throws {
        let builder = NetworkMapBuilder(configuration: ControlConfiguration(serverURL: "http://127.0.0.1:1"),
                                        policy: CompiledPolicy(policy: nil))
        var world = World()
        // IDs across several runs of 256, with gaps (deleted nodes) and a run holding a single node.
        var ids: [Int64] = Array(1...300) + Array(600...640) + [1500]
        for id in ids { world.put(Self.node(id, user: 1 + id % 2, now: world.now)) }
        var rng = SystemRandomNumberGenerator()
        let seed = UInt64.random(in: 0...UInt64.max, using: &rng)
        var random = SeededGenerator(seed: seed)
        var checked = 0, chunkedRuns = 0
        for step in 0..<400 {
            switch Int.random(in: 0..<10, using: &random) {
            case 0, 1, 2:
                let id = ids.randomElement(using: &random)!
                if world.online.contains(id) { world.online.remove(id) } else if world.nodes[id] != nil { world.online.insert(id) }
            case 3:
                guard let id = ids.randomElement(using: &random), var node = world.nodes[id] else { break }
                node.endpoints = [AddrPort(address: .v4(UInt32.random(in: 1...UInt32.max, using: &random)), port: 41641)]
                world.put(node)
            case 4:
                guard let id = ids.randomElement(using: &random), var node = world.nodes[id] else { break }
                node.authorized.toggle()
                world.put(node)
            case 5:
                guard let id = ids.randomElement(using: &random), var node = world.nodes[id] else { break }
                // A subnet router (its entry depends on the viewer), or back to a plain node.
                if node.advertisedRoutes.isEmpty {
                    var info = node.hostinfo ?? Hostinfo(HostinfoFields())
                    info.routableIPs = [IPPrefix("10.\(id % 200).0.0/16")!]
                    node.hostinfo = info
                    node.approvedRoutes = info.routableIPs ?? []
                } else {
                    node.hostinfo = nil
                    node.approvedRoutes = []
                }
                world.put(node)
            case 6:
                if Bool.random(using: &random), let id = ids.randomElement(using: &random) {
                    world.delete(id)
                } else {
                    let id = (ids.max() ?? 0) + Int64.random(in: 1...300, using: &random)
                    ids.append(id)
                    world.put(Self.node(id, user: 1 + id % 2, now: world.now))
                }
            case 7:
                // Time passes: keys expire (each node's key lasts 1 to 5 hours).
                world.now = TailcfgTime(secondsSince1970: world.now.secondsSince1970 + Int64.random(in: 60...4000, using: &random),
                                        nanoseconds: 0)
            default:
                break
            }
            // Some viewers look after each step, as streams opening would.
            for _ in 0..<2 {
                guard let viewerID = ids.randomElement(using: &random), let viewer = world.nodes[viewerID] else { continue }
                let net = world.snapshot
                let (map, peers) = builder.fullMapPlan(for: viewer, in: net, now: world.now, omitPeers: false, cache: world.cache)
                var planned = map
                planned.peers = peers?.map(\.node)
                let scratch = builder.fullMap(for: viewer, in: TailnetSnapshot(nodes: net.nodes, users: net.users, online: net.online),
                                              now: world.now, omitPeers: false, cache: PeerCache())
                if planned != scratch {
                    // The first peer that differs, not the whole maps (hundreds of peers).
                    let a = planned.peers ?? [], b = scratch.peers ?? []
                    let first = zip(a, b).first { $0 != $1 }.map { "peer \($0.0.id): \($0.0) against \($0.1)" }
                    XCTFail("seed \(seed), step \(step), viewer \(viewerID): \(a.count) peers planned, \(b.count) from scratch; "
                            + (first ?? "the maps differ outside the peers"))
                    return
                }
                checked += 1
            }
            chunkedRuns = world.cache.chunks.runs.count
        }
        XCTAssertGreaterThan(checked, 500)
        XCTAssertGreaterThan(chunkedRuns, 0, "runs were kept and reused (seed \(seed))")
    }

    func testOnlineNodesStampsTheRunOfEachChange() {
        var online = OnlineNodes()
        online.insert(5)
        let first = online.stamps[0]
        XCTAssertNotNil(first)
        online.insert(5)
        XCTAssertEqual(online.stamps[0], first, "no change, no new stamp")
        online.insert(300)
        XCTAssertEqual(online.stamps[0], first, "another run's change leaves this run's stamp")
        XCTAssertNotNil(online.stamps[1])
        online.remove(5)
        XCTAssertNotEqual(online.stamps[0], first)
        XCTAssertEqual(online.members, [300])
        XCTAssertEqual(PeerChunks.index(of: -1), -1)
        XCTAssertEqual(PeerChunks.index(of: 255), 0)
        XCTAssertEqual(PeerChunks.index(of: 256), 1)
    }
}
