// A whole tailnet in one process: warren-control's engine and ts2021 server on loopback, a DERP relay
// on loopback (TLS, pinned in the DERP map as warren-control pins its embedded relay), and nodes
// (WarrenNode) whose TUN devices and UDP sockets are in-memory twins on one MemoryNetwork.

import Foundation
import Logging
import NIOCore
import TailscaleKeys
import WarrenControlServer
import WarrenControlStore
import WarrenDERPServer
import WarrenDERPTransport
import WarrenLocalAPI
import WarrenNetMap
import WarrenNode
import WarrenPacket
import WarrenPolicy
import WarrenTailcfg
import WireGuardDevice
import XCTest

final class InProcessTailnet: @unchecked Sendable {
    let store = MemoryControlStore()
    let engine: ControlEngine
    let server: ControlHTTPServer
    let relay: DERPListener
    let network = MemoryNetwork()
    let serverURL: String
    let directory: String
    var nodes: [TestNode] = []
    var policy: CompiledPolicy

    struct TestNode {
        let node: WarrenNode
        let tun: MemoryTUN
        let bind: MemoryBind
        let router: MemoryRouter
        let name: String
    }

    static func logger(_ label: String) -> Logger {
        var logger = Logger(label: label)
        logger.logLevel = Logger.Level(rawValue: ProcessInfo.processInfo.environment["WARREN_TEST_LOG"] ?? "") ?? .error
        return logger
    }

    init(policy policyText: String? = nil) async throws {
        directory = NSTemporaryDirectory() + "warren-inproc-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var rng = SystemRandomNumberGenerator()
        // The relay.
        let certificate = try DERPCertificate.selfSigned(hostnames: ["127.0.0.1"])
        let derpServer = DERPServer(configuration: DERPServerConfiguration(privateKey: .generate(using: &rng),
                                                                             logger: Self.logger("derp")))
        relay = try DERPListener(server: derpServer, host: "127.0.0.1", port: 0,
                                 tlsConfiguration: try certificate.serverTLSConfiguration())
        let bound = try await relay.bind()
        var derpNode = DERPNode(name: "900a", regionID: 900, hostName: "127.0.0.1")
        derpNode.ipv4 = "127.0.0.1"
        derpNode.derpPort = bound.port
        derpNode.stunPort = -1
        derpNode.certName = certificate.pin
        // The control server.
        var configuration = ControlConfiguration(serverURL: "http://127.0.0.1:0")
        configuration.baseDomain = "lab.warren"
        configuration.derpMap = DERPMap(regions: [900: DERPRegion(regionID: 900, regionCode: "lab", regionName: "Lab",
                                                                  nodes: [derpNode])])
        let directory = try StoreDirectory(store: store, ipv4Prefix: configuration.ipv4Prefix, ipv6Prefix: configuration.ipv6Prefix)
        policy = CompiledPolicy(policy: try policyText.map { try PolicyParser.parse($0) })
        engine = ControlEngine(configuration: configuration, directory: directory, policy: policy, logger: Self.logger("control"))
        try await engine.load()
        server = try await ControlHTTPServer.start(engine: engine, controlKey: .generate(using: &rng),
                                                   options: ControlServerOptions(host: "127.0.0.1", port: 0),
                                                   logger: Self.logger("control"))
        serverURL = "http://127.0.0.1:\(server.port!)"
        await engine.setServerURL(serverURL)
    }

    func preAuthKey(user: String = "alice@example.com", options: PreAuthKeyOptions = PreAuthKeyOptions(reusable: true)) async throws -> String {
        try await store.transaction { tx in
            let owner = try tx.user(named: user) ?? tx.createUser(name: user, now: Date())
            var generator = SystemRandomNumberGenerator()
            return try tx.createPreAuthKey(userID: owner.id, options: options, now: Date(), generator: &generator).text
        }
    }

    /// A node with its own state directory (kept across `restart`) on address `host`.
    func makeNode(_ name: String, host: String, stateDirectory: String? = nil) async throws -> TestNode {
        let tunBox = TUNBox()
        let bind = MemoryBind(network: network, address: IPAddress(host)!)
        let router = MemoryRouter()
        var options = NodeOptions(stateDirectory: stateDirectory ?? "\(directory)/\(name)")
        options.port = 0
        options.makeTUN = { name, mtu in tunBox.make(name: name, mtu: mtu) }
        options.makeBind = { bind }
        options.router = router
        options.localAddresses = { [bind] in [bind.address.withLock { $0 }] }
        options.stun = false
        options.magicsockTick = .milliseconds(250)
        options.upTimeout = .seconds(30)
        let node = try WarrenNode(options: options, logger: Self.logger("node.\(name)"))
        try await node.start()
        let made = TestNode(node: node, tun: tunBox.tun!, bind: bind, router: router, name: name)
        nodes.append(made)
        return made
    }

    func up(_ n: TestNode, authKey: String?, hostname: String? = nil, shieldsUp: Bool = false) async throws -> UpResponse {
        try await n.node.up(UpRequest(loginServer: serverURL, authKey: authKey, hostname: hostname ?? n.name, shieldsUp: shieldsUp))
    }

    func close() async {
        for n in nodes { await n.node.shutdown() }
        await server.close()
        try? await relay.close()
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// The node's own IPv4 address.
    static func ipv4(_ n: TestNode) async -> IPAddress? {
        await n.node.currentNetworkMap.selfNode?.addresses?.first { $0.address.version == .v4 }?.address
    }

    /// Waits (polling) until `condition` holds, up to `seconds`.
    static func eventually(_ seconds: Double = 15, _ condition: () async -> Bool) async -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if await condition() { return true }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return await condition()
    }

    /// Sends UDP packets from a to b's tailnet address until one arrives (up to `attempts`), on the
    /// given port. Returns the delivered packet.
    static func deliver(from a: TestNode, to b: TestNode, proto: IPProtocol = .udp, port: UInt16 = 5000,
                        attempts: Int = 40) async -> [UInt8]? {
        guard let src = await ipv4(a), let dst = await ipv4(b) else { return nil }
        // Whatever an earlier call left behind (a late duplicate) does not count.
        while b.tun.nextWritten(timeout: .milliseconds(1)) != nil {}
        for i in 0..<attempts {
            let packet: [UInt8]
            if proto == .tcp {
                packet = PacketBuilder.tcp(src: src, dst: dst, srcPort: 40000 + UInt16(i), dstPort: port, flags: [.syn], payload: [])
            } else {
                packet = PacketBuilder.udp(src: src, dst: dst, srcPort: 4000, dstPort: port, payload: Array("hello \(i)".utf8))
            }
            a.tun.inject(packet)
            while let got = b.tun.nextWritten(timeout: .milliseconds(100)) {
                if let summary = PacketSummary(parsing: got), summary.dst == dst, summary.dstPort == port { return got }
            }
        }
        return nil
    }
}

/// Hands the MemoryTUN a node creates back to the test.
final class TUNBox: @unchecked Sendable {
    var tun: MemoryTUN?
    func make(name: String, mtu: Int) -> any TunnelInterface {
        let t = MemoryTUN(name: name, mtu: mtu)
        tun = t
        return t
    }
}
