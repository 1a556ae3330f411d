// The in-memory twin of the store: same rules (one-off keys used once, addresses never reused), nothing
// kept across restarts.

import Synchronization
import TailscaleKeys
import WarrenPacket
import WarrenTailcfg

public final class InMemoryDirectory: ControlDirectory {
    public struct PreAuthKey: Hashable, Sendable {
        public var key: String
        public var userID: Int64
        public var reusable: Bool
        public var ephemeral: Bool
        public var tags: [String]
        public var preApproved: Bool
        public var expiration: TailcfgTime?
        public var used: Bool = false
    }

    private struct State {
        var users: [Int64: ControlUser] = [:]
        var keys: [String: PreAuthKey] = [:]
        var nodes: [Int64: ControlNode] = [:]
        var nextUserID: Int64 = 1
        var nextNodeID: Int64 = 1
        var nextAddressIndex: UInt64 = 1
    }

    private let state = Mutex(State())
    private let ipv4Prefix: IPPrefix
    private let ipv6Prefix: IPPrefix

    public init(ipv4Prefix: IPPrefix = AddressAllocator.defaultIPv4Prefix,
                ipv6Prefix: IPPrefix = AddressAllocator.defaultIPv6Prefix) {
        self.ipv4Prefix = ipv4Prefix
        self.ipv6Prefix = ipv6Prefix
    }

    @discardableResult
    public func createUser(_ name: String) -> ControlUser {
        state.withLock { s in
            if let existing = s.users.values.first(where: { $0.name == name }) { return existing }
            let user = ControlUser(id: s.nextUserID, name: name)
            s.nextUserID += 1
            s.users[user.id] = user
            return user
        }
    }

    public func addPreAuthKey(_ key: String, user: ControlUser, reusable: Bool = false, ephemeral: Bool = false,
                              tags: [String] = [], preApproved: Bool = false, expiration: TailcfgTime? = nil) {
        state.withLock {
            $0.keys[key] = PreAuthKey(key: key, userID: user.id, reusable: reusable, ephemeral: ephemeral, tags: tags,
                                      preApproved: preApproved, expiration: expiration)
        }
    }

    public func users() async throws -> [ControlUser] {
        state.withLock { Array($0.users.values).sorted { $0.id < $1.id } }
    }

    public func nodes() async throws -> [ControlNode] {
        state.withLock { Array($0.nodes.values).sorted { $0.id < $1.id } }
    }

    public func redeemPreAuthKey(_ key: String, machineKey: MachinePublic, now: TailcfgTime) async throws -> PreAuthGrant {
        try state.withLock { s in
            guard var record = s.keys[key] else { throw RegistrationRefusal("invalid pre-auth key") }
            if let expiration = record.expiration, expiration <= now {
                throw RegistrationRefusal("pre-auth key expired at \(expiration)")
            }
            if !record.reusable && record.used {
                throw RegistrationRefusal("pre-auth key has already been used (it is a one-off key)")
            }
            guard s.users[record.userID] != nil else { throw RegistrationRefusal("pre-auth key's user no longer exists") }
            record.used = true
            s.keys[key] = record
            return PreAuthGrant(userID: record.userID, ephemeral: record.ephemeral, tags: record.tags,
                                preApproved: record.preApproved)
        }
    }

    public func createNode(_ node: ControlNode) async throws -> ControlNode {
        try state.withLock { s in
            var node = node
            node.id = s.nextNodeID
            let (v4, v6) = try AddressAllocator.addresses(index: s.nextAddressIndex, ipv4Prefix: ipv4Prefix,
                                                          ipv6Prefix: ipv6Prefix)
            node.ipv4 = v4
            node.ipv6 = v6
            s.nextNodeID += 1
            s.nextAddressIndex += 1
            s.nodes[node.id] = node
            return node
        }
    }

    public func updateNode(_ node: ControlNode) async throws {
        state.withLock { $0.nodes[node.id] = node }
    }

    public func deleteNode(id: Int64) async throws {
        _ = state.withLock { $0.nodes.removeValue(forKey: id) }
    }
}

/// The n-th address pair of a tailnet: IPv4 `prefix + n` (skipping Tailscale's service address
/// 100.100.100.100) and IPv6 `prefix + n`.
public enum AddressAllocator {
    public static let defaultIPv4Prefix = IPPrefix("100.64.0.0/10")!
    public static let defaultIPv6Prefix = IPPrefix("fd7a:115c:a1e0::/48")!
    static let quad100 = IPAddress("100.100.100.100")!

    public static func addresses(index: UInt64, ipv4Prefix: IPPrefix, ipv6Prefix: IPPrefix) throws -> (IPAddress, IPAddress) {
        guard case .v4(let base4) = ipv4Prefix.masked.address, case .v6(let hi, let lo) = ipv6Prefix.masked.address else {
            throw RegistrationRefusal("address prefixes are misconfigured")
        }
        let size4 = UInt64(1) << UInt64(32 - ipv4Prefix.bits)
        // Every index past the service address moves up by one, so no two indexes share an address.
        var offset = index
        if ipv4Prefix.contains(quad100), case .v4(let q) = quad100, UInt64(q) - UInt64(base4) <= offset { offset += 1 }
        guard offset < size4 - 1 else { throw RegistrationRefusal("the IPv4 prefix \(ipv4Prefix) is exhausted") }
        let v4 = IPAddress.v4(base4 &+ UInt32(truncatingIfNeeded: offset))
        let (sum, overflow) = lo.addingReportingOverflow(index)
        let v6 = IPAddress.v6(overflow ? hi &+ 1 : hi, sum)
        return (v4, v6)
    }
}
