// Tailscale's SSH policy wire types (tailcfg.SSHPolicy, SSHRule, SSHPrincipal, SSHAction),
// with Go's JSON field names. Empty fields are left out, as Go's omitempty does.

public struct SSHPrincipal: Codable, Hashable, Sendable {
    public var nodeIP: String?
    public var node: String?
    public var userLogin: String?
    public var any: Bool?

    public init(nodeIP: String? = nil, node: String? = nil, userLogin: String? = nil, any: Bool? = nil) {
        self.nodeIP = nodeIP
        self.node = node
        self.userLogin = userLogin
        self.any = any
    }
}

public struct SSHAction: Codable, Hashable, Sendable {
    public var message: String?
    public var reject: Bool?
    public var accept: Bool?
    /// Nanoseconds, as Go's time.Duration.
    public var sessionDuration: Int64?
    public var allowAgentForwarding: Bool?
    public var holdAndDelegate: String?
    public var allowLocalPortForwarding: Bool?
    public var allowRemotePortForwarding: Bool?

    public init(message: String? = nil, reject: Bool? = nil, accept: Bool? = nil, sessionDuration: Int64? = nil,
                allowAgentForwarding: Bool? = nil, holdAndDelegate: String? = nil,
                allowLocalPortForwarding: Bool? = nil, allowRemotePortForwarding: Bool? = nil) {
        self.message = message
        self.reject = reject
        self.accept = accept
        self.sessionDuration = sessionDuration
        self.allowAgentForwarding = allowAgentForwarding
        self.holdAndDelegate = holdAndDelegate
        self.allowLocalPortForwarding = allowLocalPortForwarding
        self.allowRemotePortForwarding = allowRemotePortForwarding
    }
}

public struct SSHRule: Codable, Hashable, Sendable {
    /// When the rule stops applying (Go's *time.Time, RFC 3339 on the wire); nil for never.
    public var ruleExpires: TailcfgTime?
    public var principals: [SSHPrincipal]
    /// Requested login name to local user name; "*" matches any, "=" maps to itself, "" denies.
    public var sshUsers: [String: String]
    public var action: SSHAction?
    public var acceptEnv: [String]?

    public init(principals: [SSHPrincipal], sshUsers: [String: String], action: SSHAction?, acceptEnv: [String]? = nil) {
        self.principals = principals
        self.sshUsers = sshUsers
        self.action = action
        self.acceptEnv = acceptEnv
    }
}

public struct SSHPolicy: Codable, Hashable, Sendable {
    public var rules: [SSHRule]

    public init(rules: [SSHRule]) { self.rules = rules }
}
