import Foundation
import WarrenPacket
import WarrenPolicy
import WarrenTailcfg
import XCTest

/// Helpers for the fidelity tests (issue 11): LanguageTests' small tailnet and header, compiled by the
/// reference compiler, the engine built whole and the engine built node by node (all three must agree).
enum Fidelity {
    static func compile(_ body: String, tailnet: Tailnet = LanguageTests.tailnet, header: String = LanguageTests.header,
                        file: StaticString = #filePath, line: UInt = #line) throws -> [String: NodePolicy] {
        let check = try PolicyCheck(text: "{" + header + body + "}", tailnet: tailnet)
        let engine = PolicyEngine(policy: check.policy, tailnet: tailnet).compileAll()
        let reference = PolicyCompiler(policy: check.policy, tailnet: tailnet).compileAll()
        if let problem = IncrementalRecomputeTests.compare(engine, reference, context: "engine vs reference") {
            XCTFail(problem, file: file, line: line)
        }
        var joined = PolicyEngine(policy: check.policy, tailnet: Tailnet(users: tailnet.users, nodes: []))
        for n in tailnet.nodes.reversed() { joined.apply(.upsert(n)) }
        if let problem = IncrementalRecomputeTests.compare(joined.compileAll(), reference, context: "joins vs reference") {
            XCTFail(problem, file: file, line: line)
        }
        return engine
    }

    /// The message a policy is rejected with ("LINE:COLUMN: text"), or nil when it is accepted.
    static func rejection(_ text: String, tailnet: Tailnet = LanguageTests.tailnet) -> String? {
        do {
            _ = try PolicyCheck(text: text, tailnet: tailnet)
            return nil
        } catch {
            return error.description
        }
    }

    /// The message without its LINE:COLUMN prefix.
    static func message(_ text: String, tailnet: Tailnet = LanguageTests.tailnet) -> String? {
        do {
            _ = try PolicyCheck(text: text, tailnet: tailnet)
            return nil
        } catch {
            return error.message
        }
    }
}
