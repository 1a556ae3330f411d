// `warren-control import headscale` below the end-to-end test: the importer on hand-written and randomized rows of a
// headscale database laid out by HeadscaleFixture (every field carried, or refused naming the row), the schema
// checks, the all-or-nothing write, and the command's own refusals and dry run.

import Foundation
import GRDB
import TailscaleKeys
import WarrenControlSQLite
import WarrenControlStore
import WarrenPacket
import WarrenTestSupport
import XCTest

final class HeadscaleImportTests: XCTestCase {
    private var directory = ""

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("hs-import-\(getpid())-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func randomKey<K: TailscalePublicKey>(_ type: K.Type, _ generator: inout some RandomNumberGenerator) -> K {
        K(rawRepresentation: (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) })!
    }

    private func importInto(_ path: String, _ plan: HeadscaleImportPlan) throws -> (SQLiteControlStore, HeadscaleImportResult) {
        let store = try SQLiteControlStore(path: path)
        let result = try store.transactionSync { try HeadscaleImport.apply(plan, to: $0) }
        return (store, result)
    }

    private func assertRefused(_ body: () throws -> Void, containing texts: [String], case name: String = "",
                               file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), name, file: file, line: line) { error in
            guard let refusal = error as? HeadscaleImportError else {
                return XCTFail("\(name): not a HeadscaleImportError: \(error)", file: file, line: line)
            }
            for text in texts {
                XCTAssertTrue(refusal.description.contains(text), "\(name): \"\(refusal)\" does not say \(text.debugDescription)",
                              file: file, line: line)
            }
        }
    }

    // MARK: every field

    func testEveryFieldOfAV029DatabaseIsCarried() throws {
        var generator = SeededGenerator(seed: 29)
        let path = directory + "/headscale.sqlite"
        let hs = try HeadscaleFixture(path: path, layout: .v029)
        let now = Date()
        let created = Date(timeIntervalSince1970: 1_767_000_000.25)
        let alice = try hs.user(name: "alice", displayName: "Alice Liddell", email: "alice@example.com",
                                providerIdentifier: "https://idp.example/alice", provider: "oidc",
                                picture: "https://idp.example/alice.png", created: created)
        let bob = try hs.user(name: "bob", picture: "not a URL", created: created)
        try hs.user(name: "gone", created: created, deleted: now)
        // A legacy key (plaintext, 48 hex digits), a 0.28+ key (prefix + bcrypt), an expired one, a spent one-off one.
        let legacyText = "0123456789abcdef0123456789abcdef0123456789abcdef"
        let legacy = try hs.preAuthKey(key: legacyText, userID: alice, reusable: true, ephemeral: true, tags: ["tag:ci"],
                                       expiration: now.addingTimeInterval(86_400), created: created)
        let hashed = try hs.preAuthKey(prefix: "AbCdEfGh_-12", userID: bob, reusable: true, expiration: now.addingTimeInterval(3600))
        try hs.preAuthKey(key: String(repeating: "e", count: 48), userID: bob, expiration: now.addingTimeInterval(-60))
        try hs.preAuthKey(key: String(repeating: "a", count: 48), userID: bob, used: true, expiration: nil)
        try hs.apiKey(prefix: "apiprefix123", expiration: now.addingTimeInterval(90 * 86_400))

        let m1 = randomKey(MachinePublic.self, &generator), n1 = randomKey(NodePublic.self, &generator)
        let d1 = randomKey(DiscoPublic.self, &generator)
        let expiry = Date(timeIntervalSince1970: 1_800_000_000.5)
        let lastSeen = Date(timeIntervalSince1970: 1_790_000_000)
        let hostinfo = #"{"Hostname":"laptop","OS":"linux","RoutableIPs":["10.1.0.0/16","192.168.7.0/24"],"RequestTags":null}"#
        let laptop = try hs.node(.init(
            machineKey: m1.description, nodeKey: n1.description, discoKey: d1.description,
            endpoints: #"["198.51.100.7:41641","[2001:db8::7]:41641"]"#, hostInfo: hostinfo, ipv4: "100.64.0.7",
            ipv6: "fd7a:115c:a1e0::7", hostname: "Laptop.local", givenName: "laptop", userID: alice, registerMethod: "authkey",
            tags: "null", authKeyID: legacy, lastSeen: HeadscaleFixture.goTime(lastSeen, offsetMinutes: 120),
            expiry: HeadscaleFixture.goTime(expiry), approvedRoutes: #"["10.1.0.0/16"]"#))
        // A tagged node that 0.29 keeps without a user, registered with the hashed key.
        let m2 = randomKey(MachinePublic.self, &generator), n2 = randomKey(NodePublic.self, &generator)
        let router = try hs.node(.init(
            machineKey: m2.description, nodeKey: n2.description, endpoints: nil, hostInfo: nil, ipv4: "100.64.0.9", ipv6: nil,
            hostname: "router", givenName: "router", userID: nil, registerMethod: "cli", tags: #"["tag:router","tag:exit"]"#,
            authKeyID: hashed, expiry: "0001-01-01 00:00:00+00:00", approvedRoutes: "null"))
        // A tagged node without a user and without a key: owned by the user the import adds.
        let m5 = randomKey(MachinePublic.self, &generator), n5 = randomKey(NodePublic.self, &generator)
        let printer = try hs.node(.init(machineKey: m5.description, nodeKey: n5.description, ipv4: "100.64.0.11",
                                        hostname: "printer", givenName: "printer", userID: nil, registerMethod: "cli",
                                        tags: #"["tag:printer"]"#))
        // An OIDC node of bob's with no expiry and no addresses yet.
        let m3 = randomKey(MachinePublic.self, &generator), n3 = randomKey(NodePublic.self, &generator)
        let phone = try hs.node(.init(machineKey: m3.description, nodeKey: n3.description, hostname: "phone", givenName: "phone-1",
                                      userID: bob, registerMethod: "oidc", approvedRoutes: nil))
        let m4 = randomKey(MachinePublic.self, &generator), n4 = randomKey(NodePublic.self, &generator)
        let old = try hs.node(.init(machineKey: m4.description, nodeKey: n4.description, ipv4: "100.64.0.20", hostname: "old", givenName: "old",
                          userID: bob, deleted: HeadscaleFixture.goTime(now)))
        try hs.policy(#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#)
        try hs.policy(#"{"acls": [{"action": "accept", "src": ["alice@"], "dst": ["tag:router:*"]}], "tagOwners": {"tag:router": ["alice@"]}}"#)
        try hs.policy("{}", deleted: true)
        try hs.close()

        let snapshot = try HeadscaleImport.read(path: path)
        XCTAssertEqual(snapshot.schemaGeneration, "0.29.x")
        XCTAssertEqual(snapshot.recordedVersion, "v0.29.2")
        XCTAssertEqual(snapshot.users.first?.email, "alice@example.com")
        XCTAssertEqual(snapshot.users.first?.providerIdentifier, "https://idp.example/alice")
        let plan = try HeadscaleImport.plan(snapshot, now: now)
        XCTAssertFalse(plan.leftBehind.contains { $0.contains("pre-auth key \(hashed)") }, "a bcrypt-hashed key is carried")
        XCTAssertEqual(plan.preAuthKeys.map(\.headscaleID), [legacy, hashed])
        XCTAssertTrue(plan.leftBehind.contains { $0.contains("expired") })
        XCTAssertTrue(plan.leftBehind.contains { $0.contains("already used") })
        XCTAssertEqual(plan.apiKeys.map(\.key.prefix), ["apiprefix123"], "API keys are carried")
        XCTAssertTrue(plan.leftBehind.contains { $0.contains("users row 3") && $0.contains("nodes row \(old)") })

        let (store, result) = try importInto(directory + "/warren.sqlite", plan)
        XCTAssertEqual(result.nodes.map(\.headscale), [laptop, router, printer, phone])
        let (users, nodes, keys, policy, apiKeys) = try store.transactionSync { t in
            (try t.users(), try t.nodes(), try t.preAuthKeys(userID: nil), try t.currentPolicy(), try t.apiKeys())
        }
        XCTAssertEqual(users.map(\.name), ["alice", "bob", HeadscaleImport.taggedDevicesUser])
        guard users.count == 3 else { return }
        XCTAssertEqual(users[0].displayName, "Alice Liddell")
        XCTAssertEqual(users[0].created.timeIntervalSince1970, created.timeIntervalSince1970, accuracy: 1e-6)
        XCTAssertEqual(users[0].email, "alice@example.com")
        XCTAssertEqual(users[0].providerID, "https://idp.example/alice")
        XCTAssertEqual(users[0].provider, "oidc")
        XCTAssertEqual(users[0].pictureURL, "https://idp.example/alice.png")
        XCTAssertEqual([users[1].email, users[1].provider, users[1].pictureURL], ["", "", ""], "a picture that is no URL is left out")
        XCTAssertNil(users[1].providerID)
        XCTAssertEqual(keys.count, 2)
        let key = try XCTUnwrap(keys.first { $0.prefix == "0123456789ab" })
        XCTAssertEqual(key.hashScheme, .sha256)
        let hashedKey = try XCTUnwrap(keys.first { $0.prefix == "AbCdEfGh_-12" })
        XCTAssertEqual(hashedKey.hashScheme, .bcrypt)
        XCTAssertEqual(hashedKey.secretHash, Array(HeadscaleFixture.unmatchedBcrypt.utf8))
        XCTAssertEqual(hashedKey.userID, users[1].id)
        XCTAssertEqual([hashedKey.reusable, hashedKey.ephemeral, hashedKey.used], [true, false, false])
        XCTAssertEqual(apiKeys.map(\.prefix), ["apiprefix123"])
        XCTAssertEqual(apiKeys.first?.hashScheme, .bcrypt)
        XCTAssertEqual(try XCTUnwrap(apiKeys.first?.expiration).timeIntervalSince1970,
                       now.addingTimeInterval(90 * 86_400).timeIntervalSince1970, accuracy: 1e-6)
        XCTAssertEqual(key.userID, users[0].id)
        XCTAssertEqual([key.reusable, key.ephemeral, key.used], [true, true, false])
        XCTAssertEqual(key.tags, ["tag:ci"])
        XCTAssertEqual(try XCTUnwrap(key.expiration).timeIntervalSince1970, now.addingTimeInterval(86_400).timeIntervalSince1970, accuracy: 1e-6)

        let l = try XCTUnwrap(nodes.first { $0.givenName == "laptop" })
        XCTAssertEqual(l.machineKey, m1)
        XCTAssertEqual(l.nodeKey, n1)
        XCTAssertEqual(l.discoKey, d1)
        XCTAssertEqual(l.userID, users[0].id)
        XCTAssertEqual(l.hostname, "Laptop.local")
        XCTAssertEqual(l.ipv4, IPAddress("100.64.0.7"))
        XCTAssertEqual(l.ipv6, IPAddress("fd7a:115c:a1e0::7"))
        XCTAssertEqual(l.endpoints, ["198.51.100.7:41641", "[2001:db8::7]:41641"])
        XCTAssertEqual(l.hostinfo, hostinfo)
        XCTAssertEqual(l.tags, [])
        XCTAssertEqual(l.advertisedRoutes, [IPPrefix("10.1.0.0/16")!, IPPrefix("192.168.7.0/24")!])
        XCTAssertEqual(l.approvedRoutes, [IPPrefix("10.1.0.0/16")!])
        XCTAssertEqual(try XCTUnwrap(l.expiry).timeIntervalSince1970, expiry.timeIntervalSince1970, accuracy: 1e-6)
        XCTAssertEqual(try XCTUnwrap(l.lastSeen).timeIntervalSince1970, lastSeen.timeIntervalSince1970, accuracy: 1e-6)
        XCTAssertEqual(l.registerMethod, .authKey)
        XCTAssertEqual(l.authKeyID, key.id)
        XCTAssertTrue(l.ephemeral, "a node of an ephemeral key is ephemeral (headscale derives it from the key)")
        XCTAssertTrue(l.authorized)

        let r = try XCTUnwrap(nodes.first { $0.givenName == "router" })
        XCTAssertEqual(r.userID, users[1].id, "a tagged node without a user is owned by its pre-auth key's user (carried or not)")
        XCTAssertEqual(nodes.first { $0.givenName == "printer" }?.userID, users[2].id,
                       "a tagged node without a user or a key is owned by tagged-devices")
        XCTAssertEqual(nodes.first { $0.givenName == "printer" }?.tags, ["tag:printer"])
        XCTAssertEqual(r.tags, ["tag:router", "tag:exit"])
        XCTAssertNil(r.expiry, "headscale's zero time means no expiry")
        XCTAssertNil(r.discoKey, "headscale's zero disco key means none")
        XCTAssertEqual(r.authKeyID, hashedKey.id)
        XCTAssertNil(r.ipv6)
        XCTAssertEqual(r.registerMethod, .cli)
        XCTAssertEqual(r.approvedRoutes, [])
        XCTAssertFalse(r.ephemeral)

        let p = try XCTUnwrap(nodes.first { $0.givenName == "phone-1" })
        XCTAssertEqual(p.registerMethod, .oidc, "headscale's oidc nodes keep their method")
        XCTAssertNil(p.ipv4)
        XCTAssertEqual(p.userID, users[1].id)
        XCTAssertFalse(nodes.contains { $0.hostname == "old" })

        XCTAssertEqual(policy?.version, 1)
        XCTAssertTrue(policy?.text.contains("tag:router") == true, "the newest live policy row is carried")
        // The addresses are held: the allocator never hands them out again.
        try store.transactionSync { t in
            XCTAssertTrue(try t.wasEverAllocated(IPAddress("100.64.0.7")!))
            XCTAssertTrue(try t.wasEverAllocated(IPAddress("100.64.0.9")!))
            XCTAssertFalse(try t.wasEverAllocated(IPAddress("100.64.0.20")!))
        }

        // The legacy key keeps working as the same text; a 0.28+ key text with a secret its hash does not match does not.
        try store.transactionSync { t in
            XCTAssertEqual(try t.validPreAuthKey(legacyText, now: now).id, key.id)
            XCTAssertThrowsError(try t.validPreAuthKey("hskey-auth-AbCdEfGh_-12-" + String(repeating: "x", count: 64), now: now))
            XCTAssertThrowsError(try t.validPreAuthKey("0123456789abcdef0123456789abcdef0123456789abcdee", now: now),
                                 "a legacy key with another secret must not match")
        }
        try store.close()
    }

    func testAV027DatabaseWithForcedTagsAndOnlyPlaintextKeys() throws {
        var generator = SeededGenerator(seed: 27)
        let path = directory + "/headscale.sqlite"
        let hs = try HeadscaleFixture(path: path, layout: .v027)
        let ops = try hs.user(name: "ops")
        let keyText = "fedcba9876543210fedcba9876543210fedcba9876543210"
        let key = try hs.preAuthKey(key: keyText, userID: ops, tags: ["tag:server"], expiration: nil)
        let m = randomKey(MachinePublic.self, &generator), n = randomKey(NodePublic.self, &generator)
        // 0.27 kept the user on tagged nodes.
        try hs.node(.init(machineKey: m.description, nodeKey: n.description, ipv4: "100.64.0.1", ipv6: "fd7a:115c:a1e0::1",
                          hostname: "db", givenName: "db", userID: ops, tags: #"["tag:server"]"#, authKeyID: key,
                          expiry: "2027-05-01 12:00:00.123+02:00"))
        try hs.close()
        let snapshot = try HeadscaleImport.read(path: path)
        XCTAssertEqual(snapshot.schemaGeneration, "0.27.x")
        XCTAssertNil(snapshot.recordedVersion)
        let plan = try HeadscaleImport.plan(snapshot, now: Date())
        XCTAssertEqual(plan.leftBehind, [])
        let (store, _) = try importInto(directory + "/warren.sqlite", plan)
        let (nodes, keys) = try store.transactionSync { t in (try t.nodes(), try t.preAuthKeys(userID: nil)) }
        XCTAssertEqual(nodes.first?.tags, ["tag:server"], "forced_tags is read as the tags")
        XCTAssertEqual(nodes.first?.authKeyID, keys.first?.id)
        XCTAssertEqual(try XCTUnwrap(nodes.first?.expiry).timeIntervalSince1970, 1_809_165_600.123, accuracy: 1e-6)
        XCTAssertEqual(keys.first?.tags, ["tag:server"])
        try store.transactionSync { t in
            _ = try t.usePreAuthKey(keyText, now: Date())
            XCTAssertThrowsError(try t.usePreAuthKey(keyText, now: Date()), "a one-off legacy key is spent once")
        }
        try store.close()
    }

    // MARK: randomized rows

    func testRandomizedRowsAreCarriedFieldForField() throws {
        var generator = SeededGenerator(seed: 0x6873)
        for round in 0..<4 {
            let path = directory + "/random-\(round).sqlite"
            let hs = try HeadscaleFixture(path: path, layout: round % 2 == 0 ? .v029 : .v027)
            let userCount = Int.random(in: 1...5, using: &generator)
            var userIDs: [Int64] = []
            for u in 0..<userCount {
                userIDs.append(try hs.user(name: "user\(u)x\(Int.random(in: 0...999, using: &generator))",
                                           displayName: Bool.random(using: &generator) ? "Name \(u)" : ""))
            }
            struct Expected { var machine: MachinePublic; var node: NodePublic; var disco: DiscoPublic?; var v4: String?; var v6: String?
                              var name: String; var host: String; var user: Int; var tags: [String]; var routes: [String]
                              var announced: [String]; var endpoints: [String]; var expiry: Date?; var seen: Date? }
            var expected: [Expected] = []
            let count = Int.random(in: 1...40, using: &generator)
            for i in 0..<count {
                let tags = Bool.random(using: &generator) ? ["tag:t\(Int.random(in: 0...3, using: &generator))"] : []
                let routes = (0..<Int.random(in: 0...2, using: &generator)).map { "10.\(i).\($0).0/24" }
                let announced = routes + (Bool.random(using: &generator) ? ["0.0.0.0/0", "::/0"] : [])
                let endpoints = (0..<Int.random(in: 0...3, using: &generator)).map { "203.0.113.\($0 + 1):\(41641 + i)" }
                let expiry: Date? = Bool.random(using: &generator) ? Date(timeIntervalSince1970: Double(Int.random(in: 1_700_000_000...1_900_000_000, using: &generator)) + 0.5) : nil
                let seen: Date? = Bool.random(using: &generator) ? Date(timeIntervalSince1970: Double(Int.random(in: 1_700_000_000...1_800_000_000, using: &generator))) : nil
                let e = Expected(
                    machine: randomKey(MachinePublic.self, &generator), node: randomKey(NodePublic.self, &generator),
                    disco: Bool.random(using: &generator) ? randomKey(DiscoPublic.self, &generator) : nil,
                    v4: Bool.random(using: &generator) || i == 0 ? "100.64.\(i / 200).\(i % 200 + 1)" : nil,
                    v6: Bool.random(using: &generator) ? "fd7a:115c:a1e0::\(String(i + 1, radix: 16))" : nil,
                    name: "host-\(i)", host: "Host \(i)", user: Int.random(in: 0..<userCount, using: &generator), tags: tags,
                    routes: routes, announced: announced, endpoints: endpoints, expiry: expiry, seen: seen)
                expected.append(e)
                let hostinfo = #"{"Hostname":"Host \#(i)","RoutableIPs":\#(HeadscaleFixture.json(announced))}"#
                try hs.node(.init(
                    machineKey: e.machine.description, nodeKey: e.node.description,
                    discoKey: e.disco?.description ?? "discokey:" + String(repeating: "0", count: 64),
                    endpoints: HeadscaleFixture.json(endpoints), hostInfo: hostinfo, ipv4: e.v4, ipv6: e.v6, hostname: e.host,
                    givenName: e.name, userID: userIDs[e.user], registerMethod: ["authkey", "cli", "oidc"][i % 3],
                    tags: HeadscaleFixture.json(tags), lastSeen: seen.map { HeadscaleFixture.goTime($0, offsetMinutes: -300) },
                    expiry: expiry.map { HeadscaleFixture.goTime($0) }, approvedRoutes: HeadscaleFixture.json(routes)))
            }
            try hs.close()
            let plan = try HeadscaleImport.plan(try HeadscaleImport.read(path: path), now: Date())
            let (store, _) = try importInto(directory + "/warren-\(round).sqlite", plan)
            let (users, nodes) = try store.transactionSync { t in (try t.users(), try t.nodes()) }
            XCTAssertEqual(nodes.count, count)
            for (e, node) in zip(expected, nodes) {
                XCTAssertEqual(node.machineKey, e.machine)
                XCTAssertEqual(node.nodeKey, e.node)
                XCTAssertEqual(node.discoKey, e.disco)
                XCTAssertEqual(node.ipv4, e.v4.flatMap(IPAddress.init))
                XCTAssertEqual(node.ipv6, e.v6.flatMap(IPAddress.init))
                XCTAssertEqual(node.givenName, e.name)
                XCTAssertEqual(node.hostname, e.host)
                XCTAssertEqual(users.first { $0.id == node.userID }?.name, plan.users[e.user].user.name)
                XCTAssertEqual(node.tags, e.tags)
                XCTAssertEqual(node.approvedRoutes.map(\.description), e.routes)
                XCTAssertEqual(node.advertisedRoutes.map(\.description), e.announced)
                XCTAssertEqual(node.endpoints, e.endpoints)
                XCTAssertEqual(node.expiry?.timeIntervalSince1970 ?? -1, e.expiry?.timeIntervalSince1970 ?? -1, accuracy: 1e-6)
                XCTAssertEqual(node.lastSeen?.timeIntervalSince1970 ?? -1, e.seen?.timeIntervalSince1970 ?? -1, accuracy: 1e-6)
            }
            try store.close()
        }
    }

    // MARK: refusals

    func testBadRowsAreRefusedNamingTheRow() throws {
        var generator = SeededGenerator(seed: 7)
        let good = { (g: inout SeededGenerator) -> HeadscaleFixture.NodeRow in
            HeadscaleFixture.NodeRow(machineKey: self.randomKey(MachinePublic.self, &g).description,
                                     nodeKey: self.randomKey(NodePublic.self, &g).description,
                                     ipv4: "100.64.0.1", hostname: "a", givenName: "a", userID: 1)
        }
        // Each case: a change to a second node (row 2) or to the database, and what the refusal must say.
        var cases: [(String, (HeadscaleFixture, inout HeadscaleFixture.NodeRow) throws -> Void, [String])] = []
        cases.append(("same IPv4", { _, n in n.ipv4 = "100.64.0.1" }, ["nodes row 2", "100.64.0.1", "nodes row 1"]))
        cases.append(("same name", { _, n in n.givenName = "A" }, ["nodes row 2", "\"a\"", "nodes row 1"]))
        cases.append(("bad machine key", { _, n in n.machineKey = "mkey:zz" }, ["nodes row 2", "machine_key"]))
        cases.append(("node key as machine key", { _, n in n.machineKey = n.nodeKey }, ["nodes row 2", "machine_key", "mkey:"]))
        cases.append(("bad address", { _, n in n.ipv4 = "fd7a::1" }, ["nodes row 2", "ipv4"]))
        cases.append(("reserved address", { _, n in n.ipv4 = "100.100.100.100" }, ["nodes row 2", "reserves"]))
        cases.append(("bad routes", { _, n in n.approvedRoutes = #"{"a":1}"# }, ["nodes row 2", "approved_routes"]))
        cases.append(("bad route", { _, n in n.approvedRoutes = #"["10.0.0.0/33"]"# }, ["nodes row 2", "approved_routes", "10.0.0.0/33"]))
        cases.append(("bad hostinfo", { _, n in n.hostInfo = "[1,2" }, ["nodes row 2", "host_info"]))
        cases.append(("bad tag", { _, n in n.tags = #"["server"]"# }, ["nodes row 2", "tag"]))
        cases.append(("bad time", { _, n in n.expiry = "next tuesday" }, ["nodes row 2", "expiry", "next tuesday"]))
        cases.append(("bad method", { _, n in n.registerMethod = "magic" }, ["nodes row 2", "register_method", "magic"]))
        cases.append(("bad label", { _, n in n.givenName = "no_underscores" }, ["nodes row 2", "given_name"]))
        cases.append(("no owner", { _, n in n.userID = nil }, ["nodes row 2", "no user_id and no tags"]))
        cases.append(("missing user", { _, n in n.userID = 42 }, ["nodes row 2", "user_id 42"]))
        cases.append(("same user name", { hs, _ in try hs.user(name: "alice", providerIdentifier: "oidc|alice") },
                      ["users rows 1 and 2", "alice"]))
        cases.append(("bad user name", { hs, _ in try hs.user(name: "1st user") }, ["users row 2"]))
        cases.append(("bad key flag", { hs, _ in try hs.execute("INSERT INTO pre_auth_keys (key, user_id, reusable) VALUES ('k', 1, 'maybe')") },
                      ["pre_auth_keys row 1", "reusable"]))
        for (index, (name, change, expected)) in cases.enumerated() {
            let path = directory + "/bad-\(index).sqlite"
            let hs = try HeadscaleFixture(path: path, layout: .v029)
            try hs.user(name: "alice")
            var first = good(&generator)
            first.givenName = "a"
            try hs.node(first)
            var second = good(&generator)
            second.ipv4 = "100.64.0.2"
            second.givenName = "b"
            try change(hs, &second)
            try hs.node(second)
            try hs.close()
            assertRefused({ _ = try HeadscaleImport.plan(try HeadscaleImport.read(path: path), now: Date()) }, containing: expected,
                          case: name)
        }
    }

    func testFilesThatAreNotASupportedHeadscaleDatabaseAreRefused() throws {
        let garbage = directory + "/garbage"
        try Data((0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 31) }).write(to: URL(fileURLWithPath: garbage))
        assertRefused({ _ = try HeadscaleImport.read(path: garbage) }, containing: ["garbage"])
        assertRefused({ _ = try HeadscaleImport.read(path: directory + "/missing") }, containing: ["no such file"])

        let other = directory + "/other.sqlite"
        let queue = try DatabaseQueue(path: other)
        try queue.write { try $0.execute(sql: "CREATE TABLE things (id integer)") }
        try queue.close()
        assertRefused({ _ = try HeadscaleImport.read(path: other) }, containing: ["not a headscale database", "migrations"])

        let warren = directory + "/warren.sqlite"
        try SQLiteControlStore(path: warren).close()
        assertRefused({ _ = try HeadscaleImport.read(path: warren) }, containing: ["warren-control database"])

        let newer = directory + "/newer.sqlite"
        try HeadscaleFixture(path: newer, layout: .v029, migrations: HeadscaleFixture.migrations029 + ["202612011200-oauth-clients"]).close()
        assertRefused({ _ = try HeadscaleImport.read(path: newer) }, containing: ["unknown headscale schema version", "202612011200-oauth-clients"])

        let older = directory + "/older.sqlite"
        try HeadscaleFixture(path: older, layout: .v027, migrations: Array(HeadscaleFixture.migrations027.prefix(11))).close()
        assertRefused({ _ = try HeadscaleImport.read(path: older) }, containing: ["older than v0.26"])
    }

    func testANonEmptyTargetIsRefusedAndAFailedImportWritesNothing() throws {
        var generator = SeededGenerator(seed: 11)
        let path = directory + "/headscale.sqlite"
        let hs = try HeadscaleFixture(path: path, layout: .v029)
        let user = try hs.user(name: "carol")
        for i in 1...3 {
            try hs.node(.init(machineKey: randomKey(MachinePublic.self, &generator).description,
                              nodeKey: randomKey(NodePublic.self, &generator).description, ipv4: "100.64.0.\(i)",
                              hostname: "n\(i)", givenName: "n\(i)", userID: user))
        }
        try hs.close()
        let plan = try HeadscaleImport.plan(try HeadscaleImport.read(path: path), now: Date())

        // A store with a user already: refused, and left as it was.
        let busy = try SQLiteControlStore(path: directory + "/busy.sqlite")
        _ = try busy.transactionSync { try $0.createUser(name: "dave", now: Date()) }
        assertRefused({ _ = try busy.transactionSync { try HeadscaleImport.apply(plan, to: $0) } }, containing: ["already holds users"])
        XCTAssertEqual(try busy.transactionSync { try $0.users().map(\.name) }, ["dave"])
        try busy.close()

        // A write that breaks halfway (the third node's machine key repeats the first's): nothing is kept.
        var broken = plan
        broken.nodes[2].node.machineKey = broken.nodes[0].node.machineKey
        let empty = try SQLiteControlStore(path: directory + "/empty.sqlite")
        XCTAssertThrowsError(try empty.transactionSync { try HeadscaleImport.apply(broken, to: $0) })
        let after = try empty.transactionSync { t in (try t.users().count, try t.nodes().count, try t.wasEverAllocated(IPAddress("100.64.0.1")!)) }
        XCTAssertEqual(after.0, 0)
        XCTAssertEqual(after.1, 0)
        XCTAssertFalse(after.2)
        // The same plan unbroken goes in whole.
        _ = try empty.transactionSync { try HeadscaleImport.apply(plan, to: $0) }
        XCTAssertEqual(try empty.transactionSync { try $0.nodes().map(\.givenName) }, ["n1", "n2", "n3"])
        try empty.close()
    }

    func testTimesAsHeadscaleWritesThem() throws {
        let cases: [(String, Double?)] = [
            ("2026-12-07 13:00:00+00:00", 1_796_648_400),
            ("2026-12-07 13:00:00.123456789+00:00", 1_796_648_400.123456789),
            ("2026-12-07 15:00:00.5+02:00", 1_796_648_400.5),
            ("2026-12-07 08:00:00-05:00", 1_796_648_400),
            ("2026-12-07T13:00:00Z", 1_796_648_400),
            ("2026-12-07 13:00:00", 1_796_648_400),
            ("2026-12-07 13:00:00 +0000 UTC", 1_796_648_400),
            ("0001-01-01 00:00:00+00:00", -62_135_596_800),
            ("2024-02-29 00:00:00+00:00", 1_709_164_800),
            ("2026-13-01 00:00:00+00:00", nil), ("2026-12-07", nil), ("yesterday", nil), ("2026-12-07 13:00:00.+00:00", nil),
            ("2026-12-07 13:00:00+0", nil), ("", nil),
        ]
        for (text, expected) in cases {
            let parsed = HeadscaleTime.parse(text)?.timeIntervalSince1970
            if let expected {
                XCTAssertEqual(try XCTUnwrap(parsed, text), expected, accuracy: 1e-6, text)
            } else {
                XCTAssertNil(parsed, text)
            }
        }
        // What the fixture writes reads back.
        var generator = SeededGenerator(seed: 3)
        for _ in 0..<200 {
            let date = Date(timeIntervalSince1970: Double(Int.random(in: 0...4_000_000_000, using: &generator)) + Double(Int.random(in: 0..<1000, using: &generator)) / 1000)
            let offset = Int.random(in: -12...14, using: &generator) * 60
            let text = HeadscaleFixture.goTime(date, offsetMinutes: offset)
            XCTAssertEqual(try XCTUnwrap(HeadscaleTime.parse(text), text).timeIntervalSince1970, date.timeIntervalSince1970, accuracy: 1e-6, text)
        }
    }

    // MARK: the command

    func testTheCommandChecksItsTargetAndDryRunWritesNothing() throws {
        let binary = try RealTailscaleClientTests.warrenControlBinary()
        var generator = SeededGenerator(seed: 5)
        let path = directory + "/headscale.sqlite"
        let hs = try HeadscaleFixture(path: path, layout: .v029)
        let user = try hs.user(name: "erin")
        try hs.node(.init(machineKey: randomKey(MachinePublic.self, &generator).description,
                          nodeKey: randomKey(NodePublic.self, &generator).description, ipv4: "100.64.0.5", hostname: "box",
                          givenName: "box", userID: user))
        try hs.policy(#"{"acls": [{"action": "accept", "src": ["erin@"], "dst": ["*:*"]}]}"#)
        try hs.close()
        let noise = MachinePrivate.generate(using: &generator)
        try (noise.textRepresentation + "\n").write(toFile: directory + "/noise_private.key", atomically: true, encoding: .utf8)
        let state = directory + "/state"

        let dry = try Self.run([binary, "import", "headscale", "--db", path, "--noise-key", directory + "/noise_private.key",
                                "--state-dir", state, "--dry-run"])
        XCTAssertEqual(dry.status, 0, dry.output)
        XCTAssertTrue(dry.output.contains("1 user(s), 1 node(s)"), dry.output)
        XCTAssertTrue(dry.output.contains(noise.publicKey.description), dry.output)
        XCTAssertFalse(FileManager.default.fileExists(atPath: state + "/warren.sqlite"), "a dry run wrote the database")
        XCTAssertFalse(FileManager.default.fileExists(atPath: state + "/control.key"), "a dry run wrote the key")

        // headscale's database as the target, a bad noise key, a bad policy: refused, nothing written.
        let own = try Self.run([binary, "import", "headscale", "--db", path, "--database", path, "--state-dir", state])
        XCTAssertEqual(own.status, 1)
        XCTAssertTrue(own.output.contains("headscale's own"), own.output)
        try "not a key".write(toFile: directory + "/bad.key", atomically: true, encoding: .utf8)
        let badKey = try Self.run([binary, "import", "headscale", "--db", path, "--noise-key", directory + "/bad.key", "--state-dir", state])
        XCTAssertEqual(badKey.status, 1)
        XCTAssertTrue(badKey.output.contains("privkey:"), badKey.output)
        XCTAssertFalse(FileManager.default.fileExists(atPath: state + "/warren.sqlite"))

        let done = try Self.run([binary, "import", "headscale", "--db", path, "--noise-key", directory + "/noise_private.key",
                                 "--state-dir", state])
        XCTAssertEqual(done.status, 0, done.output)
        XCTAssertEqual(try String(contentsOfFile: state + "/control.key", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines),
                       noise.textRepresentation)
        let store = try SQLiteControlStore(path: state + "/warren.sqlite")
        XCTAssertEqual(try store.transactionSync { try $0.nodes().map(\.givenName) }, ["box"])
        XCTAssertEqual(try store.transactionSync { try $0.currentPolicy()?.version }, 1)
        try store.close()

        // Again into the same place: refused (the store is not empty), and the store is unchanged.
        let again = try Self.run([binary, "import", "headscale", "--db", path, "--state-dir", state])
        XCTAssertEqual(again.status, 1)
        XCTAssertTrue(again.output.contains("already holds"), again.output)
        // Another control key in the way: refused.
        let otherKey = MachinePrivate.generate(using: &generator)
        try (otherKey.textRepresentation + "\n").write(toFile: directory + "/other.key", atomically: true, encoding: .utf8)
        let clash = try Self.run([binary, "import", "headscale", "--db", path, "--noise-key", directory + "/other.key",
                                  "--state-dir", state, "--database", directory + "/second.sqlite"])
        XCTAssertEqual(clash.status, 1)
        XCTAssertTrue(clash.output.contains("another control key"), clash.output)
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory + "/second.sqlite"))
    }

    func testTheCommandTakesTheDatabaseKeyAndPolicyFileFromHeadscalesConfig() throws {
        let binary = try RealTailscaleClientTests.warrenControlBinary()
        var generator = SeededGenerator(seed: 12)
        let hs = try HeadscaleFixture(path: directory + "/db.sqlite", layout: .v029)
        let user = try hs.user(name: "frank")
        try hs.node(.init(machineKey: randomKey(MachinePublic.self, &generator).description,
                          nodeKey: randomKey(NodePublic.self, &generator).description, ipv4: "100.64.0.8", hostname: "nas",
                          givenName: "nas", userID: user))
        try hs.policy(#"{"acls": [{"action": "accept", "src": ["frank@"], "dst": ["from-the-database:*"]}]}"#)
        try hs.close()
        let noise = MachinePrivate.generate(using: &generator)
        try (noise.textRepresentation + "\n").write(toFile: directory + "/noise_private.key", atomically: true, encoding: .utf8)
        let filePolicy = #"{"acls": [{"action": "accept", "src": ["frank@"], "dst": ["*:22"]}]}"#
        try filePolicy.write(toFile: directory + "/acl.hujson", atomically: true, encoding: .utf8)
        // headscale's layout: the key and database paths relative to the file's directory (as headscale resolves them),
        // policy.path as given (headscale does not resolve it), so absolute here.
        try """
            server_url: http://127.0.0.1:8080
            listen_addr: 127.0.0.1:8080
            noise:
              private_key_path: ./noise_private.key
            database:
              type: sqlite
              sqlite:
                path: db.sqlite
            policy:
              mode: file
              path: \(directory)/acl.hujson
            """.write(toFile: directory + "/config.yaml", atomically: true, encoding: .utf8)
        let state = directory + "/state"
        let done = try Self.run([binary, "import", "headscale", "--config", directory + "/config.yaml", "--state-dir", state])
        XCTAssertEqual(done.status, 0, done.output)
        XCTAssertTrue(done.output.contains("policy: policy file"), done.output)
        XCTAssertEqual(try String(contentsOfFile: state + "/control.key", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines),
                       noise.textRepresentation)
        let store = try SQLiteControlStore(path: state + "/warren.sqlite")
        XCTAssertEqual(try store.transactionSync { try $0.currentPolicy()?.text }, filePolicy, "file mode: the policy file, not the table")
        XCTAssertEqual(try store.transactionSync { try $0.nodes().map(\.givenName) }, ["nas"])
        try store.close()

        // A policy that does not parse is refused before anything is written.
        try #"{"acls": [{"action": "accept", "src": ["frank@"]"#.write(toFile: directory + "/acl.hujson", atomically: true, encoding: .utf8)
        let broken = try Self.run([binary, "import", "headscale", "--config", directory + "/config.yaml", "--state-dir", directory + "/state2"])
        XCTAssertEqual(broken.status, 1, broken.output)
        XCTAssertTrue(broken.output.contains("acl.hujson"), broken.output)
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory + "/state2/warren.sqlite"))
    }

    static func run(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let pipe = Pipe()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}
