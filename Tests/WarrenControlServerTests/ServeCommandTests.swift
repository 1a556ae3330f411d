// `warren-control serve` as a program: a bad configuration names the key and exits non-zero; a good one
// serves /key on the address given. Uses the built binary next to the tests.

import Foundation
import WarrenControlClient
import XCTest

final class ServeCommandTests: XCTestCase {
    func runServe(config: String, extra: [String] = [], waitForExit: Bool = true) throws -> (status: Int32, stderr: String) {
        let binary = try RealTailscaleClientTests.warrenControlBinary()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("wct-serve-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try config.write(toFile: directory + "/c.yaml", atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["serve", "--state-dir", directory + "/state", "--listen", "127.0.0.1:0", "--config", directory + "/c.yaml"] + extra
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let data = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    func testBadConfigurationsNameTheKeyAndExitNonZero() throws {
        let cases: [(String, String)] = [
            ("base_domain: lab.warren\nbogus_key: 1\n", "bogus_key: unknown key"),
            ("prefixes:\n  v4: fd00::/64\n", "prefixes.v4: expected an IPv4 prefix"),
            ("dns:\n  nameservers: [1.1.1.1, 7]\n", "dns.nameservers[1]: expected a string"),
            ("node_key_expiry: soon\n", "node_key_expiry: expected a duration"),
            // Sums that do not fit in the duration are refused, not a crash.
            ("keep_alive_interval: 9223372036854775807ms9223372036854775807ms\n", "keep_alive_interval: expected a duration"),
            ("node_key_expiry: 106751991168d\n", "node_key_expiry: expected a duration"),
            ("node_key_expiry: 40000d\n", "node_key_expiry: at most 36500d"),
            ("map_update_interval: 5x\n", "map_update_interval: expected a duration"),
            ("map_update_interval: ms\n", "map_update_interval: expected a duration"),
            ("derp:\n  port: 70000\n", "derp.port: expected a port number"),
            ("log_level: loud\n", "log_level: expected one of"),
            ("dns:\n  extra_records:\n    - name: db\n      value: not-an-ip\n", "dns.extra_records[0].value: expected an IP address"),
            ("- just\n- a list\n", "the top level must be a mapping"),
        ]
        for (yaml, expected) in cases {
            let (status, stderr) = try runServe(config: yaml)
            XCTAssertEqual(status, 2, "\(yaml) -> \(stderr)")
            XCTAssertTrue(stderr.contains(expected), "expected \"\(expected)\" in: \(stderr)")
        }
    }

    func testBadTLSSettingsNameTheKeyAndExitNonZero() throws {
        let cases: [(String, String)] = [
            ("tls:\n  cert_file: /nonexistent/wcg.pem\n  key_file: /nonexistent/wcg.key\n",
             "tls.cert_file: cannot read /nonexistent/wcg.pem"),
            ("tls:\n  cert_file: /etc/passwd\n  key_file: /nonexistent/wcg.key\n", "tls.key_file: cannot read /nonexistent/wcg.key"),
            ("tls:\n  cert_file: /etc/passwd\n  key_file: /etc/passwd\n", "tls.cert_file: /etc/passwd holds no PEM certificate"),
            ("tls:\n  key_file: /etc/passwd\n", "tls.cert_file: missing"),
            ("tls: yes\n", "tls: expected a mapping with cert_file and key_file"),
            ("tls:\n  cert: a.pem\n", "tls.cert: unknown key"),
        ]
        for (yaml, expected) in cases {
            let (status, stderr) = try runServe(config: yaml)
            XCTAssertEqual(status, 2, "\(yaml) -> \(stderr)")
            XCTAssertTrue(stderr.contains(expected), "expected \"\(expected)\" in: \(stderr)")
        }
    }

    /// With `tls`, serve prints an https:// URL and answers /key only over TLS, with the configured certificate.
    func testServeWithTLSPrintsAnHTTPSURLAndServesTheKeyOverTLS() async throws {
        let binary = try RealTailscaleClientTests.warrenControlBinary()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("wcg-serve-tls-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let ca = try TestCA.make(in: directory + "/ca")
        try """
            tls:
              cert_file: \(ca.certificateFile)
              key_file: \(ca.keyFile)
            derp:
              enabled: false
            metrics_listen_addr: "off"
            """.write(toFile: directory + "/c.yaml", atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["serve", "--state-dir", directory + "/state", "--listen", "127.0.0.1:0", "--config", directory + "/c.yaml"]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer {
            if process.isRunning { kill(process.processIdentifier, SIGTERM) }
            process.waitUntilExit()
        }
        // The first line names the URL: "... point clients at: https://127.0.0.1:PORT".
        var text = ""
        let handle = output.fileHandleForReading
        while !text.contains("\n") {
            let chunk = handle.availableData
            if chunk.isEmpty { break }
            text += String(decoding: chunk, as: UTF8.self)
        }
        let marker = try XCTUnwrap(text.range(of: "point clients at: "), text)
        let url = String(text[marker.upperBound...].prefix { !$0.isWhitespace })
        XCTAssertTrue(url.hasPrefix("https://127.0.0.1:"), url)
        let port = try XCTUnwrap(Int(url.split(separator: ":").last ?? ""))
        let keys = try await ControlClient.fetchKey(host: "127.0.0.1", port: port, tls: try ca.clientContext())
        XCTAssertFalse(keys.publicKey.raw.isZero)
        let plain = try? await ControlClient.fetchKey(host: "127.0.0.1", port: port)
        XCTAssertNil(plain)
        // The admin REST API and /verify are on the same HTTPS listener.
        let context = try ca.clientContext()
        func get(_ request: String) async throws -> String {
            String(decoding: try await ControlClient.rawHTTP(host: "127.0.0.1", port: port, tls: context, request: request), as: UTF8.self)
        }
        let openAPI = try await get("GET /api/v1/openapi.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        XCTAssertTrue(openAPI.hasPrefix("HTTP/1.1 200") && openAPI.contains("/api/v1/nodes/{node}/approve"), String(openAPI.prefix(300)))
        let nodes = try await get("GET /api/v1/nodes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        XCTAssertTrue(nodes.hasPrefix("HTTP/1.1 401"), String(nodes.prefix(300)))
        let body = #"{"NodePublic":"nodekey:0000000000000000000000000000000000000000000000000000000000000001","Source":""}"#
        let verify = try await get("POST /verify HTTP/1.1\r\nHost: x\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body)
        XCTAssertTrue(verify.hasSuffix(#"{"Allow":false}"#), verify)
    }
}
