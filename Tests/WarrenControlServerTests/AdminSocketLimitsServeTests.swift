// `listeners.admin` in serve's YAML file bounds the admin socket (issue 14 point 1): its cap closes the excess at
// accept and its handshake timeout closes silent connections, while the CLI still gets through; a bad value is
// refused at start, naming the key.

import Foundation
import Glibc
import WarrenTestProbes
import XCTest

final class AdminSocketLimitsServeTests: XCTestCase {
    func testListenersAdminBoundsTheAdminSocket() throws {
        let served = try ServedControl(prefix: "wab-adminsock", config: """
            derp:
              enabled: false
            listeners:
              admin: {max_connections: 3, handshake_timeout: 1s, idle_timeout: 1s}

            """)
        defer { served.stop() }
        let path = served.stateDir + "/admin.sock"
        let held = try (0..<3).map { _ in try BoundsProbe.unix(path: path) }
        usleep(200_000)
        let extra = try BoundsProbe.unix(path: path)
        XCTAssertTrue(extra.isClosed(within: 0.5), "a connection over listeners.admin.max_connections stayed open")
        let started = Date()
        for probe in held { XCTAssertTrue(probe.isClosed(within: 5), "a silent admin connection stayed open") }
        let took = Date().timeIntervalSince(started)
        XCTAssertLessThan(took, 4, "silent admin connections closed after \(took) s with handshake_timeout 1s")
        // The CLI works once they are gone.
        try served.cli(["users", "create", "after"])
    }

    func testABadAdminListenerValueIsRefusedNamingTheKey() throws {
        let binary = try ServedControl.binary()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("wab-adminbad-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try "listeners:\n  admin:\n    max_connections: -1\n".write(toFile: directory + "/c.yaml", atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["serve", "--state-dir", directory + "/state", "--listen", "127.0.0.1:0", "--metrics-listen", "off",
                             "--config", directory + "/c.yaml"]
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let data = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        XCTAssertEqual(process.terminationStatus, 2, text)
        XCTAssertTrue(text.contains("listeners.admin.max_connections"), text)
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory + "/state"))
    }
}
