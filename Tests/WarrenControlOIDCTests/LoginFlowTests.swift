// The control server's side of a sign-in, in process: an engine with a waiting interactive login, the login page
// that redirects to the test provider, the callback that finds or creates the user and approves the login through
// the engine, so that the device's Followup poll answers. Refusals leave the login waiting.

import Foundation
import Logging
import TailscaleKeys
import WarrenControlStore
import WarrenPolicy
import WarrenTailcfg
import XCTest
@testable import WarrenControlOIDC
@testable import WarrenControlServer

final class LoginFlowTests: XCTestCase {
    var provider: TestProvider!
    var store: MemoryControlStore!
    var engine: ControlEngine!

    override func setUp() async throws {
        provider = try await TestProvider.start()
        store = MemoryControlStore()
        var configuration = ControlConfiguration(serverURL: "http://127.0.0.1:9")
        configuration.nodeKeyExpiry = .seconds(180 * 86_400)
        let directory = try StoreDirectory(store: store, ipv4Prefix: configuration.ipv4Prefix, ipv6Prefix: configuration.ipv6Prefix)
        var logger = Logger(label: "test.engine")
        logger.logLevel = .critical
        engine = ControlEngine(configuration: configuration, directory: directory, logger: logger)
        try await engine.load()
    }

    override func tearDown() async throws {
        await provider.stop()
    }

    func flow(expiry: OIDCLoginFlow.ExpiryRule = .serverDefault, _ adjust: (inout OIDCSettings) -> Void = { _ in }) -> OIDCLoginFlow {
        var settings = provider.settings()
        adjust(&settings)
        var logger = Logger(label: "test.oidc")
        logger.logLevel = .critical
        let engine = engine!
        let hooks = OIDCLoginHooks(
            isWaiting: { await engine.isWaitingLogin(id: $0) },
            approve: { id, user, expiry in
                let wanted: TailcfgTime??
                switch expiry {
                case .serverDefault: wanted = nil
                case .never: wanted = .some(nil)
                case .at(let date): wanted = .some(TailcfgTime(date: date))
                }
                let node = try await engine.approveInteractiveLogin(id: id, userID: user.id.rawValue, keyExpiry: wanted)
                return OIDCApprovedNode(id: node.id, name: node.givenName)
            })
        return OIDCLoginFlow(relyingParty: OIDCRelyingParty(settings: settings, logger: logger), store: store, hooks: hooks,
                             expiry: expiry, logger: logger)
    }

    /// A device asks to join without a key: the engine answers with the login URL; its id.
    func startDeviceLogin(hostname: String = "laptop") async throws -> (id: String, machine: MachinePublic, request: RegisterRequest) {
        var generator = SystemRandomNumberGenerator()
        let machine = MachinePrivate.generate(using: &generator).publicKey
        var request = RegisterRequest()
        request.version = 130
        request.nodeKey = NodePrivate.generate(using: &generator).publicKey
        var info = HostinfoFields()
        info.hostname = hostname
        request.hostinfo = Hostinfo(info)
        let response = await engine.register(request, machineKey: machine)
        let url = try XCTUnwrap(URL(string: response.authURL), response.error)
        return (url.lastPathComponent, machine, request)
    }

    /// The browser: the login page, the provider, back to the callback with the cookie the page set.
    func browse(_ flow: OIDCLoginFlow, login: String, keepCookie: Bool = true) async throws -> OIDCPage {
        let started = await flow.loginPage(id: login)
        let page = try XCTUnwrap(started, "no login page for a waiting login")
        XCTAssertEqual(page.status, 302, page.body)
        let location = try XCTUnwrap(page.headers["Location"])
        XCTAssertTrue(location.hasPrefix(provider.issuer + "/authorize?"), location)
        let setCookie = try XCTUnwrap(page.headers["Set-Cookie"])
        XCTAssertTrue(setCookie.contains("HttpOnly") && setCookie.contains("Path=/oidc/callback"), setCookie)
        let cookie = String(setCookie.split(separator: ";")[0])
        let back = try await Browser.authorize(location)
        return await flow.callback(query: back.rawQuery, cookieHeader: keepCookie ? "other=1; " + cookie : "other=1")
    }

    func testSignInCreatesTheUserAndApprovesTheWaitingDevice() async throws {
        let login = try await startDeviceLogin()
        let flow = flow()
        // The device polls for the outcome meanwhile.
        var followup = login.request
        followup.followup = "http://127.0.0.1:9/register/" + login.id
        let engine = engine!
        let machine = login.machine
        let poll = Task { await engine.register(followup, machineKey: machine) }
        let page = try await browse(flow, login: login.id)
        XCTAssertEqual(page.status, 200, page.body)
        XCTAssertTrue(page.body.contains("Signed in as alice"), page.body)
        let answer = await poll.value
        XCTAssertEqual(answer.error, "")
        XCTAssertEqual(answer.authURL, "", "the Followup poll answered with the node")
        let users = try await store.read { try $0.users() }
        XCTAssertEqual(users.count, 1)
        let user = try XCTUnwrap(users.first)
        XCTAssertEqual(user.name, "alice")
        XCTAssertEqual(user.email, "alice@example.com")
        XCTAssertEqual(user.displayName, "Alice Example")
        XCTAssertEqual(user.providerID, provider.issuer + "/user-1")
        XCTAssertEqual(user.provider, "oidc")
        XCTAssertEqual(user.pictureURL, "https://pictures.example.com/alice.png", "the token's picture claim is kept")
        let nodes = await engine.allNodes()
        XCTAssertEqual(nodes.count, 1)
        XCTAssertEqual(nodes.first?.userID, user.id.rawValue)
        let waiting = await engine.isWaitingLogin(id: login.id)
        XCTAssertFalse(waiting)
        // The server's node_key_expiry applies (180 days from now).
        let expiry = try XCTUnwrap(nodes.first?.keyExpiry)
        XCTAssertGreaterThan(expiry, TailcfgTime(date: Date().addingTimeInterval(179 * 86_400)))
    }

    func testTheSameSubjectSignsInAgainAsTheSameUserAndALocalUserIsLinkedByEmail() async throws {
        // A local user made by an admin with this address: the first sign-in links it.
        let local = try await store.transaction { try $0.createUser(name: "alice-local", email: "alice@example.com", now: Date()) }
        let flow = flow()
        let first = try await startDeviceLogin(hostname: "one")
        let page = try await browse(flow, login: first.id)
        XCTAssertEqual(page.status, 200, page.body)
        let second = try await startDeviceLogin(hostname: "two")
        // The provider now says another address: the user is still found by issuer + subject.
        provider.state.withLock { $0.identity.email = "alice@new.example" }
        let again = try await browse(flow, login: second.id)
        XCTAssertEqual(again.status, 200, again.body)
        let users = try await store.read { try $0.users() }
        XCTAssertEqual(users.map(\.id), [local.id], "no second user")
        XCTAssertEqual(users.first?.email, "alice@new.example", "the address follows the provider")
        XCTAssertEqual(users.first?.providerID, provider.issuer + "/user-1")
        let owners = Set(await engine.allNodes().map(\.userID))
        XCTAssertEqual(owners, [local.id.rawValue])
    }

    func testAnUnverifiedAddressDoesNotLinkALocalUser() async throws {
        _ = try await store.transaction { try $0.createUser(name: "alice", email: "alice@example.com", now: Date()) }
        provider.state.withLock { $0.identity.emailVerified = false }
        let login = try await startDeviceLogin()
        let page = try await browse(flow(), login: login.id)
        XCTAssertEqual(page.status, 200, page.body)
        let users = try await store.read { try $0.users() }.sorted { $0.id < $1.id }
        XCTAssertEqual(users.count, 2, "a new user, not the local one")
        XCTAssertNil(users[0].providerID)
        XCTAssertEqual(users[1].name, "alice-2")
        XCTAssertEqual(users[1].email, "", "an unverified address is not stored")
    }

    func testExpiryFromTheTokenOrFromOIDCExpiry() async throws {
        let login = try await startDeviceLogin()
        let page = try await browse(flow(expiry: .fromToken), login: login.id)
        XCTAssertEqual(page.status, 200, page.body)
        let all = await engine.allNodes()
        let node = try XCTUnwrap(all.first)
        // The test provider's tokens live 300 s.
        let expiry = try XCTUnwrap(node.keyExpiry)
        XCTAssertLessThan(expiry, TailcfgTime(date: Date().addingTimeInterval(301)))
        XCTAssertGreaterThan(expiry, TailcfgTime(date: Date().addingTimeInterval(200)))

        let other = try await startDeviceLogin(hostname: "never")
        let second = try await browse(flow(expiry: .after(.zero)), login: other.id)
        XCTAssertEqual(second.status, 200, second.body)
        let both = await engine.allNodes()
        let never = try XCTUnwrap(both.first { $0.hostname == "never" })
        XCTAssertNil(never.keyExpiry, "oidc.expiry 0: no expiry")
    }

    func testRefusalsArePagesAndTheDeviceKeepsWaiting() async throws {
        let login = try await startDeviceLogin()
        // Not in an allowed group.
        let refused = try await browse(flow { $0.allowedGroups = ["admins"] }, login: login.id)
        XCTAssertEqual(refused.status, 403)
        XCTAssertTrue(refused.body.contains("Sign-in refused") && refused.body.contains("groups"), refused.body)
        // A wrong audience.
        provider.state.withLock { $0.mutate = { $0.aud = ["other"] } }
        let wrongAudience = try await browse(flow(), login: login.id)
        XCTAssertEqual(wrongAudience.status, 403)
        XCTAssertTrue(wrongAudience.body.contains("not this client"), wrongAudience.body)
        provider.state.withLock { $0.mutate = { _ in } }
        // Another browser (no cookie).
        let noCookie = try await browse(flow(), login: login.id, keepCookie: false)
        XCTAssertEqual(noCookie.status, 403)
        // Nothing was created, and the device still waits: a good sign-in then approves it.
        let users = try await store.read { try $0.users() }
        XCTAssertEqual(users.count, 0)
        let waiting = await engine.isWaitingLogin(id: login.id)
        XCTAssertTrue(waiting)
        let good = try await browse(flow(), login: login.id)
        XCTAssertEqual(good.status, 200, good.body)
    }

    func testNoPageForALoginThatIsNotWaitingAndAReplayedCallbackIsRefused() async throws {
        let flow = flow()
        let none = await flow.loginPage(id: "no-such-login")
        XCTAssertNil(none)
        let login = try await startDeviceLogin()
        let started = await flow.loginPage(id: login.id)
        let page = try XCTUnwrap(started)
        let cookie = String(try XCTUnwrap(page.headers["Set-Cookie"]).split(separator: ";")[0])
        let back = try await Browser.authorize(try XCTUnwrap(page.headers["Location"]))
        let first = await flow.callback(query: back.rawQuery, cookieHeader: cookie)
        XCTAssertEqual(first.status, 200, first.body)
        let replay = await flow.callback(query: back.rawQuery, cookieHeader: cookie)
        XCTAssertEqual(replay.status, 410, replay.body)
        let approvedAlready = await flow.loginPage(id: login.id)
        XCTAssertNil(approvedAlready, "an approved login has no page")
        let garbage = await flow.callback(query: "state=%zz", cookieHeader: nil)
        XCTAssertEqual(garbage.status, 400)
    }

    func testAdminApprovalStaysAvailable() async throws {
        let login = try await startDeviceLogin()
        _ = await flow().loginPage(id: login.id)
        let admin = try await store.transaction { try $0.createUser(name: "bob", now: Date()) }
        let node = try await engine.approveInteractiveLogin(id: login.id, userID: admin.id.rawValue)
        XCTAssertEqual(node.userID, admin.id.rawValue)
    }

    /// oidc.groups_in_policy: a sign-in that changes the person's groups sends the devices already online what the
    /// policy now gives them (peers and packet filter), through their open map streams.
    func testASignInThatChangesTheGroupsSendsPeersAndFiltersAgain() async throws {
        let policy = CompiledPolicy(policy: try PolicyParser.parse("""
            {"groups": {"group:eng": []}, "acls": [{"action": "accept", "src": ["group:eng"], "dst": ["group:eng:*"]}]}
            """), options: CompileOptions(providerGroups: true))
        var configuration = ControlConfiguration(serverURL: "http://127.0.0.1:9")
        configuration.mapUpdateInterval = .zero
        let directory = try StoreDirectory(store: store, ipv4Prefix: configuration.ipv4Prefix, ipv6Prefix: configuration.ipv6Prefix)
        var logger = Logger(label: "test.engine")
        logger.logLevel = .critical
        engine = ControlEngine(configuration: configuration, directory: directory, policy: policy, logger: logger)
        try await engine.load()
        let engine = engine!

        provider.state.withLock { $0.identity.groups = ["eng"] }
        let laptop = try await startDeviceLogin(hostname: "laptop")
        let first = try await browse(flow(), login: laptop.id)
        XCTAssertEqual(first.status, 200, first.body)
        var request = MapRequest()
        request.version = 130
        request.nodeKey = laptop.request.nodeKey
        var generator = SystemRandomNumberGenerator()
        request.discoKey = DiscoPrivate.generate(using: &generator).publicKey
        request.stream = true
        guard case .stream(let outbox) = try await engine.map(request, machineKey: laptop.machine) else {
            return XCTFail("expected a map stream")
        }
        // A stream that stays quiet fails the test instead of hanging it.
        let watchdog = Task {
            try await Task.sleep(for: .seconds(20))
            outbox.finish()
        }
        defer { watchdog.cancel() }
        var peers: Set<Int64> = []
        var sources: Set<String> = []
        func apply(_ message: MapResponse) {
            if let full = message.peers { peers = Set(full.map(\.id)) }
            for node in message.peersChanged ?? [] { peers.insert(node.id) }
            for id in message.peersRemoved ?? [] { peers.remove(id) }
            if let filter = message.packetFilter { sources = Set(filter.flatMap(\.srcIPs)) }
        }
        func read(until done: () -> Bool) async {
            while !done(), let message = await outbox.next() { apply(message) }
        }
        let full = await outbox.next()
        apply(try XCTUnwrap(full, "the full map"))
        XCTAssertEqual(peers, [], "alone in group:eng")

        // A second device in eng: the laptop gets it as a peer, and a filter that lets it in.
        let phone = try await startDeviceLogin(hostname: "phone")
        let second = try await browse(flow(), login: phone.id)
        XCTAssertEqual(second.status, 200, second.body)
        let allNodes = await engine.allNodes()
        let phoneNode = try XCTUnwrap(allNodes.first { $0.hostname == "phone" })
        let phoneAddress = try XCTUnwrap(phoneNode.ipv4).description
        await read { peers.contains(phoneNode.id) && sources.contains(phoneAddress) }
        XCTAssertTrue(peers.contains(phoneNode.id), "the laptop's stream got the phone")
        XCTAssertTrue(sources.contains(phoneAddress), "the laptop's filter lets the phone in: \(sources)")

        // The provider moves alice to ops; her next sign-in (a third device) drops eng, and the laptop's stream loses
        // the phone and the filter that let it in.
        provider.state.withLock { $0.identity.groups = ["ops"] }
        let tablet = try await startDeviceLogin(hostname: "tablet")
        let third = try await browse(flow(), login: tablet.id)
        XCTAssertEqual(third.status, 200, third.body)
        await read { !peers.contains(phoneNode.id) && !sources.contains(phoneAddress) }
        XCTAssertFalse(peers.contains(phoneNode.id), "the laptop's stream lost the phone")
        XCTAssertFalse(sources.contains(phoneAddress), "the laptop's filter no longer lets the phone in: \(sources)")
        let stored = try await store.read { try $0.users().first?.providerGroups }
        XCTAssertEqual(stored, ["ops"])
        let methods = try await store.read { try $0.nodes().map(\.registerMethod) }
        XCTAssertEqual(methods, [.oidc, .oidc, .oidc], "nodes that sign in are recorded as oidc")
    }
}
