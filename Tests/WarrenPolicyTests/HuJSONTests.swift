import Foundation
import WarrenPacket
import WarrenPolicy
import WarrenTestSupport
import XCTest

/// HuJSON: comments and trailing commas accepted; every error names its line and column; the parser
/// and the policy reader never crash on mutated input.
final class HuJSONTests: XCTestCase {
    func testCommentsAndTrailingCommas() throws {
        let node = try HuJSON.parse("""
            // leading comment
            {
              /* block
                 comment */ "a": [1, 2, 3,], // trailing comma in an array
              "b": {"c": "d",},
            }
            """)
        XCTAssertEqual(node.jsonText, #"{"a":[1,2,3],"b":{"c":"d"}}"#)
        XCTAssertEqual(node.members?.first?.keyPosition, SourcePosition(line: 4, column: 17))
    }

    /// Each malformed document fails at the line and column of its fault.
    func testErrorsNameLineAndColumn() {
        let cases: [(text: String, line: Int, column: Int, message: String)] = [
            ("{\n  \"a\": 1\n  \"b\": 2\n}", 3, 3, "invalid character '\"' after object key:value pair"),
            ("{\"a\": [1, 2,, 3]}", 1, 13, "invalid character ',' looking for beginning of value"),
            ("{\n\n    \"a\": tru\n}", 3, 13, "invalid character byte 0xa in literal true"),
            ("{\"a\": \"x\\q\"}", 1, 10, "invalid escape character in string literal"),
            ("{\"a\": 1}\n/* open", 2, 1, "unterminated block comment"),
            ("{\"a\": 1, \"a\": 2}", 1, 10, "duplicate name \"a\" in object"),
            ("[1, 2", 1, 6, "unexpected end of input in array"),
            ("{\"é\": 1 x}", 1, 9, "invalid character 'x' after object key:value pair"),
            ("{} {}", 1, 4, "invalid character '{' after top-level value"),
            ("{\"a\": 01}", 1, 8, "invalid character '1' after object key:value pair"),
            ("{\"a\": -}", 1, 8, "invalid character '}' in numeric literal"),
        ]
        for c in cases {
            XCTAssertThrowsError(try HuJSON.parse(c.text), c.text) { error in
                guard let e = error as? PolicyError else { return XCTFail("not a PolicyError: \(error)") }
                XCTAssertEqual(e.message, c.message, c.text)
                XCTAssertEqual(e.line, c.line, "line of \(c.message)")
                XCTAssertEqual(e.column, c.column, "column of \(c.message)")
                XCTAssertEqual(e.description, "\(c.line):\(c.column): \(c.message)")
            }
        }
    }

    /// Policy errors point at the offending value, not just the file.
    func testPolicyErrorsNameLineAndColumn() {
        let text = """
            {
              "groups": {"group:eng": ["alice@example.com"]},
              "acls": [
                {"action": "accept", "src": ["group:eng"], "dst": ["tag:web:443"]},
              ],
            }
            """
        XCTAssertThrowsError(try PolicyParser.parse(text)) { error in
            let e = error as? PolicyError
            XCTAssertEqual(e?.message, "dst=\"tag:web\": tag not found: \"tag:web\"", "an ACL destination says where")
            XCTAssertEqual(e?.line, 4)
            XCTAssertEqual(e?.column, 56)
        }
        XCTAssertThrowsError(try PolicyParser.parse("{\n  \"acls\": [],\n  \"acl\": []\n}")) { error in
            let e = error as? PolicyError
            XCTAssertEqual(e?.message, "unknown field \"acl\"")
            XCTAssertEqual(e?.line, 3)
            XCTAssertEqual(e?.column, 3)
        }
    }

    /// Nesting is bounded, so deep input fails cleanly rather than exhausting the stack.
    func testDeepNestingIsRefused() {
        let deep = String(repeating: "[", count: 100_000)
        XCTAssertThrowsError(try HuJSON.parse(deep)) { error in
            XCTAssertEqual((error as? PolicyError)?.message, "nesting too deep")
        }
    }

    static let seeds: [String] = [
        """
        // A policy with every section.
        {
          "groups": {"group:eng": ["alice@example.com", "bob@example.com"]},
          "tagOwners": {"tag:web": ["group:eng"], "tag:router": ["alice@example.com"]},
          "hosts": {"db": "10.1.2.3", "net": "10.0.0.0/8"},
          "ipsets": {"ipset:office": ["192.168.0.0/16", "db"]},
          "acls": [
            {"action": "accept", "src": ["group:eng"], "dst": ["tag:web:80,443", "db:5432"], "proto": "tcp"},
            {"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]},
          ],
          "grants": [
            {"src": ["*"], "dst": ["tag:web"], "ip": ["tcp:443", "udp:53"]},
            {"src": ["group:eng"], "dst": ["10.0.0.0/8"], "ip": ["*"], "via": ["tag:router"]},
            {"src": ["group:eng"], "dst": ["tag:web"], "app": {"example.com/cap/x": [{"a": 1}]}},
          ],
          "ssh": [
            {"action": "check", "src": ["group:eng"], "dst": ["tag:web"], "users": ["root", "autogroup:nonroot"], "checkPeriod": "12h"},
            {"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self"], "users": ["localpart:*@example.com"], "acceptEnv": ["GIT_*"]},
          ],
          "nodeAttrs": [{"target": ["tag:web"], "attr": ["funnel"]}],
          "autoApprovers": {"routes": {"10.0.0.0/8": ["tag:router"]}, "exitNode": ["tag:router"]},
          "tests": [{"src": "alice@example.com", "accept": ["tag:web:443"], "deny": ["tag:web:22"]}],
          "sshTests": [{"src": "alice@example.com", "dst": ["tag:web"], "check": ["root"]}],
          "randomizeClientPort": true,
        }
        """,
        #"{"a": [1, -2.5e+3, true, false, null, "\u00e9\ud83d\ude00\n"], /* c */ "b": {}}"#,
    ]

    func testFuzzHuJSONParser() {
        let fuzzer = MutationFuzzer(seeds: Self.seeds.map { Array($0.utf8) }, iterations: 20_000, maximumLength: 4096, seed: 0x4855_4A53)
        var rejected = 0
        fuzzer.run { bytes in
            do {
                _ = try HuJSON.parse(bytes)
            } catch let error as PolicyError {
                rejected += 1
                XCTAssertNotNil(error.line, "error without a line: \(error.message)")
                XCTAssertNotNil(error.column, "error without a column: \(error.message)")
            } catch {
                XCTFail("not a PolicyError: \(error)")
            }
        }
        XCTAssertGreaterThan(rejected, 1000, "the fuzzer should produce plenty of bad input")
    }

    /// Mutated policies are read, validated, compiled and their tests run without crashing.
    func testFuzzPolicyParserAndCompiler() {
        let users = [TailnetUser(id: 1, name: "alice", email: "alice@example.com"),
                     TailnetUser(id: 2, name: "bob", email: "bob@example.com")]
        let tailnet = Tailnet(users: users, nodes: [
            TailnetNode(name: "laptop", user: "alice", tags: [], addresses: [.v4(0x6440_0001)]),
            TailnetNode(name: "web", user: nil, tags: ["tag:web"], addresses: [.v4(0x6440_0002)]),
            TailnetNode(name: "router", user: nil, tags: ["tag:router"], addresses: [.v4(0x6440_0003)],
                        advertisedRoutes: [IPPrefix("10.0.0.0/8")!, IPPrefix("0.0.0.0/0")!]),
        ])
        let fuzzer = MutationFuzzer(seeds: [Array(Self.seeds[0].utf8)], iterations: 3_000, maximumLength: 4096, seed: 0x504F_4C49)
        var accepted = 0
        fuzzer.run { bytes in
            guard let check = try? PolicyCheck(text: String(decoding: bytes, as: UTF8.self), tailnet: tailnet) else { return }
            accepted += 1
            _ = PolicyCompiler(policy: check.policy, tailnet: tailnet).compileAll()
            _ = PolicyEngine(policy: check.policy, tailnet: tailnet).compileAll()
        }
        XCTAssertGreaterThan(accepted, 10, "some mutations should still be valid policies")
    }
}
