// `warren-control audit` (the admin actions recorded by the running server) and `warren-control health` (the server
// answers and its database passes the store's health check).

import ArgumentParser
import Foundation
import WarrenControlAdmin

struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "Show the audit log: who changed what through the admin API (socket or API key), when, and the outcome.",
        discussion: "Only changes (POST, PUT, PATCH, DELETE) are recorded; the server keeps the newest 10000.")

    @OptionGroup var connection: AdminConnectionOptions

    @Option(help: "Only entries since this long ago (30m, 24h, 7d) or this RFC 3339 time.")
    var since: String?

    @Option(help: "At most this many entries (the newest), 1 to 10000.")
    var limit: Int = 100

    @Option(name: .shortAndLong, help: "Output format: text, json, json-line or yaml.") var output: OutputFormat = .text

    func validate() throws {
        guard (1...10_000).contains(limit) else { throw ValidationError("--limit \(limit): expected 1 to 10000") }
        if let since, DurationText.parse(since) == nil, AdminTime.parse(since) == nil {
            throw ValidationError("--since \(since): expected a duration such as 30m, 24h or 7d, or an RFC 3339 time")
        }
    }

    func run() async throws {
        let client = try connection.client()
        var path = "/api/v1/warren/audit?limit=\(limit)"
        if let since { path += "&since=" + percentEncoded(since) }
        let entries = try await adminCall { try await client.call("GET", path, as: [AuditEntryJSON].self) }
        AdminOutput.emit(entries, output) {
            AdminOutput.table(["TIME", "ACTOR", "METHOD", "ROUTE", "OBJECT", "STATUS", "OUTCOME"],
                              entries.map { [$0.time, $0.actor, $0.method, $0.route, $0.object.isEmpty ? "-" : $0.object,
                                             String($0.status), $0.outcome] })
        }
    }
}

struct HealthCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "health",
        abstract: "Check that the running server answers and that its database works (exit status 0 or 1).")

    @OptionGroup var connection: AdminConnectionOptions

    @Option(name: .shortAndLong, help: "Output format: text, json, json-line or yaml.") var output: OutputFormat = .text

    struct Report: Codable {
        var databaseConnectivity: Bool
        var error: String?
    }

    func run() async throws {
        let client = try connection.client()
        let status: Int
        let body: [UInt8]
        do {
            (status, body) = try await client.send("GET", "/api/v1/health")
        } catch let error as AdminClientError {
            Console.printError("warren-control: health: the server does not answer: \(error.message)")
            throw ExitCode.failure
        }
        let object = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any]
        let healthy = status == 200 && (object?["databaseConnectivity"] as? Bool) == true
        let problem = healthy ? nil
            : (object?["message"] as? String) ?? "the server answered \(status): \(String(decoding: body.prefix(200), as: UTF8.self))"
        let report = Report(databaseConnectivity: healthy, error: problem)
        AdminOutput.emit(report, output) {
            print(healthy ? "server: ok\ndatabase: ok" : "server: answering\ndatabase: FAILED")
        }
        if let problem {
            Console.printError("warren-control: health: \(problem)")
            throw ExitCode.failure
        }
    }
}

/// `audit` and `health`, registered by `WarrenControl`.
let operationsSubcommands: [any ParsableCommand.Type] = [AuditCommand.self, HealthCommand.self]
