import Foundation
import TailscaleKeys
import WarrenPacket
import XCTest
@testable import WarrenTailcfg

final class NodeTests: XCTestCase {
    func testDecodesGoNode() throws {
        let node = try decodeGo(Node.self, GoJSON.node)
        XCTAssertEqual(node.id, 2)
        XCTAssertEqual(node.stableID, "nStable2CNTRL")
        XCTAssertEqual(node.name, "peer.tailnet.ts.net.")
        XCTAssertEqual(node.user, 5)
        XCTAssertEqual(node.key, GoJSON.nodeKey(0x55))
        XCTAssertEqual(node.machine, GoJSON.machineKey(0x66))
        XCTAssertEqual(node.discoKey, GoJSON.discoKey(0x77))
        XCTAssertEqual(node.keyExpiry, TailcfgTime(rfc3339: "2027-01-02T03:04:05.123456789Z"))
        XCTAssertEqual(node.keyExpiry?.nanoseconds, 123_456_789)
        XCTAssertEqual(node.addresses, ["100.64.0.2/32", "fd7a:115c:a1e0::2/128"].map { IPPrefix($0)! })
        XCTAssertEqual(node.allowedIPs?.count, 3)
        XCTAssertEqual(node.endpoints?.map(\.description), ["198.51.100.7:41641", "[2001:db8::7]:41641"])
        XCTAssertEqual(node.legacyDERP, "127.3.3.40:900")
        XCTAssertEqual(node.homeDERP, 900)
        XCTAssertEqual(node.hostinfo?.os, "windows")
        XCTAssertEqual(node.cap, 113)
        XCTAssertEqual(node.tags, ["tag:server"])
        XCTAssertEqual(node.primaryRoutes, [IPPrefix("10.2.0.0/16")!])
        XCTAssertEqual(node.online, true)
        XCTAssertEqual(node.machineAuthorized, true)
        XCTAssertEqual(node.expired, false)
        XCTAssertEqual(node.lastSeen?.description, "2026-08-22T10:11:12Z")
        let capMap = try XCTUnwrap(node.capMap)
        XCTAssertEqual(capMap.count, 3)
        XCTAssertEqual(capMap["https://tailscale.com/cap/is-admin"], .some(nil), "null value kept as nil, key present")
        XCTAssertEqual(capMap["funnel"], .some([]))
        XCTAssertEqual(capMap["x"], .some([.object(["a": .number(1)])]))
    }

    func testEncodesGoFieldNames() throws {
        let node = try decodeGo(Node.self, GoJSON.node)
        let object = try encodedObject(node)
        XCTAssertEqual(object["ID"] as? Int, 2)
        XCTAssertEqual(object["Key"] as? String, GoJSON.nodeKeyText(0x55))
        XCTAssertEqual(object["Machine"] as? String, GoJSON.machineKeyText(0x66))
        XCTAssertEqual(object["DiscoKey"] as? String, GoJSON.discoKeyText(0x77))
        XCTAssertEqual(object["KeyExpiry"] as? String, "2027-01-02T03:04:05.123456789Z")
        XCTAssertEqual(object["DERP"] as? String, "127.3.3.40:900")
        XCTAssertEqual(object["HomeDERP"] as? Int, 900)
        XCTAssertEqual(object["Addresses"] as? [String], ["100.64.0.2/32", "fd7a:115c:a1e0::2/128"])
        XCTAssertEqual(object["Endpoints"] as? [String], ["198.51.100.7:41641", "[2001:db8::7]:41641"])
        let capMap = try XCTUnwrap(object["CapMap"] as? [String: Any])
        XCTAssertTrue(capMap["https://tailscale.com/cap/is-admin"] is NSNull, "a nil capability value is written as null")
        XCTAssertEqual((capMap["funnel"] as? [Any])?.count, 0)
        XCTAssertNil(object["UnknownNodeField"])
        XCTAssertEqual(try decodeGo(Node.self, try encodedText(node)), node)
    }

    func testNilVersusEmptyAllowedIPs() throws {
        // Capability version 112+: a nil AllowedIPs means "same as Addresses"; empty means none.
        var node = Node()
        node.addresses = [IPPrefix("100.64.0.9/32")!]
        XCTAssertNil(try encodedObject(node)["AllowedIPs"])
        node.allowedIPs = []
        XCTAssertEqual(try encodedObject(node)["AllowedIPs"] as? [String], [])
        XCTAssertEqual(try decodeGo(Node.self, #"{"AllowedIPs":[]}"#).allowedIPs, [])
        XCTAssertNil(try decodeGo(Node.self, #"{"AllowedIPs":null}"#).allowedIPs)
        XCTAssertNil(try decodeGo(Node.self, "{}").allowedIPs)
    }

    func testEmptyNodeIsLenientAndMinimal() throws {
        let node = try decodeGo(Node.self, "{}")
        XCTAssertEqual(node, Node())
        XCTAssertTrue(node.key.isZero)
        let object = try encodedObject(Node())
        // Only the fields Go writes without omitempty appear.
        XCTAssertEqual(Set(object.keys), ["ID", "StableID", "Name", "User", "Key"])
        XCTAssertEqual(object["Key"] as? String, "nodekey:" + GoJSON.hex(0))
    }

    func testZeroTimesWrittenAsGoZero() throws {
        var node = Node()
        node.created = .goZero
        node.keyExpiry = .goZero
        let object = try encodedObject(node)
        XCTAssertEqual(object["Created"] as? String, "0001-01-01T00:00:00Z")
        XCTAssertEqual(object["KeyExpiry"] as? String, "0001-01-01T00:00:00Z")
        let back = try decodeGo(Node.self, #"{"KeyExpiry":"0001-01-01T00:00:00Z"}"#)
        XCTAssertEqual(back.keyExpiry?.isGoZero, true)
    }

    func testRejectsMalformedNodes() {
        XCTAssertThrowsError(try decodeGo(Node.self, #"{"Addresses":["100.64.0.300/32"]}"#))
        XCTAssertThrowsError(try decodeGo(Node.self, #"{"ID":"two"}"#))
        XCTAssertThrowsError(try decodeGo(Node.self, #"{"Key":"\#(GoJSON.discoKeyText(1))"}"#))
        XCTAssertThrowsError(try decodeGo(Node.self, #"{"KeyExpiry":"2026-02-30T00:00:00Z"}"#))
    }
}

final class MapResponseTests: XCTestCase {
    func testDecodesFullGoMapResponse() throws {
        let response = try decodeGo(MapResponse.self, GoJSON.mapResponse)
        XCTAssertEqual(response.mapSessionHandle, "h-1")
        XCTAssertEqual(response.seq, 1)
        XCTAssertEqual(response.keepAlive, false)
        XCTAssertEqual(response.controlTime, TailcfgTime(secondsSince1970: 1_787_393_472, nanoseconds: 500_000_000))
        XCTAssertEqual(response.node?.id, 1)
        XCTAssertEqual(response.node?.key, GoJSON.nodeKey(0x11))
        XCTAssertEqual(response.peers?.count, 1)
        XCTAssertEqual(response.peers?.first, try decodeGo(Node.self, GoJSON.node))
        XCTAssertEqual(response.peersChanged?.map(\.id), [3])
        XCTAssertEqual(response.peersChanged?.first?.key, GoJSON.nodeKey(0x88))
        XCTAssertEqual(response.peersRemoved, [4, 5])
        let patch = try XCTUnwrap(response.peersChangedPatch?.first)
        XCTAssertEqual(patch.nodeID, 2)
        XCTAssertEqual(patch.derpRegion, 901)
        XCTAssertEqual(patch.online, false)
        XCTAssertEqual(patch.discoKey, GoJSON.discoKey(0x99))
        XCTAssertEqual(patch.endpoints, [AddrPort("203.0.113.9:1234")!])
        XCTAssertEqual(patch.lastSeen?.description, "2026-08-22T10:00:00Z")
        XCTAssertNil(patch.key)
        XCTAssertEqual(response.onlineChange, ["2": true])
        XCTAssertEqual(response.peerSeenChange, ["3": false])
        XCTAssertEqual(response.domain, "tailnet.ts.net")
        XCTAssertEqual(response.collectServices, true)
        XCTAssertNil(response.health, "null is nil")
        XCTAssertEqual(response.userProfiles, [UserProfile(id: 5, loginName: "alice@example.com", displayName: "Alice", profilePicURL: "")])
        XCTAssertEqual(response.clientVersion, .object(["RunningLatest": .bool(true)]))

        let dns = try XCTUnwrap(response.dnsConfig)
        XCTAssertEqual(dns.resolvers?.map(\.addr), ["1.1.1.1", "https://dns.example/dns-query"])
        XCTAssertEqual(dns.resolvers?.last?.bootstrapResolution, [IPAddress("192.0.2.53")!])
        XCTAssertEqual(dns.routes?.count, 3)
        XCTAssertEqual(dns.routes?["corp.example."], .some([DNSResolver(addr: "10.0.0.53")]))
        XCTAssertEqual(dns.routes?["ts.net."], .some(nil))
        XCTAssertEqual(dns.routes?["internal."], .some([]))
        XCTAssertEqual(dns.domains, ["tailnet.ts.net"])
        XCTAssertEqual(dns.proxied, true)
        XCTAssertEqual(dns.extraRecords, [DNSRecord(name: "db.tailnet.ts.net.", value: "100.64.0.9")])

        XCTAssertEqual(response.derpMap?.regions.keys.sorted(), [900, 901])
        XCTAssertEqual(response.packetFilter?.count, 2)
        XCTAssertEqual(response.packetFilters?["base"], .some(response.packetFilter))
        XCTAssertEqual(response.packetFilters?["old"], .some(nil), "null deletes a named filter")

        let ping = try XCTUnwrap(response.pingRequest)
        XCTAssertEqual(ping.url, "https://control.example/ping/1")
        XCTAssertEqual(ping.types, "TSMP")
        XCTAssertEqual(ping.ip, IPAddress("100.64.0.2"))
        XCTAssertEqual(ping.payload, Array("hello".utf8))

        let sshValue = try XCTUnwrap(response.sshPolicy)
        let ssh = try decodeGo(SSHPolicy.self, try encodedText(sshValue))
        XCTAssertEqual(ssh.rules.count, 2)
    }

    func testEncodesGoShapes() throws {
        let response = try decodeGo(MapResponse.self, GoJSON.mapResponse)
        let object = try encodedObject(response)
        XCTAssertEqual(object["ControlTime"] as? String, "2026-08-22T10:11:12.5Z")
        XCTAssertEqual(object["PeersRemoved"] as? [Int], [4, 5])
        XCTAssertEqual((object["Node"] as? [String: Any])?["Key"] as? String, GoJSON.nodeKeyText(0x11))
        XCTAssertEqual(((object["PeersChangedPatch"] as? [[String: Any]])?.first)?["DERPRegion"] as? Int, 901)
        let derp = try XCTUnwrap(object["DERPMap"] as? [String: Any])
        XCTAssertEqual((derp["Regions"] as? [String: Any])?.keys.sorted(), ["900", "901"])
        let packetFilters = try XCTUnwrap(object["PacketFilters"] as? [String: Any])
        XCTAssertTrue(packetFilters["old"] is NSNull, "a deleted named filter stays null on the wire")
        let routes = try XCTUnwrap((object["DNSConfig"] as? [String: Any])?["Routes"] as? [String: Any])
        XCTAssertTrue(routes["ts.net."] is NSNull)
        XCTAssertEqual((routes["internal."] as? [Any])?.count, 0)
        XCTAssertEqual((object["PingRequest"] as? [String: Any])?["Payload"] as? String, "aGVsbG8=")
        XCTAssertNil(object["SomethingNew"])
        XCTAssertNil(object["Health"])
        XCTAssertEqual(try decodeGo(MapResponse.self, try encodedText(response)), response)
    }

    func testKeepAliveMessageAndOmitEmpty() throws {
        XCTAssertEqual(try encodedText(MapResponse.keepAliveMessage), #"{"KeepAlive":true}"#)
        XCTAssertEqual(try encodedText(MapResponse()), "{}")
        let decoded = try decodeGo(MapResponse.self, #"{"KeepAlive":true}"#)
        XCTAssertEqual(decoded, .keepAliveMessage)
    }

    func testPacketFilterNilVersusEmpty() throws {
        // Nil: unchanged (omitted). Empty: block everything (sent as []).
        var response = MapResponse()
        XCTAssertNil(try encodedObject(response)["PacketFilter"])
        response.packetFilter = []
        XCTAssertEqual((try encodedObject(response)["PacketFilter"] as? [Any])?.count, 0)
        XCTAssertEqual(try decodeGo(MapResponse.self, #"{"PacketFilter":[]}"#).packetFilter, [])
        XCTAssertNil(try decodeGo(MapResponse.self, #"{"PacketFilter":null}"#).packetFilter)
    }

    func testPingRequestRejectsBadBase64() {
        XCTAssertThrowsError(try decodeGo(PingRequest.self, #"{"URL":"u","Payload":"not base64!"}"#))
        XCTAssertThrowsError(try decodeGo(PingRequest.self, #"{"URL":"u","Payload":"aGVsbG8"}"#))
        XCTAssertEqual(try decodeGo(PingRequest.self, #"{"URL":"u","Payload":""}"#).payload, [])
        XCTAssertEqual(try decodeGo(PingRequest.self, #"{"URL":"u","Payload":"aA=="}"#).payload, [0x68])
        XCTAssertEqual(try decodeGo(PingRequest.self, #"{"URL":"u","Payload":"aGk="}"#).payload, Array("hi".utf8))
        XCTAssertEqual(try decodeGo(PingRequest.self, "{}").url, "")
    }

    func testBase64MatchesFoundation() {
        var generator = SplitMix(seed: 7)
        for length in 0..<64 {
            let bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            let ours = Base64.encode(bytes)
            XCTAssertEqual(ours, Data(bytes).base64EncodedString())
            XCTAssertEqual(Base64.decode(ours), bytes)
        }
    }
}

final class DERPMapTests: XCTestCase {
    func testDecodesGoDERPMap() throws {
        let map = try decodeGo(DERPMap.self, GoJSON.derpMap)
        XCTAssertEqual(map.omitDefaultRegions, true)
        XCTAssertEqual(map.homeParams?.regionScore, [900: 0.8])
        let home = try XCTUnwrap(map.regions[900])
        XCTAssertEqual(home.regionID, 900)
        XCTAssertEqual(home.regionCode, "home")
        XCTAssertEqual(home.regionName, "Home relay")
        XCTAssertEqual(home.latitude, 48.1)
        let node = try XCTUnwrap(home.nodes?.first)
        XCTAssertEqual(node.name, "900a")
        XCTAssertEqual(node.hostName, "derp.example.net")
        XCTAssertEqual(node.ipv4, "192.0.2.10")
        XCTAssertEqual(node.ipv6, "2001:db8::10")
        XCTAssertEqual(node.stunPort, 3478)
        XCTAssertEqual(node.derpPort, 443)
        XCTAssertEqual(node.canPort80, true)
        XCTAssertEqual(node.certName, "sha256-raw:" + GoJSON.hex(0xab))
        let stun = try XCTUnwrap(map.regions[901])
        XCTAssertEqual(stun.avoid, true)
        XCTAssertEqual(stun.nodes?.first?.stunOnly, true)
        XCTAssertEqual(stun.nodes?.first?.stunPort, -1)
        XCTAssertEqual(stun.nodes?.first?.ipv4, "none")
    }

    func testEncodesRegionsAsDecimalKeyedObject() throws {
        var region = DERPRegion(regionID: 999, regionCode: "warren", regionName: "Warren", nodes: [
            DERPNode(name: "999a", regionID: 999, hostName: "127.0.0.1"),
        ])
        region.nodes?[0].insecureForTests = true
        region.nodes?[0].stunTestIP = "127.0.0.1"
        var map = DERPMap(regions: [999: region])
        let object = try encodedObject(map)
        let regions = try XCTUnwrap(object["Regions"] as? [String: Any])
        XCTAssertEqual(Array(regions.keys), ["999"])
        let regionObject = try XCTUnwrap(regions["999"] as? [String: Any])
        XCTAssertEqual(regionObject["RegionID"] as? Int, 999)
        XCTAssertEqual(regionObject["RegionCode"] as? String, "warren")
        let nodeObject = try XCTUnwrap((regionObject["Nodes"] as? [[String: Any]])?.first)
        XCTAssertEqual(nodeObject["HostName"] as? String, "127.0.0.1")
        XCTAssertEqual(nodeObject["InsecureForTests"] as? Bool, true)
        XCTAssertEqual(nodeObject["STUNTestIP"] as? String, "127.0.0.1")
        XCTAssertNil(nodeObject["STUNPort"], "omitempty")
        XCTAssertNil(object["omitDefaultRegions"], "false is omitted")
        XCTAssertNil(object["HomeParams"])
        map.omitDefaultRegions = true
        XCTAssertEqual(try encodedObject(map)["omitDefaultRegions"] as? Bool, true)
        XCTAssertEqual(try decodeGo(DERPMap.self, try encodedText(map)), map)
        // The whole Go document round-trips.
        let full = try decodeGo(DERPMap.self, GoJSON.derpMap)
        XCTAssertEqual(try decodeGo(DERPMap.self, try encodedText(full)), full)
        XCTAssertEqual((try encodedObject(full)["HomeParams"] as? [String: Any])?["RegionScore"] as? [String: Double], ["900": 0.8])
    }

    func testLenientAndStrictParts() throws {
        XCTAssertEqual(try decodeGo(DERPMap.self, "{}").regions, [:])
        XCTAssertEqual(try decodeGo(DERPMap.self, #"{"Regions":null}"#).regions, [:])
        XCTAssertThrowsError(try decodeGo(DERPMap.self, #"{"Regions":{"abc":{"RegionID":1,"RegionCode":"a","RegionName":"a"}}}"#))
        XCTAssertThrowsError(try decodeGo(DERPMap.self, #"{"HomeParams":{"RegionScore":{"x":1}}}"#))
    }
}

final class FilterRuleTests: XCTestCase {
    func testDecodesGoPacketFilter() throws {
        let rules = try decodeGo([FilterRule].self, GoJSON.packetFilter)
        XCTAssertEqual(rules.count, 2)
        XCTAssertEqual(rules[0].srcIPs, ["100.64.0.1", "100.64.0.0/10", "*"])
        XCTAssertEqual(rules[0].dstPorts, [
            NetPortRange(ip: "100.64.0.2", ports: PortRange(first: 22, last: 22)),
            NetPortRange(ip: "*", ports: .all),
            NetPortRange(ip: "10.2.0.0/16", ports: PortRange(first: 80, last: 443)),
        ])
        XCTAssertEqual(rules[0].ipProto, [6, 17])
        XCTAssertNil(rules[0].capGrant)
        XCTAssertNil(rules[1].dstPorts)
        let grant = try XCTUnwrap(rules[1].capGrant?.first)
        XCTAssertEqual(grant.dsts, ["100.64.0.2/32"])
        XCTAssertEqual(grant.capMap?["tailscale.com/cap/drive"],
                       [.object(["shares": .array([.string("*")]), "access": .string("rw")])])
    }

    func testEncodesGoFieldNamesAndOmitsEmpty() throws {
        let rule = FilterRule(srcIPs: ["*"], dstPorts: [NetPortRange(ip: "*", ports: .all)])
        XCTAssertEqual(try encodedText(rule),
                       #"{"DstPorts":[{"IP":"*","Ports":{"First":0,"Last":65535}}],"SrcIPs":["*"]}"#)
        let rules = try decodeGo([FilterRule].self, GoJSON.packetFilter)
        XCTAssertEqual(try decodeGo([FilterRule].self, try encodedText(rules)), rules)
    }

    func testJSONValueKeepsTypes() throws {
        let values = try decodeGo([JSONValue].self, #"[true,false,1,2.5,"s",null,[],{},{"k":[1,"x"]}]"#)
        XCTAssertEqual(values, [.bool(true), .bool(false), .number(1), .number(2.5), .string("s"), .null,
                                .array([]), .object([:]), .object(["k": .array([.number(1), .string("x")])])])
        XCTAssertEqual(try decodeGo([JSONValue].self, try encodedText(values)), values)
    }
}

final class SSHPolicyTests: XCTestCase {
    func testDecodesGoSSHPolicy() throws {
        let policy = try decodeGo(SSHPolicy.self, GoJSON.sshPolicy)
        XCTAssertEqual(policy.rules.count, 2)
        let first = policy.rules[0]
        XCTAssertEqual(first.principals, [SSHPrincipal(nodeIP: "100.64.0.1"), SSHPrincipal(any: true)])
        XCTAssertEqual(first.sshUsers, ["*": "=", "root": ""])
        XCTAssertEqual(first.action?.accept, true)
        XCTAssertEqual(first.action?.sessionDuration, 3_600_000_000_000, "time.Duration in nanoseconds")
        XCTAssertEqual(first.action?.allowAgentForwarding, true)
        let second = policy.rules[1]
        XCTAssertEqual(second.principals.first?.userLogin, "alice@example.com")
        XCTAssertEqual(second.action?.reject, true)
        XCTAssertEqual(second.action?.message, "denied")
        XCTAssertEqual(second.acceptEnv, ["GIT_*"])
    }

    func testRuleExpiresIsAGoTime() throws {
        let text = #"{"rules":[{"ruleExpires":"2027-01-01T00:00:00.25Z","principals":[{"any":true}],"sshUsers":{"*":"="},"action":{"accept":true}}]}"#
        let policy = try decodeGo(SSHPolicy.self, text)
        XCTAssertEqual(policy.rules.first?.ruleExpires, TailcfgTime(rfc3339: "2027-01-01T00:00:00.25Z"))
        XCTAssertTrue(try encodedText(policy).contains(#""ruleExpires":"2027-01-01T00:00:00.25Z""#))
        XCTAssertThrowsError(try decodeGo(SSHPolicy.self, text.replacingOccurrences(of: "2027-01-01T00:00:00.25Z", with: "1798761600")))
    }

    func testEncodesGoLowerCaseNames() throws {
        let policy = SSHPolicy(rules: [SSHRule(principals: [SSHPrincipal(node: "nStable1")], sshUsers: ["ubuntu": "ubuntu"],
                                               action: SSHAction(accept: true))])
        XCTAssertEqual(try encodedText(policy),
                       #"{"rules":[{"action":{"accept":true},"principals":[{"node":"nStable1"}],"sshUsers":{"ubuntu":"ubuntu"}}]}"#)
        let decoded = try decodeGo(SSHPolicy.self, GoJSON.sshPolicy)
        XCTAssertEqual(try decodeGo(SSHPolicy.self, try encodedText(decoded)), decoded)
    }
}
