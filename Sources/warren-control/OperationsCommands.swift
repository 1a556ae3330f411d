// `warren-control version` and `warren-control configtest`.

import ArgumentParser
import Crypto
import Foundation
import WarrenControlServer

enum WarrenControlVersion {
    /// One source for the version: the metrics' build_info gauge reads the same constant.
    static let version = WarrenControlBuild.version

    /// The build of the running binary: the SHA-256 of the executable (first 12 hex digits) and its modification time,
    /// so two machines can tell whether they run the same build; the configuration and the compiler.
    static func build() -> String {
        let executable = "/proc/self/exe"
        var parts: [String] = []
        if let data = FileManager.default.contents(atPath: executable) {
            parts.append("sha256 " + SHA256.hash(data: data).prefix(6).map { String(format: "%02x", $0) }.joined())
        }
        if let attributes = try? FileManager.default.attributesOfItem(atPath: (try? FileManager.default
            .destinationOfSymbolicLink(atPath: executable)) ?? executable),
           let date = attributes[.modificationDate] as? Date {
            parts.append("built " + JSONLogHandler.timestamp(date).prefix(19) + "Z")
        }
        #if DEBUG
        parts.append("debug")
        #else
        parts.append("release")
        #endif
        parts.append("swift " + compiler)
        #if arch(x86_64)
        parts.append("x86_64")
        #elseif arch(arm64)
        parts.append("arm64")
        #endif
        return parts.joined(separator: ", ")
    }

    /// The compiler, as the metrics' build_info gauge names it (one source).
    static var compiler: String { WarrenControlBuild.swiftVersion }
}

struct VersionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "version", abstract: "Print the version and the build.")

    func run() {
        print("warren-control \(WarrenControlVersion.version)")
        print("build: \(WarrenControlVersion.build())")
    }
}

/// Reads the configuration as `serve` would (either layout), prints the settings in effect and the warnings, and
/// exits 0, or prints the first problem and exits 1. Binds nothing and writes nothing.
struct ConfigTestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "configtest",
        abstract: "Check a configuration file (Warren's or headscale's layout) and print the settings in effect.")

    @Option(name: .long, help: "YAML configuration file.")
    var config: String

    @Option(name: .long, help: "As serve's --state-dir.")
    var stateDir: String?

    @Option(name: .long, help: "As serve's --listen.")
    var listen: String?

    @Option(name: .long, help: "As serve's --metrics-listen.")
    var metricsListen: String?

    @Option(name: .long, help: "As serve's --server-url.")
    var serverURL: String?

    func run() throws {
        let file: ServeConfigFile
        let settings: ServeSettings
        do {
            file = try ServeConfigFile.load(path: config)
            settings = try ServeSettings.resolve(file: file, stateDir: stateDir, listen: listen, metricsListen: metricsListen,
                                                 serverURL: serverURL)
            if let clash = settings.portClash(file: file) { throw ServeSettings.Problem(description: clash) }
            try settings.checkDatabase()
        } catch {
            Console.printError("warren-control: \(error)")
            print("configuration \(config): FAILED")
            throw ExitCode(1)
        }
        for line in Self.describe(file: file, settings: settings) { print(line) }
        let warnings = file.headscale.warnings
        print("warnings: \(warnings.count)")
        for warning in warnings { print("  warning: \(warning)") }
        print("configuration \(config): OK")
    }

    static func describe(file: ServeConfigFile, settings: ServeSettings) -> [String] {
        func hostPort(_ host: String, _ port: Int) -> String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
        let listen = hostPort(settings.listenHost, settings.listenPort)
        var configuration = ControlConfiguration(serverURL: settings.advertisedURL(tls: file.tls != nil))
        file.apply(to: &configuration)
        if let explicit = settings.serverURL { configuration.serverURL = explicit }
        func duration(_ d: Duration?) -> String {
            guard let d else { return "never" }
            let seconds = d.components.seconds
            if seconds == 0 { return "\(d.components.attoseconds / 1_000_000_000_000_000)ms" }
            if seconds % 86_400 == 0 { return "\(seconds / 86_400)d" }
            if seconds % 3_600 == 0 { return "\(seconds / 3_600)h" }
            if seconds % 60 == 0 { return "\(seconds / 60)m" }
            return "\(seconds)s"
        }
        let layout: String
        let warrenOnly = file.headscale.headscaleKeys.isEmpty
        layout = warrenOnly ? "Warren's" : "headscale's (\(file.headscale.headscaleKeys.count) headscale keys)"
        var lines = [
            "layout: \(layout)",
            "server_url: \(configuration.serverURL)\(settings.serverURL == nil ? " (derived from the listen address)" : "")",
            "listen_addr: \(listen)",
            "metrics_listen_addr: \(settings.metricsAddress.map { hostPort($0.0, $0.1) } ?? "off")",
            "state_dir: \(settings.stateDir)",
            "database: \(settings.databaseDescription)",
            "noise private key: \(settings.controlKeyPath)",
            "admin socket: \(settings.adminSocketPath) (mode 0\(String(settings.adminSocketMode, radix: 8)))",
            "base_domain: \(configuration.baseDomain)",
            "prefixes: \(configuration.ipv4Prefix) \(configuration.ipv6Prefix) (sequential)",
            "dns.magic_dns: \(configuration.dns.magicDNS)",
            "dns.nameservers: \(configuration.dns.nameservers.joined(separator: ", "))",
            "dns.split: \(configuration.dns.splitDNS.keys.sorted().map { "\($0) -> \(configuration.dns.splitDNS[$0]!.joined(separator: " "))" }.joined(separator: "; "))",
            "dns.search_domains: \(configuration.dns.searchDomains.joined(separator: ", "))",
            "dns.extra_records: \(configuration.dns.extraRecords.count)",
            "node_key_expiry: \(duration(configuration.nodeKeyExpiry))",
            "ephemeral_inactivity_timeout: \(duration(configuration.ephemeralInactivityTimeout))",
            "keep_alive_interval: \(duration(configuration.keepAliveInterval))",
            "map_update_interval: \(duration(configuration.mapUpdateInterval))",
            "require_device_approval: \(configuration.requireDeviceApproval)",
            "log: \(settings.logLevel.rawValue), \(settings.logFormat.rawValue)",
            "policy: " + (file.policyPath.map { "file \($0)" } ?? "database (policy set)"),
            "tls: " + (file.tls == nil ? "off" : "on"),
        ]
        if settings.derpEnabled {
            let h = file.headscale
            lines.append("derp: embedded relay, region \(h.derpRegionID ?? 900) \(h.derpRegionCode ?? "warren") "
                         + "\"\(h.derpRegionName ?? "Warren embedded relay")\", port \(file.derpPort.map(String.init) ?? "8443 (or mounted on the TLS listener)"), "
                         + "stun \(file.stunPort ?? 3478)"
                         + (h.derpIPv4.map { ", ipv4 \($0)" } ?? "") + (h.derpIPv6.map { ", ipv6 \($0)" } ?? ""))
            // The relay mesh: the peers and the key's file, never the key.
            if let keyPath = file.derpMeshKeyPath {
                let peers = file.derpMeshPeers.map { peer in
                    peer.description + (peer.certName.map { " (pinned \($0.prefix(19))…)" } ?? " (system roots)")
                        + (peer.stunPort.map { ", stun \($0 == 0 ? "none" : String($0))" } ?? "")
                }
                lines.append("derp mesh: " + (peers.isEmpty ? "accepts mesh peers (no mesh_with)" : "with " + peers.joined(separator: "; "))
                             + ", key from \(keyPath) (not shown)")
            } else {
                lines.append("derp mesh: off")
            }
        } else {
            lines.append("derp: off (no embedded relay)")
        }
        // Sign-in with OIDC: every setting but the client secret.
        lines += file.oidc?.summaryLines ?? ["oidc: off (admin approval only)"]
        return lines
    }
}
