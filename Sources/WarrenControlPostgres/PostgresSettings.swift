import Foundation
import NIOCore
import NIOSSL
import PostgresNIO

/// Where the PostgreSQL store connects, with headscale's keys (`database.postgres.*`): host (a name, an address, or
/// the directory of the server's Unix socket, starting with "/"), port, database name, user, password, TLS mode and
/// the most connections to open.
public struct PostgresSettings: Sendable, Equatable, CustomStringConvertible {
    /// libpq's `sslmode` values (headscale passes `ssl` to libpq: `false` = disable, `true` = require, or a mode).
    public enum TLSMode: String, Sendable, CaseIterable {
        case disable
        case allow
        case prefer
        case require
        case verifyCA = "verify-ca"
        case verifyFull = "verify-full"

        /// headscale's `ssl` value: a boolean, or one of libpq's modes; nil for anything else.
        public init?(headscale value: String) {
            switch value.lowercased() {
            case "false", "0", "f", "no", "off", "": self = .disable
            case "true", "1", "t", "yes", "on": self = .require
            default:
                guard let mode = TLSMode(rawValue: value.lowercased()) else { return nil }
                self = mode
            }
        }
    }

    public var host: String
    public var port: Int
    public var database: String
    public var user: String
    public var password: String?
    public var tls: TLSMode
    /// The connections the store keeps open at most (one transaction runs on each at a time).
    public var maxConnections: Int
    public var connectTimeout: Duration

    public static let defaultMaxConnections = 4

    public init(host: String = "localhost", port: Int = 5432, database: String, user: String, password: String? = nil,
                tls: TLSMode = .disable, maxConnections: Int = PostgresSettings.defaultMaxConnections,
                connectTimeout: Duration = .seconds(10)) {
        self.host = host
        self.port = port
        self.database = database
        self.user = user
        self.password = password
        self.tls = tls
        self.maxConnections = maxConnections
        self.connectTimeout = connectTimeout
    }

    /// Whether `host` names the directory of a Unix socket (as libpq reads it).
    public var usesUnixSocket: Bool { host.hasPrefix("/") }

    /// The socket file libpq would use: `<host>/.s.PGSQL.<port>`.
    public var unixSocketPath: String { (host.hasSuffix("/") ? host : host + "/") + ".s.PGSQL.\(port)" }

    /// The settings as people read them, without the password.
    public var description: String {
        let place = usesUnixSocket ? unixSocketPath : (host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)")
        return "postgres \(user)@\(place)/\(database) (tls \(usesUnixSocket ? "n/a (unix socket)" : tls.rawValue), "
            + "\(maxConnections) connection\(maxConnections == 1 ? "" : "s") at most)"
    }

    /// Checks the values a file or a caller gave; throws a message that names the setting.
    public func validate() throws {
        guard !host.isEmpty else { throw PostgresSettingsError("host is empty (a host name, an address, or a Unix socket directory)") }
        guard (1...65535).contains(port) else { throw PostgresSettingsError("port \(port) is not a port number (1 to 65535)") }
        guard !database.isEmpty else { throw PostgresSettingsError("name (the database) is empty") }
        guard !user.isEmpty else { throw PostgresSettingsError("user is empty") }
        guard (1...1000).contains(maxConnections) else {
            throw PostgresSettingsError("max_open_conns \(maxConnections): expected 1 to 1000")
        }
    }

    /// postgres-nio's configuration for one connection.
    func connectionConfiguration(purpose: String? = nil) throws -> PostgresConnection.Configuration {
        var configuration: PostgresConnection.Configuration
        if usesUnixSocket {
            configuration = .init(unixSocketPath: unixSocketPath, username: user, password: password, database: database)
        } else {
            configuration = .init(host: host, port: port, username: user, password: password, database: database, tls: try tlsConfiguration())
        }
        configuration.options.connectTimeout = .nanoseconds(Int64(connectTimeout.components.seconds) * 1_000_000_000
                                                             + connectTimeout.components.attoseconds / 1_000_000_000)
        // A writer that stops half-way (its process frozen, its network gone) must not hold the store's write lock
        // for ever: the server ends such a session's transaction, and a lock wait gives up, after these times.
        configuration.options.additionalStartupParameters = [
            ("application_name", "warren-control" + (purpose.map { " " + $0 } ?? "")),
            ("idle_in_transaction_session_timeout", "60s"),
            ("lock_timeout", "60s"),
        ]
        return configuration
    }

    private func tlsConfiguration() throws -> PostgresConnection.Configuration.TLS {
        var client = TLSConfiguration.makeClientConfiguration()
        switch tls {
        case .disable:
            return .disable
        case .allow, .prefer, .require:
            // libpq's allow, prefer and require encrypt without checking the server's certificate.
            client.certificateVerification = .none
        case .verifyCA:
            client.certificateVerification = .noHostnameVerification
        case .verifyFull:
            client.certificateVerification = .fullVerification
        }
        let context: NIOSSLContext
        do {
            context = try NIOSSLContext(configuration: client)
        } catch {
            throw PostgresSettingsError("ssl \(tls.rawValue): cannot set up TLS: \(error)")
        }
        return tls == .allow || tls == .prefer ? .prefer(context) : .require(context)
    }
}

public struct PostgresSettingsError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
