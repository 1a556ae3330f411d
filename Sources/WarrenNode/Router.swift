// The router configurator: puts the node's addresses on the TUN interface, routes the tailnet's ranges,
// accepted subnet routes and an exit node's default routes into it, and, on a subnet router or exit node,
// forwards and masquerades what comes out of the tunnel. Reconciled to a whole desired state
// (WarrenNetMap.RouterConfig): the difference with what was applied before is added and removed.
//
// On Linux the layout is Tailscale's (wgengine/router/router_linux.go), so that a user who knows one knows
// the other:
// - routes into the tunnel live in routing table 52, consulted by rule 5270 before the main table;
//   "throw" routes in table 52 send the local LANs back to the main table (exit node with LAN access);
// - the node's own sockets (WireGuard UDP, relay and control connections, DNS forwards) carry fwmark
//   0x80000, and rules 5210-5250 send marked traffic to the main table, so that a default route into the
//   tunnel never swallows the tunnel's own packets;
// - Warren's firewall rules are one nftables table of its own, `inet warren`, beside whatever the host has:
//   packets arriving from the tunnel are marked 0x40000 in the forward hook, accepted, and (unless SNAT is
//   off) masqueraded on their way out; tailnet source addresses arriving on any other interface are
//   dropped at input (anti-spoofing).
// It drives iproute2's `ip`, `nft` and sysctl files; a netlink implementation can replace it behind the
// same protocol.

import Foundation
import WarrenNetMap
import WarrenPacket

/// The router's desired state (the network map's derivation).
public typealias RouterSettings = RouterConfig

public protocol RouterConfigurator: Sendable {
    /// Brings the system to `settings`.
    func apply(_ settings: RouterSettings) throws
    /// Removes everything this router added.
    func reset()
}

/// For nodes whose TUN is an in-memory twin: remembers the settings, changes nothing.
public final class MemoryRouter: RouterConfigurator, @unchecked Sendable {
    private let lock = NSLock()
    private var current = RouterSettings()
    public init() {}
    public var settings: RouterSettings { lock.withLock { current } }
    public func apply(_ settings: RouterSettings) throws { lock.withLock { current = settings } }
    public func reset() { lock.withLock { current = RouterSettings() } }
}

public struct RouterError: Error, CustomStringConvertible {
    public let description: String
}

/// Linux: addresses and routes with `ip`, policy rules, an nftables table, IP forwarding.
public final class LinuxRouter: RouterConfigurator, @unchecked Sendable {
    /// The fwmark of the node's own sockets: rules send it to the main table.
    public static let bypassMark: UInt32 = 0x80000
    /// The fwmark of packets forwarded from the tunnel (masqueraded unless SNAT is off).
    public static let subnetRouteMark: UInt32 = 0x40000
    public static let markMask: UInt32 = 0xff0000
    /// The routing table of the tunnel's routes.
    public static let table = 52
    /// The preferences of Warren's policy rules, in order.
    static let rulePreferences = [5210, 5230, 5250, 5270]
    public static let nftTable = "warren"

    public let interface: String
    private let lock = NSLock()
    private var applied = RouterSettings()
    private var rulesInstalled = false
    private var firewall: String?
    private let ipv6: Bool
    /// Called with problems that do not stop the router (no nft, no IPv6 rules), once each.
    private let warn: @Sendable (String) -> Void
    private var warned = Set<String>()

    public init(interface: String, warn: @escaping @Sendable (String) -> Void = { _ in }) {
        self.interface = interface
        self.warn = warn
        ipv6 = FileManager.default.fileExists(atPath: "/proc/sys/net/ipv6/conf/all/forwarding")
        // What a previous run killed with -9 left behind: the TUN and its routes went with the process,
        // but not the rules, the throw routes in table 52 or the firewall table.
        removeSystemState()
    }

    public func apply(_ settings: RouterSettings) throws {
        try lock.withLock {
            if !rulesInstalled {
                try installRules()
                rulesInstalled = true
            }
            let oldAddresses = Set(applied.localAddresses), newAddresses = Set(settings.localAddresses)
            for a in oldAddresses.subtracting(newAddresses).sorted() {
                try? Self.ip(family(a), "address", "del", a.description, "dev", interface)
            }
            for a in newAddresses.subtracting(oldAddresses).sorted() where a.address.version == .v4 || ipv6 {
                try Self.ip(family(a), "address", "replace", a.description, "dev", interface)
            }
            let oldServices = Set(applied.serviceAddresses), newServices = Set(settings.serviceAddresses)
            for a in oldServices.subtracting(newServices).sorted() {
                try? Self.ip(family(a), "address", "del", a.description, "dev", "lo")
            }
            for a in newServices.subtracting(oldServices).sorted() where a.address.version == .v4 || ipv6 {
                try Self.ip(family(a), "address", "replace", a.description, "dev", "lo")
            }
            let table = String(Self.table)
            let oldRoutes = Set(applied.routes), newRoutes = Set(settings.routes)
            for r in oldRoutes.subtracting(newRoutes).sorted() {
                try? Self.ip(family(r), "route", "del", r.description, "dev", interface, "table", table)
            }
            for r in newRoutes.subtracting(oldRoutes).sorted() where r.address.version == .v4 || ipv6 {
                try Self.ip(family(r), "route", "replace", r.description, "dev", interface, "table", table)
            }
            let oldThrows = Set(applied.localRoutes), newThrows = Set(settings.localRoutes)
            for r in oldThrows.subtracting(newThrows).sorted() {
                try? Self.ip(family(r), "route", "del", "throw", r.description, "table", table)
            }
            for r in newThrows.subtracting(oldThrows).sorted() where r.address.version == .v4 || ipv6 {
                try Self.ip(family(r), "route", "replace", "throw", r.description, "table", table)
            }
            if settings.forwards { enableForwarding() }
            let rules = firewallRules(settings)
            if rules != firewall {
                do {
                    try Self.run("nft", ["-f", "-"], input: rules)
                    firewall = rules
                } catch {
                    warnOnce("nftables: \(error); subnet routes and exit node traffic are not masqueraded")
                }
            }
            applied = settings
        }
    }

    public func reset() {
        lock.withLock {
            for r in applied.routes {
                try? Self.ip(family(r), "route", "del", r.description, "dev", interface, "table", String(Self.table))
            }
            for a in applied.localAddresses { try? Self.ip(family(a), "address", "del", a.description, "dev", interface) }
            for a in applied.serviceAddresses { try? Self.ip(family(a), "address", "del", a.description, "dev", "lo") }
            removeSystemState()
            applied = RouterSettings()
            rulesInstalled = false
            firewall = nil
        }
    }

    // MARK: Rules, firewall, forwarding

    private func installRules() throws {
        let mark = "0x\(String(Self.bypassMark, radix: 16))/0x\(String(Self.markMask, radix: 16))"
        for family in ipv6 ? ["-4", "-6"] : ["-4"] {
            try Self.ip(family, "rule", "add", "pref", "5210", "fwmark", mark, "table", "main")
            try Self.ip(family, "rule", "add", "pref", "5230", "fwmark", mark, "table", "default")
            try Self.ip(family, "rule", "add", "pref", "5250", "fwmark", mark, "type", "unreachable")
            try Self.ip(family, "rule", "add", "pref", "5270", "table", String(Self.table))
        }
    }

    /// The service addresses a node puts on the loopback interface (MagicDNS).
    public static let serviceAddresses = [IPPrefix(host: OSDNSConfig.quad100V4), IPPrefix(host: OSDNSConfig.quad100V6)]

    /// Removes Warren's rules, table 52, the firewall table and the service addresses on the loopback
    /// interface (whatever a previous run left).
    private func removeSystemState() {
        for a in Self.serviceAddresses where a.address.version == .v4 || ipv6 {
            try? Self.ip(family(a), "address", "del", a.description, "dev", "lo")
        }
        for family in ipv6 ? ["-4", "-6"] : ["-4"] {
            for preference in Self.rulePreferences {
                // A rule may have been added more than once by runs that died: delete until none is left.
                for _ in 0..<16 {
                    guard (try? Self.ip(family, "rule", "del", "pref", String(preference))) != nil else { break }
                }
            }
            try? Self.ip(family, "route", "flush", "table", String(Self.table))
        }
        try? Self.run("nft", ["delete", "table", "inet", Self.nftTable])
    }

    /// The whole `inet warren` table for `settings`, replacing the previous one atomically.
    func firewallRules(_ settings: RouterSettings) -> String {
        let tun = "\"\(interface)\""
        let subnetMark = "0x\(String(Self.subnetRouteMark, radix: 16))"
        let mask = "0x\(String(Self.markMask, radix: 16))"
        let clear = "0x\(String(~Self.markMask, radix: 16))"
        let masquerade = settings.forwards && settings.snatSubnetRoutes
            ? "meta mark & \(mask) == \(subnetMark) oifname != \(tun) masquerade" : ""
        return """
            table inet \(Self.nftTable)
            delete table inet \(Self.nftTable)
            table inet \(Self.nftTable) {
                chain input {
                    type filter hook input priority filter; policy accept;
                    iifname "lo" accept
                    iifname != \(tun) ip saddr 100.115.92.0/23 accept
                    iifname != \(tun) ip saddr 100.64.0.0/10 drop
                    iifname != \(tun) ip6 saddr fd7a:115c:a1e0::/48 drop
                }
                chain forward {
                    type filter hook forward priority filter; policy accept;
                    iifname \(tun) meta mark set meta mark & \(clear) | \(subnetMark)
                    meta mark & \(mask) == \(subnetMark) accept
                    oifname \(tun) ip saddr 100.64.0.0/10 drop
                    oifname \(tun) accept
                }
                chain postrouting {
                    type nat hook postrouting priority srcnat; policy accept;
                    \(masquerade)
                }
            }

            """
    }

    /// IP forwarding on (as a router needs; left on at exit, as Tailscale's documentation has the
    /// administrator do it once).
    private func enableForwarding() {
        let files = ["/proc/sys/net/ipv4/ip_forward"] + (ipv6 ? ["/proc/sys/net/ipv6/conf/all/forwarding"] : [])
        for file in files {
            let current = (try? String(contentsOfFile: file, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
            guard current != "1" else { continue }
            do {
                try "1\n".write(toFile: file, atomically: false, encoding: .utf8)
            } catch {
                warnOnce("cannot turn IP forwarding on (\(file)): \(error)")
            }
        }
    }

    private func warnOnce(_ text: String) {
        if warned.insert(text).inserted { warn(text) }
    }

    private func family(_ p: IPPrefix) -> String { p.address.version == .v4 ? "-4" : "-6" }

    static func ip(_ arguments: String...) throws {
        try run("ip", arguments)
    }

    /// Runs a system tool (from /usr/sbin or /sbin), failing with its standard error.
    static func run(_ tool: String, _ arguments: [String], input: String? = nil) throws {
        let process = Process()
        let path = ["/usr/sbin/", "/sbin/", "/usr/bin/"].map { $0 + tool }.first { FileManager.default.isExecutableFile(atPath: $0) }
        guard let path else { throw RouterError(description: "\(tool) is not installed") }
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let errors = Pipe()
        let stdin = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        process.standardInput = input == nil ? FileHandle.nullDevice : stdin
        try process.run()
        if let input {
            stdin.fileHandleForWriting.write(Data(input.utf8))
            try? stdin.fileHandleForWriting.close()
        }
        let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw RouterError(description: "\(tool) \(arguments.joined(separator: " ")): \(text.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
    }
}
