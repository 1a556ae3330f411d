// A headscale config.yaml (headscale v0.29.2's layout and defaults, written here) served by the built
// warren-control: the headscale keys are honoured (listen address, Noise key, SQLite path relative to the file,
// unix socket and its mode, DERP region), each headscale key Warren does not implement is warned about exactly
// once, typos are refused naming the key, an incomplete postgres section and headscale's own database are refused; `configtest` prints
// the settings in effect and exits 0 or 1; `log.format: json` writes one JSON object per line; `version` answers.
// Everything listens on loopback; the temporary directory (/tmp/wchs-*) is removed afterwards.

import Foundation
import GRDB
import TailscaleKeys
import WarrenControlClient
import WarrenTestProbes
import XCTest

final class HeadscaleConfigServeTests: XCTestCase {
    var directory = ""

    override func setUpWithError() throws {
        // Short: the unix socket path must fit in 108 bytes.
        directory = "/tmp/wchs-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// A free loopback TCP (or UDP) port.
    func freePort(udp: Bool = false) throws -> Int { try LoopbackPort.free(udp: udp) }

    /// headscale's config-example.yaml of v0.29.2 as a user keeps it: its keys, nesting and defaults, with the
    /// paths and ports of this test (everything on loopback), the embedded relay on, and one Warren key
    /// (`derp.port`, which headscale has no key for) beside the headscale keys of `derp`.
    func headscaleConfig(listen: Int, metrics: Int, stun: Int, derp: Int, extra: String = "", logFormat: String = "text") -> String {
        """
        ---
        server_url: http://127.0.0.1:\(listen)
        listen_addr: 127.0.0.1:\(listen)
        metrics_listen_addr: 127.0.0.1:\(metrics)
        grpc_listen_addr: 127.0.0.1:50443
        grpc_allow_insecure: false
        trusted_proxies: []
        noise:
          private_key_path: \(directory)/lib/noise_private.key
        prefixes:
          v4: 100.64.0.0/10
          v6: fd7a:115c:a1e0::/48
          allocation: sequential
        derp:
          server:
            enabled: true
            region_id: 999
            region_code: "headscale"
            region_name: "Headscale Embedded DERP"
            verify_clients: true
            stun_listen_addr: "127.0.0.1:\(stun)"
            private_key_path: \(directory)/lib/derp_server_private.key
            automatically_add_embedded_derp_region: true
            ipv4: 198.51.100.1
            ipv6: 2001:db8::1
          port: \(derp)
          urls:
            # headscale's example names Tailscale's public map; the test sends nothing off this machine, so the URL is
            # a loopback port nobody listens on (the fetch fails at once, is logged, and the other sources apply).
            - http://127.0.0.1:9/derpmap/default
          paths: []
          auto_update_enabled: true
          update_frequency: 3h
        disable_check_updates: false
        node:
          expiry: 0
          ephemeral:
            inactivity_timeout: 30m
          routes:
            ha:
              probe_interval: 10s
              probe_timeout: 5s
        database:
          type: sqlite
          debug: false
          gorm:
            prepare_stmt: true
            parameterized_queries: true
            skip_err_record_not_found: true
            slow_threshold: 1000
          sqlite:
            path: data/db.sqlite
            write_ahead_log: true
            wal_autocheckpoint: 1000
        acme_url: https://acme-v02.api.letsencrypt.org/directory
        acme_email: ""
        tls_letsencrypt_hostname: ""
        tls_letsencrypt_cache_dir: \(directory)/cache
        tls_letsencrypt_challenge_type: HTTP-01
        tls_letsencrypt_listen: ":http"
        tls_cert_path: ""
        tls_key_path: ""
        log:
          level: info
          format: \(logFormat)
        policy:
          mode: file
          path: ""
        dns:
          magic_dns: true
          base_domain: example.com
          override_local_dns: true
          nameservers:
            global:
              - 1.1.1.1
              - 1.0.0.1
              - 2606:4700:4700::1111
              - 2606:4700:4700::1001
            split: {}
          search_domains: []
          extra_records: []
        unix_socket: \(directory)/run/headscale.sock
        unix_socket_permission: "0770"
        logtail:
          enabled: false
        taildrop:
          enabled: true
        auto_update:
          enabled: false
        \(extra)
        """
    }

    /// The headscale keys of that file that Warren knows but does not implement, as warned about.
    static let expectedWarnings = [
        "grpc_listen_addr: not implemented", "node.routes.ha.probe_interval: not implemented",
        "node.routes.ha.probe_timeout: not implemented", "logtail.enabled: not implemented", "taildrop.enabled: not implemented",
    ]
    /// Keys of that file whose values ask for nothing Warren lacks: never warned about.
    static let quietKeys = ["grpc_allow_insecure", "trusted_proxies", "disable_check_updates", "acme_url", "tls_letsencrypt",
                            "database.gorm", "write_ahead_log", "wal_autocheckpoint", "verify_clients", "auto_update.enabled",
                            "derp.paths", "derp.urls", "derp.auto_update_enabled", "derp.update_frequency",
                            "override_local_dns", "prefixes.allocation"]

    func run(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        try Self.runWarrenControl(arguments)
    }

    /// Runs the built warren-control to its end (the serve-binary tests share it).
    static func runWarrenControl(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try RealTailscaleClientTests.warrenControlBinary())
        process.arguments = arguments
        let output = Pipe(), errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        // Both pipes drained at once: a full one would block the child.
        let group = DispatchGroup()
        let errorData = ReadBox()
        group.enter()
        DispatchQueue.global().async { errorData.data = errors.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        let outputData = output.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: outputData, as: UTF8.self), String(decoding: errorData.data, as: UTF8.self))
    }

    /// Starts `serve`, waits for its "point clients at" line, calls `body`, then ends it with SIGTERM and returns
    /// its standard error.
    func serving(config: String, _ body: () async throws -> Void) async throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try RealTailscaleClientTests.warrenControlBinary())
        process.arguments = ["serve", "--state-dir", directory + "/state", "--config", config]
        let output = Pipe(), errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        let errorData = ReadBox()
        let errorsRead = DispatchSemaphore(value: 0)
        DispatchQueue.global().async { errorData.data = errors.fileHandleForReading.readDataToEndOfFile(); errorsRead.signal() }
        var text = ""
        while !text.contains("point clients at") {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            text += String(decoding: chunk, as: UTF8.self)
        }
        do {
            XCTAssertTrue(text.contains("point clients at"), "serve did not start: \(text)")
            if text.contains("point clients at") { try await body() }
        } catch {
            kill(process.processIdentifier, SIGTERM)
            process.waitUntilExit()
            throw error
        }
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        errorsRead.wait()
        XCTAssertEqual(process.terminationStatus, 0)
        return String(decoding: errorData.data, as: UTF8.self)
    }

    func testAHeadscaleConfigurationServesWithOneWarningPerUnimplementedKey() async throws {
        let (listen, metrics, stun, derp) = (try freePort(), try freePort(), try freePort(udp: true), try freePort())
        let config = directory + "/config.yaml"
        try headscaleConfig(listen: listen, metrics: metrics, stun: stun, derp: derp)
            .write(toFile: config, atomically: true, encoding: .utf8)
        let stderr = try await serving(config: config) {
            // The control listener answers on headscale's listen_addr with the key from noise.private_key_path.
            let key = try await ControlClient.fetchKey(host: "127.0.0.1", port: listen)
            let stored = try String(contentsOfFile: directory + "/lib/noise_private.key", encoding: .utf8)
            let privateKey = try MachinePrivate(parsing: stored.trimmingCharacters(in: .whitespacesAndNewlines))
            XCTAssertEqual(key.publicKey, privateKey.publicKey)
            let health = String(decoding: try await ControlClient.rawHTTP(
                host: "127.0.0.1", port: listen, request: "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), as: UTF8.self)
            XCTAssertTrue(health.hasPrefix("HTTP/1.1 200"), health)
            // metrics_listen_addr is served.
            let metricsText = String(decoding: try await ControlClient.rawHTTP(
                host: "127.0.0.1", port: metrics, request: "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), as: UTF8.self)
            XCTAssertTrue(metricsText.hasPrefix("HTTP/1.1 200"), String(metricsText.prefix(200)))
            // database.sqlite.path, relative to the configuration file's directory, holds the store; not the state directory.
            XCTAssertTrue(FileManager.default.fileExists(atPath: directory + "/data/db.sqlite"))
            XCTAssertFalse(FileManager.default.fileExists(atPath: directory + "/state/warren.sqlite"))
            XCTAssertTrue(FileManager.default.fileExists(atPath: directory + "/lib/derp_server_private.key"))
            // unix_socket with unix_socket_permission; the admin commands find it through --config.
            let attributes = try FileManager.default.attributesOfItem(atPath: directory + "/run/headscale.sock")
            XCTAssertEqual((attributes[.posixPermissions] as? Int).map { String($0, radix: 8) }, "770")
            XCTAssertFalse(FileManager.default.fileExists(atPath: directory + "/state/admin.sock"))
            let created = try run(["users", "create", "alice", "--config", config])
            XCTAssertEqual(created.status, 0, created.stderr)
            let listed = try run(["users", "list", "--config", config])
            XCTAssertEqual(listed.status, 0, listed.stderr)
            XCTAssertTrue(listed.stdout.contains("alice"), listed.stdout)
        }
        for warning in Self.expectedWarnings {
            XCTAssertEqual(stderr.components(separatedBy: warning).count - 1, 1, "\"\(warning)\" once in:\n\(stderr)")
        }
        let warningLines = stderr.split(separator: "\n").filter { $0.contains("configuration: ") && $0.contains("not implemented") }
        XCTAssertEqual(warningLines.count, Self.expectedWarnings.count, warningLines.joined(separator: "\n"))
        for key in Self.quietKeys {
            XCTAssertFalse(warningLines.contains { $0.contains(key) }, "\(key) warned about:\n\(stderr)")
        }
        // The relay's region is headscale's.
        XCTAssertTrue(stderr.contains("embedded DERP relay ready"), stderr)
    }

    func testTyposAndConflictsAreRefusedNamingTheKey() throws {
        let cases: [(String, String)] = [
            ("node:\n  expiryy: 1d\n", "node.expiryy: unknown key"),
            ("derp:\n  server:\n    regon_id: 999\n", "derp.server.regon_id: unknown key"),
            ("dns:\n  nameservers:\n    globl: [1.1.1.1]\n", "dns.nameservers.globl: unknown key"),
            ("listen_adr: 127.0.0.1:0\n", "listen_adr: unknown key"),
            ("dns_config:\n  magic_dns: true\n", "dns_config: unknown key (headscale renamed it dns)"),
            ("acl_policy_path: /etc/headscale/acl.hujson\n", "acl_policy_path: unknown key (headscale renamed it policy.path)"),
            // The reader's errors name the key the file used.
            ("dns:\n  nameservers:\n    global: [1.1.1.1, not-a-server]\n", "dns.nameservers.global[1]: \"not-a-server\" is not an IP"),
            ("node:\n  expiry: soon\n", "node.expiry: expected a duration"),
            ("tls_cert_path: /nonexistent/wchs.pem\n", "tls_key_path: missing"),
            ("log:\n  level: loud\n", "log.level: expected one of panic, fatal, error, warn, info, debug, trace"),
            ("log:\n  format: xml\n", "log.format: expected text or json"),
            ("policy:\n  mode: git\n", "policy.mode: expected file or database"),
            ("prefixes:\n  allocation: shuffled\n", "prefixes.allocation: expected sequential or random"),
            ("unix_socket_permission: \"0999\"\n", "unix_socket_permission: expected an octal mode"),
            // The two layouts may not both set one thing.
            ("log_level: debug\nlog:\n  level: info\n", "log_level (Warren's layout) and log.level (headscale's layout) set the same thing"),
            ("base_domain: a.example\ndns:\n  base_domain: b.example\n", "base_domain (Warren's layout) and dns.base_domain"),
            ("derp:\n  enabled: false\n  server:\n    enabled: true\n", "derp.enabled (Warren's layout) and derp.server.enabled"),
            ("node_key_expiry: 1d\nnode:\n  expiry: 2d\n", "node_key_expiry (Warren's layout) and node.expiry"),
            // database: honoured or refused, never ignored.
            ("database:\n  type: postgres\n  postgres:\n    host: localhost\n", "database.postgres.name: missing (needed with database.type: postgres)"),
            ("database:\n  type: postgres\n  postgres:\n    host: localhost\n    name: w\n    user: w\n    ssl: sometimes\n",
             "database.postgres.ssl: expected true, false, or one of disable"),
            ("database:\n  type: postgres\n  postgres:\n    host: localhost\n    name: w\n    user: w\n    port: 70000\n",
             "database.postgres.port: expected a port number"),
            ("database:\n  sqlite:\n    path: /tmp/x.sqlite\n", "database.type: missing"),
            ("database:\n  type: mysql\n", "database.type: \"mysql\" is not a database type"),
        ]
        for (yaml, expected) in cases {
            try yaml.write(toFile: directory + "/bad.yaml", atomically: true, encoding: .utf8)
            let served = try run(["serve", "--state-dir", directory + "/state", "--listen", "127.0.0.1:0",
                                  "--metrics-listen", "off", "--config", directory + "/bad.yaml"])
            XCTAssertEqual(served.status, 2, "\(yaml) -> \(served.stderr)")
            XCTAssertTrue(served.stderr.contains(expected), "expected \"\(expected)\" in: \(served.stderr)")
            let tested = try run(["configtest", "--config", directory + "/bad.yaml"])
            XCTAssertEqual(tested.status, 1, "\(yaml) -> \(tested.stderr)")
            XCTAssertTrue(tested.stderr.contains(expected), "configtest: expected \"\(expected)\" in: \(tested.stderr)")
            XCTAssertTrue(tested.stdout.contains("FAILED"), tested.stdout)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory + "/state"), "a refused configuration wrote state")
    }

    /// database.sqlite.path naming headscale's own database is refused, and the file is left as it was.
    func testHeadscalesOwnDatabaseIsRefusedAndLeftAlone() throws {
        let path = directory + "/db.sqlite"
        let queue = try DatabaseQueue(path: path)
        try queue.write { db in
            try db.execute(sql: """
                CREATE TABLE users (id integer PRIMARY KEY, name text);
                CREATE TABLE nodes (id integer PRIMARY KEY, machine_key text);
                CREATE TABLE pre_auth_keys (id integer PRIMARY KEY, key text);
                CREATE TABLE migrations (id text PRIMARY KEY);
                """)
        }
        try queue.close()
        let before = try Data(contentsOf: URL(fileURLWithPath: path))
        try "database:\n  type: sqlite3\n  sqlite:\n    path: \(path)\n".write(toFile: directory + "/c.yaml", atomically: true, encoding: .utf8)
        let served = try run(["serve", "--state-dir", directory + "/state", "--listen", "127.0.0.1:0", "--metrics-listen", "off",
                              "--config", directory + "/c.yaml"])
        XCTAssertEqual(served.status, 2, served.stderr)
        XCTAssertTrue(served.stderr.contains("database \(path) holds headscale's tables"), served.stderr)
        let tested = try run(["configtest", "--config", directory + "/c.yaml"])
        XCTAssertEqual(tested.status, 1)
        XCTAssertTrue(tested.stderr.contains("holds headscale's tables"), tested.stderr)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path)), before)
    }

    func testConfigtestPrintsTheSettingsInEffectAndTheWarnings() throws {
        let config = directory + "/config.yaml"
        try headscaleConfig(listen: 18080, metrics: 19090, stun: 13478, derp: 18443)
            .write(toFile: config, atomically: true, encoding: .utf8)
        let result = try run(["configtest", "--config", config])
        XCTAssertEqual(result.status, 0, result.stderr)
        let lines = Set(result.stdout.split(separator: "\n").map(String.init))
        for expected in [
            "layout: headscale's (", "server_url: http://127.0.0.1:18080", "listen_addr: 127.0.0.1:18080",
            "metrics_listen_addr: 127.0.0.1:19090", "database: sqlite \(directory)/data/db.sqlite",
            "noise private key: \(directory)/lib/noise_private.key", "admin socket: \(directory)/run/headscale.sock (mode 0770)",
            "base_domain: example.com", "dns.nameservers: 1.1.1.1, 1.0.0.1, 2606:4700:4700::1111, 2606:4700:4700::1001",
            "node_key_expiry: never", "ephemeral_inactivity_timeout: 30m", "log: info, text", "policy: database (policy set)",
            "derp: embedded relay, region 999 headscale \"Headscale Embedded DERP\", port 18443, stun 13478, ipv4 198.51.100.1, ipv6 2001:db8::1",
            "warnings: \(Self.expectedWarnings.count)", "configuration \(config): OK",
        ] {
            XCTAssertTrue(lines.contains { $0.hasPrefix(expected) }, "no line \"\(expected)\" in:\n\(result.stdout)")
        }
        for warning in Self.expectedWarnings {
            XCTAssertEqual(result.stdout.components(separatedBy: "  warning: " + warning).count - 1, 1, result.stdout)
        }
        // configtest binds nothing and writes nothing.
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory + "/data"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory + "/lib"))

        // Warren's own layout keeps working, with Warren's defaults.
        try "state_dir: \(directory)/w\nbase_domain: lab.warren\nnode_key_expiry: 90d\nlog_level: debug\n"
            .write(toFile: directory + "/w.yaml", atomically: true, encoding: .utf8)
        let warren = try run(["configtest", "--config", directory + "/w.yaml"])
        XCTAssertEqual(warren.status, 0, warren.stderr)
        for expected in ["layout: Warren's", "database: sqlite \(directory)/w/warren.sqlite", "base_domain: lab.warren",
                         "node_key_expiry: 90d", "log: debug, text", "warnings: 0", "derp: embedded relay, region 900 warren"] {
            XCTAssertTrue(warren.stdout.contains(expected), "no \"\(expected)\" in:\n\(warren.stdout)")
        }
        // A headscale extra_records_path is read (and its not being watched is said once).
        try #"[{"name": "grafana.example.com", "type": "A", "value": "100.64.0.3"}]"#
            .write(toFile: directory + "/records.json", atomically: true, encoding: .utf8)
        try "dns:\n  base_domain: example.com\n  extra_records_path: records.json\n"
            .write(toFile: directory + "/r.yaml", atomically: true, encoding: .utf8)
        let records = try run(["configtest", "--config", directory + "/r.yaml"])
        XCTAssertEqual(records.status, 0, records.stderr)
        XCTAssertTrue(records.stdout.contains("dns.extra_records: 1"), records.stdout)
        XCTAssertTrue(records.stdout.contains("warning: dns.extra_records_path: read once at start"), records.stdout)
    }

    func testJSONLogFormatWritesOneObjectPerLine() async throws {
        let config = directory + "/config.yaml"
        let listen = try freePort()
        try headscaleConfig(listen: listen, metrics: try freePort(), stun: try freePort(udp: true), derp: try freePort(),
                            logFormat: "json")
            .write(toFile: config, atomically: true, encoding: .utf8)
        let stderr = try await serving(config: config) {
            // serve prints its URL just before it installs its SIGTERM handler: let it get there.
            _ = try await ControlClient.fetchKey(host: "127.0.0.1", port: listen)
            try await Task.sleep(for: .milliseconds(300))
        }
        let lines = stderr.split(separator: "\n")
        XCTAssertGreaterThan(lines.count, Self.expectedWarnings.count)
        var messages: [String] = []
        for line in lines {
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            let fields = try XCTUnwrap(object, String(line))
            XCTAssertNotNil(fields["time"] as? String)
            XCTAssertNotNil(fields["level"] as? String)
            XCTAssertEqual(fields["logger"] as? String, "warren.control")
            messages.append(try XCTUnwrap(fields["message"] as? String))
        }
        XCTAssertTrue(messages.contains { $0.hasPrefix("configuration: grpc_listen_addr: not implemented") }, "\(messages)")
        XCTAssertTrue(lines.contains { $0.contains(#""level":"warning""#) })
    }

    func testVersionPrintsTheVersionAndTheBuild() throws {
        let result = try run(["version"])
        XCTAssertEqual(result.status, 0)
        let lines = result.stdout.split(separator: "\n")
        XCTAssertEqual(lines.first, "warren-control 0.1.0")
        XCTAssertTrue(lines.count == 2 && lines[1].hasPrefix("build: sha256 ") && lines[1].contains("swift "), result.stdout)
    }
}

/// What a reader thread read, handed over after it signals (the signal orders the accesses).
private final class ReadBox: @unchecked Sendable {
    var data = Data()
}
