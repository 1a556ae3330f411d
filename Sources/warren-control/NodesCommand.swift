// `warren-control nodes …`: list, register, approve, expire, rename, tag, delete, list-routes, approve-routes.
// A node is named by its id or its MagicDNS name, as an argument or with -i/--identifier (headscale's form); a user by
// its name or id. headscale's aliases are accepted (node, machine; ls/show, lsr/routes, logout/exp/e, del, tags/t).

import ArgumentParser
import Foundation
import WarrenControlAdmin

struct NodeReference: ParsableArguments {
    @Option(name: [.customShort("i"), .long], help: "The node's id or MagicDNS name.") var identifier: String?

    /// The node from -i, or else the first of `arguments` (which is then consumed).
    func resolve(_ arguments: inout [String]) throws -> String {
        if let identifier { return identifier }
        guard !arguments.isEmpty else { throw ValidationError("name the node: its id or MagicDNS name (or -i ID)") }
        return arguments.removeFirst()
    }

    /// The admin API path of that node: `/api/v1/nodes/{node}`.
    func path(_ arguments: inout [String]) throws -> String {
        "/api/v1/nodes/\(percentEncoded(try resolve(&arguments)))"
    }
}

struct NodesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nodes", abstract: "Manage nodes.",
        subcommands: [List.self, Register.self, Approve.self, Expire.self, Rename.self, Tag.self, Delete.self, ListRoutes.self,
                      ApproveRoutes.self, BackfillIPs.self],
        aliases: ["node", "machine", "machines"])

    static let outputHelp: ArgumentHelp = "Output format: text, json, json-line or yaml."

    static func printNodes(_ nodes: [NodeJSON], format: OutputFormat) {
        AdminOutput.emit(nodes, format) {
            AdminOutput.table(
            ["ID", "NAME", "HOSTNAME", "USER", "ADDRESSES", "ONLINE", "EXPIRED", "TAGS"],
            nodes.map { node in
                [String(node.id), node.givenName, node.hostname, node.user, node.ipAddresses.joined(separator: ","),
                 node.online ? "online" : "offline", node.expired ? "yes" : "no", AdminOutput.list(node.tags)]
            })
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List nodes.", aliases: ["ls", "show"])
        @OptionGroup var connection: AdminConnectionOptions
        @Option(name: .shortAndLong, help: "Only this user's nodes (name or id).") var user: String?
        @Option(name: .shortAndLong, help: NodesCommand.outputHelp) var output: OutputFormat = .text

        func run() async throws {
            let client = try connection.client()
            let path = "/api/v1/nodes" + (user.map { "?user=\(percentEncoded($0))" } ?? "")
            let nodes = try await adminCall { try await client.call("GET", path, as: [NodeJSON].self) }
            NodesCommand.printNodes(nodes, format: output)
        }
    }

    struct Register: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Approve an interactive login for a user (the key is the end of its AuthURL); as `auth register`.")
        @OptionGroup var connection: AdminConnectionOptions
        @Option(name: .shortAndLong, help: "The user (name or id) who will own the node.") var user: String
        @Option(name: .shortAndLong, help: "The registration id from the login URL (…/register/<id>).") var key: String
        @Option(name: .shortAndLong, help: NodesCommand.outputHelp) var output: OutputFormat = .text

        func run() async throws {
            try await AuthCommand.register(connection: connection, user: user, authID: key, output: output)
        }
    }

    struct Approve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Approve a device that waits for approval (require_device_approval: true).")
        @OptionGroup var connection: AdminConnectionOptions
        @OptionGroup var node: NodeReference
        @Option(name: .shortAndLong, help: NodesCommand.outputHelp) var output: OutputFormat = .text
        @Argument(help: "The node's id or name (or -i).") var arguments: [String] = []

        func run() async throws {
            var rest = arguments
            let path = try node.path(&rest)
            let client = try connection.client()
            let approved = try await adminCall {
                try await client.call("POST", path + "/approve", as: NodeJSON.self)
            }
            AdminOutput.emit(approved, output) { print("Node \(approved.givenName) approved") }
        }
    }

    struct Expire: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Expire a node's key now (it must log in again), at a time (--expiry), or never (--disable).",
            aliases: ["logout", "exp", "e"])
        @OptionGroup var connection: AdminConnectionOptions
        @OptionGroup var node: NodeReference
        @Option(name: .shortAndLong, help: "Expire at this RFC 3339 time instead of now.") var expiry: String?
        @Flag(name: .shortAndLong, help: "Disable key expiry: the node's key never expires.") var disable = false
        @Option(name: .shortAndLong, help: NodesCommand.outputHelp) var output: OutputFormat = .text
        @Argument(help: "The node's id or name (or -i).") var arguments: [String] = []

        func run() async throws {
            var rest = arguments
            let path = try node.path(&rest)
            if disable, expiry != nil { throw ValidationError("give either --disable or --expiry, not both") }
            if let expiry, AdminTime.parse(expiry) == nil {
                throw ValidationError("--expiry \(expiry): expected an RFC 3339 time such as 2026-08-27T10:00:00Z")
            }
            let client = try connection.client()
            let body = ExpireNodeBody(disable: disable ? true : nil, expiry: expiry)
            let expired = try await adminCall {
                try await client.call("POST", path + "/expire", body: body, as: NodeJSON.self)
            }
            AdminOutput.emit(expired, output) {
                if disable {
                    print("Node \(expired.givenName) expiry disabled")
                } else if expired.expired {
                    print("Node \(expired.givenName) expired")
                } else {
                    print("Node \(expired.givenName) expires at \(expired.expiry ?? "never")")
                }
            }
        }
    }

    struct Rename: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Set a node's MagicDNS name: rename NODE NEW-NAME, or -i ID NEW-NAME.")
        @OptionGroup var connection: AdminConnectionOptions
        @OptionGroup var node: NodeReference
        @Option(name: .shortAndLong, help: NodesCommand.outputHelp) var output: OutputFormat = .text
        @Argument(help: "[NODE] NEW-NAME") var arguments: [String] = []

        func run() async throws {
            var rest = arguments
            let path = try node.path(&rest)
            guard rest.count == 1 else { throw ValidationError("give the new name (one DNS label)") }
            let client = try connection.client()
            let renamed = try await adminCall {
                try await client.call("POST", path + "/rename", body: RenameBody(newName: rest[0]), as: NodeJSON.self)
            }
            AdminOutput.emit(renamed, output) { print("Node \(renamed.id) is now \(renamed.givenName)") }
        }
    }

    struct Tag: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Replace a node's tags (an empty --tags removes them).",
                                                        aliases: ["tags", "t"])
        @OptionGroup var connection: AdminConnectionOptions
        @OptionGroup var node: NodeReference
        @Option(name: [.customShort("t"), .long], help: "Tags such as tag:a,tag:b.") var tags: String
        @Option(name: .shortAndLong, help: NodesCommand.outputHelp) var output: OutputFormat = .text
        @Argument(help: "The node's id or name (or -i).") var arguments: [String] = []

        func run() async throws {
            var rest = arguments
            let path = try node.path(&rest)
            let client = try connection.client()
            let tagged = try await adminCall {
                try await client.call("POST", path + "/tags", body: TagsBody(tags: commaList(tags)), as: NodeJSON.self)
            }
            AdminOutput.emit(tagged, output) { print("Node \(tagged.givenName) tags: \(AdminOutput.list(tagged.tags))") }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a node (its addresses are not handed out again).",
                                                        aliases: ["del", "rm"])
        @OptionGroup var connection: AdminConnectionOptions
        @OptionGroup var node: NodeReference
        @Flag(help: "Accepted for headscale compatibility (no question is asked).") var force = false
        @Option(name: .shortAndLong, help: NodesCommand.outputHelp) var output: OutputFormat = .text
        @Argument(help: "The node's id or name (or -i).") var arguments: [String] = []

        func run() async throws {
            var rest = arguments
            let path = try node.path(&rest)
            let client = try connection.client()
            let deleted = try await adminCall { try await client.call("DELETE", path, as: NodeJSON.self) }
            AdminOutput.emit(deleted, output) { print("Node \(deleted.givenName) deleted") }
        }
    }

    struct ListRoutes: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "list-routes",
            abstract: "Show the advertised, approved and served routes of every node that has some, or of one node.",
            aliases: ["lsr", "routes"])
        @OptionGroup var connection: AdminConnectionOptions
        @OptionGroup var node: NodeReference
        @Option(name: .shortAndLong, help: NodesCommand.outputHelp) var output: OutputFormat = .text
        @Argument(help: "The node's id or name (or -i); none: every node with routes.") var arguments: [String] = []

        func run() async throws {
            var rest = arguments
            let client = try connection.client()
            let routes: [RoutesJSON]
            if node.identifier != nil || !rest.isEmpty {
                let path = try node.path(&rest)
                routes = [try await adminCall { try await client.call("GET", path + "/routes", as: RoutesJSON.self) }]
            } else {
                routes = try await adminCall { try await client.call("GET", "/api/v1/routes", as: [RoutesJSON].self) }
            }
            guard rest.isEmpty else { throw ValidationError("name one node at most") }
            AdminOutput.emit(routes, output) {
                AdminOutput.table(["ID", "NAME", "ADVERTISED", "APPROVED", "SERVED"], routes.map { routes in
                    [String(routes.nodeID), routes.name, AdminOutput.list(routes.advertisedRoutes), AdminOutput.list(routes.approvedRoutes),
                     AdminOutput.list(routes.servedRoutes)]
                })
            }
        }
    }

    struct ApproveRoutes: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "approve-routes", abstract: "Set a node's approved routes (an empty --routes approves none).")
        @OptionGroup var connection: AdminConnectionOptions
        @OptionGroup var node: NodeReference
        @Option(name: [.customShort("r"), .long], help: "Routes such as 10.0.0.0/24,0.0.0.0/0,::/0.") var routes: String
        @Option(name: .shortAndLong, help: NodesCommand.outputHelp) var output: OutputFormat = .text
        @Argument(help: "The node's id or name (or -i).") var arguments: [String] = []

        func run() async throws {
            var rest = arguments
            let path = try node.path(&rest)
            let client = try connection.client()
            let result = try await adminCall {
                try await client.call("POST", path + "/approve-routes",
                                      body: RoutesBody(routes: commaList(routes)), as: RoutesJSON.self)
            }
            AdminOutput.emit(result, output) { print("Node \(result.nodeID) approved routes: \(AdminOutput.list(result.approvedRoutes))") }
        }
    }

    struct BackfillIPs: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "backfillips",
            abstract: "Give every node an address of each family it lacks or holds outside the configured prefixes.")
        @OptionGroup var connection: AdminConnectionOptions
        @Flag(help: "Accepted for headscale compatibility (no question is asked).") var force = false
        @Option(name: .shortAndLong, help: NodesCommand.outputHelp) var output: OutputFormat = .text

        struct Changes: Codable { var changes: [String] }

        func run() async throws {
            let client = try connection.client()
            // headscale's route (BackfillNodeIPs): the same store operation and map updates as its CLI's.
            let result = try await adminCall {
                try await client.call("POST", "/api/v1/node/backfillips?confirmed=true", as: Changes.self)
            }
            AdminOutput.emit(result.changes, output) {
                if result.changes.isEmpty { print("No node needed an address") }
                for change in result.changes { print(change) }
            }
        }
    }
}
