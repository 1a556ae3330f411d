// `warren-control users …`: create, list, rename, delete.

import ArgumentParser
import Foundation
import WarrenControlAdmin

struct UsersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "users", abstract: "Manage users (the owners of nodes and pre-auth keys).",
        subcommands: [Create.self, List.self, Rename.self, Delete.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a user.")
        @OptionGroup var connection: AdminConnectionOptions
        @Option(help: "A display name.") var displayName: String?
        @Option(name: .shortAndLong, help: "Output format: text or json.") var output: OutputFormat = .text
        @Argument(help: "The user's name.") var name: String

        func run() async throws {
            let client = try connection.client()
            let user = try await adminCall {
                try await client.call("POST", "/api/v1/users", body: CreateUserBody(name: name, displayName: displayName), as: UserJSON.self)
            }
            if output == .json { AdminOutput.json(user) } else { print("User \(user.name) created (id \(user.id))") }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List users.")
        @OptionGroup var connection: AdminConnectionOptions
        @Option(name: .shortAndLong, help: "Output format: text or json.") var output: OutputFormat = .text

        func run() async throws {
            let client = try connection.client()
            let users = try await adminCall { try await client.call("GET", "/api/v1/users", as: [UserJSON].self) }
            if output == .json { return AdminOutput.json(users) }
            AdminOutput.table(["ID", "NAME", "DISPLAY NAME", "CREATED"], users.map { [String($0.id), $0.name, $0.displayName, $0.created] })
        }
    }

    struct Rename: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Rename a user.")
        @OptionGroup var connection: AdminConnectionOptions
        @Argument(help: "The current name.") var oldName: String
        @Argument(help: "The new name.") var newName: String

        func run() async throws {
            let client = try connection.client()
            let user = try await adminCall {
                try await client.call("POST", "/api/v1/users/\(percentEncoded(oldName))/rename", body: RenameBody(newName: newName), as: UserJSON.self)
            }
            print("User \(oldName) renamed to \(user.name)")
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a user (refused while it owns nodes).")
        @OptionGroup var connection: AdminConnectionOptions
        @Argument(help: "The user's name.") var name: String

        func run() async throws {
            let client = try connection.client()
            _ = try await adminCall { try await client.call("DELETE", "/api/v1/users/\(percentEncoded(name))", as: UserJSON.self) }
            print("User \(name) deleted")
        }
    }
}
