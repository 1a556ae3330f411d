// `warren-control apikeys …`: create (prints the key alone), list, expire, delete. A key is named by its prefix
// (-p, as headscale's), its id (-i) or an argument (the key, its prefix or id); headscale's aliases are accepted
// (apikey, api; ls, c/new, revoke/exp/e, remove/del).

import ArgumentParser
import Foundation
import WarrenControlAdmin

/// An API key named by -p PREFIX or -i ID (headscale's flags) or by an argument (the key, its prefix or its id).
struct APIKeyReference: ParsableArguments {
    @Option(name: .shortAndLong, help: "The key's prefix.") var prefix: String?
    @Option(name: [.customShort("i"), .long], help: "The key's id.") var id: Int64?
    @Argument(help: "The key, its prefix or its id (or -p / -i).") var key: String?

    func resolve() throws -> String {
        switch (prefix, id, key) {
        case (let prefix?, nil, nil): return prefix
        case (nil, let id?, nil): return String(id)
        case (nil, nil, let key?): return key
        case (nil, nil, nil): throw ValidationError("name the key: KEY, PREFIX, ID, -p PREFIX or -i ID")
        default: throw ValidationError("name the key once: KEY, PREFIX, ID, -p PREFIX or -i ID")
        }
    }
}

struct APIKeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apikeys", abstract: "Manage API keys for the admin API over the network (--server).",
        subcommands: [Create.self, List.self, Expire.self, Delete.self],
        aliases: ["apikey", "api"])

    /// headscale's default lifetime of an API key made by its CLI.
    static let defaultExpiration = "90d"

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an API key and print it (shown only this once).",
                                                        aliases: ["c", "new"])
        @OptionGroup var connection: AdminConnectionOptions
        @Option(name: [.customShort("e"), .long], help: "Lifetime (30m, 24h, 90d), an RFC 3339 time, or never.")
        var expiration: String = APIKeysCommand.defaultExpiration
        @Option(name: .shortAndLong, help: "Output format: text (the key alone), json, json-line or yaml.") var output: OutputFormat = .text

        func run() async throws {
            let client = try connection.client()
            let (absolute, relative) = try expirationFields(expiration)
            let created = try await adminCall {
                try await client.call("POST", "/api/v1/apikeys", body: CreateAPIKeyBody(expiration: absolute, expiresIn: relative),
                                      as: CreatedAPIKeyJSON.self)
            }
            AdminOutput.emit(created, output) { print(created.key) }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List API keys (their prefixes).", aliases: ["ls", "show"])
        @OptionGroup var connection: AdminConnectionOptions
        @Option(name: .shortAndLong, help: "Output format: text, json, json-line or yaml.") var output: OutputFormat = .text

        func run() async throws {
            let client = try connection.client()
            let keys = try await adminCall { try await client.call("GET", "/api/v1/apikeys", as: [APIKeyJSON].self) }
            AdminOutput.emit(keys, output) {
                AdminOutput.table(["ID", "PREFIX", "CREATED", "EXPIRATION"],
                                  keys.map { [String($0.id), $0.prefix, $0.created, $0.expired ? "expired" : ($0.expiration ?? "never")] })
            }
        }
    }

    struct Expire: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Expire an API key now (by its prefix, id or the key).",
                                                        aliases: ["revoke", "exp", "e"])
        @OptionGroup var connection: AdminConnectionOptions
        @OptionGroup var reference: APIKeyReference
        @Option(name: .shortAndLong, help: "Output format: text, json, json-line or yaml.") var output: OutputFormat = .text

        func run() async throws {
            let key = try reference.resolve()
            let client = try connection.client()
            let expired = try await adminCall {
                try await client.call("POST", "/api/v1/apikeys/expire", body: ExpireKeyBody(key: key), as: APIKeyJSON.self)
            }
            AdminOutput.emit(expired, output) { print("API key \(expired.prefix) expired") }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete an API key (by its prefix, id or the key).",
                                                        aliases: ["remove", "del", "rm"])
        @OptionGroup var connection: AdminConnectionOptions
        @OptionGroup var reference: APIKeyReference
        @Option(name: .shortAndLong, help: "Output format: text, json, json-line or yaml.") var output: OutputFormat = .text

        func run() async throws {
            let key = try reference.resolve()
            let client = try connection.client()
            let deleted = try await adminCall {
                try await client.call("DELETE", "/api/v1/apikeys/\(percentEncoded(key))", as: APIKeyJSON.self)
            }
            AdminOutput.emit(deleted, output) { print("API key \(deleted.prefix) deleted") }
        }
    }
}
