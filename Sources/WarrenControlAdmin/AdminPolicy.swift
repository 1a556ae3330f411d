// Warren's policy routes of the admin API: GET/PUT /api/v1/warren/policy and GET /api/v1/warren/policy/history
// (headscale's GET/PUT /api/v1/policy and POST /api/v1/policy/check, in HeadscaleAPI.swift, use the same operations).
//
// The server runs in one of two policy modes, as headscale's `policy.mode` does:
// - database (the default): the policy in force is the newest version in the store; `policy set` (PUT)
//   checks a new text against the live tailnet, appends it as a new version and puts it in force.
// - file: `serve` was started with `policy_file`; that file is the policy, and PUT is refused (edit the
//   file and send the server SIGHUP, or drop `policy_file` to manage the policy through the API).

import Foundation
import WarrenControlStore

/// A policy text refused: it does not parse or validate, or its `tests`/`sshTests` fail. One message per
/// problem, each starting "LINE:COLUMN: " where the place is known.
public struct AdminPolicyRejection: Error, Sendable, Equatable {
    public var messages: [String]
    public init(_ messages: [String]) { self.messages = messages }
}

/// What the server does with policies; the admin API itself only stores versions.
public struct AdminPolicyHooks: Sendable {
    public enum Mode: Sendable, Equatable {
        case database
        /// The policy comes from this file (`policy_file`).
        case file(path: String)
    }

    public var mode: Mode
    /// Parses, validates and runs the tests of a text against the live tailnet; throws ``AdminPolicyRejection``.
    public var check: @Sendable (String) async throws -> Void
    /// Puts a text (already checked, and stored as the version given) in force; returns how many nodes' results
    /// changed. An older version than the one in force changes nothing.
    public var apply: @Sendable (String, Int64) async throws -> Int
    /// The text in force in file mode.
    public var fileText: @Sendable () async -> String?

    public init(mode: Mode = .database, check: @escaping @Sendable (String) async throws -> Void = { _ in },
                apply: @escaping @Sendable (String, Int64) async throws -> Int = { _, _ in 0 },
                fileText: @escaping @Sendable () async -> String? = { nil }) {
        self.mode = mode
        self.check = check
        self.apply = apply
        self.fileText = fileText
    }
}

public struct SetPolicyBody: Codable, Sendable {
    public var policy: String
    public init(policy: String) { self.policy = policy }
}

/// The policy in force (GET) or just set (PUT).
public struct PolicyJSON: Codable, Sendable, Equatable {
    /// The HuJSON text; empty when no policy was ever set (everything is allowed).
    public var policy: String
    /// "database", "file" or "none".
    public var source: String
    /// The store's version number (database mode).
    public var version: Int64?
    public var updatedAt: String?
    /// The file (file mode).
    public var path: String?
    /// How many nodes received new results (PUT).
    public var nodesChanged: Int?
}

public struct PolicyVersionJSON: Codable, Sendable, Equatable {
    public var version: Int64
    public var updatedAt: String
    public var policy: String

    init(_ v: PolicyVersion) {
        version = v.version
        updatedAt = AdminTime.format(v.created)
        policy = v.text
    }
}

extension AdminAPI {
    func getPolicy() async throws -> AdminResponse {
        if case .file(let path) = hooks.policy.mode {
            guard let text = await hooks.policy.fileText() else {
                throw AdminError(500, "internal", "cannot read the policy file \(path)")
            }
            return ok(PolicyJSON(policy: text, source: "file", path: path))
        }
        guard let current = try await store.read({ try $0.currentPolicy() }) else {
            return ok(PolicyJSON(policy: "", source: "none"))
        }
        return ok(PolicyJSON(policy: current.text, source: "database", version: current.version,
                             updatedAt: AdminTime.format(current.created)))
    }

    func setPolicy(_ body: SetPolicyBody) async throws -> AdminResponse {
        let (version, changed) = try await setPolicyRecord(body.policy)
        return ok(PolicyJSON(policy: version.text, source: "database", version: version.version,
                             updatedAt: AdminTime.format(version.created), nodesChanged: changed))
    }

    /// Checks a text against the live tailnet; a refusal is a 400 `AdminError` listing the problems.
    func checkPolicyText(_ text: String) async throws {
        do {
            try await hooks.policy.check(text)
        } catch let rejection as AdminPolicyRejection {
            throw AdminError(400, "invalid policy", "policy refused; the previous policy stays in force:\n"
                                 + rejection.messages.joined(separator: "\n"))
        }
    }

    /// Checks a text, stores it as a new version and puts it in force; returns the version and how many nodes'
    /// results changed. Refused (409) in file mode.
    func setPolicyRecord(_ text: String) async throws -> (PolicyVersion, Int) {
        if case .file(let path) = hooks.policy.mode {
            throw AdminError(409, "policy file mode",
                             "the policy comes from policy_file \(path) (file mode): edit that file and send the server SIGHUP (it re-reads it), "
                                 + "or remove policy_file from the configuration to manage the policy with `policy set`")
        }
        try await checkPolicyText(text)
        let now = clock()
        let version = try await store.transaction { try $0.appendPolicy(text: text, created: now) }
        let changed = try await hooks.policy.apply(text, version.version)
        return (version, changed)
    }

    func policyHistory() async throws -> AdminResponse {
        ok(try await store.read { try $0.policyHistory() }.map(PolicyVersionJSON.init))
    }
}
