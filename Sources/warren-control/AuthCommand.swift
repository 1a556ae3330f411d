// `warren-control auth …`: the interactive logins waiting for an admin, as headscale 0.29's `auth` commands handle them:
// register (approve for a user), approve (complete it; for a machine that already has a node no user is needed),
// reject (the waiting client is refused at once), and list (Warren's: the logins waiting now).

import ArgumentParser
import Foundation
import WarrenControlAdmin

struct AuthCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "auth", abstract: "Manage interactive logins waiting for approval (tailscale up without a key).",
        subcommands: [List.self, Register.self, Approve.self, Reject.self])

    static let outputHelp: ArgumentHelp = "Output format: text, json, json-line or yaml."

    /// `auth register` and `nodes register`: the login becomes a node of `user`.
    static func register(connection: AdminConnectionOptions, user: String, authID: String, output: OutputFormat) async throws {
        let client = try connection.client()
        let node = try await adminCall {
            try await client.call("POST", "/api/v1/nodes/register", body: RegisterNodeBody(user: user, key: authID), as: NodeJSON.self)
        }
        AdminOutput.emit(node, output) {
            print("Node \(node.givenName) registered for \(node.user) (id \(node.id), \(node.ipAddresses.joined(separator: ", ")))")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the interactive logins waiting for approval.",
                                                        aliases: ["ls", "show"])
        @OptionGroup var connection: AdminConnectionOptions
        @Option(name: .shortAndLong, help: AuthCommand.outputHelp) var output: OutputFormat = .text

        func run() async throws {
            let client = try connection.client()
            let pending = try await adminCall { try await client.call("GET", "/api/v1/registrations", as: [PendingRegistrationJSON].self) }
            let waiting = pending.filter { $0.approvedNodeID == nil }
            AdminOutput.emit(waiting, output) {
                AdminOutput.table(["AUTH ID", "HOSTNAME", "MACHINE KEY", "CREATED", "EXPIRES"],
                                  waiting.map { [$0.id, $0.hostname, $0.machineKey, $0.created, $0.expires] })
            }
        }
    }

    struct Register: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Register the machine of a waiting login to a user.")
        @OptionGroup var connection: AdminConnectionOptions
        @Option(name: .shortAndLong, help: "The user (name or id) who will own the node.") var user: String
        @Option(name: .customLong("auth-id"), help: "The login's id: the end of its URL (…/register/<id>), or the whole URL.") var authID: String
        @Option(name: .shortAndLong, help: AuthCommand.outputHelp) var output: OutputFormat = .text

        func run() async throws {
            try await AuthCommand.register(connection: connection, user: user, authID: authID, output: output)
        }
    }

    struct Approve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Approve a waiting login: a machine that already has a node logs in again as its owner; a new one needs --user.")
        @OptionGroup var connection: AdminConnectionOptions
        @Option(name: .customLong("auth-id"), help: "The login's id: the end of its URL (…/register/<id>), or the whole URL.") var authID: String
        @Option(name: .shortAndLong, help: "The user (name or id) for a new machine (as auth register).") var user: String?
        @Option(name: .shortAndLong, help: AuthCommand.outputHelp) var output: OutputFormat = .text

        func run() async throws {
            let client = try connection.client()
            let node = try await adminCall {
                try await client.call("POST", "/api/v1/registrations/\(percentEncoded(AuthCommand.loginID(authID)))/approve",
                                      body: ApproveRegistrationBody(user: user), as: NodeJSON.self)
            }
            AdminOutput.emit(node, output) { print("Auth request approved: node \(node.givenName) (id \(node.id)) of \(node.user)") }
        }
    }

    struct Reject: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Reject a waiting login: its client is refused at once.")
        @OptionGroup var connection: AdminConnectionOptions
        @Option(name: .customLong("auth-id"), help: "The login's id: the end of its URL (…/register/<id>), or the whole URL.") var authID: String
        @Option(name: .shortAndLong, help: AuthCommand.outputHelp) var output: OutputFormat = .text

        func run() async throws {
            let client = try connection.client()
            let rejected = try await adminCall {
                try await client.call("POST", "/api/v1/registrations/\(percentEncoded(AuthCommand.loginID(authID)))/reject",
                                      as: PendingRegistrationJSON.self)
            }
            AdminOutput.emit(rejected, output) { print("Auth request rejected: \(rejected.id) (\(rejected.hostname))") }
        }
    }

    /// The login id from an id or a pasted login URL.
    static func loginID(_ text: String) -> String {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if trimmed.contains("/register/"), let last = trimmed.split(separator: "/").last { return String(last) }
        return trimmed
    }
}
