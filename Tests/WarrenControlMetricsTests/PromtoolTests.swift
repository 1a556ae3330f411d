// The served /metrics checked by Prometheus' own linter (`promtool check metrics`, Debian's prometheus
// package; scripts/setup installs it): once from the in-process server after real ts2021 traffic, so that the
// histograms have samples, and once from the built warren-control binary. Beside promtool, the tests check
// what it does not: every family has HELP and TYPE, the process figures agree with /proc and getrlimit, the
// build gauge names the version `warren-control version` prints, and the encode histogram counted the maps
// the clients received. As root (CI) promtool must be there; elsewhere its absence skips those checks.

import Foundation
import Logging
import TailscaleKeys
import WarrenControlClient
@testable import WarrenControlMetrics
import WarrenControlServer
import WarrenControlStore
import WarrenDERPServer
import WarrenTailcfg
import XCTest

final class PromtoolTests: XCTestCase {
    /// promtool's path, or a skip (a failure as root, where scripts/setup must have installed it).
    static func promtool() throws -> String {
        for directory in ["/usr/bin", "/usr/local/bin", "/bin"] where FileManager.default.isExecutableFile(atPath: directory + "/promtool") {
            return directory + "/promtool"
        }
        if getuid() == 0 {
            XCTFail("promtool is missing: run scripts/setup (Debian's prometheus package) before the tests")
        }
        throw XCTSkip("promtool is not installed (Debian's prometheus package, installed by scripts/setup as root); skipping the lint")
    }

    /// Runs `promtool check metrics` on `text`: its exit status and what it printed.
    static func check(_ text: String) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try promtool())
        process.arguments = ["check", "metrics"]
        let input = Pipe(), output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let writer = input.fileHandleForWriting
        DispatchQueue.global().async {
            writer.write(Data(text.utf8))
            try? writer.close()
        }
        let printed = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: printed, as: UTF8.self))
    }

    /// The families of a scrape: name -> (TYPE, HELP), and the sample lines.
    struct Families {
        var types: [String: String] = [:]
        var help: [String: String] = [:]
        var samples: [(name: String, labels: String, value: Double)] = []

        init(_ text: String) {
            for line in text.split(separator: "\n") {
                let parts = line.split(separator: " ", maxSplits: 3)
                if line.hasPrefix("# TYPE "), parts.count >= 4 { types[String(parts[2])] = String(parts[3]) }
                else if line.hasPrefix("# HELP "), parts.count >= 4 { help[String(parts[2])] = String(parts[3]) }
                else if !line.hasPrefix("#"), let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) {
                    let series = line[..<space]
                    let name = series.prefix { $0 != "{" }
                    samples.append((String(name), String(series.dropFirst(name.count)), value))
                }
            }
        }

        /// The family a sample belongs to (a histogram's _bucket, _sum and _count belong to it).
        func family(of sample: String) -> String? {
            if types[sample] != nil { return sample }
            for suffix in ["_bucket", "_sum", "_count"] where sample.hasSuffix(suffix) {
                let base = String(sample.dropLast(suffix.count))
                if types[base] == "histogram" || types[base] == "summary" { return base }
            }
            return nil
        }

        func value(_ name: String, _ labels: String = "") -> Double? {
            samples.first { $0.name == name && $0.labels == labels }?.value
        }
    }

    /// Every sample's family has a TYPE and a non-empty HELP line.
    func assertEveryFamilyDescribed(_ families: Families, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertFalse(families.samples.isEmpty, "empty scrape", file: file, line: line)
        for sample in families.samples {
            guard let family = families.family(of: sample.name) else {
                XCTFail("\(sample.name) has no TYPE line", file: file, line: line)
                continue
            }
            XCTAssertFalse((families.help[family] ?? "").isEmpty, "\(family) has no HELP text", file: file, line: line)
        }
    }

    func scrape(port: Int) async throws -> String {
        let bytes = try await ControlClient.rawHTTP(
            host: "127.0.0.1", port: port,
            request: "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        let text = String(decoding: bytes, as: UTF8.self)
        guard text.hasPrefix("HTTP/1.1 200"), let split = text.range(of: "\r\n\r\n") else {
            throw ControlClientError(description: "bad metrics response: \(text.prefix(200))")
        }
        return String(text[split.upperBound...])
    }

    func next(_ iterator: inout AsyncThrowingStream<MapResponse, Error>.AsyncIterator) async throws -> MapResponse {
        while true {
            guard let message = try await iterator.next() else { throw ControlClientError(description: "map stream ended") }
            if message.keepAlive == true { continue }
            return message
        }
    }

    /// The in-process server after two clients registered and streamed maps: promtool passes, every family is
    /// described, the encode histogram counted the full maps and the delta, and the process figures are sane.
    func testServedMetricsPassPromtoolAfterRealTraffic() async throws {
        let metrics = ControlMetricsRegistry(version: "9.8.7-test", swift: "6.x")
        let configuration = ControlConfiguration(serverURL: "http://127.0.0.1:0")
        let store = MemoryControlStore()
        let directory = try StoreDirectory(store: store, ipv4Prefix: configuration.ipv4Prefix, ipv6Prefix: configuration.ipv6Prefix)
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        let engine = ControlEngine(configuration: configuration, directory: directory, logger: logger, metrics: metrics.control)
        try await engine.load()
        var generator = SeededKeyGenerator(seed: 21)
        let controlKey = MachinePrivate.generate(using: &generator)
        let server = try await ControlHTTPServer.start(engine: engine, controlKey: controlKey,
                                                       options: ControlServerOptions(host: "127.0.0.1", port: 0), logger: logger)
        let listener = try await MetricsListener.start(metrics: metrics, host: "127.0.0.1", port: 0, logger: logger)
        metrics.watch(derp: DERPServer(configuration: DERPServerConfiguration(privateKey: NodePrivate.generate(using: &generator),
                                                                              logger: logger)))
        let port = try XCTUnwrap(server.port)
        let metricsPort = try XCTUnwrap(listener.port)
        defer { Task { await server.close(); await listener.close() } }

        let key = try await store.transaction { tx in
            let owner = try tx.user(named: "alice") ?? tx.createUser(name: "alice", now: Date())
            var random = SystemRandomNumberGenerator()
            return try tx.createPreAuthKey(userID: owner.id, options: PreAuthKeyOptions(reusable: true), now: Date(),
                                           generator: &random).text
        }
        let a = ControlClient(port: port, seed: 1)
        try await a.connect(controlKey: controlKey.publicKey)
        let ra = try await a.register(a.registerRequest(authKey: key, hostname: "a"))
        XCTAssertEqual(ra.error, "")
        let (_, messagesA) = try await a.map(a.mapRequest(stream: true))
        var itA = messagesA.makeAsyncIterator()
        _ = try await next(&itA)
        let b = ControlClient(port: port, seed: 2)
        try await b.connect(controlKey: controlKey.publicKey)
        let rb = try await b.register(b.registerRequest(authKey: key, hostname: "b"))
        XCTAssertEqual(rb.error, "")
        let joined = try await next(&itA)
        XCTAssertEqual(joined.peersChanged?.first?.key, b.nodeKey.publicKey)
        let (_, messagesB) = try await b.map(b.mapRequest(stream: true))
        var itB = messagesB.makeAsyncIterator()
        let mapB = try await next(&itB)
        XCTAssertEqual(mapB.peers?.count, 1)

        let text = try await scrape(port: metricsPort)
        let families = Families(text)
        assertEveryFamilyDescribed(families)

        // The encode histogram: a's and b's full maps and the delta announcing b, at least.
        let full = try XCTUnwrap(families.value("warren_map_encode_duration_seconds_count", #"{kind="full"}"#), text)
        let delta = try XCTUnwrap(families.value("warren_map_encode_duration_seconds_count", #"{kind="delta"}"#), text)
        XCTAssertGreaterThanOrEqual(full, 2)
        XCTAssertGreaterThanOrEqual(delta, 1)
        XCTAssertEqual(families.types["warren_map_encode_duration_seconds"], "histogram")
        XCTAssertGreaterThan(try XCTUnwrap(families.value("warren_map_encode_duration_seconds_sum", #"{kind="full"}"#)), 0)
        XCTAssertEqual(families.value("warren_map_encode_duration_seconds_bucket", #"{kind="full",le="+Inf"}"#), full)
        // Buckets are cumulative.
        let fullBuckets = families.samples.filter { $0.name == "warren_map_encode_duration_seconds_bucket" && $0.labels.hasPrefix(#"{kind="full""#) }
        XCTAssertEqual(fullBuckets.count, ControlMetrics.mapEncodeBuckets.count + 1)
        XCTAssertEqual(fullBuckets.map(\.value), fullBuckets.map(\.value).sorted())

        // The build gauge.
        XCTAssertEqual(families.value("warren_control_build_info", #"{version="9.8.7-test",swift="6.x"}"#), 1, text)

        // The process figures, against what the process itself reads.
        XCTAssertEqual(families.types["process_cpu_seconds_total"], "counter")
        XCTAssertGreaterThan(try XCTUnwrap(families.value("process_cpu_seconds_total")), 0)
        XCTAssertGreaterThan(try XCTUnwrap(families.value("process_resident_memory_bytes")), Double(1 << 20))
        XCTAssertGreaterThanOrEqual(try XCTUnwrap(families.value("process_virtual_memory_bytes")),
                                    try XCTUnwrap(families.value("process_resident_memory_bytes")))
        var limit = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        XCTAssertEqual(families.value("process_max_fds"), Double(limit.rlim_cur))
        let openFDs = try XCTUnwrap(families.value("process_open_fds"))
        XCTAssertGreaterThanOrEqual(openFDs, 3)
        XCTAssertLessThanOrEqual(openFDs, Double(limit.rlim_cur))
        // This test process started before the test did, and not long before (a generous bound: a day).
        let start = try XCTUnwrap(families.value("process_start_time_seconds"))
        let now = Date().timeIntervalSince1970
        XCTAssertLessThanOrEqual(start, now + 1)
        XCTAssertGreaterThan(start, now - 86_400)

        let (status, output) = try Self.check(text)
        XCTAssertEqual(status, 0, "promtool check metrics:\n\(output)\n--- scrape ---\n\(text)")
        XCTAssertEqual(output.trimmingCharacters(in: .whitespacesAndNewlines), "", output)

        await a.close()
        await b.close()
    }

    /// Each encode is timed under its kind (a full map has Peers, a keep-alive says so, anything else is a delta), the
    /// bytes are those of the untimed encoder, and an encoder without metrics records nothing.
    func testTheEncoderTimesEachMessageUnderItsKind() throws {
        let metrics = ControlMetricsRegistry()
        let timed = MapMessageEncoder(metrics: metrics.control)
        let untimed = MapMessageEncoder()
        var full = MapResponse()
        full.peers = []
        full.domain = "example"
        var delta = MapResponse()
        delta.peersRemoved = [7]
        for message in [MapResponse.keepAliveMessage, full, delta, delta] {
            XCTAssertEqual(try timed.encode(message), try untimed.encode(message))
        }
        let families = Families(String(decoding: metrics.scrape(), as: UTF8.self))
        let count = "warren_map_encode_duration_seconds_count"
        XCTAssertEqual(families.value(count, #"{kind="keepalive"}"#), 1)
        XCTAssertEqual(families.value(count, #"{kind="full"}"#), 1)
        XCTAssertEqual(families.value(count, #"{kind="delta"}"#), 2)
        XCTAssertNil(untimed.metrics)
    }

    /// The check itself can fail: promtool refuses a family without help text, and so does the HELP check here.
    func testAFamilyWithoutHelpIsRefused() throws {
        let metrics = ControlMetricsRegistry()
        // Made through swift-metrics with no help described: registered without a HELP line.
        _ = metrics.factory.makeCounter(label: "warren_undescribed_total", dimensions: [])
        let text = String(decoding: metrics.scrape(), as: UTF8.self)
        let families = Families(text)
        XCTAssertNil(families.help["warren_undescribed_total"])
        XCTAssertNotNil(families.types["warren_undescribed_total"])
        let (status, output) = try Self.check(text)
        XCTAssertNotEqual(status, 0)
        XCTAssertTrue(output.contains("warren_undescribed_total no help text"), output)

        // Described first, it gets its HELP line.
        metrics.describe("warren_described_total", help: "A described counter")
        _ = metrics.factory.makeCounter(label: "warren_described_total", dimensions: [])
        XCTAssertEqual(Families(String(decoding: metrics.scrape(), as: UTF8.self)).help["warren_described_total"], "A described counter")
    }

    /// The built warren-control serves metrics that pass promtool, and its build gauge names the version that
    /// `warren-control version` prints.
    func testTheBuiltBinaryServesMetricsThatPassPromtool() async throws {
        let binary = try Self.warrenControlBinary()
        let directory = "/tmp/wcprom-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try "derp:\n  enabled: false\n".write(toFile: directory + "/c.yaml", atomically: true, encoding: .utf8)

        let version = Process()
        version.executableURL = URL(fileURLWithPath: binary)
        version.arguments = ["version"]
        let versionOutput = Pipe()
        version.standardOutput = versionOutput
        try version.run()
        let versionText = String(decoding: versionOutput.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        version.waitUntilExit()
        let printed = try XCTUnwrap(versionText.split(separator: "\n").first?.split(separator: " ").last.map(String.init), versionText)

        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["serve", "--state-dir", directory + "/state", "--listen", "127.0.0.1:0",
                             "--metrics-listen", "127.0.0.1:0", "--config", directory + "/c.yaml"]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer {
            if process.isRunning {
                kill(process.processIdentifier, SIGTERM)
                process.waitUntilExit()
            }
        }
        var text = ""
        while !text.contains("point clients at") {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            text += String(decoding: chunk, as: UTF8.self)
        }
        guard let range = text.range(of: #"metrics: http://127\.0\.0\.1:([0-9]+)/metrics"#, options: .regularExpression),
              let port = Int(text[range].split(separator: ":").last?.split(separator: "/").first ?? "") else {
            return XCTFail("serve did not print its metrics address: \(text)")
        }
        // One admin API request (refused: no API key), so that the admin request families have samples too.
        guard let control = text.range(of: #"point clients at: http://127\.0\.0\.1:[0-9]+"#, options: .regularExpression),
              let controlPort = Int(text[control].split(separator: ":").last ?? "") else {
            return XCTFail("serve did not print its URL: \(text)")
        }
        let refused = try await ControlClient.rawHTTP(
            host: "127.0.0.1", port: controlPort,
            request: "GET /api/v1/user HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        XCTAssertTrue(String(decoding: refused, as: UTF8.self).hasPrefix("HTTP/1.1 401"), String(decoding: refused.prefix(100), as: UTF8.self))
        let scraped = try await scrape(port: port)
        let families = Families(scraped)
        assertEveryFamilyDescribed(families)
        XCTAssertEqual(families.types["warren_admin_requests_total"], "counter", scraped)
        XCTAssertEqual(families.types["warren_admin_request_duration_seconds"], "histogram", scraped)
        XCTAssertEqual(families.value("warren_control_build_info",
                                      "{version=\"\(printed)\",swift=\"\(WarrenControlBuild.swiftVersion)\"}"), 1, scraped)
        // The server's own process: it started within the last day and holds a few descriptors.
        XCTAssertGreaterThan(try XCTUnwrap(families.value("process_start_time_seconds")), Date().timeIntervalSince1970 - 86_400)
        XCTAssertGreaterThanOrEqual(try XCTUnwrap(families.value("process_open_fds")), 3)
        XCTAssertNotNil(families.types["warren_map_encode_duration_seconds"])
        let (status, lint) = try Self.check(scraped)
        XCTAssertEqual(status, 0, "promtool check metrics:\n\(lint)\n--- scrape ---\n\(scraped)")
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0)
    }

    static func warrenControlBinary() throws -> String {
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = directory.appendingPathComponent("warren-control").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            directory = directory.deletingLastPathComponent()
        }
        throw XCTSkip("warren-control is not built next to the tests; run `swift build --product warren-control` first")
    }
}

/// The /proc reader on its own: the stat line's fields counted from the last ')', and the start time agreeing with
/// /proc/stat's btime (readable here; the reader itself does without it, for ProcSubset=pid).
final class ProcessReadingTests: XCTestCase {
    func testStatFieldsAreCountedFromTheLastParenthesis() throws {
        // comm may hold spaces and parentheses; fields 14, 15, 22, 23, 24 are utime, stime, starttime, vsize, rss.
        let line = "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 9000 123456789 321 "
            + "18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
        let fields = try ProcessReading.statFields(line)
        XCTAssertEqual(fields.utime, 250)
        XCTAssertEqual(fields.stime, 50)
        XCTAssertEqual(fields.starttime, 9000)
        XCTAssertEqual(fields.vsize, 123_456_789)
        XCTAssertEqual(fields.rssPages, 321)
        XCTAssertThrowsError(try ProcessReading.statFields("4242 no parenthesis"))
        XCTAssertThrowsError(try ProcessReading.statFields("4242 (short) S 1 2"))
    }

    func testBootTimeAgreesWithProcStat() throws {
        let stat = try String(contentsOfFile: "/proc/stat", encoding: .utf8)
        let btime = try XCTUnwrap(stat.split(separator: "\n").first { $0.hasPrefix("btime ") }.flatMap { Double($0.dropFirst(6)) })
        // btime is whole seconds; the clocks' difference drifts a little with NTP slewing.
        XCTAssertEqual(try ProcessReading.bootTime(), btime, accuracy: 2)
        let reading = try ProcessReading.current()
        XCTAssertGreaterThanOrEqual(reading.startTimeSeconds, btime - 2)
        XCTAssertLessThanOrEqual(reading.startTimeSeconds, Date().timeIntervalSince1970 + 1)
    }
}
