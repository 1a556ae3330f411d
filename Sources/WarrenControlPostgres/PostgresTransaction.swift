import Foundation
import PostgresNIO
import TailscaleKeys
import WarrenControlStore
import WarrenPacket

/// `StoreTransaction` over one connection inside BEGIN … COMMIT, valid only inside the closure it was made for.
///
/// PostgreSQL ends a transaction at its first failed statement (every later one fails until ROLLBACK), where SQLite
/// carries on. So the first failure is kept: a closure that catches it and returns normally still gets it thrown
/// (and nothing committed), never a silently rolled-back "success".
final class PostgresTransaction: StoreTransaction, @unchecked Sendable {
    private let connection: BlockingConnection
    /// The first statement that failed in this transaction.
    private(set) var failure: StatementFailure?
    /// What `insert(_: Node)` and friends wrote that the change feed reports (kind, id), in order.
    private(set) var changes: [(kind: String, id: String)] = []

    init(_ connection: BlockingConnection) { self.connection = connection }

    // MARK: statements

    @discardableResult
    private func execute(_ sql: String, _ arguments: [any SQLArgument] = []) throws -> Int {
        try statement(sql, arguments).count
    }

    private func rows(_ sql: String, _ arguments: [any SQLArgument] = []) throws -> [PostgresRandomAccessRow] {
        try statement(sql, arguments).rows
    }

    private func statement(_ sql: String, _ arguments: [any SQLArgument]) throws -> (rows: [PostgresRandomAccessRow], count: Int) {
        if let failure { throw failure.error }
        do {
            return try connection.run(sql, arguments)
        } catch {
            failure = error
            throw error.error
        }
    }

    private func noteChange(_ kind: String, _ id: some CustomStringConvertible) { changes.append((kind, id.description)) }

    // MARK: decoding

    private func user(_ row: PostgresRandomAccessRow) throws -> User {
        let c = PGColumns(row: row, table: "users")
        return User(id: UserID(try c.int("id")), name: try c.string("name"), displayName: try c.string("display_name"),
                    created: try c.date("created"), email: try c.string("email"), providerID: try c.optionalString("provider_id"),
                    provider: try c.string("provider"), pictureURL: try c.string("picture_url"),
                    providerGroups: try c.stringList("provider_groups"))
    }

    private func node(_ row: PostgresRandomAccessRow) throws -> Node {
        let c = PGColumns(row: row, table: "nodes")
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

    private func hashScheme(_ c: PGColumns) throws -> SecretHashScheme {
        guard let scheme = SecretHashScheme(rawValue: try c.string("hash_scheme")) else {
            throw StoreError(.corrupt, "\(c.table).hash_scheme: unknown scheme")
        }
        return scheme
    }

    private func preAuthKey(_ row: PostgresRandomAccessRow) throws -> PreAuthKey {
        let c = PGColumns(row: row, table: "pre_auth_keys")
        let useCount = try c.int("use_count")
        guard let count = Int(exactly: useCount), count >= 0 else { throw StoreError(.corrupt, "pre_auth_keys.use_count out of range") }
        return PreAuthKey(
            id: PreAuthKeyID(try c.int("id")), prefix: try c.string("prefix"), secretHash: try c.blob("secret_hash"),
            hashScheme: try hashScheme(c), userID: UserID(try c.int("user_id")), reusable: try c.bool("reusable"),
            ephemeral: try c.bool("ephemeral"), preApproved: try c.bool("pre_approved"), tags: try c.stringList("tags"),
            created: try c.date("created"), expiration: try c.optionalDate("expiration"), used: try c.bool("used"), useCount: count)
    }

    private func apiKey(_ row: PostgresRandomAccessRow) throws -> APIKey {
        let c = PGColumns(row: row, table: "api_keys")
        return APIKey(
            id: APIKeyID(try c.int("id")), prefix: try c.string("prefix"), secretHash: try c.blob("secret_hash"),
            hashScheme: try hashScheme(c), created: try c.date("created"), expiration: try c.optionalDate("expiration"),
            lastUsed: try c.optionalDate("last_used"))
    }

    private func pending(_ row: PostgresRandomAccessRow) throws -> PendingRegistration {
        let c = PGColumns(row: row, table: "pending_registrations")
        return PendingRegistration(
            id: try c.string("id"), machineKey: try c.key("machine_key", as: MachinePublic.self),
            nodeKey: try c.key("node_key", as: NodePublic.self), hostname: try c.string("hostname"),
            hostinfo: try c.optionalString("hostinfo"), ephemeral: try c.bool("ephemeral"), created: try c.date("created"),
            expires: try c.date("expires"), approvedNodeID: try c.optionalInt("approved_node_id").map { NodeID($0) })
    }

    private func policy(_ row: PostgresRandomAccessRow) throws -> PolicyVersion {
        let c = PGColumns(row: row, table: "policies")
        return PolicyVersion(version: try c.int("version"), text: try c.string("text"), created: try c.date("created"))
    }

    private func auditEntry(_ row: PostgresRandomAccessRow) throws -> AuditEntry {
        let c = PGColumns(row: row, table: "audit_log")
        return AuditEntry(id: try c.int("id"), time: try c.date("time"), actor: try c.string("actor"), method: try c.string("method"),
                          route: try c.string("route"), object: try c.string("object"), status: Int(try c.int("status")),
                          outcome: try c.string("outcome"))
    }

    private func insertedID(_ rows: [PostgresRandomAccessRow], _ table: String) throws -> Int64 {
        guard let row = rows.first else { throw StoreError(.io, "PostgreSQL returned no id for the new \(table) row") }
        return try PGColumns(row: row, table: table).int("id")
    }

    // MARK: reading

    func users() throws -> [User] { try rows("SELECT * FROM users ORDER BY id").map(user) }
    func user(id: UserID) throws -> User? { try rows("SELECT * FROM users WHERE id = $1", [id.rawValue]).first.map(user) }
    func user(named name: String) throws -> User? { try rows("SELECT * FROM users WHERE name = $1", [name]).first.map(user) }

    func nodes() throws -> [Node] { try rows("SELECT * FROM nodes ORDER BY id").map(node) }
    func nodes(userID: UserID) throws -> [Node] {
        try rows("SELECT * FROM nodes WHERE user_id = $1 ORDER BY id", [userID.rawValue]).map(node)
    }
    func node(id: NodeID) throws -> Node? { try rows("SELECT * FROM nodes WHERE id = $1", [id.rawValue]).first.map(node) }
    func node(machineKey: MachinePublic) throws -> Node? {
        try rows("SELECT * FROM nodes WHERE machine_key = $1", [Bytes(machineKey.rawRepresentation)]).first.map(node)
    }
    func node(nodeKey: NodePublic) throws -> Node? {
        try rows("SELECT * FROM nodes WHERE node_key = $1", [Bytes(nodeKey.rawRepresentation)]).first.map(node)
    }
    func node(givenName: String) throws -> Node? {
        // The unique index is on lower(given_name); labels are ASCII.
        try rows("SELECT * FROM nodes WHERE lower(given_name) = lower($1)", [givenName]).first.map(node)
    }

    func preAuthKeys(userID: UserID?) throws -> [PreAuthKey] {
        if let userID {
            return try rows("SELECT * FROM pre_auth_keys WHERE user_id = $1 ORDER BY id", [userID.rawValue]).map(preAuthKey)
        }
        return try rows("SELECT * FROM pre_auth_keys ORDER BY id").map(preAuthKey)
    }
    func preAuthKey(id: PreAuthKeyID) throws -> PreAuthKey? {
        try rows("SELECT * FROM pre_auth_keys WHERE id = $1", [id.rawValue]).first.map(preAuthKey)
    }
    func preAuthKey(prefix: String) throws -> PreAuthKey? {
        try rows("SELECT * FROM pre_auth_keys WHERE prefix = $1", [prefix]).first.map(preAuthKey)
    }

    func apiKeys() throws -> [APIKey] { try rows("SELECT * FROM api_keys ORDER BY id").map(apiKey) }
    func apiKey(id: APIKeyID) throws -> APIKey? { try rows("SELECT * FROM api_keys WHERE id = $1", [id.rawValue]).first.map(apiKey) }
    func apiKey(prefix: String) throws -> APIKey? { try rows("SELECT * FROM api_keys WHERE prefix = $1", [prefix]).first.map(apiKey) }

    func pendingRegistrations() throws -> [PendingRegistration] {
        try rows("SELECT * FROM pending_registrations ORDER BY created, id").map(pending)
    }
    func pendingRegistration(id: String) throws -> PendingRegistration? {
        try rows("SELECT * FROM pending_registrations WHERE id = $1", [id]).first.map(pending)
    }

    func policyHistory() throws -> [PolicyVersion] { try rows("SELECT * FROM policies ORDER BY version").map(policy) }
    func currentPolicy() throws -> PolicyVersion? { try rows("SELECT * FROM policies ORDER BY version DESC LIMIT 1").first.map(policy) }

    func addressCursor(_ version: IPVersion) throws -> IPAddress? {
        guard let row = try rows("SELECT address FROM address_cursors WHERE family = $1", [version == .v4 ? 4 : 6]).first else { return nil }
        guard let address = try PGColumns(row: row, table: "address_cursors").optionalAddress("address"), address.version == version else {
            throw StoreError(.corrupt, "address_cursors.address: expected an \(version) address")
        }
        return address
    }

    func wasEverAllocated(_ address: IPAddress) throws -> Bool {
        try !rows("SELECT 1 FROM allocated_addresses WHERE address = $1", [address.description]).isEmpty
    }

    func auditEntries(since: Date?, limit: Int) throws -> [AuditEntry] {
        // The newest `limit` (by id, which follows time), returned oldest first.
        let newest = try rows("SELECT * FROM audit_log WHERE time >= $1 ORDER BY id DESC LIMIT $2",
                              [PGEncode.date(since ?? .distantPast), Int64(max(0, limit))])
        return try newest.reversed().map(auditEntry)
    }

    // MARK: writing

    func insert(_ user: User) throws -> User {
        let inserted = try rows("""
            INSERT INTO users (name, display_name, created, email, provider_id, provider, picture_url, provider_groups)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id
            """, [user.name, user.displayName, PGEncode.date(user.created), user.email, user.providerID, user.provider, user.pictureURL,
                  PGEncode.list(user.providerGroups)])
        var stored = user
        stored.id = UserID(try insertedID(inserted, "users"))
        noteChange("user", stored.id)
        return stored
    }

    func update(_ user: User) throws {
        let count = try execute("""
            UPDATE users SET name = $1, display_name = $2, created = $3, email = $4, provider_id = $5, provider = $6, picture_url = $7,
            provider_groups = $8 WHERE id = $9
            """, [user.name, user.displayName, PGEncode.date(user.created), user.email, user.providerID, user.provider, user.pictureURL,
                  PGEncode.list(user.providerGroups), user.id.rawValue])
        if count == 0 { throw StoreError(.notFound, "no user with id \(user.id)") }
        noteChange("user", user.id)
    }

    func deleteUser(id: UserID) throws {
        guard try self.user(id: id) != nil else { throw StoreError(.notFound, "no user with id \(id)") }
        if try !rows("SELECT 1 FROM nodes WHERE user_id = $1 LIMIT 1", [id.rawValue]).isEmpty {
            throw StoreError(.conflict, "the user still has nodes; delete them first")
        }
        try execute("DELETE FROM users WHERE id = $1", [id.rawValue])
        noteChange("user", id)
    }

    private static let nodeColumns = [
        "machine_key", "node_key", "disco_key", "user_id", "hostname", "given_name", "ipv4", "ipv6", "endpoints", "hostinfo", "tags",
        "advertised_routes", "approved_routes", "expiry", "last_seen", "ephemeral", "auth_key_id", "register_method", "created",
        "authorized", "capability_version",
    ]

    private func nodeArguments(_ node: Node) -> [any SQLArgument] {
        [
            Bytes(node.machineKey.rawRepresentation), Bytes(node.nodeKey.rawRepresentation),
            node.discoKey.map { Bytes($0.rawRepresentation) }, node.userID.rawValue, node.hostname, node.givenName,
            node.ipv4?.description, node.ipv6?.description, PGEncode.list(node.endpoints), node.hostinfo, PGEncode.list(node.tags),
            PGEncode.prefixes(node.advertisedRoutes), PGEncode.prefixes(node.approvedRoutes), PGEncode.date(node.expiry),
            PGEncode.date(node.lastSeen), node.ephemeral, node.authKeyID?.rawValue, node.registerMethod.rawValue,
            PGEncode.date(node.created), node.authorized, node.capabilityVersion.map { Int64($0) },
        ]
    }

    private func checkNode(_ node: Node) throws {
        if let v4 = node.ipv4, v4.version != .v4 { throw StoreError(.invalid, "\(v4) is not an IPv4 address") }
        if let v6 = node.ipv6, v6.version != .v6 { throw StoreError(.invalid, "\(v6) is not an IPv6 address") }
        guard try user(id: node.userID) != nil else { throw StoreError(.notFound, "no user with id \(node.userID)") }
    }

    func insert(_ node: Node) throws -> Node {
        try checkNode(node)
        let placeholders = (1...Self.nodeColumns.count).map { "$\($0)" }.joined(separator: ", ")
        let inserted = try rows("INSERT INTO nodes (\(Self.nodeColumns.joined(separator: ", "))) VALUES (\(placeholders)) RETURNING id",
                                nodeArguments(node))
        var stored = node
        stored.id = NodeID(try insertedID(inserted, "nodes"))
        for address in [node.ipv4, node.ipv6].compactMap({ $0 }) { try markAllocated(address) }
        noteChange("node", stored.id)
        return stored
    }

    func update(_ node: Node) throws {
        try checkNode(node)
        let assignments = Self.nodeColumns.enumerated().map { "\($1) = $\($0 + 1)" }.joined(separator: ", ")
        let count = try execute("UPDATE nodes SET \(assignments) WHERE id = $\(Self.nodeColumns.count + 1)",
                                nodeArguments(node) + [node.id.rawValue])
        if count == 0 { throw StoreError(.notFound, "no node with id \(node.id)") }
        for address in [node.ipv4, node.ipv6].compactMap({ $0 }) { try markAllocated(address) }
        noteChange("node", node.id)
    }

    func deleteNode(id: NodeID) throws {
        if try execute("DELETE FROM nodes WHERE id = $1", [id.rawValue]) == 0 { throw StoreError(.notFound, "no node with id \(id)") }
        noteChange("node", id)
    }

    private func keyArguments(_ key: PreAuthKey) -> [any SQLArgument] {
        [
            key.prefix, Bytes(key.secretHash), key.userID.rawValue, key.reusable, key.ephemeral, key.preApproved,
            PGEncode.list(key.tags), PGEncode.date(key.created), PGEncode.date(key.expiration), key.used, Int64(key.useCount),
            key.hashScheme.rawValue,
        ]
    }

    func insert(_ key: PreAuthKey) throws -> PreAuthKey {
        guard try user(id: key.userID) != nil else { throw StoreError(.notFound, "no user with id \(key.userID)") }
        let inserted = try rows("""
            INSERT INTO pre_auth_keys (prefix, secret_hash, user_id, reusable, ephemeral, pre_approved, tags, created, \
            expiration, used, use_count, hash_scheme) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id
            """, keyArguments(key))
        var stored = key
        stored.id = PreAuthKeyID(try insertedID(inserted, "pre_auth_keys"))
        noteChange("preauthkey", stored.id)
        return stored
    }

    func update(_ key: PreAuthKey) throws {
        let count = try execute("""
            UPDATE pre_auth_keys SET prefix = $1, secret_hash = $2, user_id = $3, reusable = $4, ephemeral = $5, pre_approved = $6, \
            tags = $7, created = $8, expiration = $9, used = $10, use_count = $11, hash_scheme = $12 WHERE id = $13
            """, keyArguments(key) + [key.id.rawValue])
        if count == 0 { throw StoreError(.notFound, "no pre-auth key with id \(key.id)") }
        noteChange("preauthkey", key.id)
    }

    func deletePreAuthKey(id: PreAuthKeyID) throws {
        if try execute("DELETE FROM pre_auth_keys WHERE id = $1", [id.rawValue]) == 0 {
            throw StoreError(.notFound, "no pre-auth key with id \(id)")
        }
        noteChange("preauthkey", id)
    }

    func insert(_ key: APIKey) throws -> APIKey {
        let inserted = try rows("""
            INSERT INTO api_keys (prefix, secret_hash, created, expiration, last_used, hash_scheme) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id
            """, [key.prefix, Bytes(key.secretHash), PGEncode.date(key.created), PGEncode.date(key.expiration),
                  PGEncode.date(key.lastUsed), key.hashScheme.rawValue])
        var stored = key
        stored.id = APIKeyID(try insertedID(inserted, "api_keys"))
        noteChange("apikey", stored.id)
        return stored
    }

    func update(_ key: APIKey) throws {
        let count = try execute("""
            UPDATE api_keys SET prefix = $1, secret_hash = $2, created = $3, expiration = $4, last_used = $5, hash_scheme = $6 WHERE id = $7
            """, [key.prefix, Bytes(key.secretHash), PGEncode.date(key.created), PGEncode.date(key.expiration),
                  PGEncode.date(key.lastUsed), key.hashScheme.rawValue, key.id.rawValue])
        if count == 0 { throw StoreError(.notFound, "no API key with id \(key.id)") }
        noteChange("apikey", key.id)
    }

    func deleteAPIKey(id: APIKeyID) throws {
        if try execute("DELETE FROM api_keys WHERE id = $1", [id.rawValue]) == 0 { throw StoreError(.notFound, "no API key with id \(id)") }
        noteChange("apikey", id)
    }

    func save(_ registration: PendingRegistration) throws {
        try execute("""
            INSERT INTO pending_registrations (id, machine_key, node_key, hostname, hostinfo, ephemeral, created, expires, \
            approved_node_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO UPDATE SET \
            machine_key = EXCLUDED.machine_key, node_key = EXCLUDED.node_key, hostname = EXCLUDED.hostname, \
            hostinfo = EXCLUDED.hostinfo, ephemeral = EXCLUDED.ephemeral, created = EXCLUDED.created, \
            expires = EXCLUDED.expires, approved_node_id = EXCLUDED.approved_node_id
            """, [
                registration.id, Bytes(registration.machineKey.rawRepresentation), Bytes(registration.nodeKey.rawRepresentation),
                registration.hostname, registration.hostinfo, registration.ephemeral, PGEncode.date(registration.created),
                PGEncode.date(registration.expires), registration.approvedNodeID?.rawValue,
            ])
        noteChange("registration", registration.id)
    }

    func deletePendingRegistration(id: String) throws {
        if try execute("DELETE FROM pending_registrations WHERE id = $1", [id]) == 0 {
            throw StoreError(.notFound, "no pending registration \(id)")
        }
        noteChange("registration", id)
    }

    func appendPolicy(text: String, created: Date) throws -> PolicyVersion {
        let next = (try currentPolicy()?.version ?? 0) + 1
        try execute("INSERT INTO policies (version, text, created) VALUES ($1, $2, $3)", [next, text, PGEncode.date(created)])
        noteChange("policy", next)
        return PolicyVersion(version: next, text: text, created: created)
    }

    func setAddressCursor(_ version: IPVersion, _ address: IPAddress) throws {
        guard address.version == version else { throw StoreError(.invalid, "\(address) is not an \(version) address") }
        try execute("""
            INSERT INTO address_cursors (family, address) VALUES ($1, $2) ON CONFLICT (family) DO UPDATE SET address = EXCLUDED.address
            """, [Int64(version == .v4 ? 4 : 6), address.description])
    }

    func markAllocated(_ address: IPAddress) throws {
        try execute("INSERT INTO allocated_addresses (address) VALUES ($1) ON CONFLICT DO NOTHING", [address.description])
    }

    // MARK: OIDC sign-ins (not in the change feed: no instance keeps them in memory)

    private func signIn(_ row: PostgresRandomAccessRow) throws -> OIDCSignIn {
        let c = PGColumns(row: row, table: "oidc_sign_ins")
        return OIDCSignIn(id: try c.string("id"), loginID: try c.string("login_id"), nonce: try c.string("nonce"),
                          codeVerifier: try c.optionalString("code_verifier"), browserBinding: try c.blob("browser_binding"),
                          created: try c.date("created"))
    }

    func oidcSignInCount() throws -> Int {
        guard let row = try rows("SELECT count(*) AS n FROM oidc_sign_ins").first else { return 0 }
        return Int(try PGColumns(row: row, table: "oidc_sign_ins").int("n"))
    }

    func insert(_ signIn: OIDCSignIn) throws {
        // ON CONFLICT instead of a failed statement: a failure would end the transaction.
        let inserted = try rows("""
            INSERT INTO oidc_sign_ins (id, login_id, nonce, code_verifier, browser_binding, created) VALUES ($1, $2, $3, $4, $5, $6) \
            ON CONFLICT (id) DO NOTHING RETURNING id
            """, [signIn.id, signIn.loginID, signIn.nonce, signIn.codeVerifier, Bytes(signIn.browserBinding), PGEncode.date(signIn.created)])
        if inserted.isEmpty { throw StoreError(.conflict, "a sign-in with this state exists") }
    }

    func takeOIDCSignIn(id: String) throws -> OIDCSignIn? {
        // One statement: of two instances taking the same state at once, one gets the row and the other nothing.
        try rows("DELETE FROM oidc_sign_ins WHERE id = $1 RETURNING *", [id]).first.map(signIn)
    }

    func pruneOIDCSignIns(createdBefore: Date, keeping: Int) throws {
        try execute("DELETE FROM oidc_sign_ins WHERE created < $1", [PGEncode.date(createdBefore)])
        try execute("""
            DELETE FROM oidc_sign_ins WHERE id IN (SELECT id FROM oidc_sign_ins ORDER BY created DESC, id DESC OFFSET $1)
            """, [Int64(max(0, keeping))])
    }

    /// Appends this transaction's changes to the change feed (`changes`, in order, each record once) and notifies
    /// the listeners on commit; keeps the newest `keeping` rows. Returns the last sequence number (nil: no changes).
    @discardableResult
    func recordChanges(origin: String, at time: Date, keeping: Int64) throws -> Int64? {
        var seen = Set<String>()
        let unique = changes.filter { seen.insert("\($0.kind)\u{0}\($0.id)").inserted }
        guard !unique.isEmpty else { return nil }
        var values: [String] = []
        var arguments: [any SQLArgument] = []
        for (i, change) in unique.enumerated() {
            values.append("($\(4 * i + 1), $\(4 * i + 2), $\(4 * i + 3), $\(4 * i + 4))")
            arguments += [change.kind, change.id, origin, time.timeIntervalSinceReferenceDate]
        }
        // The rows and the notification (sent on commit) in one round trip.
        let inserted = try rows("""
            WITH added AS (INSERT INTO changes (kind, object, origin, at) VALUES \(values.joined(separator: ", ")) RETURNING seq) \
            SELECT MIN(seq) AS first, MAX(seq) AS last, pg_notify('\(PostgresChangeFeed.channel)', MAX(seq)::text) AS notified FROM added
            """, arguments)
        guard let row = inserted.first else { throw StoreError(.io, "PostgreSQL returned no numbers for the change feed's rows") }
        let numbers = PGColumns(row: row, table: "changes")
        let (first, last) = (try numbers.int("first"), try numbers.int("last"))
        // Pruned each time the numbers pass a multiple of 64 (cheap, and the table stays near `keeping` rows).
        if (first - 1) / 64 != last / 64 { try execute("DELETE FROM changes WHERE seq <= $1", [last - keeping]) }
        return last
    }

    func appendAudit(_ entry: AuditEntry, keeping: Int) throws -> AuditEntry {
        let inserted = try rows("""
            INSERT INTO audit_log (time, actor, method, route, object, status, outcome) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id
            """, [PGEncode.date(entry.time), entry.actor, entry.method, entry.route, entry.object, Int64(entry.status), entry.outcome])
        var stored = entry
        stored.id = try insertedID(inserted, "audit_log")
        // Ids only grow (a sequence): everything at or below id - keeping is older than the newest `keeping`.
        try execute("DELETE FROM audit_log WHERE id <= $1", [stored.id - Int64(max(1, keeping))])
        return stored
    }
}
