// Two WireGuard devices over magicsock, in one process: UDP through in-memory binds on one
// MemoryNetwork, DERP through a real relay on loopback (TLS with a pinned self-signed certificate,
// as warren-control's embedded relay). The first packets cross DERP, disco finds the direct path,
// data moves to it; when the direct path dies, traffic falls back to DERP, and comes back direct.

import DiscoProtocol
import Foundation
import Logging
import NIOCore
import NIOPosix
import TailscaleKeys
import WarrenDERPServer
import WarrenDERPTransport
import WarrenMagicsock
import WarrenPacket
import WarrenTailcfg
import WireGuardDevice
import WireGuardProtocol
import XCTest

final class MagicsockPairTests: XCTestCase {
    struct Side {
        let nodeKey: NodePrivate
        let disco: DiscoPrivate
        let bind: MemoryBind
        let magic: Magicsock
        let tun: MemoryTUN
        let device: WireGuardDevice
        let address: IPAddress
        var timers: Task<Void, Never>?
    }

    static func relay() async throws -> (DERPListener, DERPMap) {
        var rng = SystemRandomNumberGenerator()
        let certificate = try DERPCertificate.selfSigned(hostnames: ["127.0.0.1"])
        var logger = Logger(label: "test.derp")
        logger.logLevel = .error
        let server = DERPServer(configuration: DERPServerConfiguration(privateKey: .generate(using: &rng), logger: logger))
        let listener = try DERPListener(server: server, host: "127.0.0.1", port: 0,
                                        tlsConfiguration: try certificate.serverTLSConfiguration())
        let bound = try await listener.bind()
        var node = DERPNode(name: "900a", regionID: 900, hostName: "127.0.0.1")
        node.ipv4 = "127.0.0.1"
        node.derpPort = bound.port
        node.stunPort = -1
        node.certName = certificate.pin
        let region = DERPRegion(regionID: 900, regionCode: "test", regionName: "Test", nodes: [node])
        return (listener, DERPMap(regions: [900: region]))
    }

    static func side(_ network: MemoryNetwork, _ host: String, tunnelAddress: String, map: DERPMap) throws -> Side {
        var rng = SystemRandomNumberGenerator()
        let nodeKey = NodePrivate.generate(using: &rng)
        let disco = DiscoPrivate.generate(using: &rng)
        let address = IPAddress(host)!
        let bind = MemoryBind(network: network, address: address)
        var logger = Logger(label: "test.magicsock.\(host)")
        logger.logLevel = ProcessInfo.processInfo.environment["WARREN_TEST_LOG"] == "debug" ? .trace : .warning
        let magic = Magicsock(inner: bind, nodeKey: nodeKey, discoKey: disco,
                              configuration: .init(port: 0, localAddresses: { [bind] in [bind.address.withLock { $0 }] }, stun: false,
                                                   tickInterval: .milliseconds(200)),
                              logger: logger)
        magic.setDERPMap(map)
        let tun = MemoryTUN(name: "mem-\(host)")
        let device = WireGuardDevice(tun: tun, bind: magic)
        try device.configure { c in c.setPrivateKey(try WireGuardPrivateKey(rawRepresentation: nodeKey.rawRepresentation)) }
        try device.start()
        return Side(nodeKey: nodeKey, disco: disco, bind: bind, magic: magic, tun: tun, device: device,
                    address: IPAddress(tunnelAddress)!)
    }

    static func stop(_ sides: [Side], _ listener: DERPListener) {
        for s in sides {
            s.timers?.cancel()
            s.device.stop()
            s.device.waitUntilStopped()
            s.magic.shutdown()
        }
        Task { try? await listener.close() }
    }

    static func connect(_ a: Side, to b: Side) throws {
        let peer = MagicPeer(nodeKey: b.nodeKey.publicKey, discoKey: b.disco.publicKey, homeDERP: 900,
                             endpoints: b.bind.localEndpoint.map { [AddrPort(address: $0.address, port: $0.port)] } ?? [])
        let handles = a.magic.setPeers([peer])
        let key = try WireGuardPublicKey(rawRepresentation: b.nodeKey.publicKey.rawRepresentation)
        a.device.configure { c in
            _ = c.addPeer(key)
            c.setEndpoint(handles[b.nodeKey.publicKey]!, of: key)
            c.addAllowedIP(IPPrefix(host: b.address), to: key)
        }
    }

    static func packet(from a: Side, to b: Side, _ n: UInt8) -> [UInt8] {
        PacketBuilder.udp(src: a.address, dst: b.address, srcPort: 4000, dstPort: 5000, payload: [n, n, n])
    }

    /// Waits until both sides are connected to their home relay (the relay drops packets for a node
    /// that is not connected yet, as Tailscale's does).
    func waitForRelay(_ sides: Side...) {
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline && !sides.allSatisfy({ $0.magic.connectedDERPRegions == [900] }) { usleep(20_000) }
        XCTAssertTrue(sides.allSatisfy { $0.magic.connectedDERPRegions == [900] }, "not connected to the relay")
    }

    /// Sends packets from a to b until one arrives, up to `attempts` tries.
    func deliver(from a: Side, to b: Side, attempts: Int = 50) -> Bool {
        for i in 0..<attempts {
            a.tun.inject(Self.packet(from: a, to: b, UInt8(truncatingIfNeeded: i)))
            if b.tun.nextWritten(timeout: .milliseconds(100)) != nil { return true }
        }
        return false
    }

    /// Keeps traffic flowing until `condition` holds (or `seconds` pass).
    func pump(_ a: Side, _ b: Side, seconds: Double, until condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        var i: UInt8 = 0
        while Date() < deadline {
            if condition() { return true }
            a.tun.inject(Self.packet(from: a, to: b, i))
            b.tun.inject(Self.packet(from: b, to: a, i))
            _ = b.tun.nextWritten(timeout: .milliseconds(50))
            _ = a.tun.nextWritten(timeout: .milliseconds(50))
            i &+= 1
        }
        return condition()
    }

    func testFirstPacketOverDERPThenDirectThenBackToDERPWhenTheDirectPathDies() async throws {
        let (listener, map) = try await Self.relay()
        let network = MemoryNetwork()
        var a = try Self.side(network, "10.1.0.1", tunnelAddress: "100.64.0.1", map: map)
        var b = try Self.side(network, "10.1.0.2", tunnelAddress: "100.64.0.2", map: map)
        let magicA = a.magic, magicB = b.magic
        a.timers = Task { await magicA.run() }
        b.timers = Task { await magicB.run() }
        defer { Self.stop([a, b], listener) }
        try Self.connect(a, to: b)
        try Self.connect(b, to: a)
        waitForRelay(a, b)

        // With the direct path broken from the start, the first packets can only cross the relay;
        // the first one gets through (the handshake goes over DERP at once).
        a.bind.failsSends.store(true, ordering: .relaxed)
        b.bind.failsSends.store(true, ordering: .relaxed)
        XCTAssertTrue(deliver(from: a, to: b, attempts: 10), "no packet crossed DERP within a second")
        XCTAssertNil(a.magic.status(of: b.nodeKey.publicKey)?.currentAddress)

        // Once UDP works, disco finds the direct path and data moves to it.
        a.bind.failsSends.store(false, ordering: .relaxed)
        b.bind.failsSends.store(false, ordering: .relaxed)
        let direct = pump(a, b, seconds: 15) {
            a.magic.status(of: b.nodeKey.publicKey)?.currentAddress != nil
                && b.magic.status(of: a.nodeKey.publicKey)?.currentAddress != nil
        }
        XCTAssertTrue(direct, "no direct path after 15 s")
        XCTAssertEqual(a.magic.status(of: b.nodeKey.publicKey)?.currentAddress,
                       b.bind.localEndpoint.map { AddrPort(address: $0.address, port: $0.port) })

        // The direct path dies: traffic keeps flowing (over DERP) and the path is no longer trusted.
        a.bind.failsSends.store(true, ordering: .relaxed)
        b.bind.failsSends.store(true, ordering: .relaxed)
        let fellBack = pump(a, b, seconds: 15) { a.magic.status(of: b.nodeKey.publicKey)?.currentAddress == nil }
        XCTAssertTrue(fellBack, "still claims a direct path that cannot work")
        XCTAssertTrue(deliver(from: a, to: b), "no packet crossed DERP after the direct path died")
        XCTAssertTrue(deliver(from: b, to: a), "no packet crossed DERP after the direct path died")

        // And it comes back.
        a.bind.failsSends.store(false, ordering: .relaxed)
        b.bind.failsSends.store(false, ordering: .relaxed)
        XCTAssertTrue(pump(a, b, seconds: 15) { a.magic.status(of: b.nodeKey.publicKey)?.currentAddress != nil },
                      "the direct path did not come back")
        _ = a
        _ = b
        a.timers = nil
        b.timers = nil
    }

    func testUserPingReportsDERPOrDirect() async throws {
        let (listener, map) = try await Self.relay()
        let network = MemoryNetwork()
        let a = try Self.side(network, "10.2.0.1", tunnelAddress: "100.64.1.1", map: map)
        let b = try Self.side(network, "10.2.0.2", tunnelAddress: "100.64.1.2", map: map)
        defer { Self.stop([a, b], listener) }
        try Self.connect(a, to: b)
        try Self.connect(b, to: a)
        waitForRelay(a, b)
        // Only DERP works: the pong comes over the relay.
        a.bind.failsSends.store(true, ordering: .relaxed)
        var viaDERP: DiscoPingResult?
        for _ in 0..<10 where viaDERP == nil { viaDERP = await a.magic.ping(b.nodeKey.publicKey, timeout: .seconds(2)) }
        XCTAssertEqual(viaDERP?.derpRegion, 900)
        XCTAssertNil(viaDERP?.endpoint)
        // With UDP, some pong comes straight from b's address.
        a.bind.failsSends.store(false, ordering: .relaxed)
        var direct: DiscoPingResult?
        for _ in 0..<20 where direct?.endpoint == nil {
            direct = await a.magic.ping(b.nodeKey.publicKey, timeout: .seconds(2))
        }
        XCTAssertEqual(direct?.endpoint, b.bind.localEndpoint.map { AddrPort(address: $0.address, port: $0.port) })
        // A key that is not a peer gets no answer at all.
        var rng = SystemRandomNumberGenerator()
        let stranger = await a.magic.ping(NodePrivate.generate(using: &rng).publicKey, timeout: .milliseconds(200))
        XCTAssertNil(stranger)
    }
    /// Control tells the two sides of a new pair a moment apart: the first handshake reaches a peer that
    /// does not know us yet. It is held and replayed (and re-sent) instead of waiting for WireGuard's 5 s retry.
    func testAPeerThatLearnsOfUsLateStillGetsTheFirstHandshake() async throws {
        let (listener, map) = try await Self.relay()
        let network = MemoryNetwork()
        let a = try Self.side(network, "10.4.0.1", tunnelAddress: "100.64.4.1", map: map)
        let b = try Self.side(network, "10.4.0.2", tunnelAddress: "100.64.4.2", map: map)
        defer { Self.stop([a, b], listener) }
        a.bind.failsSends.store(true, ordering: .relaxed)
        b.bind.failsSends.store(true, ordering: .relaxed)
        waitForRelay(a, b)
        try Self.connect(a, to: b)
        a.tun.inject(Self.packet(from: a, to: b, 1))
        usleep(300_000)
        try Self.connect(b, to: a)
        // Well inside WireGuard's own 5 s retry.
        XCTAssertTrue(deliver(from: a, to: b, attempts: 25), "the first handshake waited for WireGuard's retry")
    }
}
