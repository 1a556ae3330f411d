// `warren-control policy set|get|history`: the policy of the running server, through the admin API (the
// same --state-dir/--config socket or --server URL + API key as the other admin commands).

import ArgumentParser
import Foundation
import WarrenControlAdmin

extension PolicyCommand {
    struct SetPolicy: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set",
            abstract: "Check a policy against the running server's tailnet (tests and sshTests included) and put it in force.",
            discussion: "A policy that does not parse, validate or pass its tests is refused with the problems (line:column) "
                + "and the previous policy stays in force. Refused when the server runs with policy_file (file mode).")
        @OptionGroup var connection: AdminConnectionOptions
        @Argument(help: "The policy file (HuJSON), or - for standard input.") var policy: String

        func run() async throws {
            let text: String
            if policy == "-" {
                text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
            } else {
                text = try PolicyFiles.read(policy)
            }
            let client = try connection.client()
            let label = policy == "-" ? "<stdin>" : policy
            let set: PolicyJSON
            do {
                set = try await client.call("PUT", "/api/v1/warren/policy", body: SetPolicyBody(policy: text), as: PolicyJSON.self)
            } catch let error as AdminClientError {
                Console.printError("warren-control: \(label): \(error.message)")
                throw ExitCode.failure
            }
            print("policy version \(set.version.map(String.init) ?? "?") is in force; \(set.nodesChanged ?? 0) node(s) updated")
        }
    }

    struct Get: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the policy in force on the running server.")
        @OptionGroup var connection: AdminConnectionOptions
        @Option(name: .shortAndLong, help: "Output format: text (the policy itself), json, json-line or yaml.") var output: OutputFormat = .text

        func run() async throws {
            let client = try connection.client()
            let current = try await adminCall { try await client.call("GET", "/api/v1/warren/policy", as: PolicyJSON.self) }
            if let rendered = AdminOutput.render(current, output) { return print(rendered, terminator: "") }
            if current.source == "none" {
                Console.printError("warren-control: no policy was set; every node may reach every other")
                return
            }
            print(current.policy, terminator: current.policy.hasSuffix("\n") ? "" : "\n")
        }
    }

    struct History: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the stored policy versions (database mode).")
        @OptionGroup var connection: AdminConnectionOptions
        @Option(name: .shortAndLong, help: "Output format: text, json, json-line or yaml.") var output: OutputFormat = .text

        func run() async throws {
            let client = try connection.client()
            let versions = try await adminCall { try await client.call("GET", "/api/v1/warren/policy/history", as: [PolicyVersionJSON].self) }
            if let rendered = AdminOutput.render(versions, output) { return print(rendered, terminator: "") }
            AdminOutput.table(["VERSION", "UPDATED", "BYTES"], versions.map { [String($0.version), $0.updatedAt, String($0.policy.utf8.count)] })
        }
    }
}
