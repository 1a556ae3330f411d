// warren-wireguard: a userspace WireGuard interface, used like wireguard-go.
//
//     warren-wireguard [-f|--foreground] INTERFACE
//
// Creates the TUN interface, serves the configuration socket /var/run/wireguard/INTERFACE.sock
// (`wg` talks to it), and runs until SIGINT/SIGTERM or until the interface is deleted. Without
// -f it starts itself again in the background and returns once that copy reports the interface
// is up, so that `wg-quick` can go on configuring it.

import ArgumentParser
import Foundation
import WireGuardDevice

@main
struct WarrenWireGuard: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "warren-wireguard",
        abstract: "A userspace WireGuard interface, configured with wg(8) over its UAPI socket.")

    @Flag(name: [.customShort("f"), .customLong("foreground")], help: "Stay in the foreground.")
    var foreground = false

    @Argument(help: "The interface name to create (at most 15 bytes).")
    var interface: String

    func validate() throws {
        guard !interface.isEmpty, interface.utf8.count < 16, !interface.contains("/") else {
            throw ValidationError("invalid interface name \(interface)")
        }
    }

    func run() throws {
        let environment = ProcessInfo.processInfo.environment
        if !foreground && environment[Daemon.foregroundVariable] != "1" {
            let status = Daemon.startInBackground(arguments: CommandLine.arguments, environment: environment)
            throw ExitCode(status)
        }
        let readiness = Daemon.Readiness(environment: environment)
        let level = DeviceLogger.level(fromEnvironment: environment["LOG_LEVEL"])
        let logger = DeviceLogger(level: level, prefix: "(\(interface)) ")
        do {
            let runner = try InterfaceRunner(interface: interface, logger: logger)
            readiness.report(success: true, message: "")
            let code = runner.run()
            throw ExitCode(code)
        } catch let exit as ExitCode {
            throw exit
        } catch {
            logger.error("Failed to start: \(error)")
            readiness.report(success: false, message: "warren-wireguard: \(error)\n")
            if readiness.isNone { FileHandle.standardError.write(Data("warren-wireguard: \(error)\n".utf8)) }
            throw ExitCode(1)
        }
    }
}
