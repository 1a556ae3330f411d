import ArgumentParser
import Foundation
import WarrenLocalAPI

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Show the state of this node and its peers.")

    @OptionGroup var globals: GlobalOptions

    @Flag(help: "Print the whole status as JSON.")
    var json = false

    @Flag(name: .customLong("self"), inversion: .prefixedNo, help: "Show this node.")
    var showSelf = true

    @Flag(name: .customLong("peers"), inversion: .prefixedNo, help: "Show peers.")
    var showPeers = true

    @Flag(name: .customLong("active"), help: "Only show peers with recent traffic.")
    var activeOnly = false

    func run() async throws {
        try await reporting {
            let status = try await globals.client.status(peers: showPeers)
            if json {
                try printJSON(status)
                return
            }
            if let message = StatusFormatter.notRunningMessage(status) {
                printOut(message + "\n")
                throw ExitCode.failure
            }
            printOut(StatusFormatter.statusTable(
                status, options: .init(showSelf: showSelf, showPeers: showPeers, activeOnly: activeOnly)))
        }
    }
}

struct IPCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ip", abstract: "Show this node's (or a peer's) Tailscale IP addresses.")

    @OptionGroup var globals: GlobalOptions

    @Flag(name: .customShort("4"), help: "Only the IPv4 address.")
    var v4 = false

    @Flag(name: .customShort("6"), help: "Only the IPv6 address.")
    var v6 = false

    @Flag(name: .customShort("1"), help: "Only one address, preferring IPv4.")
    var one = false

    @Argument(help: "A peer's name or IP (default: this node).")
    var peer: String?

    func run() async throws {
        try await reporting {
            guard [v4, v6, one].filter({ $0 }).count <= 1 else { throw CLIError("use at most one of -4, -6 and -1") }
            let status = try await globals.client.status()
            let addresses: [String]
            if let peer {
                guard let node = StatusFormatter.findNode(peer, in: status) else {
                    throw CLIError("no such peer: \(peer.debugDescription)")
                }
                addresses = node.tailscaleIPs
            } else {
                addresses = status.tailscaleIPs.isEmpty ? (status.selfStatus?.tailscaleIPs ?? []) : status.tailscaleIPs
            }
            let family: StatusFormatter.IPFamily = v4 ? .v4 : v6 ? .v6 : one ? .first : .all
            let text = StatusFormatter.ipLines(addresses, family: family)
            guard !text.isEmpty else {
                throw CLIError(peer == nil ? "no Tailscale IP yet (is warrend logged in?)" : "no matching address for \(peer!)")
            }
            printOut(text)
        }
    }
}

struct PingCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ping", abstract: "Ping a peer over the tailnet and show the path taken.")

    @OptionGroup var globals: GlobalOptions

    @Option(name: .customShort("c"), help: "Maximum number of pings (0: no limit).")
    var count = 10

    @Flag(help: "Ping with TSMP, inside WireGuard (checks the WireGuard path, not the disco path).")
    var tsmp = false

    @Flag(help: "Ping with ICMP echo inside WireGuard.")
    var icmp = false

    @Flag(help: "Ping the peer's PeerAPI (an HTTP request through the tunnel).")
    var peerapi = false

    @Flag(name: .customLong("until-direct"), inversion: .prefixedNo, help: "Stop once a direct path is found (disco pings).")
    var untilDirect = true

    @Option(help: "Time to wait for each pong (e.g. 5s).")
    var timeout: String = "5s"

    @Option(help: .hidden)
    var interval: String = "1s"

    @Argument(help: "The peer: its name or Tailscale IP.")
    var peer: String

    func run() async throws {
        try await reporting {
            guard [tsmp, icmp, peerapi].filter({ $0 }).count <= 1 else { throw CLIError("use only one of --tsmp, --icmp and --peerapi") }
            guard count >= 0 else { throw CLIError("-c must be 0 or more") }
            guard let pongTimeout = parseDuration(timeout), pongTimeout > 0 else { throw CLIError("invalid --timeout \(timeout.debugDescription)") }
            guard let pause = parseDuration(interval) else { throw CLIError("invalid --interval \(interval.debugDescription)") }
            let type: PingType = tsmp ? .tsmp : icmp ? .icmp : peerapi ? .peerAPI : .disco
            let client = globals.client
            let status = try await client.status()
            let ip: String
            if let node = StatusFormatter.findNode(peer, in: status) {
                ip = StatusFormatter.ipLines(node.tailscaleIPs, family: .first).trimmingCharacters(in: .whitespacesAndNewlines)
                guard !ip.isEmpty else { throw CLIError("peer \(peer) has no Tailscale IP") }
            } else if StatusFormatter.isIPAddress(peer) {
                ip = peer
            } else {
                throw CLIError("unknown peer: \(peer.debugDescription)")
            }
            var pongs = 0
            var direct = false
            var sent = 0
            while count == 0 || sent < count {
                sent += 1
                let result = try await client.ping(ip: ip, type: type, timeout: pongTimeout + 10)
                if result.isLocalIP {
                    printOut(StatusFormatter.pingLine(result, type: type) + "\n")
                    return
                }
                if !result.err.isEmpty {
                    printOut(result.err.contains("timeout") || result.err.contains("timed out")
                        ? "ping \(ip.debugDescription) timed out\n" : "ping \(ip): \(result.err)\n")
                } else {
                    pongs += 1
                    printOut(StatusFormatter.pingLine(result, type: type) + "\n")
                    if !result.endpoint.isEmpty { direct = true }
                    if untilDirect && type == .disco && direct { return }
                }
                if count == 0 || sent < count, pause > 0 {
                    try await Task.sleep(nanoseconds: UInt64(pause * 1e9))
                }
            }
            if pongs == 0 { throw CLIError("no reply from \(peer)") }
            if untilDirect && type == .disco && !direct { throw CLIError("direct connection not established") }
        }
    }
}

struct NetcheckCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "netcheck", abstract: "Report the local network's conditions (UDP, NAT, DERP latency).")

    @OptionGroup var globals: GlobalOptions

    @Option(help: "Output format: text or json.")
    var format = "text"

    func run() async throws {
        try await reporting {
            guard ["text", "json", "json-line"].contains(format) else { throw CLIError("unknown --format \(format.debugDescription): want text or json") }
            let report = try await globals.client.netcheck()
            if format == "text" { printOut(StatusFormatter.netcheckReport(report)) } else { try printJSON(report) }
        }
    }
}

struct WhoisCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "whois", abstract: "Show the machine and user behind a Tailscale IP.")

    @OptionGroup var globals: GlobalOptions

    @Flag(help: "Print the answer as JSON.")
    var json = false

    @Argument(help: "IP or IP:PORT.")
    var address: String

    func run() async throws {
        try await reporting {
            guard LocalAPIRouter.isAddressWithOptionalPort(address) else {
                throw CLIError("invalid address \(address.debugDescription): want IP or IP:PORT")
            }
            let answer = try await globals.client.whois(address)
            if json { try printJSON(answer) } else { printOut(StatusFormatter.whois(answer)) }
        }
    }
}
