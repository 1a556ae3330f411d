// Several warren-control instances on one database: what the engine needs from the store's side to act as one
// server. The change feed (records other instances wrote, in commit order), presence (which nodes have a map
// stream open on some live instance: that state lives in memory, not in the store's records), and singletons
// (work that must run on one instance at a time). PostgreSQL implements it (WarrenControlPostgres); SQLite and the
// memory store serve one process and have no cluster.

/// One record a write transaction touched.
public struct StoreChange: Sendable, Hashable, CustomStringConvertible {
    /// The change's number: ascending in commit order across all instances.
    public var sequence: Int64
    /// "user", "node", "preauthkey", "apikey", "registration" or "policy".
    public var kind: String
    /// The record's id (a registration's id text; a policy's version).
    public var id: String
    /// The `instanceID` of the store that wrote it.
    public var origin: String

    public init(sequence: Int64, kind: String, id: String, origin: String) {
        self.sequence = sequence
        self.kind = kind
        self.id = id
        self.origin = origin
    }

    public var description: String { "#\(sequence) \(kind) \(id) (from \(origin))" }
}

/// What the change feed delivers.
public enum StoreChangeEvent: Sendable, Equatable {
    /// Changes committed since the last event, in commit order.
    case changes([StoreChange])
    /// Changes may have been missed (the feed's connection was lost, or fell further behind than the rows kept):
    /// reload whatever is derived from the store. Changes after this event are delivered again.
    case resync(reason: String)
}

/// What an instance hears from the others.
public enum ClusterEvent: Sendable, Equatable {
    /// Records other instances (and this one: compare `origin`) committed, in commit order.
    case changes([StoreChange])
    /// Changes may have been missed: reload everything derived from the store.
    case resync(reason: String)
    /// Every node with a map stream open on another live instance, as of now (sent after any instance's presence
    /// changed, after an instance died, and every poll interval).
    case presence(Set<Int64>)
}

/// The link between one warren-control instance and the others on its database.
public protocol ControlCluster: AnyObject, Sendable {
    /// This instance's name in `StoreChange.origin`.
    var instanceID: String { get }
    /// Joins the cluster (this instance's presence is published from now on) and delivers what the others do.
    /// Returns once listening; throws when the database cannot be reached. The link ends when the caller stops
    /// iterating (the stream is dropped or its task cancelled).
    func events() async throws -> AsyncStream<ClusterEvent>
    /// This instance has (or no longer has) a map stream of the node open. Does not wait: writes are batched.
    func setPresence(node: Int64, online: Bool)
    /// Runs `body` while this instance holds the singleton `name` (cancelled when it loses it, run again when it
    /// takes it back), until the calling task is cancelled. `onChange` hears each change of holding.
    func runSingleton(named name: String, onChange: @escaping @Sendable (Bool) -> Void,
                      _ body: @escaping @Sendable () async -> Void) async
}
