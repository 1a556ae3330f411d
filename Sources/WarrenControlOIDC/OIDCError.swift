// What can go wrong in a sign-in, as a value: the callback turns it into a page (with its HTTP status) and a log line.

/// A sign-in that failed or was refused. `description` is safe to show to the person signing in: it names the
/// check that failed, never a secret (client secret, code, token).
public struct OIDCError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Kind: String, Sendable, Hashable {
        /// The discovery document could not be fetched or is unusable (issuer mismatch, missing endpoints).
        case discovery
        /// The provider could not be reached, answered too slowly, or sent more than the size bound.
        case network
        /// The callback carries no code or state, or the provider sent an error instead of a code.
        case badCallback
        /// The state is unknown: never issued, already used (a replay), or forgotten after it expired.
        case unknownState
        /// The state was issued but its login took longer than the login lifetime.
        case expiredState
        /// The callback came from another browser than the one that started the login (the state cookie is missing
        /// or does not match).
        case browserMismatch
        /// The token endpoint refused the code (wrong code, PKCE verifier mismatch, client authentication) or
        /// answered with something other than a token response.
        case tokenExchange
        /// The ID token is not a well-formed signed JWT (or its claims are not JSON of the expected types).
        case malformedToken
        /// The token's algorithm is not an asymmetric one the provider announced (`none` and HMAC are refused).
        case unsupportedAlgorithm
        /// No key of the provider's JWKS has the token's `kid`, even after fetching the JWKS again.
        case unknownKey
        /// The signature does not verify with the provider's key.
        case badSignature
        /// `iss` is not the configured issuer.
        case wrongIssuer
        /// `aud` does not name this client, or `azp` names another.
        case wrongAudience
        /// `exp` has passed (beyond the clock skew allowed).
        case expired
        /// `nbf` or `iat` lies in the future (beyond the clock skew allowed).
        case notYetValid
        /// The token's `nonce` is missing or is not the one sent with this login.
        case nonceMismatch
        /// A claim the sign-in needs (`sub`, `exp`, `iat`) is missing.
        case missingClaim
        /// The ID token's `at_hash` does not match the access token that came with it.
        case accessTokenMismatch
        /// The store that keeps started sign-ins could not be read or written.
        case storage
        /// allowed_domains, allowed_users or allowed_groups refused the person, or their e-mail is not verified
        /// while those checks need it.
        case notAllowed
    }

    public var kind: Kind
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }

    /// The status of the page the callback answers with.
    public var httpStatus: Int {
        switch kind {
        case .discovery, .network: 502
        case .storage: 503
        case .badCallback, .malformedToken, .missingClaim: 400
        case .unknownState, .expiredState: 410
        case .notAllowed: 403
        case .browserMismatch, .tokenExchange, .unsupportedAlgorithm, .unknownKey, .badSignature, .wrongIssuer,
             .wrongAudience, .expired, .notYetValid, .nonceMismatch, .accessTokenMismatch: 403
        }
    }
}
