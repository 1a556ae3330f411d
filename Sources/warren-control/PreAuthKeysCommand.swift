// `warren-control preauthkeys …`: create (prints the key alone), list, expire, delete. A key is named by its id
// (-i/--id, as headscale's), its prefix or the key itself; headscale's aliases are accepted (preauthkey, authkey, pre;
// ls, c/new, revoke/exp/e, del/rm/d).

import ArgumentParser
import Foundation
import WarrenControlAdmin

/// A pre-auth key named by -i ID (headscale's form) or by an argument (the key, its prefix or its id).
struct PreAuthKeyReference: ParsableArguments {
    @Option(name: [.customShort("i"), .long], help: "The key's id.") var id: Int64?
    @Argument(help: "The key, its prefix or its id (or -i ID).") var key: String?

    func resolve() throws -> String {
        switch (id, key) {
        case (let id?, nil): return String(id)
        case (nil, let key?): return key
        case (nil, nil): throw ValidationError("name the key: KEY, PREFIX, ID or -i ID")
        default: throw ValidationError("name the key once: KEY, PREFIX, ID or -i ID")
        }
    }
}

struct PreAuthKeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "preauthkeys", abstract: "Manage pre-auth keys (tailscale up --authkey).",
        subcommands: [Create.self, List.self, Expire.self, Delete.self],
        aliases: ["preauthkey", "authkey", "pre", "preauth"])

    /// headscale's default lifetime of a pre-auth key made by its CLI.
    static let defaultExpiration = "1h"

    static func printKeys(_ keys: [PreAuthKeyJSON], _ format: OutputFormat) {
        AdminOutput.emit(keys, format) {
            AdminOutput.table(
                ["ID", "PREFIX", "USER", "REUSABLE", "EPHEMERAL", "USED", "EXPIRATION", "TAGS"],
                keys.map { key in
                    [String(key.id), key.prefix, key.user, String(key.reusable), String(key.ephemeral), String(key.used),
                     key.expired ? "expired" : (key.expiration ?? "never"), AdminOutput.list(key.tags)]
                })
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a pre-auth key and print it (shown only this once).",
                                                        aliases: ["c", "new"])
        @OptionGroup var connection: AdminConnectionOptions
        @Option(name: .shortAndLong, help: "The user (name or id) whose nodes the key registers.") var user: String
        @Flag(help: "Usable any number of times (default: once).") var reusable = false
        @Flag(help: "Nodes registered with it are ephemeral.") var ephemeral = false
        @Flag(help: "Skips device approval; approves advertised routes.") var preApproved = false
        @Option(help: "Tags for its nodes, such as tag:a,tag:b.") var tags: String?
        @Option(name: [.customShort("e"), .long], help: "Lifetime (30m, 24h, 7d), an RFC 3339 time, or never.")
        var expiration: String = PreAuthKeysCommand.defaultExpiration
        @Option(name: .shortAndLong, help: "Output format: text (the key alone), json, json-line or yaml.") var output: OutputFormat = .text

        func run() async throws {
            let client = try connection.client()
            let (absolute, relative) = try expirationFields(expiration)
            let body = CreatePreAuthKeyBody(user: user, reusable: reusable, ephemeral: ephemeral, preApproved: preApproved,
                                            tags: commaList(tags), expiration: absolute, expiresIn: relative)
            let created = try await adminCall { try await client.call("POST", "/api/v1/preauthkeys", body: body, as: CreatedPreAuthKeyJSON.self) }
            AdminOutput.emit(created, output) { print(created.key) }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List pre-auth keys (their prefixes; keys are stored hashed).",
                                                        aliases: ["ls", "show"])
        @OptionGroup var connection: AdminConnectionOptions
        @Option(name: .shortAndLong, help: "Only this user's keys (name or id).") var user: String?
        @Option(name: .shortAndLong, help: "Output format: text, json, json-line or yaml.") var output: OutputFormat = .text

        func run() async throws {
            let client = try connection.client()
            let path = "/api/v1/preauthkeys" + (user.map { "?user=\(percentEncoded($0))" } ?? "")
            let keys = try await adminCall { try await client.call("GET", path, as: [PreAuthKeyJSON].self) }
            PreAuthKeysCommand.printKeys(keys, output)
        }
    }

    struct Expire: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Expire a pre-auth key now (by its id, prefix or the key).",
                                                        aliases: ["revoke", "exp", "e"])
        @OptionGroup var connection: AdminConnectionOptions
        @OptionGroup var reference: PreAuthKeyReference
        @Option(name: .shortAndLong, help: "Accepted for headscale compatibility; the key alone identifies it.") var user: String?
        @Option(name: .shortAndLong, help: "Output format: text, json, json-line or yaml.") var output: OutputFormat = .text

        func run() async throws {
            let key = try reference.resolve()
            let client = try connection.client()
            let expired = try await adminCall {
                try await client.call("POST", "/api/v1/preauthkeys/expire", body: ExpireKeyBody(key: key), as: PreAuthKeyJSON.self)
            }
            AdminOutput.emit(expired, output) { print("Pre-auth key \(expired.prefix) expired") }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a pre-auth key (by its id, prefix or the key).",
                                                        aliases: ["del", "rm", "d"])
        @OptionGroup var connection: AdminConnectionOptions
        @OptionGroup var reference: PreAuthKeyReference
        @Option(name: .shortAndLong, help: "Output format: text, json, json-line or yaml.") var output: OutputFormat = .text

        func run() async throws {
            let key = try reference.resolve()
            let client = try connection.client()
            let deleted = try await adminCall {
                try await client.call("DELETE", "/api/v1/preauthkeys/\(percentEncoded(key))", as: PreAuthKeyJSON.self)
            }
            AdminOutput.emit(deleted, output) { print("Pre-auth key \(deleted.prefix) deleted") }
        }
    }
}
