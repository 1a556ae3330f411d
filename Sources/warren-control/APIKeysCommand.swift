// `warren-control apikeys …`: create (prints the key alone), list, expire, delete. A key is named by its prefix
// (-p, as headscale's), its id (-i) or an argument (the key, its prefix or id); headscale's aliases are accepted
// (apikey, api; ls, c/new, revoke/exp/e, remove/del).

import ArgumentParser
import Foundation
import WarrenControlAdmin
import WarrenControlStore

/// An API key named by -p PREFIX or -i ID (headscale's flags) or by an argument (the key, its prefix or its id).
struct APIKeyReference: ParsableArguments {
    @Option(name: .shortAndLong, help: "The key's prefix (as listed, or headscale's forms: hskey-api-PREFIX-***, a legacy 7-character prefix).")
    var prefix: String?
    @Option(name: [.customShort("i"), .long], help: "The key's id.") var id: Int64?
    @Argument(help: "The key, its prefix or its id (or -p / -i).") var key: String?

    /// The id of the key named, found in the server's list: a prefix in any form `APIKeyPrefix.bare` reads, an id, or
    /// (an argument) either, refused when it names two different keys.
    func resolve(with client: AdminClient) async throws -> String {
        switch (prefix, id, key) {
        case (nil, let id?, nil): return String(id)
        case (let prefix?, nil, nil):
            let bare = try APIKeyPrefix.bare(prefix)
            let keys = try await adminCall { try await client.call("GET", "/api/v1/apikeys", as: [APIKeyJSON].self) }
            guard let key = keys.first(where: { $0.prefix == bare }) else { throw AdminClientError("no API key with prefix \(bare)") }
            return String(key.id)
        case (nil, nil, let reference?):
            let keys = try await adminCall { try await client.call("GET", "/api/v1/apikeys", as: [APIKeyJSON].self) }
            return try APIKeyPrefix.resolve(reference, among: keys)
        case (nil, nil, nil): throw ValidationError("name the key: KEY, PREFIX, ID, -p PREFIX or -i ID")
        default: throw ValidationError("name the key once: KEY, PREFIX, ID, -p PREFIX or -i ID")
        }
    }
}

/// The prefixes an operator may give for an API key, as headscale 0.29 reads them (its ParseAPIKeyPrefix) plus Warren's
/// own: the stored prefix itself (12 characters, or headscale's legacy 7), a display form (`wkey-api-PREFIX-***`,
/// `hskey-api-PREFIX-***`, `PREFIX***`), or the whole key (Warren's, headscale's, or headscale's legacy
/// `PREFIX.SECRET`).
enum APIKeyPrefix {
    static func bare(_ text: String) throws -> String {
        var t = text.trimmingCharacters(in: .whitespaces)
        if let whole = PresentedKey(parsing: t, kind: .api) { return whole.prefix }
        // The display forms end in "-***" (wkey-api-/hskey-api-) or "***" (legacy); a prefix may itself end in "-".
        if t.hasSuffix("-***") { t.removeLast(4) } else if t.hasSuffix("***") { t.removeLast(3) }
        for (head, valid) in [("wkey-api-", SecretKeyText.isPrefixText(_:)), ("hskey-api-", { isBase64URLSafe($0) })] as [(String, (Substring) -> Bool)]
            where t.hasPrefix(head) {
            // headscale takes the 12 characters after its tag, whatever follows them.
            let rest = t.dropFirst(head.count)
            let candidate = rest.prefix(SecretKeyText.prefixLength)
            guard candidate.count == SecretKeyText.prefixLength, valid(candidate),
                  rest.count == SecretKeyText.prefixLength || rest.dropFirst(SecretKeyText.prefixLength).first == "-" else {
                throw ValidationError("\(text.debugDescription): after \(head) an API key prefix has \(SecretKeyText.prefixLength) characters")
            }
            return String(candidate)
        }
        let lengths = [SecretKeyText.prefixLength, PresentedKey.headscaleLegacyAPIPrefixLength]
        guard lengths.contains(t.utf8.count), isBase64URLSafe(Substring(t)) else {
            throw ValidationError("\(text.debugDescription) is not an API key prefix: expected the prefix as listed (12 characters), "
                + "wkey-api-PREFIX-***, hskey-api-PREFIX-***, or a legacy headscale prefix (7 characters)")
        }
        return t
    }

    static func isBase64URLSafe(_ text: Substring) -> Bool { !text.isEmpty && text.utf8.allSatisfy(PresentedKey.isBase64URLSafe) }

    /// The id of the key an argument names (an id, a prefix in any form, or the key), refusing a reference that is
    /// both one key's id and another's prefix.
    static func resolve(_ reference: String, among keys: [APIKeyJSON]) throws -> String {
        let byID = Int64(reference).flatMap { id in keys.first { $0.id == id } }
        let bare = try? bare(reference)
        let byPrefix = bare.flatMap { prefix in keys.first { $0.prefix == prefix } }
        switch (byID, byPrefix) {
        case (let a?, let b?) where a.id != b.id:
            throw AdminClientError("\(reference) is both the id of API key \(a.prefix) and the prefix of API key \(b.id): "
                + "say which with -i \(reference) or -p \(reference)")
        case (let key?, _), (nil, let key?):
            return String(key.id)
        case (nil, nil):
            if let bare { throw AdminClientError("no API key with prefix \(bare)") }
            if let id = Int64(reference) { throw AdminClientError("no API key with id \(id)") }
            _ = try APIKeyPrefix.bare(reference)  // throws what is wrong with it
            throw AdminClientError("no API key \(reference)")
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
            let client = try connection.client()
            let key = try await adminCall { try await reference.resolve(with: client) }
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
            let client = try connection.client()
            let key = try await adminCall { try await reference.resolve(with: client) }
            let deleted = try await adminCall {
                try await client.call("DELETE", "/api/v1/apikeys/\(percentEncoded(key))", as: APIKeyJSON.self)
            }
            AdminOutput.emit(deleted, output) { print("API key \(deleted.prefix) deleted") }
        }
    }
}
