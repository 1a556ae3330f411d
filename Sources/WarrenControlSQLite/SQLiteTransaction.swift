import Foundation
import GRDB
import TailscaleKeys
import WarrenControlStore
import WarrenPacket

/// `StoreTransaction` over one GRDB `Database` handle, valid only inside the closure it was made for.
final class SQLiteTransaction: StoreTransaction {
    private let db: Database

    init(_ db: Database) { self.db = db }

    // MARK: statements, with SQLite errors turned into StoreErrors

    private func execute(_ sql: String, _ arguments: StatementArguments = StatementArguments()) throws {
        do {
            try db.execute(sql: sql, arguments: arguments)
        } catch let error as DatabaseError {
            throw Self.storeError(error)
        }
    }

    private func rows(_ sql: String, _ arguments: StatementArguments = StatementArguments()) throws -> [Row] {
        do {
            return try Row.fetchAll(db, sql: sql, arguments: arguments)
        } catch let error as DatabaseError {
            throw Self.storeError(error)
        }
    }

    private static func storeError(_ error: DatabaseError) -> StoreError {
        let message = error.message ?? "\(error.resultCode)"
        if error.resultCode == .SQLITE_CONSTRAINT {
            let friendly: [(String, String)] = [
                ("users.name", "a user with this name already exists"),
                ("nodes.machine_key", "another node has this machine key"),
                ("nodes.node_key", "another node has this node key"),
                ("nodes.given_name", "another node has this name"),
                ("nodes.ipv4", "another node has this IPv4 address"),
                ("nodes.ipv6", "another node has this IPv6 address"),
                ("pre_auth_keys.prefix", "a pre-auth key with this prefix exists"),
                ("api_keys.prefix", "an API key with this prefix exists"),
                ("FOREIGN KEY", "the record refers to a missing record, or is still referenced"),
            ]
            let text = friendly.first { message.contains($0.0) }?.1 ?? message
            return StoreError(.conflict, text)
        }
        switch error.resultCode {
        case .SQLITE_CORRUPT, .SQLITE_NOTADB, .SQLITE_FORMAT: return StoreError(.corrupt, message)
        default: return StoreError(.io, message)
        }
    }

    private var changes: Int { db.changesCount }

    // MARK: decoding

    private func user(_ row: Row) throws -> User {
        let c = Columns(row: row, table: "users")
        return User(id: UserID(try c.int("id")), name: try c.string("name"), displayName: try c.string("display_name"),
                    created: try c.date("created"), email: try c.string("email"), providerID: try c.optionalString("provider_id"),
                    provider: try c.string("provider"), pictureURL: try c.string("picture_url"),
                    providerGroups: try c.stringList("provider_groups"))
    }

    private func node(_ row: Row) throws -> Node {
        let c = Columns(row: row, table: "nodes")
        guard let method = RegisterMethod(rawValue: try c.string("register_method")) else {
            throw StoreError(.corrupt, "nodes.register_method: unknown method")
        }
        return Node(
            id: NodeID(try c.int("id")), machineKey: try c.key("machine_key", as: MachinePublic.self),
            nodeKey: try c.key("node_key", as: NodePublic.self), discoKey: try c.optionalKey("disco_key", as: DiscoPublic.self),
            userID: UserID(try c.int("user_id")), hostname: try c.string("hostname"), givenName: try c.string("given_name"),
            ipv4: try c.optionalAddress("ipv4"), ipv6: try c.optionalAddress("ipv6"), endpoints: try c.stringList("endpoints"),
            hostinfo: try c.optionalString("hostinfo"), tags: try c.stringList("tags"),
            advertisedRoutes: try c.prefixList("advertised_routes"), approvedRoutes: try c.prefixList("approved_routes"),
            expiry: try c.optionalDate("expiry"), lastSeen: try c.optionalDate("last_seen"), ephemeral: try c.bool("ephemeral"),
            authKeyID: try c.optionalInt("auth_key_id").map { PreAuthKeyID($0) }, registerMethod: method,
            created: try c.date("created"), authorized: try c.bool("authorized"), capabilityVersion: try c.optionalInt("capability_version").map { Int($0) })
    }

    private func preAuthKey(_ row: Row) throws -> PreAuthKey {
        let c = Columns(row: row, table: "pre_auth_keys")
        let useCount = try c.int("use_count")
        guard let count = Int(exactly: useCount), count >= 0 else { throw StoreError(.corrupt, "pre_auth_keys.use_count out of range") }
        return PreAuthKey(
            id: PreAuthKeyID(try c.int("id")), prefix: try c.string("prefix"), secretHash: try c.blob("secret_hash"),
            hashScheme: try hashScheme(c), userID: UserID(try c.int("user_id")), reusable: try c.bool("reusable"), ephemeral: try c.bool("ephemeral"),
            preApproved: try c.bool("pre_approved"), tags: try c.stringList("tags"), created: try c.date("created"),
            expiration: try c.optionalDate("expiration"), used: try c.bool("used"), useCount: count)
    }

    private func apiKey(_ row: Row) throws -> APIKey {
        let c = Columns(row: row, table: "api_keys")
        return APIKey(
            id: APIKeyID(try c.int("id")), prefix: try c.string("prefix"), secretHash: try c.blob("secret_hash"),
            hashScheme: try hashScheme(c), created: try c.date("created"), expiration: try c.optionalDate("expiration"), lastUsed: try c.optionalDate("last_used"))
    }

    private func hashScheme(_ c: Columns) throws -> SecretHashScheme {
        guard let scheme = SecretHashScheme(rawValue: try c.string("hash_scheme")) else {
            throw StoreError(.corrupt, "\(c.table).hash_scheme: unknown scheme")
        }
        return scheme
    }

    private func pending(_ row: Row) throws -> PendingRegistration {
        let c = Columns(row: row, table: "pending_registrations")
        return PendingRegistration(
            id: try c.string("id"), machineKey: try c.key("machine_key", as: MachinePublic.self),
            nodeKey: try c.key("node_key", as: NodePublic.self), hostname: try c.string("hostname"),
            hostinfo: try c.optionalString("hostinfo"), ephemeral: try c.bool("ephemeral"), created: try c.date("created"),
            expires: try c.date("expires"), approvedNodeID: try c.optionalInt("approved_node_id").map { NodeID($0) })
    }

    private func policy(_ row: Row) throws -> PolicyVersion {
        let c = Columns(row: row, table: "policies")
        return PolicyVersion(version: try c.int("version"), text: try c.string("text"), created: try c.date("created"))
    }

    // MARK: reading

    func users() throws -> [User] { try rows("SELECT * FROM users ORDER BY id").map(user) }
    func user(id: UserID) throws -> User? { try rows("SELECT * FROM users WHERE id = ?", [id.rawValue]).first.map(user) }
    func user(named name: String) throws -> User? { try rows("SELECT * FROM users WHERE name = ?", [name]).first.map(user) }

    func nodes() throws -> [Node] { try rows("SELECT * FROM nodes ORDER BY id").map(node) }
    func nodes(userID: UserID) throws -> [Node] { try rows("SELECT * FROM nodes WHERE user_id = ? ORDER BY id", [userID.rawValue]).map(node) }
    func node(id: NodeID) throws -> Node? { try rows("SELECT * FROM nodes WHERE id = ?", [id.rawValue]).first.map(node) }
    func node(machineKey: MachinePublic) throws -> Node? {
        try rows("SELECT * FROM nodes WHERE machine_key = ?", [Encode.blob(machineKey.rawRepresentation)]).first.map(node)
    }
    func node(nodeKey: NodePublic) throws -> Node? {
        try rows("SELECT * FROM nodes WHERE node_key = ?", [Encode.blob(nodeKey.rawRepresentation)]).first.map(node)
    }
    func node(givenName: String) throws -> Node? {
        // The column is COLLATE NOCASE (ASCII case folding); labels are ASCII.
        try rows("SELECT * FROM nodes WHERE given_name = ?", [givenName]).first.map(node)
    }

    func preAuthKeys(userID: UserID?) throws -> [PreAuthKey] {
        if let userID {
            return try rows("SELECT * FROM pre_auth_keys WHERE user_id = ? ORDER BY id", [userID.rawValue]).map(preAuthKey)
        }
        return try rows("SELECT * FROM pre_auth_keys ORDER BY id").map(preAuthKey)
    }
    func preAuthKey(id: PreAuthKeyID) throws -> PreAuthKey? {
        try rows("SELECT * FROM pre_auth_keys WHERE id = ?", [id.rawValue]).first.map(preAuthKey)
    }
    func preAuthKey(prefix: String) throws -> PreAuthKey? {
        try rows("SELECT * FROM pre_auth_keys WHERE prefix = ?", [prefix]).first.map(preAuthKey)
    }

    func apiKeys() throws -> [APIKey] { try rows("SELECT * FROM api_keys ORDER BY id").map(apiKey) }
    func apiKey(id: APIKeyID) throws -> APIKey? { try rows("SELECT * FROM api_keys WHERE id = ?", [id.rawValue]).first.map(apiKey) }
    func apiKey(prefix: String) throws -> APIKey? { try rows("SELECT * FROM api_keys WHERE prefix = ?", [prefix]).first.map(apiKey) }

    func pendingRegistrations() throws -> [PendingRegistration] {
        try rows("SELECT * FROM pending_registrations ORDER BY created, id").map(pending)
    }
    func pendingRegistration(id: String) throws -> PendingRegistration? {
        try rows("SELECT * FROM pending_registrations WHERE id = ?", [id]).first.map(pending)
    }

    func policyHistory() throws -> [PolicyVersion] { try rows("SELECT * FROM policies ORDER BY version").map(policy) }
    func currentPolicy() throws -> PolicyVersion? { try rows("SELECT * FROM policies ORDER BY version DESC LIMIT 1").first.map(policy) }

    func addressCursor(_ version: IPVersion) throws -> IPAddress? {
        guard let row = try rows("SELECT address FROM address_cursors WHERE family = ?", [version == .v4 ? 4 : 6]).first else { return nil }
        guard let address = try Columns(row: row, table: "address_cursors").optionalAddress("address"), address.version == version else {
            throw StoreError(.corrupt, "address_cursors.address: expected an \(version) address")
        }
        return address
    }

    func wasEverAllocated(_ address: IPAddress) throws -> Bool {
        try !rows("SELECT 1 FROM allocated_addresses WHERE address = ?", [address.description]).isEmpty
    }

    // MARK: writing

    func insert(_ user: User) throws -> User {
        try execute("""
            INSERT INTO users (name, display_name, created, email, provider_id, provider, picture_url, provider_groups) \
            VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            """, [user.name, user.displayName, Encode.date(user.created), user.email, user.providerID, user.provider, user.pictureURL,
                  Encode.list(user.providerGroups)])
        var stored = user
        stored.id = UserID(db.lastInsertedRowID)
        return stored
    }

    func update(_ user: User) throws {
        try execute("""
            UPDATE users SET name = ?, display_name = ?, created = ?, email = ?, provider_id = ?, provider = ?, picture_url = ?, \
            provider_groups = ? WHERE id = ?
            """, [user.name, user.displayName, Encode.date(user.created), user.email, user.providerID, user.provider, user.pictureURL,
                  Encode.list(user.providerGroups), user.id.rawValue])
        if changes == 0 { throw StoreError(.notFound, "no user with id \(user.id)") }
    }

    func deleteUser(id: UserID) throws {
        guard try self.user(id: id) != nil else { throw StoreError(.notFound, "no user with id \(id)") }
        if try !rows("SELECT 1 FROM nodes WHERE user_id = ? LIMIT 1", [id.rawValue]).isEmpty {
            throw StoreError(.conflict, "the user still has nodes; delete them first")
        }
        try execute("DELETE FROM users WHERE id = ?", [id.rawValue])
    }

    private func nodeArguments(_ node: Node) -> StatementArguments {
        [
            Encode.blob(node.machineKey.rawRepresentation), Encode.blob(node.nodeKey.rawRepresentation),
            node.discoKey.map { Encode.blob($0.rawRepresentation) }, node.userID.rawValue, node.hostname, node.givenName,
            node.ipv4?.description, node.ipv6?.description, Encode.list(node.endpoints), node.hostinfo, Encode.list(node.tags),
            Encode.prefixes(node.advertisedRoutes), Encode.prefixes(node.approvedRoutes), Encode.date(node.expiry),
            Encode.date(node.lastSeen), node.ephemeral, node.authKeyID?.rawValue, node.registerMethod.rawValue,
            Encode.date(node.created), node.authorized, node.capabilityVersion.map { Int64($0) },
        ]
    }

    private static let nodeColumns = """
        machine_key, node_key, disco_key, user_id, hostname, given_name, ipv4, ipv6, endpoints, hostinfo, tags, \
        advertised_routes, approved_routes, expiry, last_seen, ephemeral, auth_key_id, register_method, created, \
        authorized, capability_version
        """

    private func checkAddresses(_ node: Node) throws {
        if let v4 = node.ipv4, v4.version != .v4 { throw StoreError(.invalid, "\(v4) is not an IPv4 address") }
        if let v6 = node.ipv6, v6.version != .v6 { throw StoreError(.invalid, "\(v6) is not an IPv6 address") }
        guard try user(id: node.userID) != nil else { throw StoreError(.notFound, "no user with id \(node.userID)") }
    }

    func insert(_ node: Node) throws -> Node {
        try checkAddresses(node)
        try execute("INSERT INTO nodes (\(Self.nodeColumns)) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    nodeArguments(node))
        var stored = node
        stored.id = NodeID(db.lastInsertedRowID)
        for address in [node.ipv4, node.ipv6].compactMap({ $0 }) { try markAllocated(address) }
        return stored
    }

    func update(_ node: Node) throws {
        try checkAddresses(node)
        let assignments = Self.nodeColumns.split(separator: ",").map { "\($0.trimmingCharacters(in: .whitespaces)) = ?" }
        var arguments = nodeArguments(node)
        arguments += [node.id.rawValue]
        try execute("UPDATE nodes SET \(assignments.joined(separator: ", ")) WHERE id = ?", arguments)
        if changes == 0 { throw StoreError(.notFound, "no node with id \(node.id)") }
        for address in [node.ipv4, node.ipv6].compactMap({ $0 }) { try markAllocated(address) }
    }

    func deleteNode(id: NodeID) throws {
        try execute("DELETE FROM nodes WHERE id = ?", [id.rawValue])
        if changes == 0 { throw StoreError(.notFound, "no node with id \(id)") }
    }

    private func keyArguments(_ key: PreAuthKey) -> StatementArguments {
        [
            key.prefix, Encode.blob(key.secretHash), key.userID.rawValue, key.reusable, key.ephemeral, key.preApproved,
            Encode.list(key.tags), Encode.date(key.created), Encode.date(key.expiration), key.used, key.useCount,
            key.hashScheme.rawValue,
        ]
    }

    func insert(_ key: PreAuthKey) throws -> PreAuthKey {
        guard try user(id: key.userID) != nil else { throw StoreError(.notFound, "no user with id \(key.userID)") }
        try execute("""
            INSERT INTO pre_auth_keys (prefix, secret_hash, user_id, reusable, ephemeral, pre_approved, tags, created, \
            expiration, used, use_count, hash_scheme) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """, keyArguments(key))
        var stored = key
        stored.id = PreAuthKeyID(db.lastInsertedRowID)
        return stored
    }

    func update(_ key: PreAuthKey) throws {
        var arguments = keyArguments(key)
        arguments += [key.id.rawValue]
        try execute("""
            UPDATE pre_auth_keys SET prefix = ?, secret_hash = ?, user_id = ?, reusable = ?, ephemeral = ?, pre_approved = ?, \
            tags = ?, created = ?, expiration = ?, used = ?, use_count = ?, hash_scheme = ? WHERE id = ?
            """, arguments)
        if changes == 0 { throw StoreError(.notFound, "no pre-auth key with id \(key.id)") }
    }

    func deletePreAuthKey(id: PreAuthKeyID) throws {
        try execute("DELETE FROM pre_auth_keys WHERE id = ?", [id.rawValue])
        if changes == 0 { throw StoreError(.notFound, "no pre-auth key with id \(id)") }
    }

    func insert(_ key: APIKey) throws -> APIKey {
        try execute("INSERT INTO api_keys (prefix, secret_hash, created, expiration, last_used, hash_scheme) VALUES (?, ?, ?, ?, ?, ?)",
                    [key.prefix, Encode.blob(key.secretHash), Encode.date(key.created), Encode.date(key.expiration), Encode.date(key.lastUsed),
                     key.hashScheme.rawValue])
        var stored = key
        stored.id = APIKeyID(db.lastInsertedRowID)
        return stored
    }

    func update(_ key: APIKey) throws {
        try execute("UPDATE api_keys SET prefix = ?, secret_hash = ?, created = ?, expiration = ?, last_used = ?, hash_scheme = ? WHERE id = ?",
                    [key.prefix, Encode.blob(key.secretHash), Encode.date(key.created), Encode.date(key.expiration),
                     Encode.date(key.lastUsed), key.hashScheme.rawValue, key.id.rawValue])
        if changes == 0 { throw StoreError(.notFound, "no API key with id \(key.id)") }
    }

    func deleteAPIKey(id: APIKeyID) throws {
        try execute("DELETE FROM api_keys WHERE id = ?", [id.rawValue])
        if changes == 0 { throw StoreError(.notFound, "no API key with id \(id)") }
    }

    func save(_ registration: PendingRegistration) throws {
        try execute("""
            INSERT OR REPLACE INTO pending_registrations (id, machine_key, node_key, hostname, hostinfo, ephemeral, created, \
            expires, approved_node_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
            """, [
                registration.id, Encode.blob(registration.machineKey.rawRepresentation),
                Encode.blob(registration.nodeKey.rawRepresentation), registration.hostname, registration.hostinfo,
                registration.ephemeral, Encode.date(registration.created), Encode.date(registration.expires),
                registration.approvedNodeID?.rawValue,
            ])
    }

    func deletePendingRegistration(id: String) throws {
        try execute("DELETE FROM pending_registrations WHERE id = ?", [id])
        if changes == 0 { throw StoreError(.notFound, "no pending registration \(id)") }
    }

    func appendPolicy(text: String, created: Date) throws -> PolicyVersion {
        let next = (try currentPolicy()?.version ?? 0) + 1
        try execute("INSERT INTO policies (version, text, created) VALUES (?, ?, ?)", [next, text, Encode.date(created)])
        return PolicyVersion(version: next, text: text, created: created)
    }

    func setAddressCursor(_ version: IPVersion, _ address: IPAddress) throws {
        guard address.version == version else { throw StoreError(.invalid, "\(address) is not an \(version) address") }
        try execute("INSERT OR REPLACE INTO address_cursors (family, address) VALUES (?, ?)", [version == .v4 ? 4 : 6, address.description])
    }

    func markAllocated(_ address: IPAddress) throws {
        try execute("INSERT OR IGNORE INTO allocated_addresses (address) VALUES (?)", [address.description])
    }
}

// MARK: audit log (table audit_log, migration v3)

extension SQLiteTransaction {
    private func auditEntry(_ row: Row) throws -> AuditEntry {
        let c = Columns(row: row, table: "audit_log")
        return AuditEntry(id: try c.int("id"), time: try c.date("time"), actor: try c.string("actor"), method: try c.string("method"),
                          route: try c.string("route"), object: try c.string("object"), status: Int(try c.int("status")),
                          outcome: try c.string("outcome"))
    }

    func auditEntries(since: Date?, limit: Int) throws -> [AuditEntry] {
        // The newest `limit` (by id, which follows time), returned oldest first.
        let newest = try rows("SELECT * FROM audit_log WHERE time >= ? ORDER BY id DESC LIMIT ?",
                              [Encode.date(since ?? .distantPast), max(0, limit)])
        return try newest.reversed().map(auditEntry)
    }

    func appendAudit(_ entry: AuditEntry, keeping: Int) throws -> AuditEntry {
        try execute("INSERT INTO audit_log (time, actor, method, route, object, status, outcome) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [Encode.date(entry.time), entry.actor, entry.method, entry.route, entry.object, entry.status, entry.outcome])
        var stored = entry
        stored.id = db.lastInsertedRowID
        // Ids only grow (AUTOINCREMENT): everything at or below id - keeping is older than the newest `keeping`.
        try execute("DELETE FROM audit_log WHERE id <= ?", [stored.id - Int64(max(1, keeping))])
        return stored
    }
}

// MARK: OIDC sign-ins (table oidc_sign_ins, migration v6)

extension SQLiteTransaction {
    private func signIn(_ row: Row) throws -> OIDCSignIn {
        let c = Columns(row: row, table: "oidc_sign_ins")
        return OIDCSignIn(id: try c.string("id"), loginID: try c.string("login_id"), nonce: try c.string("nonce"),
                          codeVerifier: try c.optionalString("code_verifier"), browserBinding: try c.blob("browser_binding"),
                          created: try c.date("created"))
    }

    func oidcSignInCount() throws -> Int {
        guard let row = try rows("SELECT count(*) AS n FROM oidc_sign_ins").first else { return 0 }
        return Int(try Columns(row: row, table: "oidc_sign_ins").int("n"))
    }

    func insert(_ signIn: OIDCSignIn) throws {
        guard try rows("SELECT 1 FROM oidc_sign_ins WHERE id = ?", [signIn.id]).isEmpty else {
            throw StoreError(.conflict, "a sign-in with this state exists")
        }
        try execute("""
            INSERT INTO oidc_sign_ins (id, login_id, nonce, code_verifier, browser_binding, created) VALUES (?, ?, ?, ?, ?, ?)
            """, [signIn.id, signIn.loginID, signIn.nonce, signIn.codeVerifier, Encode.blob(signIn.browserBinding),
                  Encode.date(signIn.created)])
    }

    func takeOIDCSignIn(id: String) throws -> OIDCSignIn? {
        // In the write transaction: no other writer runs between the read and the delete.
        guard let row = try rows("SELECT * FROM oidc_sign_ins WHERE id = ?", [id]).first else { return nil }
        let found = try signIn(row)
        try execute("DELETE FROM oidc_sign_ins WHERE id = ?", [id])
        return found
    }

    func pruneOIDCSignIns(createdBefore: Date, keeping: Int) throws {
        try execute("DELETE FROM oidc_sign_ins WHERE created < ?", [Encode.date(createdBefore)])
        try execute("""
            DELETE FROM oidc_sign_ins WHERE id IN \
            (SELECT id FROM oidc_sign_ins ORDER BY created DESC, id DESC LIMIT -1 OFFSET ?)
            """, [max(0, keeping)])
    }
}
