// The serve binary with an `oidc:` section: the keys are read in both layouts (configtest), bad sections are refused
// naming the key, a provider that cannot be discovered stops the start (only_start_if_oidc_is_available), and with
// the in-process provider up the control listener serves /oidc/callback (refusing a callback it never started).

import AsyncHTTPClient
import Foundation
import WarrenTestProbes
import XCTest
@testable import WarrenControlOIDC

final class ServeOIDCTests: XCTestCase {
    var provider: TestProvider!
    var directory: String!
    var server: Process?

    override func setUp() async throws {
        provider = try await TestProvider.start()
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("warren-oidc-serve-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDown() async throws {
        if let server, server.isRunning {
            server.terminate()
            server.waitUntilExit()
        }
        await provider.stop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    static func binary() throws -> String {
        var url = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = url.appendingPathComponent("warren-control").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            url = url.deletingLastPathComponent()
        }
        throw XCTSkip("warren-control is not built next to the tests; run `swift build --product warren-control` first")
    }

    func run(_ arguments: [String], timeout: TimeInterval = 30) throws -> (status: Int32, output: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try Self.binary())
        p.arguments = arguments
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning, Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        if p.isRunning { p.terminate() }
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
    }

    func write(_ name: String, _ text: String) throws -> String {
        let path = directory + "/" + name
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func testTheSectionIsReadInBothLayoutsAndBadOnesAreRefused() throws {
        let secret = try write("secret", "from-a-file\n")
        let warren = try write("warren.yaml", """
            server_url: http://127.0.0.1:8080
            oidc:
              issuer: \(provider.issuer)
              client_id: warren
              client_secret_path: \(secret)
              allowed_domains: [example.com]
              pkce: {enabled: true, method: S256}
              expiry: 30d
              groups_claim: roles
              groups_in_policy: true
            """)
        let tested = try run(["configtest", "--config", warren])
        XCTAssertEqual(tested.status, 0, tested.output)
        XCTAssertFalse(tested.output.contains("not implemented"), tested.output)
        // configtest prints every OIDC setting, and where the secret comes from, never the secret.
        for line in ["oidc issuer: \(provider.issuer)", "oidc client id: warren", "oidc client secret: read from \(secret)",
                     "oidc scopes: openid profile email", "oidc allowed domains: example.com", "oidc allowed users: (any)",
                     "oidc allowed groups: (any)", "oidc groups claim: roles (policy groups include them)", "oidc pkce: S256",
                     "oidc node key expiry: 2592000 s after the sign-in", "oidc start without the provider: no"] {
            XCTAssertTrue(tested.output.contains(line + "\n"), "configtest prints \(line.debugDescription): \(tested.output)")
        }
        XCTAssertFalse(tested.output.contains("from-a-file"), "the client secret is never printed")
        let headscale = try write("headscale.yaml", """
            server_url: http://127.0.0.1:8080
            listen_addr: 127.0.0.1:8080
            oidc:
              only_start_if_oidc_is_available: false
              issuer: \(provider.issuer)
              client_id: warren
              client_secret: s
              scope: ["openid", "profile", "email", "groups"]
              extra_params: {domain_hint: example.com}
              allowed_groups: [/warren]
              email_verified_required: false
              use_expiry_from_token: true
            """)
        let headscaleTested = try run(["configtest", "--config", headscale])
        XCTAssertEqual(headscaleTested.status, 0, headscaleTested.output)
        XCTAssertTrue(headscaleTested.output.contains("oidc node key expiry: the ID token's expiry (use_expiry_from_token)\n"),
                      headscaleTested.output)
        XCTAssertTrue(headscaleTested.output.contains("oidc client secret: set in the file\n"), headscaleTested.output)
        XCTAssertFalse(headscaleTested.output.contains("client secret: s\n"), headscaleTested.output)
        XCTAssertTrue(headscaleTested.output.contains("warnings: 0"), "no warning about the oidc keys: \(headscaleTested.output)")

        let bad: [(String, String)] = [
            ("oidc:\n  issuer: \(provider.issuer)\n  client_id: w\n  client_secret: a\n  client_secret_path: \(secret)\n", "mutually exclusive"),
            ("oidc:\n  issuer: \(provider.issuer)\n  client_secret: a\n", "oidc.client_id"),
            ("oidc:\n  issuer: \(provider.issuer)\n  client_id: w\n", "oidc.client_secret"),
            ("oidc:\n  issuer: ftp://idp\n  client_id: w\n  client_secret: a\n", "oidc.issuer"),
            ("oidc:\n  issuer: \(provider.issuer)\n  client_id: w\n  client_secret: a\n  scope: [email]\n", "oidc.scope"),
            ("oidc:\n  issuer: \(provider.issuer)\n  client_id: w\n  client_secret: a\n  pkce: {enabled: true, method: S512}\n", "oidc.pkce.method"),
            ("oidc:\n  issuer: \(provider.issuer)\n  client_id: w\n  client_secret: a\n  isuser: x\n", "isuser"),
            ("oidc:\n  issuer: \(provider.issuer)\n  client_id: w\n  client_secret_path: /nonexistent/secret\n", "cannot read"),
            ("oidc:\n  issuer: \(provider.issuer)\n  client_id: w\n  client_secret: a\n  groups_claim: \"a b\"\n", "oidc.groups_claim"),
            ("oidc:\n  issuer: \(provider.issuer)\n  client_id: w\n  client_secret: a\n  groups_in_policy: maybe\n", "oidc.groups_in_policy"),
        ]
        for (text, expected) in bad {
            let path = try write("bad.yaml", text)
            let result = try run(["configtest", "--config", path])
            XCTAssertNotEqual(result.status, 0, text)
            XCTAssertTrue(result.output.contains(expected), "expected \"\(expected)\" in: \(result.output)")
        }
    }

    func testAnUnavailableProviderStopsTheStartUnlessToldOtherwise() throws {
        let port = try LoopbackPort.free()
        let config = try write("down.yaml", """
            oidc:
              issuer: http://127.0.0.1:1/nobody
              client_id: warren
              client_secret: s
            """)
        let result = try run(["serve", "--state-dir", directory + "/state", "--listen", "127.0.0.1:\(port)",
                              "--metrics-listen", "off", "--config", config], timeout: 60)
        XCTAssertEqual(result.status, 1, result.output)
        XCTAssertTrue(result.output.contains("oidc") && result.output.contains("only_start_if_oidc_is_available"), result.output)
    }

    func testTheListenerServesTheCallbackWithTheProviderUp() async throws {
        let port = try LoopbackPort.free()
        let config = try write("up.yaml", """
            server_url: http://127.0.0.1:\(port)
            derp: {enabled: false}
            oidc:
              issuer: \(provider.issuer)
              client_id: \(provider.clientID)
              client_secret: \(provider.clientSecret.debugDescription)
              pkce: {enabled: true}
            """)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try Self.binary())
        p.arguments = ["serve", "--state-dir", directory + "/state", "--listen", "127.0.0.1:\(port)", "--metrics-listen", "off",
                       "--config", config]
        let log = directory + "/serve.log"
        FileManager.default.createFile(atPath: log, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        p.standardOutput = handle
        p.standardError = handle
        try p.run()
        server = p
        let base = "http://127.0.0.1:\(port)"
        var up = false
        for _ in 0..<150 {
            if let answer = try? await Browser.get(base + "/key"), answer.status == 200 { up = true; break }
            guard p.isRunning else { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        XCTAssertTrue(up, "serve did not come up: \(text)")
        // Started with discovery done: the log says so.
        for _ in 0..<50 where !((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("sign-in with OIDC enabled") {
            try await Task.sleep(for: .milliseconds(100))
        }
        XCTAssertTrue(((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("sign-in with OIDC enabled"))
        XCTAssertGreaterThanOrEqual(provider.state.withLock { $0.jwksFetches }, 1)
        // No login waits with this id: the built-in 404.
        let unknown = try await Browser.get(base + "/register/no-such-login")
        XCTAssertEqual(unknown.status, 404)
        // A callback this server never started: refused with a page.
        let forged = try await Browser.get(base + "/oidc/callback?code=abc&state=never-issued-state")
        XCTAssertEqual(forged.status, 410, forged.body)
        XCTAssertTrue(forged.body.contains("Sign-in refused"), forged.body)
        let empty = try await Browser.get(base + "/oidc/callback")
        XCTAssertEqual(empty.status, 400, empty.body)
    }
}
