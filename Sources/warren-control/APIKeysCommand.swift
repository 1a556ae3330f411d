// `warren-control apikeys …`: create (prints the key alone), list, expire.

import ArgumentParser
import Foundation
import WarrenControlAdmin

struct APIKeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apikeys", abstract: "Manage API keys for the admin API over the network (--server).",
        subcommands: [Create.self, List.self, Expire.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an API key and print it (shown only this once).")
        @OptionGroup var connection: AdminConnectionOptions
        @Option(help: "Lifetime (90d) or an RFC 3339 time. Default: no expiry.") var expiration: String?
        @Option(name: .shortAndLong, help: "Output format: text (the key alone) or json.") var output: OutputFormat = .text

        func run() async throws {
            let client = try connection.client()
            let (absolute, relative) = try expirationFields(expiration)
            let created = try await adminCall {
                try await client.call("POST", "/api/v1/apikeys", body: CreateAPIKeyBody(expiration: absolute, expiresIn: relative),
                                      as: CreatedAPIKeyJSON.self)
            }
            if output == .json { AdminOutput.json(created) } else { print(created.key) }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List API keys (their prefixes).")
        @OptionGroup var connection: AdminConnectionOptions
        @Option(name: .shortAndLong, help: "Output format: text or json.") var output: OutputFormat = .text

        func run() async throws {
            let client = try connection.client()
            let keys = try await adminCall { try await client.call("GET", "/api/v1/apikeys", as: [APIKeyJSON].self) }
            if output == .json { return AdminOutput.json(keys) }
            AdminOutput.table(["ID", "PREFIX", "CREATED", "EXPIRATION"],
                              keys.map { [String($0.id), $0.prefix, $0.created, $0.expired ? "expired" : ($0.expiration ?? "never")] })
        }
    }

    struct Expire: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Expire an API key now (by the key or its prefix).")
        @OptionGroup var connection: AdminConnectionOptions
        @Option(name: .shortAndLong, help: "The key's prefix (or give it as the argument).") var prefix: String?
        @Argument(help: "The key, or its prefix.") var key: String?

        func run() async throws {
            guard let reference = prefix ?? key else { throw ValidationError("give the key or its prefix") }
            let client = try connection.client()
            let expired = try await adminCall {
                try await client.call("POST", "/api/v1/apikeys/expire", body: ExpireKeyBody(key: reference), as: APIKeyJSON.self)
            }
            print("API key \(expired.prefix) expired")
        }
    }
}
