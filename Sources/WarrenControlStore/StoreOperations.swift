import Foundation
import TailscaleKeys
import WarrenPacket

// Operations built from the store primitives, shared by every implementation, so the rules live in one place.

/// What the register handler (or an admin approving an interactive login) knows about a machine.
public struct NodeRegistration: Sendable, Hashable {
    public var machineKey: MachinePublic
    public var nodeKey: NodePublic
    public var discoKey: DiscoPublic?
    public var userID: UserID
    public var hostname: String
    public var hostinfo: String?
    public var tags: [String]
    public var ephemeral: Bool
    public var authKeyID: PreAuthKeyID?
    public var method: RegisterMethod
    /// The node key's expiry (nil = never; the server computes it from its configuration; tagged nodes: nil).
    public var expiry: Date?
    /// Routes to approve at once (a pre-approved key), in addition to any approved before.
    public var approvedRoutes: [IPPrefix]
    /// The client's capability version (its register request's), when known.
    public var capabilityVersion: Int?

    public init(
        machineKey: MachinePublic, nodeKey: NodePublic, discoKey: DiscoPublic? = nil, userID: UserID, hostname: String,
        hostinfo: String? = nil, tags: [String] = [], ephemeral: Bool = false, authKeyID: PreAuthKeyID? = nil,
        method: RegisterMethod, expiry: Date? = nil, approvedRoutes: [IPPrefix] = [], capabilityVersion: Int? = nil
    ) {
        self.capabilityVersion = capabilityVersion
        self.machineKey = machineKey
        self.nodeKey = nodeKey
        self.discoKey = discoKey
        self.userID = userID
        self.hostname = hostname
        self.hostinfo = hostinfo
        self.tags = tags
        self.ephemeral = ephemeral
        self.authKeyID = authKeyID
        self.method = method
        self.expiry = expiry
        self.approvedRoutes = approvedRoutes
    }
}

/// Options of a new pre-auth key.
public struct PreAuthKeyOptions: Sendable, Hashable {
    public var reusable: Bool
    public var ephemeral: Bool
    public var preApproved: Bool
    public var tags: [String]
    public var expiration: Date?

    public init(reusable: Bool = false, ephemeral: Bool = false, preApproved: Bool = false, tags: [String] = [], expiration: Date? = nil) {
        self.reusable = reusable
        self.ephemeral = ephemeral
        self.preApproved = preApproved
        self.tags = tags
        self.expiration = expiration
    }
}

public enum StoreRules {
    /// A user name, by headscale's rules (but one character is enough): 1 to 255 bytes, starting with a letter, then letters, digits, "-", ".", "_"
    /// and at most one "@" (such as an e-mail address). Letters may be any script's ("jörg"). Names stored before
    /// this rule remain usable (renamed, deleted); new and renamed-to names must follow it.
    public static func validateUserName(_ name: String) throws {
        guard !name.isEmpty, name.utf8.count <= 255 else {
            throw StoreError(.invalid, "a user name must have 1 to 255 bytes: \(name.debugDescription)")
        }
        guard let first = name.unicodeScalars.first, first.properties.isAlphabetic, !("0"..."9").contains(first) else {
            throw StoreError(.invalid, "a user name must start with a letter: \(name.debugDescription)")
        }
        var ats = 0
        for scalar in name.unicodeScalars {
            if scalar == "@" {
                ats += 1
                guard ats <= 1 else { throw StoreError(.invalid, "a user name may contain at most one \"@\": \(name.debugDescription)") }
                continue
            }
            let allowed = scalar.properties.isAlphabetic || scalar.properties.numericType == .decimal
                || scalar == "-" || scalar == "." || scalar == "_" || scalar.properties.generalCategory == .nonspacingMark
                || scalar.properties.generalCategory == .spacingMark
            guard allowed else {
                throw StoreError(.invalid, "a user name may contain only letters, digits, \"-\", \".\", \"_\" and one \"@\"; "
                                 + "\(name.debugDescription) contains \(String(scalar).debugDescription)")
            }
        }
    }

    /// An e-mail address as a user record keeps it: empty, or at most 254 bytes with one "@" that has text on both
    /// sides, and no spaces or control characters (no further checks: headscale makes none either).
    /// A profile picture URL: empty, or an absolute http(s) URL of at most 2,048 bytes without spaces or controls
    /// (clients fetch it to show the user's picture).
    public static func validatePictureURL(_ text: String) throws {
        if text.isEmpty { return }
        let lower = text.lowercased()
        guard text.utf8.count <= 2048, lower.hasPrefix("https://") || lower.hasPrefix("http://"),
              text.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value != 0x7F }),
              let url = URL(string: text), let host = url.host, !host.isEmpty else {
            throw StoreError(.invalid, "not an http(s) URL for a profile picture: \(text.debugDescription)")
        }
    }

    public static func validateEmail(_ email: String) throws {
        if email.isEmpty { return }
        let parts = email.split(separator: "@", omittingEmptySubsequences: false)
        guard email.utf8.count <= 254, parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty,
              email.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value != 0x7F }) else {
            throw StoreError(.invalid, "not an e-mail address: \(email.debugDescription)")
        }
    }

    /// A tag: "tag:" followed by letters, digits, "-" or "_" (Tailscale's rule), at most 64 characters in all.
    public static func validateTag(_ tag: String) throws {
        let body = tag.hasPrefix("tag:") ? tag.dropFirst(4) : ""
        guard !body.isEmpty, tag.utf8.count <= 64,
              body.utf8.first.map({ (0x41...0x5A).contains($0) || (0x61...0x7A).contains($0) }) == true,
              body.utf8.allSatisfy({
                  (0x30...0x39).contains($0) || (0x41...0x5A).contains($0) || (0x61...0x7A).contains($0) || $0 == 0x2D || $0 == 0x5F
              }) else {
            throw StoreError(.invalid, "a tag is \"tag:\" followed by a letter and then letters, digits, \"-\" or \"_\": \(tag.debugDescription)")
        }
    }
}

extension StoreReading {
    /// Looks a user up by name, throwing a clear `.notFound`.
    public func requireUser(named name: String) throws -> User {
        guard let user = try user(named: name) else { throw StoreError(.notFound, "no user named \(name.debugDescription)") }
        return user
    }

    public func requireNode(id: NodeID) throws -> Node {
        guard let node = try node(id: id) else { throw StoreError(.notFound, "no node with id \(id)") }
        return node
    }

    /// The pre-auth key that `text` names, if it is valid now: it exists, its secret matches, it has not expired
    /// and (if one-off) has not been used. Refusals are `.invalid` with the text the client is shown.
    public func validPreAuthKey(_ text: String, now: Date) throws -> PreAuthKey {
        // headscale's key texts, as `import headscale` carried their records, are accepted beside Warren's own form.
        guard let parsed = PresentedKey(parsing: text, kind: .preAuth),
              let key = try preAuthKey(prefix: parsed.prefix), parsed.matches(hash: key.secretHash, scheme: key.hashScheme) else {
            throw StoreError(.invalid, "invalid pre-auth key")
        }
        if key.isExpired(at: now) { throw StoreError(.invalid, "pre-auth key expired") }
        if !key.reusable && key.used { throw StoreError(.invalid, "pre-auth key has already been used") }
        return key
    }

    /// The API key that `text` names, if it exists, matches and has not expired; `.invalid` otherwise.
    public func validAPIKey(_ text: String, now: Date) throws -> APIKey {
        guard let parsed = PresentedKey(parsing: text, kind: .api),
              let key = try apiKey(prefix: parsed.prefix), parsed.matches(hash: key.secretHash, scheme: key.hashScheme) else {
            throw StoreError(.invalid, "invalid API key")
        }
        if key.isExpired(at: now) { throw StoreError(.invalid, "API key expired") }
        return key
    }
}

extension ControlStore {
    /// The pre-auth key record that `text` names, its secret checked against the record's hash after the read and
    /// outside any transaction (bcrypt, for keys imported from headscale, is slow by design and must not hold the
    /// writer). Only the secret is checked here: expiry and use are checked by `usePreAuthKey(checked:now:)` in the
    /// transaction that records the use. Throws `.invalid` "invalid pre-auth key" for an unknown key or a wrong secret.
    public func checkPreAuthKey(_ text: String) async throws -> PreAuthKey {
        guard let parsed = PresentedKey(parsing: text, kind: .preAuth) else { throw StoreError(.invalid, "invalid pre-auth key") }
        let prefix = parsed.prefix
        guard let key = try await read({ try $0.preAuthKey(prefix: prefix) }),
              parsed.matches(hash: key.secretHash, scheme: key.hashScheme) else {
            throw StoreError(.invalid, "invalid pre-auth key")
        }
        return key
    }
}

extension StoreTransaction {
    public func createUser(name: String, displayName: String = "", email: String = "", pictureURL: String = "",
                           now: Date) throws -> User {
        try StoreRules.validateUserName(name)
        try StoreRules.validateEmail(email)
        try StoreRules.validatePictureURL(pictureURL)
        if try user(named: name) != nil { throw StoreError(.conflict, "a user named \(name.debugDescription) already exists") }
        return try insert(User(id: UserID(0), name: name, displayName: displayName, created: now, email: email,
                               pictureURL: pictureURL))
    }

    public func renameUser(_ oldName: String, to newName: String) throws -> User {
        var user = try requireUser(named: oldName)
        try StoreRules.validateUserName(newName)
        if oldName != newName, try self.user(named: newName) != nil {
            throw StoreError(.conflict, "a user named \(newName.debugDescription) already exists")
        }
        user.name = newName
        try update(user)
        return user
    }

    /// Creates a pre-auth key and returns it with its full text (shown once; only its hash is stored).
    public func createPreAuthKey(
        userID: UserID, options: PreAuthKeyOptions, now: Date, generator: inout some RandomNumberGenerator
    ) throws -> (key: PreAuthKey, text: String) {
        guard try user(id: userID) != nil else { throw StoreError(.notFound, "no user with id \(userID)") }
        for tag in options.tags { try StoreRules.validateTag(tag) }
        var secret = SecretKeyText.generate(.preAuth, using: &generator)
        while try preAuthKey(prefix: secret.prefix) != nil { secret = SecretKeyText.generate(.preAuth, using: &generator) }
        let key = try insert(PreAuthKey(
            prefix: secret.prefix, secretHash: secret.secretHash, userID: userID, reusable: options.reusable,
            ephemeral: options.ephemeral, preApproved: options.preApproved, tags: options.tags, created: now,
            expiration: options.expiration))
        return (key, secret.text)
    }

    /// Validates the key (see `validPreAuthKey`) and records one use of it, atomically. The secret is checked inside
    /// the transaction: for a bcrypt-hashed (imported) key that holds the store's writer for the check's tens of
    /// milliseconds, so the server redeems keys with `ControlStore.checkPreAuthKey` and `usePreAuthKey(checked:now:)`.
    public func usePreAuthKey(_ text: String, now: Date) throws -> PreAuthKey {
        var key = try validPreAuthKey(text, now: now)
        key.used = true
        key.useCount += 1
        try update(key)
        return key
    }

    /// Records one use of a pre-auth key whose secret `ControlStore.checkPreAuthKey` checked before the transaction:
    /// the record must still be the one checked (same id, hash and scheme, so the checked secret still matches it),
    /// unexpired, and, if one-off, unused, all read again here, so two redemptions of a one-off key cannot both pass.
    public func usePreAuthKey(checked: PreAuthKey, now: Date) throws -> PreAuthKey {
        guard var key = try preAuthKey(prefix: checked.prefix), key.id == checked.id, key.secretHash == checked.secretHash,
              key.hashScheme == checked.hashScheme else {
            throw StoreError(.invalid, "invalid pre-auth key")
        }
        if key.isExpired(at: now) { throw StoreError(.invalid, "pre-auth key expired") }
        if !key.reusable && key.used { throw StoreError(.invalid, "pre-auth key has already been used") }
        key.used = true
        key.useCount += 1
        try update(key)
        return key
    }

    /// Creates an API key and returns it with its full text (shown once).
    public func createAPIKey(expiration: Date?, now: Date, generator: inout some RandomNumberGenerator) throws -> (key: APIKey, text: String) {
        var secret = SecretKeyText.generate(.api, using: &generator)
        while try apiKey(prefix: secret.prefix) != nil { secret = SecretKeyText.generate(.api, using: &generator) }
        let key = try insert(APIKey(prefix: secret.prefix, secretHash: secret.secretHash, created: now, expiration: expiration))
        return (key, secret.text)
    }

    /// The next unused IPv4 and IPv6, advancing the cursors (they are marked allocated when the node is saved).
    public func allocateAddresses(_ allocator: AddressAllocator) throws -> (ipv4: IPAddress, ipv6: IPAddress) {
        var result: [IPAddress] = []
        for version in [IPVersion.v4, .v6] {
            let address = try allocator.next(version, after: try addressCursor(version)) { try wasEverAllocated($0) }
            try setAddressCursor(version, address)
            result.append(address)
        }
        return (result[0], result[1])
    }

    /// A free MagicDNS label for `hostname`, not counting `excluding` (the node being renamed).
    public func uniqueGivenName(for hostname: String, excluding: NodeID? = nil) throws -> String {
        try DNSLabel.unique(DNSLabel.sanitize(hostname)) { candidate in
            guard let holder = try node(givenName: candidate) else { return false }
            return holder.id != excluding
        }
    }

    /// Registers a machine: a machine already known (same machine key) logs in again and keeps its id, addresses
    /// and name, taking the new node key, owner, tags and expiry; a new machine gets fresh addresses and a unique
    /// name. Throws `.conflict` when another machine holds the node key.
    public func registerNode(_ registration: NodeRegistration, allocator: AddressAllocator, now: Date) throws -> Node {
        guard try user(id: registration.userID) != nil else { throw StoreError(.notFound, "no user with id \(registration.userID)") }
        for tag in registration.tags { try StoreRules.validateTag(tag) }
        if let holder = try node(nodeKey: registration.nodeKey), holder.machineKey != registration.machineKey {
            throw StoreError(.conflict, "node key \(registration.nodeKey.shortString) belongs to another machine")
        }
        if var node = try node(machineKey: registration.machineKey) {
            node.nodeKey = registration.nodeKey
            if let disco = registration.discoKey { node.discoKey = disco }
            node.userID = registration.userID
            node.hostname = registration.hostname
            if let hostinfo = registration.hostinfo { node.hostinfo = hostinfo }
            node.tags = registration.tags
            node.ephemeral = registration.ephemeral
            node.authKeyID = registration.authKeyID
            node.registerMethod = registration.method
            node.expiry = registration.expiry
            if let version = registration.capabilityVersion { node.capabilityVersion = version }
            for route in registration.approvedRoutes where !node.approvedRoutes.contains(route) {
                node.approvedRoutes.append(route)
            }
            if node.ipv4 == nil || node.ipv6 == nil {
                let fresh = try allocateAddresses(allocator)
                node.ipv4 = node.ipv4 ?? fresh.ipv4
                node.ipv6 = node.ipv6 ?? fresh.ipv6
            }
            try update(node)
            return node
        }
        let addresses = try allocateAddresses(allocator)
        let node = Node(
            machineKey: registration.machineKey, nodeKey: registration.nodeKey, discoKey: registration.discoKey,
            userID: registration.userID, hostname: registration.hostname,
            givenName: try uniqueGivenName(for: registration.hostname), ipv4: addresses.ipv4, ipv6: addresses.ipv6,
            hostinfo: registration.hostinfo, tags: registration.tags, approvedRoutes: registration.approvedRoutes,
            expiry: registration.expiry, ephemeral: registration.ephemeral, authKeyID: registration.authKeyID,
            registerMethod: registration.method, created: now, capabilityVersion: registration.capabilityVersion)
        return try insert(node)
    }

    /// Renames a node's MagicDNS label; `.invalid` for a bad label, `.conflict` if another node has it.
    public func renameNode(id: NodeID, to givenName: String) throws -> Node {
        var node = try requireNode(id: id)
        let label = givenName.lowercased()
        guard DNSLabel.isValid(label) else {
            throw StoreError(.invalid, "\(givenName.debugDescription) is not a valid DNS label (a-z, 0-9 and \"-\", at most 63)")
        }
        if let holder = try self.node(givenName: label), holder.id != id {
            throw StoreError(.conflict, "the name \(label.debugDescription) is taken by node \(holder.id)")
        }
        node.givenName = label
        try update(node)
        return node
    }
}
