import Foundation
import GRDB
import TailscaleKeys
import WarrenControlStore
import WarrenPacket

/// The store on SQLite, through GRDB.
///
/// Why GRDB (over sqlite-nio): a transaction is a synchronous closure on GRDB's single writer queue, which is the
/// shape `ControlStore` wants (no suspension inside a transaction, so no interleaving writers); it has versioned
/// migrations and a WAL connection pool with concurrent snapshot reads; and it uses the system's SQLite
/// (Debian's libsqlite3, patched by the distribution). Its Linux support is community-maintained, so the same
/// test suite as the in-memory twin, plus restart, kill -9 and corrupt-file tests, runs over it here.
///
/// Durability: WAL journal with `synchronous = FULL`: every commit fsyncs the WAL before returning, so a committed
/// transaction survives `kill -9` and also a power loss (with `NORMAL`, WAL commits survive a crashed process but
/// the last ones may be lost on power loss). The cost is one fsync per write transaction; the server's writes
/// (registrations, admin changes, batched last-seen updates) are few. The files are created readable by the owner
/// only (they hold key hashes and the tailnet's layout).
public final class SQLiteControlStore: ControlStore {
    private let pool: DatabasePool
    public let path: String
    /// The device and inode of the file opened (for the health check: is the file at `path` still this one).
    private let fileIdentity: (device: UInt64, inode: UInt64)?

    /// Opens (creating if needed) the database at `path` and migrates it to the current schema. Throws `.corrupt`
    /// for a file that is not a database of this program or one written by a newer version, `.io` otherwise.
    public init(path: String) throws {
        self.path = path
        var configuration = Configuration()
        configuration.journalMode = .wal
        configuration.foreignKeysEnabled = true
        configuration.busyMode = .timeout(10)
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        let previousMask = umask(0o077)
        defer { umask(previousMask) }
        do {
            pool = try DatabasePool(path: path, configuration: configuration)
            // GRDB turns WAL on for the writer after `prepareDatabase` and sets synchronous=NORMAL with it, so FULL is
            // set again here on the pool's one writer connection (kept for the pool's life). A test checks it.
            try pool.writeWithoutTransaction { try $0.execute(sql: "PRAGMA synchronous = FULL") }
            let migrator = Schema.migrator
            if try pool.read({ try migrator.hasBeenSuperseded($0) }) {
                throw StoreError(.corrupt, "\(path) was written by a newer warren-control (unknown schema migrations)")
            }
            try migrator.migrate(pool)
            try pool.read { db in
                let result = try String.fetchOne(db, sql: "PRAGMA quick_check")
                guard result == "ok" else { throw StoreError(.corrupt, "\(path) failed its integrity check: \(result ?? "no answer")") }
            }
        } catch let error as StoreError {
            throw error
        } catch let error as DatabaseError {
            throw Self.map(error, path: path)
        } catch {
            // GRDB's own decoding errors (a damaged migrations table, for one).
            throw StoreError(.corrupt, "\(path) is not a usable warren-control database: \(error)")
        }
        var status = stat()
        fileIdentity = stat(path, &status) == 0 ? (UInt64(status.st_dev), UInt64(status.st_ino)) : nil
    }

    /// The health check: a read in a transaction through the pool (fails once the store is closed or the
    /// connection has an I/O error), then the file at `path`: still the file this server opened (not removed, moved
    /// or replaced, which SQLite itself does not notice while it holds the file open), and still starting with
    /// SQLite's header (not overwritten).
    public func checkHealth() async throws {
        _ = try await read { try $0.users().count }
        var status = stat()
        guard stat(path, &status) == 0 else {
            throw StoreError(.io, "\(path): the database file is gone (\(String(cString: strerror(errno)))): removed or moved "
                                 + "while the server runs; new data would be lost at restart")
        }
        if let fileIdentity, (UInt64(status.st_dev), UInt64(status.st_ino)) != fileIdentity {
            throw StoreError(.io, "\(path) is no longer the file this server opened (replaced or moved while it runs)")
        }
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else {
            throw StoreError(.io, "\(path): cannot open the database file (\(String(cString: strerror(errno))))")
        }
        defer { Glibc.close(descriptor) }
        var header = [UInt8](repeating: 0, count: 16)
        let count = header.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, 16, 0) }
        guard count >= 0 else {
            throw StoreError(.io, "\(path): cannot read the database file (\(String(cString: strerror(errno))))")
        }
        guard count == 16, header == Array("SQLite format 3\0".utf8) else {
            throw StoreError(.corrupt, "\(path) no longer starts with SQLite's header (overwritten or truncated)")
        }
    }

    static func map(_ error: DatabaseError, path: String) -> StoreError {
        switch error.resultCode {
        case .SQLITE_NOTADB, .SQLITE_CORRUPT, .SQLITE_FORMAT, .SQLITE_SCHEMA:
            return StoreError(.corrupt, "\(path) is not a usable warren-control database: \(error.message ?? "\(error.resultCode)")")
        case .SQLITE_CONSTRAINT:
            return StoreError(.conflict, error.message ?? "constraint failed")
        default:
            return StoreError(.io, "\(path): \(error.message ?? "\(error.resultCode)")")
        }
    }

    public func read<T: Sendable>(_ body: @escaping @Sendable (any StoreReading) throws -> T) async throws -> T {
        do {
            return try await pool.read { db in try body(SQLiteTransaction(db)) }
        } catch let error as DatabaseError {
            throw Self.map(error, path: path)
        }
    }

    public func transaction<T: Sendable>(_ body: @escaping @Sendable (any StoreTransaction) throws -> T) async throws -> T {
        do {
            return try await pool.write { db in try body(SQLiteTransaction(db)) }
        } catch let error as DatabaseError {
            throw Self.map(error, path: path)
        }
    }

    /// The connection settings that durability rests on, as SQLite reports them (for diagnostics and tests):
    /// the journal mode ("wal") and the synchronous level (2 = FULL), for the writer and for a reader.
    public func durabilitySettings() async throws -> (journalMode: String, writerSynchronous: Int, readerSynchronous: Int) {
        do {
            let writer = try await pool.writeWithoutTransaction { db in
                (try String.fetchOne(db, sql: "PRAGMA journal_mode") ?? "", try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1)
            }
            let reader = try await pool.read { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1 }
            return (writer.0, writer.1, reader)
        } catch let error as DatabaseError {
            throw Self.map(error, path: path)
        }
    }

    /// Synchronous access for tools and tests that are not async (the same transaction rules).
    public func transactionSync<T>(_ body: (any StoreTransaction) throws -> T) throws -> T {
        do {
            return try pool.write { db in try body(SQLiteTransaction(db)) }
        } catch let error as DatabaseError {
            throw Self.map(error, path: path)
        }
    }

    /// Copies the WAL into the main file and empties the WAL (so the main file alone is a complete copy).
    public func checkpoint() throws {
        do {
            try pool.writeWithoutTransaction { _ = try $0.checkpoint(.truncate) }
        } catch let error as DatabaseError {
            throw Self.map(error, path: path)
        }
    }

    /// Checkpoints and closes the database (further calls fail). Committed data is on disk before this; closing
    /// only leaves the main file complete on its own.
    public func close() throws {
        try checkpoint()
        do {
            try pool.close()
        } catch let error as DatabaseError {
            throw Self.map(error, path: path)
        }
    }
}
