// A small OpenID provider on loopback for the tests: discovery, JWKS, an authorization endpoint that signs the
// person in at once, a token endpoint that checks the client, the code, the redirect URI and the PKCE verifier, and
// userinfo. Its ID tokens are signed with keys made here (ES256), and each test can spoil one thing about them.

import Crypto
import Foundation
import JWTKit
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
@testable import WarrenControlOIDC

final class TestProvider: Sendable {
    /// How the next ID tokens are signed.
    enum Signing: Sendable {
        case normal
        /// Another key than the JWKS's, under the JWKS key's kid.
        case otherKeySameKid
        /// A key the JWKS does not hold (yet), with its own kid.
        case rotatedKey
        /// alg "none".
        case unsigned
    }

    struct Identity: Sendable {
        var sub = "user-1"
        var email: String? = "alice@example.com"
        var emailVerified: Bool? = true
        var name: String? = "Alice Example"
        var preferredUsername: String? = "alice"
        var groups: [String]? = ["staff"]
        var picture: String? = "https://pictures.example.com/alice.png"
    }

    struct State: Sendable {
        var announcedIssuer: String?
        var clientSecretPost = false
        var identity = Identity()
        var signing = Signing.normal
        /// Changes the claims of the next ID tokens (wrong audience, expired, ...).
        var mutate: @Sendable (inout OIDCClaims) -> Void = { _ in }
        var servesRotatedKey = false
        var codes: [String: Grant] = [:]
        var accessTokens: [String: Identity] = [:]
        var jwksFetches = 0
        var tokenRequests = 0
        var lastAuthorizeQuery: [String: String] = [:]
        var tokenRefusals: [String] = []
        /// The ID token's at_hash: none, the access token's, or another token's.
        var atHash = AtHash.none
        /// Claims added to the next ID tokens by name (such as a groups claim under another name).
        var extraClaims: [String: [String]] = [:]
    }

    enum AtHash: Sendable {
        case none, correct, wrong
    }

    struct Grant: Sendable {
        var clientID: String
        var redirectURI: String
        var nonce: String?
        var challenge: String?
        var challengeMethod: String?
        var identity: Identity
    }

    let clientID = "warren-test"
    let clientSecret = "s3cret/with:odd&chars"
    let state = Mutex(State())
    let key = ES256PrivateKey()
    let otherKey = ES256PrivateKey()
    let rotatedKey = ES256PrivateKey()
    private let channel: Channel
    let port: Int

    var issuer: String { "http://127.0.0.1:\(port)" }

    private init(channel: Channel, port: Int) {
        self.channel = channel
        self.port = port
    }

    static func start() async throws -> TestProvider {
        let box = Mutex<TestProvider?>(nil)
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Handler(provider: { box.withLock { $0 } }))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let provider = TestProvider(channel: channel, port: channel.localAddress!.port!)
        box.withLock { $0 = provider }
        return provider
    }

    func stop() async {
        try? await channel.close()
    }

    func settings(redirectURL: String = "http://127.0.0.1:9/oidc/callback") -> OIDCSettings {
        OIDCSettings(issuer: issuer, clientID: clientID, clientSecret: clientSecret, redirectURL: redirectURL)
    }

    // MARK: Endpoints

    struct Answer {
        var status: Int
        var headers: [(String, String)] = []
        var body: [UInt8] = []

        static func json(_ status: Int, _ object: Any) -> Answer {
            let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
            return Answer(status: status, headers: [("Content-Type", "application/json")], body: Array(data))
        }
    }

    func handle(method: String, uri: String, headers: HTTPHeaders, body: [UInt8]) async -> Answer {
        let parts = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let path = String(parts[0])
        let query = FormEncoding.decode(parts.count > 1 ? String(parts[1]) : "") ?? [:]
        switch (method, path) {
        case ("GET", "/.well-known/openid-configuration"):
            let s = state.withLock { $0 }
            return .json(200, [
                "issuer": s.announcedIssuer ?? issuer,
                "authorization_endpoint": issuer + "/authorize",
                "token_endpoint": issuer + "/token",
                "jwks_uri": issuer + "/jwks",
                "userinfo_endpoint": issuer + "/userinfo",
                "id_token_signing_alg_values_supported": ["ES256", "RS256"],
                "token_endpoint_auth_methods_supported": s.clientSecretPost ? ["client_secret_post"] : ["client_secret_basic", "client_secret_post"],
                "code_challenge_methods_supported": ["S256", "plain"],
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
            ])
        case ("GET", "/jwks"):
            let rotated = state.withLock { s in
                s.jwksFetches += 1
                return s.servesRotatedKey
            }
            var keys = [jwk(key, kid: "k1")]
            if rotated { keys.append(jwk(rotatedKey, kid: "k2")) }
            return .json(200, ["keys": keys])
        case ("GET", "/authorize"):
            guard query["response_type"] == "code", query["client_id"] == clientID, let redirect = query["redirect_uri"],
                  let stateParameter = query["state"] else {
                return .json(400, ["error": "invalid_request"])
            }
            let code = UUID().uuidString
            state.withLock { s in
                s.lastAuthorizeQuery = query
                s.codes[code] = Grant(clientID: clientID, redirectURI: redirect, nonce: query["nonce"], challenge: query["code_challenge"],
                                      challengeMethod: query["code_challenge_method"], identity: s.identity)
            }
            let location = redirect + "?" + FormEncoding.encode([("code", code), ("state", stateParameter)])
            return Answer(status: 302, headers: [("Location", location)])
        case ("POST", "/token"):
            return await token(form: FormEncoding.decode(String(decoding: body, as: UTF8.self)) ?? [:], headers: headers)
        case ("GET", "/userinfo"):
            let bearer = headers.first(name: "Authorization").map { String($0.dropFirst("Bearer ".count)) } ?? ""
            guard let identity = state.withLock({ $0.accessTokens[bearer] }) else { return .json(401, ["error": "invalid_token"]) }
            var info: [String: Any] = ["sub": identity.sub]
            if let email = identity.email { info["email"] = email }
            if let verified = identity.emailVerified { info["email_verified"] = verified }
            if let name = identity.name { info["name"] = name }
            if let groups = identity.groups { info["groups"] = groups }
            return .json(200, info)
        default:
            return Answer(status: 404)
        }
    }

    private func refuse(_ why: String) -> Answer {
        state.withLock { $0.tokenRefusals.append(why) }
        return .json(400, ["error": "invalid_grant", "error_description": why])
    }

    private func token(form: [String: String], headers: HTTPHeaders) async -> Answer {
        let s = state.withLock { s in
            s.tokenRequests += 1
            return s
        }
        // Client authentication as the discovery document announced it.
        if s.clientSecretPost {
            guard form["client_id"] == clientID, form["client_secret"] == clientSecret else { return refuse("client authentication (post) failed") }
        } else {
            guard let header = headers.first(name: "Authorization"), header.hasPrefix("Basic "),
                  let decoded = Data(base64Encoded: String(header.dropFirst(6))).map({ String(decoding: $0, as: UTF8.self) }),
                  let colon = decoded.firstIndex(of: ":"),
                  decoded[..<colon].removingPercentEncoding == clientID,
                  decoded[decoded.index(after: colon)...].removingPercentEncoding == clientSecret else {
                return refuse("client authentication (basic) failed")
            }
        }
        guard form["grant_type"] == "authorization_code", let code = form["code"] else { return refuse("not an authorization code grant") }
        guard let grant = state.withLock({ $0.codes.removeValue(forKey: code) }) else { return refuse("unknown or used code") }
        guard form["redirect_uri"] == grant.redirectURI else { return refuse("redirect_uri differs") }
        if let challenge = grant.challenge {
            guard let verifier = form["code_verifier"] else { return refuse("PKCE verifier missing") }
            let computed = grant.challengeMethod == "S256"
                ? Base64URL.encode(SHA256.hash(data: Array(verifier.utf8))) : verifier
            guard computed == challenge else { return refuse("PKCE verifier does not match the challenge") }
        }
        let now = Date().timeIntervalSince1970
        var claims = OIDCClaims()
        claims.iss = issuer
        claims.sub = grant.identity.sub
        claims.aud = [clientID]
        claims.exp = now + 300
        claims.iat = now
        claims.nonce = grant.nonce
        claims.email = grant.identity.email
        claims.emailVerified = grant.identity.emailVerified
        claims.name = grant.identity.name
        claims.preferredUsername = grant.identity.preferredUsername
        claims.groups = grant.identity.groups
        claims.picture = grant.identity.picture
        let accessToken = UUID().uuidString
        switch s.atHash {
        case .none: break
        case .correct, .wrong:
            // Core §3.1.3.6 for ES256: the left half of the SHA-256 of the token.
            let hashed = s.atHash == .correct ? accessToken : UUID().uuidString
            claims.atHash = Base64URL.encode(Array(SHA256.hash(data: Array(hashed.utf8))).prefix(16))
        }
        s.mutate(&claims)
        let idToken: String
        do {
            idToken = try await sign(claims, with: s.signing, extra: s.extraClaims)
        } catch {
            return .json(500, ["error": "server_error", "error_description": "\(error)"])
        }
        state.withLock { $0.accessTokens[accessToken] = grant.identity }
        return .json(200, ["access_token": accessToken, "token_type": "Bearer", "expires_in": 300, "id_token": idToken])
    }

    /// The standard claims plus claims of other names (lists of strings).
    struct ExtendedClaims: JWTPayload {
        var claims: OIDCClaims
        var extra: [String: [String]]

        struct Key: CodingKey {
            var stringValue: String
            var intValue: Int? { nil }
            init(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { nil }
        }

        init(claims: OIDCClaims, extra: [String: [String]]) {
            self.claims = claims
            self.extra = extra
        }

        init(from decoder: any Decoder) throws {
            claims = try OIDCClaims(from: decoder)
            extra = [:]
        }

        func encode(to encoder: any Encoder) throws {
            try claims.encode(to: encoder)
            var c = encoder.container(keyedBy: Key.self)
            for (name, values) in extra { try c.encode(values, forKey: Key(stringValue: name)) }
        }

        func verify(using algorithm: some JWTAlgorithm) async throws {}
    }

    func sign(_ claims: OIDCClaims, with signing: Signing, extra: [String: [String]] = [:]) async throws -> String {
        let keys = JWTKeyCollection()
        switch signing {
        case .normal:
            await keys.add(ecdsa: key, kid: "k1")
            return try await keys.sign(ExtendedClaims(claims: claims, extra: extra), kid: "k1")
        case .otherKeySameKid:
            await keys.add(ecdsa: otherKey, kid: "k1")
            return try await keys.sign(claims, kid: "k1")
        case .rotatedKey:
            await keys.add(ecdsa: rotatedKey, kid: "k2")
            return try await keys.sign(claims, kid: "k2")
        case .unsigned:
            let header = Base64URL.encode(Array(#"{"alg":"none","kid":"k1"}"#.utf8))
            let payload = Base64URL.encode(Array(try JSONEncoder().encode(claims)))
            return header + "." + payload + "."
        }
    }

    private func jwk(_ key: ES256PrivateKey, kid: String) -> [String: Any] {
        let p = key.parameters!
        return ["kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid, "x": p.x, "y": p.y]
    }

    // MARK: HTTP

    final class Handler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let provider: @Sendable () -> TestProvider?
        var head: HTTPRequestHead?
        var body: [UInt8] = []

        init(provider: @escaping @Sendable () -> TestProvider?) { self.provider = provider }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let h):
                head = h
                body = []
            case .body(var chunk):
                body += chunk.readBytes(length: chunk.readableBytes) ?? []
            case .end:
                guard let head, let provider = provider() else { return }
                let body = self.body
                let loop = context.eventLoop
                let bound = NIOLoopBound(context, eventLoop: loop)
                Task {
                    let answer = await provider.handle(method: head.method.rawValue, uri: head.uri, headers: head.headers, body: body)
                    loop.execute {
                        let context = bound.value
                        var headers = HTTPHeaders(answer.headers)
                        headers.add(name: "Content-Length", value: "\(answer.body.count)")
                        headers.add(name: "Connection", value: "close")
                        context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1,
                                                                                   status: HTTPResponseStatus(statusCode: answer.status),
                                                                                   headers: headers))), promise: nil)
                        context.write(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: answer.body)))), promise: nil)
                        context.writeAndFlush(self.wrapOutboundOut(.end(nil))).whenComplete { _ in context.close(promise: nil) }
                    }
                }
            }
        }
    }
}
