// What the admin subcommands share: how to reach the running server, how to print. Wiring only; the API itself
// is WarrenControlAdmin.
//
// The commands always go through the running server (as headscale's do), never to the database directly: the
// server holds the connected nodes' map sessions and must push every change to them, and it is the one writer
// of the database. Without a server they fail with a message that says so.

import ArgumentParser
import Foundation
import WarrenControlAdmin
import Yams

/// `-o/--output`, as headscale's: human-readable text (headscale's empty value), json (indented), json-line (one line)
/// or yaml.
enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case text
    case json
    case jsonLine = "json-line"
    case yaml

    init?(argument: String) {
        // headscale's empty --output means human-readable.
        self.init(rawValue: argument.isEmpty ? "text" : argument)
    }
}

struct AdminConnectionOptions: ParsableArguments {
    @Option(help: "The running server's state directory; its admin socket (root only) is there. Default: /var/lib/warren.")
    var stateDir: String?

    @Option(help: "The server's YAML configuration file (its state_dir is used).")
    var config: String?

    @Option(help: "Reach the server over the network at this URL instead (needs --api-key or WARREN_API_KEY).")
    var server: String?

    @Option(help: "API key for --server.")
    var apiKey: String?

    static let defaultStateDirectory = "/var/lib/warren"

    func client() throws -> AdminClient {
        if let server {
            guard let url = URL(string: server), url.scheme == "http" || url.scheme == "https" else {
                throw ValidationError("--server \(server): expected an http:// or https:// URL")
            }
            let key = apiKey ?? ProcessInfo.processInfo.environment["WARREN_API_KEY"]
            guard let key, !key.isEmpty else { throw ValidationError("--server needs an API key: --api-key KEY or WARREN_API_KEY") }
            return AdminClient(.server(url: url, apiKey: key), timeout: try Self.timeout())
        }
        return AdminClient(.socket(path: try socketPath()), timeout: try Self.timeout())
    }

    /// How long one request may take: WARREN_CLI_TIMEOUT (a duration such as 10s or 2m, as headscale's cli.timeout),
    /// else the client's default.
    static func timeout() throws -> Duration {
        guard let text = ProcessInfo.processInfo.environment["WARREN_CLI_TIMEOUT"], !text.isEmpty else {
            return AdminClient.defaultTimeout
        }
        guard let seconds = DurationText.parse(text), seconds > 0 else {
            throw ValidationError("WARREN_CLI_TIMEOUT=\(text): expected a duration such as 10s or 2m")
        }
        return .milliseconds(Int64((seconds * 1000).rounded(.up)))
    }

    /// The admin socket: headscale's `unix_socket` from --config when set (relative to the file's directory, as
    /// serve reads it), else `<state dir>/admin.sock`.
    func socketPath() throws -> String {
        if stateDir == nil, let config, let map = try configMap(config), let value = map["unix_socket"] as? String, !value.isEmpty {
            let directory = (config as NSString).deletingLastPathComponent
            return value.hasPrefix("/") || directory.isEmpty ? value : directory + "/" + value
        }
        return AdminClient.socketPath(stateDirectory: try stateDirectory())
    }

    func configMap(_ config: String) throws -> [String: Any]? {
        guard let data = FileManager.default.contents(atPath: config) else { throw ValidationError("cannot read \(config)") }
        do {
            return try Yams.load(yaml: String(decoding: data, as: UTF8.self)) as? [String: Any]
        } catch {
            throw ValidationError("\(config): not valid YAML (\(error))")
        }
    }

    func stateDirectory() throws -> String {
        if let stateDir { return stateDir }
        if let config {
            if let map = try configMap(config), let value = map["state_dir"] {
                guard let text = value as? String, !text.isEmpty else { throw ValidationError("\(config): state_dir: expected a path") }
                return text
            }
        }
        return Self.defaultStateDirectory
    }
}

enum AdminOutput {
    static func json(_ value: some Encodable) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let data = (try? encoder.encode(value)) ?? Data("null".utf8)
        print(String(decoding: data, as: UTF8.self))
    }

    /// Prints `value` in a machine-readable `format`, or runs `text` for the human-readable one.
    static func emit<T: Encodable>(_ value: T, _ format: OutputFormat, text: () -> Void) {
        guard let rendered = render(value, format) else { return text() }
        print(rendered, terminator: "")
    }

    /// `value` in a machine-readable `format`, ending with a newline; nil for `text`.
    static func render<T: Encodable>(_ value: T, _ format: OutputFormat) -> String? {
        switch format {
        case .text:
            return nil
        case .json, .jsonLine:
            let encoder = JSONEncoder()
            encoder.outputFormatting = format == .json ? [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
            return String(decoding: (try? encoder.encode(value)) ?? Data("null".utf8), as: UTF8.self) + "\n"
        case .yaml:
            let encoder = YAMLEncoder()
            encoder.options.sortKeys = true
            let text = (try? encoder.encode(value)) ?? "null\n"
            return text.hasSuffix("\n") ? text : text + "\n"
        }
    }

    /// The machine-readable format the command line asks for (`-o json`, `--output=yaml`, `-ojson-line`), if any: errors
    /// are then written in it too, as headscale writes them (`{"error": "…"}` on standard error).
    static var requestedFormat: OutputFormat? {
        let arguments = Array(CommandLine.arguments.dropFirst())
        for (index, argument) in arguments.enumerated() {
            var value: String?
            if argument == "-o" || argument == "--output" {
                value = index + 1 < arguments.count ? arguments[index + 1] : nil
            } else if argument.hasPrefix("--output=") {
                value = String(argument.dropFirst("--output=".count))
            } else if argument.hasPrefix("-o"), argument.count > 2, !argument.hasPrefix("--") {
                value = String(argument.dropFirst(2))
            }
            if let value, let format = OutputFormat(argument: value), format != .text { return format }
        }
        return nil
    }

    /// Prints rows as aligned columns under a header.
    static func table(_ header: [String], _ rows: [[String]]) {
        var widths = header.map(\.count)
        for row in rows {
            for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) }
        }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, cell in
                i == cells.count - 1 ? cell : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }
        print(line(header))
        for row in rows { print(line(row)) }
    }

    static func list(_ values: [String]) -> String { values.isEmpty ? "-" : values.joined(separator: ",") }
}

/// Runs an admin call, turning failures into a message on stderr and exit status 1.
func adminCall<T>(_ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch let error as AdminClientError {
        if let format = AdminOutput.requestedFormat, let rendered = AdminOutput.render(["error": error.message], format) {
            FileHandle.standardError.write(Data(rendered.utf8))
        } else {
            Console.printError("warren-control: \(error.message)")
        }
        throw ExitCode.failure
    }
}

extension WarrenControl {
    /// ArgumentParser's own entry point, followed by the shutdown of the admin commands' one HTTP client (made only if
    /// a command used it), whether the command succeeded or failed.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
            await AdminClient.shutdownSharedHTTPClient()
        } catch {
            await AdminClient.shutdownSharedHTTPClient()
            exit(withError: error)
        }
    }
}

/// "a,b, c" -> ["a", "b", "c"] (empty parts dropped).
func commaList(_ text: String?) -> [String] {
    (text ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
}

/// An expiration given as a duration ("24h") goes as expiresIn; anything else as an RFC 3339 time; "never" (or
/// nothing) as neither: no expiry.
func expirationFields(_ text: String?) throws -> (absolute: String?, relative: String?) {
    guard let text, text != "never" else { return (nil, nil) }
    if DurationText.parse(text) != nil { return (nil, text) }
    if AdminTime.parse(text) != nil { return (text, nil) }
    throw ValidationError("--expiration \(text): expected a duration such as 24h or 7d, an RFC 3339 time, or never")
}

func percentEncoded(_ component: String) -> String {
    // RFC 3986 unreserved characters only (ASCII): everything else, "ö" included, is sent as UTF-8 %XX; the server
    // decodes each path segment.
    component.addingPercentEncoding(withAllowedCharacters: CharacterSet(charactersIn:
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")) ?? component
}

/// The admin subcommand groups, registered by `WarrenControl` in one place.
let adminSubcommands: [any ParsableCommand.Type] = [UsersCommand.self, PreAuthKeysCommand.self, NodesCommand.self, APIKeysCommand.self,
                                                    AuthCommand.self]
