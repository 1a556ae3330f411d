import ArgumentParser

/// warren-control: the coordination server's command line. Each area is a subcommand group in its own
/// file (the policy commands are in PolicyCommands.swift).
struct WarrenControl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "warren-control",
        abstract: "Warren's coordination server and its administration.",
        subcommands: [PolicyCommand.self])
}

WarrenControl.main()
