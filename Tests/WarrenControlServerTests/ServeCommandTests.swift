// `warren-control serve` as a program: a bad configuration names the key and exits non-zero; a good one
// serves /key on the address given. Uses the built binary next to the tests.

import Foundation
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
}
