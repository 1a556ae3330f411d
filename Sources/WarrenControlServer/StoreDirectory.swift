// ControlDirectory over WarrenControlStore: the engine's records mapped to and from the store's, each
// call one store transaction. Runtime-only state (online, home DERP, capability version) is not stored.

import Foundation
import TailscaleKeys
import WarrenControlStore
import WarrenPacket
import WarrenTailcfg

public final class StoreDirectory: ControlDirectory {
    public let store: any ControlStore
    private let allocator: AddressAllocator

    public init(store: any ControlStore, ipv4Prefix: IPPrefix, ipv6Prefix: IPPrefix) throws {
        self.store = store
        self.allocator = try AddressAllocator(ipv4Prefix: ipv4Prefix, ipv6Prefix: ipv6Prefix)
    }

    public func users() async throws -> [ControlUser] {
        try await store.read { try $0.users() }.map(Self.controlUser)
    }

    public func nodes() async throws -> [ControlNode] {
        try await store.read { try $0.nodes() }.map(Self.controlNode)
    }

    /// The nodes with these ids that exist, in one read.
    public func nodes(ids: [Int64]) async throws -> [Int64: ControlNode] {
        let found = try await store.read { tx in try ids.compactMap { try tx.node(id: NodeID($0)) } }
        return Dictionary(found.map { ($0.id.rawValue, Self.controlNode($0)) }, uniquingKeysWith: { a, _ in a })
    }

    public func node(id: Int64) async throws -> ControlNode? {
        try await store.read { try $0.node(id: NodeID(id)) }.map(Self.controlNode)
    }

    public func redeemPreAuthKey(_ key: String, machineKey: MachinePublic, now: TailcfgTime) async throws -> PreAuthGrant {
        let date = now.date
        do {
            // The secret is checked before the write transaction (bcrypt must not hold the writer); the transaction
            // reads the record again and records the use only if it is unchanged, unexpired and (one-off) unused.
            let checked = try await store.checkPreAuthKey(key)
            let stored = try await store.transaction { try $0.usePreAuthKey(checked: checked, now: date) }
            return PreAuthGrant(userID: stored.userID.rawValue, ephemeral: stored.ephemeral, tags: stored.tags,
                                preApproved: stored.preApproved)
        } catch let error as StoreError where error.code == .invalid || error.code == .notFound {
            throw RegistrationRefusal(error.message)
        }
    }

    public func createNode(_ node: ControlNode) async throws -> ControlNode {
        let allocator = allocator
        let registration = NodeRegistration(
            machineKey: node.machineKey, nodeKey: node.nodeKey, discoKey: node.discoKey.raw.isZero ? nil : node.discoKey,
            userID: UserID(node.userID), hostname: node.hostname, hostinfo: Self.hostinfoText(node.hostinfo),
            tags: node.tags, ephemeral: node.ephemeral, method: .authKey, expiry: node.keyExpiry?.date,
            capabilityVersion: node.capabilityVersion > 0 ? node.capabilityVersion : nil)
        let created = node.created.date
        do {
            let authorized = node.authorized
            let stored = try await store.transaction { tx in
                var stored = try tx.registerNode(registration, allocator: allocator, now: created)
                if stored.authorized != authorized {
                    stored.authorized = authorized
                    try tx.update(stored)
                }
                return stored
            }
            var result = Self.controlNode(stored)
            result.capabilityVersion = node.capabilityVersion
            return result
        } catch let error as StoreError where error.code == .exhausted || error.code == .conflict || error.code == .invalid {
            throw RegistrationRefusal(error.message)
        }
    }

    public func updateNode(_ node: ControlNode, fields: NodeFields) async throws {
        try await store.transaction { tx in
            guard var stored = try tx.node(id: NodeID(node.id)) else { return }
            Self.copy(node, fields: fields, into: &stored)
            try tx.update(stored)
        }
    }

    public func deleteNode(id: Int64) async throws {
        try await store.transaction { tx in
            if try tx.node(id: NodeID(id)) != nil { try tx.deleteNode(id: NodeID(id)) }
        }
    }

    public func savePendingLogin(id: String, request: RegisterRequest, machineKey: MachinePublic, created: TailcfgTime,
                                 expires: TailcfgTime) async throws {
        let pending = PendingRegistration(
            id: id, machineKey: machineKey, nodeKey: request.nodeKey, hostname: request.hostinfo?.hostname ?? "",
            hostinfo: Self.hostinfoText(request.hostinfo), ephemeral: request.ephemeral == true,
            created: created.date, expires: expires.date)
        try await store.transaction { try $0.save(pending) }
    }

    public func approvedNodeID(forPendingLogin id: String) async throws -> Int64? {
        try await store.read { try $0.pendingRegistration(id: id)?.approvedNodeID?.rawValue }
    }

    /// A pending login's record (one another instance may have started).
    public func pendingLoginRecord(id: String) async throws -> PendingRegistration? {
        try await store.read { try $0.pendingRegistration(id: id) }
    }

    public func markPendingLogin(id: String, approvedNode nodeID: Int64) async throws {
        try await store.transaction { tx in
            guard var pending = try tx.pendingRegistration(id: id) else { return }
            pending.approvedNodeID = NodeID(nodeID)
            try tx.save(pending)
        }
    }

    public func deletePendingLogins(ids: [String]) async throws {
        guard !ids.isEmpty else { return }
        try await store.transaction { tx in
            for id in ids where try tx.pendingRegistration(id: id) != nil { try tx.deletePendingRegistration(id: id) }
        }
    }

    /// Deletes the pending logins whose time ran out (at start: the engine keeps the live ones in memory).
    public func deleteExpiredPendingLogins(now: TailcfgTime) async throws -> Int {
        let date = now.date
        return try await store.transaction { tx in
            let expired = try tx.pendingRegistrations().filter { $0.expires <= date }
            for pending in expired { try tx.deletePendingRegistration(id: pending.id) }
            return expired.count
        }
    }

    public func admitWithPreAuthKey(_ key: String, machineKey: MachinePublic, nodeKey: NodePublic, now: TailcfgTime,
                                    draft: @escaping @Sendable (PreAuthGrant) -> (node: ControlNode, fields: NodeFields?))
        async throws -> PreAuthAdmission
    {
        let allocator = allocator
        let date = now.date
        do {
            // As in redeemPreAuthKey: the secret checked first, outside the transaction.
            let checked = try await store.checkPreAuthKey(key)
            return try await store.transaction { tx in
                // A repeated request: the one-off key was spent on this very machine and node key.
                if let stored = try tx.preAuthKey(prefix: checked.prefix), stored.id == checked.id,
                   stored.secretHash == checked.secretHash, !stored.reusable, stored.used,
                   let node = try tx.node(machineKey: machineKey), node.nodeKey == nodeKey, node.authKeyID == stored.id {
                    return PreAuthAdmission(node: Self.controlNode(node), replayed: true)
                }
                let used = try tx.usePreAuthKey(checked: checked, now: date)
                let grant = PreAuthGrant(userID: used.userID.rawValue, ephemeral: used.ephemeral, tags: used.tags,
                                         preApproved: used.preApproved)
                let (node, fields) = draft(grant)
                var stored: WarrenControlStore.Node
                if let fields, var existing = try tx.node(id: NodeID(node.id)), existing.machineKey == machineKey {
                    if let holder = try tx.node(nodeKey: node.nodeKey), holder.id != existing.id {
                        throw StoreError(.conflict, "node key \(node.nodeKey.shortString) belongs to another machine")
                    }
                    if fields.contains(.names), let holder = try tx.node(givenName: node.givenName), holder.id != existing.id {
                        throw StoreError(.conflict, "the name \(node.givenName) is taken")
                    }
                    Self.copy(node, fields: fields, into: &existing)
                    existing.authKeyID = used.id
                    existing.registerMethod = .authKey
                    try tx.update(existing)
                    stored = existing
                } else {
                    let registration = NodeRegistration(
                        machineKey: node.machineKey, nodeKey: node.nodeKey,
                        discoKey: node.discoKey.raw.isZero ? nil : node.discoKey, userID: UserID(node.userID),
                        hostname: node.hostname, hostinfo: Self.hostinfoText(node.hostinfo), tags: node.tags,
                        ephemeral: node.ephemeral, authKeyID: used.id, method: .authKey, expiry: node.keyExpiry?.date,
                        capabilityVersion: node.capabilityVersion > 0 ? node.capabilityVersion : nil)
                    stored = try tx.registerNode(registration, allocator: allocator, now: node.created.date)
                    if stored.authorized != node.authorized {
                        stored.authorized = node.authorized
                        try tx.update(stored)
                    }
                }
                var result = Self.controlNode(stored)
                result.capabilityVersion = node.capabilityVersion
                return PreAuthAdmission(node: result, replayed: false)
            }
        } catch let error as StoreError where error.code == .invalid || error.code == .notFound || error.code == .exhausted
            || error.code == .conflict {
            throw RegistrationRefusal(error.message)
        }
    }

    // MARK: Mapping

    static func controlUser(_ user: WarrenControlStore.User) -> ControlUser {
        ControlUser(id: user.id.rawValue, name: user.name, displayName: user.displayName.isEmpty ? nil : user.displayName,
                    email: user.email, pictureURL: user.pictureURL, providerGroups: user.providerGroups)
    }

    static func controlNode(_ stored: WarrenControlStore.Node) -> ControlNode {
        var node = ControlNode(id: stored.id.rawValue, machineKey: stored.machineKey, nodeKey: stored.nodeKey,
                               userID: stored.userID.rawValue, hostname: stored.hostname, givenName: stored.givenName,
                               created: TailcfgTime(date: stored.created))
        node.discoKey = stored.discoKey ?? DiscoPublic(raw: .zero)
        node.ipv4 = stored.ipv4
        node.ipv6 = stored.ipv6
        node.endpoints = stored.endpoints.compactMap(AddrPort.init)
        if let text = stored.hostinfo {
            node.hostinfo = try? TailcfgJSON.decode(Hostinfo.self, from: Array(text.utf8))
        }
        node.homeDERP = node.hostinfo?.netInfo?.preferredDERP ?? 0
        node.keyExpiry = stored.expiry.map(TailcfgTime.init(date:))
        node.lastSeen = stored.lastSeen.map(TailcfgTime.init(date:))
        node.ephemeral = stored.ephemeral
        node.tags = stored.tags
        node.approvedRoutes = stored.approvedRoutes
        node.authorized = stored.authorized
        node.capabilityVersion = stored.capabilityVersion ?? 0
        return node
    }

    static func copy(_ node: ControlNode, fields: NodeFields = .all, into stored: inout WarrenControlStore.Node) {
        if fields.contains(.nodeKey) {
            stored.machineKey = node.machineKey
            stored.nodeKey = node.nodeKey
        }
        if fields.contains(.discoKey) { stored.discoKey = node.discoKey.raw.isZero ? nil : node.discoKey }
        if fields.contains(.owner) {
            stored.userID = UserID(node.userID)
            stored.tags = node.tags
            stored.ephemeral = node.ephemeral
        }
        if fields.contains(.names) {
            stored.hostname = node.hostname
            stored.givenName = node.givenName
        }
        if fields.contains(.endpoints) { stored.endpoints = node.endpoints.map(\.description) }
        if fields.contains(.hostinfo) {
            stored.hostinfo = hostinfoText(node.hostinfo)
            stored.advertisedRoutes = node.hostinfo?.routableIPs ?? []
        }
        if fields.contains(.expiry) { stored.expiry = node.keyExpiry?.date }
        if fields.contains(.lastSeen) { stored.lastSeen = node.lastSeen?.date }
        if fields.contains(.approvedRoutes) { stored.approvedRoutes = node.approvedRoutes }
        if fields.contains(.authorized) { stored.authorized = node.authorized }
        if fields.contains(.capability), node.capabilityVersion > 0 { stored.capabilityVersion = node.capabilityVersion }
    }

    static func hostinfoText(_ hostinfo: Hostinfo?) -> String? {
        guard let hostinfo, let bytes = try? TailcfgJSON.encode(hostinfo) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// MagicDNS labels, as the store makes them (so the engine and the store agree on names).
enum MagicDNSLabel {
    static func sanitize(_ hostname: String) -> String { DNSLabel.sanitize(hostname) }

    static func unique(_ base: String, taken: Set<String>) -> String {
        (try? DNSLabel.unique(base) { taken.contains($0) }) ?? base
    }
}
