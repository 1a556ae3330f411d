import ArgumentParser
import Foundation
import WarrenLocalAPI

/// `warren exit-node list|suggest`, as `tailscale exit-node` has them.
struct ExitNodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "exit-node", abstract: "Show exit nodes.",
        subcommands: [ExitNodeListCommand.self, ExitNodeSuggestCommand.self])
}

struct ExitNodeListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List the exit nodes this node may use.")

    @OptionGroup var globals: GlobalOptions

    @Option(help: "Show only exit nodes whose name or ID contains this text.")
    var filter: String?

    func run() async throws {
        try await reporting {
            let status = try await globals.client.status(peers: true)
            if let message = StatusFormatter.notRunningMessage(status) {
                printOut(message + "\n")
                throw ExitCode.failure
            }
            printOut(Self.table(status, filter: filter))
        }
    }

    /// Columns IP, HOSTNAME, STATUS (Tailscale adds COUNTRY and CITY from locations that Warren's control
    /// server does not send); sorted by host name. The STATUS is "selected", "offline" or "-".
    static func table(_ status: IPNStatus, filter: String?) -> String {
        let options = status.peer.values.filter(\.exitNodeOption).filter { peer in
            guard let filter, !filter.isEmpty else { return true }
            let f = filter.lowercased()
            return peer.dnsName.lowercased().contains(f) || peer.hostName.lowercased().contains(f) || peer.id.lowercased().contains(f)
        }.sorted { ($0.dnsName, $0.id) < ($1.dnsName, $1.id) }
        guard !options.isEmpty else {
            return "No exit nodes found.\n"
        }
        var rows = [["IP", "HOSTNAME", "STATUS"]]
        for peer in options {
            let name = peer.dnsName.hasSuffix(".") ? String(peer.dnsName.dropLast()) : (peer.dnsName.isEmpty ? peer.hostName : peer.dnsName)
            let state = peer.exitNode ? "selected" : (peer.online ? "-" : "offline")
            rows.append([peer.tailscaleIPs.first ?? "", name, state])
        }
        var widths = [Int](repeating: 0, count: 3)
        for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
        var out = ""
        for row in rows {
            let cells = row.enumerated().map { i, cell in i == row.count - 1 ? cell : cell.padding(toLength: widths[i] + 3, withPad: " ", startingAt: 0) }
            out += " " + cells.joined() + "\n"
        }
        out += "\n# To use an exit node: warren up --exit-node=<name or IP>\n"
        return out
    }
}

struct ExitNodeSuggestCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "suggest", abstract: "Suggest the best exit node for this node.")

    @OptionGroup var globals: GlobalOptions

    func run() async throws {
        try await reporting {
            let suggestion = try await globals.client.suggestExitNode()
            let name = suggestion.name.hasSuffix(".") ? String(suggestion.name.dropLast()) : suggestion.name
            printOut("Suggested exit node: \(name)\nTo accept this suggestion, use `warren up --exit-node=\(name)` (or --exit-node=auto:any to follow the best one).\n")
        }
    }
}
