import Foundation
import Logging
import NIOCore
import PostgresNIO
import TailscaleKeys
import WarrenControlStore
import WarrenPacket

/// A value bound to a statement's `$n` parameter.
protocol SQLArgument {
    func bind(into bindings: inout PostgresBindings)
}

extension Int64: SQLArgument { func bind(into bindings: inout PostgresBindings) { bindings.append(self) } }
extension Int: SQLArgument { func bind(into bindings: inout PostgresBindings) { bindings.append(Int64(self)) } }
extension Int32: SQLArgument { func bind(into bindings: inout PostgresBindings) { bindings.append(self) } }
extension Double: SQLArgument { func bind(into bindings: inout PostgresBindings) { bindings.append(self) } }
extension String: SQLArgument { func bind(into bindings: inout PostgresBindings) { bindings.append(self) } }
extension Bool: SQLArgument { func bind(into bindings: inout PostgresBindings) { bindings.append(self) } }

/// Bytes as BYTEA.
struct Bytes: SQLArgument {
    var bytes: [UInt8]
    init(_ bytes: [UInt8]) { self.bytes = bytes }
    func bind(into bindings: inout PostgresBindings) { bindings.append(ByteBuffer(bytes: bytes)) }
}

extension Optional: SQLArgument where Wrapped: SQLArgument {
    func bind(into bindings: inout PostgresBindings) {
        switch self {
        case .none: bindings.appendNull()
        case .some(let value): value.bind(into: &bindings)
        }
    }
}

/// A failure of one statement, with PostgreSQL's SQLSTATE when the server sent one.
struct StatementFailure: Error {
    var sqlState: String?
    var error: StoreError

    /// A serialization failure or a deadlock: the transaction can run again from the start.
    var isRetryable: Bool { sqlState == "40001" || sqlState == "40P01" }
    /// The connection is gone (or never worked): the transaction did not commit.
    var connectionLost: Bool
}

/// One PostgreSQL connection used synchronously: each statement blocks its caller on the query's future. Only
/// ever called from the thread of the pool slot that owns it, never from an event loop or the cooperative pool.
final class BlockingConnection: @unchecked Sendable {
    let connection: PostgresConnection
    let logger: Logger

    init(_ connection: PostgresConnection, logger: Logger) {
        self.connection = connection
        self.logger = logger
    }

    var isClosed: Bool { connection.isClosed }

    /// Runs one statement and returns its rows and the number of rows it touched.
    func run(_ sql: String, _ arguments: [any SQLArgument] = []) throws(StatementFailure) -> (rows: [PostgresRandomAccessRow], count: Int) {
        var bindings = PostgresBindings(capacity: arguments.count)
        for argument in arguments { argument.bind(into: &bindings) }
        do {
            let result = try connection.query(PostgresQuery(unsafeSQL: sql, binds: bindings), logger: logger).wait()
            return (result.rows.map { $0.makeRandomAccess() }, result.metadata.rows ?? 0)
        } catch {
            throw Self.failure(error)
        }
    }

    /// Closes the connection (waiting for it), ignoring a connection that is already gone.
    func close() {
        _ = try? connection.close().wait()
    }

    static func failure(_ error: any Error) -> StatementFailure {
        guard let error = error as? PSQLError else {
            return StatementFailure(sqlState: nil, error: StoreError(.io, "PostgreSQL: \(error)"), connectionLost: true)
        }
        guard error.code == .server, let info = error.serverInfo else {
            let lost: Set<PSQLError.Code> = [.serverClosedConnection, .clientClosedConnection, .connectionError, .uncleanShutdown,
                                             .poolClosed, .messageDecodingFailure, .unexpectedBackendMessage]
            return StatementFailure(sqlState: nil, error: StoreError(.io, "PostgreSQL: \(Self.describe(error))"),
                                    connectionLost: lost.contains(error.code))
        }
        let state = info[.sqlState]
        let message = info[.message] ?? "error \(state ?? "?")"
        let store: StoreError
        switch state {
        case "23505", "23503":
            let constraint = info[.constraintName] ?? ""
            store = StoreError(.conflict, PostgresSchema.constraintMessages[constraint] ?? message)
        case "40001", "40P01":
            store = StoreError(.io, "PostgreSQL: \(message) (another writer touched the same rows; retried and still failing)")
        case "55P03":
            store = StoreError(.io, "PostgreSQL: \(message): another warren-control instance held the store's write lock too long")
        case "57014":
            store = StoreError(.io, "PostgreSQL: \(message) (a statement ran out of time)")
        case "42P01", "42703":
            store = StoreError(.corrupt, "PostgreSQL: \(message): the database's schema is not Warren's (a table or column is missing)")
        case let code? where code.hasPrefix("22"):
            store = StoreError(.corrupt, "PostgreSQL: \(message)")
        case let code? where code.hasPrefix("08") || code.hasPrefix("57P"):
            return StatementFailure(sqlState: state, error: StoreError(.io, "PostgreSQL: \(message)"), connectionLost: true)
        default:
            store = StoreError(.io, "PostgreSQL: \(message)")
        }
        return StatementFailure(sqlState: state, error: store, connectionLost: false)
    }

    /// A connection error in words (PSQLError's own description hides everything on purpose).
    static func describe(_ error: PSQLError) -> String {
        if let info = error.serverInfo, let message = info[.message] { return message }
        var text = "\(error.code)"
        if let underlying = error.underlying { text += ": \(underlying)" }
        return text
    }
}

/// Reads typed values out of a row without trapping: a missing column, or a value of the wrong type or shape
/// (a damaged or hand-edited database), throws `StoreError.corrupt` naming the table and column.
struct PGColumns: StoreColumns {
    let row: PostgresRandomAccessRow
    let table: String

    private func cell(_ column: String) throws -> PostgresCell {
        guard row.contains(column) else { throw corrupt(column, "missing column") }
        return row[column]
    }

    private func optional<T: PostgresDecodable>(_ column: String, _ type: T.Type, _ what: String) throws -> T? {
        let cell = try cell(column)
        guard cell.bytes != nil else { return nil }
        do {
            return try cell.decode(T.self)
        } catch {
            throw corrupt(column, "expected \(what)")
        }
    }

    func optionalInt(_ column: String) throws -> Int64? { try optional(column, Int64.self, "an integer") }
    func bool(_ column: String) throws -> Bool { try required(column, try optional(column, Bool.self, "true or false")) }

    func optionalDate(_ column: String) throws -> Date? {
        guard let seconds = try optional(column, Double.self, "a time") else { return nil }
        guard seconds.isFinite else { throw corrupt(column, "expected a time") }
        return Date(timeIntervalSinceReferenceDate: seconds)
    }

    func optionalString(_ column: String) throws -> String? { try optional(column, String.self, "text") }

    func optionalBlob(_ column: String) throws -> [UInt8]? {
        guard var buffer = try optional(column, ByteBuffer.self, "bytes") else { return nil }
        return buffer.readBytes(length: buffer.readableBytes) ?? []
    }
}

enum PGEncode {
    static func date(_ date: Date?) -> Double? { date?.timeIntervalSinceReferenceDate }
    static func date(_ date: Date) -> Double { date.timeIntervalSinceReferenceDate }

    static func list(_ values: [String]) -> String {
        // Encoding an array of strings cannot fail.
        (try? String(decoding: JSONEncoder().encode(values), as: UTF8.self)) ?? "[]"
    }

    static func prefixes(_ values: [IPPrefix]) -> String { list(values.map(\.description)) }
}
