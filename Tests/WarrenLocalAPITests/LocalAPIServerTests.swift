import Foundation
import WarrenLocalAPI
import WarrenTestSupport
import XCTest

final class LocalAPIServerTests: XCTestCase {
    func jsonObject(_ bytes: [UInt8]) throws -> [String: Any] {
        try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
    }

    func testStatusJSONHasTailscaleFieldNames() async throws {
        let t = try await TestServer.start()
        defer { Task { await t.stop() } }
        let answer = try await t.client.send("GET", "/localapi/v0/status")
        XCTAssertEqual(answer.status, 200)
        XCTAssertEqual(answer.headers["content-type"], "application/json")
        let object = try jsonObject(answer.body)
        for key in ["Version", "BackendState", "AuthURL", "TailscaleIPs", "Self", "Peer", "User", "Health",
                    "MagicDNSSuffix", "CurrentTailnet", "TUN"] {
            XCTAssertNotNil(object[key], "missing \(key)")
        }
        XCTAssertEqual(object["BackendState"] as? String, "Running")
        let me = try XCTUnwrap(object["Self"] as? [String: Any])
        for key in ["ID", "PublicKey", "HostName", "DNSName", "OS", "UserID", "TailscaleIPs", "Addrs", "CurAddr",
                    "Relay", "RxBytes", "TxBytes", "Created", "LastWrite", "LastSeen", "LastHandshake", "Online",
                    "ExitNode", "Active", "InNetworkMap", "InMagicSock", "InEngine", "KeyExpiry"] {
            XCTAssertNotNil(me[key], "Self lacks \(key)")
        }
        XCTAssertEqual(me["LastHandshake"] as? String, "0001-01-01T00:00:00Z")
        XCTAssertEqual(me["Created"] as? String, "2024-01-02T03:04:05Z")
        XCTAssertEqual(me["KeyExpiry"] as? String, "2030-01-01T00:00:00Z")
        let peers = try XCTUnwrap(object["Peer"] as? [String: Any])
        XCTAssertEqual(peers.count, 4)
        let alpha = try XCTUnwrap(peers["nodekey:" + String(repeating: "b2", count: 32)] as? [String: Any])
        XCTAssertEqual(alpha["CurAddr"] as? String, "203.0.113.7:41641")
        XCTAssertEqual(alpha["RxBytes"] as? Int, 5678)
        XCTAssertEqual(alpha["LastWrite"] as? String, "2023-11-14T22:13:20.5Z")
        XCTAssertEqual(alpha["AllowedIPs"] as? [String], ["100.64.0.2/32", "fd7a:115c:a1e0::2/128"])
        let users = try XCTUnwrap(object["User"] as? [String: Any])
        XCTAssertEqual((users["1"] as? [String: Any])?["LoginName"] as? String, "alice@example.com")
        XCTAssertEqual((object["CurrentTailnet"] as? [String: Any])?["MagicDNSSuffix"] as? String, "example.ts.net")

        // And it round-trips through the Swift types.
        let decoded = try await t.client.status()
        let direct = await t.backend.status()
        XCTAssertEqual(decoded, direct)
        let withoutPeers = try await t.client.status(peers: false)
        XCTAssertTrue(withoutPeers.peer.isEmpty)
    }

    func testUpDownLogout() async throws {
        let t = try await TestServer.start()
        defer { Task { await t.stop() } }
        let request = UpRequest(loginServer: "https://control.example", authKey: "tskey-abc", hostname: "h1",
                                shieldsUp: true, acceptRoutes: true, wait: true)
        let answer = try await t.client.up(request)
        XCTAssertEqual(answer, UpResponse(backendState: .running))
        XCTAssertEqual(t.backend.upRequests, [request])

        // Field names on the wire.
        let raw = try await t.client.send("POST", "/localapi/v0/up", body: Array(#"{"AuthKey":"k","ShieldsUp":true}"#.utf8))
        XCTAssertEqual(raw.status, 200)
        XCTAssertEqual(t.backend.upRequests.last, UpRequest(authKey: "k", shieldsUp: true))
        XCTAssertEqual(try jsonObject(raw.body)["BackendState"] as? String, "Running")

        let interactive = try await t.client.up(UpRequest())
        XCTAssertEqual(interactive.backendState, .needsLogin)
        XCTAssertEqual(interactive.authURL, "https://control.example/a/abc123")

        do {
            _ = try await t.client.up(UpRequest(authKey: "bad"))
            XCTFail("expected an error")
        } catch let error as LocalAPIClientError {
            XCTAssertEqual(error, .server(status: 401, message: "invalid auth key"))
        }

        try await t.client.down()
        var status = try await t.client.status()
        XCTAssertEqual(status.backendState, .stopped)
        try await t.client.logout()
        status = try await t.client.status()
        XCTAssertEqual(status.backendState, .needsLogin)
    }

    func testPingWhoisNetcheck() async throws {
        let t = try await TestServer.start()
        defer { Task { await t.stop() } }
        let direct = try await t.client.ping(ip: "100.64.0.2")
        XCTAssertEqual(direct.endpoint, "203.0.113.7:41641")
        XCTAssertEqual(direct.latencySeconds, 0.012)
        let raw = try await t.client.send("POST", "/localapi/v0/ping?ip=100.64.0.3&type=TSMP&size=100")
        XCTAssertEqual(raw.status, 200)
        let object = try jsonObject(raw.body)
        XCTAssertEqual(object["DERPRegionCode"] as? String, "nyc")
        XCTAssertEqual(object["DERPRegionID"] as? Int, 2)
        XCTAssertEqual(object["NodeName"] as? String, "beta")
        XCTAssertNotNil(object["LatencySeconds"])
        XCTAssertNil(object["Err"], "empty fields are omitted as Go's omitempty does")
        XCTAssertEqual(t.backend.calls.last, "ping 100.64.0.3 TSMP 100")
        let timeout = try await t.client.ping(ip: "100.64.0.10", type: .icmp)
        XCTAssertEqual(timeout.err, "timeout waiting for ping reply")

        let whois = try await t.client.whois("100.64.0.2:22")
        XCTAssertEqual(whois.node.name, "alpha.example.ts.net.")
        XCTAssertEqual(whois.userProfile.loginName, "alice@example.com")
        let whoisRaw = try await t.client.send("GET", "/localapi/v0/whois?addr=%5Bfd7a:115c:a1e0::2%5D:80")
        XCTAssertEqual(whoisRaw.status, 404)
        let whoisObject = try jsonObject(try await t.client.send("GET", "/localapi/v0/whois?addr=100.64.0.2").body)
        XCTAssertNotNil(whoisObject["Node"] as? [String: Any])
        XCTAssertNotNil(whoisObject["UserProfile"] as? [String: Any])
        XCTAssertNotNil(whoisObject["CapMap"] as? [String: Any])

        let report = try await t.client.netcheck()
        XCTAssertEqual(report.preferredDERP, 1)
        let netcheckObject = try jsonObject(try await t.client.send("GET", "/localapi/v0/netcheck").body)
        for key in ["UDP", "IPv4", "IPv6", "MappingVariesByDestIP", "PreferredDERP", "RegionLatency", "GlobalV4", "GlobalV6"] {
            XCTAssertNotNil(netcheckObject[key], "netcheck lacks \(key)")
        }
    }

    func testErrors() async throws {
        let t = try await TestServer.start()
        defer { Task { await t.stop() } }
        func expect(_ method: String, _ target: String, body: [UInt8]? = nil, _ status: Int, _ fragment: String,
                    line: UInt = #line) async throws {
            let answer = try await t.client.send(method, target, body: body)
            XCTAssertEqual(answer.status, status, "\(method) \(target)", line: line)
            let message = try jsonObject(answer.body)["error"] as? String
            XCTAssertTrue(message?.contains(fragment) ?? false, "\(message ?? "nil") lacks \(fragment)", line: line)
        }
        try await expect("GET", "/localapi/v0/nope", 404, "nope")
        try await expect("GET", "/other", 404, "not found")
        try await expect("GET", "/localapi/v0/up", 405, "POST")
        let allow = try await t.client.send("POST", "/localapi/v0/status")
        XCTAssertEqual(allow.status, 405)
        XCTAssertEqual(allow.headers["allow"], "GET")
        try await expect("POST", "/localapi/v0/up", body: Array("{not json".utf8), 400, "JSON")
        try await expect("POST", "/localapi/v0/up", body: Array(#"{"ShieldsUp":"yes"}"#.utf8), 400, "JSON")
        try await expect("POST", "/localapi/v0/up", body: Array(#"{"LoginServer":"ftp://x"}"#.utf8), 400, "LoginServer")
        try await expect("POST", "/localapi/v0/ping", 400, "ip")
        try await expect("POST", "/localapi/v0/ping?ip=banana", 400, "invalid IP")
        try await expect("POST", "/localapi/v0/ping?ip=100.64.0.2&type=smoke", 400, "ping type")
        try await expect("POST", "/localapi/v0/ping?ip=100.64.0.2&size=-1", 400, "size")
        try await expect("POST", "/localapi/v0/ping?ip=100.64.0.77", 404, "no peer")
        try await expect("POST", "/localapi/v0/ping?ip=100.64.0.99", 500, "fake")
        try await expect("GET", "/localapi/v0/whois", 400, "addr")
        try await expect("GET", "/localapi/v0/whois?addr=100.64.0.2:99999", 400, "addr")
        try await expect("GET", "/localapi/v0/whois?addr=100.64.0.50", 404, "no match")

        // 413: declared too large, and actually too large.
        let declared = rawExchange(t.socketPath, Array("POST /localapi/v0/up HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n{".utf8))
        XCTAssertEqual(declared.flatMap(statusCode), 413)
        let big = [UInt8](repeating: 32, count: (1 << 20) + 10)
        let chunked = rawExchange(t.socketPath, Array("POST /localapi/v0/up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\(String(big.count, radix: 16))\r\n".utf8) + big + Array("\r\n0\r\n\r\n".utf8))
        XCTAssertEqual(chunked.flatMap(statusCode), 413)

        // Header limits: one huge header, and too many headers.
        let hugeHeader = rawExchange(t.socketPath, Array("GET /localapi/v0/status HTTP/1.1\r\nX-Big: \(String(repeating: "a", count: 40_000))\r\n\r\n".utf8))
        XCTAssertNotNil(hugeHeader)
        XCTAssertNotEqual(hugeHeader.flatMap(statusCode), 200)
        let manyHeaders = rawExchange(t.socketPath, Array(("GET /localapi/v0/status HTTP/1.1\r\n" + (0..<500).map { "X-\($0): 1\r\n" }.joined() + "\r\n").utf8))
        XCTAssertNotEqual(manyHeaders.flatMap(statusCode), 200)

        // The server still answers.
        let status = try await t.client.status()
        XCTAssertEqual(status.backendState, .running)
    }

    func testSlowClientIsDisconnected() async throws {
        let t = try await TestServer.start(requestTimeout: 0.5)
        defer { Task { await t.stop() } }
        // Half a request, never finished, connection kept open: the server closes it after the request timeout.
        let started = Date()
        let answer = rawExchange(t.socketPath, Array("GET /localapi/v0/status HTTP/1.1\r\nHost: x\r\n".utf8), halfClose: false, timeout: 10)
        XCTAssertNotNil(answer, "the server kept a slow client forever")
        XCTAssertLessThan(Date().timeIntervalSince(started), 9)
        let status = try await t.client.status()
        XCTAssertEqual(status.backendState, .running)
    }

    func testSocketFileModeAndStaleSocket() async throws {
        let t = try await TestServer.start()
        let attributes = try FileManager.default.attributesOfItem(atPath: t.socketPath)
        XCTAssertEqual((attributes[.posixPermissions] as? NSNumber)?.intValue, 0o600)
        // A second server on a live socket is refused.
        do {
            _ = try await LocalAPIServer.start(backend: FakeBackend(), socketPath: t.socketPath)
            XCTFail("a second server started on a live socket")
        } catch {}
        await t.server.close()
        XCTAssertFalse(FileManager.default.fileExists(atPath: t.socketPath))
        // A stale file in the way is replaced.
        FileManager.default.createFile(atPath: t.socketPath, contents: Data("stale".utf8))
        let again = try await LocalAPIServer.start(backend: FakeBackend(), socketPath: t.socketPath)
        let status = try await LocalAPIClient(socketPath: t.socketPath).status()
        XCTAssertEqual(status.backendState, .running)
        await again.close()
        try? FileManager.default.removeItem(atPath: t.directory)
    }

    func testClientErrors() async throws {
        let path = "/tmp/warren-lapi-missing-\(UInt32.random(in: 0...UInt32.max)).sock"
        do {
            _ = try await LocalAPIClient(socketPath: path).status()
            XCTFail("expected an error")
        } catch let error as LocalAPIClientError {
            XCTAssertEqual(error.description, "warrend is not running (no socket at \(path))")
        }
        // A socket file nobody listens on.
        let t = try await TestServer.start()
        let socketPath = t.socketPath
        await t.server.close()
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            let p = Array(socketPath.utf8)
            raw.copyBytes(from: p)
            raw[p.count] = 0
        }
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        close(fd)
        do {
            _ = try await LocalAPIClient(socketPath: socketPath).status()
            XCTFail("expected an error")
        } catch let error as LocalAPIClientError {
            XCTAssertEqual(error, .notListening(socketPath: socketPath))
        }
        try? FileManager.default.removeItem(atPath: t.directory)
    }

    /// Random and mutated requests: the server answers or closes each, never hangs or crashes, and still serves.
    func testFuzzRawRequests() async throws {
        let t = try await TestServer.start(requestTimeout: 1)
        defer { Task { await t.stop() } }
        let seeds: [[UInt8]] = [
            "GET /localapi/v0/status HTTP/1.1\r\nHost: x\r\n\r\n",
            "POST /localapi/v0/up HTTP/1.1\r\nHost: x\r\nContent-Length: 36\r\nContent-Type: application/json\r\n\r\n{\"AuthKey\":\"k\",\"Hostname\":\"abc-de\"}",
            "POST /localapi/v0/ping?ip=100.64.0.2&type=disco HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
            "GET /localapi/v0/whois?addr=100.64.0.2:22 HTTP/1.1\r\nHost: x\r\n\r\n",
            "POST /localapi/v0/up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n3\r\n1}\n\r\n0\r\n\r\n",
            "GET /localapi/v0/netcheck HTTP/1.0\r\n\r\n",
        ].map { Array($0.utf8) }
        var answered = 0, closed = 0
        var failures: [String] = []
        MutationFuzzer(seeds: seeds, iterations: 1000, maximumLength: 2048, seed: 0x10CA1).run { input in
            guard failures.isEmpty else { return }
            guard let answer = rawExchange(t.socketPath, input, timeout: 8) else {
                failures.append("hung on \(String(decoding: input.prefix(80), as: UTF8.self).debugDescription)")
                return
            }
            if answer.isEmpty { closed += 1 } else if statusCode(answer) != nil { answered += 1 } else {
                failures.append("not HTTP: \(String(decoding: answer.prefix(80), as: UTF8.self).debugDescription)")
            }
        }
        XCTAssertEqual(failures, [])
        XCTAssertGreaterThan(answered, 0)
        XCTAssertGreaterThan(closed + answered, 0)
        // Still serving (the state may have changed: fuzzed `up` requests reach the backend).
        let status = try await t.client.status()
        XCTAssertEqual(status.version, "0.1.0-test")
    }
}
