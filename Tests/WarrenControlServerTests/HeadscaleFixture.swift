// A headscale SQLite database written the way headscale lays it out, for the importer's tests. The tables and
// columns are written here by hand from headscale's published schema (hscontrol/db/schema.sql of v0.27.1 and
// v0.29.2, and the gorm models of hscontrol/types): names, types and how values are stored (keys as mkey:/nodekey:/
// discokey: text, lists as JSON text, times as the Go SQLite driver's text). Only facts of the layout, no file of theirs.

import Foundation
import GRDB
import TailscaleKeys
import WarrenPacket

struct HeadscaleFixture {
    enum Layout {
        /// v0.27.x: nodes.forced_tags, pre-auth keys only as plaintext `key`, no database_versions.
        case v027
        /// v0.29.x: nodes.tags, pre-auth keys with prefix + bcrypt hash beside legacy `key`, database_versions.
        case v029
    }

    static let migrations027 = [
        "202312101416", "202312101430", "202402151347", "2024041121742", "202406021630", "202409271400", "202407191627",
        "202408181235", "202501221827", "202501311657", "202502070949", "202502131714", "202502171819", "202505091439",
        "202505141324", "202507021200", "202510311551", "202511101554-drop-old-idx",
    ]
    static let migrations029 = [
        "202501221827", "202501311657", "202502070949", "202502131714", "202502171819", "202505091439", "202505141324",
        "202507021200", "202510311551", "202511101554-drop-old-idx", "202511011637-preauthkey-bcrypt",
        "202511122344-remove-newline-index", "202511131445-node-forced-tags-to-tags", "202601121700-migrate-hostinfo-request-tags",
        "202602201200-clear-tagged-node-user-id", "202605221435-clear-zero-time-node-expiry",
        "202606181200-recover-null-tags-node-user-id",
    ]

    let path: String
    let layout: Layout
    let queue: DatabaseQueue

    /// Creates the file with headscale's tables (and its migration ids) for `layout`.
    init(path: String, layout: Layout, migrations: [String]? = nil) throws {
        self.path = path
        self.layout = layout
        // Foreign keys off, so that a test can write the damaged rows a real file may hold (headscale turns them on).
        var configuration = Configuration()
        configuration.foreignKeysEnabled = false
        queue = try DatabaseQueue(path: path, configuration: configuration)
        let tagColumn = layout == .v027 ? "forced_tags" : "tags"
        let keyColumns = layout == .v027 ? "key text," : "key text, prefix text, hash blob,"
        try queue.write { db in
            try db.execute(sql: """
                CREATE TABLE migrations(id text, PRIMARY KEY(id));
                CREATE TABLE users(id integer PRIMARY KEY AUTOINCREMENT, name text, display_name text, email text,
                  provider_identifier text, provider text, profile_pic_url text, created_at datetime, updated_at datetime,
                  deleted_at datetime);
                CREATE INDEX idx_users_deleted_at ON users(deleted_at);
                CREATE UNIQUE INDEX idx_provider_identifier ON users(provider_identifier) WHERE provider_identifier IS NOT NULL;
                CREATE UNIQUE INDEX idx_name_provider_identifier ON users(name, provider_identifier);
                CREATE UNIQUE INDEX idx_name_no_provider_identifier ON users(name) WHERE provider_identifier IS NULL;
                CREATE TABLE pre_auth_keys(id integer PRIMARY KEY AUTOINCREMENT, \(keyColumns) user_id integer, reusable numeric,
                  ephemeral numeric DEFAULT false, used numeric DEFAULT false, tags text, expiration datetime, created_at datetime,
                  CONSTRAINT fk_pre_auth_keys_user FOREIGN KEY(user_id) REFERENCES users(id) ON DELETE SET NULL);
                CREATE TABLE api_keys(id integer PRIMARY KEY AUTOINCREMENT, prefix text, hash blob, expiration datetime,
                  last_seen datetime, created_at datetime);
                CREATE UNIQUE INDEX idx_api_keys_prefix ON api_keys(prefix);
                CREATE TABLE nodes(id integer PRIMARY KEY AUTOINCREMENT, machine_key text, node_key text, disco_key text,
                  endpoints text, host_info text, ipv4 text, ipv6 text, hostname text, given_name varchar(63), user_id integer,
                  register_method text, \(tagColumn) text, auth_key_id integer, last_seen datetime, expiry datetime,
                  approved_routes text, created_at datetime, updated_at datetime, deleted_at datetime,
                  CONSTRAINT fk_nodes_user FOREIGN KEY(user_id) REFERENCES users(id) ON DELETE CASCADE,
                  CONSTRAINT fk_nodes_auth_key FOREIGN KEY(auth_key_id) REFERENCES pre_auth_keys(id));
                CREATE TABLE policies(id integer PRIMARY KEY AUTOINCREMENT, data text, created_at datetime, updated_at datetime,
                  deleted_at datetime);
                CREATE INDEX idx_policies_deleted_at ON policies(deleted_at);
                """)
            if layout == .v029 {
                try db.execute(sql: """
                    CREATE UNIQUE INDEX idx_pre_auth_keys_prefix ON pre_auth_keys(prefix) WHERE prefix IS NOT NULL AND prefix != '';
                    CREATE TABLE database_versions(id integer PRIMARY KEY, version text NOT NULL, updated_at datetime);
                    INSERT INTO database_versions (id, version, updated_at) VALUES (1, 'v0.29.2', '2026-11-30 10:00:00+00:00');
                    """)
            }
            for id in migrations ?? (layout == .v027 ? Self.migrations027 : Self.migrations029) {
                try db.execute(sql: "INSERT INTO migrations (id) VALUES (?)", arguments: [id])
            }
        }
    }

    func close() throws { try queue.close() }

    /// A time as the Go SQLite driver writes it: "2006-01-02 15:04:05.999999999-07:00" (trailing zeros dropped).
    static func goTime(_ date: Date, offsetMinutes: Int = 0) -> String {
        let shifted = date.addingTimeInterval(Double(offsetMinutes * 60))
        var seconds = shifted.timeIntervalSince1970
        let whole = floor(seconds)
        var nanos = Int(((seconds - whole) * 1e9).rounded())
        if nanos >= 1_000_000_000 { nanos -= 1_000_000_000; seconds = whole + 1 } else { seconds = whole }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyy-MM-dd HH:mm:ss"
        var text = formatter.string(from: Date(timeIntervalSince1970: seconds))
        if nanos > 0 {
            var fraction = String(format: "%09d", nanos)
            while fraction.hasSuffix("0") { fraction.removeLast() }
            text += "." + fraction
        }
        let sign = offsetMinutes < 0 ? "-" : "+"
        text += String(format: "%@%02d:%02d", sign, abs(offsetMinutes) / 60, abs(offsetMinutes) % 60)
        return text
    }

    /// JSON text of a list, as gorm's json serializer writes it (nil: "null").
    static func json(_ list: [String]?) -> String {
        guard let list else { return "null" }
        return String(decoding: try! JSONEncoder().encode(list), as: UTF8.self)
    }

    @discardableResult
    func user(id: Int64? = nil, name: String, displayName: String = "", email: String = "", providerIdentifier: String? = nil,
              provider: String = "", picture: String = "", created: Date? = nil, deleted: Date? = nil) throws -> Int64 {
        try queue.write { db in
            try db.execute(sql: """
                INSERT INTO users (id, name, display_name, email, provider_identifier, provider, profile_pic_url, created_at, updated_at,
                deleted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [id, name, displayName, email, providerIdentifier, provider, picture, created.map { Self.goTime($0) },
                                 created.map { Self.goTime($0) }, deleted.map { Self.goTime($0) }])
            return db.lastInsertedRowID
        }
    }

    struct NodeRow {
        var id: Int64?
        var machineKey: String
        var nodeKey: String
        var discoKey: String = "discokey:" + String(repeating: "0", count: 64)
        var endpoints: String? = "[]"
        var hostInfo: String? = "{}"
        var ipv4: String?
        var ipv6: String?
        var hostname: String
        var givenName: String
        var userID: Int64?
        var registerMethod: String = "authkey"
        var tags: String? = "null"
        var authKeyID: Int64?
        var lastSeen: String?
        var expiry: String?
        var approvedRoutes: String? = "[]"
        var created: String? = "2026-01-02 03:04:05+00:00"
        var deleted: String?
    }

    @discardableResult
    func node(_ n: NodeRow) throws -> Int64 {
        let tagColumn = layout == .v027 ? "forced_tags" : "tags"
        return try queue.write { db in
            try db.execute(sql: """
                INSERT INTO nodes (id, machine_key, node_key, disco_key, endpoints, host_info, ipv4, ipv6, hostname, given_name, user_id,
                register_method, \(tagColumn), auth_key_id, last_seen, expiry, approved_routes, created_at, updated_at, deleted_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [n.id, n.machineKey, n.nodeKey, n.discoKey, n.endpoints, n.hostInfo, n.ipv4, n.ipv6, n.hostname,
                                 n.givenName, n.userID, n.registerMethod, n.tags, n.authKeyID, n.lastSeen, n.expiry, n.approvedRoutes,
                                 n.created, n.created, n.deleted])
            return db.lastInsertedRowID
        }
    }

    /// A well-formed bcrypt text that no secret the tests use matches.
    static let unmatchedBcrypt = "$2a$10$abcdefghijklmnopqrstuuMBkOc5cTnW9NKKZSZJNn8qBJaMjh9cm"

    /// A legacy key (plaintext) or, with `prefix`, a 0.28+ key (prefix + a bcrypt hash's text: `hash`, by default one
    /// that matches nothing).
    @discardableResult
    func preAuthKey(id: Int64? = nil, key: String? = nil, prefix: String? = nil, hash: String? = nil, userID: Int64?, reusable: Bool = false,
                    ephemeral: Bool = false, used: Bool = false, tags: [String]? = nil, expiration: Date?, created: Date? = nil) throws -> Int64 {
        try queue.write { db in
            let hash: Data? = prefix == nil ? nil : Data((hash ?? Self.unmatchedBcrypt).utf8)
            if layout == .v027 {
                try db.execute(sql: """
                    INSERT INTO pre_auth_keys (id, key, user_id, reusable, ephemeral, used, tags, expiration, created_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """, arguments: [id, key, userID, reusable, ephemeral, used, Self.json(tags), expiration.map { Self.goTime($0) },
                                     created.map { Self.goTime($0) }])
            } else {
                try db.execute(sql: """
                    INSERT INTO pre_auth_keys (id, key, prefix, hash, user_id, reusable, ephemeral, used, tags, expiration, created_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """, arguments: [id, key ?? "", prefix, hash, userID, reusable, ephemeral, used, Self.json(tags),
                                     expiration.map { Self.goTime($0) }, created.map { Self.goTime($0) }])
            }
            return db.lastInsertedRowID
        }
    }

    /// An API key: `prefix` and a bcrypt hash's text (`hash`, by default one that matches nothing).
    @discardableResult
    func apiKey(prefix: String, hash: String? = nil, expiration: Date?, lastSeen: Date? = nil) throws -> Int64 {
        try queue.write { db in
            try db.execute(sql: "INSERT INTO api_keys (prefix, hash, expiration, created_at, last_seen) VALUES (?, ?, ?, ?, ?)",
                           arguments: [prefix, Data((hash ?? Self.unmatchedBcrypt).utf8),
                                       expiration.map { Self.goTime($0) }, Self.goTime(Date()), lastSeen.map { Self.goTime($0) }])
            return db.lastInsertedRowID
        }
    }

    func policy(_ text: String, deleted: Bool = false) throws {
        try queue.write { db in
            try db.execute(sql: "INSERT INTO policies (data, created_at, updated_at, deleted_at) VALUES (?, ?, ?, ?)",
                           arguments: [text, Self.goTime(Date()), Self.goTime(Date()), deleted ? Self.goTime(Date()) : nil])
        }
    }

    func execute(_ sql: String) throws {
        try queue.write { try $0.execute(sql: sql) }
    }
}
