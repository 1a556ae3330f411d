import Foundation
import GRDB
import TailscaleKeys
import WarrenControlStore
import WarrenPacket

/// Reads typed values out of a row without trapping: a value of the wrong type or shape (a damaged or hand-edited
/// database) throws `StoreError.corrupt` naming the table and column.
struct Columns: StoreColumns {
    let row: Row
    let table: String

    private func raw(_ column: String) -> (any DatabaseValueConvertible)? { row[column] }

    func optionalInt(_ column: String) throws -> Int64? {
        switch raw(column) {
        case nil: return nil
        case let v as Int64: return v
        default: throw corrupt(column, "expected an integer")
        }
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

    func optionalString(_ column: String) throws -> String? {
        switch raw(column) {
        case nil: return nil
        case let v as String: return v
        default: throw corrupt(column, "expected text")
        }
    }

    func optionalBlob(_ column: String) throws -> [UInt8]? {
        switch raw(column) {
        case nil: return nil
        case let v as Data: return Array(v)
        default: throw corrupt(column, "expected bytes")
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
