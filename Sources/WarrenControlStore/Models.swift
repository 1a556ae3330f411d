import Foundation
import TailscaleKeys
import WarrenPacket

// The records warren-control keeps. Plain values: the store hands out copies, and a change is written back with
// an `update` inside a transaction. Times are `Date`s that the caller passes in (layer 0 reads no clock).

/// A person (or a service) that owns nodes and pre-auth keys.
public struct User: Hashable, Sendable, Codable {
    public var id: UserID
    /// Unique, as given on the command line (`warren-control users create NAME`).
    public var name: String
    public var displayName: String
    public var created: Date
    /// The user's e-mail address ("" = none), as headscale keeps it (set by OIDC logins or `CreateUser`).
    public var email: String
    /// The identity provider's subject for this user (headscale's `provider_identifier`, an OIDC issuer URL plus
    /// subject), nil when the user did not come from an identity provider.
    public var providerID: String?
    /// Where the user came from, as headscale names it ("oidc"; "" = created locally).
    public var provider: String
    /// The user's profile picture URL ("" = none), as headscale keeps it (`CreateUser`'s pictureUrl, an OIDC
    /// token's `picture`); shown to clients as the user profile's ProfilePicURL.
    public var pictureURL: String
    /// The groups the identity provider put the user in at their last sign-in (the ID token's groups claim); a
    /// policy's `group:NAME` includes the user when NAME is among them and `oidc.groups_in_policy` is on.
    public var providerGroups: [String]

    public init(id: UserID, name: String, displayName: String = "", created: Date, email: String = "",
                providerID: String? = nil, provider: String = "", pictureURL: String = "", providerGroups: [String] = []) {
        self.id = id
        self.name = name
        self.displayName = displayName
        self.created = created
        self.email = email
        self.providerID = providerID
        self.provider = provider
        self.pictureURL = pictureURL
        self.providerGroups = providerGroups
    }

    enum CodingKeys: String, CodingKey { case id, name, displayName, created, email, providerID, provider, pictureURL, providerGroups }

    /// Records written before the picture (or the provider's groups) existed decode with none.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(id: try c.decode(UserID.self, forKey: .id), name: try c.decode(String.self, forKey: .name),
                  displayName: try c.decode(String.self, forKey: .displayName), created: try c.decode(Date.self, forKey: .created),
                  email: try c.decodeIfPresent(String.self, forKey: .email) ?? "",
                  providerID: try c.decodeIfPresent(String.self, forKey: .providerID),
                  provider: try c.decodeIfPresent(String.self, forKey: .provider) ?? "",
                  pictureURL: try c.decodeIfPresent(String.self, forKey: .pictureURL) ?? "",
                  providerGroups: try c.decodeIfPresent([String].self, forKey: .providerGroups) ?? [])
    }
}

/// How a node got registered.
public enum RegisterMethod: String, Hashable, Sendable, Codable, CaseIterable {
    /// With a pre-auth key (`tailscale up --authkey`).
    case authKey = "authkey"
    /// Interactive login approved by an admin (`warren-control nodes register`).
    case interactive = "interactive"
    /// Created by an admin or a test directly.
    case cli = "cli"
    /// Interactive login completed by a sign-in with the identity provider (headscale's RegisterMethodOIDC).
    case oidc = "oidc"
}

/// A machine in the tailnet. Whether it is online is runtime state of the server and is not stored.
public struct Node: Hashable, Sendable, Codable {
    public var id: NodeID
    /// The machine key: stable for the machine across logins; unique among nodes.
    public var machineKey: MachinePublic
    /// The current node (WireGuard) key; rotates on re-login; unique among nodes.
    public var nodeKey: NodePublic
    public var discoKey: DiscoPublic?
    public var userID: UserID
    /// The hostname the machine reported.
    public var hostname: String
    /// The MagicDNS label: unique among nodes (case-insensitively), a valid DNS label.
    public var givenName: String
    public var ipv4: IPAddress?
    public var ipv6: IPAddress?
    /// The machine's reported endpoints, as "ip:port" text.
    public var endpoints: [String]
    /// The last Hostinfo the machine sent, as JSON text (kept opaque here).
    public var hostinfo: String?
    /// ACL tags ("tag:name"); a tagged node is owned by its tags and does not expire.
    public var tags: [String]
    public var advertisedRoutes: [IPPrefix]
    public var approvedRoutes: [IPPrefix]
    /// When the node key expires; nil = never. A date in the past means logged out or expired.
    public var expiry: Date?
    public var lastSeen: Date?
    /// Removed when it disconnects (after a grace period) or logs out.
    public var ephemeral: Bool
    /// The pre-auth key it registered with, if any.
    public var authKeyID: PreAuthKeyID?
    public var registerMethod: RegisterMethod
    public var created: Date
    /// False while the node waits for an admin's device approval (`warren-control nodes approve`).
    public var authorized: Bool
    /// The capability version of the client's last map request (what its peers get as its `Cap`); nil: not known.
    /// Kept so that another instance, or this one after a restart, knows it before the node connects again.
    public var capabilityVersion: Int?

    public init(
        id: NodeID = NodeID(0), machineKey: MachinePublic, nodeKey: NodePublic, discoKey: DiscoPublic? = nil,
        userID: UserID, hostname: String, givenName: String, ipv4: IPAddress? = nil, ipv6: IPAddress? = nil,
        endpoints: [String] = [], hostinfo: String? = nil, tags: [String] = [], advertisedRoutes: [IPPrefix] = [],
        approvedRoutes: [IPPrefix] = [], expiry: Date? = nil, lastSeen: Date? = nil, ephemeral: Bool = false,
        authKeyID: PreAuthKeyID? = nil, registerMethod: RegisterMethod, created: Date, authorized: Bool = true,
        capabilityVersion: Int? = nil
    ) {
        self.authorized = authorized
        self.capabilityVersion = capabilityVersion
        self.id = id
        self.machineKey = machineKey
        self.nodeKey = nodeKey
        self.discoKey = discoKey
        self.userID = userID
        self.hostname = hostname
        self.givenName = givenName
        self.ipv4 = ipv4
        self.ipv6 = ipv6
        self.endpoints = endpoints
        self.hostinfo = hostinfo
        self.tags = tags
        self.advertisedRoutes = advertisedRoutes
        self.approvedRoutes = approvedRoutes
        self.expiry = expiry
        self.lastSeen = lastSeen
        self.ephemeral = ephemeral
        self.authKeyID = authKeyID
        self.registerMethod = registerMethod
        self.created = created
    }

    public func isExpired(at now: Date) -> Bool {
        guard let expiry else { return false }
        return expiry <= now
    }

    /// The node's addresses as host prefixes (IPv4 first), as Tailscale's `Node.Addresses` lists them.
    public var addresses: [IPPrefix] { [ipv4, ipv6].compactMap { $0.map(IPPrefix.init(host:)) } }
}

/// A key that lets a machine register without an interactive login (`tailscale up --authkey KEY`).
///
/// Storage: only a SHA-256 hash of the secret part is kept, with a short public prefix to find the row.
/// headscale stored keys in plain text until it moved to a prefix plus a hash; a database dump or backup must
/// not let anyone join the tailnet. A slow password hash is not needed: the secret is 256 random bits, so
/// there is nothing to guess, and the register path stays cheap. The full key is shown once, at creation.
/// Keys imported from headscale 0.28+ keep headscale's bcrypt hash (`hashScheme == .bcrypt`), so their text
/// (`hskey-auth-…`) keeps working.
public struct PreAuthKey: Hashable, Sendable, Codable {
    public var id: PreAuthKeyID
    /// The public part of the key text, unique; shown by `preauthkeys list`.
    public var prefix: String
    /// The hash of the secret part: SHA-256 (32 bytes), or for `.bcrypt` the bcrypt text ("$2a$10$…") as UTF-8.
    public var secretHash: [UInt8]
    /// How `secretHash` was made.
    public var hashScheme: SecretHashScheme
    public var userID: UserID
    public var reusable: Bool
    public var ephemeral: Bool
    /// Routes the nodes advertise are approved without an admin.
    public var preApproved: Bool
    public var tags: [String]
    public var created: Date
    /// nil = never expires.
    public var expiration: Date?
    /// Set when a one-off key has been used (and, for any key, counted by `useCount`).
    public var used: Bool
    public var useCount: Int

    public init(
        id: PreAuthKeyID = PreAuthKeyID(0), prefix: String, secretHash: [UInt8], hashScheme: SecretHashScheme = .sha256,
        userID: UserID, reusable: Bool = false, ephemeral: Bool = false, preApproved: Bool = false, tags: [String] = [],
        created: Date, expiration: Date? = nil, used: Bool = false, useCount: Int = 0
    ) {
        self.id = id
        self.prefix = prefix
        self.secretHash = secretHash
        self.hashScheme = hashScheme
        self.userID = userID
        self.reusable = reusable
        self.ephemeral = ephemeral
        self.preApproved = preApproved
        self.tags = tags
        self.created = created
        self.expiration = expiration
        self.used = used
        self.useCount = useCount
    }

    public func isExpired(at now: Date) -> Bool {
        guard let expiration else { return false }
        return expiration <= now
    }
}

/// A key for the admin API over the network (`Authorization: Bearer KEY`); stored as prefix + SHA-256 hash, or,
/// imported from headscale, prefix + headscale's bcrypt hash (`hashScheme == .bcrypt`).
public struct APIKey: Hashable, Sendable, Codable {
    public var id: APIKeyID
    public var prefix: String
    /// The hash of the secret part: SHA-256 (32 bytes), or for `.bcrypt` the bcrypt text ("$2a$10$…") as UTF-8.
    public var secretHash: [UInt8]
    /// How `secretHash` was made.
    public var hashScheme: SecretHashScheme
    public var created: Date
    public var expiration: Date?
    public var lastUsed: Date?

    public init(
        id: APIKeyID = APIKeyID(0), prefix: String, secretHash: [UInt8], hashScheme: SecretHashScheme = .sha256, created: Date,
        expiration: Date? = nil, lastUsed: Date? = nil
    ) {
        self.id = id
        self.prefix = prefix
        self.secretHash = secretHash
        self.hashScheme = hashScheme
        self.created = created
        self.expiration = expiration
        self.lastUsed = lastUsed
    }

    public func isExpired(at now: Date) -> Bool {
        guard let expiration else { return false }
        return expiration <= now
    }
}

/// An interactive login waiting for an admin: the client was given `<server>/register/<id>` as its AuthURL and
/// polls with `Followup`; `warren-control nodes register --user NAME --key <id>` approves it, which creates
/// (or re-logs-in) the node and records its id here, so the waiting request (or one after a restart) finds it.
public struct PendingRegistration: Hashable, Sendable, Codable {
    /// The registration id: random, URL-safe; the last path component of the AuthURL.
    public var id: String
    public var machineKey: MachinePublic
    public var nodeKey: NodePublic
    public var hostname: String
    public var hostinfo: String?
    public var ephemeral: Bool
    public var created: Date
    /// After this the registration is dropped and the client must start again.
    public var expires: Date
    /// Set when approved: the node that was registered.
    public var approvedNodeID: NodeID?

    public init(
        id: String, machineKey: MachinePublic, nodeKey: NodePublic, hostname: String, hostinfo: String? = nil,
        ephemeral: Bool = false, created: Date, expires: Date, approvedNodeID: NodeID? = nil
    ) {
        self.id = id
        self.machineKey = machineKey
        self.nodeKey = nodeKey
        self.hostname = hostname
        self.hostinfo = hostinfo
        self.ephemeral = ephemeral
        self.created = created
        self.expires = expires
        self.approvedNodeID = approvedNodeID
    }
}

/// One saved version of the access policy (HuJSON text). Versions count up from 1; the highest is in force.
public struct PolicyVersion: Hashable, Sendable, Codable {
    public var version: Int64
    public var text: String
    public var created: Date

    public init(version: Int64, text: String, created: Date) {
        self.version = version
        self.text = text
        self.created = created
    }
}

/// A sign-in with the identity provider that was started (the browser sent to the provider) and not yet finished:
/// what the callback needs to check the provider's answer. Kept in the store, not in one process, so that behind a
/// load balancer any warren-control instance can finish a sign-in another one started. Taken (read and deleted)
/// exactly once, in a write transaction: a replayed callback finds nothing.
public struct OIDCSignIn: Hashable, Sendable, Codable {
    /// The lookup key: the SHA-256 of the `state` parameter, base64url (the state itself is not kept).
    public var id: String
    /// The pending interactive login the sign-in was started for.
    public var loginID: String
    /// The `nonce` sent to the provider, which the ID token must carry.
    public var nonce: String
    /// The PKCE code verifier (nil without PKCE).
    public var codeVerifier: String?
    /// The SHA-256 of the browser-binding cookie's value.
    public var browserBinding: [UInt8]
    public var created: Date

    public init(id: String, loginID: String, nonce: String, codeVerifier: String?, browserBinding: [UInt8], created: Date) {
        self.id = id
        self.loginID = loginID
        self.nonce = nonce
        self.codeVerifier = codeVerifier
        self.browserBinding = browserBinding
        self.created = created
    }
}
