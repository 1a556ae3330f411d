// The two pages of a sign-in on the control server: `/register/<id>` sends the browser to the provider, and
// `/oidc/callback` checks everything, finds or creates the user, and approves the waiting device. The engine is
// reached through hooks, so that this module stays below the control server in the layering.

import Foundation
import Logging
import WarrenControlStore

/// An HTTP answer (the control listener turns it into its own response type).
public struct OIDCPage: Sendable {
    public var status: Int
    public var contentType: String
    public var body: String
    public var headers: [String: String]

    public init(status: Int, contentType: String = "text/html; charset=utf-8", body: String, headers: [String: String] = [:]) {
        self.status = status
        self.contentType = contentType
        self.body = body
        self.headers = headers
    }
}

/// The node a sign-in admitted.
public struct OIDCApprovedNode: Sendable, Hashable {
    public var id: Int64
    /// Its name, for the page.
    public var name: String

    public init(id: Int64, name: String) {
        self.id = id
        self.name = name
    }
}

/// What the flow needs from the control server.
public struct OIDCLoginHooks: Sendable {
    /// Whether an interactive login with this id is waiting.
    public var isWaiting: @Sendable (String) async -> Bool
    /// Approves the waiting login for the user (through the engine's approval path), with the node key expiry
    /// to set (nil: the server's default). Returns the node.
    public var approve: @Sendable (_ loginID: String, _ user: User, _ keyExpiry: NodeKeyExpiry) async throws -> OIDCApprovedNode

    public init(isWaiting: @escaping @Sendable (String) async -> Bool,
                approve: @escaping @Sendable (String, User, NodeKeyExpiry) async throws -> OIDCApprovedNode) {
        self.isWaiting = isWaiting
        self.approve = approve
    }
}

/// The key expiry of a node that signs in.
public enum NodeKeyExpiry: Sendable, Hashable {
    /// The server's node_key_expiry.
    case serverDefault
    /// No expiry.
    case never
    case at(Date)
}

public struct OIDCLoginFlow: Sendable {
    public enum ExpiryRule: Sendable, Hashable {
        /// node_key_expiry, as for every other login.
        case serverDefault
        /// `oidc.expiry`: this long after the sign-in (0: never).
        case after(Duration)
        /// `oidc.use_expiry_from_token`: the ID token's `exp`.
        case fromToken
    }

    public let relyingParty: OIDCRelyingParty
    let store: any ControlStore
    let hooks: OIDCLoginHooks
    let expiry: ExpiryRule
    let logger: Logger
    let now: @Sendable () -> Date

    public static let callbackPath = "/oidc/callback"

    public init(relyingParty: OIDCRelyingParty, store: any ControlStore, hooks: OIDCLoginHooks, expiry: ExpiryRule,
                logger: Logger = Logger(label: "warren.control.oidc"), now: @escaping @Sendable () -> Date = { Date() }) {
        self.relyingParty = relyingParty
        self.store = store
        self.hooks = hooks
        self.expiry = expiry
        self.logger = logger
        self.now = now
    }

    /// GET /register/<id>: a redirect to the provider for a waiting login; nil when no login waits with this id
    /// (the server answers its own 404).
    public func loginPage(id: String) async -> OIDCPage? {
        guard await hooks.isWaiting(id) else { return nil }
        do {
            let start = try await relyingParty.begin(loginID: id)
            let secure = relyingParty.settings.redirectURL.lowercased().hasPrefix("https:") ? "; Secure" : ""
            let cookie = "\(start.cookieName)=\(start.cookieValue); Path=\(Self.callbackPath); Max-Age="
                + "\(relyingParty.settings.loginLifetime.components.seconds); HttpOnly; SameSite=Lax\(secure)"
            logger.info("OIDC sign-in started", metadata: ["login": "\(id)"])
            return OIDCPage(status: 302, body: Self.page(title: "Sign in", text: "Continue at your identity provider."),
                            headers: ["Location": start.redirectURL, "Set-Cookie": cookie, "Cache-Control": "no-store"])
        } catch {
            logger.error("OIDC sign-in cannot start", metadata: ["login": "\(id)", "error": "\(error)"])
            return OIDCPage(status: 502, body: Self.page(title: "Sign-in unavailable",
                                                           text: "The identity provider cannot be reached right now (\(error)). Try again later, "
                                                               + "or ask an administrator to approve this device."))
        }
    }

    /// GET /oidc/callback?code=...&state=...: the whole check, then the approval. Every refusal is a page that
    /// says why and a log line; the device's login stays pending (it can be retried from its link until it expires).
    public func callback(query: String?, cookieHeader: String?) async -> OIDCPage {
        guard let fields = FormEncoding.decode(query ?? "") else {
            return refusal(OIDCError(.badCallback, "the callback's query is not well-formed"), login: nil)
        }
        let state = fields["state"] ?? ""
        let cookie = Self.cookie(named: OIDCRelyingParty.cookieName(state: state), in: cookieHeader)
        let identity: OIDCIdentity
        do {
            identity = try await relyingParty.complete(query: fields, cookie: cookie)
        } catch {
            return refusal(error, login: nil)
        }
        guard await hooks.isWaiting(identity.loginID) else {
            return refusal(OIDCError(.expiredState, "the device's login is no longer waiting (it expired, or was approved or "
                                     + "rejected meanwhile); start it again from the device"), login: identity.loginID)
        }
        let match: OIDCUsers.Match
        do {
            match = try await OIDCUsers.matchOrCreate(identity, emailVerifiedRequired: relyingParty.settings.emailVerifiedRequired,
                                                      store: store, now: now())
        } catch {
            logger.error("OIDC sign-in: user not stored", metadata: ["login": "\(identity.loginID)", "error": "\(error)"])
            return OIDCPage(status: 500, body: Self.page(title: "Sign-in failed", text: "The user could not be stored; try again later."))
        }
        let keyExpiry: NodeKeyExpiry
        switch expiry {
        case .serverDefault: keyExpiry = .serverDefault
        case .fromToken: keyExpiry = .at(identity.tokenExpiry)
        case .after(let duration):
            keyExpiry = duration == .zero ? .never : .at(now().addingTimeInterval(Double(duration.components.seconds)))
        }
        let node: OIDCApprovedNode
        do {
            node = try await hooks.approve(identity.loginID, match.user, keyExpiry)
        } catch {
            logger.error("OIDC sign-in: approval failed", metadata: ["login": "\(identity.loginID)", "error": "\(error)"])
            return OIDCPage(status: 409, body: Self.page(title: "Sign-in failed", text: "The device could not be approved: \(error)"))
        }
        let nodeName = node.name
        do {
            try await OIDCUsers.recordSignInMethod(nodeID: node.id, store: store)
        } catch {
            // The node is in; only its recorded method stays the engine's.
            logger.warning("OIDC sign-in: register method not recorded", metadata: ["node": "\(node.id)", "error": "\(error)"])
        }
        logger.notice("OIDC sign-in approved", metadata: [
            "login": "\(identity.loginID)", "user": "\(match.user.name)", "matched": "\(match.how.rawValue)",
            "subject": "\(identity.providerID)", "node": "\(nodeName)",
        ])
        return OIDCPage(status: 200, body: Self.page(
            title: "Signed in", text: "Signed in as \(match.user.name). The device \(nodeName) is joining the tailnet; you can close this page."),
            headers: ["Cache-Control": "no-store"])
    }

    private func refusal(_ error: any Error, login: String?) -> OIDCPage {
        let oidc = (error as? OIDCError) ?? OIDCError(.badCallback, "\(error)")
        logger.notice("OIDC sign-in refused", metadata: [
            "reason": "\(oidc.kind.rawValue)", "detail": "\(oidc.message)", "login": "\(login ?? "-")",
        ])
        return OIDCPage(status: oidc.httpStatus, body: Self.page(title: "Sign-in refused", text: oidc.message),
                        headers: ["Cache-Control": "no-store"])
    }

    /// One cookie's value from a Cookie header.
    static func cookie(named name: String, in header: String?) -> String? {
        guard let header else { return nil }
        for part in header.split(separator: ";") {
            let pair = part.trimmingCharacters(in: .whitespaces).split(separator: "=", maxSplits: 1)
            if pair.count == 2, pair[0] == name { return String(pair[1]) }
        }
        return nil
    }

    static func page(title: String, text: String) -> String {
        """
        <!DOCTYPE html>
        <html><head><meta charset="utf-8"><title>Warren: \(escape(title))</title></head>
        <body><h1>\(escape(title))</h1><p>\(escape(text))</p></body></html>

        """
    }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}
