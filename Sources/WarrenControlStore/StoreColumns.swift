import Foundation
import TailscaleKeys
import WarrenPacket

/// Typed reads of one row's columns, shared by the SQL stores (SQLite's `Columns`, PostgreSQL's `PGColumns`): each
/// store reads its own raw cells (`optionalInt`, `optionalDate`, `optionalString`, `optionalBlob`); what is made of
/// them (required values, keys, addresses, JSON lists) is written once here. A value of the wrong type or shape (a
/// damaged or hand-edited database) throws `StoreError.corrupt` naming the table and column, never traps.
public protocol StoreColumns {
    /// The table the row comes from (named in errors).
    var table: String { get }
    func optionalInt(_ column: String) throws -> Int64?
    func optionalDate(_ column: String) throws -> Date?
    func optionalString(_ column: String) throws -> String?
    func optionalBlob(_ column: String) throws -> [UInt8]?
}

extension StoreColumns {
    public func corrupt(_ column: String, _ what: String) -> StoreError {
        StoreError(.corrupt, "\(table).\(column): \(what)")
    }

    public func required<T>(_ column: String, _ value: T?) throws -> T {
        guard let value else { throw corrupt(column, "missing") }
        return value
    }

    public func int(_ column: String) throws -> Int64 { try required(column, try optionalInt(column)) }
    public func date(_ column: String) throws -> Date { try required(column, try optionalDate(column)) }
    public func string(_ column: String) throws -> String { try required(column, try optionalString(column)) }
    public func blob(_ column: String) throws -> [UInt8] { try required(column, try optionalBlob(column)) }

    public func optionalKey<K: TailscalePublicKey>(_ column: String, as type: K.Type) throws -> K? {
        guard let bytes = try optionalBlob(column) else { return nil }
        guard let key = K(rawRepresentation: bytes) else { throw corrupt(column, "expected a 32-byte key") }
        return key
    }

    public func key<K: TailscalePublicKey>(_ column: String, as type: K.Type) throws -> K {
        try required(column, try optionalKey(column, as: type))
    }

    public func optionalAddress(_ column: String) throws -> IPAddress? {
        guard let text = try optionalString(column) else { return nil }
        guard let address = IPAddress(text) else { throw corrupt(column, "expected an IP address") }
        return address
    }

    /// A JSON array of strings (tags, endpoints, routes).
    public func stringList(_ column: String) throws -> [String] {
        let text = try string(column)
        guard let list = try? JSONDecoder().decode([String].self, from: Data(text.utf8)) else {
            throw corrupt(column, "expected a JSON array of strings")
        }
        return list
    }

    public func prefixList(_ column: String) throws -> [IPPrefix] {
        try stringList(column).map { text in
            guard let prefix = IPPrefix(text) else { throw corrupt(column, "expected IP prefixes") }
            return prefix
        }
    }
}
