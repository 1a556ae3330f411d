// Issue 14, admin side: names round-trip through percent-encoded paths and bad names are refused at creation;
// duplicate JSON keys are refused; a known path with a wrong method is a 405 naming the allowed methods; the
// OpenAPI document lists the 201 answers; a body over 1 MiB is refused whole (413), never cut; nodes show the
// key that registered them.

import Foundation
import NIOCore
import NIOPosix
import WarrenControlAdmin
import WarrenControlStore
import WarrenTestSupport
import XCTest

final class HardeningAdminTests: XCTestCase {
    func testANameOutsideTheURLSafeSetCanBeRenamedAndDeleted() async throws {
        let h = Harness()
        _ = try await h.json(UserJSON.self, "POST", "/api/v1/users", #"{"name":"jörg"}"#, status: 201)
        // What the CLI sends: the name percent-encoded in the path.
        let renamed = try await h.json(UserJSON.self, "POST", "/api/v1/users/j%C3%B6rg/rename", #"{"newName":"jürgen"}"#)
        XCTAssertEqual(renamed.name, "jürgen")
        _ = try await h.json(UserJSON.self, "DELETE", "/api/v1/users/j%C3%BCrgen")
        let users = try await h.json([UserJSON].self, "GET", "/api/v1/users")
        XCTAssertEqual(users.count, 0)
        // An e-mail-like name, encoded.
        _ = try await h.json(UserJSON.self, "POST", "/api/v1/users", #"{"name":"ana.b_c-d@example.com"}"#, status: 201)
        _ = try await h.json(UserJSON.self, "DELETE", "/api/v1/users/ana.b_c-d%40example.com")
    }

    func testBadUserNamesAreRefusedAtCreationWithAClearError() async throws {
        let h = Harness()
        for name in ["a/b", "a%b", "a?b", "1abc", "a@b@c", "x y", "-lead", "semi;colon", "emoji😀"] {
            let body = String(decoding: try JSONEncoder().encode(["name": name]), as: UTF8.self)
            let error = try await h.error("POST", "/api/v1/users", body, status: 400)
            XCTAssertTrue(error.contains("user name"), "\(name): \(error)")
        }
        _ = try await h.json(UserJSON.self, "POST", "/api/v1/users", #"{"name":"alice"}"#, status: 201)
        let error = try await h.error("POST", "/api/v1/users/alice/rename", #"{"newName":"a/b"}"#, status: 400)
        XCTAssertTrue(error.contains("user name"), error)
    }

    func testDuplicateJSONKeysAreRefused() async throws {
        let h = Harness()
        let error = try await h.error("POST", "/api/v1/users", #"{"name":"alice","name":"mallory"}"#, status: 400)
        XCTAssertTrue(error.contains("duplicate") && error.contains("name"), error)
        _ = try await h.json(UserJSON.self, "POST", "/api/v1/users", #"{"name":"alice"}"#, status: 201)
        let nested = try await h.error("POST", "/api/v1/preauthkeys", #"{"user":"alice","tags":["tag:a"],"reusable":true,"reusable":false}"#,
                                       status: 400)
        XCTAssertTrue(nested.contains("duplicate"), nested)
        let users = try await h.json([UserJSON].self, "GET", "/api/v1/users")
        XCTAssertEqual(users.map(\.name), ["alice"])
    }

    func testAKnownPathWithAWrongMethodIs405WithAllow() async throws {
        let h = Harness()
        let response = await h.call("PATCH", "/api/v1/users")
        XCTAssertEqual(response.status, 405, String(decoding: response.body, as: UTF8.self))
        let text = String(decoding: response.body, as: UTF8.self)
        XCTAssertTrue(text.contains("GET") && text.contains("POST"), text)
        let deleteKeys = await h.call("DELETE", "/api/v1/preauthkeys")
        XCTAssertEqual(deleteKeys.status, 405)
        let unknown = await h.call("GET", "/api/v1/nothing-here")
        XCTAssertEqual(unknown.status, 404)
    }

    func testTheOpenAPIDocumentListsThe201Answers() async throws {
        let h = Harness()
        let response = await h.call("GET", "/api/v1/openapi.json")
        let document = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any])
        let paths = try XCTUnwrap(document["paths"] as? [String: [String: Any]])
        for path in ["/api/v1/users", "/api/v1/preauthkeys", "/api/v1/apikeys"] {
            let post = try XCTUnwrap(paths[path]?["post"] as? [String: Any], path)
            let responses = try XCTUnwrap(post["responses"] as? [String: Any])
            XCTAssertNotNil(responses["201"], "\(path) POST answers 201")
            XCTAssertNil(responses["200"], "\(path) POST never answers 200")
        }
    }

    /// 1 MiB + 241 bytes + `"}`, sent in chunks: the whole request is refused, no user is created.
    func testABodyOverOneMiBIsRefusedWholeOnTheTCPListener() async throws {
        let h = Harness()
        let server = try await AdminHTTPServer.start(api: h.api, socketPath: nil, tcp: ("127.0.0.1", 0))
        defer { Task { await server.close() } }
        let port = try XCTUnwrap(server.tcpPort)
        let prefix = #"{"name":"x"# 
        var body = Array(prefix.utf8) + Array(repeating: UInt8(ascii: "a"), count: (1 << 20) + 241 - prefix.utf8.count)
        body += Array(#""}"#.utf8)
        let status = try await Self.postChunked(port: port, path: "/api/v1/users", body: body)
        XCTAssertEqual(status, 413)
        let users = try await h.store.read { try $0.users() }
        XCTAssertEqual(users.count, 0)
    }

    /// Posts `body` with chunked transfer encoding (64 KiB chunks) and returns the status code.
    static func postChunked(port: Int, path: String, body: [UInt8]) async throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var timeout = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw XCTSkip("cannot connect to the admin listener") }
        func send(_ bytes: [UInt8]) {
            var offset = 0
            while offset < bytes.count {
                let n = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if n <= 0 { return }
                offset += n
            }
        }
        send(Array("POST \(path) HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".utf8))
        var offset = 0
        while offset < body.count {
            let chunk = body[offset..<min(body.count, offset + 65_536)]
            send(Array(String(chunk.count, radix: 16).utf8) + [13, 10] + Array(chunk) + [13, 10])
            offset += chunk.count
        }
        send(Array("0\r\n\r\n".utf8))
        var reply: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { break }
            reply += buffer[0..<n]
        }
        let text = String(decoding: reply, as: UTF8.self)
        guard let line = text.split(separator: "\r\n").first, let code = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else {
            throw XCTSkip("no HTTP answer: \(text.prefix(100))")
        }
        return code
    }
}
