// `warren-control serve` on PostgreSQL, end to end with the built binary: Warren's own layout with
// `database: {type: postgres, postgres: {...}}` (TCP with a password), `configtest` showing it without the password,
// a user and a pre-auth key created through the CLI, kept across a restart, and stored in the database (not in a
// SQLite file). The PostgreSQL server is the test process's own (PostgresTestServer, /tmp/warren-pgtest-*);
// everything else listens on loopback; the temporary directory (/tmp/wcpg-*) is removed afterwards.

import Foundation
import WarrenTestProbes
import WarrenTestSupport
import XCTest

final class PostgresServeTests: XCTestCase {
    var directory = ""

    override func setUpWithError() throws {
        directory = "/tmp/wcpg-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    func postgres() throws -> PostgresTestServer {
        do {
            return try PostgresTestServer.shared()
        } catch let error as PostgresTestServer.Unavailable where !error.required {
            throw XCTSkip(error.description)
        }
    }

    func run(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        try HeadscaleConfigServeTests.runWarrenControl(arguments)
    }

    /// Starts `serve`, waits for its "point clients at" line, calls `body`, then ends it with SIGTERM.
    func serving(config: String, _ body: () throws -> Void) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try RealTailscaleClientTests.warrenControlBinary())
        process.arguments = ["serve", "--config", config]
        let output = Pipe(), errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        let errorData = PostgresServeReadBox()
        let errorsRead = DispatchSemaphore(value: 0)
        DispatchQueue.global().async { errorData.data = errors.fileHandleForReading.readDataToEndOfFile(); errorsRead.signal() }
        var text = ""
        while !text.contains("point clients at") {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            text += String(decoding: chunk, as: UTF8.self)
        }
        defer {
            kill(process.processIdentifier, SIGTERM)
            process.waitUntilExit()
            errorsRead.wait()
        }
        guard text.contains("point clients at") else {
            process.waitUntilExit()
            errorsRead.wait()
            XCTFail("serve did not start: \(text)\n\(String(decoding: errorData.data, as: UTF8.self))")
            return
        }
        try body()
    }

    func testServeOnPostgreSQLKeepsUsersAndKeysAcrossARestart() throws {
        let server = try postgres()
        let database = try server.createDatabase(prefix: "serve")
        let listen = try LoopbackPort.free()
        let config = directory + "/config.yaml"
        try """
            listen_addr: 127.0.0.1:\(listen)
            metrics_listen_addr: "off"
            state_dir: \(directory)/state
            derp:
              enabled: false
            database:
              type: postgres
              postgres:
                host: 127.0.0.1
                port: \(server.port)
                name: \(database)
                user: \(server.user)
                pass: \(server.password)
                ssl: false
                max_open_conns: 3
            """.write(toFile: config, atomically: true, encoding: .utf8)

        let tested = try run(["configtest", "--config", config])
        XCTAssertEqual(tested.status, 0, tested.stderr)
        XCTAssertTrue(tested.stdout.contains("database: postgres \(server.user)@127.0.0.1:\(server.port)/\(database) (tls disable, 3 connections at most)"),
                      tested.stdout)
        XCTAssertFalse(tested.stdout.contains(server.password), "configtest printed the password")

        var keyPrefix = ""
        try serving(config: config) {
            let created = try run(["users", "create", "alice", "--config", config])
            XCTAssertEqual(created.status, 0, created.stderr)
            let key = try run(["preauthkeys", "create", "--user", "alice", "--reusable", "--expiration", "never", "--config", config])
            XCTAssertEqual(key.status, 0, key.stderr)
            let text = key.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            XCTAssertTrue(text.hasPrefix("wkey-auth-"), text)
            keyPrefix = String(text.dropFirst("wkey-auth-".count).prefix(12))
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory + "/state/warren.sqlite"), "a SQLite store was made too")
        let stored = try server.psql("SELECT name FROM users ORDER BY id", database: database)
        XCTAssertEqual(stored.trimmingCharacters(in: .whitespacesAndNewlines), "alice")

        // Restarted: the same user and key, from the database.
        try serving(config: config) {
            let users = try run(["users", "list", "--config", config])
            XCTAssertEqual(users.status, 0, users.stderr)
            XCTAssertTrue(users.stdout.contains("alice"), users.stdout)
            let keys = try run(["preauthkeys", "list", "--user", "alice", "--config", config])
            XCTAssertEqual(keys.status, 0, keys.stderr)
            XCTAssertTrue(!keyPrefix.isEmpty && keys.stdout.contains(keyPrefix), "\(keyPrefix) in \(keys.stdout)")
            let again = try run(["users", "create", "alice", "--config", config])
            XCTAssertNotEqual(again.status, 0, "a second alice was created: \(again.stdout)")
        }
    }

    func testServeRefusesAPostgreSQLServerItCannotLogInTo() throws {
        let server = try postgres()
        let config = directory + "/config.yaml"
        try """
            listen_addr: 127.0.0.1:0
            metrics_listen_addr: "off"
            state_dir: \(directory)/state
            derp:
              enabled: false
            database:
              type: postgres
              postgres:
                host: 127.0.0.1
                port: \(server.port)
                name: postgres
                user: \(server.user)
                pass: wrong-password-here
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let served = try run(["serve", "--config", config])
        XCTAssertEqual(served.status, 1, served.stderr)
        XCTAssertTrue(served.stderr.contains("password authentication failed"), served.stderr)
        XCTAssertFalse(served.stderr.contains("wrong-password-here"), served.stderr)
    }
}

/// A pipe's bytes, read on another thread.
private final class PostgresServeReadBox: @unchecked Sendable {
    var data = Data()
}
