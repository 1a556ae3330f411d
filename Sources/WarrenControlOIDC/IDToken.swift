// ID token checks (OpenID Connect Core §3.1.3.7): signature with the provider's key (jwt-kit), then the claims,
// each with its own error.

import Crypto
import Foundation
import JWTKit

/// The claims of an ID token (or a userinfo answer) that the sign-in uses. Lenient in form where providers differ
/// (`aud` a string or a list, `email_verified` a boolean or "true", `groups` a list or one string).
public struct OIDCClaims: Sendable, Hashable, Decodable, JWTPayload {
    public var iss: String?
    public var sub: String?
    public var aud: [String] = []
    public var azp: String?
    public var exp: Double?
    public var iat: Double?
    public var nbf: Double?
    public var nonce: String?
    public var email: String?
    public var emailVerified: Bool?
    public var name: String?
    public var preferredUsername: String?
    public var groups: [String]?
    /// The profile picture URL (standard claim `picture`).
    public var picture: String?
    /// The access token's hash (Core §3.1.3.6): the left half of its hash with the token's algorithm, base64url.
    public var atHash: String?

    public init() {}

    enum CodingKeys: String, CodingKey {
        case iss, sub, aud, azp, exp, iat, nbf, nonce, email, name, groups, picture
        case emailVerified = "email_verified"
        case preferredUsername = "preferred_username"
        case atHash = "at_hash"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        iss = try c.decodeIfPresent(String.self, forKey: .iss)
        sub = try c.decodeIfPresent(String.self, forKey: .sub)
        if let one = try? c.decodeIfPresent(String.self, forKey: .aud) {
            aud = [one]
        } else {
            aud = try c.decodeIfPresent([String].self, forKey: .aud) ?? []
        }
        azp = try c.decodeIfPresent(String.self, forKey: .azp)
        exp = try c.decodeIfPresent(Double.self, forKey: .exp)
        iat = try c.decodeIfPresent(Double.self, forKey: .iat)
        nbf = try c.decodeIfPresent(Double.self, forKey: .nbf)
        nonce = try c.decodeIfPresent(String.self, forKey: .nonce)
        email = try? c.decodeIfPresent(String.self, forKey: .email)
        if let flag = try? c.decodeIfPresent(Bool.self, forKey: .emailVerified) {
            emailVerified = flag
        } else if let text = try? c.decodeIfPresent(String.self, forKey: .emailVerified) {
            emailVerified = text.lowercased() == "true"
        }
        name = try? c.decodeIfPresent(String.self, forKey: .name)
        preferredUsername = try? c.decodeIfPresent(String.self, forKey: .preferredUsername)
        picture = try? c.decodeIfPresent(String.self, forKey: .picture)
        atHash = try? c.decodeIfPresent(String.self, forKey: .atHash)
        if let list = try? c.decodeIfPresent([String].self, forKey: .groups) {
            groups = list
        } else if let one = try? c.decodeIfPresent(String.self, forKey: .groups) {
            groups = [one]
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(iss, forKey: .iss)
        try c.encodeIfPresent(sub, forKey: .sub)
        try c.encode(aud, forKey: .aud)
        try c.encodeIfPresent(azp, forKey: .azp)
        try c.encodeIfPresent(exp, forKey: .exp)
        try c.encodeIfPresent(iat, forKey: .iat)
        try c.encodeIfPresent(nbf, forKey: .nbf)
        try c.encodeIfPresent(nonce, forKey: .nonce)
        try c.encodeIfPresent(email, forKey: .email)
        try c.encodeIfPresent(emailVerified, forKey: .emailVerified)
        try c.encodeIfPresent(name, forKey: .name)
        try c.encodeIfPresent(preferredUsername, forKey: .preferredUsername)
        try c.encodeIfPresent(groups, forKey: .groups)
        try c.encodeIfPresent(picture, forKey: .picture)
        try c.encodeIfPresent(atHash, forKey: .atHash)
    }

    /// The claims are checked by ``IDTokenVerifier`` after the signature, each with its own error.
    public func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// The token's header fields that pick the key.
struct JOSEHeader: Decodable {
    var alg: String?
    var kid: String?
}

public struct IDTokenVerifier: Sendable {
    public var issuer: String
    public var clientID: String
    public var clockSkew: Duration

    public init(issuer: String, clientID: String, clockSkew: Duration) {
        self.issuer = issuer
        self.clientID = clientID
        self.clockSkew = clockSkew
    }

    /// The header of a compact JWS (not verified: it only picks the key).
    static func header(of token: String) throws(OIDCError) -> JOSEHeader {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let data = Base64URL.decode(parts[0]) else {
            throw OIDCError(.malformedToken, "the ID token is not a signed JWT (three base64url parts)")
        }
        do {
            return try JSONDecoder().decode(JOSEHeader.self, from: data)
        } catch {
            throw OIDCError(.malformedToken, "the ID token's header is not JSON: \(JSONProblem.describe(error))")
        }
    }

    /// The payload of a compact JWS as a JSON object (claims a type does not name, such as a configured groups
    /// claim); nil when it is not one. Read only after the signature was verified.
    static func payload(of token: String) -> [String: Any]? {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let data = Base64URL.decode(parts[1]) else { return nil }
        return (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
    }

    /// `at_hash` (Core §3.1.3.6): the left half of the access token's hash, with the hash of the ID token's
    /// algorithm (SHA-256 for *256, SHA-384 for *384, SHA-512 for *512 and EdDSA), base64url without padding.
    static func checkAccessTokenHash(_ atHash: String, accessToken: String, algorithm: String) throws(OIDCError) {
        let bytes = Array(accessToken.utf8)
        let digest: [UInt8]
        if algorithm.hasSuffix("256") {
            digest = Array(SHA256.hash(data: bytes))
        } else if algorithm.hasSuffix("384") {
            digest = Array(SHA384.hash(data: bytes))
        } else if algorithm.hasSuffix("512") || algorithm == "EdDSA" {
            digest = Array(SHA512.hash(data: bytes))
        } else {
            throw OIDCError(.unsupportedAlgorithm, "the ID token's at_hash cannot be checked for \(algorithm)")
        }
        let expected = Base64URL.encode(digest.prefix(digest.count / 2))
        guard constantTimeEqual(atHash, expected) else {
            throw OIDCError(.accessTokenMismatch, "the ID token's at_hash does not match the access token that came with it")
        }
    }

    /// Verifies the signature with `key` (already chosen by `kid`) and returns the claims, unchecked.
    static func verifySignature(_ token: String, key: JWK, algorithm: String) async throws(OIDCError) -> OIDCClaims {
        if let declared = key.algorithm?.rawValue, declared != algorithm {
            throw OIDCError(.unsupportedAlgorithm, "the ID token says \(algorithm) but its key \(key.keyIdentifier?.string ?? "") is for \(declared)")
        }
        let collection = JWTKeyCollection()
        do {
            try await collection.add(jwk: key, isDefault: true)
        } catch {
            throw OIDCError(.unknownKey, "the provider's key \(key.keyIdentifier?.string ?? "") is not usable: \(error)")
        }
        do {
            return try await collection.verify(token, as: OIDCClaims.self)
        } catch let error as JWTError where error.errorType == .signatureVerificationFailed {
            throw OIDCError(.badSignature, "the ID token's signature does not verify with the provider's key \(key.keyIdentifier?.string ?? "")")
        } catch let error as JWTError where error.errorType == .malformedToken || error.errorType == .claimVerificationFailure {
            throw OIDCError(.malformedToken, "the ID token is malformed: \(error.reason ?? "\(error.errorType)")")
        } catch let error as DecodingError {
            throw OIDCError(.malformedToken, "the ID token's claims are not of the expected types: \(JSONProblem.describe(error))")
        } catch {
            // A key that cannot verify this algorithm (an RSA key for ES256, say) lands here.
            throw OIDCError(.badSignature, "the ID token's signature could not be checked: \(error)")
        }
    }

    /// The claim checks of Core §3.1.3.7, in its order; `now` in seconds since 1970.
    public func check(_ claims: OIDCClaims, nonce expected: String, now: Date) throws(OIDCError) {
        guard let iss = claims.iss, iss == issuer else {
            throw OIDCError(.wrongIssuer, "the ID token was issued by \((claims.iss ?? "nobody").debugDescription), not \(issuer.debugDescription)")
        }
        guard claims.aud.contains(clientID) else {
            throw OIDCError(.wrongAudience, "the ID token is for \(claims.aud.map(\.debugDescription).joined(separator: ", ")), "
                            + "not this client (\(clientID.debugDescription))")
        }
        if claims.aud.count > 1, claims.azp == nil {
            throw OIDCError(.wrongAudience, "the ID token names several audiences but no authorized party (azp)")
        }
        if let azp = claims.azp, azp != clientID {
            throw OIDCError(.wrongAudience, "the ID token's authorized party is \(azp.debugDescription), not this client")
        }
        let skew = Double(clockSkew.components.seconds)
        let t = now.timeIntervalSince1970
        guard let exp = claims.exp else { throw OIDCError(.missingClaim, "the ID token has no expiry (exp)") }
        guard t < exp + skew else {
            throw OIDCError(.expired, "the ID token expired at \(Self.format(exp)) (now \(Self.format(t)), \(Int(skew)) s of clock skew allowed)")
        }
        guard let iat = claims.iat else { throw OIDCError(.missingClaim, "the ID token has no issue time (iat)") }
        guard iat <= t + skew else {
            throw OIDCError(.notYetValid, "the ID token was issued in the future (\(Self.format(iat)); now \(Self.format(t)))")
        }
        if let nbf = claims.nbf, nbf > t + skew {
            throw OIDCError(.notYetValid, "the ID token is not valid before \(Self.format(nbf)) (now \(Self.format(t)))")
        }
        guard let nonce = claims.nonce else { throw OIDCError(.nonceMismatch, "the ID token carries no nonce") }
        guard Self.constantTimeEqual(nonce, expected) else {
            throw OIDCError(.nonceMismatch, "the ID token's nonce is not the one sent with this sign-in")
        }
        guard let sub = claims.sub, !sub.isEmpty else { throw OIDCError(.missingClaim, "the ID token has no subject (sub)") }
    }

    static func format(_ seconds: Double) -> String {
        Date(timeIntervalSince1970: seconds).formatted(.iso8601)
    }

    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count else { return false }
        var difference: UInt8 = 0
        for i in x.indices { difference |= x[i] ^ y[i] }
        return difference == 0
    }
}

enum Base64URL {
    static func decode(_ text: Substring) -> Data? {
        var s = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while s.count % 4 != 0 { s += "=" }
        return Data(base64Encoded: s)
    }

    static func encode(_ bytes: some Sequence<UInt8>) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}
