// A file named as the store's location may be another program's SQLite database (headscale's db.sqlite, named by a
// headscale configuration's database.sqlite.path). Migrating Warren's schema into it would mix two programs' tables,
// so it is recognised before the store opens it.

import Foundation
import GRDB
import WarrenControlStore

extension SQLiteControlStore {
    /// The tables of the SQLite database at `path` when it holds tables but is not a warren-control database (it has
    /// no migrations table of Warren's); nil for a missing or empty file, an empty database, or Warren's own database.
    /// The file is opened read-only and left as it was.
    public static func foreignTables(path: String) throws -> [String]? {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
              let size = attributes[.size] as? Int, size > 0 else { return nil }
        var configuration = Configuration()
        configuration.readonly = true
        let tables: [String]
        do {
            let queue = try DatabaseQueue(path: path, configuration: configuration)
            tables = try queue.read { db in
                try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
            }
            try queue.close()
        } catch {
            throw StoreError(.corrupt, "\(path) is not a SQLite database: \(error)")
        }
        if tables.isEmpty || tables.contains("grdb_migrations") { return nil }
        return tables
    }
}
