import GRDB

/// The versioned schema. Each migration runs once, in order, inside a transaction, and GRDB records it in
/// `grdb_migrations`; a database that has a migration this build does not know is refused (it was written by a
/// newer warren-control) instead of being used half-understood.
///
/// Column conventions: times are REAL seconds since 2001-01-01 UTC (Foundation's reference date, so a `Date` comes
/// back bit-for-bit); keys are 32-byte BLOBs; addresses are their canonical text; lists (endpoints, tags, routes)
/// are JSON arrays of strings; booleans are 0/1.
enum Schema {
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: users, nodes, keys, pending logins, policy, addresses") { db in
            try db.execute(sql: """
                CREATE TABLE users (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    name TEXT NOT NULL UNIQUE,
                    display_name TEXT NOT NULL DEFAULT '',
                    created REAL NOT NULL
                );
                CREATE TABLE nodes (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    machine_key BLOB NOT NULL UNIQUE,
                    node_key BLOB NOT NULL UNIQUE,
                    disco_key BLOB,
                    user_id INTEGER NOT NULL REFERENCES users(id),
                    hostname TEXT NOT NULL,
                    given_name TEXT NOT NULL UNIQUE COLLATE NOCASE,
                    ipv4 TEXT UNIQUE,
                    ipv6 TEXT UNIQUE,
                    endpoints TEXT NOT NULL DEFAULT '[]',
                    hostinfo TEXT,
                    tags TEXT NOT NULL DEFAULT '[]',
                    advertised_routes TEXT NOT NULL DEFAULT '[]',
                    approved_routes TEXT NOT NULL DEFAULT '[]',
                    expiry REAL,
                    last_seen REAL,
                    ephemeral INTEGER NOT NULL DEFAULT 0,
                    auth_key_id INTEGER,
                    register_method TEXT NOT NULL,
                    created REAL NOT NULL
                );
                CREATE INDEX nodes_user ON nodes(user_id);
                CREATE TABLE pre_auth_keys (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    prefix TEXT NOT NULL UNIQUE,
                    secret_hash BLOB NOT NULL,
                    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
                    reusable INTEGER NOT NULL,
                    ephemeral INTEGER NOT NULL,
                    pre_approved INTEGER NOT NULL,
                    tags TEXT NOT NULL DEFAULT '[]',
                    created REAL NOT NULL,
                    expiration REAL,
                    used INTEGER NOT NULL DEFAULT 0,
                    use_count INTEGER NOT NULL DEFAULT 0
                );
                CREATE INDEX pre_auth_keys_user ON pre_auth_keys(user_id);
                CREATE TABLE api_keys (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    prefix TEXT NOT NULL UNIQUE,
                    secret_hash BLOB NOT NULL,
                    created REAL NOT NULL,
                    expiration REAL,
                    last_used REAL
                );
                CREATE TABLE pending_registrations (
                    id TEXT PRIMARY KEY,
                    machine_key BLOB NOT NULL,
                    node_key BLOB NOT NULL,
                    hostname TEXT NOT NULL,
                    hostinfo TEXT,
                    ephemeral INTEGER NOT NULL,
                    created REAL NOT NULL,
                    expires REAL NOT NULL,
                    approved_node_id INTEGER
                );
                CREATE TABLE policies (
                    version INTEGER PRIMARY KEY,
                    text TEXT NOT NULL,
                    created REAL NOT NULL
                );
                CREATE TABLE allocated_addresses (
                    address TEXT PRIMARY KEY
                );
                CREATE TABLE address_cursors (
                    family INTEGER PRIMARY KEY,
                    address TEXT NOT NULL
                );
                """)
        }
        migrator.registerMigration("v2: nodes.authorized (device approval)") { db in
            // Nodes from before device approval was stored had been admitted: they stay authorized.
            try db.execute(sql: "ALTER TABLE nodes ADD COLUMN authorized INTEGER NOT NULL DEFAULT 1")
        }
        migrator.registerMigration("v3: audit_log (admin actions)") { db in
            // Bounded by the writer (AuditLog.retention newest rows); `time` indexed for `audit --since`.
            try db.execute(sql: """
                CREATE TABLE audit_log (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    time REAL NOT NULL,
                    actor TEXT NOT NULL,
                    method TEXT NOT NULL,
                    route TEXT NOT NULL,
                    object TEXT NOT NULL DEFAULT '',
                    status INTEGER NOT NULL,
                    outcome TEXT NOT NULL DEFAULT ''
                );
                CREATE INDEX audit_log_time ON audit_log(time);
                """)
        }
        migrator.registerMigration("v4: users' e-mail and identity provider; key hash schemes (headscale's bcrypt)") { db in
            // Existing users have neither; existing keys are Warren's SHA-256.
            try db.execute(sql: """
                ALTER TABLE users ADD COLUMN email TEXT NOT NULL DEFAULT '';
                ALTER TABLE users ADD COLUMN provider_id TEXT;
                ALTER TABLE users ADD COLUMN provider TEXT NOT NULL DEFAULT '';
                ALTER TABLE pre_auth_keys ADD COLUMN hash_scheme TEXT NOT NULL DEFAULT 'sha256';
                ALTER TABLE api_keys ADD COLUMN hash_scheme TEXT NOT NULL DEFAULT 'sha256';
                """)
        }
        migrator.registerMigration("v5: users' profile picture URL") { db in
            try db.execute(sql: "ALTER TABLE users ADD COLUMN picture_url TEXT NOT NULL DEFAULT ''")
        }
        migrator.registerMigration("v6: OIDC sign-ins in progress; users' groups from the identity provider") { db in
            // A started sign-in lives here (not in one process's memory) so that any instance can finish it; the key
            // is the SHA-256 of its state. Bounded by the writer (expired rows pruned, a cap on the rest).
            try db.execute(sql: """
                CREATE TABLE oidc_sign_ins (
                    id TEXT PRIMARY KEY,
                    login_id TEXT NOT NULL,
                    nonce TEXT NOT NULL,
                    code_verifier TEXT,
                    browser_binding BLOB NOT NULL,
                    created REAL NOT NULL
                );
                CREATE INDEX oidc_sign_ins_created ON oidc_sign_ins(created);
                ALTER TABLE users ADD COLUMN provider_groups TEXT NOT NULL DEFAULT '[]';
                """)
        }
        migrator.registerMigration("v7: nodes.capability_version") { db in
            try db.execute(sql: "ALTER TABLE nodes ADD COLUMN capability_version INTEGER")
        }
        return migrator
    }
}
