// The engine's own writes (endpoints, host details, last seen) do not overwrite what an admin changed in the
// store meanwhile (name, tags, approved routes), before the admin hook made the engine re-read the node.

import Foundation
import WarrenControlStore
import WarrenPacket
import WarrenTailcfg
import XCTest
@testable import WarrenControlServer

final class AdminEditRaceTests: XCTestCase {
    func testEngineWritesKeepAConcurrentAdminRenameRetagAndRouteApproval() async throws {
        var h = try await PolicyHarness(policyText: nil)
        defer { h.stop() }
        let id = try await h.join(key: try await h.preAuthKey(user: "alice@example.com"), hostname: "box",
                                  routes: [IPPrefix("10.9.0.0/24")!])
        await h.settle()
        let keys = try XCTUnwrap(h.keys[id])

        // An admin edits the node in the store; the engine has not re-read it yet.
        try await h.store.transaction { tx in
            guard var node = try tx.node(id: NodeID(id)) else { return }
            node.givenName = "renamed"
            node.tags = ["tag:web"]
            node.approvedRoutes = [IPPrefix("10.9.0.0/24")!]
            try tx.update(node)
        }
        // Meanwhile the node reports new endpoints (a lite map request), which the engine writes.
        let endpoint = AddrPort("192.0.2.7:41641")!
        var lite = MapRequest()
        lite.version = 130
        lite.nodeKey = keys.node.publicKey
        lite.stream = false
        lite.omitPeers = true
        lite.endpoints = [endpoint]
        _ = try await h.engine.map(lite, machineKey: keys.machine.publicKey)

        let read = try await h.store.read { try $0.node(id: NodeID(id)) }
        let stored = try XCTUnwrap(read)
        XCTAssertEqual(stored.endpoints, [endpoint.description], "the engine's write landed")
        XCTAssertEqual(stored.givenName, "renamed", "the admin's rename survives")
        XCTAssertEqual(stored.tags, ["tag:web"], "the admin's tags survive")
        XCTAssertEqual(stored.approvedRoutes, [IPPrefix("10.9.0.0/24")!], "the admin's route approval survives")

        // The admin hook arrives: the engine holds both the admin's edit and the node's endpoints.
        let reread = try await h.engine.reloadNode(id: id)
        let reloaded = try XCTUnwrap(reread)
        XCTAssertEqual(reloaded.givenName, "renamed")
        XCTAssertEqual(reloaded.tags, ["tag:web"])
        XCTAssertEqual(reloaded.endpoints, [endpoint])
        XCTAssertEqual(reloaded.approvedRoutes, [IPPrefix("10.9.0.0/24")!])
    }
}
