// One ControlEngine in process over the memory store, with a user and a reusable pre-auth key: the setup the
// fan-out, pacing and DERP-map tests share.

import Foundation
import Logging
import WarrenControlStore
@testable import WarrenControlServer

struct InProcessEngine {
    let engine: ControlEngine
    let store: MemoryControlStore
    /// A reusable pre-auth key of user alice.
    let authKey: String

    /// `configure` adjusts the configuration before the engine starts (the map interval, the DERP map, ...).
    static func start(_ configure: (inout ControlConfiguration) -> Void = { _ in }) async throws -> InProcessEngine {
        var configuration = ControlConfiguration(serverURL: "http://127.0.0.1:1")
        configure(&configuration)
        let store = MemoryControlStore()
        let directory = try StoreDirectory(store: store, ipv4Prefix: configuration.ipv4Prefix,
                                           ipv6Prefix: configuration.ipv6Prefix)
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        let engine = ControlEngine(configuration: configuration, directory: directory, logger: logger)
        try await engine.load()
        let key = try await store.transaction { tx in
            let owner = try tx.createUser(name: "alice", now: Date())
            var generator = SystemRandomNumberGenerator()
            return try tx.createPreAuthKey(userID: owner.id, options: PreAuthKeyOptions(reusable: true), now: Date(),
                                           generator: &generator).text
        }
        return InProcessEngine(engine: engine, store: store, authKey: key)
    }
}
