// Reading a headscale SQLite database (v0.26.x to v0.29.x) and bringing its records into a Warren store.
//
// The layout is headscale's (hscontrol/db/schema.sql and the gorm models of hscontrol/types, v0.26 to v0.29.2),
// read by column name: keys are text (`mkey:<hex>`, `nodekey:<hex>`, `discokey:<hex>`), addresses are text, lists
// (endpoints, tags, approved routes) are JSON text, Hostinfo is JSON text, times are SQLite datetime text
// ("2006-01-02 15:04:05.999999999-07:00", as the Go driver writes them), booleans are "numeric" 0/1. The schema's
// generation is read from headscale's `migrations` table: every migration id must be one headscale v0.23 to v0.29.2
// wrote, and v0.26's last one (202505141324) must be there.
//
// The import is one transaction into an empty Warren store: it either lands whole or leaves the store as it was.
// headscale 0.28+'s pre-auth keys and its API keys are kept as a prefix and a bcrypt hash of the secret: they are
// carried as they are (hash scheme `.bcrypt`), so their texts keep working. What cannot be carried (expired or spent
// keys, a hash that is not a bcrypt hash) is reported and left behind, never turned into a key that would accept
// anything.

import Foundation
import GRDB
import TailscaleKeys
import WarrenControlStore
import WarrenPacket

/// A refusal of the importer: the database, a row (named by table and id) or the target.
public struct HeadscaleImportError: Error, Hashable, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The records of a headscale database, as headscale stores them (decoded, not yet checked against each other).
public struct HeadscaleSnapshot: Sendable, Hashable {
    public struct User: Sendable, Hashable {
        public var id: Int64
        public var name: String
        public var displayName: String
        public var email: String
        public var providerIdentifier: String?
        public var provider: String
        public var created: Date?
        /// `profile_pic_url` ("" when none or absent).
        public var pictureURL: String = ""
    }

    public struct Node: Sendable, Hashable {
        public var id: Int64
        public var machineKey: MachinePublic
        public var nodeKey: NodePublic
        public var discoKey: DiscoPublic?
        public var endpoints: [String]
        public var hostinfo: String?
        /// Hostinfo's RoutableIPs: the routes the node announces.
        public var announcedRoutes: [IPPrefix]
        public var ipv4: IPAddress?
        public var ipv6: IPAddress?
        public var hostname: String
        public var givenName: String
        public var userID: Int64?
        public var registerMethod: String
        public var tags: [String]
        public var authKeyID: Int64?
        public var lastSeen: Date?
        public var expiry: Date?
        public var approvedRoutes: [IPPrefix]
        public var created: Date?
    }

    public struct PreAuthKey: Sendable, Hashable {
        public var id: Int64
        /// The legacy plaintext key (headscale before 0.28 stored keys so; later versions keep old rows).
        public var plaintext: String?
        /// The new form: a public prefix and a bcrypt hash of the secret.
        public var prefix: String?
        /// The bcrypt hash's text as stored (nil or empty: none).
        public var hash: [UInt8]?
        public var hasHash: Bool { !(hash ?? []).isEmpty }
        public var userID: Int64?
        public var reusable: Bool
        public var ephemeral: Bool
        public var used: Bool
        public var tags: [String]
        public var expiration: Date?
        public var created: Date?
    }

    public struct APIKey: Sendable, Hashable {
        public var id: Int64
        public var prefix: String
        /// The bcrypt hash's text as stored.
        public var hash: [UInt8]
        public var expiration: Date?
        public var lastSeen: Date?
        public var created: Date?
    }

    /// "0.26.x" ... "0.29.x", from the migrations table.
    public var schemaGeneration: String
    /// headscale's own record of the version that last opened the database (0.29+), if any.
    public var recordedVersion: String?
    public var users: [User]
    public var nodes: [Node]
    public var preAuthKeys: [PreAuthKey]
    public var apiKeys: [APIKey]
    /// The newest policy of the `policies` table (database mode), if any.
    public var policy: String?
    /// Rows that are soft-deleted in headscale (deleted_at set): left out, named here.
    public var softDeleted: [String]
}

/// What the import will write, and what it leaves behind (with the reason).
public struct HeadscaleImportPlan: Sendable {
    public struct PlannedUser: Sendable {
        /// nil for the user the importer adds to own tagged nodes that headscale keeps without a user.
        public var headscaleID: Int64?
        public var user: WarrenControlStore.User
        public var email: String
        public var providerIdentifier: String?
    }

    public struct PlannedNode: Sendable {
        public var headscaleID: Int64
        /// The node with `userID` holding the index into `users` (mapped when written).
        public var node: WarrenControlStore.Node
        public var ownerIndex: Int
        /// Index into `preAuthKeys` of the key it registered with, when that key is carried.
        public var authKeyIndex: Int?
    }

    public struct PlannedKey: Sendable {
        public var headscaleID: Int64
        public var key: WarrenControlStore.PreAuthKey
        public var ownerIndex: Int
    }

    public struct PlannedAPIKey: Sendable {
        public var headscaleID: Int64
        public var key: WarrenControlStore.APIKey
    }

    public var snapshotGeneration: String
    public var users: [PlannedUser]
    public var nodes: [PlannedNode]
    public var preAuthKeys: [PlannedKey]
    public var apiKeys: [PlannedAPIKey]
    public var policy: String?
    /// Where the policy came from ("the policies table", "policy file <path>"), if there is one.
    public var policySource: String?
    /// Records not carried, one line each with the reason.
    public var leftBehind: [String]
    /// Things carried with a difference worth knowing (a tagged node's owner, a user's e-mail kept aside).
    public var notes: [String]
}

/// What an applied import wrote: headscale's ids beside Warren's.
public struct HeadscaleImportResult: Sendable {
    public var users: [(headscale: Int64?, warren: UserID, name: String)]
    public var nodes: [(headscale: Int64, warren: NodeID, name: String)]
    public var preAuthKeys: [(headscale: Int64, warren: PreAuthKeyID)]
    public var apiKeys: [(headscale: Int64, warren: APIKeyID)]
    public var policyVersion: Int64?
}

public enum HeadscaleImport {
    /// Every migration id headscale v0.23.0 to v0.29.2 records (hscontrol/db/db.go of those tags).
    static let knownMigrations: Set<String> = [
        "202312101416", "202312101430", "202402151347", "2024041121742", "202406021630", "202409271400",
        "202407191627", "202408181235", "202501221827", "202501311657", "202502070949", "202502131714",
        "202502171819", "202505091439", "202505141324", "202507021200", "202510311551", "202511101554-drop-old-idx",
        "202511011637-preauthkey-bcrypt", "202511122344-remove-newline-index", "202511131445-node-forced-tags-to-tags",
        "202601121700-migrate-hostinfo-request-tags", "202602201200-clear-tagged-node-user-id",
        "202605221435-clear-zero-time-node-expiry", "202606181200-recover-null-tags-node-user-id",
    ]
    /// v0.26.0's last migration: routes moved into nodes.approved_routes, the layout read here.
    static let oldestSupportedMigration = "202505141324"
    /// The user that owns tagged nodes headscale keeps without a user (0.29: tagged nodes are owned by their tags).
    public static let taggedDevicesUser = "tagged-devices"

    // MARK: reading

    /// Opens the file read-only and reads every record. Throws `HeadscaleImportError` for a file that is not a
    /// headscale database of a supported schema, and for a row that cannot be read (naming it).
    public static func read(path: String) throws -> HeadscaleSnapshot {
        guard FileManager.default.fileExists(atPath: path) else { throw HeadscaleImportError("\(path): no such file") }
        var configuration = Configuration()
        configuration.readonly = true
        let queue: DatabaseQueue
        do {
            queue = try DatabaseQueue(path: path, configuration: configuration)
        } catch {
            throw HeadscaleImportError("\(path) cannot be opened as a SQLite database: \(error)")
        }
        defer { try? queue.close() }
        do {
            return try queue.read { db in try readSnapshot(db, path: path) }
        } catch let error as HeadscaleImportError {
            throw error
        } catch let error as DatabaseError {
            throw HeadscaleImportError("\(path) is not a readable SQLite database: \(error.message ?? "\(error.resultCode)")")
        }
    }

    static func readSnapshot(_ db: Database, path: String) throws -> HeadscaleSnapshot {
        let tables = Set(try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'table'"))
        if tables.contains("grdb_migrations") {
            throw HeadscaleImportError("\(path) is a warren-control database, not headscale's")
        }
        let needed = ["migrations", "users", "nodes", "pre_auth_keys", "api_keys"]
        let missing = needed.filter { !tables.contains($0) }
        guard missing.isEmpty else {
            throw HeadscaleImportError("\(path) is not a headscale database: no table \(missing.joined(separator: ", ")) "
                + "(it has: \(tables.sorted().prefix(8).joined(separator: ", ")))")
        }
        let migrations = Set(try String.fetchAll(db, sql: "SELECT id FROM migrations WHERE id IS NOT NULL"))
        if let unknown = migrations.subtracting(knownMigrations).sorted().first {
            throw HeadscaleImportError("\(path): unknown headscale schema version (migration \(unknown) is not one of headscale "
                + "v0.23 to v0.29.2's); this warren-control imports schemas of headscale v0.26.x to v0.29.x")
        }
        guard migrations.contains(oldestSupportedMigration), !tables.contains("routes"), !tables.contains("machines") else {
            throw HeadscaleImportError("\(path): headscale schema older than v0.26 (migration \(oldestSupportedMigration) "
                + "missing); start headscale v0.26 or later on it once to migrate it, then import")
        }
        let generation: String
        if migrations.contains("202602201200-clear-tagged-node-user-id") {
            generation = "0.29.x"
        } else if migrations.contains("202511011637-preauthkey-bcrypt") {
            generation = "0.28.x"
        } else if migrations.contains("202507021200") {
            generation = "0.27.x"
        } else {
            generation = "0.26.x"
        }
        var recordedVersion: String?
        if tables.contains("database_versions") {
            recordedVersion = try String.fetchOne(db, sql: "SELECT version FROM database_versions ORDER BY id DESC LIMIT 1")
        }

        func columns(_ table: String) throws -> Set<String> {
            Set(try Row.fetchAll(db, sql: "PRAGMA table_info(\(table))").compactMap { $0["name"] as String? })
        }
        let nodeColumns = try columns("nodes")
        let tagColumn = nodeColumns.contains("tags") ? "tags" : "forced_tags"
        for column in ["machine_key", "node_key", "ipv4", "ipv6", "hostname", "given_name", "user_id", "approved_routes", tagColumn]
        where !nodeColumns.contains(column) {
            throw HeadscaleImportError("\(path): nodes has no column \(column); not a headscale v0.26-v0.29 layout")
        }
        let keyColumns = try columns("pre_auth_keys")
        let apiColumns = try columns("api_keys")
        guard apiColumns.contains("prefix") else {
            throw HeadscaleImportError("\(path): api_keys has no column prefix; not a headscale v0.26-v0.29 layout")
        }

        var softDeleted: [String] = []
        var users: [HeadscaleSnapshot.User] = []
        for row in try Row.fetchAll(db, sql: "SELECT * FROM users ORDER BY id") {
            let r = try HeadscaleRow(row, table: "users")
            if try r.date("deleted_at") != nil { softDeleted.append("users row \(r.id)"); continue }
            users.append(.init(
                id: r.id, name: try r.text("name") ?? "", displayName: try r.text("display_name") ?? "",
                email: try r.text("email") ?? "", providerIdentifier: try r.text("provider_identifier").flatMap { $0.isEmpty ? nil : $0 },
                provider: try r.text("provider") ?? "", created: try r.date("created_at"),
                pictureURL: try r.text("profile_pic_url") ?? ""))
        }

        var keys: [HeadscaleSnapshot.PreAuthKey] = []
        for row in try Row.fetchAll(db, sql: "SELECT * FROM pre_auth_keys ORDER BY id") {
            let r = try HeadscaleRow(row, table: "pre_auth_keys")
            keys.append(.init(
                id: r.id, plaintext: try r.text("key").flatMap { $0.isEmpty ? nil : $0 },
                prefix: keyColumns.contains("prefix") ? try r.text("prefix").flatMap { $0.isEmpty ? nil : $0 } : nil,
                hash: keyColumns.contains("hash") ? try r.bytes("hash") : nil,
                userID: try r.int("user_id"), reusable: try r.bool("reusable"), ephemeral: try r.bool("ephemeral"),
                used: try r.bool("used"), tags: try r.stringList("tags"), expiration: try r.date("expiration"),
                created: try r.date("created_at")))
        }

        var apiKeys: [HeadscaleSnapshot.APIKey] = []
        for row in try Row.fetchAll(db, sql: "SELECT * FROM api_keys ORDER BY id") {
            let r = try HeadscaleRow(row, table: "api_keys")
            apiKeys.append(.init(id: r.id, prefix: try r.text("prefix") ?? "", hash: try r.bytes("hash") ?? [], expiration: try r.date("expiration"),
                                 lastSeen: try r.date("last_seen"), created: try r.date("created_at")))
        }

        var nodes: [HeadscaleSnapshot.Node] = []
        for row in try Row.fetchAll(db, sql: "SELECT * FROM nodes ORDER BY id") {
            let r = try HeadscaleRow(row, table: "nodes")
            if try r.date("deleted_at") != nil { softDeleted.append("nodes row \(r.id)"); continue }
            let hostinfo = try r.text("host_info").flatMap { $0.isEmpty || $0 == "null" ? nil : $0 }
            var announced: [IPPrefix] = []
            if let hostinfo {
                guard let object = try? JSONSerialization.jsonObject(with: Data(hostinfo.utf8)) as? [String: Any] else {
                    throw r.bad("host_info", "expected a JSON object (tailcfg.Hostinfo)")
                }
                if let routable = object["RoutableIPs"], !(routable is NSNull) {
                    guard let list = routable as? [String] else { throw r.bad("host_info", "RoutableIPs: expected a list of prefixes") }
                    announced = try list.map { text in
                        guard let prefix = IPPrefix(text) else { throw r.bad("host_info", "RoutableIPs: \(text.debugDescription) is not a prefix") }
                        return prefix
                    }
                }
            }
            let disco = try r.key("disco_key", as: DiscoPublic.self)
            nodes.append(.init(
                id: r.id,
                machineKey: try r.key("machine_key", as: MachinePublic.self) ?? { throw r.bad("machine_key", "missing") }(),
                nodeKey: try r.key("node_key", as: NodePublic.self) ?? { throw r.bad("node_key", "missing") }(),
                discoKey: disco?.isZero == true ? nil : disco,
                endpoints: try r.stringList("endpoints"), hostinfo: hostinfo, announcedRoutes: announced,
                ipv4: try r.address("ipv4", .v4), ipv6: try r.address("ipv6", .v6),
                hostname: try r.text("hostname") ?? "", givenName: try r.text("given_name") ?? "",
                userID: try r.int("user_id"), registerMethod: try r.text("register_method") ?? "",
                tags: try r.stringList(tagColumn), authKeyID: try r.int("auth_key_id"),
                lastSeen: try r.date("last_seen"), expiry: try r.date("expiry"),
                approvedRoutes: try r.stringList("approved_routes").map { text in
                    guard let prefix = IPPrefix(text) else { throw r.bad("approved_routes", "\(text.debugDescription) is not a prefix") }
                    return prefix
                },
                created: try r.date("created_at")))
        }

        var policy: String?
        if tables.contains("policies") {
            for row in try Row.fetchAll(db, sql: "SELECT * FROM policies ORDER BY id DESC") {
                let r = try HeadscaleRow(row, table: "policies")
                if try r.date("deleted_at") != nil { continue }
                if let data = try r.text("data"), !data.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
                    policy = data
                    break
                }
            }
        }
        return HeadscaleSnapshot(schemaGeneration: generation, recordedVersion: recordedVersion, users: users, nodes: nodes,
                                 preAuthKeys: keys, apiKeys: apiKeys, policy: policy, softDeleted: softDeleted)
    }

    // MARK: planning

    /// Checks the records against each other and Warren's rules and decides what is carried. `policyFile` (text and
    /// path) replaces the policies table's policy (headscale's file mode). Throws naming the first bad row.
    public static func plan(_ snapshot: HeadscaleSnapshot, policyFile: (text: String, path: String)? = nil,
                            now: Date) throws -> HeadscaleImportPlan {
        var leftBehind: [String] = []
        var notes: [String] = []
        var users: [HeadscaleImportPlan.PlannedUser] = []
        var userIndex: [Int64: Int] = [:]
        var namesSeen: [String: Int64] = [:]
        for user in snapshot.users {
            let name = user.name
            do {
                try StoreRules.validateUserName(name)
            } catch let error as StoreError {
                throw HeadscaleImportError("users row \(user.id): \(error.message)")
            }
            if let other = namesSeen[name] {
                throw HeadscaleImportError("users rows \(other) and \(user.id) are both named \(name.debugDescription) "
                    + "(headscale allows one name per identity provider; Warren's user names are unique): rename one in headscale first")
            }
            namesSeen[name] = user.id
            userIndex[user.id] = users.count
            users.append(.init(headscaleID: user.id,
                               user: .init(id: UserID(0), name: name, displayName: user.displayName, created: user.created ?? now,
                                           email: user.email, providerID: user.providerIdentifier, provider: user.provider,
                                           // headscale kept any text; Warren keeps an http(s) URL (another is left out).
                                           pictureURL: (try? StoreRules.validatePictureURL(user.pictureURL)) != nil ? user.pictureURL : ""),
                               email: user.email, providerIdentifier: user.providerIdentifier))
        }
        var taggedOwner: Int?
        func taggedDevicesIndex() throws -> Int {
            if let taggedOwner { return taggedOwner }
            if let existing = users.firstIndex(where: { $0.user.name == taggedDevicesUser }) {
                taggedOwner = existing
                return existing
            }
            users.append(.init(headscaleID: nil, user: .init(id: UserID(0), name: taggedDevicesUser,
                                                             displayName: "Tagged devices (imported from headscale)", created: now),
                               email: "", providerIdentifier: nil))
            taggedOwner = users.count - 1
            notes.append("user \(taggedDevicesUser.debugDescription) added: it owns the tagged nodes and keys that headscale keeps without a user")
            return users.count - 1
        }

        // Pre-auth keys: only what Warren can check is carried.
        var keys: [HeadscaleImportPlan.PlannedKey] = []
        var keyIndex: [Int64: Int] = [:]
        var ephemeralKeys: Set<Int64> = []
        var keyPrefixes: [String: Int64] = [:]
        for key in snapshot.preAuthKeys {
            if key.ephemeral { ephemeralKeys.insert(key.id) }
            let label = "pre-auth key \(key.id)" + (key.prefix.map { " (prefix \($0))" } ?? "")
            if let expiration = key.expiration, expiration <= now {
                leftBehind.append("\(label): expired \(iso(expiration)); not carried")
                continue
            }
            if key.used && !key.reusable {
                leftBehind.append("\(label): a one-off key already used; not carried")
                continue
            }
            let carried: WarrenControlStore.PreAuthKey
            if key.hasHash || key.prefix != nil {
                // headscale 0.28+: "hskey-auth-<prefix>-<secret>", only the prefix and a bcrypt hash of the secret stored.
                guard let prefix = key.prefix, let hash = key.hash, isHeadscalePrefix(prefix, length: PresentedKey.headscalePrefixLength) else {
                    leftBehind.append("\(label): a hashed key without a 12-character prefix; not carried")
                    continue
                }
                guard isBcryptHash(hash) else {
                    leftBehind.append("\(label): its hash is not a bcrypt hash; not carried")
                    continue
                }
                carried = .init(prefix: prefix, secretHash: hash, hashScheme: .bcrypt, userID: UserID(0), reusable: key.reusable,
                                ephemeral: key.ephemeral, preApproved: false, tags: key.tags, created: key.created ?? now,
                                expiration: key.expiration, used: key.used, useCount: key.used ? 1 : 0)
            } else {
                guard let plaintext = key.plaintext else {
                    leftBehind.append("\(label): neither a key nor a hash is stored; not carried")
                    continue
                }
                guard let legacy = SecretKeyText(headscaleLegacyPreAuthKey: plaintext) else {
                    leftBehind.append("\(label): a legacy key of an unexpected form (not 48 hex digits); not carried")
                    continue
                }
                carried = .init(prefix: legacy.prefix, secretHash: legacy.secretHash, userID: UserID(0), reusable: key.reusable,
                                ephemeral: key.ephemeral, preApproved: false, tags: key.tags, created: key.created ?? now,
                                expiration: key.expiration, used: key.used, useCount: key.used ? 1 : 0)
            }
            if let other = keyPrefixes[carried.prefix] {
                leftBehind.append("\(label): its prefix is also pre-auth key \(other)'s (Warren finds keys by prefix); not carried")
                continue
            }
            let owner: Int
            if let userID = key.userID, let index = userIndex[userID] {
                owner = index
            } else if !key.tags.isEmpty {
                owner = try taggedDevicesIndex()
            } else {
                leftBehind.append("\(label): belongs to no (live) user and has no tags; not carried")
                continue
            }
            for tag in key.tags {
                do { try StoreRules.validateTag(tag) } catch let error as StoreError {
                    throw HeadscaleImportError("pre_auth_keys row \(key.id): tags: \(error.message)")
                }
            }
            keyPrefixes[carried.prefix] = key.id
            keyIndex[key.id] = keys.count
            keys.append(.init(headscaleID: key.id, key: carried, ownerIndex: owner))
        }
        // API keys: "hskey-api-<prefix>-<secret>" (12-character prefix) or the legacy "<prefix>.<secret>" (7), both kept
        // as the prefix and a bcrypt hash of the secret.
        var apiKeys: [HeadscaleImportPlan.PlannedAPIKey] = []
        var apiPrefixes: [String: Int64] = [:]
        for key in snapshot.apiKeys {
            let label = "API key \(key.id) (prefix \(key.prefix))"
            if let expiration = key.expiration, expiration <= now {
                leftBehind.append("\(label): expired \(iso(expiration)); not carried")
                continue
            }
            guard isHeadscalePrefix(key.prefix, length: PresentedKey.headscalePrefixLength)
                    || isHeadscalePrefix(key.prefix, length: PresentedKey.headscaleLegacyAPIPrefixLength) else {
                leftBehind.append("\(label): a prefix of neither headscale form (12 or 7 characters); not carried")
                continue
            }
            guard isBcryptHash(key.hash) else {
                leftBehind.append("\(label): its hash is not a bcrypt hash; not carried")
                continue
            }
            if let other = apiPrefixes[key.prefix] {
                leftBehind.append("\(label): its prefix is also API key \(other)'s; not carried")
                continue
            }
            apiPrefixes[key.prefix] = key.id
            apiKeys.append(.init(headscaleID: key.id, key: .init(
                prefix: key.prefix, secretHash: key.hash, hashScheme: .bcrypt, created: key.created ?? now,
                expiration: key.expiration, lastUsed: key.lastSeen)))
        }

        // Nodes.
        var nodes: [HeadscaleImportPlan.PlannedNode] = []
        var machineKeys: [MachinePublic: Int64] = [:]
        var nodeKeys: [NodePublic: Int64] = [:]
        var givenNames: [String: Int64] = [:]
        var addresses: [IPAddress: Int64] = [:]
        for node in snapshot.nodes {
            let row = "nodes row \(node.id)"
            if let other = machineKeys[node.machineKey] { throw HeadscaleImportError("\(row): machine key also held by nodes row \(other)") }
            if let other = nodeKeys[node.nodeKey] { throw HeadscaleImportError("\(row): node key also held by nodes row \(other)") }
            machineKeys[node.machineKey] = node.id
            nodeKeys[node.nodeKey] = node.id
            for address in [node.ipv4, node.ipv6].compactMap({ $0 }) {
                if let other = addresses[address] { throw HeadscaleImportError("\(row): address \(address) also held by nodes row \(other)") }
                addresses[address] = node.id
                if AddressAllocator.reserved.contains(where: { $0.contains(address) }) {
                    throw HeadscaleImportError("\(row): address \(address) is in a range Tailscale reserves (\(AddressAllocator.reserved.first { $0.contains(address) }!))")
                }
            }
            let label = node.givenName.isEmpty ? DNSLabel.sanitize(node.hostname) : node.givenName.lowercased()
            guard DNSLabel.isValid(label) else {
                throw HeadscaleImportError("\(row): given_name \(node.givenName.debugDescription) is not a DNS label (a-z, 0-9 and \"-\", at most 63)")
            }
            if let other = givenNames[label] { throw HeadscaleImportError("\(row): name \(label.debugDescription) also held by nodes row \(other)") }
            givenNames[label] = node.id
            for tag in node.tags {
                do { try StoreRules.validateTag(tag) } catch let error as StoreError {
                    throw HeadscaleImportError("\(row): tags: \(error.message)")
                }
            }
            let method: RegisterMethod
            switch node.registerMethod {
            case "authkey": method = .authKey
            case "cli", "": method = .cli
            case "oidc": method = .oidc
            default: throw HeadscaleImportError("\(row): register_method \(node.registerMethod.debugDescription) is not authkey, cli or oidc")
            }
            let owner: Int
            if let userID = node.userID {
                guard let index = userIndex[userID] else {
                    throw HeadscaleImportError("\(row): user_id \(userID) names no (live) user")
                }
                owner = index
            } else if !node.tags.isEmpty {
                let keyOwner = node.authKeyID
                    .flatMap { id in snapshot.preAuthKeys.first { $0.id == id } }?.userID
                    .flatMap { userIndex[$0] }
                owner = try keyOwner ?? taggedDevicesIndex()
                notes.append("\(row) (\(label)): tagged, without a user in headscale; owned by user \(users[owner].user.name.debugDescription) in Warren")
            } else {
                throw HeadscaleImportError("\(row): no user_id and no tags (headscale could not tell whose node it is); give it a user in headscale first")
            }
            // headscale before 0.29 wrote "no expiry" as the zero time.
            let expiry = node.expiry.flatMap { $0 < Self.noExpiryBefore ? nil : $0 }
            nodes.append(.init(
                headscaleID: node.id,
                node: .init(machineKey: node.machineKey, nodeKey: node.nodeKey, discoKey: node.discoKey, userID: UserID(0),
                            hostname: node.hostname.isEmpty ? label : node.hostname, givenName: label, ipv4: node.ipv4,
                            ipv6: node.ipv6, endpoints: node.endpoints, hostinfo: node.hostinfo, tags: node.tags,
                            advertisedRoutes: node.announcedRoutes, approvedRoutes: node.approvedRoutes, expiry: expiry,
                            lastSeen: node.lastSeen, ephemeral: node.authKeyID.map { ephemeralKeys.contains($0) } ?? false,
                            registerMethod: method, created: node.created ?? now),
                ownerIndex: owner, authKeyIndex: node.authKeyID.flatMap { keyIndex[$0] }))
        }
        if !snapshot.softDeleted.isEmpty {
            leftBehind.append("soft-deleted in headscale (deleted_at set), not carried: " + snapshot.softDeleted.joined(separator: ", "))
        }
        let policy: String?
        let policySource: String?
        if let policyFile {
            policy = policyFile.text
            policySource = "policy file \(policyFile.path)"
        } else {
            policy = snapshot.policy
            policySource = snapshot.policy == nil ? nil : "the policies table"
        }
        return HeadscaleImportPlan(snapshotGeneration: snapshot.schemaGeneration, users: users, nodes: nodes,
                                   preAuthKeys: keys, apiKeys: apiKeys, policy: policy, policySource: policySource,
                                   leftBehind: leftBehind, notes: notes)
    }

    /// A prefix as headscale writes them: `length` characters of the base64 URL-safe alphabet.
    static func isHeadscalePrefix(_ prefix: String, length: Int) -> Bool {
        prefix.utf8.count == length && prefix.utf8.allSatisfy(PresentedKey.isBase64URLSafe)
    }

    /// A bcrypt hash's text ("$2a$10$" and 53 characters), as Go's bcrypt writes it.
    static func isBcryptHash(_ hash: [UInt8]) -> Bool {
        let text = String(decoding: hash, as: UTF8.self)
        let parts = text.split(separator: "$", omittingEmptySubsequences: false)
        return hash.count == 60 && parts.count == 4 && parts[0].isEmpty && ["2a", "2b", "2y"].contains(parts[1])
            && parts[2].count == 2 && parts[2].allSatisfy(\.isNumber) && (4...31).contains(Int(parts[2]) ?? 0)
            && parts[3].utf8.count == 53
            && parts[3].utf8.allSatisfy { (0x30...0x39).contains($0) || (0x41...0x5A).contains($0) || (0x61...0x7A).contains($0) || $0 == 0x2E || $0 == 0x2F }
    }

    /// 1900-01-01: earlier expiry times are headscale's zero time ("no expiry").
    static let noExpiryBefore = Date(timeIntervalSince1970: -2_208_988_800)

    static func iso(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        return formatter.string(from: date)
    }

    // MARK: writing

    /// Writes the plan into `store` in one transaction. The store must be empty (no users, nodes, keys, API keys,
    /// policy): an import does not merge. Anything that fails rolls the whole import back.
    public static func apply(_ plan: HeadscaleImportPlan, to transaction: any StoreTransaction) throws -> HeadscaleImportResult {
        var existing: [String] = []
        if try !transaction.users().isEmpty { existing.append("users") }
        if try !transaction.nodes().isEmpty { existing.append("nodes") }
        if try !transaction.preAuthKeys(userID: nil).isEmpty { existing.append("pre-auth keys") }
        if try !transaction.apiKeys().isEmpty { existing.append("API keys") }
        if try transaction.currentPolicy() != nil { existing.append("a policy") }
        guard existing.isEmpty else {
            throw HeadscaleImportError("the target database already holds \(existing.joined(separator: ", ")); an import goes "
                + "into an empty one (move it away, or give --database a new file)")
        }
        var result = HeadscaleImportResult(users: [], nodes: [], preAuthKeys: [], apiKeys: [], policyVersion: nil)
        var userIDs: [UserID] = []
        for planned in plan.users {
            let stored = try transaction.insert(planned.user)
            userIDs.append(stored.id)
            result.users.append((planned.headscaleID, stored.id, stored.name))
        }
        var keyIDs: [PreAuthKeyID] = []
        for planned in plan.preAuthKeys {
            var key = planned.key
            key.userID = userIDs[planned.ownerIndex]
            let stored = try transaction.insert(key)
            keyIDs.append(stored.id)
            result.preAuthKeys.append((planned.headscaleID, stored.id))
        }
        for planned in plan.apiKeys {
            let stored = try transaction.insert(planned.key)
            result.apiKeys.append((planned.headscaleID, stored.id))
        }
        for planned in plan.nodes {
            var node = planned.node
            node.userID = userIDs[planned.ownerIndex]
            node.authKeyID = planned.authKeyIndex.map { keyIDs[$0] }
            let stored = try transaction.insert(node)
            result.nodes.append((planned.headscaleID, stored.id, stored.givenName))
        }
        if let policy = plan.policy {
            result.policyVersion = try transaction.appendPolicy(text: policy, created: Date()).version
        }
        return result
    }
}

/// One row of a headscale table, read by column name without trapping: a value of the wrong type or form throws
/// naming the table, the row id and the column.
struct HeadscaleRow {
    let row: Row
    let table: String
    let id: Int64

    init(_ row: Row, table: String) throws {
        self.row = row
        self.table = table
        switch row["id"] as DatabaseValue? {
        case let value? where value.storage.value is Int64: id = value.storage.value as! Int64
        default: throw HeadscaleImportError("\(table): a row without an integer id")
        }
    }

    func bad(_ column: String, _ what: String) -> HeadscaleImportError {
        HeadscaleImportError("\(table) row \(id): \(column): \(what)")
    }

    private func value(_ column: String) -> DatabaseValue.Storage? {
        guard row.hasColumn(column) else { return nil }
        let storage = (row[column] as DatabaseValue).storage
        if case .null = storage { return nil }
        return storage
    }

    func text(_ column: String) throws -> String? {
        switch value(column) {
        case nil: return nil
        case .string(let s): return s
        case .blob(let data): return String(decoding: data, as: UTF8.self)
        case .int64(let i): return String(i)
        default: throw bad(column, "expected text")
        }
    }

    func bytes(_ column: String) throws -> [UInt8]? {
        switch value(column) {
        case nil: return nil
        case .blob(let data): return Array(data)
        case .string(let s): return Array(s.utf8)
        default: throw bad(column, "expected bytes")
        }
    }

    func int(_ column: String) throws -> Int64? {
        switch value(column) {
        case nil: return nil
        case .int64(let i): return i
        case .string(let s) where Int64(s) != nil: return Int64(s)
        default: throw bad(column, "expected an integer")
        }
    }

    func bool(_ column: String) throws -> Bool {
        switch value(column) {
        case nil: return false
        case .int64(0): return false
        case .int64(1): return true
        case .string(let s) where ["0", "f", "false", "FALSE"].contains(s): return false
        case .string(let s) where ["1", "t", "true", "TRUE"].contains(s): return true
        default: throw bad(column, "expected a boolean (0 or 1)")
        }
    }

    func date(_ column: String) throws -> Date? {
        switch value(column) {
        case nil: return nil
        case .int64(let seconds): return Date(timeIntervalSince1970: Double(seconds))
        case .double(let seconds) where seconds.isFinite: return Date(timeIntervalSince1970: seconds)
        case .string(let s):
            if s.isEmpty { return nil }
            guard let date = HeadscaleTime.parse(s) else { throw bad(column, "\(s.debugDescription) is not a time") }
            return date
        default: throw bad(column, "expected a time")
        }
    }

    func stringList(_ column: String) throws -> [String] {
        guard let text = try text(column)?.trimmingCharacters(in: .whitespaces), !text.isEmpty, text != "null" else { return [] }
        guard let list = try? JSONDecoder().decode([String].self, from: Data(text.utf8)) else {
            throw bad(column, "expected a JSON list of strings, not \(text.prefix(60).debugDescription)")
        }
        return list
    }

    func key<K: TailscalePublicKey>(_ column: String, as type: K.Type) throws -> K? {
        guard let text = try text(column), !text.isEmpty else { return nil }
        guard let key = K(text) else { throw bad(column, "expected \(K.textPrefix)<64 hex digits>, not \(text.prefix(24).debugDescription)") }
        return key
    }

    func address(_ column: String, _ version: IPVersion) throws -> IPAddress? {
        guard let text = try text(column), !text.isEmpty else { return nil }
        guard let address = IPAddress(text), address.version == version else {
            throw bad(column, "\(text.debugDescription) is not an \(version) address")
        }
        return address
    }
}

/// SQLite datetime text as headscale's Go driver writes it ("2006-01-02 15:04:05.999999999-07:00"), and the
/// close variants other writers use: "T" for the space, "Z", "+0000", no zone (UTC), no fraction.
public enum HeadscaleTime {
    public static func parse(_ text: String) -> Date? {
        let b = Array(text.utf8)
        func digits(_ start: Int, _ count: Int) -> Int? {
            guard start + count <= b.count else { return nil }
            var value = 0
            for i in start..<(start + count) {
                guard (0x30...0x39).contains(b[i]) else { return nil }
                value = value * 10 + Int(b[i] - 0x30)
            }
            return value
        }
        guard let year = digits(0, 4), b.count >= 19, b[4] == 0x2D, let month = digits(5, 2), b[7] == 0x2D,
              let day = digits(8, 2), b[10] == 0x20 || b[10] == 0x54, let hour = digits(11, 2), b[13] == 0x3A,
              let minute = digits(14, 2), b[16] == 0x3A, let second = digits(17, 2),
              (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second < 61 else { return nil }
        var i = 19
        var fraction = 0.0
        if i < b.count, b[i] == 0x2E {
            i += 1
            var scale = 0.1
            let start = i
            while i < b.count, (0x30...0x39).contains(b[i]) {
                fraction += Double(b[i] - 0x30) * scale
                scale /= 10
                i += 1
            }
            if i == start { return nil }
        }
        while i < b.count, b[i] == 0x20 { i += 1 }
        var offset = 0
        if i < b.count {
            if b[i] == 0x5A {
                i += 1
            } else if b[i] == 0x2B || b[i] == 0x2D {
                let sign = b[i] == 0x2B ? 1 : -1
                guard let hh = digits(i + 1, 2) else { return nil }
                var j = i + 3
                if j < b.count, b[j] == 0x3A { j += 1 }
                guard let mm = digits(j, 2) else { return nil }
                offset = sign * (hh * 3600 + mm * 60)
                i = j + 2
            }
            // Go's time.String() appends the zone's name (" UTC", " CET"): the offset already says it.
            while i < b.count, b[i] == 0x20 { i += 1 }
            while i < b.count, (0x41...0x5A).contains(b[i]) { i += 1 }
            guard i == b.count else { return nil }
        }
        // Days from the civil date (proleptic Gregorian), then seconds since 1970.
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = era * 146_097 + doe - 719_468
        let seconds = Double(days * 86_400 + hour * 3600 + minute * 60 + second - offset) + fraction
        return Date(timeIntervalSince1970: seconds)
    }
}
