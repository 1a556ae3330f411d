import ArgumentParser
import Foundation
import WarrenPolicy

// `warren-control policy check|compile|explain`: what a policy does, before it is applied.
//   policy check [--topology FILE] POLICY
//   policy compile --policy POLICY --topology FILE [--node NAME]
//   policy explain --policy POLICY --topology FILE --from NODE --to NODE:PORT [--proto tcp|udp|icmp]
// FILE has the shape of a conformance capture's `topology` (users and nodes), or is a whole capture.

struct PolicyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy",
        abstract: "Check, compile and explain Tailscale-style access policies; set and get the running server's.",
        subcommands: [Check.self, Compile.self, Explain.self, SetPolicy.self, Get.self, History.self])
}

enum PolicyFiles {
    static func read(_ path: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ValidationError("cannot read \(path)")
        }
        return String(decoding: data, as: UTF8.self)
    }

    static func tailnet(_ path: String) throws -> Tailnet {
        guard let data = FileManager.default.contents(atPath: path) else { throw ValidationError("cannot read \(path)") }
        let object = try JSONSerialization.jsonObject(with: data)
        // A conformance capture holds the topology under "topology"; a topology file is the object itself.
        let topologyObject = (object as? [String: Any])?["topology"] ?? object
        let topology = try JSONDecoder().decode(Topology.self, from: JSONSerialization.data(withJSONObject: topologyObject))
        return try topology.tailnet()
    }

    static func located(_ path: String, _ e: PolicyError) -> String {
        if let l = e.line, let c = e.column { return "\(path):\(l):\(c): \(e.message)" }
        return "\(path): \(e.message)"
    }

    /// Reads and checks a policy, printing problems; exits non-zero on any.
    static func check(policyPath: String, tailnet: Tailnet) throws -> Policy {
        let text = try read(policyPath)
        let policy: Policy
        do {
            policy = try PolicyParser.parse(text, tailnetDomain: tailnet.domain)
        } catch {
            Console.printError(located(policyPath, error))
            throw ExitCode.failure
        }
        return policy
    }
}

extension PolicyCommand {
    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate a policy and run its tests and sshTests (against --topology).")

        @Option(help: "Users and nodes (a topology file, or a conformance capture) to run the tests against.")
        var topology: String?

        @Argument(help: "The policy file (HuJSON).")
        var policy: String

        func run() throws {
            let tailnet = try topology.map(PolicyFiles.tailnet) ?? Tailnet(users: [], nodes: [])
            let parsed = try PolicyFiles.check(policyPath: policy, tailnet: tailnet)
            let testCount = parsed.tests.count + parsed.sshTests.count
            guard topology != nil else {
                print("\(policy): valid" + (testCount > 0 ? "; \(testCount) test(s) not run (they need --topology)" : ""))
                return
            }
            let failures = PolicyTestRunner(policy: parsed, tailnet: tailnet).run()
            for f in failures { Console.printError(PolicyFiles.located(policy, f)) }
            if !failures.isEmpty {
                Console.printError("\(policy): test(s) failed")
                throw ExitCode.failure
            }
            print("\(policy): valid; \(testCount) test(s) passed")
        }
    }

    struct Compile: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print what each node would receive: packet filter rules, SSH rules and peers.")

        @Option(help: "The policy file (HuJSON).")
        var policy: String

        @Option(help: "Users and nodes: a topology file, or a conformance capture.")
        var topology: String

        @Option(help: "Print only this node.")
        var node: String?

        func run() throws {
            let tailnet = try PolicyFiles.tailnet(topology)
            let parsed = try PolicyFiles.check(policyPath: policy, tailnet: tailnet)
            if let node, !tailnet.nodes.contains(where: { $0.name == node }) {
                throw ValidationError("no node named \"\(node)\" in \(topology)")
            }
            let report = PolicyEngine(policy: parsed, tailnet: tailnet).report(only: node)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        }
    }

    struct Explain: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Say whether a flow between two nodes is allowed, and by which rule.")

        @Option(help: "The policy file (HuJSON).")
        var policy: String

        @Option(help: "Users and nodes: a topology file, or a conformance capture.")
        var topology: String

        @Option(help: "The source node.")
        var from: String

        @Option(help: "The destination as NODE:PORT.")
        var to: String

        @Option(help: "tcp, udp or icmp.")
        var proto: String = "tcp"

        func run() throws {
            guard let colon = to.lastIndex(of: ":"), let port = UInt16(to[to.index(after: colon)...]) else {
                throw ValidationError("--to must be NODE:PORT")
            }
            let number: Int
            switch proto.lowercased() {
            case "tcp": number = 6
            case "udp": number = 17
            case "icmp": number = 1
            default: throw ValidationError("--proto must be tcp, udp or icmp")
            }
            let tailnet = try PolicyFiles.tailnet(topology)
            let parsed = try PolicyFiles.check(policyPath: policy, tailnet: tailnet)
            let engine = PolicyEngine(policy: parsed, tailnet: tailnet)
            guard let explanation = engine.explain(from: from, to: String(to[..<colon]), port: port, proto: number) else {
                throw ValidationError("unknown node in --from or --to")
            }
            print(explanation)
            if !explanation.allowed { throw ExitCode.failure }
        }
    }
}
