import Foundation
import TailscaleKeys
import WarrenControlStore
import WarrenPacket
import WarrenTestSupport
import XCTest

/// The store's rules, checked the same way over the in-memory twin and over SQLite.
final class StoreContractTests: XCTestCase {
    func testUsersCreateRenameDelete() async throws {
        try await forEachBackend { name, store in
            let alice = try await store.transaction { try $0.createUser(name: "alice", displayName: "Alice A.", now: referenceNow) }
            XCTAssertEqual(alice.name, "alice")
            XCTAssertEqual(alice.displayName, "Alice A.")
            XCTAssertEqual(alice.created, referenceNow, name)
            _ = try await store.transaction { try $0.createUser(name: "bob", now: referenceNow) }

            await assertStoreError(.conflict, name) { try await store.transaction { try $0.createUser(name: "alice", now: referenceNow) } }
            await assertStoreError(.invalid, name) { try await store.transaction { try $0.createUser(name: "", now: referenceNow) } }
            await assertStoreError(.invalid, name) { try await store.transaction { try $0.createUser(name: "a b", now: referenceNow) } }

            let names = try await store.read { try $0.users().map(\.name) }
            XCTAssertEqual(names, ["alice", "bob"], name)

            let renamed = try await store.transaction { try $0.renameUser("alice", to: "carol") }
            XCTAssertEqual(renamed.id, alice.id, name)
            await assertStoreError(.conflict, name) { try await store.transaction { try $0.renameUser("carol", to: "bob") } }
            await assertStoreError(.notFound, name) { try await store.transaction { try $0.renameUser("alice", to: "dave") } }
            let carol = try await store.read { try $0.user(named: "carol") }
            XCTAssertEqual(carol?.id, alice.id, name)
            let noAlice = try await store.read { try $0.user(named: "alice") }
            XCTAssertNil(noAlice, name)

            try await store.transaction { try $0.deleteUser(id: alice.id) }
            let remaining = try await store.read { try $0.users().map(\.name) }
            XCTAssertEqual(remaining, ["bob"], name)
            await assertStoreError(.notFound, name) { try await store.transaction { try $0.deleteUser(id: alice.id) } }
        }
    }

    func testDeletingAUserWithNodesIsRefusedAndKeysGoWithTheUser() async throws {
        var keys = Keys(seed: 1)
        let (machine, node) = (keys.machine(), keys.node())
        try await forEachBackend { name, store in
            let user = try await store.transaction { tx in
                let user = try tx.createUser(name: "alice", now: referenceNow)
                var generator = SeededGenerator(seed: 2)
                _ = try tx.createPreAuthKey(userID: user.id, options: PreAuthKeyOptions(), now: referenceNow, generator: &generator)
                return user
            }
            let registered = try await store.transaction { tx in
                try tx.registerNode(NodeRegistration(machineKey: machine, nodeKey: node, userID: user.id, hostname: "laptop", method: .cli),
                                    allocator: defaultAllocator, now: referenceNow)
            }
            await assertStoreError(.conflict, name) { try await store.transaction { try $0.deleteUser(id: user.id) } }
            try await store.transaction { try $0.deleteNode(id: registered.id) }
            try await store.transaction { try $0.deleteUser(id: user.id) }
            let keysLeft = try await store.read { try $0.preAuthKeys(userID: nil) }
            XCTAssertEqual(keysLeft, [], name)
        }
    }

    func testPreAuthKeysOneOffReusableExpiredAndWrongSecret() async throws {
        try await forEachBackend { name, store in
            let (oneOff, reusable, expiring, otherUserKey) = try await store.transaction { tx in
                let alice = try tx.createUser(name: "alice", now: referenceNow)
                let bob = try tx.createUser(name: "bob", now: referenceNow)
                var generator = SeededGenerator(seed: 7)
                let oneOff = try tx.createPreAuthKey(userID: alice.id, options: PreAuthKeyOptions(tags: ["tag:server"]), now: referenceNow, generator: &generator)
                let reusable = try tx.createPreAuthKey(
                    userID: alice.id, options: PreAuthKeyOptions(reusable: true, ephemeral: true, preApproved: true), now: referenceNow,
                    generator: &generator)
                let expiring = try tx.createPreAuthKey(
                    userID: alice.id, options: PreAuthKeyOptions(reusable: true, expiration: referenceNow.addingTimeInterval(3600)),
                    now: referenceNow, generator: &generator)
                let other = try tx.createPreAuthKey(userID: bob.id, options: PreAuthKeyOptions(), now: referenceNow, generator: &generator)
                return (oneOff, reusable, expiring, other)
            }
            XCTAssertTrue(oneOff.text.hasPrefix("wkey-auth-" + oneOff.key.prefix + "-"), name)
            XCTAssertNotEqual(oneOff.key.secretHash, Array(oneOff.text.utf8), name)
            XCTAssertEqual(oneOff.key.tags, ["tag:server"], name)
            XCTAssertTrue(reusable.key.ephemeral && reusable.key.preApproved && reusable.key.reusable, name)

            // Only a hash is stored: the text appears nowhere in the stored record.
            let stored = try await store.read { try $0.preAuthKey(id: oneOff.key.id) }
            XCTAssertEqual(stored, oneOff.key, name)

            let first = try await store.transaction { try $0.usePreAuthKey(oneOff.text, now: referenceNow) }
            XCTAssertTrue(first.used, name)
            XCTAssertEqual(first.useCount, 1, name)
            await assertStoreError(.invalid, name) { try await store.transaction { try $0.usePreAuthKey(oneOff.text, now: referenceNow) } }

            for _ in 0..<3 { _ = try await store.transaction { try $0.usePreAuthKey(reusable.text, now: referenceNow) } }
            let reused = try await store.read { try $0.preAuthKey(id: reusable.key.id) }
            XCTAssertEqual(reused?.useCount, 3, name)

            _ = try await store.transaction { try $0.usePreAuthKey(expiring.text, now: referenceNow.addingTimeInterval(3599)) }
            await assertStoreError(.invalid, name) {
                try await store.transaction { try $0.usePreAuthKey(expiring.text, now: referenceNow.addingTimeInterval(3600)) }
            }

            // The right prefix with another key's secret, a truncated key, and garbage are all refused.
            let secretOfOther = String(otherUserKey.text.suffix(SecretKeyText.secretLength))
            let forged = "wkey-auth-\(reusable.key.prefix)-\(secretOfOther)"
            await assertStoreError(.invalid, name) { try await store.transaction { try $0.usePreAuthKey(forged, now: referenceNow) } }
            await assertStoreError(.invalid, name) { try await store.transaction { try $0.usePreAuthKey(String(reusable.text.dropLast()), now: referenceNow) } }
            await assertStoreError(.invalid, name) { try await store.transaction { try $0.usePreAuthKey("tskey-auth-xyz", now: referenceNow) } }

            let aliceKeys = try await store.read { tx in try tx.preAuthKeys(userID: try tx.requireUser(named: "alice").id).map(\.id) }
            XCTAssertEqual(aliceKeys, [oneOff.key.id, reusable.key.id, expiring.key.id], name)
            await assertStoreError(.invalid, name) {
                try await store.transaction { tx in
                    var generator = SeededGenerator(seed: 8)
                    return try tx.createPreAuthKey(
                        userID: try tx.requireUser(named: "alice").id, options: PreAuthKeyOptions(tags: ["server"]), now: referenceNow,
                        generator: &generator)
                }
            }
        }
    }

    func testAPIKeysValidateAndExpire() async throws {
        try await forEachBackend { name, store in
            let created = try await store.transaction { tx in
                var generator = SeededGenerator(seed: 11)
                return try tx.createAPIKey(expiration: referenceNow.addingTimeInterval(60), now: referenceNow, generator: &generator)
            }
            XCTAssertTrue(created.text.hasPrefix("wkey-api-"), name)
            let valid = try await store.read { try $0.validAPIKey(created.text, now: referenceNow) }
            XCTAssertEqual(valid.id, created.key.id, name)
            await assertStoreError(.invalid, name) { try await store.read { try $0.validAPIKey(created.text, now: referenceNow.addingTimeInterval(60)) } }
            // A pre-auth key's text is not an API key.
            await assertStoreError(.invalid, name) {
                try await store.read { try $0.validAPIKey(created.text.replacingOccurrences(of: "wkey-api-", with: "wkey-auth-"), now: referenceNow) }
            }
            try await store.transaction { tx in
                var key = try XCTUnwrap(try tx.apiKey(id: created.key.id))
                key.expiration = referenceNow
                try tx.update(key)
            }
            await assertStoreError(.invalid, name) { try await store.read { try $0.validAPIKey(created.text, now: referenceNow) } }
            let listed = try await store.read { try $0.apiKeys().map(\.prefix) }
            XCTAssertEqual(listed, [created.key.prefix], name)
        }
    }

    func testRegistrationAllocatesAddressesAndUniqueNames() async throws {
        var keys = Keys(seed: 3)
        let machines = (0..<4).map { _ in (keys.machine(), keys.node()) }
        try await forEachBackend { name, store in
            let user = try await store.transaction { try $0.createUser(name: "alice", now: referenceNow) }
            var nodes: [Node] = []
            for (i, (machine, node)) in machines.enumerated() {
                let hostname = i == 3 ? "Other Host!" : "Web"
                nodes.append(try await store.transaction { tx in
                    try tx.registerNode(
                        NodeRegistration(machineKey: machine, nodeKey: node, userID: user.id, hostname: hostname, method: .authKey),
                        allocator: defaultAllocator, now: referenceNow)
                })
            }
            XCTAssertEqual(nodes.map(\.givenName), ["web", "web-1", "web-2", "other-host"], name)
            XCTAssertEqual(nodes.map { $0.ipv4?.description }, ["100.64.0.1", "100.64.0.2", "100.64.0.3", "100.64.0.4"], name)
            XCTAssertEqual(nodes.map { $0.ipv6?.description },
                           ["fd7a:115c:a1e0::1", "fd7a:115c:a1e0::2", "fd7a:115c:a1e0::3", "fd7a:115c:a1e0::4"], name)
            XCTAssertEqual(Set(nodes.map(\.id)).count, 4, name)
            let listed = try await store.read { try $0.nodes() }
            XCTAssertEqual(listed, nodes, name)
            let byKey = try await store.read { try $0.node(nodeKey: machines[1].1) }
            XCTAssertEqual(byKey, nodes[1], name)
            let byName = try await store.read { try $0.node(givenName: "WEB-1") }
            XCTAssertEqual(byName?.id, nodes[1].id, name)
        }
    }

    func testReloginKeepsIdentityAddressesAndNameAndTakesTheNewKey() async throws {
        var keys = Keys(seed: 4)
        let (machine, firstKey, secondKey, otherMachine) = (keys.machine(), keys.node(), keys.node(), keys.machine())
        let disco = keys.disco()
        try await forEachBackend { name, store in
            let (alice, bob) = try await store.transaction { tx in
                (try tx.createUser(name: "alice", now: referenceNow), try tx.createUser(name: "bob", now: referenceNow))
            }
            let first = try await store.transaction { tx in
                try tx.registerNode(NodeRegistration(machineKey: machine, nodeKey: firstKey, userID: alice.id, hostname: "box", method: .authKey,
                                                     expiry: referenceNow.addingTimeInterval(10)),
                                    allocator: defaultAllocator, now: referenceNow)
            }
            let again = try await store.transaction { tx in
                try tx.registerNode(NodeRegistration(machineKey: machine, nodeKey: secondKey, discoKey: disco, userID: bob.id, hostname: "renamed-box",
                                                     tags: ["tag:prod"], method: .interactive, approvedRoutes: [IPPrefix("10.0.0.0/24")!]),
                                    allocator: defaultAllocator, now: referenceNow.addingTimeInterval(100))
            }
            XCTAssertEqual(again.id, first.id, name)
            XCTAssertEqual(again.ipv4, first.ipv4, name)
            XCTAssertEqual(again.ipv6, first.ipv6, name)
            XCTAssertEqual(again.givenName, "box", name)
            XCTAssertEqual(again.hostname, "renamed-box", name)
            XCTAssertEqual(again.nodeKey, secondKey, name)
            XCTAssertEqual(again.discoKey, disco, name)
            XCTAssertEqual(again.userID, bob.id, name)
            XCTAssertEqual(again.tags, ["tag:prod"], name)
            XCTAssertNil(again.expiry, name)
            XCTAssertEqual(again.approvedRoutes, [IPPrefix("10.0.0.0/24")!], name)
            XCTAssertEqual(again.created, first.created, name)
            let oldKeyHolder = try await store.read { try $0.node(nodeKey: firstKey) }
            XCTAssertNil(oldKeyHolder, name)

            // Another machine cannot take this node key.
            await assertStoreError(.conflict, name) {
                try await store.transaction { tx in
                    try tx.registerNode(NodeRegistration(machineKey: otherMachine, nodeKey: secondKey, userID: alice.id, hostname: "x", method: .cli),
                                        allocator: defaultAllocator, now: referenceNow)
                }
            }
        }
    }

    func testAddressesAreNeverHandedOutTwiceEvenAfterDelete() async throws {
        var keys = Keys(seed: 5)
        let machines = (0..<6).map { _ in (keys.machine(), keys.node()) }
        // A /29: .0 network, .7 broadcast, so six assignable addresses.
        let small = try AddressAllocator(ipv4Prefix: IPPrefix("100.64.10.0/29")!, ipv6Prefix: IPPrefix("fd7a:115c:a1e0::/125")!)
        try await forEachBackend { name, store in
            let user = try await store.transaction { try $0.createUser(name: "alice", now: referenceNow) }
            var seen: Set<IPAddress> = []
            for (machine, node) in machines.prefix(5) {
                let registered = try await store.transaction { tx in
                    try tx.registerNode(NodeRegistration(machineKey: machine, nodeKey: node, userID: user.id, hostname: "n", method: .cli),
                                        allocator: small, now: referenceNow)
                }
                XCTAssertTrue(seen.insert(try XCTUnwrap(registered.ipv4)).inserted, name)
                XCTAssertTrue(seen.insert(try XCTUnwrap(registered.ipv6)).inserted, name)
                try await store.transaction { try $0.deleteNode(id: registered.id) }
            }
            let sixth = try await store.transaction { tx in
                try tx.registerNode(NodeRegistration(machineKey: machines[5].0, nodeKey: machines[5].1, userID: user.id, hostname: "n", method: .cli),
                                    allocator: small, now: referenceNow)
            }
            XCTAssertEqual(sixth.ipv4?.description, "100.64.10.6", name)
            XCTAssertEqual(sixth.ipv6?.description, "fd7a:115c:a1e0::6", name)
            try await store.transaction { try $0.deleteNode(id: sixth.id) }
            // Every address was handed out once; the pool is exhausted although no node holds any.
            var more = Keys(seed: 99)
            let (m, k) = (more.machine(), more.node())
            await assertStoreError(.exhausted, name) {
                try await store.transaction { tx in
                    try tx.registerNode(NodeRegistration(machineKey: m, nodeKey: k, userID: user.id, hostname: "n", method: .cli),
                                        allocator: small, now: referenceNow)
                }
            }
            // The failed registration left nothing behind (the transaction rolled back).
            let count = try await store.read { try $0.nodes().count }
            XCTAssertEqual(count, 0, name)
        }
    }

    func testUniquenessIsEnforcedOnDirectWrites() async throws {
        var keys = Keys(seed: 6)
        let (m1, k1, m2, k2) = (keys.machine(), keys.node(), keys.machine(), keys.node())
        try await forEachBackend { name, store in
            let (user, first) = try await store.transaction { tx in
                let user = try tx.createUser(name: "u", now: referenceNow)
                return (user, try tx.registerNode(NodeRegistration(machineKey: m1, nodeKey: k1, userID: user.id, hostname: "one", method: .cli),
                                                  allocator: defaultAllocator, now: referenceNow))
            }
            let second = try await store.transaction { tx in
                try tx.registerNode(NodeRegistration(machineKey: m2, nodeKey: k2, userID: user.id, hostname: "two", method: .cli),
                                    allocator: defaultAllocator, now: referenceNow)
            }
            for mutate: @Sendable (inout Node) -> Void in [
                { $0.givenName = "ONE" }, { $0.ipv4 = first.ipv4 }, { $0.ipv6 = first.ipv6 }, { $0.nodeKey = k1 }, { $0.machineKey = m1 },
            ] {
                var changed = second
                mutate(&changed)
                let attempt = changed
                await assertStoreError(.conflict, name) { try await store.transaction { try $0.update(attempt) } }
            }
            let renamed = try await store.transaction { try $0.renameNode(id: second.id, to: "Second") }
            XCTAssertEqual(renamed.givenName, "second", name)
            let oldName = try await store.read { try $0.node(givenName: "two") }
            let newName = try await store.read { try $0.node(givenName: "SECOND") }
            XCTAssertNil(oldName, name)
            XCTAssertEqual(newName?.id, second.id, name)
            await assertStoreError(.conflict, name) { try await store.transaction { try $0.renameNode(id: second.id, to: "one") } }
            await assertStoreError(.invalid, name) { try await store.transaction { try $0.renameNode(id: second.id, to: "not a label") } }
            await assertStoreError(.notFound, name) { try await store.transaction { try $0.renameNode(id: NodeID(999_999), to: "x") } }
            try await store.transaction { try $0.deleteNode(id: first.id) }
            let (byMachine, byKey, byName) = try await store.read { tx in
                (try tx.node(machineKey: m1), try tx.node(nodeKey: k1), try tx.node(givenName: "one"))
            }
            XCTAssertNil(byMachine, name)
            XCTAssertNil(byKey, name)
            XCTAssertNil(byName, name)
            // The deleted node's name and keys are free again (its addresses are not).
            var reused = first
            reused.givenName = "one"
            reused.ipv4 = nil
            reused.ipv6 = nil
            let reinserted = reused
            let again = try await store.transaction { try $0.insert(reinserted) }
            XCTAssertNotEqual(again.id, first.id, name)
            var ghost = second
            ghost.id = NodeID(999_999)
            let missing = ghost
            await assertStoreError(.notFound, name) { try await store.transaction { try $0.update(missing) } }
        }
    }

    func testNodeFieldsRoundTrip() async throws {
        var keys = Keys(seed: 9)
        let (machine, node, disco) = (keys.machine(), keys.node(), keys.disco())
        try await forEachBackend { name, store in
            let user = try await store.transaction { try $0.createUser(name: "u", now: referenceNow) }
            let original = try await store.transaction { tx in
                try tx.registerNode(NodeRegistration(machineKey: machine, nodeKey: node, userID: user.id, hostname: "h", method: .authKey,
                                                     capabilityVersion: 130),
                                    allocator: defaultAllocator, now: referenceNow)
            }
            XCTAssertEqual(original.capabilityVersion, 130, name)
            var changed = original
            changed.discoKey = disco
            changed.endpoints = ["192.0.2.1:41641", "[2001:db8::1]:41641"]
            changed.hostinfo = #"{"OS":"linux","Hostname":"h","RoutableIPs":["10.1.0.0/16"]}"#
            changed.tags = ["tag:a", "tag:b"]
            changed.advertisedRoutes = [IPPrefix("10.1.0.0/16")!, IPPrefix("0.0.0.0/0")!, IPPrefix("::/0")!]
            changed.approvedRoutes = [IPPrefix("10.1.0.0/16")!]
            changed.expiry = referenceNow.addingTimeInterval(86_400.5)
            changed.lastSeen = referenceNow.addingTimeInterval(1.000_001)
            changed.ephemeral = true
            changed.authKeyID = PreAuthKeyID(42)
            changed.capabilityVersion = 131
            let toStore = changed
            try await store.transaction { try $0.update(toStore) }
            let back = try await store.read { try $0.node(id: original.id) }
            XCTAssertEqual(back, changed, name)
        }
    }

    func testTransactionsRollBackWhenTheBodyThrows() async throws {
        struct Abort: Error {}
        try await forEachBackend { name, store in
            do {
                _ = try await store.transaction { tx -> Int in
                    _ = try tx.createUser(name: "ghost", now: referenceNow)
                    _ = try tx.appendPolicy(text: "{}", created: referenceNow)
                    throw Abort()
                }
                XCTFail("expected the body's error", file: #filePath, line: #line)
            } catch is Abort {}
            let users = try await store.read { try $0.users() }
            let policies = try await store.read { try $0.policyHistory() }
            XCTAssertEqual(users, [], name)
            XCTAssertEqual(policies, [], name)
        }
    }

    func testConcurrentRegistrationsGetDistinctAddressesAndNames() async throws {
        var keys = Keys(seed: 10)
        let machines = (0..<40).map { _ in (keys.machine(), keys.node()) }
        try await forEachBackend { name, store in
            let user = try await store.transaction { try $0.createUser(name: "u", now: referenceNow) }
            let nodes = try await withThrowingTaskGroup(of: Node.self) { group in
                for (machine, node) in machines {
                    group.addTask {
                        try await store.transaction { tx in
                            try tx.registerNode(NodeRegistration(machineKey: machine, nodeKey: node, userID: user.id, hostname: "same", method: .authKey),
                                                allocator: defaultAllocator, now: referenceNow)
                        }
                    }
                }
                var all: [Node] = []
                for try await node in group { all.append(node) }
                return all
            }
            XCTAssertEqual(Set(nodes.compactMap(\.ipv4)).count, 40, name)
            XCTAssertEqual(Set(nodes.compactMap(\.ipv6)).count, 40, name)
            XCTAssertEqual(Set(nodes.map(\.givenName)).count, 40, name)
            XCTAssertEqual(Set(nodes.map(\.givenName)), Set(["same"] + (1..<40).map { "same-\($0)" }), name)
        }
    }

    func testPendingRegistrationsAndPolicyHistory() async throws {
        var keys = Keys(seed: 12)
        let (machine, node) = (keys.machine(), keys.node())
        try await forEachBackend { name, store in
            let pending = PendingRegistration(
                id: "reg-abc123", machineKey: machine, nodeKey: node, hostname: "laptop", hostinfo: #"{"OS":"linux"}"#, ephemeral: true,
                created: referenceNow, expires: referenceNow.addingTimeInterval(900))
            try await store.transaction { try $0.save(pending) }
            let listed = try await store.read { try $0.pendingRegistrations() }
            XCTAssertEqual(listed, [pending], name)
            var approved = pending
            approved.approvedNodeID = NodeID(7)
            let approvedCopy = approved
            try await store.transaction { try $0.save(approvedCopy) }
            let back = try await store.read { try $0.pendingRegistration(id: "reg-abc123") }
            XCTAssertEqual(back, approved, name)
            try await store.transaction { try $0.deletePendingRegistration(id: "reg-abc123") }
            await assertStoreError(.notFound, name) { try await store.transaction { try $0.deletePendingRegistration(id: "reg-abc123") } }

            let none = try await store.read { try $0.currentPolicy() }
            XCTAssertNil(none, name)
            let v1 = try await store.transaction { try $0.appendPolicy(text: "{\"acls\":[]}", created: referenceNow) }
            let v2 = try await store.transaction { try $0.appendPolicy(text: "{}", created: referenceNow.addingTimeInterval(1)) }
            XCTAssertEqual([v1.version, v2.version], [1, 2], name)
            let current = try await store.read { try $0.currentPolicy() }
            XCTAssertEqual(current, v2, name)
            let history = try await store.read { try $0.policyHistory() }
            XCTAssertEqual(history, [v1, v2], name)
        }
    }

    /// Started OIDC sign-ins: taken exactly once (a second take, as a replayed callback makes, finds nothing), a
    /// duplicate refused, expired ones pruned and the oldest beyond the cap dropped; users keep their provider groups.
    func testOIDCSignInsAreTakenOnceAndPruned() async throws {
        try await forEachBackend { name, store in
            func signIn(_ id: String, _ age: TimeInterval, verifier: String? = "v") -> OIDCSignIn {
                OIDCSignIn(id: id, loginID: "login-" + id, nonce: "nonce-" + id, codeVerifier: verifier,
                           browserBinding: Array(repeating: UInt8(id.utf8.count), count: 32), created: referenceNow.addingTimeInterval(-age))
            }
            let a = signIn("a", 10), b = signIn("b", 2000, verifier: nil), c = signIn("c", 5), d = signIn("d", 1)
            try await store.transaction { tx in for s in [a, b, c, d] { try tx.insert(s) } }
            let count = try await store.read { try $0.oidcSignInCount() }
            XCTAssertEqual(count, 4, name)
            await assertStoreError(.conflict, name) { try await store.transaction { try $0.insert(a) } }

            let taken = try await store.transaction { try $0.takeOIDCSignIn(id: "a") }
            XCTAssertEqual(taken, a, name)
            let again = try await store.transaction { try $0.takeOIDCSignIn(id: "a") }
            XCTAssertNil(again, "a sign-in is taken once: \(name)")
            let unknown = try await store.transaction { try $0.takeOIDCSignIn(id: "zz") }
            XCTAssertNil(unknown, name)

            // b is older than the lifetime; of c and d, only the newest is kept.
            try await store.transaction { try $0.pruneOIDCSignIns(createdBefore: referenceNow.addingTimeInterval(-900), keeping: 1) }
            let left = try await store.read { try $0.oidcSignInCount() }
            XCTAssertEqual(left, 1, name)
            let stillB = try await store.transaction { try $0.takeOIDCSignIn(id: "b") }
            XCTAssertNil(stillB, "expired: \(name)")
            let stillC = try await store.transaction { try $0.takeOIDCSignIn(id: "c") }
            XCTAssertNil(stillC, "beyond the cap: \(name)")
            let kept = try await store.transaction { try $0.takeOIDCSignIn(id: "d") }
            XCTAssertEqual(kept, d, name)

            // A rollback keeps the sign-in: a take is part of its transaction.
            try await store.transaction { try $0.insert(b) }
            struct Abort: Error {}
            do {
                _ = try await store.transaction { tx -> Int in
                    _ = try tx.takeOIDCSignIn(id: "b")
                    throw Abort()
                }
            } catch is Abort {}
            let rolledBack = try await store.transaction { try $0.takeOIDCSignIn(id: "b") }
            XCTAssertEqual(rolledBack, b, name)

            var user = try await store.transaction { try $0.createUser(name: "grace", now: referenceNow) }
            XCTAssertEqual(user.providerGroups, [], name)
            user.providerGroups = ["eng", "ops team"]
            let changed = user
            try await store.transaction { try $0.update(changed) }
            let back = try await store.read { try $0.user(id: changed.id) }
            XCTAssertEqual(back?.providerGroups, ["eng", "ops team"], name)
        }
    }
}
