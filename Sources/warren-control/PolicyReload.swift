// SIGHUP in `serve`: the policy file is read again and put in force, as headscale does in policy file mode.
// The text goes through the engine's checks (parse, validation, the policy's own tests against the live tailnet)
// and the engine's replacement, the same calls the admin API's `policy set` makes, so every map stream whose
// results changed gets them. A text that does not pass is logged with its line and column and the policy in force
// stays; the process goes on either way.

import Foundation
import Logging
import WarrenControlServer
import WarrenPolicy

struct PolicyFileReloader: Sendable {
    /// The policy file (file mode); nil in database mode, where SIGHUP has nothing to re-read.
    let path: String?
    let engine: ControlEngine
    let logger: Logger

    enum Outcome: Sendable, Equatable {
        case noFile
        case unchanged
        case applied(nodesChanged: Int)
        case refused
    }

    @discardableResult
    func reload() async -> Outcome {
        guard let path else {
            logger.info("SIGHUP: the policy lives in the database (no policy file): nothing to reload; use `warren-control policy set`")
            return .noFile
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            logger.error("SIGHUP: policy reload failed: cannot read \(path) (\(String(cString: strerror(errno)))); the policy in force is kept")
            return .refused
        }
        let text = String(decoding: data, as: UTF8.self)
        let old = await engine.compiledPolicy?.policy
        if let old, old.source == text {
            logger.info("SIGHUP: policy file \(path) unchanged")
            return .unchanged
        }
        let policy: Policy
        do {
            policy = try await engine.checkPolicy(text)
        } catch {
            for problem in error.problems {
                let place = problem.line.map { ":\($0):\(problem.column ?? 0)" } ?? ""
                logger.error("SIGHUP: policy reload refused: \(path)\(place): \(problem.message)")
            }
            logger.error("SIGHUP: policy reload refused (\(error.problems.count) problem(s)); the policy in force is kept")
            return .refused
        }
        do {
            let changed = try await engine.replacePolicy(policy).count
            logger.info("SIGHUP: policy reloaded from \(path): \(Self.changes(from: old, to: policy)); \(changed) node(s) got new results")
            return .applied(nodesChanged: changed)
        } catch {
            logger.error("SIGHUP: policy reload failed: \(error); the policy in force is kept")
            return .refused
        }
    }

    /// What differs between two policies, in a line: rule counts, and the names of groups, tag owners and hosts
    /// added and removed. "rules unchanged (text only)" when only comments or layout moved.
    static func changes(from old: Policy?, to new: Policy) -> String {
        guard let old else {
            return "was allow-all; now \(new.acls.count) acls, \(new.grants.count) grants, \(new.ssh.count) ssh, "
                + "\(new.groups.count) groups, \(new.tagOwners.count) tagOwners"
        }
        var parts: [String] = []
        let counts: [(String, Int, Int)] = [
            ("acls", old.acls.count, new.acls.count), ("grants", old.grants.count, new.grants.count),
            ("ssh", old.ssh.count, new.ssh.count), ("nodeAttrs", old.nodeAttrs.count, new.nodeAttrs.count),
            ("autoApprovers", old.autoApproverRoutes.count + old.autoApproverExitNode.count,
             new.autoApproverRoutes.count + new.autoApproverExitNode.count),
            ("tests", old.tests.count + old.sshTests.count, new.tests.count + new.sshTests.count),
        ]
        for (name, before, after) in counts where before != after { parts.append("\(name) \(before) -> \(after)") }
        let named: [(String, Set<String>, Set<String>)] = [
            ("groups", Set(old.groups.keys), Set(new.groups.keys)), ("tagOwners", Set(old.tagOwners.keys), Set(new.tagOwners.keys)),
            ("hosts", Set(old.hosts.keys), Set(new.hosts.keys)),
        ]
        for (name, before, after) in named {
            let added = after.subtracting(before).sorted(), removed = before.subtracting(after).sorted()
            if !added.isEmpty { parts.append("\(name) added: \(added.joined(separator: ", "))") }
            if !removed.isEmpty { parts.append("\(name) removed: \(removed.joined(separator: ", "))") }
            let edited = before.intersection(after).filter { key in
                switch name {
                case "groups": old.groups[key] != new.groups[key]
                case "tagOwners": old.tagOwners[key] != new.tagOwners[key]
                default: old.hosts[key] != new.hosts[key]
                }
            }.sorted()
            if !edited.isEmpty { parts.append("\(name) changed: \(edited.joined(separator: ", "))") }
        }
        if parts.isEmpty { return "rule counts and names unchanged (\(new.acls.count) acls, \(new.grants.count) grants, \(new.ssh.count) ssh)" }
        return parts.joined(separator: "; ")
    }
}
