// `warren-control users …`: create, list, rename, delete. A user is named by its name or its id (as an argument, or
// with headscale's -n/--name and -i/--identifier); headscale's aliases are accepted (user, namespace; ls, mv, destroy…).

import ArgumentParser
import Foundation
import WarrenControlAdmin

/// A user named by headscale's flags (-i ID, -n NAME) or by an argument (its name or id).
struct UserReference: ParsableArguments {
    @Option(name: [.customShort("i"), .long], help: "The user's id.") var identifier: Int64?
    @Option(name: [.customShort("n"), .long], help: "The user's name.") var name: String?

    /// The reference the server resolves (a name starts with a letter, so digits alone are an id).
    func resolve(_ argument: String?) throws -> String {
        switch (identifier, name, argument) {
        case (let id?, nil, nil): return String(id)
        case (nil, let name?, nil): return name
        case (nil, nil, let argument?): return argument
        case (nil, nil, nil): throw ValidationError("name the user: NAME, ID, --name NAME or --identifier ID")
        default: throw ValidationError("name the user once: NAME, ID, --name NAME or --identifier ID")
        }
    }
}

struct UsersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "users", abstract: "Manage users (the owners of nodes and pre-auth keys).",
        subcommands: [Create.self, List.self, Rename.self, Delete.self],
        aliases: ["user", "namespace", "namespaces", "ns"])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a user.", aliases: ["c", "new"])
        @OptionGroup var connection: AdminConnectionOptions
        @Option(name: [.customShort("d"), .long], help: "A display name.") var displayName: String?
        @Option(name: [.customShort("e"), .long], help: "The user's e-mail address (a policy can name the user by it).")
        var email: String?
        @Option(name: [.customShort("p"), .customLong("picture-url")],
                help: "The user's profile picture, an http(s) URL (clients show it).")
        var pictureURL: String?
        @Option(name: .shortAndLong, help: "Output format: text, json, json-line or yaml.") var output: OutputFormat = .text
        @Argument(help: "The user's name.") var name: String

        func run() async throws {
            let client = try connection.client()
            let body = CreateUserBody(name: name, displayName: displayName, email: email, pictureURL: pictureURL)
            let user = try await adminCall { try await client.call("POST", "/api/v1/users", body: body, as: UserJSON.self) }
            AdminOutput.emit(user, output) { print("User \(user.name) created (id \(user.id))") }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List users (all, or the one named by -i or -n).", aliases: ["ls", "show"])
        @OptionGroup var connection: AdminConnectionOptions
        @Option(name: [.customShort("i"), .long], help: "Only the user with this id.") var identifier: Int64?
        @Option(name: [.customShort("n"), .long], help: "Only the user with this name.") var name: String?
        @Option(name: [.customShort("e"), .long], help: "Only the user with this e-mail address.") var email: String?
        @Option(name: .shortAndLong, help: "Output format: text, json, json-line or yaml.") var output: OutputFormat = .text

        func run() async throws {
            let client = try connection.client()
            var users = try await adminCall { try await client.call("GET", "/api/v1/users", as: [UserJSON].self) }
            if let identifier { users = users.filter { $0.id == identifier } }
            if let name { users = users.filter { $0.name == name } }
            if let email { users = users.filter { $0.email == email } }
            AdminOutput.emit(users, output) {
                AdminOutput.table(["ID", "NAME", "DISPLAY NAME", "EMAIL", "PROVIDER", "CREATED"], users.map {
                    [String($0.id), $0.name, $0.displayName, $0.email, Self.provider($0), $0.created]
                })
            }
        }

        /// "oidc (https://idp.example/alice)", "oidc", or "" for a local user.
        static func provider(_ user: UserJSON) -> String {
            switch (user.provider.isEmpty, user.providerID) {
            case (_, let id?) where !id.isEmpty: return user.provider.isEmpty ? id : "\(user.provider) (\(id))"
            default: return user.provider
            }
        }
    }

    struct Rename: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Rename a user: rename OLD NEW, or (headscale's form) -i ID|-n NAME -r NEW.", aliases: ["mv"])
        @OptionGroup var connection: AdminConnectionOptions
        @OptionGroup var user: UserReference
        @Option(name: [.customShort("r"), .long], help: "The new name.") var newName: String?
        @Option(name: .shortAndLong, help: "Output format: text, json, json-line or yaml.") var output: OutputFormat = .text
        @Argument(help: "[USER] NEW-NAME (the user by name or id).") var arguments: [String] = []

        func run() async throws {
            var rest = arguments
            let newName: String
            if let flag = self.newName {
                newName = flag
            } else {
                guard let last = rest.popLast() else { throw ValidationError("give the new name (or -r NEW-NAME)") }
                newName = last
            }
            guard rest.count <= 1 else { throw ValidationError("too many arguments: rename USER NEW-NAME") }
            let reference = try user.resolve(rest.first)
            let client = try connection.client()
            let renamed = try await adminCall {
                try await client.call("POST", "/api/v1/users/\(percentEncoded(reference))/rename", body: RenameBody(newName: newName),
                                      as: UserJSON.self)
            }
            AdminOutput.emit(renamed, output) { print("User \(reference) renamed to \(renamed.name)") }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete a user (refused while it owns nodes).", aliases: ["destroy", "del", "rm"])
        @OptionGroup var connection: AdminConnectionOptions
        @OptionGroup var user: UserReference
        @Flag(help: "Accepted for headscale compatibility (no question is asked).") var force = false
        @Option(name: .shortAndLong, help: "Output format: text, json, json-line or yaml.") var output: OutputFormat = .text
        @Argument(help: "The user's name or id (or -n / -i).") var reference: String?

        func run() async throws {
            let reference = try user.resolve(self.reference)
            let client = try connection.client()
            let deleted = try await adminCall {
                try await client.call("DELETE", "/api/v1/users/\(percentEncoded(reference))", as: UserJSON.self)
            }
            AdminOutput.emit(deleted, output) { print("User \(deleted.name) deleted") }
        }
    }
}
