// WarrenPolicy's compiler behind the engine's PacketFilterPolicy hook: a HuJSON policy and the live
// tailnet in, each node's packet filter and peer list out. The compilation is cached and redone only when
// the tailnet's policy-relevant shape (names, owners, tags, addresses, routes) changes.

import Synchronization
import WarrenPacket
import WarrenPolicy
import WarrenTailcfg

public final class CompiledPolicy: PacketFilterPolicy {
    public let policy: Policy

    private struct Cache {
        var key: [TailnetNode] = []
        var users: [String] = []
        var compiled: [String: NodePolicy] = [:]
        var valid = false
    }

    private let cache = Mutex(Cache())

    public init(policy: Policy) {
        self.policy = policy
    }

    /// Parses a policy file's text (HuJSON); throws WarrenPolicy's error with line and column.
    public convenience init(text: String) throws {
        self.init(policy: try PolicyParser.parse(text))
    }

    public func filterRules(for node: ControlNode, in tailnet: TailnetSnapshot) -> [FilterRule] {
        compiled(tailnet)[node.givenName]?.packetFilter ?? []
    }

    public func canSee(_ node: ControlNode, _ peer: ControlNode, in tailnet: TailnetSnapshot) -> Bool {
        compiled(tailnet)[node.givenName]?.peers.contains(peer.givenName) ?? false
    }

    private func compiled(_ snapshot: TailnetSnapshot) -> [String: NodePolicy] {
        let nodes = snapshot.nodes.values.sorted { $0.givenName < $1.givenName }.map { node in
            TailnetNode(name: node.givenName, user: node.tags.isEmpty ? snapshot.users[node.userID]?.name : nil,
                        tags: node.tags, addresses: node.addresses,
                        advertisedRoutes: node.hostinfo?.routableIPs ?? [], approvedRoutes: [])
        }
        let users = snapshot.users.values.sorted { $0.id < $1.id }.map(\.name)
        return cache.withLock { cache in
            if cache.valid && cache.key == nodes && cache.users == users { return cache.compiled }
            let tailnet = Tailnet(users: snapshot.users.values.sorted { $0.id < $1.id }.map {
                TailnetUser(id: Int($0.id), name: $0.name, email: $0.name)
            }, nodes: nodes)
            let compiled = PolicyCompiler(policy: policy, tailnet: tailnet).compileAll()
            cache = Cache(key: nodes, users: users, compiled: compiled, valid: true)
            return compiled
        }
    }
}
