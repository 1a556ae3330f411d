// Several instances on one PostgreSQL database: `serve` links the engine to the others (ControlEngine+Cluster.swift)
// when the store is PostgreSQL. SQLite serves one process, so there is nothing to follow.
import Logging
import ServiceLifecycle
import WarrenControlPostgres
import WarrenControlServer
import WarrenControlStore

enum ClusterWiring {
    /// Attaches the engine to the other instances when the store can have them; the service that follows them.
    /// Call before `engine.load()`.
    static func attach(store: any ControlStore, engine: ControlEngine, storedPolicy: Bool, logger: Logger) async throws -> (any Service)? {
        guard let postgres = store as? PostgresControlStore else { return nil }
        try await engine.attach(cluster: PostgresCluster(store: postgres), storedPolicy: storedPolicy)
        logger.info("several instances: following the others on this database", metadata: ["instance": "\(postgres.instanceID)"])
        return ClusterFollower(engine: engine, logger: logger)
    }
}

/// Runs the engine's side of the cluster link until shutdown.
struct ClusterFollower: Service {
    let engine: ControlEngine
    let logger: Logger

    func run() async throws {
        try await cancelWhenGracefulShutdown {
            try await engine.followCluster()
        }
    }
}
