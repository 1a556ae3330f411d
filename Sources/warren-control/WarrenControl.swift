import ArgumentParser

/// warren-control: the coordination server's command line. Each area is a subcommand group in its own
/// file: `serve` in Serve.swift, the policy commands in PolicyCommands.swift, the admin commands
/// (users, preauthkeys, nodes, apikeys) beside them.
@main
struct WarrenControl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "warren-control",
        abstract: "Warren's coordination server and its administration.",
        subcommands: [ServeCommand.self, PolicyCommand.self] + adminSubcommands)
}
