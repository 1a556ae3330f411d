// warren-test-sqlite-writer DATABASE: a test helper, not a product. The writer half of
// WarrenControlStoreTests' SQLiteKillTests: commits users "user-0", "user-1", ... one
// transaction each and reports every commit on stdout ("committed N") as soon as it returns,
// until the test kills it with SIGKILL. The test then checks that every reported commit survived.

import Foundation
import WarrenControlSQLite
import WarrenControlStore

guard CommandLine.arguments.count == 2 else {
    FileHandle.standardError.write(Data("usage: warren-test-sqlite-writer DATABASE\n".utf8))
    exit(2)
}
do {
    let store = try SQLiteControlStore(path: CommandLine.arguments[1])
    let now = Date(timeIntervalSinceReferenceDate: 800_000_000)
    for i in 0..<100_000 {
        _ = try store.transactionSync { try $0.createUser(name: "user-\(i)", now: now) }
        // Unbuffered: the report leaves the process before the next transaction starts.
        FileHandle.standardOutput.write(Data("committed \(i)\n".utf8))
    }
} catch {
    FileHandle.standardError.write(Data("warren-test-sqlite-writer: \(error)\n".utf8))
    exit(1)
}
