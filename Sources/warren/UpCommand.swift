import ArgumentParser
import Foundation
import WarrenLocalAPI

/// The flags shared by `up` and `login`.
struct UpOptions: ParsableArguments {
    @Option(name: .customLong("login-server"), help: "Base URL of the control server.")
    var loginServer: String?

    @Option(name: [.customLong("auth-key"), .customLong("authkey")], help: "Node authorization key, or file:PATH to read it from a file.")
    var authKey: String?

    @Option(help: "Hostname to use instead of the one the OS gives.")
    var hostname: String?

    @Flag(name: .customLong("shields-up"), inversion: .prefixedNo, help: "Block incoming connections.")
    var shieldsUp = false

    @Flag(name: .customLong("accept-routes"), inversion: .prefixedNo, help: "Accept subnet routes that other nodes advertise.")
    var acceptRoutes = false

    @Flag(name: .customLong("accept-dns"), inversion: .prefixedNo, help: "Use the tailnet's DNS configuration (MagicDNS).")
    var acceptDNS = true

    @Option(name: .customLong("advertise-routes"), help: "Routes to advertise to other nodes (comma-separated, e.g. 10.0.0.0/8,192.168.0.0/24), or \"\" for none.")
    var advertiseRoutes: [String] = []

    @Flag(name: .customLong("advertise-exit-node"), inversion: .prefixedNo, help: "Offer to be an exit node for internet traffic of the tailnet.")
    var advertiseExitNode = false

    @Option(name: .customLong("exit-node"), help: "Tailscale IP or name of the exit node for internet traffic, auto:any to let the node choose, or \"\" to stop using one.")
    var exitNode: String = ""

    @Flag(name: .customLong("exit-node-allow-lan-access"), inversion: .prefixedNo, help: "Allow direct access to the local network when routing traffic via an exit node.")
    var exitNodeAllowLANAccess = false

    @Flag(name: .customLong("snat-subnet-routes"), inversion: .prefixedNo, help: "Source NAT traffic to local routes advertised with --advertise-routes.")
    var snatSubnetRoutes = true

    @Flag(help: "Reset unspecified settings to their default values.")
    var reset = false

    @Flag(name: .customLong("force-reauth"), help: "Force re-authentication.")
    var forceReauth = false

    @Option(help: "Maximum time to wait for the node to be running (e.g. 30s, 2m); 0 waits forever.")
    var timeout: String = "0s"

    /// The request, with the flags checked and the auth key read from its file.
    func request() throws -> UpRequest {
        if let server = loginServer {
            guard let url = URL(string: server), let scheme = url.scheme?.lowercased(), ["http", "https"].contains(scheme),
                  let host = url.host, !host.isEmpty else {
                throw CLIError("invalid --login-server \(server.debugDescription): want an http:// or https:// URL")
            }
        }
        var key = authKey
        if let value = authKey, value.hasPrefix("file:") {
            let path = String(value.dropFirst("file:".count))
            guard let contents = FileManager.default.contents(atPath: path) else {
                throw CLIError("cannot read auth key file \(path)")
            }
            key = String(decoding: contents, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            guard !(key ?? "").isEmpty else { throw CLIError("auth key file \(path) is empty") }
        }
        if let hostname {
            let labelCharacters = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-"))
            guard !hostname.isEmpty, hostname.count <= 63, hostname.unicodeScalars.allSatisfy(labelCharacters.contains),
                  !hostname.hasPrefix("-"), !hostname.hasSuffix("-") else {
                throw CLIError("invalid --hostname \(hostname.debugDescription): want letters, digits and hyphens, at most 63")
            }
        }
        return UpRequest(loginServer: loginServer, authKey: key, hostname: hostname, shieldsUp: shieldsUp,
                         acceptRoutes: acceptRoutes, reset: reset, forceReauth: forceReauth, wait: true,
                         advertiseRoutes: advertiseRoutes, advertiseExitNode: advertiseExitNode, exitNode: exitNode,
                         exitNodeAllowLANAccess: exitNodeAllowLANAccess, snatSubnetRoutes: snatSubnetRoutes, acceptDNS: acceptDNS)
    }

    func timeoutSeconds() throws -> Double {
        guard let seconds = parseDuration(timeout) else { throw CLIError("invalid --timeout \(timeout.debugDescription)") }
        return seconds
    }

    /// Sends the request, then waits (polling status) until Running, printing the login URL once.
    func run(globals: GlobalOptions, forceReauth: Bool = false) async throws {
        var request = try request()
        if forceReauth { request.forceReauth = true }
        let limit = try timeoutSeconds()
        let deadline = limit > 0 ? Date().addingTimeInterval(limit) : nil
        let client = globals.client
        let answer = try await client.up(request, timeout: limit > 0 ? limit : 600)
        var shownURL: String?
        var shownApproval = false
        var state = answer.backendState
        var authURL = answer.authURL ?? ""
        var interactive = false
        while true {
            switch state {
            case .running:
                if interactive { printError("Success.") }
                return
            case .needsLogin where !authURL.isEmpty && authURL != shownURL:
                printError("\nTo authenticate, visit:\n\n\t\(authURL)\n")
                shownURL = authURL
                interactive = true
            case .needsMachineAuth where !shownApproval:
                printError("\nThis machine needs approval by a tailnet admin before it can join.\n")
                shownApproval = true
                interactive = true
            default:
                break
            }
            if let deadline, Date() >= deadline {
                throw CLIError("timeout waiting for warrend to be running (state \(state.rawValue))")
            }
            try await Task.sleep(nanoseconds: 500_000_000)
            let status = try await client.status(peers: false)
            state = status.backendState
            authURL = status.authURL
        }
    }
}

struct UpCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "up", abstract: "Connect to the tailnet, logging in if needed.")

    @OptionGroup var globals: GlobalOptions
    @OptionGroup var options: UpOptions

    func run() async throws {
        try await reporting { try await options.run(globals: globals) }
    }
}

struct LoginCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "login", abstract: "Log in to a tailnet (same flags as up).")

    @OptionGroup var globals: GlobalOptions
    @OptionGroup var options: UpOptions

    func run() async throws {
        try await reporting { try await options.run(globals: globals) }
    }
}

struct DownCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "down", abstract: "Disconnect from the tailnet (stays logged in).")

    @OptionGroup var globals: GlobalOptions

    func run() async throws {
        try await reporting { try await globals.client.down() }
    }
}

struct LogoutCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "logout", abstract: "Disconnect and expire the current login.")

    @OptionGroup var globals: GlobalOptions

    func run() async throws {
        try await reporting { try await globals.client.logout() }
    }
}

struct VersionCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "version", abstract: "Print the version.")

    @OptionGroup var globals: GlobalOptions

    @Flag(help: "Also print the daemon's version.")
    var daemon = false

    func run() async throws {
        printOut(Warren.version + "\n")
        if daemon {
            try await reporting {
                let status = try await globals.client.status(peers: false)
                printOut("Daemon: \(status.version)\n")
            }
        }
    }
}
