import TailscaleKeys
import WarrenPacket
import WarrenTailcfg
import WarrenTestSupport

/// Small builders shared by the network map tests.
enum Fixture {
    static func key(_ n: Int) -> NodePublic {
        var raw = [UInt8](repeating: 0, count: 32)
        raw[0] = 1
        raw[30] = UInt8(truncatingIfNeeded: n >> 8)
        raw[31] = UInt8(truncatingIfNeeded: n)
        return NodePublic(rawRepresentation: raw)!
    }

    static func disco(_ n: Int) -> DiscoPublic {
        var raw = [UInt8](repeating: 0, count: 32)
        raw[0] = 2
        raw[31] = UInt8(truncatingIfNeeded: n)
        return DiscoPublic(rawRepresentation: raw)!
    }

    static func v4(_ id: Int64) -> IPPrefix { IPPrefix("100.64.\(id >> 8).\(id & 0xFF)/32")! }
    static func v6(_ id: Int64) -> IPPrefix { IPPrefix("fd7a:115c:a1e0::\(String(id, radix: 16))/128")! }

    static func node(_ id: Int64, user: Int64 = 1) -> Node {
        var node = Node()
        node.id = id
        node.stableID = "n\(id)"
        node.name = "host\(id).tailnet.ts.net."
        node.user = user
        node.key = key(Int(id))
        node.discoKey = disco(Int(id))
        node.addresses = [v4(id), v6(id)]
        node.homeDERP = 1
        node.endpoints = [AddrPort("192.0.2.\(id & 0xFF):41641")!]
        return node
    }

    static func time(_ seconds: Int64) -> TailcfgTime { TailcfgTime(secondsSince1970: seconds) }

    static func prefix(_ text: String) -> IPPrefix { IPPrefix(text)! }
}
