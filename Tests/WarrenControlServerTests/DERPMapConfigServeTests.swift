// The DERP map warren-control sends, from its configuration, as a client receives it over ts2021 from the built
// binary: the embedded relay's region from headscale's derp.server.* keys alone (ID, code, name, addresses, STUN
// and DERP ports); derp.urls (served by a loopback HTTP server this test runs) and derp.paths (files the test
// writes, YAML in headscale's lower-case spelling and JSON in tailcfg's) merged as headscale merges them (later
// source wins, null removes a region, the embedded region over all); the embedded relay off with other regions;
// auto_update_enabled pushing a changed map to an open map stream and keeping the map in force when a rebuild
// fails; a URL that fails at start logged by name and left out while the other sources apply; and bad files
// stopping the server with an error that names the file.
// Everything is on loopback; the temporary directory (/tmp/wcdm-*) is removed afterwards.

import Foundation
import Synchronization
import TailscaleKeys
import WarrenControlClient
import WarrenTailcfg
import WarrenTestProbes
import XCTest

final class DERPMapConfigServeTests: XCTestCase {
    var directory = ""

    override func setUpWithError() throws {
        directory = "/tmp/wcdm-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    // MARK: The map a client receives

    func testTheEmbeddedRegionFromHeadscalesServerKeysAlone() async throws {
        let (derp, stun) = (try DERPMapLoopback.freePort(), try DERPMapLoopback.freePort(udp: true))
        let config = try write("config.yaml", """
            listen_addr: 127.0.0.1:0
            metrics_listen_addr: ""
            unix_socket: \(directory)/admin.sock
            noise:
              private_key_path: \(directory)/noise.key
            database:
              type: sqlite
              sqlite:
                path: \(directory)/db.sqlite
            derp:
              server:
                enabled: true
                region_id: 987
                region_code: "hs-test"
                region_name: "Test Embedded DERP"
                stun_listen_addr: "127.0.0.1:\(stun)"
                private_key_path: \(directory)/derp.key
                ipv4: 198.51.100.7
                ipv6: 2001:db8::7
              port: \(derp)
              urls: []
              paths: []
            """)
        let server = try DERPMapServedControl(config: config, directory: directory)
        defer { server.stop() }
        let map = try await server.firstMap()
        let derpMap = try XCTUnwrap(map.derpMap)
        XCTAssertEqual(Array(derpMap.regions.keys), [987])
        let region = try XCTUnwrap(derpMap.regions[987])
        XCTAssertEqual(region.regionCode, "hs-test")
        XCTAssertEqual(region.regionName, "Test Embedded DERP")
        let node = try XCTUnwrap(region.nodes?.first)
        XCTAssertEqual(region.nodes?.count, 1)
        XCTAssertEqual(node.regionID, 987)
        XCTAssertEqual(node.hostName, "127.0.0.1")
        XCTAssertEqual(node.ipv4, "198.51.100.7")
        XCTAssertEqual(node.ipv6, "2001:db8::7")
        XCTAssertEqual(node.stunPort, stun)
        XCTAssertEqual(node.derpPort, derp)
        XCTAssertTrue(node.certName?.hasPrefix("sha256-raw:") == true, "\(node)")
        XCTAssertNotEqual(node.stunOnly, true)
    }

    func testURLsAndPathsMergeAsHeadscaleMergesThemWithTheEmbeddedRegionOverAll() async throws {
        let http = try DERPMapHTTPServer()
        defer { http.stop() }
        // Tailscale's JSON spelling, as controlplane.tailscale.com/derpmap/default answers.
        http.set("/derpmap.json", status: 200, body: Self.jsonMap([
            (1, "nyc", "New York City", "derp1.example.com"), (2, "sfo", "San Francisco", "derp2.example.com"),
            (987, "url-987", "Replaced by the embedded region", "derp987.example.com"),
        ]))
        // headscale's derp-example.yaml spelling: lower-case keys, region 1 removed, region 2 replaced, 900 added.
        let yamlFile = try write("derp.yaml", """
            regions:
              1: null
              2:
                regionid: 2
                regioncode: sfo-own
                regionname: Our San Francisco relay
                nodes:
                  - name: 2a
                    regionid: 2
                    hostname: sfo.relay.example
                    ipv4: 198.51.100.2
                    stunport: 3479
                    derpport: 8443
              900:
                regionid: 900
                regioncode: custom
                regionname: My Region
                nodes:
                  - name: 900a
                    regionid: 900
                    hostname: myderp.example.com
                    ipv4: 198.51.100.1
                    ipv6: 2001:db8::1
                    stunport: 0
                    stunonly: false
                    derpport: 0
                    canport80: true
            """)
        let jsonFile = try write("more.json", String(decoding: Self.jsonMap([(901, "west", "West", "west.relay.example")]), as: UTF8.self))
        let (derp, stun) = (try DERPMapLoopback.freePort(), try DERPMapLoopback.freePort(udp: true))
        // The embedded relay's region takes the ID the URL also gives (headscale's layout, relative path beside the file).
        let config = try write("config.yaml", """
            state_dir: \(directory)/state
            listen_addr: 127.0.0.1:0
            metrics_listen_addr: "off"
            derp:
              server:
                enabled: true
                region_id: 987
                stun_listen_addr: 127.0.0.1:\(stun)
              port: \(derp)
              urls:
                - http://127.0.0.1:\(http.port)/derpmap.json
              paths:
                - \(yamlFile)
                - more.json
            """)
        let server = try DERPMapServedControl(config: config, directory: directory)
        defer { server.stop() }
        let firstMap = try await server.firstMap()
        let derpMap = try XCTUnwrap(firstMap.derpMap)
        XCTAssertEqual(derpMap.regions.keys.sorted(), [2, 900, 901, 987], "\(derpMap.regions.keys.sorted())")
        XCTAssertEqual(derpMap.regions[2]?.regionCode, "sfo-own")
        XCTAssertEqual(derpMap.regions[2]?.nodes?.first?.hostName, "sfo.relay.example")
        XCTAssertEqual(derpMap.regions[2]?.nodes?.first?.stunPort, 3479)
        XCTAssertEqual(derpMap.regions[2]?.nodes?.first?.derpPort, 8443)
        let custom = try XCTUnwrap(derpMap.regions[900]?.nodes?.first)
        XCTAssertEqual(custom.name, "900a")
        XCTAssertEqual(custom.ipv6, "2001:db8::1")
        XCTAssertEqual(custom.canPort80, true)
        XCTAssertNil(custom.stunPort)
        XCTAssertEqual(derpMap.regions[901]?.regionName, "West")
        XCTAssertEqual(derpMap.regions[987]?.regionCode, "warren", "the embedded region wins over the URL's region 987")
        XCTAssertEqual(derpMap.regions[987]?.nodes?.first?.derpPort, derp)
        XCTAssertEqual(http.requests(to: "/derpmap.json"), 1)
    }

    func testTheEmbeddedRelayOffLeavesTheConfiguredRegions() async throws {
        let file = try write("derp.json", String(decoding: Self.jsonMap([(950, "only", "The only region", "only.relay.example")]), as: UTF8.self))
        let config = try write("config.yaml", """
            state_dir: \(directory)/state
            listen_addr: 127.0.0.1:0
            metrics_listen_addr: "off"
            derp:
              enabled: false
              paths: [\(file)]
            """)
        let server = try DERPMapServedControl(config: config, directory: directory)
        defer { server.stop() }
        let firstMap = try await server.firstMap()
        let derpMap = try XCTUnwrap(firstMap.derpMap)
        XCTAssertEqual(Array(derpMap.regions.keys), [950])
        XCTAssertEqual(derpMap.regions[950]?.nodes?.first?.hostName, "only.relay.example")
    }

    func testAutoUpdatePushesAChangedMapToOpenStreamsAndKeepsItWhenARebuildFails() async throws {
        let http = try DERPMapHTTPServer()
        defer { http.stop() }
        http.set("/m", status: 200, body: Self.jsonMap([(10, "first", "First", "first.example")]))
        let config = try write("config.yaml", """
            state_dir: \(directory)/state
            listen_addr: 127.0.0.1:0
            metrics_listen_addr: "off"
            derp:
              server:
                enabled: false
              urls: [http://127.0.0.1:\(http.port)/m]
              auto_update_enabled: true
              update_frequency: 1s
            """)
        let server = try DERPMapServedControl(config: config, directory: directory)
        defer { server.stop() }
        let client = try await server.client(seed: 1)
        let (status, messages) = try await client.map(client.mapRequest(stream: true))
        XCTAssertEqual(status, 200)
        // The stream's DERP maps, as they come.
        let maps = Mutex<[DERPMap]>([])
        let reader = Task {
            for try await message in messages { if let map = message.derpMap { maps.withLock { $0.append(map) } } }
        }
        defer { reader.cancel() }
        let deadline = Date().addingTimeInterval(20)
        while maps.withLock({ $0.isEmpty }), Date() < deadline { try await Task.sleep(for: .milliseconds(50)) }
        XCTAssertEqual(maps.withLock { $0.first.map { Array($0.regions.keys) } }, [10])
        // The source changes: the open stream gets the new map.
        http.set("/m", status: 200, body: Self.jsonMap([(10, "first", "First", "first.example"), (11, "second", "Second", "second.example")]))
        while maps.withLock({ $0.count < 2 }), Date() < deadline { try await Task.sleep(for: .milliseconds(50)) }
        XCTAssertEqual(maps.withLock { $0.last?.regions.keys.sorted() }, [10, 11], server.stop())
        // The source fails: the map in force stays (a new client gets it), and the failure is logged.
        http.set("/m", status: 500, body: Data("broken".utf8))
        let before = http.requests(to: "/m")
        while http.requests(to: "/m") < before + 2, Date() < deadline.addingTimeInterval(20) {
            try await Task.sleep(for: .milliseconds(100))
        }
        let later = try await server.firstMap(seed: 2)
        XCTAssertEqual(later.derpMap?.regions.keys.sorted(), [10, 11])
        await client.close()
        let log = server.stop()
        XCTAssertTrue(log.split(separator: "\n").contains { $0.contains("answered HTTP 500") && $0.contains("its last good regions stay") }, log)
    }

    // MARK: Refused

    func testAURLThatFailsAtStartIsLoggedAndLeftOutWhileTheOtherSourcesApply() async throws {
        let http = try DERPMapHTTPServer()
        defer { http.stop() }
        http.set("/good", status: 200, body: Self.jsonMap([(951, "fetched", "Fetched", "fetched.example")]))
        http.set("/missing", status: 404, body: Data("not found".utf8))
        http.set("/garbage", status: 200, body: Data("<html>no</html>".utf8))
        http.set("/huge", status: 200, body: Data(repeating: 0x20, count: 5 << 20))
        http.set("/huge-unsized", status: 200, body: Data(repeating: 0x20, count: 5 << 20), contentLength: false)
        let closed = try DERPMapLoopback.freePort()
        let base = "http://127.0.0.1:\(http.port)"
        let file = try write("derp.json", String(decoding: Self.jsonMap([(950, "file", "From a file", "file.example")]), as: UTF8.self))
        let config = try write("config.yaml", """
            state_dir: \(directory)/state
            listen_addr: 127.0.0.1:0
            metrics_listen_addr: "off"
            derp:
              enabled: false
              urls:
                - http://127.0.0.1:\(closed)/x
                - \(base)/missing
                - \(base)/garbage
                - \(base)/good
                - \(base)/huge
                - \(base)/huge-unsized
              paths: [\(file)]
            """)
        let server = try DERPMapServedControl(config: config, directory: directory)
        let firstMap = try await server.firstMap()
        XCTAssertEqual(firstMap.derpMap?.regions.keys.sorted(), [950, 951])
        let log = server.stop()
        for expected in ["DERP map http://127.0.0.1:\(closed)/x: cannot fetch", "DERP map \(base)/missing: answered HTTP 404",
                         "DERP map \(base)/garbage: not JSON", "DERP map \(base)/huge: the answer is larger than 4194304 bytes",
                         "DERP map \(base)/huge-unsized: the answer is larger than 4194304 bytes"] {
            let line = log.split(separator: "\n").first { $0.contains(expected) }
            XCTAssertTrue(line?.contains("left out of the DERP map until a restart") == true, "expected \"\(expected)\" in:\n\(log)")
        }
    }

    func testBadFilesStopTheServerNamingThem() async throws {
        let typo = try write("typo.yaml", "regions:\n  900:\n    regionid: 900\n    nodes:\n      - name: a\n        hostnmae: x.example\n")
        let notYAML = try write("bad.yaml", "regions: [unclosed\n")
        let wrongID = try write("wrong.yaml", "regions:\n  900:\n    regionid: 901\n    nodes: []\n")
        let noHost = try write("nohost.yaml", "regions:\n  900:\n    nodes:\n      - name: a\n")
        let cases: [(derp: String, expected: String)] = [
            ("paths: [\(directory)/nope.yaml]", "DERP map \(directory)/nope.yaml: no such file"),
            ("paths: [\(typo)]", "DERP map \(typo): Regions.900.Nodes[0].hostnmae: unknown key"),
            ("paths: [\(notYAML)]", "DERP map \(notYAML): not valid YAML"),
            ("paths: [\(wrongID)]", "DERP map \(wrongID): Regions.900.regionid: 901 differs from the region's key 900"),
            ("paths: [\(noHost)]", "DERP map \(noHost): Regions.900.Nodes[0]: a node needs a HostName"),
            ("urls: [ftp://example.com/map]", "derp.urls[0]: \"ftp://example.com/map\" is not an http:// or https:// URL"),
            ("update_frequency: soon", "derp.update_frequency: expected a duration"),
        ]
        for (derp, expected) in cases {
            let config = try write("config.yaml", """
                state_dir: \(directory)/state
                listen_addr: 127.0.0.1:0
                metrics_listen_addr: "off"
                derp:
                  enabled: false
                  \(derp)
                """)
            let result = try DERPMapServedControl.run(["serve", "--config", config])
            XCTAssertEqual(result.status, 2, "\(derp): \(result.stderr)")
            XCTAssertTrue(result.stderr.contains(expected), "\(derp): expected \"\(expected)\" in:\n\(result.stderr)")
        }
        // headscale's rule: without its own region added, the embedded relay must be described in derp.paths.
        let config = try write("config.yaml", """
            state_dir: \(directory)/state
            listen_addr: 127.0.0.1:0
            metrics_listen_addr: "off"
            derp:
              server:
                enabled: true
                automatically_add_embedded_derp_region: false
                stun_listen_addr: 127.0.0.1:\(try DERPMapLoopback.freePort(udp: true))
              port: \(try DERPMapLoopback.freePort())
            """)
        let result = try DERPMapServedControl.run(["serve", "--config", config])
        XCTAssertEqual(result.status, 2, result.stderr)
        XCTAssertTrue(result.stderr.contains("needs derp.paths that describe it"), result.stderr)
    }

    // MARK: Helpers

    func write(_ name: String, _ text: String) throws -> String {
        let path = directory + "/" + name
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// A DERP map in tailcfg's JSON spelling, one node per region.
    static func jsonMap(_ regions: [(id: Int, code: String, name: String, host: String)]) -> Data {
        var out: [String: Any] = [:]
        for r in regions {
            out[String(r.id)] = ["RegionID": r.id, "RegionCode": r.code, "RegionName": r.name,
                                 "Nodes": [["Name": "\(r.id)a", "RegionID": r.id, "HostName": r.host, "IPv4": "192.0.2.\(r.id % 250 + 1)"]]]
        }
        return try! JSONSerialization.data(withJSONObject: ["Regions": out], options: [.sortedKeys])
    }
}

// MARK: - The server under test

/// `warren-control serve` with a configuration, until `stop()`; the control URL is read from its output.
final class DERPMapServedControl: @unchecked Sendable {
    let process = Process()
    let port: Int
    let config: String
    private let errors = DERPMapReadAll()

    struct NotStarted: Error, CustomStringConvertible { var description: String }

    init(config: String, directory: String) throws {
        self.config = config
        process.executableURL = URL(fileURLWithPath: try RealTailscaleClientTests.warrenControlBinary())
        process.arguments = ["serve", "--config", config, "--state-dir", directory + "/state"]
        let output = Pipe(), errorPipe = Pipe()
        process.standardOutput = output
        process.standardError = errorPipe
        try process.run()
        errors.drain(errorPipe)
        var text = ""
        while !text.contains("point clients at") || !text.contains("\n  tailscale up") {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            text += String(decoding: chunk, as: UTF8.self)
        }
        guard let range = text.range(of: "point clients at: http://127.0.0.1:"),
              let port = Int(text[range.upperBound...].prefix(while: \.isNumber)) else {
            kill(process.processIdentifier, SIGTERM)
            process.waitUntilExit()
            throw NotStarted(description: "serve did not start: \(text)\n\(errors.text())")
        }
        self.port = port
    }

    /// Ends the server (SIGTERM) and returns its standard error.
    @discardableResult
    func stop() -> String {
        if process.isRunning {
            kill(process.processIdentifier, SIGTERM)
            process.waitUntilExit()
        }
        return errors.text()
    }

    /// A registered client (a user and a pre-auth key made with the admin commands).
    func client(seed: UInt64) async throws -> ControlClient {
        let user = "u\(seed)"
        let created = try Self.run(["users", "create", user, "--config", config])
        XCTAssertEqual(created.status, 0, created.stderr)
        let key = try Self.run(["preauthkeys", "create", "--user", user, "--config", config])
        XCTAssertEqual(key.status, 0, key.stderr)
        let authKey = key.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let client = ControlClient(port: port, seed: seed)
        let serverKey = try await ControlClient.fetchKey(host: "127.0.0.1", port: port)
        try await client.connect(controlKey: serverKey.publicKey)
        let registered = try await client.register(client.registerRequest(authKey: authKey, hostname: "derpmap-\(seed)"))
        XCTAssertEqual(registered.machineAuthorized, true)
        return client
    }

    /// The first message of a new client's map stream.
    func firstMap(seed: UInt64 = 1) async throws -> MapResponse {
        let client = try await client(seed: seed)
        let (status, messages) = try await client.map(client.mapRequest(stream: true))
        XCTAssertEqual(status, 200)
        var iterator = messages.makeAsyncIterator()
        let first = try await iterator.next()
        await client.close()
        return try XCTUnwrap(first)
    }

    static func run(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try RealTailscaleClientTests.warrenControlBinary())
        process.arguments = arguments
        let output = Pipe(), errorPipe = Pipe()
        process.standardOutput = output
        process.standardError = errorPipe
        try process.run()
        let errors = DERPMapReadAll()
        errors.drain(errorPipe)
        let outputData = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: outputData, as: UTF8.self), errors.text(waitingForEnd: true))
    }
}

/// Reads a pipe to its end on a thread of its own.
final class DERPMapReadAll: @unchecked Sendable {
    private let lock = NSLock()
    private var data = Data()
    private let done = DispatchSemaphore(value: 0)

    func drain(_ pipe: Pipe) {
        Thread.detachNewThread { [self] in
            while true {
                let chunk = pipe.fileHandleForReading.availableData
                if chunk.isEmpty { break }
                lock.withLock { data.append(chunk) }
            }
            done.signal()
        }
    }

    func text(waitingForEnd: Bool = true) -> String {
        if waitingForEnd {
            _ = done.wait(timeout: .now() + 10)
            done.signal()
        }
        return lock.withLock { String(decoding: data, as: UTF8.self) }
    }
}

enum DERPMapLoopback {
    /// A free loopback port.
    static func freePort(udp: Bool = false) throws -> Int { try LoopbackPort.free(udp: udp) }
}

/// An HTTP/1.1 server on 127.0.0.1 for the test: each path answers a status and body that the test sets (and may
/// change); every connection gets one answer and is closed.
final class DERPMapHTTPServer: @unchecked Sendable {
    struct Answer {
        var status: Int
        var body: Data
        var contentLength: Bool
    }

    let port: Int
    private let fd: Int32
    private let lock = NSLock()
    private var answers: [String: Answer] = [:]
    private var counts: [String: Int] = [:]
    private var stopped = false

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.fd = fd
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Int32 in
                guard bind(fd, pointer, length) == 0 else { return -1 }
                return getsockname(fd, pointer, &length)
            }
        }
        guard bound == 0, listen(fd, 16) == 0 else {
            close(fd)
            throw CocoaError(.fileWriteUnknown)
        }
        port = Int(UInt16(bigEndian: address.sin_port))
        Thread.detachNewThread { [self] in acceptLoop() }
    }

    func set(_ path: String, status: Int, body: Data, contentLength: Bool = true) {
        lock.withLock { answers[path] = Answer(status: status, body: body, contentLength: contentLength) }
    }

    func requests(to path: String) -> Int { lock.withLock { counts[path] ?? 0 } }

    func stop() {
        lock.withLock { stopped = true }
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }

    private func acceptLoop() {
        while true {
            let client = accept(fd, nil, nil)
            if client < 0 {
                if lock.withLock({ stopped }) { return }
                if errno == EINTR { continue }
                return
            }
            Thread.detachNewThread { [self] in serve(client) }
        }
    }

    private func serve(_ client: Int32) {
        defer { close(client) }
        var request = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !request.ends(with: [13, 10, 13, 10]) && request.count < 65536 {
            let n = read(client, &buffer, buffer.count)
            if n <= 0 { return }
            request += buffer[0..<n]
        }
        let line = String(decoding: request.prefix(while: { $0 != 13 }), as: UTF8.self).split(separator: " ")
        let path = line.count >= 2 ? String(line[1]) : "/"
        let answer = lock.withLock { () -> Answer in
            counts[path, default: 0] += 1
            return answers[path] ?? Answer(status: 404, body: Data(), contentLength: true)
        }
        var head = "HTTP/1.1 \(answer.status) X\r\nContent-Type: application/json\r\nConnection: close\r\n"
        if answer.contentLength { head += "Content-Length: \(answer.body.count)\r\n" }
        head += "\r\n"
        let bytes = Array(head.utf8) + answer.body
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { write(client, $0.baseAddress, $0.count) }
            if n <= 0 { return }
            offset += n
        }
    }
}

private extension Array where Element == UInt8 {
    func ends(with suffix: [UInt8]) -> Bool { count >= suffix.count && Array(self[(count - suffix.count)...]) == suffix }
}
