import Foundation
import TailscaleKeys
import WarrenControlSQLite
import WarrenControlStore
import WarrenPacket
import WarrenTestSupport
import XCTest

/// The backends every contract test runs over: the in-memory twin and SQLite in a fresh temporary file.
enum Backends {
    static func all(file: StaticString = #filePath, line: UInt = #line) throws -> [(name: String, store: any ControlStore)] {
        [("memory", MemoryControlStore()), ("sqlite", try SQLiteControlStore(path: TemporaryDirectory.make().appending("/control.sqlite")))]
    }
}

enum TemporaryDirectory {
    /// A new empty directory under the system's temporary directory (removed by the OS's cleaning, not by the test,
    /// so a failure leaves the database to look at).
    static func make() throws -> String {
        let path = NSTemporaryDirectory() + "warren-store-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }
}

struct Keys {
    var generator: SeededGenerator

    init(seed: UInt64) { generator = SeededGenerator(seed: seed) }

    mutating func machine() -> MachinePublic { MachinePublic(rawRepresentation: generator.bytes(count: 32))! }
    mutating func node() -> NodePublic { NodePublic(rawRepresentation: generator.bytes(count: 32))! }
    mutating func disco() -> DiscoPublic { DiscoPublic(rawRepresentation: generator.bytes(count: 32))! }
}

let referenceNow = Date(timeIntervalSinceReferenceDate: 800_000_000.125)
let defaultAllocator = try! AddressAllocator()

/// Runs `body` once per backend, naming the backend in failures.
func forEachBackend(
    file: StaticString = #filePath, line: UInt = #line, _ body: (String, any ControlStore) async throws -> Void
) async throws {
    for (name, store) in try Backends.all() {
        do {
            try await body(name, store)
        } catch {
            XCTFail("[\(name)] \(error)", file: file, line: line)
        }
    }
}

/// Asserts that `body` throws a `StoreError` with `code`.
func assertStoreError<T>(
    _ code: StoreError.Code, _ context: String, file: StaticString = #filePath, line: UInt = #line, _ body: () async throws -> T
) async {
    do {
        _ = try await body()
        XCTFail("[\(context)] expected a \(code) error, got success", file: file, line: line)
    } catch let error as StoreError {
        XCTAssertEqual(error.code, code, "[\(context)] \(error)", file: file, line: line)
    } catch {
        XCTFail("[\(context)] expected a StoreError \(code), got \(error)", file: file, line: line)
    }
}
