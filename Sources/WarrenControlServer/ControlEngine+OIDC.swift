// Sign-in with OIDC completes a pending interactive login through the same approval path as an admin's
// `auth register`, then gives the node the key expiry the sign-in asks for (oidc.expiry or the ID token's exp).

import WarrenTailcfg

extension ControlEngine {
    /// Approves the waiting login `authID` for `userID` (``approveInteractiveLogin(id:userID:)``), then sets the
    /// node's key expiry when `keyExpiry` is given (`.some(nil)`: never expires). The client's map carries it.
    @discardableResult
    public func approveInteractiveLogin(id authID: String, userID: Int64, keyExpiry: TailcfgTime??) async throws -> ControlNode {
        let node = try await approveInteractiveLogin(id: authID, userID: userID)
        guard let wanted = keyExpiry, node.tags.isEmpty, nodes[node.id]?.keyExpiry != wanted else { return nodes[node.id] ?? node }
        var updated = nodes[node.id] ?? node
        updated.keyExpiry = wanted
        try await nodeChanged(updated)
        logger.info("node key expiry set by the sign-in", metadata: ["node": "\(node.id)", "expiry": "\(wanted.map { "\($0)" } ?? "never")"])
        return updated
    }
}
