// Sign-in with OIDC behind a load balancer: two engines on one PostgreSQL database, linked as warren-control links
// its instances (PostgresCluster: change feed and presence). The device asks instance A to join and polls A; the
// person's browser opens the login link on A, which sends it to the provider; the provider sends it back to the
// callback on instance B. B finds the sign-in A started (in the store), checks everything, and approves the login
// waiting on A, whose poll then answers. A replay of the callback on either instance is refused.

import Foundation
import Logging
import TailscaleKeys
import WarrenControlPostgres
import WarrenControlStore
import WarrenPolicy
import WarrenTailcfg
import WarrenTestProbes
import XCTest
@testable import WarrenControlOIDC
@testable import WarrenControlServer

final class ClusterSignInTests: XCTestCase {
    struct Instance {
        let store: PostgresControlStore
        let cluster: PostgresCluster
        let engine: ControlEngine
        let follower: Task<Void, Never>
        let flow: OIDCLoginFlow
    }

    var provider: TestProvider!
    var instances: [Instance] = []

    override func setUp() async throws {
        provider = try await TestProvider.start()
    }

    override func tearDown() async throws {
        for instance in instances {
            instance.follower.cancel()
            await instance.follower.value
            await instance.cluster.stop()
            await instance.store.close()
        }
        instances = []
        await provider.stop()
    }

    /// Two instances on one fresh database, each with its own store, engine, cluster link and sign-in flow.
    func pair() async throws -> (Instance, Instance) {
        let server: PostgresTestServer
        do {
            server = try PostgresTestServer.shared()
        } catch let error as PostgresTestServer.Unavailable where !error.required {
            throw XCTSkip(error.description)
        }
        let database = try server.createDatabase(prefix: "wcoidc")
        var configuration = ControlConfiguration(serverURL: "http://127.0.0.1:9")
        configuration.interactiveLoginWait = .seconds(20)
        configuration.mapUpdateInterval = .milliseconds(5)
        var logger = Logger(label: "test.cluster-oidc")
        logger.logLevel = .critical
        for _ in 0..<2 {
            let store = try await PostgresControlStore(settings: PostgresSettings(
                host: server.socketDirectory, port: server.port, database: database, user: server.user, maxConnections: 4))
            let directory = try StoreDirectory(store: store, ipv4Prefix: configuration.ipv4Prefix, ipv6Prefix: configuration.ipv6Prefix)
            let engine = ControlEngine(configuration: configuration, directory: directory,
                                       policy: CompiledPolicy(policy: nil, options: CompileOptions(controlURL: configuration.serverURL)),
                                       logger: logger)
            let link = PostgresCluster(store: store, pollInterval: .milliseconds(300), retryInterval: .milliseconds(100))
            try await engine.attach(cluster: link)
            try await engine.load()
            let follower = Task { _ = try? await engine.followCluster(ephemeralSweepInterval: .milliseconds(50)) }
            let hooks = OIDCLoginHooks(
                isWaiting: { await engine.isWaitingLogin(id: $0) },
                approve: { id, user, _ in
                    let node = try await engine.approveInteractiveLogin(id: id, userID: user.id.rawValue, keyExpiry: nil)
                    return OIDCApprovedNode(id: node.id, name: node.givenName)
                })
            let party = OIDCRelyingParty(settings: provider.settings(), store: store, logger: logger)
            let flow = OIDCLoginFlow(relyingParty: party, store: store, hooks: hooks, expiry: .serverDefault, logger: logger)
            instances.append(Instance(store: store, cluster: link, engine: engine, follower: follower, flow: flow))
        }
        return (instances[0], instances[1])
    }

    func testASignInStartedOnOneInstanceIsFinishedOnTheOther() async throws {
        let (a, b) = try await pair()
        var generator = SystemRandomNumberGenerator()
        let machine = MachinePrivate.generate(using: &generator).publicKey
        var request = RegisterRequest()
        request.version = 130
        request.nodeKey = NodePrivate.generate(using: &generator).publicKey
        var info = HostinfoFields()
        info.hostname = "laptop"
        request.hostinfo = Hostinfo(info)
        let first = await a.engine.register(request, machineKey: machine)
        let loginID = try XCTUnwrap(URL(string: first.authURL), first.error).lastPathComponent

        // The device polls A for the outcome.
        var followup = request
        followup.followup = first.authURL
        let poll = Task { [followup] in await a.engine.register(followup, machineKey: machine) }

        // The browser opens the link on A, which sends it to the provider with a state A recorded in the store.
        let started = await a.flow.loginPage(id: loginID)
        let page = try XCTUnwrap(started, "A has no login page for its waiting login")
        let cookie = String(try XCTUnwrap(page.headers["Set-Cookie"]).split(separator: ";")[0])
        let back = try await Browser.authorize(try XCTUnwrap(page.headers["Location"]))

        // B learns of the waiting login through the change feed (within a second or so).
        let deadline = Date().addingTimeInterval(10)
        while await !b.engine.isWaitingLogin(id: loginID), Date() < deadline { try await Task.sleep(for: .milliseconds(50)) }
        let waitingOnB = await b.engine.isWaitingLogin(id: loginID)
        XCTAssertTrue(waitingOnB, "B does not see the login waiting on A")

        // The provider's callback reaches B: it signs the person in and approves the login waiting on A.
        let done = await b.flow.callback(query: back.rawQuery, cookieHeader: cookie)
        XCTAssertEqual(done.status, 200, done.body)
        let answer = await poll.value
        XCTAssertEqual(answer.error, "")
        XCTAssertTrue(answer.authURL.isEmpty, "A's poll answered with the node")
        XCTAssertTrue(answer.machineAuthorized)
        let users = try await a.store.read { try $0.users() }
        XCTAssertEqual(users.map(\.name), ["alice"])
        XCTAssertEqual(users.first?.providerGroups, ["staff"])
        let nodes = try await a.store.read { try $0.nodes() }
        XCTAssertEqual(nodes.map(\.userID), users.map(\.id))
        XCTAssertEqual(nodes.map(\.registerMethod), [.oidc])

        // The same callback again, on either instance: refused as already used.
        for (name, instance) in [("A", a), ("B", b)] {
            let replay = await instance.flow.callback(query: back.rawQuery, cookieHeader: cookie)
            XCTAssertEqual(replay.status, 410, "\(name): \(replay.body)")
        }
    }
}
