// The router configurator: puts the node's addresses on the TUN interface and routes the tailnet's
// ranges (and accepted subnet routes) into it. Reconciled to a whole desired state: the difference
// with what was applied before is added and removed, nothing else is touched.
//
// On Linux this drives iproute2's `ip` (as tailscaled's Linux router long did, and still can); a
// netlink implementation can replace it behind the same protocol.

import Foundation
import WarrenPacket

/// The router's desired state.
public struct RouterSettings: Sendable, Hashable {
    public var addresses: [IPPrefix]
    public var routes: [IPPrefix]

    public init(addresses: [IPPrefix] = [], routes: [IPPrefix] = []) {
        self.addresses = addresses
        self.routes = routes
    }
}

public protocol RouterConfigurator: Sendable {
    /// Brings the interface to `settings`.
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

/// Linux: `ip address` and `ip route` on one interface.
public final class LinuxRouter: RouterConfigurator, @unchecked Sendable {
    public let interface: String
    private let lock = NSLock()
    private var applied = RouterSettings()

    public init(interface: String) { self.interface = interface }

    public func apply(_ settings: RouterSettings) throws {
        try lock.withLock {
            let oldAddresses = Set(applied.addresses), newAddresses = Set(settings.addresses)
            let oldRoutes = Set(applied.routes), newRoutes = Set(settings.routes)
            for a in oldAddresses.subtracting(newAddresses).sorted() {
                try? Self.ip(family(a), "address", "del", a.description, "dev", interface)
            }
            for a in newAddresses.subtracting(oldAddresses).sorted() {
                try Self.ip(family(a), "address", "replace", a.description, "dev", interface)
            }
            for r in oldRoutes.subtracting(newRoutes).sorted() {
                try? Self.ip(family(r), "route", "del", r.description, "dev", interface)
            }
            for r in newRoutes.subtracting(oldRoutes).sorted() {
                try Self.ip(family(r), "route", "replace", r.description, "dev", interface)
            }
            applied = settings
        }
    }

    public func reset() {
        lock.withLock {
            for r in applied.routes { try? Self.ip(family(r), "route", "del", r.description, "dev", interface) }
            for a in applied.addresses { try? Self.ip(family(a), "address", "del", a.description, "dev", interface) }
            applied = RouterSettings()
        }
    }

    private func family(_ p: IPPrefix) -> String { p.address.version == .v4 ? "-4" : "-6" }

    static func ip(_ arguments: String...) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip") ? "/usr/sbin/ip" : "/sbin/ip")
        process.arguments = arguments
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            throw RouterError(description: "ip \(arguments.joined(separator: " ")): \(text.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
    }
}
