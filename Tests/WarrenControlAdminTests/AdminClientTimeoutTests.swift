// The admin client against servers that misbehave: one that accepts and never answers, one that stops halfway
// through its answer, one whose answer never ends. The command line must end with a clear error within its deadline
// (WARREN_CLI_TIMEOUT) and never read more than the answer bound.

import Foundation
import Synchronization
import WarrenControlAdmin
import XCTest

/// A Unix socket listener on a thread of its own that hands each accepted connection to `serve` (on that thread's
/// own thread per connection) and keeps it open until `close()`.
private final class MisbehavingListener: @unchecked Sendable {
    let path: String
    private let fd: Int32
    private let accepted = Mutex<[Int32]>([])
    private let closed = Atomic<Bool>(false)

    init(path: String, serve: @escaping @Sendable (Int32) -> Void) throws {
        self.path = path
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { throw XCTSkip("socket path too long: \(path)") }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw XCTSkip("no Unix sockets") }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0, listen(fd, 8) == 0 else {
            Glibc.close(fd)
            throw XCTSkip("cannot listen on \(path)")
        }
        let listener = fd
        Thread { [self] in
            while !self.closed.load(ordering: .relaxed) {
                let connection = accept(listener, nil, nil)
                guard connection >= 0 else { return }
                self.accepted.withLock { $0.append(connection) }
                Thread { serve(connection) }.start()
            }
        }.start()
    }

    func close() {
        closed.store(true, ordering: .relaxed)
        shutdown(fd, Int32(SHUT_RDWR))
        Glibc.close(fd)
        for connection in accepted.withLock({ $0 }) {
            shutdown(connection, Int32(SHUT_RDWR))
            Glibc.close(connection)
        }
        unlink(path)
    }

    /// Reads the request's head (up to the blank line), so the client has sent it all.
    static func readHead(_ connection: Int32) {
        var seen: [UInt8] = []
        var byte: UInt8 = 0
        while read(connection, &byte, 1) == 1 {
            seen.append(byte)
            if seen.suffix(4) == [13, 10, 13, 10] { return }
        }
    }

    static func write(_ connection: Int32, _ bytes: [UInt8]) -> Bool {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { send(connection, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { return false }
            sent += n
        }
        return true
    }
}

final class AdminClientTimeoutTests: XCTestCase {
    private var directory = ""

    override func setUp() async throws {
        directory = NSTemporaryDirectory() + "wcto-" + String(UUID().uuidString.prefix(8))
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDown() async throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// The real binary against a server that accepts and never answers: it ends with an error naming the deadline,
    /// well before the test's own bound of 20 s.
    func testTheCommandLineGivesUpOnAServerThatNeverAnswers() async throws {
        _ = try CLI.binary()
        let listener = try MisbehavingListener(path: AdminClient.socketPath(stateDirectory: directory)) { connection in
            MisbehavingListener.readHead(connection)
        }
        defer { listener.close() }
        let started = ContinuousClock.now
        let result = try await CLI.run(["users", "list", "--state-dir", directory], environment: ["WARREN_CLI_TIMEOUT": "2s"])
        let elapsed = ContinuousClock.now - started
        XCTAssertEqual(result.status, 1, result.stdout)
        XCTAssertTrue(result.stderr.contains("no answer from \(listener.path) within 2 s"), result.stderr)
        XCTAssertLessThan(elapsed, .seconds(20))
        XCTAssertGreaterThanOrEqual(elapsed, .seconds(2))

        // A bad WARREN_CLI_TIMEOUT is refused, naming it.
        let bad = try await CLI.run(["users", "list", "--state-dir", directory], environment: ["WARREN_CLI_TIMEOUT": "soon"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains("WARREN_CLI_TIMEOUT=soon"), bad.stderr)
    }

    /// A server that sends its head and part of the body, then stops: the deadline covers the body too.
    func testAnAnswerThatStopsHalfwayTimesOut() async throws {
        let listener = try MisbehavingListener(path: AdminClient.socketPath(stateDirectory: directory)) { connection in
            MisbehavingListener.readHead(connection)
            _ = MisbehavingListener.write(connection, Array("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n[{\"id\":1".utf8))
        }
        defer { listener.close() }
        let client = AdminClient(.socket(path: listener.path), timeout: .seconds(1))
        do {
            _ = try await client.send("GET", "/api/v1/users")
            XCTFail("a half answer was taken")
        } catch let error as AdminClientError {
            XCTAssertTrue(error.message.contains("no answer from \(listener.path) within 1 s"), error.message)
        }
    }

    /// An answer that never ends is read up to the bound (64 MiB) and refused.
    func testAnEndlessAnswerIsCutAtTheBound() async throws {
        let listener = try MisbehavingListener(path: AdminClient.socketPath(stateDirectory: directory)) { connection in
            MisbehavingListener.readHead(connection)
            guard MisbehavingListener.write(connection, Array("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".utf8)) else { return }
            let chunk = Array("10000\r\n".utf8) + [UInt8](repeating: 0x20, count: 0x10000) + Array("\r\n".utf8)
            while MisbehavingListener.write(connection, chunk) {}
        }
        defer { listener.close() }
        let client = AdminClient(.socket(path: listener.path), timeout: .seconds(60))
        do {
            _ = try await client.send("GET", "/api/v1/users")
            XCTFail("an endless answer was taken")
        } catch let error as AdminClientError {
            XCTAssertTrue(error.message.contains("larger than 64 MiB"), error.message)
        }
    }

    /// No server at all: the message says what to check, at once (a refused connection is not retried).
    func testNoServerSaysSo() async throws {
        let client = AdminClient(.socket(path: AdminClient.socketPath(stateDirectory: directory)), timeout: .seconds(30))
        let started = ContinuousClock.now
        do {
            _ = try await client.send("GET", "/api/v1/users")
            XCTFail("no server, yet an answer")
        } catch let error as AdminClientError {
            XCTAssertTrue(error.message.contains("is `warren-control serve` running"), error.message)
        }
        XCTAssertLessThan(ContinuousClock.now - started, .seconds(10))
        XCTAssertFalse(AdminClient.socketAnswers(path: AdminClient.socketPath(stateDirectory: directory)))
        let listener = try MisbehavingListener(path: AdminClient.socketPath(stateDirectory: directory)) { _ in }
        defer { listener.close() }
        XCTAssertTrue(AdminClient.socketAnswers(path: listener.path))
    }
}
