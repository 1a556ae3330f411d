// Sign-in through a real OpenID provider: glewlwyd 2.7 from Debian (scripts/setup.d/oidc-provider.sh installs it,
// not started). The test writes its own glewlwyd configuration and SQLite database (the package's schema, an OIDC
// plugin instance signing RS256 with a key made here), starts it on a free loopback port, creates a user and a
// confidential client through glewlwyd's admin API, and signs the user in as glewlwyd's login page does (its
// /api/auth/ API with the password, the grant, then the authorization URL with g_continue). The code goes to
// Warren's callback, which checks everything and approves the device's waiting login in an engine in process.
// Root and the package are needed; without them the test skips, and with WARREN_INTEROP_REQUIRED=1 it fails.

import AsyncHTTPClient
import Foundation
import Logging
import NIOHTTP1
import TailscaleKeys
import WarrenControlStore
import WarrenPolicy
import WarrenTailcfg
import WarrenTestProbes
import XCTest
@testable import WarrenControlOIDC
@testable import WarrenControlServer

final class GlewlwydTests: XCTestCase {
    static let binary = "/usr/bin/glewlwyd"
    static let schema = "/usr/share/dbconfig-common/data/glewlwyd/install/sqlite3"

    var directory: URL!
    var process: Process?
    var extraProcesses: [Process] = []
    var port = 0

    override func tearDown() async throws {
        for p in extraProcesses.reversed() where p.isRunning {
            p.terminate()
            p.waitUntilExit()
        }
        if let process, process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        if let directory { try? FileManager.default.removeItem(at: directory) }
    }

    func requireProvider() throws {
        var missing: [String] = []
        if getuid() != 0 { missing.append("root") }
        for path in [Self.binary, Self.schema, "/usr/bin/sqlite3", "/usr/bin/openssl"] where !FileManager.default.fileExists(atPath: path) {
            missing.append(path)
        }
        guard !missing.isEmpty else { return }
        let message = "glewlwyd sign-in test needs \(missing.joined(separator: ", ")) (run scripts/setup as root)"
        if ProcessInfo.processInfo.environment["WARREN_INTEROP_REQUIRED"] == "1" { XCTFail(message); throw XCTSkip(message) }
        throw XCTSkip(message)
    }

    @discardableResult
    func run(_ arguments: [String], input: String? = nil) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: arguments[0])
        p.arguments = Array(arguments.dropFirst())
        p.currentDirectoryURL = directory
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        let inPipe = Pipe()
        if input != nil { p.standardInput = inPipe }
        try p.run()
        if let input {
            inPipe.fileHandleForWriting.write(Data(input.utf8))
            try inPipe.fileHandleForWriting.close()
        }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        guard p.terminationStatus == 0 else { throw GlewlwydError("\(arguments.joined(separator: " ")) failed: \(text)") }
        return text
    }

    struct GlewlwydError: Error, CustomStringConvertible {
        var description: String
        init(_ d: String) { description = d }
    }

    var base: String { "http://127.0.0.1:\(port)" }
    var issuer: String { base + "/api/oidc" }

    /// Database, key, plugin instance, configuration; then glewlwyd itself, until its discovery document answers.
    func startGlewlwyd() async throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("warren-oidc-glewlwyd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        port = try LoopbackPort.free()
        let db = directory.appendingPathComponent("glewlwyd.db").path
        try run(["/usr/bin/sqlite3", db], input: try String(contentsOfFile: Self.schema, encoding: .utf8))
        try run(["/usr/bin/openssl", "genrsa", "-out", "signing.key", "2048"])
        try run(["/usr/bin/openssl", "rsa", "-in", "signing.key", "-pubout", "-out", "signing.pub"])
        let key = try String(contentsOf: directory.appendingPathComponent("signing.key"), encoding: .utf8)
        let pub = try String(contentsOf: directory.appendingPathComponent("signing.pub"), encoding: .utf8)
        let plugin: [String: Any] = [
            "iss": issuer, "jwt-type": "rsa", "jwt-key-size": "256", "key": key, "cert": pub,
            "access-token-duration": 3600, "refresh-token-duration": 1_209_600, "code-duration": 600, "refresh-token-rolling": true,
            "allow-non-oidc": false, "auth-type-code-enabled": true, "auth-type-token-enabled": false,
            "auth-type-id-token-enabled": false, "auth-type-none-enabled": false, "auth-type-password-enabled": false,
            "auth-type-client-enabled": false, "auth-type-refresh-enabled": true, "scope": [], "additional-parameters": [],
            // The user property "groups" (a list) as a mandatory groups claim in ID tokens and userinfo.
            "claims": [["name": "groups", "user-property": "groups", "type": "string", "mandatory": true, "on-demand": false,
                        "scope": [String]()]],
            "jwks-show": true, "secret-type": "public", "name-claim": "mandatory", "name-claim-scope": [],
            "email-claim": "mandatory", "email-claim-scope": [], "allowed-scope": ["openid"], "pkce-allowed": true,
            "pkce-method-plain-allowed": false, "request-parameter-allow": false, "session-management-allowed": false,
            "client-pubkey-parameter": "", "client-jwks-parameter": "jwks", "client-jwks_uri-parameter": "jwks_uri",
        ]
        let json = String(decoding: try JSONSerialization.data(withJSONObject: plugin, options: [.sortedKeys]), as: UTF8.self)
        // Users get a multi-valued "groups" property in the database user module.
        try run(["/usr/bin/sqlite3", db], input: """
            UPDATE g_user_module_instance SET gumi_parameters = json_set(gumi_parameters, '$."data-format".groups', \
            json('{"multiple":true,"read":true,"write":true,"profile-read":true,"profile-write":false}')) WHERE gumi_name = 'database';

            """)
        try run(["/usr/bin/sqlite3", db], input: "INSERT INTO g_plugin_module_instance (gpmi_module, gpmi_name, gpmi_display_name, "
                 + "gpmi_parameters) VALUES ('oidc', 'oidc', 'OpenID Connect', '\(json.replacingOccurrences(of: "'", with: "''"))');\n")
        let configuration = """
            port=\(port)
            bind_address="127.0.0.1"
            external_url="\(base)"
            login_url="login.html"
            static_files_path="/usr/share/glewlwyd/webapp/"
            api_prefix="api"
            allow_origin="*"
            log_mode="console"
            log_level="INFO"
            cookie_secure=0
            session_expiration=3600
            session_key="GLEWLWYD2_SESSION_ID"
            admin_session_authentication="cookie"
            profile_session_authentication="cookie"
            allow_multiple_user_per_session=true
            login_api_enabled=true
            admin_scope="g_admin"
            profile_scope="g_profile"
            user_module_path="/usr/lib/glewlwyd/user"
            client_module_path="/usr/lib/glewlwyd/client"
            user_auth_scheme_module_path="/usr/lib/glewlwyd/scheme"
            plugin_module_path="/usr/lib/glewlwyd/plugin"
            use_secure_connection=false
            secure_connection_key_file="\(directory.path)/none.key"
            secure_connection_pem_file="\(directory.path)/none.pem"
            hash_algorithm="SHA512"
            database =
            {
              type = "sqlite3"
              path = "\(db)"
            };

            """
        let configPath = directory.appendingPathComponent("glewlwyd.conf").path
        try configuration.write(toFile: configPath, atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.binary)
        p.arguments = ["-c", configPath, "-m", "console"]
        p.currentDirectoryURL = directory
        let log = FileHandle(forWritingAtPath: "/dev/null")
        p.standardOutput = log
        p.standardError = log
        try p.run()
        process = p
        let deadline = Date().addingTimeInterval(15)
        while Date() < deadline {
            if let answer = try? await Browser.get(OIDCProviderMetadata.discoveryURL(issuer: issuer)), answer.status == 200 { return }
            guard p.isRunning else { throw GlewlwydError("glewlwyd exited at start (status \(p.terminationStatus))") }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw GlewlwydError("glewlwyd did not answer its discovery URL within 15 s")
    }

    /// A JSON request to glewlwyd's API with a session cookie; the answer's status and its session cookie.
    func api(_ method: HTTPMethod, _ path: String, json: Any?, cookie: String?) async throws -> (status: Int, cookie: String?, body: String) {
        var request = HTTPClientRequest(url: base + "/api" + path)
        request.method = method
        if let cookie { request.headers.add(name: "Cookie", value: cookie) }
        if let json {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(try JSONSerialization.data(withJSONObject: json))
        }
        let response = try await Browser.client.execute(request, timeout: .seconds(10))
        let body = String(buffer: try await response.body.collect(upTo: 1 << 20))
        let session = response.headers["Set-Cookie"].first { $0.hasPrefix("GLEWLWYD2_SESSION_ID=") }.map { String($0.split(separator: ";")[0]) }
        return (Int(response.status.code), session, body)
    }

    func testSignInThroughGlewlwydApprovesTheWaitingDevice() async throws {
        try requireProvider()
        try await startGlewlwyd()
        let callback = "http://127.0.0.1:9/oidc/callback"
        let secret = "warren-client-secret-\(UUID().uuidString.prefix(8))"

        // The administrator: a user with the openid scope, and Warren as a confidential client.
        let admin = try await api(.POST, "/auth/", json: ["username": "admin", "password": "password"], cookie: nil)
        XCTAssertEqual(admin.status, 200, admin.body)
        let aliceRecord: [String: Any] = ["username": "alice", "name": "Alice Example", "email": "alice@example.com",
                                          "password": "Alice-pass-1", "scope": ["openid", "g_profile"], "enabled": true, "groups": ["eng"]]
        let user = try await api(.POST, "/user/", json: aliceRecord, cookie: admin.cookie)
        XCTAssertEqual(user.status, 200, user.body)
        let client = try await api(.POST, "/client/", json: [
            "client_id": "warren", "name": "Warren", "confidential": true, "password": secret, "redirect_uri": [callback],
            "authorization_type": ["code"], "token_endpoint_auth_method": ["client_secret_basic", "client_secret_post"],
            "scope": ["openid"], "enabled": true,
        ], cookie: admin.cookie)
        XCTAssertEqual(client.status, 200, client.body)

        // The person signs in with the password and grants Warren the openid scope (what glewlwyd's login page does).
        let session = try await api(.POST, "/auth/", json: ["username": "alice", "password": "Alice-pass-1"], cookie: nil)
        XCTAssertEqual(session.status, 200, session.body)
        let aliceCookie = try XCTUnwrap(session.cookie)
        let grant = try await api(.PUT, "/auth/grant/warren", json: ["scope": "openid"], cookie: aliceCookie)
        XCTAssertEqual(grant.status, 200, grant.body)
        let wrongPassword = try await api(.POST, "/auth/", json: ["username": "alice", "password": "wrong"], cookie: nil)
        XCTAssertEqual(wrongPassword.status, 401, "glewlwyd refuses a wrong password")

        // Warren: an engine with a device waiting, and the sign-in flow against glewlwyd.
        let store = MemoryControlStore()
        let configuration = ControlConfiguration(serverURL: "http://127.0.0.1:9")
        let directory = try StoreDirectory(store: store, ipv4Prefix: configuration.ipv4Prefix, ipv6Prefix: configuration.ipv6Prefix)
        var logger = Logger(label: "test.glewlwyd")
        logger.logLevel = .critical
        // oidc.groups_in_policy: group:eng takes in the people glewlwyd puts in "eng".
        let policyText = """
            {"groups": {"group:eng": []}, "acls": [{"action": "accept", "src": ["group:eng"], "dst": ["group:eng:*"]}]}
            """
        let policy = CompiledPolicy(policy: try PolicyParser.parse(policyText), options: CompileOptions(providerGroups: true))
        let engine = ControlEngine(configuration: configuration, directory: directory, policy: policy, logger: logger)
        try await engine.load()
        var settings = OIDCSettings(issuer: issuer, clientID: "warren", clientSecret: secret, redirectURL: callback)
        settings.scopes = ["openid"]
        // glewlwyd sends no email_verified claim.
        settings.emailVerifiedRequired = false
        let flowStore = store
        func flow(_ adjust: (inout OIDCSettings) -> Void = { _ in }) -> OIDCLoginFlow {
            var s = settings
            adjust(&s)
            let hooks = OIDCLoginHooks(isWaiting: { await engine.isWaitingLogin(id: $0) },
                                       approve: { id, user, expiry in
                                           guard case .at(let date) = expiry else { throw GlewlwydError("expected the token's expiry, got \(expiry)") }
                                           let node = try await engine.approveInteractiveLogin(id: id, userID: user.id.rawValue,
                                                                                               keyExpiry: .some(TailcfgTime(date: date)))
                                           return OIDCApprovedNode(id: node.id, name: node.givenName)
                                       })
            return OIDCLoginFlow(relyingParty: OIDCRelyingParty(settings: s, store: flowStore, logger: logger), store: store, hooks: hooks,
                                 expiry: .fromToken, logger: logger)
        }
        var generator = SystemRandomNumberGenerator()
        func deviceLogin(_ hostname: String) async throws -> (id: String, machine: MachinePublic, request: RegisterRequest) {
            let machine = MachinePrivate.generate(using: &generator).publicKey
            var request = RegisterRequest()
            request.version = 130
            request.nodeKey = NodePrivate.generate(using: &generator).publicKey
            var info = HostinfoFields()
            info.hostname = hostname
            request.hostinfo = Hostinfo(info)
            let response = await engine.register(request, machineKey: machine)
            return (try XCTUnwrap(URL(string: response.authURL)).lastPathComponent, machine, request)
        }
        /// The browser from the device's login link through glewlwyd back to Warren's callback.
        func browse(_ flow: OIDCLoginFlow, _ login: String) async throws -> (page: OIDCPage, query: String, cookie: String) {
            let started = await flow.loginPage(id: login)
            let page = try XCTUnwrap(started)
            let location = try XCTUnwrap(page.headers["Location"])
            XCTAssertTrue(location.hasPrefix(issuer + "/auth?"), location)
            let cookie = String(try XCTUnwrap(page.headers["Set-Cookie"]).split(separator: ";")[0])
            // Without g_continue glewlwyd sends the browser to its login page first; with the session complete the
            // page continues to the same URL with g_continue, which answers with the code.
            let first = try await Browser.get(location, headers: [("Cookie", aliceCookie)])
            XCTAssertEqual(first.status, 302)
            XCTAssertTrue(first.location?.contains("login.html") == true, first.location ?? "")
            let answer = try await Browser.get(location + "&g_continue", headers: [("Cookie", aliceCookie)])
            let back = try XCTUnwrap(answer.location, "glewlwyd answered \(answer.status): \(answer.body)")
            XCTAssertTrue(back.hasPrefix(callback + "?"), back)
            let query = String(back.dropFirst(callback.count + 1))
            XCTAssertNotNil(FormEncoding.decode(query)?["code"], back)
            return (await flow.callback(query: query, cookieHeader: cookie), query, cookie)
        }

        // Refused first: alice's domain is not allowed. The device keeps waiting.
        let login = try await deviceLogin("laptop")
        let refused = try await browse(flow { $0.allowedDomains = ["example.org"] }, login.id)
        XCTAssertEqual(refused.page.status, 403, refused.page.body)
        let stillWaiting = await engine.isWaitingLogin(id: login.id)
        XCTAssertTrue(stillWaiting)

        // Then the sign-in that goes through, while the device polls.
        var followup = login.request
        followup.followup = "http://127.0.0.1:9/register/" + login.id
        let machine = login.machine
        let poll = Task { await engine.register(followup, machineKey: machine) }
        let goodFlow = flow()
        let good = try await browse(goodFlow, login.id)
        XCTAssertEqual(good.page.status, 200, good.page.body)
        let hashesChecked = await goodFlow.relyingParty.accessTokenHashesChecked
        XCTAssertEqual(hashesChecked, 1, "glewlwyd's ID token carries at_hash, and it matches its access token")
        let answer = await poll.value
        XCTAssertEqual(answer.error, "")
        XCTAssertEqual(answer.authURL, "")
        let users = try await store.read { try $0.users() }
        XCTAssertEqual(users.count, 1)
        let owner = try XCTUnwrap(users.first)
        XCTAssertEqual(owner.email, "alice@example.com")
        XCTAssertEqual(owner.displayName, "Alice Example")
        XCTAssertTrue(owner.providerID?.hasPrefix(issuer + "/") == true, owner.providerID ?? "nil")
        XCTAssertEqual(owner.provider, "oidc")
        let nodes = await engine.allNodes()
        XCTAssertEqual(nodes.map(\.userID), [owner.id.rawValue], "the device's node belongs to the user from the token")
        // use_expiry_from_token: the node key expires with glewlwyd's ID token (an hour).
        let expiry = try XCTUnwrap(nodes.first?.keyExpiry)
        XCTAssertLessThan(expiry, TailcfgTime(date: Date().addingTimeInterval(3_700)))

        // The same callback again (a replay): refused, nothing changes.
        let replay = await goodFlow.callback(query: good.query, cookieHeader: good.cookie)
        XCTAssertEqual(replay.status, 410)
        let laptopID = NodeID(try XCTUnwrap(nodes.first?.id))
        let method = try await store.read { try $0.node(id: laptopID)?.registerMethod }
        XCTAssertEqual(method, .oidc, "a node that signs in is recorded as oidc")

        // glewlwyd's groups claim: stored with the user, and group:eng takes alice in.
        XCTAssertEqual(owner.providerGroups, ["eng"])
        func peers(of name: String) async throws -> [String] {
            let tailnet = await engine.policyTailnet()
            return PolicyEngine(policy: try PolicyParser.parse(policyText), tailnet: tailnet).peers(for: name).sorted()
        }
        let phone = try await deviceLogin("phone")
        let phonePage = try await browse(goodFlow, phone.id).page
        XCTAssertEqual(phonePage.status, 200, phonePage.body)
        let laptopName = try XCTUnwrap(nodes.first?.givenName)
        let bothInEng = try await peers(of: laptopName)
        XCTAssertEqual(bothInEng, ["phone"], "in group:eng, alice's devices reach each other")

        // The administrator moves alice from eng to ops at glewlwyd; her next sign-in drops the group, and with it
        // what group:eng allowed.
        var moved = aliceRecord
        moved["groups"] = ["ops"]
        moved["password"] = nil
        let update = try await api(.PUT, "/user/alice", json: moved, cookie: admin.cookie)
        XCTAssertEqual(update.status, 200, update.body)
        let tablet = try await deviceLogin("tablet")
        let tabletPage = try await browse(goodFlow, tablet.id).page
        XCTAssertEqual(tabletPage.status, 200, tabletPage.body)
        let after = try await store.read { try $0.user(id: owner.id) }
        XCTAssertEqual(after?.providerGroups, ["ops"])
        let noneInEng = try await peers(of: laptopName)
        XCTAssertEqual(noneInEng, [], "out of group:eng, alice's devices no longer reach each other")
    }
}
