import WarrenPacket

extension PolicyEngine {
    /// Whether the policy lets the node use a subnet route: a rule lets it (or the subnets it routes) reach
    /// into the route, or lets the route reach it (or its subnets), so that it needs the route for the
    /// traffic or its replies. A control server lists a router's route in a peer's AllowedIPs only for the peers
    /// for which this holds.
    ///
    /// Besides the global rules, the node's own per-node rules count, as in headscale's per-node matchers:
    /// its user's `autogroup:self` rules (a route covering the user's devices, reached from or reaching the
    /// node), and `via` grants whose sources hold the node (or its subnets) and whose destinations overlap the
    /// route (the grant steers that traffic through its routers).
    ///
    /// An exit route (0.0.0.0/0, ::/0) is different: every destination overlaps it, so it is usable only
    /// when a rule lets the node (or its subnets) reach the internet: autogroup:internet, `*`, or the whole
    /// family's /0 (Tailscale offers an exit node only to those; headscale's DestsIsTheInternet).
    public func canAccessRoute(_ name: String, _ route: IPPrefix) -> Bool {
        guard let s = live.slotByName[name], let node = live.nodes[s] else { return false }
        if TailnetNode.isExitRoute(route) { return canUseExitNode(node) }
        let own = node.subnetRoutes
        for u in units.indices {
            for (j, rule) in units[u].rules.enumerated() where !rule.isCapRule {
                let src = rule.srcSet, dst = dstSets[u][j]
                if srcMember(src, node), dst.overlaps(route) { return true }
                if src.overlaps(route) {
                    if node.addresses.contains(where: dst.contains) || own.contains(where: dst.overlaps) { return true }
                }
            }
            if units[u].hasSelf, !node.isTagged, let user = node.user, let sets = selfSets(u, user: user) {
                let inSrc = node.addresses.contains(where: sets.src.contains) || own.contains(where: sets.src.overlaps)
                let inDst = node.addresses.contains(where: sets.dst.contains) || own.contains(where: sets.dst.overlaps)
                if inSrc && sets.dst.overlaps(route) { return true }
                if inDst && sets.src.overlaps(route) { return true }
            }
            if units[u].isVia, srcMember(units[u].viaSrcSet, node),
               units[u].viaDsts.contains(where: { $0.overlaps(route) }) {
                return true
            }
        }
        return false
    }

    /// Whether a rule lets the node, or a subnet it routes, reach the internet through an exit node.
    func canUseExitNode(_ node: TailnetNode) -> Bool {
        for u in units.indices {
            for (j, rule) in units[u].rules.enumerated() where !rule.isCapRule {
                let dst = dstSets[u][j]
                let internet = toInternet[u][j]
                    || dst.containsAll(IPPrefix("0.0.0.0/0")!) || dst.containsAll(IPPrefix("::/0")!)
                if internet && srcMember(rule.srcSet, node) { return true }
            }
        }
        return false
    }

    /// The node's approved routes as the policy sees them: those approved in the tailnet plus those that
    /// autoApprovers approve (when the options apply them), in the order given.
    public func effectiveApprovedRoutes(for name: String) -> [IPPrefix]? {
        live.slotByName[name].flatMap { live.nodes[$0] }?.approvedRoutes
    }
}
