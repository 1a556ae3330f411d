import Foundation

/// One admin action in the audit log: who did what to which object, when, and how it ended.
///
/// Only mutating requests (POST, PUT, PATCH, DELETE) that got past authentication are recorded; reads and requests
/// refused for a missing or wrong API key are not (an unauthenticated flood must not turn into disk writes).
/// The log is bounded: each append drops the entries older than the newest `AuditLog.retention`.
public struct AuditEntry: Sendable, Equatable, Codable {
    public var id: Int64
    public var time: Date
    /// "socket" (the local admin socket: root, or the CLI through it) or "api-key <prefix> (id N)". Never a secret.
    public var actor: String
    public var method: String
    /// The route template, such as "/api/v1/node/{nodeId}/rename/{newName}".
    public var route: String
    /// The object touched, as the request named it: path parameters and the naming fields of the body
    /// ("nodeId=5 newName=web", "name=alice"); key texts reduced to their public prefix.
    public var object: String
    /// The HTTP status of the answer.
    public var status: Int
    /// "ok", or the error message (first line, shortened).
    public var outcome: String

    public init(id: Int64 = 0, time: Date, actor: String, method: String, route: String, object: String, status: Int,
                outcome: String) {
        self.id = id
        self.time = time
        self.actor = actor
        self.method = method
        self.route = route
        self.object = object
        self.status = status
        self.outcome = outcome
    }
}

public enum AuditLog {
    /// How many entries the store keeps (the newest); older ones are dropped as new ones arrive.
    public static let retention = 10_000
    /// The most entries one read returns.
    public static let maximumRead = 10_000
}
