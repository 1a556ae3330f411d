// The relying party: discovery, the authorization code flow with PKCE, state and nonce, the token exchange, the
// ID token checks, userinfo, and the allowed_* checks. What it hands back is an identity bound to the pending
// login that started the sign-in; approving that login is the caller's business.

import Crypto
import Foundation
import JWTKit
import Logging
import WarrenControlStore

/// A sign-in started: where to send the browser, and the cookie that binds the callback to this browser.
public struct OIDCAuthorizationStart: Sendable, Hashable {
    public var redirectURL: String
    public var state: String
    /// Name and value of the cookie to set on the redirect (HttpOnly, SameSite=Lax, path /oidc/callback).
    public var cookieName: String
    public var cookieValue: String
}

/// Who signed in, for which pending login.
public struct OIDCIdentity: Sendable, Hashable {
    /// The pending interactive login the sign-in was started for.
    public var loginID: String
    public var issuer: String
    public var subject: String
    /// The e-mail (as given; `emailVerified` says whether the provider verified it).
    public var email: String?
    public var emailVerified: Bool
    public var name: String?
    public var preferredUsername: String?
    public var groups: [String]
    /// The `picture` claim (a profile picture URL), if any.
    public var picture: String? = nil
    /// The ID token's `exp`.
    public var tokenExpiry: Date

    /// headscale's provider identifier: the issuer without a trailing "/", "/", the subject without a leading "/".
    public var providerID: String {
        var i = issuer
        while i.hasSuffix("/") { i.removeLast() }
        var s = Substring(subject)
        while s.hasPrefix("/") { s = s.dropFirst() }
        return i + "/" + s
    }
}

public actor OIDCRelyingParty {
    public nonisolated let settings: OIDCSettings
    /// Where started sign-ins are kept (``OIDCSignIn``): the server's store, shared by every instance on it.
    private let store: any ControlStore
    private let http: any OIDCHTTPClient
    private let logger: Logger
    private let now: @Sendable () -> Date
    private let verifier: IDTokenVerifier

    public private(set) var metadata: OIDCProviderMetadata?
    private var keySet = OIDCKeySet(keys: [])
    private var keysFetched: Date?
    /// Discovery in progress (one fetch for everyone who needs it).
    private var discovering: Task<OIDCProviderMetadata, any Error>?

    /// Counters (tests, logs).
    public private(set) var jwksFetches = 0
    /// ID tokens whose `at_hash` was checked against their access token.
    public private(set) var accessTokenHashesChecked = 0

    /// `store`: where started sign-ins are kept until their callback (the server's store, so that any instance on it
    /// can finish a sign-in another started; a store of its own when none is given).
    public init(settings: OIDCSettings, store: any ControlStore = MemoryControlStore(), http: any OIDCHTTPClient = AsyncOIDCHTTPClient(),
                logger: Logger = Logger(label: "warren.control.oidc"), now: @escaping @Sendable () -> Date = { Date() }) {
        self.settings = settings
        self.store = store
        self.http = http
        self.logger = logger
        self.now = now
        verifier = IDTokenVerifier(issuer: settings.issuer, clientID: settings.clientID, clockSkew: settings.clockSkew)
    }

    // MARK: Discovery

    /// Fetches the discovery document and the key set (at start; again later on first use if it failed).
    @discardableResult
    public func discover() async throws(OIDCError) -> OIDCProviderMetadata {
        if let metadata { return metadata }
        let task: Task<OIDCProviderMetadata, any Error>
        if let discovering {
            task = discovering
        } else {
            let settings = settings
            let http = http
            task = Task { try await Self.fetchMetadata(settings: settings, http: http) }
            discovering = task
        }
        let result: OIDCProviderMetadata
        do {
            result = try await task.value
        } catch {
            discovering = nil
            throw (error as? OIDCError) ?? OIDCError(.discovery, "\(error)")
        }
        discovering = nil
        if metadata == nil {
            metadata = result
            try await refreshKeys(force: true)
            logger.info("OIDC provider discovered", metadata: ["issuer": "\(settings.issuer)", "keys": "\(keySet.keys.count)"])
        }
        return result
    }

    private static func fetchMetadata(settings: OIDCSettings, http: any OIDCHTTPClient) async throws(OIDCError) -> OIDCProviderMetadata {
        try settings.validate()
        let url = OIDCProviderMetadata.discoveryURL(issuer: settings.issuer)
        let response = try await http.send(method: "GET", url: url, headers: [("Accept", "application/json")], body: nil)
        guard response.status == 200 else {
            throw OIDCError(.discovery, "GET \(url) answered \(response.status)")
        }
        return try OIDCProviderMetadata.parse(response.body, issuer: settings.issuer)
    }

    /// Fetches the JWKS again, unless it was fetched within `jwksRefreshInterval` (and `force` is false).
    private func refreshKeys(force: Bool) async throws(OIDCError) {
        guard let metadata else { throw OIDCError(.discovery, "the provider has not been discovered") }
        if !force, let keysFetched, now().timeIntervalSince(keysFetched) < Double(settings.jwksRefreshInterval.components.seconds) {
            return
        }
        keysFetched = now()
        jwksFetches += 1
        let response = try await http.send(method: "GET", url: metadata.jwksURI, headers: [("Accept", "application/json")], body: nil)
        guard response.status == 200 else { throw OIDCError(.discovery, "GET \(metadata.jwksURI) answered \(response.status)") }
        keySet = try OIDCKeySet.parse(response.body, from: metadata.jwksURI)
    }

    // MARK: The authorization request

    /// Starts a sign-in for the pending login `loginID`: a fresh state, nonce and PKCE verifier, kept in the store
    /// until the callback or `loginLifetime` (expired ones are pruned here, and the oldest beyond
    /// `maximumPendingLogins`).
    public func begin(loginID: String) async throws(OIDCError) -> OIDCAuthorizationStart {
        let metadata = try await discover()
        let state = Self.random()
        let nonce = Self.random()
        let binding = Self.random()
        var verifier: String?
        var query: [(String, String)] = [
            ("response_type", "code"), ("client_id", settings.clientID), ("redirect_uri", settings.redirectURL),
            ("scope", settings.scopes.joined(separator: " ")), ("state", state), ("nonce", nonce),
        ]
        if let method = settings.pkce {
            let v = Self.random(bytes: 48)
            verifier = v
            let challenge = method == .s256 ? Base64URL.encode(SHA256.hash(data: Array(v.utf8))) : v
            query += [("code_challenge", challenge), ("code_challenge_method", method.rawValue)]
        }
        let reserved = Set(query.map(\.0))
        for (key, value) in settings.extraParams.sorted(by: { $0.key < $1.key }) where !reserved.contains(key) {
            query.append((key, value))
        }
        let created = now()
        let record = OIDCSignIn(id: Self.signInID(state: state), loginID: loginID, nonce: nonce, codeVerifier: verifier,
                                browserBinding: Array(SHA256.hash(data: Array(binding.utf8))), created: created)
        let cutoff = created.addingTimeInterval(-Double(settings.loginLifetime.components.seconds))
        let keeping = max(0, settings.maximumPendingLogins - 1)
        do {
            try await store.transaction { tx in
                try tx.pruneOIDCSignIns(createdBefore: cutoff, keeping: keeping)
                try tx.insert(record)
            }
        } catch {
            // The store's error (paths, statements) goes to the log, not to the person's page.
            logger.error("OIDC sign-in not recorded in the store", metadata: ["login": "\(loginID)", "error": "\(error)"])
            throw OIDCError(.storage, "the server could not record the sign-in; try again later")
        }
        let separator = metadata.authorizationEndpoint.contains("?") ? "&" : "?"
        return OIDCAuthorizationStart(redirectURL: metadata.authorizationEndpoint + separator + FormEncoding.encode(query),
                                      state: state, cookieName: Self.cookieName(state: state), cookieValue: binding)
    }

    /// The browser-binding cookie's name for a state (one per sign-in, so that two at once in a browser do not clash).
    public nonisolated static func cookieName(state: String) -> String {
        "warren_oidc_" + Base64URL.encode(SHA256.hash(data: Array(state.utf8)).prefix(9))
    }

    /// The store's key for a sign-in: the SHA-256 of its state (a database dump holds no usable state).
    public nonisolated static func signInID(state: String) -> String {
        Base64URL.encode(SHA256.hash(data: Array(state.utf8)))
    }

    /// Sign-ins started and not finished, as the store counts them (tests).
    public var startedCount: Int {
        get async throws { try await store.read { try $0.oidcSignInCount() } }
    }

    // MARK: The callback

    /// Finishes a sign-in from the callback's query and the browser's cookie. The state is used up whatever the
    /// outcome. Throws ``OIDCError`` for every refusal.
    public func complete(query: [String: String], cookie: String?) async throws(OIDCError) -> OIDCIdentity {
        guard let state = query["state"], !state.isEmpty else {
            throw OIDCError(.badCallback, "the callback carries no state; start the sign-in again from the device")
        }
        // Taken from the store in a write transaction: used once, whatever the outcome, on whichever instance.
        let taken: OIDCSignIn?
        do {
            let id = Self.signInID(state: state)
            taken = try await store.transaction { try $0.takeOIDCSignIn(id: id) }
        } catch {
            logger.error("OIDC sign-in not read from the store", metadata: ["error": "\(error)"])
            throw OIDCError(.storage, "the server could not look up the sign-in; try again later")
        }
        guard let entry = taken else {
            throw OIDCError(.unknownState, "this sign-in is unknown or was already used; start it again from the device")
        }
        guard now().timeIntervalSince(entry.created) <= Double(settings.loginLifetime.components.seconds) else {
            throw OIDCError(.expiredState, "this sign-in took too long and expired; start it again from the device")
        }
        guard let cookie, IDTokenVerifier.constantTimeEqual(
            Base64URL.encode(SHA256.hash(data: Array(cookie.utf8))), Base64URL.encode(entry.browserBinding)) else {
            throw OIDCError(.browserMismatch, "this sign-in was started in another browser (its cookie is missing); "
                            + "open the device's login link in this browser")
        }
        if let error = query["error"] {
            let detail = query["error_description"].map { ": \($0)" } ?? ""
            throw OIDCError(.badCallback, "the identity provider refused the sign-in (\(error)\(detail))")
        }
        guard let code = query["code"], !code.isEmpty else {
            throw OIDCError(.badCallback, "the callback carries no authorization code")
        }
        let metadata = try await discover()
        let tokens = try await exchange(code: code, verifier: entry.codeVerifier, metadata: metadata)
        let claims = try await verifyIDToken(tokens.idToken, nonce: entry.nonce, metadata: metadata, accessToken: tokens.accessToken)
        let groups = Self.groups(in: IDTokenVerifier.payload(of: tokens.idToken), claim: settings.groupsClaim)
        var identity = OIDCIdentity(loginID: entry.loginID, issuer: claims.iss ?? settings.issuer, subject: claims.sub ?? "",
                                    email: claims.email, emailVerified: claims.emailVerified ?? false, name: claims.name,
                                    preferredUsername: claims.preferredUsername, groups: groups ?? [],
                                    tokenExpiry: Date(timeIntervalSince1970: claims.exp ?? 0))
        identity.picture = claims.picture
        if let accessToken = tokens.accessToken, let endpoint = metadata.userinfoEndpoint {
            await mergeUserinfo(into: &identity, endpoint: endpoint, accessToken: accessToken)
        }
        try authorize(identity)
        return identity
    }

    struct TokenResponse: Decodable {
        var idToken: String?
        var accessToken: String?
        var tokenType: String?
        var error: String?
        var errorDescription: String?
        enum CodingKeys: String, CodingKey {
            case idToken = "id_token", accessToken = "access_token", tokenType = "token_type", error
            case errorDescription = "error_description"
        }
    }

    private func exchange(code: String, verifier: String?, metadata: OIDCProviderMetadata) async throws(OIDCError) -> (idToken: String, accessToken: String?) {
        var form: [(String, String)] = [("grant_type", "authorization_code"), ("code", code), ("redirect_uri", settings.redirectURL)]
        if let verifier { form.append(("code_verifier", verifier)) }
        var headers: [(name: String, value: String)] = [("Content-Type", "application/x-www-form-urlencoded"), ("Accept", "application/json")]
        if metadata.usesClientSecretPost {
            form += [("client_id", settings.clientID), ("client_secret", settings.clientSecret)]
        } else {
            // RFC 6749 §2.3.1: both halves form-encoded before base64.
            let pair = FormEncoding.escape(settings.clientID) + ":" + FormEncoding.escape(settings.clientSecret)
            headers.append(("Authorization", "Basic " + Data(pair.utf8).base64EncodedString()))
        }
        let response = try await http.send(method: "POST", url: metadata.tokenEndpoint, headers: headers,
                                           body: Array(FormEncoding.encode(form).utf8))
        let parsed = try? JSONDecoder().decode(TokenResponse.self, from: Data(response.body))
        guard response.status == 200 else {
            let reason = parsed?.error.map { e in e + (parsed?.errorDescription.map { ": " + $0 } ?? "") } ?? "status \(response.status)"
            throw OIDCError(.tokenExchange, "the identity provider did not accept the authorization code (\(reason))")
        }
        guard let parsed else { throw OIDCError(.tokenExchange, "the token endpoint's answer is not JSON") }
        guard let idToken = parsed.idToken, !idToken.isEmpty else {
            throw OIDCError(.tokenExchange, "the token endpoint's answer has no ID token (is \"openid\" in oidc.scope?)")
        }
        return (idToken, parsed.accessToken)
    }

    /// Signature (the key by `kid`, the JWKS fetched again once for an unknown one), then the claims; with the
    /// access token, its `at_hash` when the token carries one (Core §3.1.3.6).
    public func verifyIDToken(_ token: String, nonce: String, metadata: OIDCProviderMetadata,
                              accessToken: String? = nil) async throws(OIDCError) -> OIDCClaims {
        let header = try IDTokenVerifier.header(of: token)
        guard let alg = header.alg, metadata.acceptedAlgorithms.contains(alg) else {
            throw OIDCError(.unsupportedAlgorithm, "the ID token is signed with \((header.alg ?? "no algorithm").debugDescription); "
                            + "accepted: \(metadata.acceptedAlgorithms.sorted().joined(separator: ", "))")
        }
        var key = keySet.key(for: header.kid)
        if key == nil {
            // Keys rotate: one fetch of the JWKS, at most every jwksRefreshInterval.
            try await refreshKeys(force: false)
            key = keySet.key(for: header.kid)
        }
        guard let key else {
            throw OIDCError(.unknownKey, "the ID token's key \((header.kid ?? "(none)").debugDescription) is not in the provider's key set")
        }
        let claims = try await IDTokenVerifier.verifySignature(token, key: key, algorithm: alg)
        try verifier.check(claims, nonce: nonce, now: now())
        if let atHash = claims.atHash, let accessToken {
            try IDTokenVerifier.checkAccessTokenHash(atHash, accessToken: accessToken, algorithm: alg)
            accessTokenHashesChecked += 1
        }
        return claims
    }

    /// Fills in what the userinfo endpoint knows (its `sub` must be the token's); a failure is logged and the ID
    /// token's claims are used alone, as headscale does.
    private func mergeUserinfo(into identity: inout OIDCIdentity, endpoint: String, accessToken: String) async {
        do {
            let response = try await http.send(method: "GET", url: endpoint,
                                               headers: [("Authorization", "Bearer " + accessToken), ("Accept", "application/json")], body: nil)
            guard response.status == 200 else {
                logger.notice("OIDC userinfo refused; using the ID token's claims", metadata: ["status": "\(response.status)"])
                return
            }
            let info = try JSONDecoder().decode(OIDCClaims.self, from: Data(response.body))
            let raw = (try? JSONSerialization.jsonObject(with: Data(response.body))) as? [String: Any]
            guard info.sub == identity.subject else {
                logger.warning("OIDC userinfo is for another subject; ignored", metadata: ["sub": "\(info.sub ?? "")"])
                return
            }
            if let email = info.email, !email.isEmpty {
                identity.email = email
                identity.emailVerified = info.emailVerified ?? false
            } else if let verified = info.emailVerified {
                identity.emailVerified = identity.emailVerified || verified
            }
            if let name = info.name, !name.isEmpty { identity.name = name }
            if let user = info.preferredUsername, !user.isEmpty { identity.preferredUsername = user }
            if let groups = Self.groups(in: raw, claim: settings.groupsClaim) { identity.groups = groups }
            if let picture = info.picture, !picture.isEmpty { identity.picture = picture }
        } catch {
            logger.notice("OIDC userinfo failed; using the ID token's claims", metadata: ["error": "\(error)"])
        }
    }

    // MARK: allowed_*

    /// headscale's checks: allowed_groups always; allowed_domains and allowed_users on a trusted (verified, or
    /// not required to be) e-mail only.
    public nonisolated func authorize(_ identity: OIDCIdentity) throws(OIDCError) {
        if !settings.allowedGroups.isEmpty, !settings.allowedGroups.contains(where: identity.groups.contains) {
            throw OIDCError(.notAllowed, "\(identity.email ?? identity.subject) is not in any of the groups allowed here")
        }
        let trusted = !settings.emailVerifiedRequired || identity.emailVerified
        let emailTests = !settings.allowedDomains.isEmpty || !settings.allowedUsers.isEmpty
        if emailTests, !trusted {
            throw OIDCError(.notAllowed, "the identity provider has not verified the e-mail address \((identity.email ?? "").debugDescription)")
        }
        let email = identity.email ?? ""
        if !settings.allowedDomains.isEmpty {
            let domain = email.lastIndex(of: "@").map { String(email[email.index(after: $0)...]) }
            guard let domain, settings.allowedDomains.contains(domain) else {
                throw OIDCError(.notAllowed, "the e-mail domain of \(email.debugDescription) is not allowed here")
            }
        }
        if !settings.allowedUsers.isEmpty, !settings.allowedUsers.contains(email) {
            throw OIDCError(.notAllowed, "\(email.debugDescription) is not among the users allowed here")
        }
    }

    // MARK: Helpers

    /// The groups in a token's or userinfo's claims: the claim named `claim` (`groups` unless configured), a list of
    /// strings, one string, or an object whose keys are the groups (as some providers give roles); nil when absent.
    static func groups(in claims: [String: Any]?, claim: String) -> [String]? {
        guard let value = claims?[claim], !(value is NSNull) else { return nil }
        if let list = value as? [Any] { return list.compactMap { $0 as? String } }
        if let one = value as? String { return [one] }
        if let object = value as? [String: Any] { return object.keys.sorted() }
        return []
    }

    static func random(bytes: Int = 32) -> String {
        var generator = SystemRandomNumberGenerator()
        return Base64URL.encode((0..<bytes).map { _ in UInt8.random(in: 0...255, using: &generator) })
    }
}

/// application/x-www-form-urlencoded, as RFC 6749 and the WHATWG URL standard write it.
public enum FormEncoding {
    static let unreserved = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~".utf8)

    public static func escape(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            if unreserved.contains(byte) {
                out.append(Character(UnicodeScalar(byte)))
            } else {
                out += String(format: "%%%02X", byte)
            }
        }
        return out
    }

    public static func encode(_ pairs: [(String, String)]) -> String {
        pairs.map { escape($0.0) + "=" + escape($0.1) }.joined(separator: "&")
    }

    /// Parses a query string or form body ("+" is a space); repeated keys: the first wins. nil for bad escapes.
    public static func decode(_ text: String) -> [String: String]? {
        var out: [String: String] = [:]
        for part in text.split(separator: "&", omittingEmptySubsequences: true) {
            let pieces = part.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let key = unescape(pieces[0]), let value = unescape(pieces.count > 1 ? pieces[1] : "") else { return nil }
            if out[key] == nil { out[key] = value }
        }
        return out
    }

    static func unescape(_ text: Substring) -> String? {
        text.replacingOccurrences(of: "+", with: " ").removingPercentEncoding
    }
}
