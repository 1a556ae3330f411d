import WarrenTailcfg

/// The capability semantics that `PolicyCompiler` and `PolicyEngine` share, so that a fix lands once.
///
/// Values follow Tailscale's wire form: a capability that carries no arguments is sent as JSON null (a nil
/// list), never as `[]`. That holds for node attributes (`nodeAttrs` `attr`, `randomizeClientPort`), and for
/// the companion peer capabilities some grants add (`tailscale.com/cap/drive` brings
/// `tailscale.com/cap/drive-sharer` the other way, `tailscale.com/cap/relay` brings
/// `tailscale.com/cap/relay-target`), as headscale's companionCapGrantRules and compileNodeAttrs send them
/// (a nil tailcfg.RawMessage list). Values written in the policy's `app` are sent as written: `[]` stays `[]`,
/// `[{}]` stays `[{}]`, `null` stays null.
public enum PolicyCapabilities {
    /// Capabilities that imply one in the other direction, in the order of the original's name.
    static let companions: [(original: String, companion: String)] = [
        ("tailscale.com/cap/drive", "tailscale.com/cap/drive-sharer"),
        ("tailscale.com/cap/relay", "tailscale.com/cap/relay-target"),
    ]

    /// The companion capability maps a grant's `app` implies (each is sent with a null value).
    static func companionMaps(for app: PeerCapMap) -> [(index: Int, capMap: PeerCapMap)] {
        companions.enumerated().compactMap { k, pair in
            app[pair.original] != nil ? (k, [pair.companion: nil]) : nil
        }
    }

    /// Adds values for a capability: a bare one is null unless values are already there; values append.
    static func add(_ name: String, _ values: [JSONValue]?, to caps: inout NodeCapMap) {
        if let values {
            if let existing = caps[name] {
                caps[name] = .some((existing ?? []) + values)
            } else {
                caps[name] = .some(values)
            }
        } else if caps[name] == nil {
            caps[name] = .some(nil)
        }
    }

    /// A node's capabilities from the policy: `randomizeClientPort`, then each nodeAttrs entry whose targets
    /// name the node (`targets` answers that), its `attr` names as bare capabilities and its `app` values.
    static func nodeCapabilities(_ policy: Policy, targets: (NodeAttrRule) -> Bool) -> NodeCapMap {
        var caps: NodeCapMap = [:]
        if policy.randomizeClientPort { add("randomize-client-port", nil, to: &caps) }
        for attr in policy.nodeAttrs where targets(attr) {
            for a in attr.attrs { add(a, nil, to: &caps) }
            for (k, v) in (attr.app ?? [:]).sorted(by: { $0.key < $1.key }) { add(k, v, to: &caps) }
        }
        return caps
    }

    /// The SSH action of a rule: accept with forwarding allowed, or check (hold and delegate to the control
    /// server, which asks the user to re-authenticate).
    static func sshAction(_ action: SSHPolicyRule.Action, controlURL: String) -> SSHAction {
        switch action {
        case .accept:
            return SSHAction(accept: true, allowAgentForwarding: true, allowLocalPortForwarding: true,
                             allowRemotePortForwarding: true)
        case .check:
            return SSHAction(holdAndDelegate: controlURL
                + "/machine/ssh/action/$SRC_NODE_ID/to/$DST_NODE_ID?local_user=$LOCAL_USER")
        }
    }

    /// An SSH rule's `users` as the SSHUsers map (root mapped or refused, autogroup:nonroot as `*`), without
    /// the `localpart:` entries (those make a rule of their own per user).
    static func sshBaseUsers(_ users: [String]) -> [String: String] {
        var base: [String: String] = [:]
        if users.contains("autogroup:nonroot") { base["*"] = "=" }
        base["root"] = users.contains("root") ? "root" : ""
        for u in users where u != "root" && u != "autogroup:nonroot" && PolicyCompiler.localpartDomain(u) == nil {
            base[u] = u
        }
        return base
    }

    /// For `localpart:*@domain` users: each tailnet user in one of the domains to its login's local part.
    static func sshLocalparts(_ users: [String], tailnetUsers: [TailnetUser]) -> [String: String] {
        var out: [String: String] = [:]
        for domain in users.compactMap(PolicyCompiler.localpartDomain) {
            for u in tailnetUsers {
                guard let at = u.email.lastIndex(of: "@") else { continue }
                if u.email[u.email.index(after: at)...].lowercased() == domain.lowercased() {
                    out[u.name] = String(u.email[..<at])
                }
            }
        }
        return out
    }
}
