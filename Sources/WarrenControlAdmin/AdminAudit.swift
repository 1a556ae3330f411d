// The entry point of the admin API (`AdminAPI.handle`) and what it does around every request, whichever route set
// serves it (Warren's /api/v1/... or headscale's, HeadscaleAPI.swift):
// - the audit log: each mutating request (POST, PUT, PATCH, DELETE) that got past authentication is recorded in the
//   store with who made it (the local socket with the peer's uid, pid and program, or the API key by its public
//   prefix and id: never the secret), the method and route template, the object named, the status and the outcome.
//   Reads are not recorded, nor requests refused for a missing or wrong key (a flood of those must not become disk
//   writes). The store keeps the newest `AuditLog.retention` entries.
// - GET /api/v1/warren/audit?since=&limit= reads it back (`warren-control audit`).
// - request metrics: the route template, method, status and latency go to `observer` (serve wires it to
//   Prometheus).

import Foundation
import Synchronization
import WarrenControlStore

/// Receives one call per answered request: route template, method, status, latency.
public final class AdminRequestObserver: Sendable {
    public typealias Callback = @Sendable (_ route: String, _ method: String, _ status: Int, _ duration: Duration) -> Void
    private let callback = Mutex<Callback?>(nil)

    public init() {}

    /// Sets (or replaces) the callback; every copy of the `AdminAPI` holding this observer uses it.
    public func set(_ callback: @escaping Callback) { self.callback.withLock { $0 = callback } }

    func record(route: String, method: String, status: Int, duration: Duration) {
        callback.withLock { $0 }?(route, method, status, duration)
    }
}

/// One audit entry as the API shows it.
public struct AuditEntryJSON: Codable, Sendable, Equatable {
    public var id: Int64
    public var time: String
    public var actor: String
    public var method: String
    public var route: String
    public var object: String
    public var status: Int
    public var outcome: String

    init(_ entry: AuditEntry) {
        id = entry.id
        time = AdminTime.format(entry.time)
        actor = entry.actor
        method = entry.method
        route = entry.route
        object = entry.object
        status = entry.status
        outcome = entry.outcome
    }
}

extension AdminAPI {
    static let mutatingMethods: Set<String> = ["POST", "PUT", "PATCH", "DELETE"]

    public func handle(_ request: AdminRequest, via transport: AdminTransport) async -> AdminResponse {
        let started = ContinuousClock.now
        // The route that matched leaves its template and parameters here (AdminRouter.swift); none for an unknown path.
        let match = AdminRouteMatch()
        let response = await respond(request, via: transport, match: match)
        let template = match.template ?? AdminRouteTemplate.unmatched
        observer.record(route: template, method: request.method, status: response.status, duration: ContinuousClock.now - started)
        if Self.mutatingMethods.contains(request.method), response.status != 401 {
            await audit(request, via: transport, template: template, parameters: match.parameters, response: response)
        }
        return response
    }

    // MARK: recording

    private func audit(_ request: AdminRequest, via transport: AdminTransport, template: String, parameters: [(String, String)],
                       response: AdminResponse) async {
        let now = clock()
        let object = AdminAuditText.object(parameters: parameters, query: request.query, body: request.body)
        let outcome = AdminAuditText.outcome(response)
        let keyPrefix = transport == .network ? AdminAuditText.apiKeyPrefix(request.authorization) : nil
        let socketActor = "socket" + (request.peer.map { " (\($0))" } ?? "")
        _ = try? await store.transaction { tx in
            let actor: String
            if transport == .localSocket {
                actor = socketActor
            } else if let keyPrefix {
                actor = "api-key \(keyPrefix)" + ((try? tx.apiKey(prefix: keyPrefix)).flatMap { $0 }.map { " (id \($0.id.rawValue))" } ?? "")
            } else {
                actor = "network (no API key)"
            }
            return try tx.appendAudit(
                AuditEntry(time: now, actor: actor, method: request.method, route: template, object: object,
                           status: response.status, outcome: outcome),
                keeping: AuditLog.retention)
        }
    }

    // MARK: routes served here

    /// GET /api/v1/warren/audit?since=DURATION|TIME&limit=N: the newest entries, oldest first.
    func auditLog(_ request: AdminRequest, via transport: AdminTransport) async -> AdminResponse {
        do {
            if transport == .network { try await authenticate(request) }
            let now = clock()
            var since: Date?
            if let text = request.query["since"], !text.isEmpty {
                if let seconds = DurationText.parse(text), seconds >= 0 {
                    since = now.addingTimeInterval(-seconds)
                } else if let date = AdminTime.parse(text) {
                    since = date
                } else {
                    throw AdminError(400, "invalid", "since=\(text.debugDescription): expected a duration such as 30m or 24h, or an RFC 3339 time")
                }
            }
            var limit = 100
            if let text = request.query["limit"] {
                guard let value = Int(text), value > 0 else {
                    throw AdminError(400, "invalid", "limit=\(text.debugDescription): expected a positive number")
                }
                limit = min(value, AuditLog.maximumRead)
            }
            let (cutoff, count) = (since, limit)
            let entries = try await store.read { try $0.auditEntries(since: cutoff, limit: count) }
            return ok(entries.map(AuditEntryJSON.init))
        } catch let error as AdminError {
            return Self.errorResponse(error.status, error.code, error.message)
        } catch let error as StoreError {
            return Self.errorResponse(500, error.code.description, error.message)
        } catch {
            return Self.errorResponse(500, "internal", "internal server error")
        }
    }
}

/// The metrics' and the audit log's route label for a request no route matched (templates come from the router).
enum AdminRouteTemplate {
    static let unmatched = "unmatched"
}

/// How an audit entry describes the object and the outcome, without secrets.
enum AdminAuditText {
    /// Fields of a request body or query that name the object acted on.
    static let namingFields = ["id", "name", "user", "newName", "prefix", "key", "authId", "nodeId", "tags", "routes", "node"]

    static func object(parameters: [(String, String)], query: [String: String], body: [UInt8]) -> String {
        var parts = parameters.map { "\($0.0)=\(safe($0.1))" }
        for name in namingFields.sorted() where parameters.first(where: { $0.0 == name }) == nil {
            if let value = query[name] { parts.append("\(name)=\(name == "key" ? maskedKey(value) : safe(value))") }
        }
        if !body.isEmpty, body.count <= 1 << 20,
           let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] {
            for name in namingFields.sorted() where parameters.first(where: { $0.0 == name }) == nil && query[name] == nil {
                guard let value = object[name] else { continue }
                switch value {
                case let text as String: parts.append("\(name)=\(name == "key" ? maskedKey(text) : safe(text))")
                case let number as NSNumber: parts.append("\(name)=\(number)")
                case let list as [Any]: parts.append("\(name)=\(safe(list.map { "\($0)" }.joined(separator: ",")))")
                default: continue
                }
            }
        }
        return parts.joined(separator: " ")
    }

    /// A value as it may be stored: key texts cut to their public prefix, control characters dropped, at most
    /// 100 characters.
    static func safe(_ value: String) -> String {
        let trimmed = value.trimmingCharacters(in: .whitespaces)
        for kind in [SecretKeyText.Kind.api, .preAuth] {
            if let key = SecretKeyText(parsing: trimmed, kind: kind) {
                return "wkey-\(kind.rawValue)-\(key.prefix)-***"
            }
        }
        // headscale's key texts (keys imported from it): "hskey-<kind>-<prefix>-***", or "<prefix>***" for its legacy forms.
        for kind in [SecretKeyText.Kind.api, .preAuth] {
            if let key = PresentedKey(parsing: trimmed, kind: kind) {
                return trimmed.hasPrefix("hskey-") ? "hskey-\(kind.rawValue)-\(key.prefix)-***" : "\(key.prefix)***"
            }
        }
        let printable = String(value.unicodeScalars.filter { $0.value >= 0x20 && $0.value != 0x7F }.map(Character.init))
        return printable.count > 100 ? String(printable.prefix(100)) + "…" : printable
    }

    /// A `key` field: a key text (even a malformed one) keeps only its kind and prefix.
    static func maskedKey(_ value: String) -> String {
        let parts = value.trimmingCharacters(in: .whitespaces).split(separator: "-", omittingEmptySubsequences: false)
        if parts.count >= 4, parts[0] == "wkey" || parts[0] == "hskey" { return safe(parts.prefix(3).joined(separator: "-")) + "-***" }
        return safe(value)
    }

    /// "ok" for a success; else the error's message (Warren's `error`, headscale's `message`, or the text), first
    /// line, at most 200 characters.
    static func outcome(_ response: AdminResponse) -> String {
        if response.status < 400 { return "ok" }
        var message = String(decoding: response.body, as: UTF8.self)
        if let object = try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any] {
            message = (object["error"] as? String) ?? (object["message"] as? String) ?? message
        }
        let line = message.split(separator: "\n").first.map(String.init) ?? ""
        return line.count > 200 ? String(line.prefix(200)) + "…" : line
    }

    /// The public prefix of the API key in an `Authorization: Bearer` header (Warren's form or, for keys imported from
    /// headscale, headscale's).
    static func apiKeyPrefix(_ header: String?) -> String? {
        guard let header, header.lowercased().hasPrefix("bearer ") else { return nil }
        let text = header.dropFirst("bearer ".count).trimmingCharacters(in: .whitespaces)
        return PresentedKey(parsing: text, kind: .api)?.prefix
    }
}
