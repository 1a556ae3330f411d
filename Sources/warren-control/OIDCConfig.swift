// The `oidc:` section, read the same in Warren's layout and headscale's (the key names are headscale's):
// issuer, client_id, client_secret or client_secret_path, scope, extra_params, allowed_domains, allowed_users,
// allowed_groups, email_verified_required, pkce.enabled, pkce.method, use_expiry_from_token,
// only_start_if_oidc_is_available, and `expiry` (the key of headscale before 0.24, which Warren keeps). Warren's own:
// groups_claim (the claim that lists a person's groups, `groups` by default) and groups_in_policy (a policy's
// `group:NAME` also includes the users whose provider puts them in NAME at their last sign-in).

import Foundation
import WarrenControlOIDC

struct OIDCConfigSection {
    var issuer: String
    var clientID: String
    var clientSecret: String
    /// Where the secret came from, for `configtest` ("set in the file", "read from PATH"); never the secret.
    var clientSecretSource = "set in the file"
    var scope: [String] = ["openid", "profile", "email"]
    var extraParams: [String: String] = [:]
    var allowedDomains: [String] = []
    var allowedUsers: [String] = []
    var allowedGroups: [String] = []
    /// The claim that lists a person's groups.
    var groupsClaim = "groups"
    /// A policy's `group:NAME` includes the users whose provider groups (from their last sign-in) contain NAME.
    var groupsInPolicy = false
    var emailVerifiedRequired = true
    /// nil: PKCE off (headscale's default).
    var pkce: OIDCSettings.PKCEMethod?
    /// `expiry`: the node key expiry of a node that signs in (nil: node_key_expiry; .some(nil): never).
    var expiry: Duration??
    var useExpiryFromToken = false
    var onlyStartIfAvailable = true

    static let keys: Set<String> = [
        "issuer", "client_id", "client_secret", "client_secret_path", "scope", "extra_params", "allowed_domains",
        "allowed_users", "allowed_groups", "email_verified_required", "pkce", "expiry", "use_expiry_from_token",
        "only_start_if_oidc_is_available", "groups_claim", "groups_in_policy",
    ]

    /// The relying party's settings for a server reached at `serverURL`.
    func settings(serverURL: String) -> OIDCSettings {
        var base = serverURL
        while base.hasSuffix("/") { base.removeLast() }
        var settings = OIDCSettings(issuer: issuer, clientID: clientID, clientSecret: clientSecret,
                                    redirectURL: base + OIDCLoginFlow.callbackPath)
        settings.scopes = scope
        settings.extraParams = extraParams
        settings.allowedDomains = allowedDomains
        settings.allowedUsers = allowedUsers
        settings.allowedGroups = allowedGroups
        settings.groupsClaim = groupsClaim
        settings.emailVerifiedRequired = emailVerifiedRequired
        settings.pkce = pkce
        return settings
    }

    var expiryRule: OIDCLoginFlow.ExpiryRule {
        if useExpiryFromToken { return .fromToken }
        switch expiry {
        case nil: return .serverDefault
        case .some(nil): return .after(.zero)
        case .some(.some(let duration)): return .after(duration)
        }
    }

    /// Reads the section; nil when it is absent, empty, or has no issuer (headscale turns OIDC on by `issuer`).
    static func read(_ value: Any?, file: String) throws -> OIDCConfigSection? {
        func fail(_ key: String, _ problem: String) -> ConfigError { ConfigError(file: file, key: "oidc." + key, problem: problem) }
        guard let value, !(value is NSNull) else { return nil }
        guard let map = value as? [String: Any] else { throw ConfigError(file: file, key: "oidc", problem: "expected a mapping") }
        for key in map.keys.sorted() where !keys.contains(key) {
            throw fail(key, "unknown key")
        }
        func string(_ key: String) throws -> String? {
            guard let v = map[key], !(v is NSNull) else { return nil }
            if let s = v as? String { return s }
            if let n = v as? Int { return String(n) }
            throw fail(key, "expected a string")
        }
        func bool(_ key: String, in m: [String: Any]? = nil, prefix: String = "") throws -> Bool? {
            guard let v = (m ?? map)[key], !(v is NSNull) else { return nil }
            guard let b = v as? Bool else { throw fail(prefix + key, "expected true or false") }
            return b
        }
        func strings(_ key: String) throws -> [String]? {
            guard let v = map[key], !(v is NSNull) else { return nil }
            if let one = v as? String { return one.split(separator: " ").map(String.init) }
            guard let list = v as? [Any] else { throw fail(key, "expected a list of strings") }
            return try list.enumerated().map { i, item in
                guard let s = item as? String else { throw fail("\(key)[\(i)]", "expected a string") }
                return s
            }
        }
        guard let issuer = try string("issuer"), !issuer.isEmpty else {
            // headscale: OIDC is on when an issuer is set; the other keys alone do nothing.
            return nil
        }
        guard let url = URL(string: issuer), let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https",
              url.host?.isEmpty == false else {
            throw fail("issuer", "must be an http(s) URL, got \(issuer.debugDescription)")
        }
        guard let clientID = try string("client_id"), !clientID.isEmpty else { throw fail("client_id", "required when oidc.issuer is set") }
        let secret = try string("client_secret") ?? ""
        let secretPath = try string("client_secret_path") ?? ""
        if !secret.isEmpty, !secretPath.isEmpty {
            throw fail("client_secret", "client_secret and client_secret_path are mutually exclusive; keep one of them")
        }
        var clientSecret = secret
        if !secretPath.isEmpty {
            // headscale expands environment variables in the path (systemd's ${CREDENTIALS_DIRECTORY}).
            let path = expandEnvironment(secretPath)
            guard let data = FileManager.default.contents(atPath: path) else {
                throw fail("client_secret_path", "cannot read \(path)")
            }
            guard data.count <= 64 * 1024 else { throw fail("client_secret_path", "\(path) is larger than 64 KiB") }
            clientSecret = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        guard !clientSecret.isEmpty else {
            throw fail("client_secret", "client_secret or client_secret_path is required when oidc.issuer is set")
        }
        var out = OIDCConfigSection(issuer: issuer, clientID: clientID, clientSecret: clientSecret)
        if !secretPath.isEmpty { out.clientSecretSource = "read from \(expandEnvironment(secretPath))" }
        if let scope = try strings("scope") {
            guard scope.contains("openid") else { throw fail("scope", "must include openid") }
            out.scope = scope
        }
        if let extra = map["extra_params"], !(extra is NSNull) {
            guard let m = extra as? [String: Any] else { throw fail("extra_params", "expected a mapping of names to values") }
            for (key, value) in m {
                guard let text = value as? String ?? (value as? Int).map(String.init) ?? (value as? Bool).map({ $0 ? "true" : "false" }) else {
                    throw fail("extra_params.\(key)", "expected a string")
                }
                out.extraParams[key] = text
            }
        }
        out.allowedDomains = try strings("allowed_domains") ?? []
        out.allowedUsers = try strings("allowed_users") ?? []
        out.allowedGroups = try strings("allowed_groups") ?? []
        if let claim = try string("groups_claim") {
            guard !claim.isEmpty, !claim.contains(where: \.isWhitespace) else {
                throw fail("groups_claim", "expected a claim name such as groups")
            }
            out.groupsClaim = claim
        }
        out.groupsInPolicy = try bool("groups_in_policy") ?? false
        out.emailVerifiedRequired = try bool("email_verified_required") ?? true
        out.useExpiryFromToken = try bool("use_expiry_from_token") ?? false
        out.onlyStartIfAvailable = try bool("only_start_if_oidc_is_available") ?? true
        if let pkce = map["pkce"], !(pkce is NSNull) {
            guard let p = pkce as? [String: Any] else { throw fail("pkce", "expected a mapping with enabled and method") }
            for key in p.keys.sorted() where key != "enabled" && key != "method" { throw fail("pkce.\(key)", "unknown key") }
            let enabled = try bool("enabled", in: p, prefix: "pkce.") ?? false
            var method = OIDCSettings.PKCEMethod.s256
            if let raw = p["method"], !(raw is NSNull) {
                guard let text = raw as? String, let parsed = OIDCSettings.PKCEMethod(rawValue: text == "s256" ? "S256" : text) else {
                    throw fail("pkce.method", "expected S256 or plain")
                }
                method = parsed
            }
            out.pkce = enabled ? method : nil
        }
        if let raw = map["expiry"], !(raw is NSNull) {
            if HeadscaleLayout.isZeroDuration(raw) || (raw as? String) == "never" {
                out.expiry = .some(nil)
            } else {
                let text = raw as? String ?? (raw as? Int).map { "\($0)s" }
                guard let text, let duration = ConfigDuration.parse(text), duration <= .seconds(36_500 * 86_400) else {
                    throw fail("expiry", "expected a duration such as 180d (0 or never: no expiry)")
                }
                out.expiry = .some(duration)
            }
        }
        return out
    }

    /// $NAME and ${NAME} replaced by the environment's values ("" when unset), as Go's os.ExpandEnv does.
    static func expandEnvironment(_ text: String) -> String {
        let environment = ProcessInfo.processInfo.environment
        var out = ""
        var i = text.startIndex
        while i < text.endIndex {
            let c = text[i]
            guard c == "$", text.index(after: i) < text.endIndex else {
                out.append(c)
                i = text.index(after: i)
                continue
            }
            var j = text.index(after: i)
            var name = ""
            if text[j] == "{" {
                guard let close = text[j...].firstIndex(of: "}") else { out.append(contentsOf: text[i...]); break }
                name = String(text[text.index(after: j)..<close])
                j = text.index(after: close)
            } else {
                while j < text.endIndex, text[j].isLetter || text[j].isNumber || text[j] == "_" {
                    name.append(text[j])
                    j = text.index(after: j)
                }
                if name.isEmpty { out.append(c); i = text.index(after: i); continue }
            }
            out += environment[name] ?? ""
            i = j
        }
        return out
    }
}

extension OIDCConfigSection {
    /// The settings as `configtest` prints them: everything but the client secret (only where it comes from).
    var summaryLines: [String] {
        func list(_ values: [String]) -> String { values.isEmpty ? "(any)" : values.joined(separator: ", ") }
        let expiry: String
        switch expiryRule {
        case .serverDefault: expiry = "node_key_expiry (the server's default)"
        case .fromToken: expiry = "the ID token's expiry (use_expiry_from_token)"
        case .after(let duration): expiry = duration == .zero ? "never" : "\(duration.components.seconds) s after the sign-in"
        }
        return [
            "oidc issuer: \(issuer)",
            "oidc client id: \(clientID)",
            "oidc client secret: \(clientSecretSource)",
            "oidc scopes: \(scope.joined(separator: " "))",
            "oidc allowed domains: \(list(allowedDomains))",
            "oidc allowed users: \(list(allowedUsers))",
            "oidc allowed groups: \(list(allowedGroups))",
            "oidc groups claim: \(groupsClaim)\(groupsInPolicy ? " (policy groups include them)" : "")",
            "oidc e-mail verified required: \(emailVerifiedRequired ? "yes" : "no")",
            "oidc pkce: \(pkce.map(\.rawValue) ?? "off")",
            "oidc node key expiry: \(expiry)",
            "oidc start without the provider: \(onlyStartIfAvailable ? "no" : "yes")",
        ]
    }
}
