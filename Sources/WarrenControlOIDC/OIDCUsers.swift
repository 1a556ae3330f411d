// The user a sign-in belongs to: found by provider identifier (issuer + subject), else by a verified e-mail of a
// user that no identity provider has claimed yet, else created. Its e-mail, display name and provider identifier
// follow the provider on every sign-in.

import Foundation
import WarrenControlStore

public enum OIDCUsers {
    /// The outcome, for the log and the page.
    public struct Match: Sendable, Hashable {
        public var user: User
        public enum How: String, Sendable, Hashable {
            case providerID = "provider identifier"
            case email = "e-mail address"
            case created
        }
        public var how: How
    }

    /// Finds or creates the user in one transaction. `emailVerifiedRequired`: an unverified e-mail is neither
    /// stored nor used to find a user (headscale stores it only when verified or not required).
    public static func matchOrCreate(_ identity: OIDCIdentity, emailVerifiedRequired: Bool, store: any ControlStore,
                                     now: Date) async throws -> Match {
        try await store.transaction { tx in
            try matchOrCreate(identity, emailVerifiedRequired: emailVerifiedRequired, in: tx, now: now)
        }
    }

    public static func matchOrCreate(_ identity: OIDCIdentity, emailVerifiedRequired: Bool, in tx: any StoreTransaction,
                                     now: Date) throws -> Match {
        let providerID = identity.providerID
        let trustedEmail: String? = {
            guard let email = identity.email, !email.isEmpty, identity.emailVerified || !emailVerifiedRequired,
                  (try? StoreRules.validateEmail(email)) != nil else { return nil }
            return email
        }()
        let users = try tx.users()
        var how = Match.How.providerID
        var user = users.first { $0.providerID == providerID }
        // A local user with this verified address (`users create NAME --email ...`) is linked, once: a user that
        // another provider identity already owns is never taken over.
        if user == nil, let trustedEmail, identity.emailVerified {
            user = users.first { $0.providerID == nil && $0.email.caseInsensitiveCompare(trustedEmail) == .orderedSame }
            how = .email
        }
        // headscale keeps the provider's picture too; one that is not an http(s) URL is left out, not refused.
        let picture = identity.picture.flatMap { (try? StoreRules.validatePictureURL($0)) != nil ? $0 : nil }
        if var existing = user {
            if let picture { existing.pictureURL = picture }
            // The groups of this sign-in replace the last one's (a group the provider dropped is gone).
            existing.providerGroups = identity.groups
            existing.providerID = providerID
            existing.provider = "oidc"
            if let trustedEmail { existing.email = trustedEmail }
            if let name = identity.name, !name.isEmpty { existing.displayName = name }
            try tx.update(existing)
            return Match(user: existing, how: how)
        }
        let taken = Set(users.map { $0.name.lowercased() })
        let name = uniqueName(for: identity, trustedEmail: trustedEmail, taken: taken)
        let created = try tx.insert(User(id: UserID(0), name: name, displayName: identity.name ?? "", created: now,
                                         email: trustedEmail ?? "", providerID: providerID, provider: "oidc",
                                         pictureURL: picture ?? "", providerGroups: identity.groups))
        return Match(user: created, how: .created)
    }

    /// Records that the node came in through a sign-in (register method "oidc", as headscale's RegisterMethodOIDC).
    public static func recordSignInMethod(nodeID: Int64, store: any ControlStore) async throws {
        try await store.transaction { tx in
            guard var node = try tx.node(id: NodeID(nodeID)), node.registerMethod != .oidc else { return }
            node.registerMethod = .oidc
            try tx.update(node)
        }
    }

    /// The new user's name: preferred_username, else the e-mail address, else the subject, made valid and unique
    /// ("alice", then "alice-2", ...).
    static func uniqueName(for identity: OIDCIdentity, trustedEmail: String?, taken: Set<String>) -> String {
        var candidates: [String] = []
        if let username = identity.preferredUsername { candidates.append(username) }
        if let trustedEmail { candidates.append(trustedEmail) }
        candidates.append(identity.subject)
        var base = "oidc-user"
        for candidate in candidates {
            if (try? StoreRules.validateUserName(candidate)) != nil { base = candidate; break }
            let cleaned = sanitize(candidate)
            if (try? StoreRules.validateUserName(cleaned)) != nil { base = cleaned; break }
        }
        if !taken.contains(base.lowercased()) { return base }
        var n = 2
        while taken.contains("\(base)-\(n)".lowercased()) { n += 1 }
        return "\(base)-\(n)"
    }

    /// Letters, digits, "-", ".", "_" kept; anything else becomes "-"; a leading non-letter gets "u" before it.
    static func sanitize(_ text: String) -> String {
        var out = String(text.unicodeScalars.prefix(200).map { s -> Character in
            let ok = s.properties.isAlphabetic || ("0"..."9").contains(s) || s == "-" || s == "." || s == "_"
            return ok ? Character(s) : "-"
        })
        if out.isEmpty { out = "oidc-user" }
        if let first = out.unicodeScalars.first, !first.properties.isAlphabetic { out = "u" + out }
        return out
    }
}
