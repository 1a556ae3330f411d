import Foundation
import TailscaleKeys
import WarrenControlAdmin
import WarrenControlSQLite
import WarrenControlStore
import WarrenPacket
import WarrenTestSupport
import XCTest

/// The result of one `warren-control` run.
struct CommandResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

enum CLI {
    /// The `warren-control` built beside this test binary.
    static func binary() throws -> URL {
        let testBinary = URL(fileURLWithPath: CommandLine.arguments[0], relativeTo: URL(fileURLWithPath: FileManager.default.currentDirectoryPath))
        var directory = testBinary.deletingLastPathComponent()
        if directory.lastPathComponent == "MacOS" { directory = directory.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent() }
        let candidate = directory.appendingPathComponent("warren-control")
        guard FileManager.default.isExecutableFile(atPath: candidate.path) else {
            throw XCTSkip("warren-control is not built beside the tests (\(candidate.path)); run `swift build --build-tests` first")
        }
        return candidate
    }

    /// Runs the binary without blocking the caller's thread (the admin server in this process keeps serving).
    /// `input`: a file for standard input (else none).
    static func run(_ arguments: [String], environment: [String: String] = [:], input: String? = nil) async throws -> CommandResult {
        let binary = try binary()
        let directory = NSTemporaryDirectory() + "warren-cli-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let outPath = directory + "/out", errPath = directory + "/err"
        FileManager.default.createFile(atPath: outPath, contents: nil)
        FileManager.default.createFile(atPath: errPath, contents: nil)
        let process = Process()
        process.executableURL = binary
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardOutput = FileHandle(forWritingAtPath: outPath)
        process.standardError = FileHandle(forWritingAtPath: errPath)
        process.standardInput = input.flatMap { FileHandle(forReadingAtPath: $0) } ?? FileHandle.nullDevice
        let status: Int32 = try await withCheckedThrowingContinuation { continuation in
            process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
            do { try process.run() } catch { continuation.resume(throwing: error) }
        }
        return CommandResult(
            status: status,
            stdout: (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "",
            stderr: (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "")
    }
}

/// The admin subcommands end to end: the real binary against an admin listener on a temporary socket, over SQLite.
final class AdminCLITests: XCTestCase {
    private var server: AdminHTTPServer?
    private var store: SQLiteControlStore?
    private var stateDir = ""

    override func setUp() async throws {
        _ = try CLI.binary()
        stateDir = NSTemporaryDirectory() + "wcli-" + String(UUID().uuidString.prefix(8))
        try FileManager.default.createDirectory(atPath: stateDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let store = try SQLiteControlStore(path: stateDir + "/control.sqlite")
        self.store = store
        let api = AdminAPI(store: store, allocator: try AddressAllocator(), nodeKeyExpiry: 86_400)
        server = try await AdminHTTPServer.start(
            api: api, socketPath: AdminClient.socketPath(stateDirectory: stateDir), tcp: (host: "127.0.0.1", port: 0))
    }

    override func tearDown() async throws {
        await server?.close()
        try? FileManager.default.removeItem(atPath: stateDir)
    }

    private func run(_ arguments: [String], file: StaticString = #filePath, line: UInt = #line) async throws -> String {
        let result = try await CLI.run(arguments + ["--state-dir", stateDir])
        XCTAssertEqual(result.status, 0, "warren-control \(arguments.joined(separator: " ")): \(result.stderr)", file: file, line: line)
        return result.stdout
    }

    private func runJSON<T: Decodable>(_ type: T.Type, _ arguments: [String], file: StaticString = #filePath, line: UInt = #line) async throws -> T {
        let output = try await run(arguments + ["--output", "json"], file: file, line: line)
        return try JSONDecoder().decode(T.self, from: Data(output.utf8))
    }

    func testUsersAndPreAuthKeys() async throws {
        let created = try await run(["users", "create", "alice"])
        XCTAssertTrue(created.contains("alice"), created)
        _ = try await run(["users", "create", "bob"])
        let users = try await runJSON([UserJSON].self, ["users", "list"])
        XCTAssertEqual(users.map(\.name), ["alice", "bob"])
        let table = try await run(["users", "list"])
        XCTAssertTrue(table.hasPrefix("ID"), table)
        XCTAssertTrue(table.contains("bob"), table)

        let duplicate = try await CLI.run(["users", "create", "alice", "--state-dir", stateDir])
        XCTAssertEqual(duplicate.status, 1)
        XCTAssertEqual(duplicate.stdout, "")
        XCTAssertTrue(duplicate.stderr.contains("already exists"), duplicate.stderr)

        _ = try await run(["users", "rename", "bob", "robert"])
        _ = try await run(["users", "delete", "robert"])
        let value1 = try await runJSON([UserJSON].self, ["users", "list"]).map(\.name)
        XCTAssertEqual(value1, ["alice"])

        // `preauthkeys create` prints the key alone.
        let output = try await run(["preauthkeys", "create", "--user", "alice", "--reusable", "--ephemeral", "--tags", "tag:a,tag:b",
                                    "--expiration", "24h"])
        XCTAssertTrue(output.hasSuffix("\n"))
        let key = String(output.dropLast())
        XCTAssertFalse(key.contains("\n") || key.contains(" "), output)
        let store = try XCTUnwrap(self.store)
        let stored = try await store.read { try $0.validPreAuthKey(key, now: Date()) }
        XCTAssertTrue(stored.reusable && stored.ephemeral)
        XCTAssertEqual(stored.tags, ["tag:a", "tag:b"])
        let expiration = try XCTUnwrap(stored.expiration)
        XCTAssertEqual(expiration.timeIntervalSince(stored.created), 86_400, accuracy: 0.001)

        let oneOff = try await run(["preauthkeys", "create", "--user", "alice"]).trimmingCharacters(in: .newlines)
        let listed = try await runJSON([PreAuthKeyJSON].self, ["preauthkeys", "list", "--user", "alice"])
        XCTAssertEqual(listed.count, 2)
        XCTAssertEqual(listed.map(\.prefix), [stored.prefix, String(oneOff.dropFirst("wkey-auth-".count).prefix(12))])
        XCTAssertFalse(listed.contains { $0.expired })

        _ = try await run(["preauthkeys", "expire", key])
        let afterExpiry = try await runJSON([PreAuthKeyJSON].self, ["preauthkeys", "list", "--user", "alice"])
        XCTAssertEqual(afterExpiry.map(\.expired), [true, false])
        let missingUser = try await CLI.run(["preauthkeys", "create", "--user", "nobody", "--state-dir", stateDir])
        XCTAssertEqual(missingUser.status, 1)
        XCTAssertTrue(missingUser.stderr.contains("no user named"), missingUser.stderr)
    }

    func testNodes() async throws {
        let store = try XCTUnwrap(self.store)
        _ = try await run(["users", "create", "alice"])
        var generator = SeededGenerator(seed: 77)
        let pending = PendingRegistration(
            id: "regid1", machineKey: MachinePublic(rawRepresentation: generator.bytes(count: 32))!,
            nodeKey: NodePublic(rawRepresentation: generator.bytes(count: 32))!, hostname: "Laptop", created: Date(),
            expires: Date().addingTimeInterval(600))
        try await store.transaction { try $0.save(pending) }

        let registered = try await run(["nodes", "register", "--user", "alice", "--key", "regid1"])
        XCTAssertTrue(registered.contains("laptop"), registered)
        var nodes = try await runJSON([NodeJSON].self, ["nodes", "list"])
        XCTAssertEqual(nodes.count, 1)
        let node = nodes[0]
        XCTAssertEqual(node.givenName, "laptop")
        XCTAssertEqual(node.ipAddresses, ["100.64.0.1", "fd7a:115c:a1e0::1"])
        XCTAssertFalse(node.expired)

        _ = try await run(["nodes", "rename", "-i", String(node.id), "work"])
        _ = try await run(["nodes", "tag", "work", "--tags", "tag:server"])
        try await store.transaction { tx in
            var stored = try tx.requireNode(id: NodeID(node.id))
            stored.advertisedRoutes = [IPPrefix("10.9.0.0/16")!]
            try tx.update(stored)
        }
        _ = try await run(["nodes", "approve-routes", "-i", String(node.id), "--routes", "10.9.0.0/16"])
        // `nodes routes` is headscale's alias of list-routes, which answers a list (here of one node).
        let routes = try await runJSON([RoutesJSON].self, ["nodes", "routes", "work"])
        XCTAssertEqual(routes.map(\.servedRoutes), [["10.9.0.0/16"]])
        nodes = try await runJSON([NodeJSON].self, ["nodes", "list", "--user", "alice"])
        XCTAssertEqual(nodes.first?.givenName, "work")
        XCTAssertEqual(nodes.first?.tags, ["tag:server"])

        // `nodes approve`: a device waiting for approval (require_device_approval) is let in.
        try await store.transaction { tx in
            var stored = try tx.requireNode(id: NodeID(node.id))
            stored.authorized = false
            try tx.update(stored)
        }
        let waiting = try await runJSON([NodeJSON].self, ["nodes", "list"])
        XCTAssertEqual(waiting.first?.authorized, false)
        let approved = try await run(["nodes", "approve", "work"])
        XCTAssertEqual(approved, "Node work approved\n")
        let value1 = try await runJSON([NodeJSON].self, ["nodes", "list"])
        XCTAssertEqual(value1.first?.authorized, true)

        _ = try await run(["nodes", "expire", "work"])
        let value2 = try await runJSON([NodeJSON].self, ["nodes", "list"])
        XCTAssertEqual(value2.first?.expired, true)
        _ = try await run(["nodes", "delete", "work"])
        let value3 = try await runJSON([NodeJSON].self, ["nodes", "list"])
        XCTAssertEqual(value3.count, 0)
        let gone = try await CLI.run(["nodes", "delete", "work", "--state-dir", stateDir])
        XCTAssertEqual(gone.status, 1)
        XCTAssertTrue(gone.stderr.contains("no node"), gone.stderr)
    }

    func testAPIKeysAndTheNetworkPath() async throws {
        let key = try await run(["apikeys", "create", "--expiration", "90d"]).trimmingCharacters(in: .newlines)
        XCTAssertTrue(key.hasPrefix("wkey-api-"), key)
        let keys = try await runJSON([APIKeyJSON].self, ["apikeys", "list"])
        XCTAssertEqual(keys.count, 1)

        let port = try XCTUnwrap(server?.tcpPort)
        let url = "http://127.0.0.1:\(port)"
        let overNetwork = try await CLI.run(["users", "create", "carol", "--server", url, "--api-key", key])
        XCTAssertEqual(overNetwork.status, 0, overNetwork.stderr)
        let withEnvironment = try await CLI.run(["users", "list", "--output", "json", "--server", url], environment: ["WARREN_API_KEY": key])
        XCTAssertEqual(try JSONDecoder().decode([UserJSON].self, from: Data(withEnvironment.stdout.utf8)).map(\.name), ["carol"])
        let badKey = try await CLI.run(["users", "list", "--server", url, "--api-key", "wkey-api-xxxxxxxxxxxx-" + String(repeating: "0", count: 64)])
        XCTAssertEqual(badKey.status, 1)
        XCTAssertTrue(badKey.stderr.contains("invalid API key"), badKey.stderr)

        _ = try await run(["apikeys", "expire", keys[0].prefix])
        let expired = try await CLI.run(["users", "list", "--server", url, "--api-key", key])
        XCTAssertEqual(expired.status, 1)
        XCTAssertTrue(expired.stderr.contains("expired"), expired.stderr)
    }

    func testWithoutARunningServerTheCommandSaysSo() async throws {
        let empty = NSTemporaryDirectory() + "wcli-none-" + String(UUID().uuidString.prefix(8))
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: empty) }
        let result = try await CLI.run(["users", "list", "--state-dir", empty])
        XCTAssertEqual(result.status, 1)
        XCTAssertTrue(result.stderr.contains("is `warren-control serve` running"), result.stderr)

        // --config points at the state directory through state_dir.
        let config = empty + "/config.yaml"
        try "state_dir: \(stateDir)\n".write(toFile: config, atomically: true, encoding: .utf8)
        let viaConfig = try await CLI.run(["users", "list", "--output", "json", "--config", config])
        XCTAssertEqual(viaConfig.status, 0, viaConfig.stderr)
        XCTAssertEqual(viaConfig.stdout.trimmingCharacters(in: .whitespacesAndNewlines), "[\n\n]")
    }

    func testTheSocketIsOwnerOnlyAndASecondServerIsRefused() async throws {
        let path = AdminClient.socketPath(stateDirectory: stateDir)
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        let mode = try XCTUnwrap(attributes[.posixPermissions] as? NSNumber).intValue
        XCTAssertEqual(mode & 0o077, 0, String(mode, radix: 8))
        let api = AdminAPI(store: MemoryControlStore(), allocator: try AddressAllocator())
        do {
            let second = try await AdminHTTPServer.start(api: api, socketPath: path)
            await second.close()
            XCTFail("a second server took over a live socket")
        } catch let error as AdminClientError {
            XCTAssertTrue(error.message.contains("already serving"), error.message)
        }
    }
}

/// The help screen of the command operators and tests use most, checked verbatim.
final class AdminCLIHelpTests: XCTestCase {
    func testPreAuthKeysCreateHelp() async throws {
        let result = try await CLI.run(["preauthkeys", "create", "--help"])
        XCTAssertEqual(result.status, 0)
        XCTAssertEqual(result.stdout, Self.expected)
    }

    static let expected = """
OVERVIEW: Create a pre-auth key and print it (shown only this once).

USAGE: warren-control preauthkeys create [--state-dir <state-dir>] [--config <config>] [--server <server>] [--api-key <api-key>] --user <user> [--reusable] [--ephemeral] [--pre-approved] [--tags <tags>] [--expiration <expiration>] [--output <output>]

OPTIONS:
  --state-dir <state-dir> The running server's state directory; its admin
                          socket (root only) is there. Default: /var/lib/warren.
  --config <config>       The server's YAML configuration file (its state_dir
                          is used).
  --server <server>       Reach the server over the network at this URL instead
                          (needs --api-key or WARREN_API_KEY).
  --api-key <api-key>     API key for --server.
  -u, --user <user>       The user (name or id) whose nodes the key registers.
  --reusable              Usable any number of times (default: once).
  --ephemeral             Nodes registered with it are ephemeral.
  --pre-approved          Skips device approval; approves advertised routes.
  --tags <tags>           Tags for its nodes, such as tag:a,tag:b.
  -e, --expiration <expiration>
                          Lifetime (30m, 24h, 7d), an RFC 3339 time, or never.
                          (default: 1h)
  -o, --output <output>   Output format: text (the key alone), json, json-line
                          or yaml. (values: text, json, json-line, yaml;
                          default: text)
  -h, --help              Show help information.


"""
}

/// Raw bytes to the admin socket: whatever arrives, the listener answers or closes, and keeps serving.
final class AdminListenerRobustnessTests: XCTestCase {
    private static func exchange(_ path: String, _ bytes: [UInt8]) throws -> [UInt8] {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: pathBytes)
            raw[pathBytes.count] = 0
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw XCTSkip("no Unix sockets") }
        defer { close(fd) }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        XCTAssertEqual(connected, 0)
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        shutdown(fd, Int32(SHUT_WR))
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            answer += buffer[0..<n]
        }
        return answer
    }

    func testFuzzedBytesDoNotStopTheListener() async throws {
        let directory = NSTemporaryDirectory() + "wfz-" + String(UUID().uuidString.prefix(8))
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let socketPath = AdminClient.socketPath(stateDirectory: directory)
        let server = try await AdminHTTPServer.start(api: AdminAPI(store: MemoryControlStore(), allocator: try AddressAllocator()),
                                                     socketPath: socketPath)
        let seed = Array("POST /api/v1/users HTTP/1.1\r\nHost: x\r\nContent-Length: 16\r\n\r\n{\"name\":\"alice\"}".utf8)
        var cases: [[UInt8]] = []
        MutationFuzzer(seeds: [seed], iterations: 60, maximumLength: 300, seed: 0x50C).run { cases.append($0) }
        for bytes in cases {
            // On a thread of its own: the blocking socket calls must not hold a thread of the async pool.
            let answer: [UInt8] = try await withCheckedThrowingContinuation { continuation in
                Thread { continuation.resume(with: Result { try Self.exchange(socketPath, bytes) }) }.start()
            }
            if !answer.isEmpty {
                XCTAssertTrue(answer.starts(with: Array("HTTP/1.1 ".utf8)), String(decoding: answer.prefix(80), as: UTF8.self))
            }
        }
        // Still serving.
        let users = try await AdminClient(.socket(path: socketPath)).call("GET", "/api/v1/users", as: [UserJSON].self)
        XCTAssertTrue(users.allSatisfy { !$0.name.isEmpty }, "\(users)")
        await server.close()
    }
}
