import XCTest
import WarrenPacket
import WireGuardProtocol
@testable import WireGuardDevice

/// Two devices in one process over the in-memory TUN and bind twins.
final class DeviceTests: XCTestCase {
    struct Pair {
        let network = MemoryNetwork()
        let tunA = MemoryTUN(name: "memA")
        let tunB = MemoryTUN(name: "memB")
        let bindA: MemoryBind
        let bindB: MemoryBind
        let a: WireGuardDevice
        let b: WireGuardDevice
        let keyA: WireGuardPrivateKey
        let keyB: WireGuardPrivateKey

        init(psk: WireGuardPresharedKey = .zero) throws {
            var rng = SystemRandomNumberGenerator()
            keyA = WireGuardPrivateKey(using: &rng)
            keyB = WireGuardPrivateKey(using: &rng)
            bindA = MemoryBind(network: network, address: IPAddress("198.51.100.1")!)
            bindB = MemoryBind(network: network, address: IPAddress("198.51.100.2")!)
            a = WireGuardDevice(tun: tunA, bind: bindA)
            b = WireGuardDevice(tun: tunB, bind: bindB)
            try a.start()
            try b.start()
            let (keyA, keyB) = (keyA, keyB)
            let endpointB = WireGuardEndpoint(address: IPAddress("198.51.100.2")!, port: b.listenPort)
            a.configure { c in
                c.setPrivateKey(keyA)
                c.addPeer(keyB.publicKey)
                c.setPresharedKey(psk, of: keyB.publicKey)
                c.setEndpoint(endpointB, of: keyB.publicKey)
                c.addAllowedIP(IPPrefix("10.9.0.2/32")!, to: keyB.publicKey)
                c.addAllowedIP(IPPrefix("fd00::2/128")!, to: keyB.publicKey)
            }
            b.configure { c in
                c.setPrivateKey(keyB)
                c.addPeer(keyA.publicKey)
                c.setPresharedKey(psk, of: keyA.publicKey)
                c.addAllowedIP(IPPrefix("10.9.0.1/32")!, to: keyA.publicKey)
                c.addAllowedIP(IPPrefix("fd00::1/128")!, to: keyA.publicKey)
            }
        }

        func stop() {
            a.stop()
            b.stop()
            a.waitUntilStopped()
            b.waitUntilStopped()
        }
    }

    /// A minimal IPv4 packet (protocol 253, for experiments) with a payload.
    static func ipv4(from source: String, to destination: String, payload: [UInt8]) -> [UInt8] {
        let total = 20 + payload.count
        var p: [UInt8] = [0x45, 0, UInt8(total >> 8), UInt8(total & 0xff), 0, 1, 0, 0, 64, 253, 0, 0]
        p += IPAddress(source)!.bytes + IPAddress(destination)!.bytes
        return p + payload
    }

    /// A minimal IPv6 packet (next header 253).
    static func ipv6(from source: String, to destination: String, payload: [UInt8]) -> [UInt8] {
        var p: [UInt8] = [0x60, 0, 0, 0, UInt8(payload.count >> 8), UInt8(payload.count & 0xff), 253, 64]
        p += IPAddress(source)!.bytes + IPAddress(destination)!.bytes
        return p + payload
    }

    func testHandshakeAndPacketsBothWays() throws {
        let pair = try Pair()
        defer { pair.stop() }
        let first = Self.ipv4(from: "10.9.0.1", to: "10.9.0.2", payload: Array("hello".utf8))
        pair.tunA.inject(first)
        XCTAssertEqual(pair.tunB.nextWritten(), first, "the packet staged during the handshake arrives")

        let reply = Self.ipv4(from: "10.9.0.2", to: "10.9.0.1", payload: Array("hello back".utf8))
        pair.tunB.inject(reply)
        XCTAssertEqual(pair.tunA.nextWritten(), reply)

        let v6 = Self.ipv6(from: "fd00::1", to: "fd00::2", payload: [1, 2, 3])
        pair.tunA.inject(v6)
        XCTAssertEqual(pair.tunB.nextWritten(), v6)

        // Many packets in a row (batches).
        var sent: [[UInt8]] = []
        for n in 0..<200 {
            let packet = Self.ipv4(from: "10.9.0.2", to: "10.9.0.1", payload: [UInt8(n), UInt8(n >> 8)] + Array(repeating: 7, count: n))
            sent.append(packet)
            pair.tunB.inject(packet)
        }
        for packet in sent { XCTAssertEqual(pair.tunA.nextWritten(), packet) }

        let status = pair.a.status()
        XCTAssertEqual(status.peers.count, 1)
        XCTAssertGreaterThan(status.peers[0].rxBytes, 0)
        XCTAssertGreaterThan(status.peers[0].txBytes, 0)
        XCTAssertGreaterThan(status.peers[0].lastHandshakeSeconds, 0)
        XCTAssertEqual(status.peers[0].allowedIPs, [IPPrefix("10.9.0.2/32")!, IPPrefix("fd00::2/128")!])
        // B learned A's endpoint from the handshake.
        XCTAssertEqual(pair.b.status().peers[0].endpoint, pair.bindA.localEndpoint)
    }

    func testWithPresharedKey() throws {
        var rng = SystemRandomNumberGenerator()
        let pair = try Pair(psk: WireGuardPresharedKey(using: &rng))
        defer { pair.stop() }
        let packet = Self.ipv4(from: "10.9.0.1", to: "10.9.0.2", payload: [9, 9])
        pair.tunA.inject(packet)
        XCTAssertEqual(pair.tunB.nextWritten(), packet)
    }

    func testMismatchedPresharedKeyGetsNoSession() throws {
        let pair = try Pair()
        defer { pair.stop() }
        var rng = SystemRandomNumberGenerator()
        let keyA = pair.keyA.publicKey
        pair.b.configure { $0.setPresharedKey(WireGuardPresharedKey(using: &rng), of: keyA) }
        pair.tunA.inject(Self.ipv4(from: "10.9.0.1", to: "10.9.0.2", payload: [1]))
        XCTAssertNil(pair.tunB.nextWritten(timeout: .milliseconds(500)))
        XCTAssertEqual(pair.a.status().peers[0].lastHandshakeSeconds, 0)
    }

    func testPacketsOutsideAllowedIPsAreDropped() throws {
        let pair = try Pair()
        defer { pair.stop() }
        pair.tunA.inject(Self.ipv4(from: "10.9.0.1", to: "10.9.0.2", payload: [1]))
        XCTAssertNotNil(pair.tunB.nextWritten())
        // A routes 10.9.0.2 to B, but claims a source B does not allow for A: B drops it.
        pair.tunA.inject(Self.ipv4(from: "10.9.9.9", to: "10.9.0.2", payload: [2]))
        // No peer for this destination at A: never sent.
        pair.tunA.inject(Self.ipv4(from: "10.9.0.1", to: "10.9.7.7", payload: [3]))
        let good = Self.ipv4(from: "10.9.0.1", to: "10.9.0.2", payload: [4])
        pair.tunA.inject(good)
        XCTAssertEqual(pair.tunB.nextWritten(), good, "only the packet with an allowed source arrives")
    }

    func testRekeyKeepsTrafficFlowing() throws {
        let pair = try Pair()
        defer { pair.stop() }
        let p1 = Self.ipv4(from: "10.9.0.1", to: "10.9.0.2", payload: [1])
        pair.tunA.inject(p1)
        XCTAssertEqual(pair.tunB.nextWritten(), p1)
        let peerAtA = try XCTUnwrap(pair.a.state.withLock { $0.peers[pair.keyB.publicKey] })
        let before = try XCTUnwrap(pair.a.state.withLock { _ in peerAtA.current })

        // A new handshake (what REKEY_AFTER_TIME triggers), then traffic on the new session.
        pair.a.initiateHandshake(peerAtA, retransmit: true)
        var after: Keypair?
        for _ in 0..<100 {
            after = pair.a.state.withLock { _ in peerAtA.current }
            if let after, after !== before { break }
            usleep(10_000)
        }
        XCTAssertFalse(after === before, "a new keypair is in use")
        for n in 0..<5 {
            let p = Self.ipv4(from: "10.9.0.1", to: "10.9.0.2", payload: [UInt8(n)])
            pair.tunA.inject(p)
            XCTAssertEqual(pair.tunB.nextWritten(), p)
            let back = Self.ipv4(from: "10.9.0.2", to: "10.9.0.1", payload: [UInt8(n)])
            pair.tunB.inject(back)
            XCTAssertEqual(pair.tunA.nextWritten(), back)
        }
        // B confirmed the new session and moved the old one to `previous`.
        let peerAtB = try XCTUnwrap(pair.b.state.withLock { $0.peers[pair.keyA.publicKey] })
        pair.b.state.withLock { _ in
            XCTAssertEqual(peerAtB.current?.localIndex, after?.remoteIndex)
            XCTAssertNil(peerAtB.next)
        }
    }

    func testRoamingUpdatesTheEndpoint() throws {
        let pair = try Pair()
        defer { pair.stop() }
        let p1 = Self.ipv4(from: "10.9.0.1", to: "10.9.0.2", payload: [1])
        pair.tunA.inject(p1)
        XCTAssertEqual(pair.tunB.nextWritten(), p1)

        pair.bindA.move(to: IPAddress("203.0.113.7")!)
        let p2 = Self.ipv4(from: "10.9.0.1", to: "10.9.0.2", payload: [2])
        pair.tunA.inject(p2)
        XCTAssertEqual(pair.tunB.nextWritten(), p2)
        XCTAssertEqual(pair.b.status().peers[0].endpoint?.address, IPAddress("203.0.113.7")!)
        let back = Self.ipv4(from: "10.9.0.2", to: "10.9.0.1", payload: [3])
        pair.tunB.inject(back)
        XCTAssertEqual(pair.tunA.nextWritten(), back, "the reply reaches A at its new address")
    }

    func testRemovedPeerGetsNothing() throws {
        let pair = try Pair()
        defer { pair.stop() }
        let keyB = pair.keyB.publicKey
        pair.a.configure { $0.removePeer(keyB) }
        pair.tunA.inject(Self.ipv4(from: "10.9.0.1", to: "10.9.0.2", payload: [1]))
        XCTAssertNil(pair.tunB.nextWritten(timeout: .milliseconds(300)))
        XCTAssertTrue(pair.a.status().peers.isEmpty)
        XCTAssertTrue(pair.a.state.withLock { $0.indices.isEmpty })
    }

    func testStopEndsTheThreads() throws {
        let pair = try Pair()
        pair.a.stop()
        XCTAssertEqual(pair.a.waitUntilStopped(), .requested)
        pair.b.stop(reason: .interfaceRemoved)
        XCTAssertEqual(pair.b.waitUntilStopped(), .interfaceRemoved)
    }

    func testTimersRetransmitAndKeepalive() {
        var timers = PeerTimers()
        let t0 = ContinuousClock.now
        timers.handshakeInitiated(now: t0, jitter: .zero)
        XCTAssertEqual(timers.expired(now: t0 + .seconds(4)), [])
        XCTAssertEqual(timers.expired(now: t0 + .seconds(5)), [.retransmitHandshake])
        timers.handshakeComplete()
        XCTAssertNil(timers.nextDeadline)
        timers.dataReceived(now: t0)
        XCTAssertEqual(timers.expired(now: t0 + .seconds(10)), [.sendKeepalive])
        timers.dataSent(now: t0, jitter: .zero)
        XCTAssertEqual(timers.expired(now: t0 + .seconds(15)), [.newHandshake])
        timers.dataSent(now: t0, jitter: .zero)
        timers.anyAuthenticatedPacketReceived()
        XCTAssertEqual(timers.expired(now: t0 + .seconds(20)), [], "a reply cancels the new-handshake timer")
        timers.setPersistentKeepalive(25, now: t0)
        XCTAssertEqual(timers.expired(now: t0 + .seconds(25)), [.persistentKeepalive])
        // Giving up after the maximum number of attempts.
        var t = t0
        var last: PeerTimers.Actions = []
        for _ in 0...PeerTimers.maximumHandshakeAttempts {
            timers.handshakeInitiated(now: t, jitter: .zero)
            t = t + .seconds(5)
            last = timers.expired(now: t)
        }
        XCTAssertTrue(last.contains(.giveUpHandshake))
    }
}
