import WarrenPolicy
import XCTest

/// Issue 11, area 2: every field of the policy language, with what Tailscale checks in it. Each row is a policy
/// written for this test, the message Warren must give (without its LINE:COLUMN), or nil where the policy must be
/// accepted, and where the expectation comes from:
/// - `capture`: Tailscale's service gave this answer to a policy of this shape (the shared captures or headscale's
///   held-out set; the policy here is new, the behaviour is the captured one);
/// - `docs`: Tailscale's policy documentation;
/// - `headscale`: headscale v2's validate (hscontrol/policy/v2/types.go), where no capture shows Tailscale's own
///   answer; its wording is headscale's and is unconfirmed against Tailscale (docs/policy-validation.md lists these).
/// The table in docs/policy-validation.md is this catalog in prose.
final class ValidationCatalogTests: XCTestCase {
    struct Row {
        var policy: String
        var message: String?
        var source: String
    }

    static let owners = #""tagOwners": {"tag:web": ["alice@example.com"], "tag:db": ["group:eng"]}, "groups": {"group:eng": ["alice@example.com"]}, "hosts": {"nas": "10.9.0.1"}"#

    static func ssh(_ rule: String) -> String { owners + #", "ssh": [\#(rule)]"# }

    static let rows: [Row] = [
        // MARK: acls
        Row(policy: #""acls": [{"action": "allow", "src": ["*"], "dst": ["*:*"]}]"#, message: #"action="allow" is not supported"#, source: "capture (action=\"deny\")"),
        Row(policy: #""acls": [{"action": "accept", "src": ["autogroup:internet"], "dst": ["*:*"]}]"#, message: "autogroup:internet can only be used in ACL destinations", source: "headscale"),
        Row(policy: #""acls": [{"action": "accept", "src": ["autogroup:self"], "dst": ["*:*"]}]"#, message: #""autogroup:self" not valid on the src side of a rule"#, source: "capture"),
        Row(policy: #""acls": [{"action": "accept", "src": ["*"], "dst": ["autogroup:danger-all:*"]}]"#, message: "cannot use autogroup:danger-all as a dst", source: "capture"),
        Row(policy: #""acls": [{"action": "accept", "src": ["autogroup:danger-all"], "dst": ["*:*"]}]"#, message: nil, source: "docs (danger-all is a source)"),
        Row(policy: owners + #", "acls": [{"action": "accept", "src": ["tag:web"], "dst": ["autogroup:self:*"]}]"#, message: "autogroup:self can only be used with users, groups, or supported autogroups", source: "capture"),
        Row(policy: #""acls": [{"action": "accept", "src": ["*"], "dst": ["autogroup:self:*"]}]"#, message: nil, source: "capture (an ACL narrows * per node)"),
        Row(policy: #""acls": [{"action": "accept", "src": ["*"], "dst": ["10.0.0.1"]}]"#, message: #"dst="10.0.0.1": missing port"#, source: "headscale"),
        Row(policy: #""acls": [{"action": "accept", "src": ["*"], "dst": ["tag:web:ssh"]}]"#, message: #"dst="tag:web:ssh": port range "ssh": invalid first integer"#, source: "capture"),
        Row(policy: #""acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"], "proto": "icmp"}, {"action": "accept", "src": ["*"], "dst": ["*:22"], "proto": "icmp"}]"#, message: #"dst="*:22": protocol "icmp" does not support specific ports, only "*" is allowed"#, source: "headscale"),
        Row(policy: #""acls": [{"action": "accept", "src": ["*"], "dst": ["tag:nope:22"]}]"#, message: #"dst="tag:nope": tag not found: "tag:nope""#, source: "capture"),
        Row(policy: #""acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"], "extra": 1}]"#, message: #"unknown field "extra""#, source: "docs (fields)"),
        // MARK: grants
        Row(policy: #""grants": [{"src": ["*"], "dst": ["*"]}]"#, message: "ip and app can not both be empty", source: "capture"),
        Row(policy: #""grants": [{"src": ["*"], "dst": ["10.0.0.0/24"], "ip": ["*"], "via": ["alice@example.com"]}]"#, message: "via can only be a tag", source: "capture"),
        Row(policy: #""grants": [{"src": ["*"], "dst": ["*"], "app": {"https://example.com/cap": [{}]}}]"#, message: "capability name must have the form {domain}/{path}", source: "capture"),
        Row(policy: #""grants": [{"src": ["*"], "dst": ["*"], "app": {"tailscale.com/cap/ingress": [{}]}}]"#, message: "capability name must not be in the tailscale.com domain", source: "capture"),
        Row(policy: #""grants": [{"src": ["*"], "dst": ["*"], "app": {"tailscale.com/cap/drive": [{}]}}]"#, message: nil, source: "capture (allowlisted)"),
        Row(policy: #""grants": [{"src": ["*"], "dst": ["autogroup:self"], "ip": ["*"]}]"#, message: "autogroup:self can only be used with users, groups, or supported autogroups", source: "capture (grants refuse * with self)"),
        Row(policy: #""grants": [{"src": ["*"], "dst": ["autogroup:internet"], "app": {"example.com/cap/x": [{}]}}]"#, message: "cannot use app grants with autogroup:internet", source: "capture"),
        Row(policy: #""grants": [{"src": ["*"], "dst": ["::/0"], "ip": ["*"]}]"#, message: #"dst "::/0": to allow all IP addresses, use "*" or "autogroup:internet""#, source: "capture"),
        // MARK: ssh
        Row(policy: ssh(#"{"action": "accept", "src": ["autogroup:member"], "dst": ["tag:web"]}"#), message: "users must be specified", source: "capture"),
        Row(policy: ssh(#"{"action": "accept", "src": ["autogroup:member"], "dst": ["tag:web"], "users": ["*"]}"#), message: #"user "*" is not valid"#, source: "capture"),
        Row(policy: ssh(#"{"action": "accept", "src": ["autogroup:member"], "dst": ["tag:web"], "users": ["tag:foo", "autogroup:member"]}"#), message: nil, source: "capture (any other string is a login name)"),
        Row(policy: ssh(#"{"action": "Accept", "src": ["autogroup:member"], "dst": ["tag:web"], "users": ["root"]}"#), message: #""Accept" is not a valid action"#, source: "capture"),
        Row(policy: ssh(#"{"src": ["autogroup:member"], "dst": ["tag:web"], "users": ["root"]}"#), message: "action must be specified", source: "capture"),
        Row(policy: ssh(#"{"action": "check", "checkPeriod": "168h0m1s", "src": ["autogroup:member"], "dst": ["tag:web"], "users": ["root"]}"#), message: "checkPeriod 168h0m1s is above the max (168h)", source: "capture"),
        Row(policy: ssh(#"{"action": "check", "checkPeriod": "always", "src": ["autogroup:member"], "dst": ["tag:web"], "users": ["root"]}"#), message: nil, source: "docs"),
        Row(policy: ssh(#"{"action": "accept", "checkPeriod": "1h", "src": ["autogroup:member"], "dst": ["tag:web"], "users": ["root"]}"#), message: #"checkPeriod is only valid with action "check""#, source: "headscale"),
        Row(policy: ssh(#"{"action": "accept", "src": ["autogroup:member"], "dst": ["tag:web"], "users": ["root"], "acceptEnv": ["GIT_*", ""]}"#), message: "acceptEnv values cannot be empty", source: "capture"),
        Row(policy: ssh(#"{"action": "accept", "src": ["autogroup:member"], "dst": ["nas"], "users": ["root"]}"#), message: #"invalid dst "nas""#, source: "capture"),
        Row(policy: ssh(#"{"action": "accept", "src": ["autogroup:member"], "dst": ["*"], "users": ["root"]}"#), message: #"invalid dst "*""#, source: "headscale (refused; wording Tailscale's for hosts)"),
        Row(policy: ssh(#"{"action": "accept", "src": ["alice@example.com"], "dst": ["100.64.0.1"], "users": ["root"]}"#), message: #"invalid dst "100.64.0.1""#, source: "headscale (refused; wording Tailscale's for hosts)"),
        Row(policy: ssh(#"{"action": "accept", "src": ["alice@example.com"], "dst": ["group:eng"], "users": ["root"]}"#), message: #"invalid dst "group:eng""#, source: "headscale (refused; wording Tailscale's for hosts)"),
        Row(policy: ssh(#"{"action": "accept", "src": ["alice@example.com"], "dst": ["autogroup:internet"], "users": ["root"]}"#), message: #"invalid dst "autogroup:internet""#, source: "headscale (refused; wording Tailscale's for hosts)"),
        Row(policy: ssh(#"{"action": "accept", "src": ["100.64.0.3"], "dst": ["tag:web"], "users": ["root"]}"#), message: #"invalid src "100.64.0.3""#, source: "headscale (refused; wording Warren's)"),
        Row(policy: ssh(#"{"action": "accept", "src": ["*"], "dst": ["tag:web"], "users": ["root"]}"#), message: #"invalid src "*""#, source: "headscale (refused; wording Warren's)"),
        Row(policy: ssh(#"{"action": "accept", "src": ["autogroup:danger-all"], "dst": ["tag:web"], "users": ["root"]}"#), message: #"invalid src "autogroup:danger-all""#, source: "headscale (refused; wording Warren's)"),
        Row(policy: ssh(#"{"action": "accept", "src": ["autogroup:internet"], "dst": ["tag:web"], "users": ["root"]}"#), message: "autogroup:internet can only be used in ACL destinations", source: "headscale"),
        Row(policy: ssh(#"{"action": "accept", "src": ["tag:db"], "dst": ["alice@example.com"], "users": ["root"]}"#), message: "tags in SSH source cannot access user-owned devices (alice@example.com); use autogroup:tagged or specific tags as destinations instead", source: "headscale"),
        Row(policy: ssh(#"{"action": "accept", "src": ["group:eng"], "dst": ["alice@example.com"], "users": ["root"]}"#), message: #"user destination requires source to contain only that same user "alice@example.com"; use autogroup:self instead for same-user SSH access"#, source: "headscale"),
        Row(policy: ssh(#"{"action": "accept", "src": ["alice@example.com"], "dst": ["alice@example.com"], "users": ["root"]}"#), message: nil, source: "capture (a user to their own devices)"),
        Row(policy: ssh(#"{"action": "accept", "src": ["autogroup:tagged"], "dst": ["autogroup:self"], "users": ["root"]}"#), message: "autogroup:self destination requires source to contain only users or groups, not tags or autogroup:tagged", source: "headscale"),
        Row(policy: ssh(#"{"action": "accept", "src": ["tag:web"], "dst": ["autogroup:member"], "users": ["root"]}"#), message: "tags in SSH source cannot access autogroup:member (user-owned devices)", source: "headscale"),
        Row(policy: ssh(#"{"action": "accept", "src": ["tag:web"], "dst": ["tag:db", "autogroup:tagged"], "users": ["root"]}"#), message: nil, source: "capture (tags to tags)"),
        Row(policy: ssh(#"{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self"], "users": ["localpart:*@example.org"]}"#), message: "example.org is not associated with this Tailnet and cannot be used in user:*@<domain> expressions", source: "capture"),
        // MARK: nodeAttrs
        Row(policy: owners + #", "nodeAttrs": [{"target": ["autogroup:self"], "attr": ["funnel"]}]"#, message: "internal server error", source: "capture"),
        Row(policy: owners + #", "nodeAttrs": [{"target": ["autogroup:admin", "autogroup:owner", "autogroup:member", "autogroup:tagged"], "attr": ["funnel"]}]"#, message: nil, source: "capture (admin and owner accepted)"),
        Row(policy: owners + #", "nodeAttrs": [{"target": ["autogroup:internet"], "attr": ["funnel"]}]"#, message: #"nodeAttrs target does not support this autogroup: "autogroup:internet""#, source: "headscale"),
        Row(policy: owners + #", "nodeAttrs": [{"target": ["*"], "ipPool": ["10.0.0.0/24"]}]"#, message: #"nodeAttrs ipPool must be within 100.64.0.0/10: "10.0.0.0/24""#, source: "headscale"),
        Row(policy: owners + #", "nodeAttrs": [{"target": ["*"], "ipPool": ["100.100.100.0/24"]}]"#, message: "IPPool(100.100.100.0/24): network within reserved range", source: "capture"),
        Row(policy: owners + #", "nodeAttrs": [{"target": ["%bogus%"], "attr": ["funnel"]}]"#, message: #""%bogus%": invalid address"#, source: "capture"),
        // MARK: groups, tagOwners, hosts
        Row(policy: #""groups": {"group:a": ["group:b"], "group:b": ["alice@example.com"]}"#, message: #"groups["group:a"]: "group:b": group members cannot be recursive"#, source: "capture"),
        Row(policy: #""groups": {"a": ["alice@example.com"]}"#, message: #"group "a" must start with "group:""#, source: "headscale"),
        Row(policy: #""tagOwners": {"tag:1a": ["alice@example.com"]}"#, message: #"tagOwners["tag:1a"]: tag names must start with a letter, after 'tag:'"#, source: "capture"),
        Row(policy: #""tagOwners": {"tag:a": ["group:nope"]}"#, message: #"group not defined in policy: "group:nope""#, source: "headscale"),
        Row(policy: #""tagOwners": {"tag:a": ["tag:nope"]}"#, message: #"tag not found: "tag:nope""#, source: "headscale"),
        Row(policy: #""tagOwners": {"tag:a": ["tag:b"], "tag:b": ["autogroup:admin"]}"#, message: nil, source: "docs (tags own tags; autogroup:admin owns)"),
        Row(policy: #""tagOwners": {"tag:a": ["10.0.0.1"]}"#, message: #"invalid owner format: "10.0.0.1""#, source: "headscale"),
        Row(policy: #""hosts": {"h": "10.0.0.300"}"#, message: #"hosts["h"]: invalid IP address or prefix "10.0.0.300""#, source: "headscale"),
        // MARK: autoApprovers
        Row(policy: #""autoApprovers": {"routes": {"10.0.0.0/24": ["10.0.0.1"]}}"#, message: #"invalid auto approver format: "10.0.0.1""#, source: "headscale"),
        Row(policy: #""autoApprovers": {"routes": {"10.0.0.0/24": ["tag:nope"]}}"#, message: #"tag not found: "tag:nope""#, source: "headscale"),
        Row(policy: #""autoApprovers": {"exitNode": ["group:nope"]}"#, message: #"group not defined in policy: "group:nope""#, source: "headscale"),
        Row(policy: owners + #", "autoApprovers": {"routes": {"10.0.0.0/24": ["tag:web", "group:eng", "alice@example.com"]}, "exitNode": ["autogroup:member"]}"#, message: nil, source: "capture (tags, groups, users approve)"),
        Row(policy: #""autoApprovers": {"routes": {"10.0.0.0/33": ["alice@example.com"]}}"#, message: #"autoApprovers.routes: invalid prefix "10.0.0.0/33""#, source: "headscale"),
        // MARK: sshTests
        Row(policy: owners + #", "sshTests": [{"src": "", "dst": ["tag:web"], "accept": ["root"]}]"#, message: "SSH tests entry must have a non-empty src", source: "headscale"),
        Row(policy: owners + #", "sshTests": [{"src": "alice@example.com", "dst": ["tag:web:22"], "accept": ["root"]}]"#, message: #"SSH tests dst contains unknown tag "tag:web:22""#, source: "capture"),
        Row(policy: owners + #", "sshTests": [{"src": "alice@example.com", "dst": ["100.64.0.0/24"], "accept": ["root"]}]"#, message: #"SSH tests dst contains disallowed element "100.64.0.0/24""#, source: "capture"),
        // MARK: network-wide options
        Row(policy: #""randomizeClientPort": "yes""#, message: "randomizeClientPort: expected a boolean", source: "docs (a boolean)"),
        Row(policy: #""unknownSection": []"#, message: #"unknown field "unknownSection""#, source: "docs (sections)"),
    ]

    func testEveryFieldAsTailscaleChecksIt() {
        var failures: [String] = []
        for row in Self.rows {
            let text = "{" + row.policy + "}"
            let got = Fidelity.message(text)
            if got != row.message {
                failures.append("\(row.policy)\n    expected \(row.message.map { "\"\($0)\"" } ?? "accepted") [\(row.source)]\n    got      \(got.map { "\"\($0)\"" } ?? "accepted")")
            }
        }
        XCTAssertTrue(failures.isEmpty, "\(failures.count) of \(Self.rows.count) rows differ:\n" + failures.joined(separator: "\n"))
    }

    /// The new SSH checks refuse by kind, not by spelling: every alias kind is tried in every SSH position, and the
    /// ones that name identities are the only ones accepted.
    func testSSHAliasKindsByPosition() {
        let kinds: [(alias: String, src: Bool, dst: Bool)] = [
            ("alice@example.com", true, true), ("group:eng", true, false), ("tag:web", true, true),
            ("autogroup:member", true, true), ("autogroup:tagged", true, true), ("autogroup:self", false, true),
            ("*", false, false), ("nas", false, false), ("100.64.0.1", false, false), ("10.0.0.0/8", false, false),
            ("autogroup:internet", false, false), ("autogroup:danger-all", false, false),
        ]
        for k in kinds {
            let asSource = Self.ssh(#"{"action": "accept", "src": ["\#(k.alias)"], "dst": ["tag:db"], "users": ["root"]}"#)
            // A tagged source reaches only tags; alice's own devices need alice as the only source.
            let dst = Self.ssh(#"{"action": "accept", "src": ["alice@example.com"], "dst": ["\#(k.alias)"], "users": ["root"]}"#)
            XCTAssertEqual(Fidelity.message("{" + asSource + "}") == nil, k.src, "src \(k.alias): \(Fidelity.message("{" + asSource + "}") ?? "accepted")")
            XCTAssertEqual(Fidelity.message("{" + dst + "}") == nil, k.dst, "dst \(k.alias): \(Fidelity.message("{" + dst + "}") ?? "accepted")")
        }
    }
}
