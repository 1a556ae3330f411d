// The relying party against the in-process provider (TestProvider): a good sign-in, then one refusal per check.

import AsyncHTTPClient
import Foundation
import JWTKit
import Logging
import NIOHTTP1
import Synchronization
import WarrenControlPostgres
import WarrenControlStore
import WarrenTestProbes
import XCTest
@testable import WarrenControlOIDC

/// A clock the tests move forward.
final class TestClock: Sendable {
    private let offset = Mutex<TimeInterval>(0)
    func advance(_ seconds: TimeInterval) { offset.withLock { $0 += seconds } }
    var now: @Sendable () -> Date { { [self] in Date().addingTimeInterval(self.offset.withLock { $0 }) } }
}

/// What the browser carries from the start of a sign-in to the callback.
struct BrowserCallback {
    var query: [String: String]
    var rawQuery: String
    var cookie: String?
    var cookieName: String
}

enum Browser {
    static let client: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }()

    /// GET without following redirects: the status and the Location header.
    static func get(_ url: String, headers: [(String, String)] = []) async throws -> (status: Int, location: String?, headers: HTTPHeaders, body: String) {
        var request = HTTPClientRequest(url: url)
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        let response = try await client.execute(request, timeout: .seconds(10))
        let body = try await response.body.collect(upTo: 1 << 20)
        return (Int(response.status.code), response.headers.first(name: "Location"), response.headers, String(buffer: body))
    }

    /// Follows the authorization URL to the provider, which signs in at once and redirects to the callback.
    static func authorize(_ url: String) async throws -> (query: [String: String], rawQuery: String) {
        let answer = try await get(url)
        guard answer.status == 302, let location = answer.location else {
            throw OIDCError(.badCallback, "the test provider answered \(answer.status): \(answer.body)")
        }
        let raw = location.split(separator: "?", maxSplits: 1).dropFirst().first.map(String.init) ?? ""
        return (FormEncoding.decode(raw) ?? [:], raw)
    }
}

final class RelyingPartyTests: XCTestCase {
    var provider: TestProvider!
    let clock = TestClock()

    override func setUp() async throws {
        provider = try await TestProvider.start()
    }

    override func tearDown() async throws {
        await provider.stop()
    }

    func party(_ adjust: (inout OIDCSettings) -> Void = { _ in }) -> OIDCRelyingParty {
        var settings = provider.settings()
        adjust(&settings)
        var logger = Logger(label: "test.oidc")
        logger.logLevel = .critical
        return OIDCRelyingParty(settings: settings, logger: logger, now: clock.now)
    }

    /// Starts a sign-in and walks the browser to the callback.
    func walk(_ rp: OIDCRelyingParty, login: String = "login-1", rewrite: (String) -> String = { $0 }) async throws -> BrowserCallback {
        let start = try await rp.begin(loginID: login)
        let back = try await Browser.authorize(rewrite(start.redirectURL))
        return BrowserCallback(query: back.query, rawQuery: back.rawQuery, cookie: start.cookieValue, cookieName: start.cookieName)
    }

    func signIn(_ rp: OIDCRelyingParty) async throws(OIDCError) -> OIDCIdentity {
        let callback: BrowserCallback
        do { callback = try await walk(rp) } catch { throw OIDCError(.network, "\(error)") }
        return try await rp.complete(query: callback.query, cookie: callback.cookie)
    }

    func assertRefused(_ kind: OIDCError.Kind, _ rp: OIDCRelyingParty, file: StaticString = #filePath, line: UInt = #line) async {
        do {
            let identity = try await signIn(rp)
            XCTFail("signed in as \(identity.subject); expected a \(kind) refusal", file: file, line: line)
        } catch {
            XCTAssertEqual(error.kind, kind, "\(error)", file: file, line: line)
            XCTAssertFalse(error.message.isEmpty, file: file, line: line)
        }
    }

    // MARK: Good sign-ins

    func testGoodSignInWithPKCEAndUserinfo() async throws {
        let rp = party()
        let identity = try await signIn(rp)
        XCTAssertEqual(identity.loginID, "login-1")
        XCTAssertEqual(identity.issuer, provider.issuer)
        XCTAssertEqual(identity.subject, "user-1")
        XCTAssertEqual(identity.providerID, provider.issuer + "/user-1")
        XCTAssertEqual(identity.email, "alice@example.com")
        XCTAssertTrue(identity.emailVerified)
        XCTAssertEqual(identity.name, "Alice Example")
        XCTAssertEqual(identity.preferredUsername, "alice")
        XCTAssertEqual(identity.groups, ["staff"])
        XCTAssertEqual(identity.picture, "https://pictures.example.com/alice.png")
        XCTAssertGreaterThan(identity.tokenExpiry, Date())
        let sent = provider.state.withLock { $0.lastAuthorizeQuery }
        XCTAssertEqual(sent["code_challenge_method"], "S256")
        XCTAssertEqual(sent["scope"], "openid profile email")
        XCTAssertNotNil(sent["nonce"])
        XCTAssertEqual(provider.state.withLock { $0.tokenRefusals }, [])
        let left = try await rp.startedCount
        XCTAssertEqual(left, 0, "the state is used up")
    }

    func testUserinfoFillsClaimsTheIDTokenLacks() async throws {
        provider.state.withLock { s in
            s.mutate = { claims in
                claims.email = nil
                claims.emailVerified = nil
                claims.groups = nil
            }
        }
        let identity = try await signIn(party())
        XCTAssertEqual(identity.email, "alice@example.com", "from userinfo")
        XCTAssertTrue(identity.emailVerified)
        XCTAssertEqual(identity.groups, ["staff"])
    }

    func testClientSecretPostWhenTheProviderOffersOnlyThat() async throws {
        provider.state.withLock { $0.clientSecretPost = true }
        let identity = try await signIn(party())
        XCTAssertEqual(identity.subject, "user-1")
    }

    func testPlainPKCEAndNoPKCE() async throws {
        _ = try await signIn(party { $0.pkce = .plain })
        XCTAssertEqual(provider.state.withLock { $0.lastAuthorizeQuery["code_challenge_method"] }, "plain")
        _ = try await signIn(party { $0.pkce = nil })
        XCTAssertNil(provider.state.withLock { $0.lastAuthorizeQuery["code_challenge"] })
    }

    func testExtraParamsAreSentButCannotOverrideTheFlow() async throws {
        _ = try await signIn(party { $0.extraParams = ["domain_hint": "example.com", "state": "attacker"] })
        let sent = provider.state.withLock { $0.lastAuthorizeQuery }
        XCTAssertEqual(sent["domain_hint"], "example.com")
        XCTAssertNotEqual(sent["state"], "attacker")
    }

    // MARK: Refusals of the ID token

    func testWrongAudienceIsRefused() async {
        provider.state.withLock { $0.mutate = { $0.aud = ["someone-else"] } }
        await assertRefused(.wrongAudience, party())
    }

    func testSeveralAudiencesNeedTheAuthorizedParty() async throws {
        provider.state.withLock { s in s.mutate = { $0.aud = ["warren-test", "other"] } }
        await assertRefused(.wrongAudience, party())
        provider.state.withLock { s in s.mutate = { $0.aud = ["warren-test", "other"]; $0.azp = "other" } }
        await assertRefused(.wrongAudience, party())
        provider.state.withLock { s in s.mutate = { $0.aud = ["warren-test", "other"]; $0.azp = "warren-test" } }
        _ = try await signIn(party())
    }

    func testWrongIssuerIsRefused() async {
        provider.state.withLock { s in s.mutate = { $0.iss = "http://evil.example" } }
        await assertRefused(.wrongIssuer, party())
    }

    func testExpiredTokenIsRefusedAndSkewIsBounded() async throws {
        provider.state.withLock { s in s.mutate = { $0.exp = Date().timeIntervalSince1970 - 3600 } }
        await assertRefused(.expired, party())
        // Expired 30 s ago: within the 60 s skew allowed.
        provider.state.withLock { s in s.mutate = { $0.exp = Date().timeIntervalSince1970 - 30 } }
        _ = try await signIn(party())
        // Expired 30 s ago with no skew allowed: refused.
        await assertRefused(.expired, party { $0.clockSkew = .zero })
    }

    func testTokenIssuedInTheFutureOrNotYetValidIsRefused() async {
        provider.state.withLock { s in s.mutate = { $0.iat = Date().timeIntervalSince1970 + 600 } }
        await assertRefused(.notYetValid, party())
        provider.state.withLock { s in s.mutate = { $0.nbf = Date().timeIntervalSince1970 + 600 } }
        await assertRefused(.notYetValid, party())
    }

    func testBadSignatureIsRefused() async {
        provider.state.withLock { $0.signing = .otherKeySameKid }
        await assertRefused(.badSignature, party())
    }

    func testUnsignedTokenIsRefused() async {
        provider.state.withLock { $0.signing = .unsigned }
        await assertRefused(.unsupportedAlgorithm, party())
    }

    func testUnknownKidRefetchesTheKeySetOnceThenIsRefused() async throws {
        let rp = party()
        provider.state.withLock { $0.signing = .rotatedKey }
        try await rp.discover()
        let before = provider.state.withLock { $0.jwksFetches }
        // Right after discovery the key set is fresh: an unknown kid does not fetch it again.
        await assertRefused(.unknownKey, rp)
        XCTAssertEqual(provider.state.withLock { $0.jwksFetches } - before, 0, "the key set was fetched moments ago")
        clock.advance(11)
        await assertRefused(.unknownKey, rp)
        XCTAssertEqual(provider.state.withLock { $0.jwksFetches } - before, 1, "one fetch for the unknown kid")
        await assertRefused(.unknownKey, rp)
        XCTAssertEqual(provider.state.withLock { $0.jwksFetches } - before, 1, "no second fetch within the refresh interval")
        // The provider rotates its keys: once the interval has passed, the new key is fetched and accepted.
        provider.state.withLock { $0.servesRotatedKey = true }
        clock.advance(11)
        _ = try await signIn(rp)
        XCTAssertEqual(provider.state.withLock { $0.jwksFetches } - before, 2)
    }

    func testWrongNonceIsRefused() async {
        provider.state.withLock { s in s.mutate = { $0.nonce = "not-the-nonce" } }
        await assertRefused(.nonceMismatch, party())
        provider.state.withLock { s in s.mutate = { $0.nonce = nil } }
        await assertRefused(.nonceMismatch, party())
    }

    func testMissingSubjectIsRefused() async {
        provider.state.withLock { s in s.mutate = { $0.sub = nil } }
        await assertRefused(.missingClaim, party())
    }

    // MARK: Refusals of the callback

    func testReplayedAndUnknownStatesAreRefused() async throws {
        let rp = party()
        let callback = try await walk(rp)
        _ = try await rp.complete(query: callback.query, cookie: callback.cookie)
        do {
            _ = try await rp.complete(query: callback.query, cookie: callback.cookie)
            XCTFail("a replayed callback signed in")
        } catch {
            XCTAssertEqual(error.kind, .unknownState)
        }
        var forged = callback.query
        forged["state"] = "never-issued-state"
        do {
            _ = try await rp.complete(query: forged, cookie: callback.cookie)
            XCTFail("an unknown state signed in")
        } catch {
            XCTAssertEqual(error.kind, .unknownState)
        }
    }

    func testStateExpiresWithTheLoginLifetime() async throws {
        let rp = party()
        let callback = try await walk(rp)
        clock.advance(16 * 60)
        do {
            _ = try await rp.complete(query: callback.query, cookie: callback.cookie)
            XCTFail("an expired sign-in completed")
        } catch {
            XCTAssertTrue([.expiredState, .unknownState].contains(error.kind), "\(error)")
        }
    }

    func testCallbackFromAnotherBrowserIsRefused() async throws {
        let rp = party()
        let callback = try await walk(rp)
        do {
            _ = try await rp.complete(query: callback.query, cookie: nil)
            XCTFail("signed in without the browser's cookie")
        } catch {
            XCTAssertEqual(error.kind, .browserMismatch)
        }
        let again = try await walk(rp)
        do {
            _ = try await rp.complete(query: again.query, cookie: "forged")
            XCTFail("signed in with a forged cookie")
        } catch {
            XCTAssertEqual(error.kind, .browserMismatch)
        }
    }

    func testPKCEVerifierMismatchIsRefusedByTheProvider() async throws {
        let rp = party()
        // Someone swaps the challenge on the way to the provider: the verifier Warren sends no longer matches it.
        let callback = try await walk(rp) { url in
            guard let range = url.range(of: "code_challenge=") else { return url }
            let end = url[range.upperBound...].firstIndex(of: "&") ?? url.endIndex
            return url.replacingCharacters(in: range.upperBound..<end, with: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        }
        do {
            _ = try await rp.complete(query: callback.query, cookie: callback.cookie)
            XCTFail("signed in with a mismatched PKCE verifier")
        } catch {
            XCTAssertEqual(error.kind, .tokenExchange)
            XCTAssertTrue(error.message.contains("PKCE"), error.message)
        }
        XCTAssertEqual(provider.state.withLock { $0.tokenRefusals }, ["PKCE verifier does not match the challenge"])
    }

    func testProviderErrorAndMissingCodeAreRefused() async throws {
        let rp = party()
        var callback = try await walk(rp)
        callback.query["code"] = nil
        callback.query["error"] = "access_denied"
        do {
            _ = try await rp.complete(query: callback.query, cookie: callback.cookie)
            XCTFail("signed in without a code")
        } catch {
            XCTAssertEqual(error.kind, .badCallback)
            XCTAssertTrue(error.message.contains("access_denied"))
        }
    }

    func testDiscoveryIssuerMustMatchExactly() async {
        provider.state.withLock { $0.announcedIssuer = provider.issuer + "/" }
        do {
            try await party().discover()
            XCTFail("accepted a discovery document for another issuer")
        } catch {
            XCTAssertEqual(error.kind, .discovery)
            XCTAssertTrue(error.message.contains("issuer"), error.message)
        }
    }

    func testUnreachableProviderIsAClearError() async {
        var settings = provider.settings()
        settings.issuer = "http://127.0.0.1:1"
        let rp = OIDCRelyingParty(settings: settings)
        do {
            try await rp.discover()
            XCTFail("discovered nothing")
        } catch {
            XCTAssertEqual(error.kind, .network, "\(error)")
        }
    }

    // MARK: allowed_*

    func testAllowedGroupsDomainsAndUsers() async throws {
        await assertRefused(.notAllowed, party { $0.allowedGroups = ["admins"] })
        _ = try await signIn(party { $0.allowedGroups = ["admins", "staff"] })
        await assertRefused(.notAllowed, party { $0.allowedDomains = ["example.org"] })
        _ = try await signIn(party { $0.allowedDomains = ["example.com"] })
        await assertRefused(.notAllowed, party { $0.allowedUsers = ["bob@example.com"] })
        _ = try await signIn(party { $0.allowedUsers = ["alice@example.com"] })
    }

    func testUnverifiedEmailIsRefusedByEmailChecksUnlessNotRequired() async throws {
        provider.state.withLock { $0.identity.emailVerified = false }
        await assertRefused(.notAllowed, party { $0.allowedDomains = ["example.com"] })
        _ = try await signIn(party { $0.allowedDomains = ["example.com"]; $0.emailVerifiedRequired = false })
        // Without e-mail checks an unverified address does not stop the sign-in.
        _ = try await signIn(party())
    }

    // MARK: at_hash and the groups claim

    func testAtHashIsCheckedWhenTheIDTokenCarriesIt() async throws {
        let unchecked = party()
        _ = try await signIn(unchecked)
        let none = await unchecked.accessTokenHashesChecked
        XCTAssertEqual(none, 0, "no at_hash, nothing to check")
        provider.state.withLock { $0.atHash = .correct }
        let checked = party()
        _ = try await signIn(checked)
        let one = await checked.accessTokenHashesChecked
        XCTAssertEqual(one, 1)
        provider.state.withLock { $0.atHash = .wrong }
        await assertRefused(.accessTokenMismatch, party())
    }

    func testGroupsComeFromTheConfiguredClaim() async throws {
        provider.state.withLock { s in
            s.identity.groups = nil
            s.extraClaims = ["roles": ["eng", "ops"]]
        }
        let byDefault = try await signIn(party())
        XCTAssertEqual(byDefault.groups, [], "no groups claim under its default name")
        let named = try await signIn(party { $0.groupsClaim = "roles" })
        XCTAssertEqual(named.groups, ["eng", "ops"])
        await assertRefused(.notAllowed, party { $0.groupsClaim = "roles"; $0.allowedGroups = ["staff"] })
        _ = try await signIn(party { $0.groupsClaim = "roles"; $0.allowedGroups = ["ops"] })
    }

    // MARK: Several instances

    /// Behind a load balancer the provider's callback may reach another instance than the one that sent the browser
    /// away: sign-ins started are in the store they share (here PostgreSQL), so the other instance finishes it, and a
    /// second callback with the same state is refused on either.
    func testASignInBegunOnOneInstanceCompletesOnAnotherOverPostgreSQL() async throws {
        let server: PostgresTestServer
        do {
            server = try PostgresTestServer.shared()
        } catch let error as PostgresTestServer.Unavailable where !error.required {
            throw XCTSkip(error.description)
        }
        let database = try server.createDatabase()
        let settings = PostgresSettings(host: server.socketDirectory, port: server.port, database: database, user: server.user)
        let storeA = try await PostgresControlStore(settings: settings)
        let storeB = try await PostgresControlStore(settings: settings)
        var logger = Logger(label: "test.oidc")
        logger.logLevel = .critical
        let a = OIDCRelyingParty(settings: provider.settings(), store: storeA, logger: logger, now: clock.now)
        let b = OIDCRelyingParty(settings: provider.settings(), store: storeB, logger: logger, now: clock.now)

        let callback = try await walk(a, login: "login-shared")
        let waiting = try await b.startedCount
        XCTAssertEqual(waiting, 1, "instance B sees the sign-in A started")
        let identity = try await b.complete(query: callback.query, cookie: callback.cookie)
        XCTAssertEqual(identity.loginID, "login-shared")
        XCTAssertEqual(identity.subject, "user-1")
        for (name, party) in [("A", a), ("B", b)] {
            do {
                _ = try await party.complete(query: callback.query, cookie: callback.cookie)
                XCTFail("instance \(name) accepted the same state twice")
            } catch {
                XCTAssertEqual(error.kind, .unknownState, "\(name): \(error)")
            }
        }
        let left = try await a.startedCount
        XCTAssertEqual(left, 0)

        // Two callbacks with one state at once (a double submit through the balancer): one sign-in, one refusal.
        let raced = try await walk(b, login: "login-raced")
        async let first = try? a.complete(query: raced.query, cookie: raced.cookie)
        async let second = try? b.complete(query: raced.query, cookie: raced.cookie)
        let outcomes = await [first, second].compactMap { $0 }
        XCTAssertEqual(outcomes.count, 1, "exactly one of two concurrent callbacks signs in")

        // Each instance with a store of its own (what a process's memory was): the other instance refuses.
        let alone = OIDCRelyingParty(settings: provider.settings(), logger: logger, now: clock.now)
        let elsewhere = try await walk(alone, login: "login-alone")
        do {
            _ = try await b.complete(query: elsewhere.query, cookie: elsewhere.cookie)
            XCTFail("a sign-in kept in another instance's memory completed")
        } catch {
            XCTAssertEqual(error.kind, .unknownState, "\(error)")
        }
        await storeA.close()
        await storeB.close()
    }

    func testStartedSignInsAreCappedAndExpire() async throws {
        let rp = party { $0.maximumPendingLogins = 3 }
        var callbacks: [BrowserCallback] = []
        for i in 0..<5 { callbacks.append(try await walk(rp, login: "login-\(i)")) }
        let count = try await rp.startedCount
        XCTAssertEqual(count, 3, "the oldest beyond the cap are forgotten")
        do {
            _ = try await rp.complete(query: callbacks[0].query, cookie: callbacks[0].cookie)
            XCTFail("a sign-in beyond the cap completed")
        } catch {
            XCTAssertEqual(error.kind, .unknownState)
        }
        _ = try await rp.complete(query: callbacks[4].query, cookie: callbacks[4].cookie)
        clock.advance(16 * 60)
        _ = try await walk(rp, login: "login-late")
        let afterExpiry = try await rp.startedCount
        XCTAssertEqual(afterExpiry, 1, "expired sign-ins are pruned when the next one starts")
    }

    /// A store that stopped answering (a database gone): the sign-in is refused with a clear error that names no path.
    func testAStoreThatFailsIsAClearRefusal() async throws {
        struct BrokenStore: ControlStore {
            func read<T: Sendable>(_ body: @escaping @Sendable (any StoreReading) throws -> T) async throws -> T {
                throw StoreError(.io, "/var/lib/warren/db.sqlite: disk I/O error")
            }
            func transaction<T: Sendable>(_ body: @escaping @Sendable (any StoreTransaction) throws -> T) async throws -> T {
                throw StoreError(.io, "/var/lib/warren/db.sqlite: disk I/O error")
            }
            func checkHealth() async throws {}
        }
        var logger = Logger(label: "test.oidc")
        logger.logLevel = .critical
        let broken = OIDCRelyingParty(settings: provider.settings(), store: BrokenStore(), logger: logger, now: clock.now)
        do {
            _ = try await broken.begin(loginID: "login-1")
            XCTFail("a sign-in started without its record")
        } catch {
            XCTAssertEqual(error.kind, .storage)
            XCTAssertEqual(error.httpStatus, 503)
            XCTAssertFalse(error.message.contains("/var/lib"), error.message)
        }
        // Started on a working instance, finished on the broken one.
        let callback = try await walk(party())
        do {
            _ = try await broken.complete(query: callback.query, cookie: callback.cookie)
            XCTFail("a sign-in finished without its record")
        } catch {
            XCTAssertEqual(error.kind, .storage)
            XCTAssertFalse(error.message.contains("/var/lib"), error.message)
        }
    }
}
