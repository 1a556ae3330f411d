import Foundation
import WarrenControlStore
import WarrenPacket

// The JSON bodies of the admin API (field names as in the OpenAPI document). Times are RFC 3339 text in UTC.

public enum AdminTime {
    public static func format(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: date)
    }

    public static func parse(_ text: String) -> Date? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = formatter.date(from: text) { return date }
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.date(from: text)
    }
}

/// Durations as operators type them: "30s", "90m", "24h", "7d", "1h30m" (units s, m, h, d; at least one part).
public enum DurationText {
    public static func parse(_ text: String) -> TimeInterval? {
        var total: Double = 0
        var number = ""
        var sawPart = false
        for character in text {
            if character.isASCII, character.isNumber {
                number.append(character)
                guard number.count <= 9 else { return nil }
                continue
            }
            guard let value = Double(number) else { return nil }
            switch character {
            case "s": total += value
            case "m": total += value * 60
            case "h": total += value * 3600
            case "d": total += value * 86_400
            default: return nil
            }
            number = ""
            sawPart = true
        }
        guard number.isEmpty, sawPart else { return nil }
        return total
    }
}

public struct UserJSON: Codable, Sendable, Equatable {
    public var id: Int64
    public var name: String
    public var displayName: String
    public var created: String
    /// "" when the user has none.
    public var email: String
    /// The identity provider's id of the user (headscale's provider_identifier), absent when none.
    public var providerID: String?
    /// "oidc" for a user from an identity provider, "" for one created locally.
    public var provider: String
    /// The profile picture URL, "" when none.
    public var pictureURL: String
    /// The groups the identity provider gave the user at their last sign-in (policy groups include them with
    /// oidc.groups_in_policy); empty for a local user.
    public var providerGroups: [String]

    public init(_ user: User) {
        id = user.id.rawValue
        name = user.name
        displayName = user.displayName
        created = AdminTime.format(user.created)
        email = user.email
        providerID = user.providerID
        provider = user.provider
        pictureURL = user.pictureURL
        providerGroups = user.providerGroups
    }

    enum CodingKeys: String, CodingKey { case id, name, displayName, created, email, providerID, provider, pictureURL, providerGroups }

    /// The e-mail and provider fields may be absent (a server from before they were kept).
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(Int64.self, forKey: .id)
        name = try c.decode(String.self, forKey: .name)
        displayName = try c.decode(String.self, forKey: .displayName)
        created = try c.decode(String.self, forKey: .created)
        email = try c.decodeIfPresent(String.self, forKey: .email) ?? ""
        providerID = try c.decodeIfPresent(String.self, forKey: .providerID)
        provider = try c.decodeIfPresent(String.self, forKey: .provider) ?? ""
        pictureURL = try c.decodeIfPresent(String.self, forKey: .pictureURL) ?? ""
        providerGroups = try c.decodeIfPresent([String].self, forKey: .providerGroups) ?? []
    }
}

public struct NodeJSON: Codable, Sendable, Equatable {
    public var id: Int64
    public var machineKey: String
    public var nodeKey: String
    public var discoKey: String?
    public var user: String
    public var userID: Int64
    public var hostname: String
    public var givenName: String
    public var ipAddresses: [String]
    public var endpoints: [String]
    public var tags: [String]
    public var advertisedRoutes: [String]
    public var approvedRoutes: [String]
    public var expiry: String?
    public var expired: Bool
    public var lastSeen: String?
    public var online: Bool
    public var ephemeral: Bool
    public var registerMethod: String
    public var preAuthKeyID: Int64?
    public var created: String
    /// False while the node waits for device approval (`nodes approve`).
    public var authorized: Bool

    public init(_ node: Node, userName: String, online: Bool, now: Date) {
        id = node.id.rawValue
        machineKey = node.machineKey.description
        nodeKey = node.nodeKey.description
        discoKey = node.discoKey?.description
        user = userName
        userID = node.userID.rawValue
        hostname = node.hostname
        givenName = node.givenName
        ipAddresses = [node.ipv4, node.ipv6].compactMap { $0?.description }
        endpoints = node.endpoints
        tags = node.tags
        advertisedRoutes = node.advertisedRoutes.map(\.description)
        approvedRoutes = node.approvedRoutes.map(\.description)
        expiry = node.expiry.map(AdminTime.format)
        expired = node.isExpired(at: now)
        lastSeen = node.lastSeen.map(AdminTime.format)
        self.online = online
        ephemeral = node.ephemeral
        registerMethod = node.registerMethod.rawValue
        preAuthKeyID = node.authKeyID?.rawValue
        created = AdminTime.format(node.created)
        authorized = node.authorized
    }
}

public struct PreAuthKeyJSON: Codable, Sendable, Equatable {
    public var id: Int64
    /// The public part; the full key is shown only when created.
    public var prefix: String
    public var user: String
    public var reusable: Bool
    public var ephemeral: Bool
    public var preApproved: Bool
    public var tags: [String]
    public var created: String
    public var expiration: String?
    public var expired: Bool
    public var used: Bool
    public var useCount: Int

    public init(_ key: PreAuthKey, userName: String, now: Date) {
        id = key.id.rawValue
        prefix = key.prefix
        user = userName
        reusable = key.reusable
        ephemeral = key.ephemeral
        preApproved = key.preApproved
        tags = key.tags
        created = AdminTime.format(key.created)
        expiration = key.expiration.map(AdminTime.format)
        expired = key.isExpired(at: now)
        used = key.used
        useCount = key.useCount
    }
}

public struct APIKeyJSON: Codable, Sendable, Equatable {
    public var id: Int64
    public var prefix: String
    public var created: String
    public var expiration: String?
    public var expired: Bool
    public var lastUsed: String?

    public init(_ key: APIKey, now: Date) {
        id = key.id.rawValue
        prefix = key.prefix
        created = AdminTime.format(key.created)
        expiration = key.expiration.map(AdminTime.format)
        expired = key.isExpired(at: now)
        lastUsed = key.lastUsed.map(AdminTime.format)
    }
}

public struct PendingRegistrationJSON: Codable, Sendable, Equatable {
    public var id: String
    public var machineKey: String
    public var nodeKey: String
    public var hostname: String
    public var created: String
    public var expires: String
    public var approvedNodeID: Int64?

    public init(_ pending: PendingRegistration) {
        id = pending.id
        machineKey = pending.machineKey.description
        nodeKey = pending.nodeKey.description
        hostname = pending.hostname
        created = AdminTime.format(pending.created)
        expires = AdminTime.format(pending.expires)
        approvedNodeID = pending.approvedNodeID?.rawValue
    }
}

public struct RoutesJSON: Codable, Sendable, Equatable {
    public var nodeID: Int64
    /// The node's MagicDNS name.
    public var name: String
    public var advertisedRoutes: [String]
    public var approvedRoutes: [String]
    /// Advertised and approved: what the node's peers route to it.
    public var servedRoutes: [String]

    public init(nodeID: Int64, name: String, advertisedRoutes: [String], approvedRoutes: [String], servedRoutes: [String]) {
        self.nodeID = nodeID
        self.name = name
        self.advertisedRoutes = advertisedRoutes
        self.approvedRoutes = approvedRoutes
        self.servedRoutes = servedRoutes
    }
}

public struct ErrorJSON: Codable, Sendable, Equatable {
    public var error: String
    public var code: String
}

// Request bodies.

public struct CreateUserBody: Codable, Sendable {
    public var name: String
    public var displayName: String?
    /// The user's e-mail address, as headscale's CreateUser takes it (a policy can name the user by it).
    public var email: String?
    /// The profile picture URL (headscale's CreateUser pictureUrl): an http(s) URL, or empty for none.
    public var pictureURL: String?
    public init(name: String, displayName: String? = nil, email: String? = nil, pictureURL: String? = nil) {
        self.name = name
        self.displayName = displayName
        self.email = email
        self.pictureURL = pictureURL
    }
}

public struct RenameBody: Codable, Sendable {
    public var newName: String
    public init(newName: String) { self.newName = newName }
}

public struct CreatePreAuthKeyBody: Codable, Sendable {
    public var user: String
    public var reusable: Bool?
    public var ephemeral: Bool?
    public var preApproved: Bool?
    public var tags: [String]?
    /// RFC 3339 time, or a duration from now such as "24h" (`expiresIn`). Neither: the server's default (never).
    public var expiration: String?
    public var expiresIn: String?

    public init(user: String, reusable: Bool? = nil, ephemeral: Bool? = nil, preApproved: Bool? = nil, tags: [String]? = nil,
                expiration: String? = nil, expiresIn: String? = nil) {
        self.user = user
        self.reusable = reusable
        self.ephemeral = ephemeral
        self.preApproved = preApproved
        self.tags = tags
        self.expiration = expiration
        self.expiresIn = expiresIn
    }
}

public struct CreatedPreAuthKeyJSON: Codable, Sendable {
    public var key: String
    public var preAuthKey: PreAuthKeyJSON
}

public struct ExpireKeyBody: Codable, Sendable {
    /// The full key text or its prefix.
    public var key: String
    public init(key: String) { self.key = key }
}

public struct CreateAPIKeyBody: Codable, Sendable {
    public var expiration: String?
    public var expiresIn: String?
    public init(expiration: String? = nil, expiresIn: String? = nil) { self.expiration = expiration; self.expiresIn = expiresIn }
}

public struct CreatedAPIKeyJSON: Codable, Sendable {
    public var key: String
    public var apiKey: APIKeyJSON
}

public struct RegisterNodeBody: Codable, Sendable {
    public var user: String
    /// The registration id from the AuthURL (`…/register/<id>`), or the node key of a pending login.
    public var key: String
    public init(user: String, key: String) { self.user = user; self.key = key }
}

public struct TagsBody: Codable, Sendable {
    public var tags: [String]
    public init(tags: [String]) { self.tags = tags }
}

public struct RoutesBody: Codable, Sendable {
    public var routes: [String]
    public init(routes: [String]) { self.routes = routes }
}

public struct ExpireNodeBody: Codable, Sendable {
    /// True: the node's key never expires (headscale's `nodes expire --disable`).
    public var disable: Bool?
    /// RFC 3339: expire at this time instead of now.
    public var expiry: String?
    public init(disable: Bool? = nil, expiry: String? = nil) { self.disable = disable; self.expiry = expiry }
}

public struct ApproveRegistrationBody: Codable, Sendable {
    /// The user (name or id) the new node belongs to; absent: the machine's existing node logs in again as its owner.
    public var user: String?
    public init(user: String? = nil) { self.user = user }
}
