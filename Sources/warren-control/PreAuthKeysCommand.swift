// `warren-control preauthkeys …`: create (prints the key alone), list, expire.

import ArgumentParser
import Foundation
import WarrenControlAdmin

struct PreAuthKeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "preauthkeys", abstract: "Manage pre-auth keys (tailscale up --authkey).",
        subcommands: [Create.self, List.self, Expire.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a pre-auth key and print it (shown only this once).")
        @OptionGroup var connection: AdminConnectionOptions
        @Option(name: .shortAndLong, help: "The user whose nodes the key registers.") var user: String
        @Flag(help: "Usable any number of times (default: once).") var reusable = false
        @Flag(help: "Nodes registered with it are ephemeral.") var ephemeral = false
        @Flag(help: "Skips device approval; approves advertised routes.") var preApproved = false
        @Option(help: "Tags for its nodes, such as tag:a,tag:b.") var tags: String?
        @Option(help: "Lifetime (24h, 7d) or an RFC 3339 time. Default: no expiry.") var expiration: String?
        @Option(name: .shortAndLong, help: "Output format: text (the key alone) or json.") var output: OutputFormat = .text

        func run() async throws {
            let client = try connection.client()
            let (absolute, relative) = try expirationFields(expiration)
            let body = CreatePreAuthKeyBody(user: user, reusable: reusable, ephemeral: ephemeral, preApproved: preApproved,
                                            tags: commaList(tags), expiration: absolute, expiresIn: relative)
            let created = try await adminCall { try await client.call("POST", "/api/v1/preauthkeys", body: body, as: CreatedPreAuthKeyJSON.self) }
            if output == .json { AdminOutput.json(created) } else { print(created.key) }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List pre-auth keys (their prefixes; keys are stored hashed).")
        @OptionGroup var connection: AdminConnectionOptions
        @Option(name: .shortAndLong, help: "Only this user's keys.") var user: String?
        @Option(name: .shortAndLong, help: "Output format: text or json.") var output: OutputFormat = .text

        func run() async throws {
            let client = try connection.client()
            let path = "/api/v1/preauthkeys" + (user.map { "?user=\(percentEncoded($0))" } ?? "")
            let keys = try await adminCall { try await client.call("GET", path, as: [PreAuthKeyJSON].self) }
            if output == .json { return AdminOutput.json(keys) }
            AdminOutput.table(
                ["ID", "PREFIX", "USER", "REUSABLE", "EPHEMERAL", "USED", "EXPIRATION", "TAGS"],
                keys.map { key in
                    [String(key.id), key.prefix, key.user, String(key.reusable), String(key.ephemeral), String(key.used),
                     key.expired ? "expired" : (key.expiration ?? "never"), AdminOutput.list(key.tags)]
                })
        }
    }

    struct Expire: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Expire a pre-auth key now (by the key or its prefix).")
        @OptionGroup var connection: AdminConnectionOptions
        @Option(name: .shortAndLong, help: "Accepted for headscale compatibility; the key alone identifies it.") var user: String?
        @Argument(help: "The key, or its prefix.") var key: String

        func run() async throws {
            let client = try connection.client()
            let expired = try await adminCall {
                try await client.call("POST", "/api/v1/preauthkeys/expire", body: ExpireKeyBody(key: key), as: PreAuthKeyJSON.self)
            }
            print("Pre-auth key \(expired.prefix) expired")
        }
    }
}
