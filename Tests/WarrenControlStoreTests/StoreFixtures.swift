import Foundation
import TailscaleKeys
import Synchronization
import WarrenControlPostgres
import WarrenControlSQLite
import WarrenControlStore
import WarrenPacket
import WarrenTestProbes
import WarrenTestSupport
import XCTest

/// The backends every contract test runs over: the in-memory twin, SQLite in a fresh temporary file, and PostgreSQL
/// on a fresh database of the test's own server (when one can run here: PostgresBackend).
enum Backends {
    static func all(file: StaticString = #filePath, line: UInt = #line) async throws -> [(name: String, store: any ControlStore)] {
        var backends: [(name: String, store: any ControlStore)] = [
            ("memory", MemoryControlStore()), ("sqlite", try SQLiteControlStore(path: TemporaryDirectory.make().appending("/control.sqlite"))),
        ]
        if let postgres = try await PostgresBackend.freshStore(file: file, line: line) { backends.append(("postgres", postgres)) }
        return backends
    }
}

/// PostgreSQL for the store's tests: the test process's own server (PostgresTestServer), a fresh database per store.
enum PostgresBackend {
    /// A store on a fresh database; nil (after saying why, once) when no server can run here, a failure when
    /// WARREN_INTEROP_REQUIRED=1.
    static func freshStore(file: StaticString = #filePath, line: UInt = #line) async throws -> PostgresControlStore? {
        let server: PostgresTestServer
        do {
            server = try PostgresTestServer.shared()
        } catch let error as PostgresTestServer.Unavailable {
            if error.required {
                XCTFail("\(error)", file: file, line: line)
            } else if noted.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged {
                print("note: \(error); the contract tests run over memory and SQLite only")
            }
            return nil
        }
        return try await PostgresControlStore(settings: settings(server, database: try server.createDatabase()))
    }

    /// A server of the test's own, or a skip (a failure when WARREN_INTEROP_REQUIRED=1).
    static func server() throws -> PostgresTestServer {
        do {
            return try PostgresTestServer.shared()
        } catch let error as PostgresTestServer.Unavailable where !error.required {
            throw XCTSkip(error.description)
        }
    }

    /// Settings for `database` over the Unix socket (or TCP with the password).
    static func settings(_ server: PostgresTestServer, database: String, tcp: Bool = false, maxConnections: Int = 4) -> PostgresSettings {
        tcp ? PostgresSettings(host: "127.0.0.1", port: server.port, database: database, user: server.user, password: server.password,
                               maxConnections: maxConnections)
            : PostgresSettings(host: server.socketDirectory, port: server.port, database: database, user: server.user,
                               maxConnections: maxConnections)
    }

    private static let noted = Atomic<Bool>(false)
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
    for (name, store) in try await Backends.all(file: file, line: line) {
        do {
            try await body(name, store)
        } catch {
            XCTFail("[\(name)] \(error)", file: file, line: line)
        }
        if let postgres = store as? PostgresControlStore { await postgres.close() }
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
