import ArgumentParser
import Foundation
import WarrenLocalAPI

/// `warren`: the node's command line, speaking the LocalAPI of warrend over its unix socket. Subcommands and flags
/// follow the `tailscale` CLI.
@main
struct Warren: AsyncParsableCommand {
    static let version = "0.1.0"

    static let configuration = CommandConfiguration(
        commandName: "warren",
        abstract: "Control the warrend node daemon.",
        version: version,
        subcommands: [
            UpCommand.self, DownCommand.self, LoginCommand.self, LogoutCommand.self, VersionCommand.self,
            StatusCommand.self, IPCommand.self, PingCommand.self, NetcheckCommand.self, WhoisCommand.self, ExitNodeCommand.self, DNSCommand.self,
        ])

    @OptionGroup var globals: GlobalOptions

    /// Go-style boolean flags ("--self=false", "--peers=true") are rewritten to the ArgumentParser forms first.
    static func main() async {
        await main(rewriteGoBooleans(Array(CommandLine.arguments.dropFirst())))
    }

    static let invertibleFlags = ["self", "peers", "until-direct", "active", "accept-routes", "accept-dns", "snat-subnet-routes",
                                  "advertise-exit-node", "exit-node-allow-lan-access", "shields-up"]

    static func rewriteGoBooleans(_ arguments: [String]) -> [String] {
        arguments.map { argument in
            for flag in invertibleFlags {
                for prefix in ["--", "-"] {
                    switch argument {
                    case "\(prefix)\(flag)=true", "\(prefix)\(flag)=1": return "--\(flag)"
                    case "\(prefix)\(flag)=false", "\(prefix)\(flag)=0": return "--no-\(flag)"
                    default: continue
                    }
                }
            }
            return argument
        }
    }
}

struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: "Path of warrend's LocalAPI socket.")
    var socket: String = LocalAPIServer.defaultSocketPath

    var client: LocalAPIClient { LocalAPIClient(socketPath: socket) }
}

/// A failure to report as one line on stderr, exit status 1.
struct CLIError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Runs `body`; any error becomes one line on stderr and exit status 1.
func reporting(_ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let exit as ExitCode {
        throw exit
    } catch let error as CLIError {
        printError(error.description)
        throw ExitCode.failure
    } catch let error as LocalAPIClientError {
        printError(error.description)
        throw ExitCode.failure
    } catch {
        printError(String(describing: error))
        throw ExitCode.failure
    }
}

func printError(_ message: String) {
    FileHandle.standardError.write(Data((message.hasSuffix("\n") ? message : message + "\n").utf8))
}

func printOut(_ text: String) {
    FileHandle.standardOutput.write(Data(text.utf8))
}

func printJSON(_ value: some Encodable) throws {
    printOut(String(decoding: try LocalAPIJSON.encode(value, pretty: true), as: UTF8.self) + "\n")
}

/// Parses a Go-style duration ("30s", "1m30s", "500ms", "2h", "0") or plain seconds ("45", "1.5") into seconds.
func parseDuration(_ text: String) -> Double? {
    if let seconds = Double(text), seconds >= 0, seconds.isFinite { return seconds }
    let units: [(String, Double)] = [("ms", 0.001), ("us", 1e-6), ("µs", 1e-6), ("ns", 1e-9), ("h", 3600), ("m", 60), ("s", 1)]
    var rest = Substring(text)
    var total = 0.0
    guard !rest.isEmpty else { return nil }
    while !rest.isEmpty {
        let number = rest.prefix { $0.isNumber || $0 == "." }
        guard !number.isEmpty, let value = Double(number) else { return nil }
        rest = rest.dropFirst(number.count)
        guard let (unit, scale) = units.first(where: { rest.hasPrefix($0.0) }) else { return nil }
        rest = rest.dropFirst(unit.count)
        total += value * scale
    }
    return total
}
