// The admin listeners on Hummingbird (AdminHTTPServer.swift, AdminRouter.swift), over real sockets: the socket's
// caller is named in the audit log from its kernel credentials (SO_PEERCRED, through the request context), the TCP
// listener needs an API key and names it, a declared body over 1 MiB is refused before it is sent, every answer
// says `Connection: close` and the connection closes, and stopping the server closes idle connections at once
// instead of waiting for their timers.

import Foundation
import Glibc
import WarrenControlAdmin
import WarrenControlStore
import WarrenListenerGuard
import WarrenTestProbes
import XCTest

final class AdminHTTPServerTests: XCTestCase {
    private var directories: [String] = []

    override func tearDown() {
        for directory in directories { try? FileManager.default.removeItem(atPath: directory) }
        directories = []
    }

    private func socketPath() throws -> String {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("wah-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        directories.append(directory)
        return directory + "/admin.sock"
    }

    private static func request(_ method: String, _ path: String, body: String = "", headers: [String] = []) -> String {
        ([ "\(method) \(path) HTTP/1.1", "Host: x", "Content-Length: \(body.utf8.count)"] + headers).joined(separator: "\r\n")
            + "\r\n\r\n" + body
    }

    /// The status code and the head's lines of an answer.
    private static func parse(_ text: String) -> (status: Int, head: [String], body: String) {
        let parts = text.components(separatedBy: "\r\n\r\n")
        let head = parts[0].components(separatedBy: "\r\n")
        let status = head.first.flatMap { Int($0.split(separator: " ").dropFirst().first ?? "") } ?? 0
        return (status, head, parts.dropFirst().joined(separator: "\r\n\r\n"))
    }

    func testTheSocketNamesItsCallerFromTheKernelInTheAuditLog() async throws {
        let h = Harness()
        let path = try socketPath()
        let server = try await AdminHTTPServer.start(api: h.api, socketPath: path)
        defer { Task { await server.close() } }
        let probe = try BoundsProbe.unix(path: path)
        probe.send(Self.request("POST", "/api/v1/users", body: #"{"name":"alice"}"#))
        let answer = probe.waitClosed(within: 10)
        XCTAssertTrue(answer.closed, "the connection stayed open after its answer")
        let (status, head, _) = Self.parse(answer.text)
        XCTAssertEqual(status, 201, answer.text)
        XCTAssertTrue(head.contains { $0.lowercased() == "connection: close" }, answer.text)
        let entries = try await h.store.read { try $0.auditEntries(since: nil, limit: 10) }
        XCTAssertEqual(entries.count, 1)
        // This process is the caller: its uid, pid and program name, as the kernel reports them.
        let program = String(decoding: FileManager.default.contents(atPath: "/proc/self/comm") ?? Data(), as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertEqual(entries.first?.actor, "socket (uid \(getuid()), pid \(getpid()), \(program))")
        XCTAssertEqual(entries.first?.route, "/api/v1/users")
    }

    func testTheTCPListenerNeedsAnAPIKeyAndTheAuditLogNamesIt() async throws {
        let h = Harness()
        let created = try await h.json(CreatedAPIKeyJSON.self, "POST", "/api/v1/apikeys", "{}", status: 201)
        let server = try await AdminHTTPServer.start(api: h.api, socketPath: nil, tcp: ("127.0.0.1", 0))
        defer { Task { await server.close() } }
        let port = try XCTUnwrap(server.tcpPort)

        let anonymous = try BoundsProbe.tcp(port: port)
        anonymous.send(Self.request("POST", "/api/v1/users", body: #"{"name":"bob"}"#))
        let refused = Self.parse(anonymous.waitClosed(within: 10).text)
        XCTAssertEqual(refused.status, 401)
        XCTAssertTrue(refused.body.contains("an API key is required"), refused.body)
        // headscale's routes refuse as headscale does.
        let headscale = try BoundsProbe.tcp(port: port)
        headscale.send(Self.request("GET", "/api/v1/user"))
        let headscaleRefused = Self.parse(headscale.waitClosed(within: 10).text)
        XCTAssertEqual(headscaleRefused.status, 401)
        XCTAssertEqual(headscaleRefused.body, "Unauthorized")

        let keyed = try BoundsProbe.tcp(port: port)
        keyed.send(Self.request("POST", "/api/v1/users", body: #"{"name":"bob"}"#, headers: ["Authorization: Bearer \(created.key)"]))
        XCTAssertEqual(Self.parse(keyed.waitClosed(within: 10).text).status, 201)
        let listed = try BoundsProbe.tcp(port: port)
        listed.send(Self.request("GET", "/api/v1/user", headers: ["Authorization: Bearer \(created.key)"]))
        let users = Self.parse(listed.waitClosed(within: 10).text)
        XCTAssertEqual(users.status, 200)
        XCTAssertTrue(users.body.hasPrefix(#"{"users":[{"id":""#) && users.body.contains(#""name":"bob""#), users.body)

        let entries = try await h.store.read { try $0.auditEntries(since: nil, limit: 10) }
        // The key's creation over the API (no listener: no peer), then bob's over TCP; the refusal is not recorded.
        XCTAssertEqual(entries.count, 2, "\(entries)")
        XCTAssertEqual(entries.last?.actor, "api-key \(created.apiKey.prefix) (id \(created.apiKey.id))")
    }

    func testADeclaredBodyOverOneMiBIsRefusedBeforeItIsSent() async throws {
        let h = Harness()
        let path = try socketPath()
        let server = try await AdminHTTPServer.start(api: h.api, socketPath: path)
        defer { Task { await server.close() } }
        let probe = try BoundsProbe.unix(path: path)
        probe.send("POST /api/v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: \((1 << 20) + 1)\r\n\r\n")
        let answer = probe.waitClosed(within: 10)
        XCTAssertTrue(answer.closed)
        let (status, _, body) = Self.parse(answer.text)
        XCTAssertEqual(status, 413, answer.text)
        XCTAssertTrue(body.contains("request body larger than 1 MiB"), body)
        let users = try await h.store.read { try $0.users() }
        XCTAssertEqual(users.count, 0)
    }

    func testAMalformedRequestIsA400AndTheServerKeepsServing() async throws {
        let path = try socketPath()
        let server = try await AdminHTTPServer.start(api: Harness().api, socketPath: path)
        defer { Task { await server.close() } }
        let garbage = try BoundsProbe.unix(path: path)
        garbage.send("this is not HTTP\r\n\r\n")
        let answer = garbage.waitClosed(within: 10)
        XCTAssertTrue(answer.closed)
        XCTAssertEqual(Self.parse(answer.text).status, 400, answer.text)
        let next = try BoundsProbe.unix(path: path)
        next.send(Self.request("GET", "/api/v1/users"))
        XCTAssertEqual(Self.parse(next.waitClosed(within: 10).text).status, 200)
    }

    /// Idle and half-sent connections hold long timers here (60 s): stopping must not wait for them.
    func testStoppingClosesOpenConnectionsAtOnceAndRemovesTheSocket() async throws {
        let path = try socketPath()
        let server = try await AdminHTTPServer.start(
            api: Harness().api, socketPath: path, tcp: ("127.0.0.1", 0),
            limits: ListenerLimits(maximumConnections: 16, handshakeTimeout: .seconds(60), idleTimeout: .seconds(60)))
        let port = try XCTUnwrap(server.tcpPort)
        let running = Task { try await server.run() }
        let silent = [try BoundsProbe.unix(path: path), try BoundsProbe.tcp(port: port)]
        XCTAssertTrue(eventually { server.listenerGuards.reduce(0) { $0 + $1.openConnections } == 2 })
        running.cancel()
        for probe in silent { XCTAssertTrue(probe.isClosed(within: 5), "an open connection kept the stopped server") }
        try await running.value
        XCTAssertFalse(FileManager.default.fileExists(atPath: path), "the socket file stayed")
        XCTAssertThrowsError(try BoundsProbe.tcp(port: port), "the TCP listener still accepts")
    }
}
