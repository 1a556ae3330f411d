// The relying party's settings: headscale's `oidc:` keys, plus the bounds Warren adds (clock skew, login lifetime).

import Foundation

public struct OIDCSettings: Sendable, Hashable {
    public enum PKCEMethod: String, Sendable, Hashable {
        /// The challenge is the verifier's SHA-256, base64url (RFC 7636 §4.2); the default.
        case s256 = "S256"
        /// The challenge is the verifier itself (only for providers that cannot do S256).
        case plain
    }

    /// The provider's issuer URL: the discovery document's `issuer` and every ID token's `iss` must equal it.
    public var issuer: String
    public var clientID: String
    public var clientSecret: String
    /// Where the provider sends the browser back: `<server_url>/oidc/callback`.
    public var redirectURL: String
    /// headscale's default: openid, profile, email.
    public var scopes: [String] = ["openid", "profile", "email"]
    /// Sent as they are to the authorization endpoint (such as `domain_hint`).
    public var extraParams: [String: String] = [:]
    /// Only e-mail addresses in these domains (the part after the last "@").
    public var allowedDomains: [String] = []
    /// Only these e-mail addresses.
    public var allowedUsers: [String] = []
    /// Only people in at least one of these groups (the groups claim).
    public var allowedGroups: [String] = []
    /// The claim that lists a person's groups (ID token, else userinfo): `groups`, as headscale reads it, unless
    /// configured (`oidc.groups_claim`). Read by allowed_groups and stored with the user for the policy.
    public var groupsClaim = "groups"
    /// An unverified e-mail is neither stored nor accepted by allowed_domains/allowed_users (headscale's default).
    public var emailVerifiedRequired = true
    /// nil: no PKCE (headscale's default is off; Warren's configuration turns it on unless told otherwise).
    public var pkce: PKCEMethod? = .s256
    /// How far the provider's clock and this one may disagree for `exp`, `iat` and `nbf`.
    public var clockSkew: Duration = .seconds(60)
    /// How long a started sign-in (its state, nonce and verifier) is kept.
    public var loginLifetime: Duration = .seconds(15 * 60)
    /// At most this many sign-ins started and not finished; the oldest is forgotten beyond it.
    public var maximumPendingLogins = 1024
    /// The JWKS is fetched again for an unknown `kid` at most this often.
    public var jwksRefreshInterval: Duration = .seconds(10)

    public init(issuer: String, clientID: String, clientSecret: String, redirectURL: String) {
        self.issuer = issuer
        self.clientID = clientID
        self.clientSecret = clientSecret
        self.redirectURL = redirectURL
    }

    /// Refuses settings that cannot work, naming the key.
    public func validate() throws(OIDCError) {
        guard let url = URL(string: issuer), let scheme = url.scheme?.lowercased(), scheme == "https" || scheme == "http",
              url.host?.isEmpty == false else {
            throw OIDCError(.discovery, "oidc.issuer must be an http(s) URL, got \(issuer.debugDescription)")
        }
        guard !clientID.isEmpty else { throw OIDCError(.discovery, "oidc.client_id is required with oidc.issuer") }
        guard scopes.contains("openid") else {
            throw OIDCError(.discovery, "oidc.scope must include \"openid\" (got \(scopes.joined(separator: " ")))")
        }
        guard URL(string: redirectURL)?.host != nil else {
            throw OIDCError(.discovery, "the callback URL \(redirectURL.debugDescription) is not a URL (check server_url)")
        }
    }
}
