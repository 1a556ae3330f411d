import ArgumentParser
import Foundation

/// warren-control: the coordination server's command line. Each area is a subcommand group in its own
/// file: `serve` in Serve.swift, the policy commands in PolicyCommands.swift, the admin commands
/// (users, preauthkeys, nodes, apikeys) beside them.
@main
struct WarrenControl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "warren-control",
        abstract: "Warren's coordination server and its administration.",
        subcommands: [ServeCommand.self, ConfigTestCommand.self, VersionCommand.self, PolicyCommand.self, ImportCommand.self] + adminSubcommands + operationsSubcommands)
}

/// Where every warren-control command writes its errors (standard error, one line per call).
enum Console {
    static func printError(_ text: String) {
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }
}
