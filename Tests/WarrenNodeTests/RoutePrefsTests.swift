// `up`'s route and exit node flags against a whole node and an in-process warren-control: checked as
// Tailscale's CLI checks them (the message says why), and advertised routes reach control as RoutableIPs.

import Foundation
import WarrenLocalAPI
import WarrenNode
import WarrenPacket
import XCTest

final class RoutePrefsTests: XCTestCase {
    func testUpRefusesBadRouteAndExitNodeFlagsAndSendsAdvertisedRoutesToControl() async throws {
        let lab = try await InProcessTailnet()
        addTeardownBlock { await lab.close() }
        let key = try await lab.preAuthKey()
        let a = try await lab.makeNode("a", host: "10.5.0.1")
        _ = try await lab.up(a, authKey: key)

        func refused(_ request: UpRequest, _ expected: String, file: StaticString = #filePath, line: UInt = #line) async {
            do {
                _ = try await a.node.up(request)
                XCTFail("up accepted \(request)", file: file, line: line)
            } catch let error as LocalAPIError {
                XCTAssertEqual(error.status, 400, file: file, line: line)
                XCTAssertTrue(error.message.contains(expected), "\(error.message)", file: file, line: line)
            } catch {
                XCTFail("\(error)", file: file, line: line)
            }
        }
        let server = lab.serverURL
        await refused(UpRequest(loginServer: server, advertiseRoutes: ["10.0.0.1/24"]), "non-address bits set; expected 10.0.0.0/24")
        await refused(UpRequest(loginServer: server, advertiseRoutes: ["::/0"]), "must be advertised together")
        await refused(UpRequest(loginServer: server, advertiseRoutes: ["not-a-prefix"]), "not a valid IP prefix")
        await refused(UpRequest(loginServer: server, exitNode: "nobody"), "no node found")
        await refused(UpRequest(loginServer: server, exitNode: "auto:best"), "auto:any")
        await refused(UpRequest(loginServer: server, advertiseExitNode: true, exitNode: "auto:any"),
                      "cannot advertise an exit node and use an exit node")
        await refused(UpRequest(loginServer: server, exitNodeAllowLANAccess: true), "can only be used with --exit-node")

        // Accepted: routes and the exit node reach control (Hostinfo.RoutableIPs -> the node's advertised routes).
        _ = try await a.node.up(UpRequest(loginServer: server, advertiseRoutes: ["192.168.7.0/24"], advertiseExitNode: true))
        let expected = [IPPrefix("0.0.0.0/0")!, IPPrefix("192.168.7.0/24")!, IPPrefix("::/0")!]
        let advertised = await InProcessTailnet.eventually {
            let nodes = await lab.engine.allNodes()
            return nodes.first { $0.hostname == "a" }.map { Set($0.advertisedRoutes) == Set(expected) } ?? false
        }
        XCTAssertTrue(advertised, "control did not get the advertised routes")
        // And the router's settings say the node forwards (MemoryRouter records the whole desired state).
        XCTAssertTrue(a.router.settings.exitNode)
        XCTAssertEqual(a.router.settings.subnetRoutes, [IPPrefix("192.168.7.0/24")!])
        // An IP not (yet) in the map is kept as the exit node, as Tailscale keeps it.
        _ = try await a.node.up(UpRequest(loginServer: server, exitNode: "100.100.1.1", exitNodeAllowLANAccess: true))
        let status = await a.node.status()
        XCTAssertEqual(status.backendState, .running)
    }
}
