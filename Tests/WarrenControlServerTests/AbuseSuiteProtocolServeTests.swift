// Issue 14 points 7, 8 and 10 and the ts2021 stream bounds against `warren-control serve` (the built binary), part
// of the abuse suite (root, like the rest of AbuseSuiteTests; one server, a few seconds): the in-process tests prove
// the pieces, these prove the binary wires them in (the upgrader the listener installs, the admin socket and the
// network admin API with their percent-decoding, the engine's map stream cap, the store's auth_key_id).

import Foundation
import NIOCore
import TailscaleKeys
import WarrenControlClient
import WarrenTailcfg
import XCTest

extension AbuseSuiteTests {
    /// One HTTP exchange with the network admin API (Connection: close): status, headers, body.
    private func admin(_ served: ServedControl, _ method: String, _ path: String, apiKey: String, body: String? = nil)
        async throws -> (status: Int, head: String, body: String) {
        var request = "\(method) \(path) HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(apiKey)\r\nConnection: close\r\n"
        if let body { request += "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n" }
        request += "\r\n" + (body ?? "")
        let text = String(decoding: try await ControlClient.rawHTTP(host: "127.0.0.1", port: served.port, request: request), as: UTF8.self)
        let parts = text.components(separatedBy: "\r\n\r\n")
        let head = parts.first ?? ""
        let status = Int(head.split(separator: " ").dropFirst().first ?? "") ?? 0
        return (status, head, parts.dropFirst().joined(separator: "\r\n\r\n"))
    }

    private func userNames(_ served: ServedControl) throws -> [String] {
        let list = try JSONSerialization.jsonObject(with: served.cli(["users", "list", "-o", "json"])) as? [[String: Any]] ?? []
        return list.compactMap { $0["name"] as? String }
    }

    func testProtocolErrorsNamesAndAdminAnswersAgainstServe() async throws {
        let served = try ServedControl(prefix: "wab-proto")
        defer { served.stop() }
        let controlKey = try await served.controlKey()

        // ts2021 stream bounds: 64 streams at once, the server's SETTINGS never acknowledged: 32 advertised, the 32
        // beyond refused with REFUSED_STREAM, the connection kept.
        let session = try await RawTS2021Session.open(port: served.port, controlKey: controlKey)
        var frames = RawTS2021Session.preface
        for index in 0..<64 {
            frames += RawTS2021Session.postHeaders(stream: UInt32(2 * index + 1), path: "/machine/update-health", end: false)
        }
        try await session.send(frames)
        var received: [RawTS2021Session.Frame] = []
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline, received.filter({ $0.type == 0x3 }).count < 32 {
            received += try session.receivedFrames()
            try await Task.sleep(for: .milliseconds(20))
        }
        let refused = received.filter { $0.type == 0x3 && $0.payload == [0, 0, 0, 0x7] }.map(\.stream)
        XCTAssertEqual(Set(refused), Set((32..<64).map { UInt32(2 * $0 + 1) }), "serve: streams beyond 32 not refused")
        XCTAssertTrue(session.connection.channel.isActive)

        // Point 7: a connection error on the same connection (DATA on stream 0): GOAWAY(PROTOCOL_ERROR), then closed.
        try await session.send(RawTS2021Session.frame(type: 0x0, flags: 0, stream: 0, [0x41]))
        let closing = ContinuousClock.now
        while ContinuousClock.now - closing < .seconds(10), session.connection.channel.isActive {
            try await Task.sleep(for: .milliseconds(20))
        }
        XCTAssertFalse(session.connection.channel.isActive, "serve kept a ts2021 connection open after GOAWAY")
        received += try session.receivedFrames()
        let goAway = received.first { $0.type == 0x7 }
        XCTAssertEqual(goAway.map { Array($0.payload[4..<8]) }, [0, 0, 0, 1], "no GOAWAY(PROTOCOL_ERROR)")

        // Point 8 through the admin socket (the CLI percent-encodes): a name outside the URL-safe set round-trips;
        // a name outside the rules is refused at creation.
        try served.cli(["users", "create", "jörg"])
        try served.cli(["users", "rename", "jörg", "jürgen"])
        XCTAssertEqual(try userNames(served), ["jürgen"])
        try served.cli(["users", "delete", "jürgen"])
        try served.cli(["users", "create", "x y"], expectSuccess: false)
        try served.cli(["users", "create", "a/b"], expectSuccess: false)
        XCTAssertEqual(try userNames(served), [], "a bad name was created, or a renamed one not deleted")

        // Point 8 and 10 over the network admin API (percent-decoding on the control listener; 405 with Allow;
        // duplicate keys refused).
        let apiKey = String(decoding: try served.cli(["apikeys", "create"]), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        let created = try await admin(served, "POST", "/api/v1/users", apiKey: apiKey, body: #"{"name":"zoë"}"#)
        XCTAssertEqual(created.status, 201, created.body)
        let renamed = try await admin(served, "POST", "/api/v1/users/zo%C3%AB/rename", apiKey: apiKey, body: #"{"newName":"zoé"}"#)
        XCTAssertEqual(renamed.status, 200, renamed.body)
        let deleted = try await admin(served, "DELETE", "/api/v1/users/zo%C3%A9", apiKey: apiKey)
        XCTAssertEqual(deleted.status, 200, deleted.body)
        let badName = try await admin(served, "POST", "/api/v1/users", apiKey: apiKey, body: #"{"name":"semi;colon"}"#)
        XCTAssertEqual(badName.status, 400, badName.body)
        let wrongMethod = try await admin(served, "PATCH", "/api/v1/users", apiKey: apiKey)
        XCTAssertEqual(wrongMethod.status, 405, wrongMethod.body)
        let allow = wrongMethod.head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("allow:") }.map(String.init) ?? ""
        XCTAssertTrue(allow.contains("GET") && allow.contains("POST"), "405 without Allow: \(wrongMethod.head)")
        let duplicate = try await admin(served, "POST", "/api/v1/users", apiKey: apiKey, body: #"{"name":"alice","name":"mallory"}"#)
        XCTAssertEqual(duplicate.status, 400, duplicate.body)
        XCTAssertTrue(duplicate.body.contains("duplicate"), duplicate.body)
        XCTAssertEqual(try userNames(served), [])

        // Point 10: the node records the key that registered it, and one node gets at most 4 map streams (a 5th
        // closes the oldest). No error text sent to the client names the state directory.
        try served.cli(["users", "create", "carol"])
        let key = try JSONDecoder().decode(Created.self, from: served.cli(["preauthkeys", "create", "--user", "carol", "-o", "json"]))
        let client = ControlClient(port: served.port, seed: 0x7E57)
        try await client.connect(controlKey: controlKey)
        let registered = try await client.register(client.registerRequest(authKey: key.key, hostname: "carol"))
        XCTAssertTrue(registered.machineAuthorized, "\(registered)")
        let nodes = try JSONDecoder().decode([NodeRow].self, from: served.cli(["nodes", "list", "-o", "json"]))
        XCTAssertEqual(nodes.first { $0.nodeKey == client.nodeKey.publicKey.description }?.preAuthKeyID, key.preAuthKey.id)
        var ended: [Task<Bool, Never>] = []
        for _ in 0..<5 {
            let (status, messages) = try await client.map(client.mapRequest(stream: true))
            XCTAssertEqual(status, 200)
            ended.append(Task {
                do { for try await _ in messages {} } catch {}
                return true
            })
            try await Task.sleep(for: .milliseconds(100))  // opened in order: the first is the oldest
        }
        let oldest = ended[0]
        let firstEnded = await withTaskGroup(of: Bool.self) { group -> Bool in
            group.addTask { await oldest.value }
            group.addTask {
                try? await Task.sleep(for: .seconds(5))
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
        XCTAssertTrue(firstEnded, "serve kept 5 map streams open for one node")
        let malformed = try await client.post("/machine/map", json: Array("{\"Version\":".utf8))
        let text = String(decoding: await malformed.collect(), as: UTF8.self)
        XCTAssertEqual(malformed.status, 400)
        XCTAssertFalse(text.contains(served.directory), "an error sent to a client names the state directory: \(text)")
        for task in ended { task.cancel() }
        await client.close()
    }
}
