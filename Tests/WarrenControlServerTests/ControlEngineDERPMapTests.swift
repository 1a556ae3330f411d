// ControlEngine.setDERPMap in process: a replaced DERP map reaches every open map stream as one message carrying only
// the DERPMap, later full maps (stream or one-shot) carry it, and putting the same map in force again sends nothing.

import Foundation
import Logging
import WarrenControlClient
import WarrenControlStore
import WarrenTailcfg
import XCTest
@testable import WarrenControlServer

final class ControlEngineDERPMapTests: XCTestCase {
    static func map(_ ids: [Int]) -> DERPMap {
        var regions: [Int: DERPRegion] = [:]
        for id in ids {
            regions[id] = DERPRegion(regionID: id, regionCode: "r\(id)", regionName: "Region \(id)",
                                     nodes: [DERPNode(name: "\(id)a", regionID: id, hostName: "derp\(id).example")])
        }
        return DERPMap(regions: regions, omitDefaultRegions: true)
    }

    func testAReplacedMapReachesEveryOpenStreamOnceAndLaterFullMaps() async throws {
        let fixture = try await InProcessEngine.start { $0.derpMap = Self.map([900]) }
        let engine = fixture.engine, key = fixture.authKey
        var outboxes: [MapSessionOutbox] = []
        let members = (1...3).map { ControlClient(port: 1, seed: UInt64($0)) }
        for c in members {
            let reply = await engine.register(c.registerRequest(authKey: key, hostname: "n\(c.discoKey.raw.hex.prefix(6))"),
                                              machineKey: c.machineKey.publicKey)
            XCTAssertEqual(reply.error, "")
            guard case .stream(let outbox) = try await engine.map(c.mapRequest(stream: true), machineKey: c.machineKey.publicKey) else {
                return XCTFail("expected a stream")
            }
            let first = await outbox.next()
            XCTAssertEqual(first?.derpMap, Self.map([900]))
            outboxes.append(outbox)
        }

        let replacement = Self.map([900, 901])
        let sent = await engine.setDERPMap(replacement)
        XCTAssertEqual(sent, 3)
        for outbox in outboxes {
            var found: MapResponse?
            for _ in 0..<20 where found == nil {
                guard let message = await outbox.next() else { break }
                if message.derpMap != nil { found = message }
            }
            let message = try XCTUnwrap(found, "the stream never got the new map")
            XCTAssertEqual(message.derpMap, replacement)
            var rest = message
            rest.derpMap = nil
            XCTAssertEqual(rest, MapResponse(), "the message carries only the DERP map")
        }
        // The same map again: nothing is sent.
        let again = await engine.setDERPMap(replacement)
        XCTAssertEqual(again, 0)
        // Full maps from now on carry it.
        guard case .single(let full?) = try await engine.map(members[0].mapRequest(stream: false),
                                                            machineKey: members[0].machineKey.publicKey) else {
            return XCTFail("expected a full map")
        }
        XCTAssertEqual(full.derpMap, replacement)
        guard case .stream(let later) = try await engine.map(members[1].mapRequest(stream: true),
                                                           machineKey: members[1].machineKey.publicKey) else {
            return XCTFail("expected a stream")
        }
        let laterFirst = await later.next()
        XCTAssertEqual(laterFirst?.derpMap, replacement)
    }
}
