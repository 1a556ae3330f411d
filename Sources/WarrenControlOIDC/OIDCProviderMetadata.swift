// The provider's discovery document (OpenID Connect Discovery 1.0 §3) and its key set.

import Foundation
import JWTKit

/// The parts of `/.well-known/openid-configuration` the relying party uses.
public struct OIDCProviderMetadata: Sendable, Hashable, Decodable {
    public var issuer: String
    public var authorizationEndpoint: String
    public var tokenEndpoint: String
    public var jwksURI: String
    public var userinfoEndpoint: String?
    public var tokenEndpointAuthMethods: [String]?
    public var signingAlgorithms: [String]?
    public var codeChallengeMethods: [String]?

    enum CodingKeys: String, CodingKey {
        case issuer
        case authorizationEndpoint = "authorization_endpoint"
        case tokenEndpoint = "token_endpoint"
        case jwksURI = "jwks_uri"
        case userinfoEndpoint = "userinfo_endpoint"
        case tokenEndpointAuthMethods = "token_endpoint_auth_methods_supported"
        case signingAlgorithms = "id_token_signing_alg_values_supported"
        case codeChallengeMethods = "code_challenge_methods_supported"
    }

    /// The discovery URL for an issuer: its path with `/.well-known/openid-configuration` appended.
    public static func discoveryURL(issuer: String) -> String {
        var base = issuer
        while base.hasSuffix("/") { base.removeLast() }
        return base + "/.well-known/openid-configuration"
    }

    /// Parses and checks a discovery document for `issuer`: JSON, the issuer exactly as configured (§4.3), and
    /// http(s) endpoints.
    public static func parse(_ body: [UInt8], issuer: String) throws(OIDCError) -> OIDCProviderMetadata {
        let metadata: OIDCProviderMetadata
        do {
            metadata = try JSONDecoder().decode(OIDCProviderMetadata.self, from: Data(body))
        } catch {
            throw OIDCError(.discovery, "the discovery document of \(issuer) is not usable JSON: \(JSONProblem.describe(error))")
        }
        guard metadata.issuer == issuer else {
            throw OIDCError(.discovery, "the discovery document names the issuer \(metadata.issuer.debugDescription), "
                            + "not the configured \(issuer.debugDescription) (they must be equal, character for character)")
        }
        for (name, value) in [("authorization_endpoint", metadata.authorizationEndpoint), ("token_endpoint", metadata.tokenEndpoint),
                              ("jwks_uri", metadata.jwksURI)] + (metadata.userinfoEndpoint.map { [("userinfo_endpoint", $0)] } ?? []) {
            guard let url = URL(string: value), ["http", "https"].contains(url.scheme?.lowercased() ?? ""), url.host != nil else {
                throw OIDCError(.discovery, "the discovery document's \(name) is not an http(s) URL: \(value.debugDescription)")
            }
        }
        return metadata
    }

    /// How the client authenticates at the token endpoint: client_secret_basic unless the provider lists only
    /// client_secret_post (the default when the list is absent is basic, §3 of Discovery).
    public var usesClientSecretPost: Bool {
        guard let methods = tokenEndpointAuthMethods, !methods.isEmpty else { return false }
        return !methods.contains("client_secret_basic") && methods.contains("client_secret_post")
    }

    /// The ID token algorithms accepted: the provider's list (RS256 when it gives none, as the spec requires
    /// RS256 support), limited to asymmetric signatures.
    public var acceptedAlgorithms: Set<String> {
        let announced = Set(signingAlgorithms ?? ["RS256"])
        return announced.intersection(Self.asymmetricAlgorithms)
    }

    static let asymmetricAlgorithms: Set<String> = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                                                    "ES256", "ES384", "ES512", "EdDSA"]
}

/// The provider's signing keys by `kid`.
public struct OIDCKeySet: Sendable {
    public var keys: [JWK]

    public static func parse(_ body: [UInt8], from url: String) throws(OIDCError) -> OIDCKeySet {
        do {
            let jwks = try JSONDecoder().decode(JWKS.self, from: Data(body))
            // Encryption keys ("use": "enc") are not for signatures; keys of unknown types were already refused
            // by the decoder.
            return OIDCKeySet(keys: jwks.keys)
        } catch {
            throw OIDCError(.discovery, "the key set at \(url) is not a usable JWKS: \(JSONProblem.describe(error))")
        }
    }

    /// The key a token names: by `kid`, or the only key when the token names none.
    func key(for kid: String?) -> JWK? {
        if let kid { return keys.first { $0.keyIdentifier?.string == kid } }
        return keys.count == 1 ? keys.first : nil
    }
}

enum JSONProblem {
    /// A decoding error in a line (the coding path and what was wrong), not Foundation's paragraph.
    static func describe(_ error: any Error) -> String {
        guard let error = error as? DecodingError else { return "\(error)" }
        func path(_ context: DecodingError.Context) -> String {
            let p = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
            return p.isEmpty ? "" : " at \(p)"
        }
        switch error {
        case .keyNotFound(let key, let context): return "missing \(key.stringValue)\(path(context))"
        case .typeMismatch(_, let context): return "wrong type\(path(context)): \(context.debugDescription)"
        case .valueNotFound(_, let context): return "null\(path(context))"
        case .dataCorrupted(let context): return "\(context.debugDescription)\(path(context))"
        @unknown default: return "\(error)"
        }
    }
}
