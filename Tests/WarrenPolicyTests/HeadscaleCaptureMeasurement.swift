import Foundation
import WarrenPolicy
import XCTest

/// A measurement, not a CI test: it runs only when WARREN_HEADSCALE_CAPTURES names a directory holding
/// headscale's own capture files (hscontrol/policy/v2/testdata/<category>/*.hujson), which
/// scripts/headscale-policy-captures.sh extracts at run time from a local git mirror of juanfont/headscale.
/// Nothing of those files is held in this repository.
///
/// Each capture is reduced at run time to the shape of ../shared/conformance/tailscale-policy (policy, response
/// code and message, topology, and per node the filter rules, SSH rules and peer names) and checked with
/// ConformanceTests.check on the three paths. Captures whose test_id is also in the shared set are counted apart:
/// they must all pass (a check of this reduction); the others are the held-out set, reported with each mismatch.
final class HeadscaleCaptureMeasurement: XCTestCase {
    func testHeadscaleCaptures() throws {
        guard let root = ProcessInfo.processInfo.environment["WARREN_HEADSCALE_CAPTURES"] else {
            throw XCTSkip("WARREN_HEADSCALE_CAPTURES not set; run scripts/policy/headscale-captures.sh")
        }
        let dir = URL(fileURLWithPath: root)
        let fm = FileManager.default
        let shared = Set(((try? fm.subpathsOfDirectory(atPath: ConformanceTests.dataDirectory.path)) ?? [])
            .filter { $0.hasSuffix(".json") }.map { String(($0 as NSString).lastPathComponent.dropLast(5)) })
        let categories = try fm.contentsOfDirectory(atPath: dir.path).sorted()
        var report = ""
        var heldTotal = 0, heldPassed = 0, sharedTotal = 0, sharedPassed = 0
        var perCategory: [String: (Int, Int)] = [:]
        let only = ProcessInfo.processInfo.environment["WARREN_HEADSCALE_ONLY"].flatMap { $0.isEmpty ? nil : $0 }
        for category in categories {
            let files = ((try? fm.contentsOfDirectory(atPath: dir.appendingPathComponent(category).path)) ?? [])
                .filter { $0.hasSuffix(".hujson") }.sorted()
            for file in files {
                let id = String(file.dropLast(7))
                if let only, !id.contains(only) { continue }
                let text = try String(contentsOf: dir.appendingPathComponent(category).appendingPathComponent(file), encoding: .utf8)
                var problem: String?
                if let reduced = Self.reduce(text) {
                    for path in [ConformanceTests.Path.reference, .full, .joins] {
                        if let p = ConformanceTests.check(reduced, id: id, engine: path) {
                            problem = "[\(path.rawValue)] " + p
                            break
                        }
                    }
                } else {
                    problem = "unreadable capture"
                }
                let isShared = shared.contains(id)
                if isShared {
                    sharedTotal += 1
                    if problem == nil { sharedPassed += 1 }
                } else {
                    heldTotal += 1
                    if problem == nil { heldPassed += 1 }
                    var c = perCategory[category] ?? (0, 0)
                    c.1 += 1
                    if problem == nil { c.0 += 1 }
                    perCategory[category] = c
                }
                if let problem { report += "FAIL\(isShared ? " (shared)" : "") \(id): \(problem)\n" }
            }
        }
        var summary = "headscale captures: held-out \(heldPassed)/\(heldTotal), shared ids \(sharedPassed)/\(sharedTotal)\n"
        for (c, v) in perCategory.sorted(by: { $0.key < $1.key }) { summary += "  \(c): \(v.0)/\(v.1)\n" }
        print(summary + report)
        if let path = ProcessInfo.processInfo.environment["WARREN_HEADSCALE_REPORT"] {
            try? (summary + report).write(toFile: path, atomically: true, encoding: .utf8)
        }
        XCTAssertEqual(sharedPassed, sharedTotal, "captures also in the shared set must pass (else the reduction is wrong)")
    }

    /// headscale's capture file reduced to the shared set's JSON shape, or nil when it cannot be read.
    static func reduce(_ text: String) -> Data? {
        guard let node = try? HuJSON.parse(text),
              let whole = try? JSONSerialization.jsonObject(with: Data(node.jsonText.utf8)) as? [String: Any]
        else { return nil }
        let input = whole["input"] as? [String: Any] ?? [:]
        var out: [String: Any] = [:]
        out["policy"] = input["full_policy"]
        out["api_response_code"] = input["api_response_code"] ?? 200
        if let body = input["api_response_body"] { out["api_response_body"] = body }
        let topology = whole["topology"] as? [String: Any] ?? [:]
        out["topology"] = topology
        // Peers are named by the topology node owning one of their addresses, else by their name's first label.
        var owner: [String: String] = [:]
        for (name, n) in topology["nodes"] as? [String: Any] ?? [:] {
            guard let n = n as? [String: Any] else { continue }
            for key in ["ipv4", "ipv6"] { if let a = n[key] as? String { owner[a] = name } }
        }
        var captures: [String: Any] = [:]
        for (name, c) in whole["captures"] as? [String: Any] ?? [:] {
            guard let c = c as? [String: Any] else { continue }
            let netmap = c["netmap"] as? [String: Any] ?? [:]
            var reduced: [String: Any] = [:]
            reduced["packet_filter_rules"] = c["packet_filter_rules"] ?? NSNull()
            if let s = c["ssh_rules"], !(s is NSNull) {
                reduced["ssh_rules"] = s
            } else {
                reduced["ssh_rules"] = (netmap["SSHPolicy"] as? [String: Any])?["rules"] ?? NSNull()
            }
            reduced["peers"] = (netmap["Peers"] as? [[String: Any]] ?? []).map { peer -> [String: Any] in
                let addresses = (peer["Addresses"] as? [String] ?? []).map { String($0.split(separator: "/")[0]) }
                let label = (peer["Name"] as? String ?? "").split(separator: ".").first.map(String.init) ?? ""
                return ["name": addresses.lazy.compactMap { owner[$0] }.first ?? label]
            }
            captures[name] = reduced
        }
        out["captures"] = captures
        return try? JSONSerialization.data(withJSONObject: out)
    }
}
