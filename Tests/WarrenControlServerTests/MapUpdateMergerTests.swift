// Merging piled-up map messages: the merged messages must leave a client in exactly the state the
// messages one by one would. `ClientModel` applies a MapResponse the way Tailscale's client does
// (control/controlclient/map.go: Peers replaces all; else PeersRemoved, PeersChanged, PeersChangedPatch
// in that order, patches only to known peers, DERPRegion and Cap only when non-zero; KeepAlive messages
// are not applied).

import TailscaleKeys
import WarrenPacket
import WarrenTailcfg
import WarrenTestSupport
import XCTest
@testable import WarrenControlServer

struct ClientModel: Equatable {
    var selfNode: Node?
    var peers: [Int64: Node] = [:]
    var filter: [FilterRule]?
    var profiles: [Int64: UserProfile] = [:]
    var controlTime: TailcfgTime?
    /// How many times each peer arrived as an upsert (PeersChanged) or in a full map.
    var upserts: [Int64: Int] = [:]

    static func == (a: ClientModel, b: ClientModel) -> Bool {
        a.selfNode == b.selfNode && a.peers == b.peers && a.filter == b.filter && a.profiles == b.profiles
    }

    mutating func apply(_ m: MapResponse) {
        if let t = m.controlTime { controlTime = t }
        if m.keepAlive == true { return }
        if let n = m.node { selfNode = n }
        if let f = m.packetFilter { filter = f }
        for p in m.userProfiles ?? [] { profiles[p.id] = p }
        if let all = m.peers, !all.isEmpty {
            peers = [:]
            for n in all {
                peers[n.id] = n
                upserts[n.id, default: 0] += 1
            }
            return
        }
        for id in m.peersRemoved ?? [] { peers[id] = nil }
        for n in m.peersChanged ?? [] {
            peers[n.id] = n
            upserts[n.id, default: 0] += 1
        }
        for pc in m.peersChangedPatch ?? [] {
            guard var n = peers[pc.nodeID] else { continue }
            if let v = pc.derpRegion, v != 0 { n.homeDERP = v }
            if let v = pc.cap, v != 0 { n.cap = v }
            if let v = pc.capMap { n.capMap = v }
            if let v = pc.endpoints { n.endpoints = v }
            if let v = pc.key { n.key = v }
            if let v = pc.keySignature { n.keySignature = v }
            if let v = pc.discoKey { n.discoKey = v }
            if let v = pc.online { n.online = v }
            if let v = pc.lastSeen { n.lastSeen = v }
            if let v = pc.keyExpiry { n.keyExpiry = v }
            peers[pc.nodeID] = n
        }
    }
}

final class MapUpdateMergerTests: XCTestCase {
    func node(_ id: Int64, online: Bool = true, derp: Int = 1) -> Node {
        var n = Node()
        n.id = id
        n.stableID = "n\(id)"
        n.name = "node\(id).example."
        n.user = 1
        n.key = NodePublic(raw: Key32(bytes: [UInt8](repeating: UInt8(truncatingIfNeeded: id), count: 32))!)
        n.homeDERP = derp
        n.online = online
        return n
    }

    func patch(_ id: Int64, online: Bool? = nil, derp: Int? = nil, port: UInt16? = nil) -> PeerChange {
        var p = PeerChange(nodeID: id)
        p.online = online
        p.derpRegion = derp
        if let port { p.endpoints = [AddrPort(address: .v4(0x0A00_0001), port: port)] }
        return p
    }

    func message(changed: [Node]? = nil, removed: [Int64]? = nil, patches: [PeerChange]? = nil) -> MapResponse {
        var m = MapResponse()
        m.peersChanged = changed
        m.peersRemoved = removed
        m.peersChangedPatch = patches
        return m
    }

    func applied(_ messages: [MapResponse], to start: ClientModel) -> ClientModel {
        var model = start
        for m in messages { model.apply(m) }
        return model
    }

    func testABurstOfOnlinePatchesBecomesOneMessageSortedByPeer() {
        let burst = [5, 3, 9, 1].map { message(patches: [patch(Int64($0), online: true)]) }
        let merged = MapUpdateMerger.coalesce(burst)
        XCTAssertEqual(merged.count, 1)
        XCTAssertEqual(merged[0].peersChangedPatch?.map(\.nodeID), [1, 3, 5, 9])
        XCTAssertEqual(merged[0].peersChangedPatch?.allSatisfy { $0.online == true }, true)
        XCTAssertNil(merged[0].peersChanged)
        XCTAssertNil(merged[0].keepAlive)
    }

    func testAnUpsertSupersedesEarlierPatchesAndKeepsLaterOnes() {
        let merged = MapUpdateMerger.coalesce([
            message(patches: [patch(7, port: 1)]),
            message(changed: [node(7, derp: 2)]),
            message(patches: [patch(7, online: false)]),
        ])
        XCTAssertEqual(merged.count, 1)
        XCTAssertEqual(merged[0].peersChanged, [node(7, derp: 2)])
        XCTAssertEqual(merged[0].peersChangedPatch, [patch(7, online: false)])
    }

    func testRemovalAfterUpsertLeavesOnlyTheRemovalAndUpsertAfterRemovalOnlyTheUpsert() {
        let gone = MapUpdateMerger.coalesce([message(changed: [node(4)]), message(patches: [patch(4, port: 9)]),
                                              message(removed: [4])])
        XCTAssertEqual(gone.count, 1)
        XCTAssertEqual(gone[0].peersRemoved, [4])
        XCTAssertNil(gone[0].peersChanged)
        XCTAssertNil(gone[0].peersChangedPatch)

        let back = MapUpdateMerger.coalesce([message(removed: [4]), message(patches: [patch(4, port: 9)]),
                                              message(changed: [node(4, derp: 3)])])
        XCTAssertEqual(back.count, 1)
        XCTAssertNil(back[0].peersRemoved)
        XCTAssertEqual(back[0].peersChanged, [node(4, derp: 3)])
        XCTAssertNil(back[0].peersChangedPatch, "a patch after a removal reaches no peer")
    }

    func testPatchesForOnePeerMergeLaterFieldsWinningAndZeroRegionIgnored() {
        let merged = MapUpdateMerger.merge(patch(2, online: true, derp: 5, port: 1), patch(2, online: false, derp: 0))
        XCTAssertEqual(merged.online, false)
        XCTAssertEqual(merged.derpRegion, 5, "the client ignores a zero region, so must the merge")
        XCTAssertEqual(merged.endpoints, [AddrPort(address: .v4(0x0A00_0001), port: 1)])
    }

    func testKeepAlivesAloneStayAKeepAliveAndWithContentDisappear() {
        var k1 = MapResponse.keepAliveMessage
        k1.controlTime = TailcfgTime(secondsSince1970: 100, nanoseconds: 0)
        var k2 = MapResponse.keepAliveMessage
        k2.controlTime = TailcfgTime(secondsSince1970: 200, nanoseconds: 0)
        let alone = MapUpdateMerger.coalesce([k1, k2])
        XCTAssertEqual(alone.count, 1)
        XCTAssertEqual(alone[0].keepAlive, true)
        XCTAssertEqual(alone[0].controlTime, k2.controlTime)

        let mixed = MapUpdateMerger.coalesce([k1, message(patches: [patch(3, online: true)]), k2])
        XCTAssertEqual(mixed.count, 1)
        XCTAssertNil(mixed[0].keepAlive, "a client does not apply a message marked KeepAlive")
        XCTAssertEqual(mixed[0].peersChangedPatch, [patch(3, online: true)])
        XCTAssertEqual(mixed[0].controlTime, k2.controlTime)
    }

    func testOtherMessagesPassThroughInOrderAndSplitTheRuns() {
        var full = MapResponse()
        full.node = node(1)
        full.peers = [node(2)]
        var dns = MapResponse()
        dns.dnsConfig = DNSConfig()
        let input = [full, message(patches: [patch(2, online: false)]), message(patches: [patch(2, port: 4)]), dns,
                     message(changed: [node(3)])]
        let out = MapUpdateMerger.coalesce(input)
        XCTAssertEqual(out.count, 4)
        XCTAssertEqual(out[0], full)
        XCTAssertEqual(out[1].peersChangedPatch?.count, 1)
        XCTAssertEqual(out[2], dns)
        XCTAssertEqual(out[3], input[4], "a run of one message is sent as it came")
        XCTAssertFalse(MapUpdateMerger.canMerge(full))
        XCTAssertFalse(MapUpdateMerger.canMerge(dns))
        XCTAssertTrue(MapUpdateMerger.canMerge(input[1]))
    }

    func testPacketFilterAndSelfNodeTakeTheLatest() {
        var a = MapResponse()
        a.packetFilter = []
        a.node = node(1, derp: 1)
        var b = MapResponse()
        b.packetFilter = AllowAllPolicy.rules
        var c = MapResponse()
        c.node = node(1, derp: 4)
        let out = MapUpdateMerger.coalesce([a, b, c])
        XCTAssertEqual(out.count, 1)
        XCTAssertEqual(out[0].packetFilter, AllowAllPolicy.rules)
        XCTAssertEqual(out[0].node, node(1, derp: 4))
    }

    /// Random runs of removals, upserts and patches over a few peers: merged or one by one, the client
    /// ends in the same state.
    func testRandomRunsLeaveTheClientInTheSameState() {
        var random = SeededGenerator(seed: 0xFA_0011)
        for round in 0..<2_000 {
            var start = ClientModel()
            for id in 1...4 where Bool.random(using: &random) { start.peers[Int64(id)] = node(Int64(id)) }
            var messages = [MapResponse]()
            for _ in 0..<Int.random(in: 1...12, using: &random) {
                var m = MapResponse()
                for _ in 0..<Int.random(in: 1...3, using: &random) {
                    let id = Int64.random(in: 1...4, using: &random)
                    switch Int.random(in: 0..<10, using: &random) {
                    case 0: m.peersRemoved = (m.peersRemoved ?? []) + [id]
                    case 1, 2:
                        m.peersChanged = (m.peersChanged ?? []) + [node(id, online: Bool.random(using: &random),
                                                                        derp: Int.random(in: 1...3, using: &random))]
                    case 3:
                        m.keepAlive = true
                    case 4:
                        m.userProfiles = [UserProfile(id: id, loginName: "u\(id)", displayName: "U\(round)")]
                    default:
                        m.peersChangedPatch = (m.peersChangedPatch ?? []) + [
                            patch(id, online: Bool.random(using: &random) ? Bool.random(using: &random) : nil,
                                  derp: Int.random(in: 0...3, using: &random),
                                  port: Bool.random(using: &random) ? UInt16.random(in: 1...9, using: &random) : nil)]
                    }
                }
                // Go's client applies one message's removals, then upserts, then patches; within one message
                // the engine never names a peer in two of those lists, so neither do these.
                var seen = Set<Int64>()
                m.peersRemoved = m.peersRemoved.map { ids in ids.filter { seen.insert($0).inserted } }
                m.peersChanged = m.peersChanged.map { ns in ns.filter { seen.insert($0.id).inserted } }
                m.peersChangedPatch = m.peersChangedPatch.map { ps in ps.filter { seen.insert($0.nodeID).inserted } }
                messages.append(m)
            }
            let expected = applied(messages, to: start)
            let merged = MapUpdateMerger.coalesce(messages)
            XCTAssertLessThanOrEqual(merged.count, 1)
            XCTAssertEqual(applied(merged, to: start), expected, "round \(round): \(messages)")
        }
    }
}
