// The settings `serve` runs with once the flags, the YAML file (either layout) and the defaults are combined:
// shared by `serve` and `configtest`, so that what configtest prints is what serve does.

import Foundation
import Logging
import WarrenControlServer
import WarrenControlPostgres
import WarrenControlSQLite
import WarrenControlStore
import WarrenPacket

struct ServeSettings {
    var stateDir: String
    var listenHost: String
    var listenPort: Int
    var metricsAddress: (String, Int)?
    /// The SQLite file (unused when `postgres` is set).
    var databasePath: String
    /// `database.type: postgres`: the store is on this PostgreSQL database instead of SQLite.
    var postgres: PostgresSettings?
    var controlKeyPath: String
    var adminSocketPath: String
    var adminSocketMode: mode_t
    var logLevel: Logger.Level
    var logFormat: LogFormat
    var derpEnabled: Bool
    /// server_url as given (`--server-url`, else the file's); nil: derived from a specific listen address.
    var serverURL: String?

    struct Problem: Error, CustomStringConvertible { var description: String }

    static func resolve(file: ServeConfigFile, stateDir: String?, listen: String?, metricsListen: String?,
                        serverURL: String? = nil) throws -> ServeSettings {
        let state = stateDir ?? file.stateDir ?? "/var/lib/warren"
        let listenText = listen ?? file.listenAddr ?? "127.0.0.1:8080"
        guard let (host, port) = ServeConfigFile.splitHostPort(listenText) else {
            throw Problem(description: "--listen \(listenText): expected host:port")
        }
        if let serverURL, !(serverURL.hasPrefix("http://") || serverURL.hasPrefix("https://")) || URL(string: serverURL)?.host == nil {
            throw Problem(description: "--server-url \(serverURL): expected an http:// or https:// URL")
        }
        let explicitURL = serverURL ?? file.serverURL
        // A wildcard listener has no address of its own to give clients; 127.0.0.1 would send every remote client to
        // itself. headscale requires server_url; so does Warren here (with a suggestion), instead of guessing.
        if explicitURL == nil, Self.isWildcard(host) {
            let suggestion = HostAddresses.firstNonLoopback().map {
                " (for example server_url: \(file.tls == nil ? "http" : "https")://\($0.contains(":") ? "[\($0)]" : $0):\(port == 0 ? 8080 : port))"
            } ?? ""
            throw Problem(description: "listen_addr \(listenText) listens on all interfaces, so it has no address to tell clients, "
                + "and a loopback one would send them to themselves: set server_url (or --server-url) to the URL clients reach "
                + "this server at\(suggestion); headscale requires server_url as well")
        }
        let metricsText = metricsListen ?? file.metricsListenAddr ?? "127.0.0.1:9090"
        let metricsAddress = ServeConfigFile.isOff(metricsText) ? nil : ServeConfigFile.splitHostPort(metricsText)
        if !ServeConfigFile.isOff(metricsText), metricsAddress == nil {
            throw Problem(description: "--metrics-listen \(metricsText): expected host:port or off")
        }
        return ServeSettings(
            stateDir: state, listenHost: host, listenPort: port, metricsAddress: metricsAddress,
            databasePath: file.headscale.databasePath ?? ServeCommand.databasePath(stateDir: state), postgres: file.headscale.postgres,
            controlKeyPath: file.headscale.controlKeyPath ?? state + "/control.key",
            adminSocketPath: file.headscale.adminSocketPath ?? state + "/admin.sock",
            adminSocketMode: file.headscale.adminSocketMode ?? 0o600,
            logLevel: file.logLevel ?? .info, logFormat: file.headscale.logFormat ?? .text,
            derpEnabled: file.derpEnabled ?? true, serverURL: explicitURL)
    }

    /// Listening on every interface of a family.
    static func isWildcard(_ host: String) -> Bool { ["0.0.0.0", "::", "*"].contains(host) }

    /// The URL clients are given: server_url when set, else the listen address's (a specific address: the check in
    /// `resolve` refuses a wildcard one without server_url). `port` is the port actually bound.
    func advertisedURL(tls: Bool, port: Int? = nil) -> String {
        if let serverURL { return serverURL }
        let host = listenHost.contains(":") ? "[\(listenHost)]" : listenHost
        return "\(tls ? "https" : "http")://\(host):\(port ?? listenPort)"
    }

    /// The store as `configtest` shows it (no password).
    var databaseDescription: String { postgres.map(\.description) ?? "sqlite \(databasePath)" }

    /// Opens the store: SQLite at `databasePath`, or the PostgreSQL database (connected and migrated).
    func openStore(logger: Logger) async throws -> any ControlStore {
        if let postgres { return try await PostgresControlStore(settings: postgres, logger: logger) }
        return try SQLiteControlStore(path: databasePath)
    }

    /// A database path that holds another program's tables (headscale's, most likely) is refused before Warren's
    /// schema is written into it. (On PostgreSQL the store itself refuses such a database when it connects.)
    func checkDatabase() throws {
        guard postgres == nil else { return }
        let tables: [String]?
        do {
            tables = try SQLiteControlStore.foreignTables(path: databasePath)
        } catch {
            throw Problem(description: "database \(databasePath): \(error)")
        }
        if let tables {
            let headscale = Set(["users", "nodes", "pre_auth_keys"]).isSubset(of: tables)
            throw Problem(description: "database \(databasePath) holds "
                + (headscale ? "headscale's tables" : "another program's tables (\(tables.prefix(6).joined(separator: ", ")))")
                + "; Warren keeps its state in a database of its own: give database.sqlite.path a new file (or leave it out "
                + "for <state_dir>/warren.sqlite)")
        }
    }

    /// The port clash check of `serve`, on these settings.
    func portClash(file: ServeConfigFile) -> String? {
        ServeCommand.portClash(
            control: (listenHost, listenPort), metrics: metricsAddress,
            derp: derpEnabled && !(file.tls != nil && listenPort != 0 && file.derpPort == nil)
                ? (file.derpHost.flatMap { IPAddress($0) == nil ? nil : $0 } ?? listenHost, file.derpPort ?? 8443) : nil)
    }
}
