// Redeeming a pre-auth key checks its secret before the write transaction (bcrypt, for keys imported from headscale,
// takes tens of milliseconds at cost 10 and must not hold SQLite's one writer), and the transaction then records the
// use only if the record is unchanged: a wrong secret is still refused and a one-off key is still spent once, however
// many registrations race for it.

import Foundation
import HummingbirdBcrypt
import Synchronization
import TailscaleKeys
import WarrenControlClient
import WarrenControlSQLite
import WarrenControlStore
import WarrenPacket
import WarrenTailcfg
import XCTest
@testable import WarrenControlServer

final class PreAuthKeyRedemptionTests: XCTestCase {
    private var directoryPath = ""
    private var store: SQLiteControlStore!
    private var directory: StoreDirectory!
    private var userID = UserID(0)

    override func setUp() async throws {
        directoryPath = NSTemporaryDirectory() + "wpak-" + String(UUID().uuidString.prefix(8))
        try FileManager.default.createDirectory(atPath: directoryPath, withIntermediateDirectories: true)
        store = try SQLiteControlStore(path: directoryPath + "/control.sqlite")
        let configuration = ControlConfiguration(serverURL: "http://127.0.0.1:1")
        directory = try StoreDirectory(store: store, ipv4Prefix: configuration.ipv4Prefix, ipv6Prefix: configuration.ipv6Prefix)
        userID = try await store.transaction { try $0.createUser(name: "alice", now: Date()) }.id
    }

    override func tearDown() async throws {
        store = nil
        directory = nil
        try? FileManager.default.removeItem(atPath: directoryPath)
    }

    /// A secret of headscale's alphabet and length (64 characters, base64 URL-safe).
    private static func secret(_ seed: Character) -> String { String(repeating: seed, count: 32) + String(repeating: "_-Ab", count: 8) }

    /// Stores a one-off headscale 0.28+ key (prefix and bcrypt of the secret, as `import headscale` carries it) and
    /// returns its text.
    private func bcryptKey(prefix: String, secret: String, cost: UInt8 = 10, reusable: Bool = false) async throws -> String {
        let hash = Array(Bcrypt.hash(secret, cost: cost).utf8)
        let userID = userID
        _ = try await store.transaction { tx in
            try tx.insert(PreAuthKey(prefix: prefix, secretHash: hash, hashScheme: .bcrypt, userID: userID, reusable: reusable,
                                     created: Date(), expiration: Date().addingTimeInterval(3600)))
        }
        return "hskey-auth-\(prefix)-\(secret)"
    }

    private func redeem(_ text: String) async -> Result<PreAuthGrant, RegistrationRefusal> {
        await Self.redeem(text, on: directory)
    }

    private static func redeem(_ text: String, on directory: StoreDirectory) async -> Result<PreAuthGrant, RegistrationRefusal> {
        var generator = SeededKeyGenerator(seed: 5)
        let machine = MachinePrivate.generate(using: &generator).publicKey
        do {
            return .success(try await directory.redeemPreAuthKey(text, machineKey: machine, now: TailcfgTime(date: Date())))
        } catch let refusal as RegistrationRefusal {
            return .failure(refusal)
        } catch {
            return .failure(RegistrationRefusal("unexpected: \(error)"))
        }
    }

    func testAWrongSecretIsRefused() async throws {
        let text = try await bcryptKey(prefix: "wrongsecret1", secret: Self.secret("a"))
        let wrong = "hskey-auth-wrongsecret1-" + Self.secret("b")
        guard case .failure(let refusal) = await redeem(wrong) else { return XCTFail("a wrong secret was accepted") }
        XCTAssertEqual(refusal.description, "invalid pre-auth key")
        guard case .failure(let unknown) = await redeem("hskey-auth-nosuchprefix-" + Self.secret("a")) else {
            return XCTFail("an unknown prefix was accepted")
        }
        XCTAssertEqual(unknown.description, "invalid pre-auth key")
        // The right secret still works, and the refusals spent nothing.
        guard case .success(let grant) = await redeem(text) else { return XCTFail("the right secret was refused") }
        XCTAssertEqual(grant.userID, userID.rawValue)

        // Warren's own (SHA-256) keys go the same way.
        let warren = try await store.transaction { [userID] tx in
            var generator = SystemRandomNumberGenerator()
            return try tx.createPreAuthKey(userID: userID, options: PreAuthKeyOptions(), now: Date(), generator: &generator).text
        }
        let tampered = String(warren.dropLast()) + (warren.hasSuffix("0") ? "1" : "0")
        guard case .failure(let refusedWarren) = await redeem(tampered) else { return XCTFail("a wrong Warren secret was accepted") }
        XCTAssertEqual(refusedWarren.description, "invalid pre-auth key")
        guard case .success = await redeem(warren) else { return XCTFail("the Warren key was refused") }
    }

    func testAOneOffKeyIsSpentOnceUnderConcurrentUse() async throws {
        let bcrypt = try await bcryptKey(prefix: "oneoffracer1", secret: Self.secret("c"))
        let warren = try await store.transaction { [userID] tx in
            var generator = SystemRandomNumberGenerator()
            return try tx.createPreAuthKey(userID: userID, options: PreAuthKeyOptions(), now: Date(), generator: &generator).text
        }
        for text in [bcrypt, warren] {
            let results = await withTaskGroup(of: Result<PreAuthGrant, RegistrationRefusal>.self) { group in
                for _ in 0..<12 { group.addTask { [directory] in await Self.redeem(text, on: directory!) } }
                var all: [Result<PreAuthGrant, RegistrationRefusal>] = []
                for await result in group { all.append(result) }
                return all
            }
            let granted = results.filter { if case .success = $0 { true } else { false } }
            XCTAssertEqual(granted.count, 1, "\(results)")
            for case .failure(let refusal) in results {
                XCTAssertEqual(refusal.description, "pre-auth key has already been used")
            }
            let prefix = try XCTUnwrap(PresentedKey(parsing: text, kind: .preAuth)).prefix
            let stored = try await store.read { try $0.preAuthKey(prefix: prefix) }
            XCTAssertEqual(stored?.used, true)
            XCTAssertEqual(stored?.useCount, 1)
        }
    }

    /// The bcrypt check runs outside the write transaction: every transaction the redemptions open takes well under
    /// one bcrypt check (cost 12, measured here); with the check inside, the redeeming transaction lasts at least that.
    func testTheBcryptCheckDoesNotHoldTheWriter() async throws {
        let secret = Self.secret("d")
        let text = try await bcryptKey(prefix: "slowcheck123", secret: secret, cost: 12, reusable: true)
        let timed = TimedStore(base: store)
        directory = try StoreDirectory(store: timed, ipv4Prefix: IPPrefix("100.64.0.0/10")!, ipv6Prefix: IPPrefix("fd7a:115c:a1e0::/48")!)
        // A wrong secret (never remembered as a success: the full check each time), then the right one.
        guard case .failure = await redeem("hskey-auth-slowcheck123-" + Self.secret("e")) else { return XCTFail("a wrong secret was accepted") }
        guard case .success = await redeem(text) else { return XCTFail("the right secret was refused") }

        let hash = try await store.read { try $0.preAuthKey(prefix: "slowcheck123") }?.secretHash ?? []
        let oneCheck = ContinuousClock().measure { _ = Bcrypt.verify(Self.secret("f"), hash: String(decoding: hash, as: UTF8.self)) }
        let longest = try XCTUnwrap(timed.transactionTimes.withLock { $0 }.max())
        XCTAssertLessThan(longest, oneCheck / 2, "a write transaction lasted \(longest), one bcrypt check \(oneCheck)")
    }
}

/// A store that measures how long each write transaction's body runs.
private final class TimedStore: ControlStore {
    let base: SQLiteControlStore
    let transactionTimes = Mutex<[Duration]>([])

    init(base: SQLiteControlStore) { self.base = base }

    func read<T: Sendable>(_ body: @escaping @Sendable (any StoreReading) throws -> T) async throws -> T {
        try await base.read(body)
    }

    func transaction<T: Sendable>(_ body: @escaping @Sendable (any StoreTransaction) throws -> T) async throws -> T {
        try await base.transaction { [self] tx in
            let clock = ContinuousClock()
            let start = clock.now
            defer {
                let elapsed = clock.now - start
                transactionTimes.withLock { $0.append(elapsed) }
            }
            return try body(tx)
        }
    }
}
