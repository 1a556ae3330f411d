// Pending interactive logins end to end: the built `warren-control serve`, a ts2021 client waiting on its login URL
// (the Followup long poll, as tailscale up does), and the admin commands `auth reject`, `auth approve` and
// `auth register` run as an operator runs them. The client must be told at once: refused when rejected, logged in
// when approved, never left waiting until its poll times out (60 s).

import Foundation
import TailscaleKeys
import WarrenControlClient
import WarrenTailcfg
import XCTest

private struct ServeDidNotStart: Error, CustomStringConvertible {
    var description: String
}

final class PendingLoginServeTests: XCTestCase {
    /// `warren-control serve` on a temporary state directory, on a loopback port of its own.
    final class Served: @unchecked Sendable {
        let directory: String
        let process: Process
        let port: Int
        let binary: String

        init() throws {
            binary = try RealTailscaleClientTests.warrenControlBinary()
            directory = FileManager.default.temporaryDirectory.appendingPathComponent("wpl-\(UUID().uuidString.prefix(8))").path
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try "derp:\n  enabled: false\n".write(toFile: directory + "/c.yaml", atomically: true, encoding: .utf8)
            process = Process()
            process.executableURL = URL(fileURLWithPath: binary)
            process.arguments = ["serve", "--state-dir", directory + "/state", "--listen", "127.0.0.1:0", "--metrics-listen", "off",
                                 "--config", directory + "/c.yaml"]
            let output = Pipe()
            process.standardOutput = output
            FileManager.default.createFile(atPath: directory + "/serve.log", contents: nil)
            process.standardError = FileHandle(forWritingAtPath: directory + "/serve.log")
            try process.run()
            var text = ""
            while !text.contains("\n") {
                let chunk = output.fileHandleForReading.availableData
                if chunk.isEmpty { break }
                text += String(decoding: chunk, as: UTF8.self)
            }
            guard let marker = text.range(of: "point clients at: http://127.0.0.1:"),
                  let port = Int(text[marker.upperBound...].prefix { $0.isNumber }) else {
                if process.isRunning { kill(process.processIdentifier, SIGKILL) }
                process.waitUntilExit()
                let log = (try? String(contentsOfFile: directory + "/serve.log", encoding: .utf8)) ?? ""
                throw ServeDidNotStart(description: "serve did not start: \(text)\n\(log.suffix(2000))")
            }
            self.port = port
        }

        func stop() {
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
            try? FileManager.default.removeItem(atPath: directory)
        }

        /// One admin command against this server, as an operator runs it (status, stdout, stderr).
        func cli(_ arguments: [String]) async throws -> (status: Int32, out: String, err: String) {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: binary)
            process.arguments = arguments + ["--state-dir", directory + "/state"]
            let out = directory + "/cli-\(UUID().uuidString.prefix(6)).out", err = out + ".err"
            FileManager.default.createFile(atPath: out, contents: nil)
            FileManager.default.createFile(atPath: err, contents: nil)
            process.standardOutput = FileHandle(forWritingAtPath: out)
            process.standardError = FileHandle(forWritingAtPath: err)
            let status: Int32 = try await withCheckedThrowingContinuation { continuation in
                process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
                do { try process.run() } catch { continuation.resume(throwing: error) }
            }
            return (status, (try? String(contentsOfFile: out, encoding: .utf8)) ?? "", (try? String(contentsOfFile: err, encoding: .utf8)) ?? "")
        }

        /// GET of a page on the control listener: the status line's code and the body.
        func get(_ path: String) async throws -> (status: Int, body: String) {
            let raw = try await ControlClient.rawHTTP(host: "127.0.0.1", port: port,
                                                      request: "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            let text = String(decoding: raw, as: UTF8.self)
            let status = Int(text.split(separator: " ").dropFirst().first ?? "") ?? 0
            let body = text.range(of: "\r\n\r\n").map { String(text[$0.upperBound...]) } ?? ""
            return (status, body)
        }

        func client(seed: UInt64) async throws -> ControlClient {
            let key = try await ControlClient.fetchKey(host: "127.0.0.1", port: port).publicKey
            let client = ControlClient(port: port, seed: seed)
            try await client.connect(controlKey: key)
            return client
        }
    }

    /// A client's interactive login: the URL it is shown, and its id (the URL's last component).
    private static func startLogin(_ client: ControlClient, hostname: String, nodeKey: NodePublic? = nil) async throws -> (url: String, id: String) {
        var request = client.registerRequest(authKey: nil, hostname: hostname)
        if let nodeKey { request.nodeKey = nodeKey }
        let first = try await client.register(request)
        XCTAssertEqual(first.error, "")
        XCTAssertFalse(first.machineAuthorized)
        let id = String(first.authURL.split(separator: "/").last ?? "")
        XCTAssertFalse(id.isEmpty, "no login URL: \(first)")
        return (first.authURL, id)
    }

    /// The Followup long poll, as the client sends it after showing the URL.
    private static func followup(_ client: ControlClient, _ url: String, hostname: String, nodeKey: NodePublic? = nil) async throws -> RegisterResponse {
        var request = client.registerRequest(authKey: nil, hostname: hostname)
        if let nodeKey { request.nodeKey = nodeKey }
        request.followup = url
        return try await client.register(request)
    }

    func testRejectRefusesTheWaitingClientAndApproveCompletesIt() async throws {
        let served = try Served()
        defer { served.stop() }
        let created = try await served.cli(["users", "create", "alice"])
        XCTAssertEqual(created.status, 0, created.err)

        // A login waits; its page is there, an unknown id's is not.
        let a = try await served.client(seed: 41)
        let (urlA, idA) = try await Self.startLogin(a, hostname: "laptop")
        let page = try await served.get("/register/\(idA)")
        XCTAssertEqual(page.status, 200)
        XCTAssertTrue(page.body.contains("warren-control auth register --user USER --auth-id \(idA)"), page.body)
        let unknown = try await served.get("/register/aaaaaaaaaaaaaaaaaaaaaaaa")
        XCTAssertEqual(unknown.status, 404, unknown.body)
        let listed = try await served.cli(["auth", "list", "-o", "json"])
        XCTAssertEqual(listed.status, 0, listed.err)
        XCTAssertTrue(listed.out.contains("\"\(idA)\""), listed.out)

        // Rejected while the client waits: its poll is answered with a refusal at once.
        let started = ContinuousClock.now
        async let waitedA = Self.followup(a, urlA, hostname: "laptop")
        try await Task.sleep(for: .milliseconds(300))
        let rejected = try await served.cli(["auth", "reject", "--auth-id", idA])
        XCTAssertEqual(rejected.status, 0, rejected.err)
        XCTAssertTrue(rejected.out.contains("rejected"), rejected.out)
        let answerA = try await waitedA
        XCTAssertTrue(answerA.error.contains("rejected by an administrator"), "\(answerA)")
        XCTAssertFalse(answerA.machineAuthorized)
        XCTAssertLessThan(ContinuousClock.now - started, .seconds(20), "the refusal must not wait for the poll's 60 s timeout")
        let gone = try await served.get("/register/\(idA)")
        XCTAssertEqual(gone.status, 404)
        let again = try await served.cli(["auth", "reject", "--auth-id", idA])
        XCTAssertEqual(again.status, 1)
        XCTAssertTrue(again.err.contains("no pending login"), again.err)
        await a.close()

        // Another login: approve without a user is refused for a new machine (the message says what to do);
        // auth register completes it while the client waits.
        let b = try await served.client(seed: 42)
        let (urlB, idB) = try await Self.startLogin(b, hostname: "desk")
        let noUser = try await served.cli(["auth", "approve", "--auth-id", idB])
        XCTAssertEqual(noUser.status, 1)
        XCTAssertTrue(noUser.err.contains("auth register --user USER --auth-id \(idB)"), noUser.err)
        async let waitedB = Self.followup(b, urlB, hostname: "desk")
        try await Task.sleep(for: .milliseconds(300))
        let registered = try await served.cli(["auth", "register", "--user", "alice", "--auth-id", idB])
        XCTAssertEqual(registered.status, 0, registered.err)
        let answerB = try await waitedB
        XCTAssertEqual(answerB.error, "")
        XCTAssertTrue(answerB.machineAuthorized)
        XCTAssertEqual(answerB.login.loginName, "alice")

        // The same machine logging in again with a new node key: auth approve (no user) completes it as alice's node,
        // the whole login URL accepted as the id.
        var generator = SystemRandomNumberGenerator()
        let newKey = NodePrivate.generate(using: &generator).publicKey
        let (urlC, _) = try await Self.startLogin(b, hostname: "desk", nodeKey: newKey)
        async let waitedC = Self.followup(b, urlC, hostname: "desk", nodeKey: newKey)
        try await Task.sleep(for: .milliseconds(300))
        let approved = try await served.cli(["auth", "approve", "--auth-id", urlC, "-o", "json"])
        XCTAssertEqual(approved.status, 0, approved.err)
        let answerC = try await waitedC
        XCTAssertEqual(answerC.error, "")
        XCTAssertTrue(answerC.machineAuthorized)
        XCTAssertEqual(answerC.login.loginName, "alice")
        struct Row: Decodable { var id: Int64; var nodeKey: String }
        let approvedNode = try JSONDecoder().decode(Row.self, from: Data(approved.out.utf8))
        let nodes = try await served.cli(["nodes", "list", "-o", "json"])
        let rows = try JSONDecoder().decode([Row].self, from: Data(nodes.out.utf8))
        XCTAssertEqual(rows.map(\.id), [approvedNode.id], "the machine keeps its one node")
        XCTAssertEqual(rows.first?.nodeKey, newKey.description)
        await b.close()
    }

    /// `nodes expire --disable`: the node's key never expires, and its own map (pushed on the open stream) carries no
    /// KeyExpiry any more.
    func testExpireDisableRemovesKeyExpiryFromTheMap() async throws {
        let served = try Served()
        defer { served.stop() }
        _ = try await served.cli(["users", "create", "alice"])
        let key = try await served.cli(["preauthkeys", "create", "-u", "alice"])
        XCTAssertEqual(key.status, 0, key.err)
        let client = try await served.client(seed: 43)
        let registered = try await client.register(client.registerRequest(authKey: key.out.trimmingCharacters(in: .whitespacesAndNewlines),
                                                                          hostname: "server"))
        XCTAssertEqual(registered.error, "")
        let (status, messages) = try await client.map(client.mapRequest(stream: true))
        XCTAssertEqual(status, 200)
        let outcome = try await withThrowingTaskGroup(of: String.self) { group in
            group.addTask {
                var iterator = messages.makeAsyncIterator()
                guard let first = try await iterator.next(), let own = first.node else { return "no full map" }
                guard own.keyExpiry != nil else { return "the node had no key expiry to begin with" }
                let disabled = try await served.cli(["nodes", "expire", "-i", String(own.id), "--disable"])
                guard disabled.status == 0 else { return "nodes expire --disable failed: \(disabled.err)" }
                while let message = try await iterator.next() {
                    if let node = message.node { return node.keyExpiry == nil ? "ok" : "KeyExpiry still \(String(describing: node.keyExpiry))" }
                }
                return "the map stream ended"
            }
            group.addTask {
                try await Task.sleep(for: .seconds(20))
                return "no map update within 20 s"
            }
            let first = try await group.next() ?? "nothing"
            group.cancelAll()
            return first
        }
        XCTAssertEqual(outcome, "ok")
        // A fresh map says the same.
        let (_, again) = try await client.map(client.mapRequest(stream: false))
        var iterator = again.makeAsyncIterator()
        let fresh = try await iterator.next()
        XCTAssertNotNil(fresh?.node)
        XCTAssertNil(fresh?.node?.keyExpiry)

        // Deleting the pre-auth key that registered the node: the key is gone, the node stays and is served.
        let deleted = try await served.cli(["preauthkeys", "delete", key.out.trimmingCharacters(in: .whitespacesAndNewlines)])
        XCTAssertEqual(deleted.status, 0, deleted.err)
        let keys = try await served.cli(["preauthkeys", "list", "-o", "json"])
        XCTAssertEqual((try JSONSerialization.jsonObject(with: Data(keys.out.utf8)) as? [Any])?.count, 0, keys.out)
        let nodes = try await served.cli(["nodes", "list", "-o", "json"])
        XCTAssertEqual((try JSONSerialization.jsonObject(with: Data(nodes.out.utf8)) as? [Any])?.count, 1, nodes.out)
        let (afterStatus, afterDelete) = try await client.map(client.mapRequest(stream: false))
        XCTAssertEqual(afterStatus, 200)
        var afterIterator = afterDelete.makeAsyncIterator()
        let stillServed = try await afterIterator.next()
        XCTAssertNotNil(stillServed?.node)
        await client.close()
    }

    /// headscale's `POST /api/v1/debug/node` on the served listener (with an API key), then `auth register`: the node is
    /// real, and a connected client gets it as a new peer on its open map stream.
    func testDebugNodeBecomesAPeerOnceRegistered() async throws {
        let served = try Served()
        defer { served.stop() }
        _ = try await served.cli(["users", "create", "alice"])
        let apiKey = try await served.cli(["apikeys", "create"]).out.trimmingCharacters(in: .whitespacesAndNewlines)
        let key = try await served.cli(["preauthkeys", "create", "-u", "alice"]).out.trimmingCharacters(in: .whitespacesAndNewlines)
        let client = try await served.client(seed: 44)
        let registered = try await client.register(client.registerRequest(authKey: key, hostname: "watcher"))
        XCTAssertEqual(registered.error, "")
        let (_, messages) = try await client.map(client.mapRequest(stream: true))

        let authID = "debugnodeserve000000001"
        let body = #"{"user":"alice","key":"\#(authID)","name":"dbg","routes":["10.9.0.0/24"]}"#
        let raw = try await ControlClient.rawHTTP(host: "127.0.0.1", port: served.port, request:
            "POST /api/v1/debug/node HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(apiKey)\r\nContent-Type: application/json\r\n"
            + "Content-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body)
        let answer = String(decoding: raw, as: UTF8.self)
        XCTAssertTrue(answer.hasPrefix("HTTP/1.1 200"), answer)
        guard let json = answer.range(of: "\r\n\r\n").map({ String(answer[$0.upperBound...]) }),
              let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any],
              let node = object["node"] as? [String: Any], let nodeKeyText = node["nodeKey"] as? String,
              let nodeKey = NodePublic(nodeKeyText) else {
            return XCTFail("no node in the answer: \(answer)")
        }
        let pending = try await served.cli(["auth", "list", "-o", "json"])
        XCTAssertTrue(pending.out.contains(authID), pending.out)

        let outcome = try await withThrowingTaskGroup(of: String.self) { group in
            group.addTask {
                var iterator = messages.makeAsyncIterator()
                _ = try await iterator.next() // the full map
                let register = try await served.cli(["auth", "register", "--user", "alice", "--auth-id", authID])
                guard register.status == 0 else { return "auth register failed: \(register.err)" }
                while let message = try await iterator.next() {
                    if let peer = message.peersChanged?.first(where: { $0.key == nodeKey }) {
                        return (peer.addresses ?? []).count == 2 ? "ok" : "the new peer has addresses \(String(describing: peer.addresses))"
                    }
                }
                return "the map stream ended"
            }
            group.addTask {
                try await Task.sleep(for: .seconds(20))
                return "the debug node did not reach the peer's map within 20 s"
            }
            let first = try await group.next() ?? "nothing"
            group.cancelAll()
            return first
        }
        XCTAssertEqual(outcome, "ok")
        await client.close()
    }
}
