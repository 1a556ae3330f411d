import WarrenPacket
import WarrenPolicy
import XCTest

/// Areas 1 and 2 of issue 11: the same mistake gets the message Tailscale gives for the place it stands in,
/// and the checks Tailscale makes that Warren used to skip. Each policy is new; the expected texts come from
/// Tailscale's own messages (`src=tag not found: "tag:x"` is quoted from Tailscale's API in
/// tailscale/terraform-provider-tailscale#380) and from headscale v2's validate (hscontrol/policy/v2/types.go),
/// whose compatibility tests hold its messages to Tailscale's captured ones.
final class RejectionMessageTests: XCTestCase {
    static let owners = #""tagOwners": {"tag:web": ["alice@example.com"]}, "hosts": {"nas": "10.9.0.1", "lan": "10.9.0.0/24"},"#

    func reject(_ body: String, file: StaticString = #filePath, line: UInt = #line) -> String? {
        Fidelity.rejection("{" + Self.owners + body + "}")
    }

    /// The 1-based column of `needle` in the one-line policy the tests build from `body`.
    func column(of needle: String, in body: String) -> Int {
        let text = "{" + Self.owners + body + "}"
        return text.distance(from: text.startIndex, to: text.range(of: needle)!.lowerBound) + 1
    }

    /// An undefined tag: each place words it its own way; the LINE:COLUMN points at the tag's string
    /// (for `via`, at the grant).
    func testUnknownTagByPlace() {
        let cases: [(body: String, message: String, place: String)] = [
            (#""acls": [{"action": "accept", "src": ["tag:nope"], "dst": ["*:*"]}]"#, #"src=tag not found: "tag:nope""#, "ACL source"),
            (#""acls": [{"action": "accept", "src": ["*"], "dst": ["tag:nope:22"]}]"#, #"dst="tag:nope": tag not found: "tag:nope""#, "ACL destination"),
            (#""grants": [{"src": ["tag:nope"], "dst": ["*"], "ip": ["*"]}]"#, #"src=tag not found: "tag:nope""#, "grant source"),
            (#""grants": [{"src": ["*"], "dst": ["tag:nope"], "ip": ["*"]}]"#, #"tag not found: "tag:nope""#, "grant destination"),
            (#""ssh": [{"action": "accept", "src": ["tag:nope"], "dst": ["tag:web"], "users": ["root"]}]"#, #"tag not found: "tag:nope""#, "SSH source"),
            (#""ssh": [{"action": "accept", "src": ["tag:web"], "dst": ["tag:nope"], "users": ["root"]}]"#, #"tag not found: "tag:nope""#, "SSH destination"),
            (#""nodeAttrs": [{"target": ["tag:nope"], "attr": ["funnel"]}]"#, #"tag not found: "tag:nope""#, "nodeAttrs target"),
        ]
        for c in cases {
            XCTAssertEqual(reject(c.body), "1:\(column(of: "\"tag:nope", in: c.body)): " + c.message, c.place)
        }
        let via = #""grants": [{"src": ["*"], "dst": ["*"], "ip": ["*"], "via": ["tag:nope"]}]"#
        XCTAssertEqual(reject(via), "1:\(column(of: "{\"src", in: via)): " + #"tag "tag:nope" not found"#, "via (as before)")
    }

    /// Undefined groups: one wording wherever they stand. Undefined hosts: one wording in ACLs and grants; a
    /// host as an SSH destination is refused as an invalid dst whether it is defined or not; a nodeAttrs target
    /// is read as an address (see SemanticsByAreaTests).
    func testUnknownGroupAndHost() {
        for body in [#""acls": [{"action": "accept", "src": ["group:nope"], "dst": ["*:*"]}]"#,
                     #""grants": [{"src": ["*"], "dst": ["group:nope"], "ip": ["*"]}]"#,
                     #""ssh": [{"action": "accept", "src": ["group:nope"], "dst": ["tag:web"], "users": ["root"]}]"#,
                     #""nodeAttrs": [{"target": ["group:nope"], "attr": ["funnel"]}]"#] {
            XCTAssertEqual(reject(body).map { String($0.drop { $0 != " " }.dropFirst()) }, #"group not defined in policy: "group:nope""#, body)
        }
        for body in [#""acls": [{"action": "accept", "src": ["nohost"], "dst": ["*:*"]}]"#,
                     #""acls": [{"action": "accept", "src": ["*"], "dst": ["nohost:80"]}]"#,
                     #""grants": [{"src": ["nohost"], "dst": ["*"], "ip": ["*"]}]"#] {
            XCTAssertEqual(reject(body).map { String($0.drop { $0 != " " }.dropFirst()) }, #"host not defined in policy: "nohost""#, body)
        }
        XCTAssertEqual(reject(#""ssh": [{"action": "accept", "src": ["autogroup:member"], "dst": ["nohost"], "users": ["root"]}]"#)
            .map { String($0.drop { $0 != " " }.dropFirst()) }, #"invalid dst "nohost""#)
        XCTAssertEqual(reject(#""ssh": [{"action": "accept", "src": ["autogroup:member"], "dst": ["nas"], "users": ["root"]}]"#)
            .map { String($0.drop { $0 != " " }.dropFirst()) }, #"invalid dst "nas""#)
    }

    /// `user:*@domain` with a domain that is not the tailnet's (LanguageTests' tailnet is example.com's) is refused
    /// in any place, with the wording of the `localpart:*@domain` check (in an SSH rule behind "[ssh] "); the
    /// tailnet's own domain is accepted.
    func testUserDomainOfAnotherTailnet() {
        let want = "example.net is not associated with this Tailnet and cannot be used in user:*@<domain> expressions"
        XCTAssertEqual(Fidelity.message(#"{"ssh": [{"action": "accept", "src": ["user:*@example.net"], "dst": ["autogroup:self"], "users": ["root"]}]}"#), "[ssh] " + want)
        XCTAssertEqual(Fidelity.message(#"{"grants": [{"src": ["user:*@example.net"], "dst": ["*"], "ip": ["*"]}]}"#), want)
        XCTAssertNil(Fidelity.message(#"{"ssh": [{"action": "accept", "src": ["user:*@example.com"], "dst": ["autogroup:self"], "users": ["root"]}]}"#))
    }

    /// SSH `acceptEnv` names variables; an empty name is refused (`*` and `?` patterns are fine).
    func testSSHAcceptEnvEmptyValue() {
        XCTAssertEqual(Fidelity.message(#"{"ssh": [{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self"], "users": ["root"], "acceptEnv": ["GIT_*", ""]}]}"#),
                       "acceptEnv values cannot be empty")
        XCTAssertNil(Fidelity.message(#"{"ssh": [{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self"], "users": ["root"], "acceptEnv": ["*", "LC_?"]}]}"#))
    }

    /// nodeAttrs ipPool: inside 100.64.0.0/10, clear of 100.100.100.0/24 and 100.115.92.0/23.
    func testNodeAttrsIPPoolRanges() {
        func pool(_ p: String) -> String? {
            Fidelity.message(#"{"nodeAttrs": [{"target": ["autogroup:member"], "ipPool": [""# + p + #""]}]}"#)
        }
        XCTAssertNil(pool("100.80.0.0/16"))
        XCTAssertEqual(pool("10.0.0.0/8"), #"nodeAttrs ipPool must be within 100.64.0.0/10: "10.0.0.0/8""#)
        XCTAssertEqual(pool("100.0.0.0/8"), #"nodeAttrs ipPool must be within 100.64.0.0/10: "100.0.0.0/8""#, "wider than CGNAT")
        XCTAssertEqual(pool("100.100.0.0/16"), "IPPool(100.100.0.0/16): network within reserved range")
        XCTAssertEqual(pool("100.115.93.0/24"), "IPPool(100.115.93.0/24): network within reserved range")
    }

    /// sshTests: a src and at least one dst are required, and each dst must name SSH hosts (no ports, ranges,
    /// or autogroup:internet).
    func testSSHTestsShapes() {
        let ssh = #""ssh": [{"action": "accept", "src": ["autogroup:member"], "dst": ["tag:web"], "users": ["root"]}],"#
        func test(_ t: String) -> String? { Fidelity.message("{" + Self.owners + ssh + #""sshTests": ["# + t + "]}") }
        XCTAssertEqual(test(#"{"src": "", "dst": ["tag:web"], "accept": ["root"]}"#), "SSH tests entry must have a non-empty src")
        XCTAssertEqual(test(#"{"src": "alice@example.com", "dst": [], "accept": ["root"]}"#), "SSH tests entry must have at least one dst")
        XCTAssertEqual(test(#"{"src": "alice@example.com", "dst": ["100.64.0.10:22"], "accept": ["root"]}"#),
                       #"SSH tests dst contains disallowed element "100.64.0.10:22""#)
        XCTAssertEqual(test(#"{"src": "alice@example.com", "dst": ["lan"], "accept": ["root"]}"#),
                       #"SSH tests dst contains disallowed element "lan""#)
        XCTAssertNil(test(#"{"src": "alice@example.com", "dst": ["tag:web", "100.64.0.10"], "accept": ["root"]}"#))
    }
}
