import Foundation
import GRDB
import TailscaleKeys
import WarrenControlStore
import WarrenPacket

/// Reads typed values out of a row without trapping: a value of the wrong type or shape (a damaged or hand-edited
/// database) throws `StoreError.corrupt` naming the table and column.
struct Columns {
    let row: Row
    let table: String

    private func raw(_ column: String) -> (any DatabaseValueConvertible)? { row[column] }

    private func corrupt(_ column: String, _ what: String) -> StoreError {
        StoreError(.corrupt, "\(table).\(column): \(what)")
    }

    func optionalInt(_ column: String) throws -> Int64? {
        switch raw(column) {
        case nil: return nil
        case let v as Int64: return v
        default: throw corrupt(column, "expected an integer")
        }
    }

    func int(_ column: String) throws -> Int64 {
        guard let v = try optionalInt(column) else { throw corrupt(column, "missing") }
        return v
    }

    func bool(_ column: String) throws -> Bool {
        switch try int(column) {
        case 0: return false
        case 1: return true
        default: throw corrupt(column, "expected 0 or 1")
        }
    }

    func optionalDate(_ column: String) throws -> Date? {
        switch raw(column) {
        case nil: return nil
        case let v as Double where v.isFinite: return Date(timeIntervalSinceReferenceDate: v)
        case let v as Int64: return Date(timeIntervalSinceReferenceDate: Double(v))
        default: throw corrupt(column, "expected a time")
        }
    }

    func date(_ column: String) throws -> Date {
        guard let v = try optionalDate(column) else { throw corrupt(column, "missing") }
        return v
    }

    func optionalString(_ column: String) throws -> String? {
        switch raw(column) {
        case nil: return nil
        case let v as String: return v
        default: throw corrupt(column, "expected text")
        }
    }

    func string(_ column: String) throws -> String {
        guard let v = try optionalString(column) else { throw corrupt(column, "missing") }
        return v
    }

    func optionalBlob(_ column: String) throws -> [UInt8]? {
        switch raw(column) {
        case nil: return nil
        case let v as Data: return Array(v)
        default: throw corrupt(column, "expected bytes")
        }
    }

    func blob(_ column: String) throws -> [UInt8] {
        guard let v = try optionalBlob(column) else { throw corrupt(column, "missing") }
        return v
    }

    func optionalKey<K: TailscalePublicKey>(_ column: String, as type: K.Type) throws -> K? {
        guard let bytes = try optionalBlob(column) else { return nil }
        guard let key = K(rawRepresentation: bytes) else { throw corrupt(column, "expected a 32-byte key") }
        return key
    }

    func key<K: TailscalePublicKey>(_ column: String, as type: K.Type) throws -> K {
        guard let key = try optionalKey(column, as: type) else { throw corrupt(column, "missing") }
        return key
    }

    func optionalAddress(_ column: String) throws -> IPAddress? {
        guard let text = try optionalString(column) else { return nil }
        guard let address = IPAddress(text) else { throw corrupt(column, "expected an IP address") }
        return address
    }

    func stringList(_ column: String) throws -> [String] {
        let text = try string(column)
        guard let list = try? JSONDecoder().decode([String].self, from: Data(text.utf8)) else {
            throw corrupt(column, "expected a JSON array of strings")
        }
        return list
    }

    func prefixList(_ column: String) throws -> [IPPrefix] {
        try stringList(column).map { text in
            guard let prefix = IPPrefix(text) else { throw corrupt(column, "expected IP prefixes") }
            return prefix
        }
    }
}

enum Encode {
    static func date(_ date: Date?) -> Double? { date?.timeIntervalSinceReferenceDate }

    static func list(_ values: [String]) -> String {
        // Encoding an array of strings cannot fail.
        (try? String(decoding: JSONEncoder().encode(values), as: UTF8.self)) ?? "[]"
    }

    static func prefixes(_ values: [IPPrefix]) -> String { list(values.map(\.description)) }

    static func blob(_ bytes: [UInt8]) -> Data { Data(bytes) }
}
