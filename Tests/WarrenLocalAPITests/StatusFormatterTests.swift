import Foundation
import WarrenLocalAPI
import XCTest

final class StatusFormatterTests: XCTestCase {
    func testStatusTable() async {
        let status = await FakeBackend().status()
        let table = StatusFormatter.statusTable(status)
        XCTAssertEqual(table, """
            100.64.0.1   laptop  alice@          linux    -
            100.64.0.2   alpha   alice@          linux    active; direct 203.0.113.7:41641, tx 1234 rx 5678
            100.64.0.3   beta    bob@            macOS    active; relay "nyc", tx 20 rx 10
            100.64.0.4   db      tagged-devices  linux    -
            100.64.0.10  gamma   bob@            windows  offline

            """)
        let peersOnly = StatusFormatter.statusTable(status, options: .init(showSelf: false, activeOnly: true))
        XCTAssertEqual(peersOnly.split(separator: "\n").count, 2)
        XCTAssertFalse(peersOnly.contains("laptop"))
    }

    func testPeerStates() {
        var peer = PeerStatus(online: true)
        XCTAssertEqual(StatusFormatter.state(peer), "-")
        peer.rxBytes = 5
        XCTAssertEqual(StatusFormatter.state(peer), "idle, tx 0 rx 5")
        peer.online = false
        XCTAssertEqual(StatusFormatter.state(peer), "offline, tx 0 rx 5")
        peer = PeerStatus(relay: "fra", online: true, exitNodeOption: true, active: true)
        XCTAssertEqual(StatusFormatter.state(peer), "active; offers exit node; relay \"fra\"")
        peer.peerRelay = "192.0.2.1:7777:vni:3"
        XCTAssertEqual(StatusFormatter.state(peer), "active; offers exit node; peer-relay 192.0.2.1:7777:vni:3")
    }

    func testNotRunningMessages() {
        XCTAssertNil(StatusFormatter.notRunningMessage(IPNStatus(backendState: .running)))
        XCTAssertEqual(StatusFormatter.notRunningMessage(IPNStatus(backendState: .stopped)), "Warren is stopped.")
        XCTAssertEqual(StatusFormatter.notRunningMessage(IPNStatus(backendState: .needsLogin, authURL: "https://x/a/1")),
                       "Logged out.\nLog in at: https://x/a/1")
    }

    func testHealthWarnings() {
        let status = IPNStatus(backendState: .running, selfStatus: PeerStatus(hostName: "h", tailscaleIPs: ["100.64.0.1"]),
                               health: ["no DERP connection"])
        XCTAssertEqual(StatusFormatter.statusTable(status), "100.64.0.1  \"h\"  -  -  -\n\n# Health check:\n#     - no DERP connection\n")
    }

    func testIPLinesAndPeerLookup() async {
        let addresses = ["100.64.0.1", "fd7a:115c:a1e0::1"]
        XCTAssertEqual(StatusFormatter.ipLines(addresses, family: .all), "100.64.0.1\nfd7a:115c:a1e0::1\n")
        XCTAssertEqual(StatusFormatter.ipLines(addresses, family: .v4), "100.64.0.1\n")
        XCTAssertEqual(StatusFormatter.ipLines(addresses, family: .v6), "fd7a:115c:a1e0::1\n")
        XCTAssertEqual(StatusFormatter.ipLines(addresses.reversed(), family: .first), "100.64.0.1\n")
        let status = await FakeBackend().status()
        XCTAssertEqual(StatusFormatter.findNode("alpha", in: status)?.id, "nALPHA")
        XCTAssertEqual(StatusFormatter.findNode("ALPHA.example.ts.net", in: status)?.id, "nALPHA")
        XCTAssertEqual(StatusFormatter.findNode("alpha-host", in: status)?.id, "nALPHA")
        XCTAssertEqual(StatusFormatter.findNode("fd7a:115c:a1e0:0::2", in: status)?.id, "nALPHA")
        XCTAssertEqual(StatusFormatter.findNode("laptop", in: status)?.id, "nSELF")
        XCTAssertNil(StatusFormatter.findNode("nobody", in: status))
    }

    func testPingLines() {
        XCTAssertEqual(StatusFormatter.pingLine(PingResult(ip: "100.64.0.2", nodeIP: "100.64.0.2", nodeName: "alpha",
                                                           latencySeconds: 0.0123, endpoint: "203.0.113.7:41641")),
                       "pong from alpha (100.64.0.2) via 203.0.113.7:41641 in 12ms")
        XCTAssertEqual(StatusFormatter.pingLine(PingResult(ip: "100.64.0.3", nodeName: "beta", latencySeconds: 0.0804,
                                                           derpRegionID: 2, derpRegionCode: "nyc")),
                       "pong from beta (100.64.0.3) via DERP(nyc) in 80ms")
        XCTAssertEqual(StatusFormatter.pingLine(PingResult(ip: "100.64.0.3", nodeName: "beta", latencySeconds: 0.003), type: .tsmp),
                       "pong from beta (100.64.0.3) via TSMP in 3ms")
        XCTAssertEqual(StatusFormatter.pingLine(PingResult(ip: "100.64.0.1", isLocalIP: true)), "100.64.0.1 is local Tailscale IP")
        XCTAssertEqual(StatusFormatter.duration(0), "0s")
        XCTAssertEqual(StatusFormatter.duration(1.5), "1.5s")
        XCTAssertEqual(StatusFormatter.duration(123.25), "2m3.25s")
    }

    func testNetcheckAndWhoisText() async throws {
        let backend = FakeBackend()
        let text = StatusFormatter.netcheckReport(try await backend.netcheck())
        XCTAssertTrue(text.contains("\t* UDP: true\n"))
        XCTAssertTrue(text.contains("\t* IPv4: yes, 198.51.100.4:55555\n"))
        XCTAssertTrue(text.contains("\t* Nearest DERP: fra\n"))
        XCTAssertTrue(text.contains("\t\t- fra: 12.3ms\n\t\t- nyc: 80.1ms\n"))
        let whois = StatusFormatter.whois(try await backend.whois("100.64.0.2")!)
        XCTAssertTrue(whois.contains("  Name:          alpha.example.ts.net\n"))
        XCTAssertTrue(whois.contains("  Name:     alice@example.com\n"))
    }

    func testGoTime() throws {
        XCTAssertEqual(GoTime.format(.goZero), "0001-01-01T00:00:00Z")
        XCTAssertEqual(GoTime.format(Date(timeIntervalSince1970: 0)), "1970-01-01T00:00:00Z")
        XCTAssertEqual(GoTime.format(Date(timeIntervalSince1970: 951_782_400.25)), "2000-02-29T00:00:00.25Z")
        XCTAssertEqual(GoTime.parse("0001-01-01T00:00:00Z"), .goZero)
        XCTAssertEqual(GoTime.parse("2000-02-29T02:00:00+02:00"), Date(timeIntervalSince1970: 951_782_400))
        XCTAssertEqual(GoTime.parse("2024-05-01T10:20:30.5Z").map(GoTime.format), "2024-05-01T10:20:30.5Z")
        for bad in ["", "2024-05-01", "2024-13-01T00:00:00Z", "2024-05-01T10:20:30", "2024-05-01T10:20:30.Z", "x024-05-01T10:20:30Z"] {
            XCTAssertNil(GoTime.parse(bad), bad)
        }
        // Lenient decoding: nulls and missing fields take zero values, as Go's JSON does.
        let status = try LocalAPIJSON.decode(IPNStatus.self, from: Data(#"{"BackendState":"Weird","Peer":null,"Self":{"HostName":"h","LastSeen":null}}"#.utf8))
        XCTAssertEqual(status.backendState, .noState)
        XCTAssertEqual(status.selfStatus?.hostName, "h")
        XCTAssertEqual(status.selfStatus?.lastSeen, .goZero)
        XCTAssertTrue(status.peer.isEmpty)
    }
}
