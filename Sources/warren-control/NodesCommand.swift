// `warren-control nodes …`: list, register, expire, rename, tag, delete, routes, approve-routes.
// A node is named by its id or its MagicDNS name, as an argument or with -i/--identifier (headscale's form).

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
        subcommands: [List.self, Register.self, Approve.self, Expire.self, Rename.self, Tag.self, Delete.self, Routes.self, ApproveRoutes.self])

    static func printNodes(_ nodes: [NodeJSON], format: OutputFormat) {
        if format == .json { return AdminOutput.json(nodes) }
        AdminOutput.table(
            ["ID", "NAME", "HOSTNAME", "USER", "ADDRESSES", "ONLINE", "EXPIRED", "TAGS"],
            nodes.map { node in
                [String(node.id), node.givenName, node.hostname, node.user, node.ipAddresses.joined(separator: ","),
                 node.online ? "online" : "offline", node.expired ? "yes" : "no", AdminOutput.list(node.tags)]
            })
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List nodes.")
        @OptionGroup var connection: AdminConnectionOptions
        @Option(name: .shortAndLong, help: "Only this user's nodes.") var user: String?
        @Option(name: .shortAndLong, help: "Output format: text or json.") var output: OutputFormat = .text

        func run() async throws {
            let client = try connection.client()
            let path = "/api/v1/nodes" + (user.map { "?user=\(percentEncoded($0))" } ?? "")
            let nodes = try await adminCall { try await client.call("GET", path, as: [NodeJSON].self) }
            NodesCommand.printNodes(nodes, format: output)
        }
    }

    struct Register: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Approve an interactive login (the key is the end of its AuthURL).")
        @OptionGroup var connection: AdminConnectionOptions
        @Option(name: .shortAndLong, help: "The user who will own the node.") var user: String
        @Option(name: .shortAndLong, help: "The registration id from the login URL (…/register/<id>).") var key: String
        @Option(name: .shortAndLong, help: "Output format: text or json.") var output: OutputFormat = .text

        func run() async throws {
            let client = try connection.client()
            let node = try await adminCall {
                try await client.call("POST", "/api/v1/nodes/register", body: RegisterNodeBody(user: user, key: key), as: NodeJSON.self)
            }
            if output == .json { return AdminOutput.json(node) }
            print("Node \(node.givenName) registered for \(node.user) (id \(node.id), \(node.ipAddresses.joined(separator: ", ")))")
        }
    }

    struct Approve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Approve a device that waits for approval (require_device_approval: true).")
        @OptionGroup var connection: AdminConnectionOptions
        @OptionGroup var node: NodeReference
        @Argument(help: "The node's id or name (or -i).") var arguments: [String] = []

        func run() async throws {
            var rest = arguments
            let path = try node.path(&rest)
            let client = try connection.client()
            let approved = try await adminCall {
                try await client.call("POST", path + "/approve", as: NodeJSON.self)
            }
            print("Node \(approved.givenName) approved")
        }
    }

    struct Expire: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Expire a node's key now (it must log in again).")
        @OptionGroup var connection: AdminConnectionOptions
        @OptionGroup var node: NodeReference
        @Argument(help: "The node's id or name (or -i).") var arguments: [String] = []

        func run() async throws {
            var rest = arguments
            let path = try node.path(&rest)
            let client = try connection.client()
            let expired = try await adminCall {
                try await client.call("POST", path + "/expire", as: NodeJSON.self)
            }
            print("Node \(expired.givenName) expired")
        }
    }

    struct Rename: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Set a node's MagicDNS name: rename NODE NEW-NAME, or -i ID NEW-NAME.")
        @OptionGroup var connection: AdminConnectionOptions
        @OptionGroup var node: NodeReference
        @Argument(help: "[NODE] NEW-NAME") var arguments: [String] = []

        func run() async throws {
            var rest = arguments
            let path = try node.path(&rest)
            guard rest.count == 1 else { throw ValidationError("give the new name (one DNS label)") }
            let client = try connection.client()
            let renamed = try await adminCall {
                try await client.call("POST", path + "/rename", body: RenameBody(newName: rest[0]), as: NodeJSON.self)
            }
            print("Node \(renamed.id) is now \(renamed.givenName)")
        }
    }

    struct Tag: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Replace a node's tags (an empty --tags removes them).")
        @OptionGroup var connection: AdminConnectionOptions
        @OptionGroup var node: NodeReference
        @Option(name: [.customShort("t"), .long], help: "Tags such as tag:a,tag:b.") var tags: String
        @Argument(help: "The node's id or name (or -i).") var arguments: [String] = []

        func run() async throws {
            var rest = arguments
            let path = try node.path(&rest)
            let client = try connection.client()
            let tagged = try await adminCall {
                try await client.call("POST", path + "/tags", body: TagsBody(tags: commaList(tags)), as: NodeJSON.self)
            }
            print("Node \(tagged.givenName) tags: \(AdminOutput.list(tagged.tags))")
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a node (its addresses are not handed out again).")
        @OptionGroup var connection: AdminConnectionOptions
        @OptionGroup var node: NodeReference
        @Flag(help: "Accepted for headscale compatibility (no question is asked).") var force = false
        @Argument(help: "The node's id or name (or -i).") var arguments: [String] = []

        func run() async throws {
            var rest = arguments
            let path = try node.path(&rest)
            let client = try connection.client()
            let deleted = try await adminCall { try await client.call("DELETE", path, as: NodeJSON.self) }
            print("Node \(deleted.givenName) deleted")
        }
    }

    struct Routes: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a node's advertised and approved routes.")
        @OptionGroup var connection: AdminConnectionOptions
        @OptionGroup var node: NodeReference
        @Option(name: .shortAndLong, help: "Output format: text or json.") var output: OutputFormat = .text
        @Argument(help: "The node's id or name (or -i).") var arguments: [String] = []

        func run() async throws {
            var rest = arguments
            let path = try node.path(&rest)
            let client = try connection.client()
            let routes = try await adminCall { try await client.call("GET", path + "/routes", as: RoutesJSON.self) }
            if output == .json { return AdminOutput.json(routes) }
            AdminOutput.table(["ID", "ADVERTISED", "APPROVED", "SERVED"],
                              [[String(routes.nodeID), AdminOutput.list(routes.advertisedRoutes), AdminOutput.list(routes.approvedRoutes),
                                AdminOutput.list(routes.servedRoutes)]])
        }
    }

    struct ApproveRoutes: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "approve-routes", abstract: "Set a node's approved routes (an empty --routes approves none).")
        @OptionGroup var connection: AdminConnectionOptions
        @OptionGroup var node: NodeReference
        @Option(name: [.customShort("r"), .long], help: "Routes such as 10.0.0.0/24,0.0.0.0/0,::/0.") var routes: String
        @Option(name: .shortAndLong, help: "Output format: text or json.") var output: OutputFormat = .text
        @Argument(help: "The node's id or name (or -i).") var arguments: [String] = []

        func run() async throws {
            var rest = arguments
            let path = try node.path(&rest)
            let client = try connection.client()
            let result = try await adminCall {
                try await client.call("POST", path + "/approve-routes",
                                      body: RoutesBody(routes: commaList(routes)), as: RoutesJSON.self)
            }
            if output == .json { return AdminOutput.json(result) }
            print("Node \(result.nodeID) approved routes: \(AdminOutput.list(result.approvedRoutes))")
        }
    }
}
