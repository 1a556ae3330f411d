import XCTest
import Foundation
import Synchronization
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

    /// The keypair `device` currently sends with to the peer `key`.
    static func currentKeypair(_ device: WireGuardDevice, _ key: WireGuardPublicKey) -> Keypair? {
        device.state.withLock { $0.peers[key]?.session?.keypairs.current }
    }

    func testIPv6BothWays() throws {
        let pair = try Pair()
        defer { pair.stop() }
        let there = Self.ipv6(from: "fd00::1", to: "fd00::2", payload: Array(repeating: 0xab, count: 1200))
        pair.tunA.inject(there)
        XCTAssertEqual(pair.tunB.nextWritten(), there)
        let back = Self.ipv6(from: "fd00::2", to: "fd00::1", payload: Array(repeating: 0xcd, count: 77))
        pair.tunB.inject(back)
        XCTAssertEqual(pair.tunA.nextWritten(), back)
        // Padding is removed on the way in: the stated length is what arrives.
        let odd = Self.ipv6(from: "fd00::2", to: "fd00::1", payload: [1, 2, 3, 4, 5])
        pair.tunB.inject(odd)
        XCTAssertEqual(pair.tunA.nextWritten()?.count, odd.count)
    }

    func testRekeyKeepsTrafficFlowing() throws {
        let pair = try Pair()
        defer { pair.stop() }
        let p1 = Self.ipv4(from: "10.9.0.1", to: "10.9.0.2", payload: [1])
        pair.tunA.inject(p1)
        XCTAssertEqual(pair.tunB.nextWritten(), p1)
        let keyA = pair.keyA.publicKey, keyB = pair.keyB.publicKey
        let beforeA = try XCTUnwrap(Self.currentKeypair(pair.a, keyB))
        let beforeB = try XCTUnwrap(Self.currentKeypair(pair.b, keyA))
        XCTAssertTrue(beforeA.isInitiator)

        // B starts a new handshake (as REKEY_AFTER_TIME or a key change would) while traffic flows.
        pair.b.initiateHandshake(with: keyA)
        var afterB: Keypair?
        for _ in 0..<300 {
            afterB = Self.currentKeypair(pair.b, keyA)
            if let afterB, afterB !== beforeB { break }
            usleep(10_000)
        }
        let newB = try XCTUnwrap(afterB)
        XCTAssertFalse(newB === beforeB, "B sends with a new keypair")
        XCTAssertTrue(newB.isInitiator)
        for n in 0..<5 {
            let back = Self.ipv4(from: "10.9.0.2", to: "10.9.0.1", payload: [UInt8(n)])
            pair.tunB.inject(back)
            XCTAssertEqual(pair.tunA.nextWritten(), back)
            let p = Self.ipv4(from: "10.9.0.1", to: "10.9.0.2", payload: [UInt8(n)])
            pair.tunA.inject(p)
            XCTAssertEqual(pair.tunB.nextWritten(), p)
        }
        // A confirmed the new session on B's first data packet: it sends with it too, and keeps
        // the old one as `previous` for packets in flight.
        let newA = try XCTUnwrap(Self.currentKeypair(pair.a, keyB))
        XCTAssertEqual(newA.localIndex, newB.remoteIndex)
        XCTAssertEqual(newA.remoteIndex, newB.localIndex)
        pair.a.state.withLock { s in
            XCTAssertTrue(s.peers[keyB]?.session?.keypairs.previous === beforeA)
            XCTAssertNil(s.peers[keyB]?.session?.keypairs.next)
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

    func testUnauthenticatedPacketsDoNotMoveTheEndpoint() throws {
        let pair = try Pair()
        defer { pair.stop() }
        let p1 = Self.ipv4(from: "10.9.0.1", to: "10.9.0.2", payload: [1])
        pair.tunA.inject(p1)
        XCTAssertEqual(pair.tunB.nextWritten(), p1)
        let endpointBefore = pair.b.status().peers[0].endpoint
        // A forged transport message with B's live index, from another address.
        let index = try XCTUnwrap(Self.currentKeypair(pair.b, pair.keyA.publicKey)?.localIndex)
        let forger = MemoryBind(network: pair.network, address: IPAddress("192.0.2.66")!)
        _ = try forger.open(port: 0)
        defer { forger.close() }
        var forged = TransportHeader(receiverIndex: index, counter: 1000).bytes + Array(repeating: 0x11, count: 48)
        forged[20] ^= 1
        let endpointB = WireGuardEndpoint(address: IPAddress("198.51.100.2")!, port: pair.b.listenPort)
        try forged.withUnsafeBytes { try forger.send($0, to: endpointB) }
        let p2 = Self.ipv4(from: "10.9.0.1", to: "10.9.0.2", payload: [2])
        pair.tunA.inject(p2)
        XCTAssertEqual(pair.tunB.nextWritten(), p2)
        XCTAssertEqual(pair.b.status().peers[0].endpoint, endpointBefore)
    }

    func testCookieReplyUnderLoad() throws {
        let pair = try Pair()
        defer { pair.stop() }
        let endpointB = WireGuardEndpoint(address: IPAddress("198.51.100.2")!, port: pair.b.listenPort)
        // A flood of initiations with a valid MAC1 from a bogus source (random contents: no
        // static key of a known peer inside).
        let flooder = MemoryBind(network: pair.network, address: IPAddress("192.0.2.99")!)
        _ = try flooder.open(port: 0)
        defer { flooder.close() }
        var generator = CookieGenerator(remotePublicKey: pair.keyB.publicKey)
        var rng = SystemRandomNumberGenerator()
        func flood(_ n: Int) throws {
            for _ in 0..<n {
                var message = [UInt8](repeating: 0, count: HandshakeInitiation.size)
                message[0] = 1
                for i in 4..<HandshakeInitiation.mac1Offset { message[i] = UInt8.random(in: 0...255, using: &rng) }
                generator.addMACs(to: &message, now: .now)
                try message.withUnsafeBytes { try flooder.send($0, to: endpointB) }
            }
        }
        try flood(WireGuardDeviceConstants.underLoadHandshakesPerSecond * 2)
        let (reply, _) = try XCTUnwrap(flooder.nextReceived(), "the flooder gets cookie replies")
        XCTAssertEqual(reply.count, CookieReply.size)
        XCTAssertEqual(reply[0], 3)

        // Keep B under load while A starts its handshake: A's first initiation gets a cookie
        // reply, its retry (after REKEY_TIMEOUT) carries MAC2 and is answered.
        let stop = Mutex(false)
        let floodThread = Thread {
            var g = CookieGenerator(remotePublicKey: pair.keyB.publicKey)
            var r = SystemRandomNumberGenerator()
            while !stop.withLock({ $0 }) {
                for _ in 0..<WireGuardDeviceConstants.underLoadHandshakesPerSecond / 2 {
                    var message = [UInt8](repeating: 0, count: HandshakeInitiation.size)
                    message[0] = 1
                    for i in 4..<HandshakeInitiation.mac1Offset { message[i] = UInt8.random(in: 0...255, using: &r) }
                    g.addMACs(to: &message, now: .now)
                    try? message.withUnsafeBytes { try flooder.send($0, to: endpointB) }
                }
                usleep(200_000)
            }
        }
        floodThread.start()
        defer { stop.withLock { $0 = true } }
        let packet = Self.ipv4(from: "10.9.0.1", to: "10.9.0.2", payload: [42])
        pair.tunA.inject(packet)
        XCTAssertEqual(pair.tunB.nextWritten(timeout: .seconds(12)), packet, "the handshake completes through the cookie")
        let hasCookie = pair.a.state.withLock { $0.peers[pair.keyB.publicKey]?.session?.cookies.hasFreshCookie(now: .now) }
        XCTAssertEqual(hasCookie, true, "A received and kept B's cookie")
    }

    func testRemovedPeerGetsNothing() throws {
        let pair = try Pair()
        defer { pair.stop() }
        let keyB = pair.keyB.publicKey
        pair.a.configure { $0.removePeer(keyB) }
        pair.tunA.inject(Self.ipv4(from: "10.9.0.1", to: "10.9.0.2", payload: [1]))
        XCTAssertNil(pair.tunB.nextWritten(timeout: .milliseconds(300)))
        XCTAssertTrue(pair.a.status().peers.isEmpty)
        XCTAssertEqual(pair.a.state.withLock { $0.indices.count }, 0)
    }

    func testNewPrivateKeyEndsSessions() throws {
        let pair = try Pair()
        defer { pair.stop() }
        let p1 = Self.ipv4(from: "10.9.0.1", to: "10.9.0.2", payload: [1])
        pair.tunA.inject(p1)
        XCTAssertEqual(pair.tunB.nextWritten(), p1)
        var rng = SystemRandomNumberGenerator()
        let newKey = WireGuardPrivateKey(using: &rng)
        pair.a.configure { $0.setPrivateKey(newKey) }
        XCTAssertNil(Self.currentKeypair(pair.a, pair.keyB.publicKey))
        // B still knows A by its old key: A's initiations are refused now.
        pair.tunA.inject(Self.ipv4(from: "10.9.0.1", to: "10.9.0.2", payload: [2]))
        XCTAssertNil(pair.tunB.nextWritten(timeout: .milliseconds(500)))
        // Once B has A's new key, a handshake (B's, towards A's known endpoint) works again.
        let endpointA = try XCTUnwrap(pair.bindA.localEndpoint)
        let oldA = pair.keyA.publicKey
        pair.b.configure { c in
            c.removePeer(oldA)
            c.addPeer(newKey.publicKey)
            c.setEndpoint(endpointA, of: newKey.publicKey)
            c.addAllowedIP(IPPrefix("10.9.0.1/32")!, to: newKey.publicKey)
        }
        let back = Self.ipv4(from: "10.9.0.2", to: "10.9.0.1", payload: [3])
        pair.tunB.inject(back)
        XCTAssertEqual(pair.tunA.nextWritten(), back)
    }

    func testStagedPacketsAreBounded() throws {
        let pair = try Pair()
        defer { pair.stop() }
        // B is unreachable for A: move B away so that the handshake never completes.
        pair.bindB.move(to: IPAddress("203.0.113.200")!)
        for n in 0..<(WireGuardDeviceConstants.stagedPacketLimit * 3) {
            pair.tunA.inject(Self.ipv4(from: "10.9.0.1", to: "10.9.0.2", payload: [UInt8(n & 0xff)]))
        }
        var staged = 0
        for _ in 0..<200 {
            staged = pair.a.state.withLock { $0.peers[pair.keyB.publicKey]?.staged.count ?? 0 }
            if staged == WireGuardDeviceConstants.stagedPacketLimit { break }
            usleep(10_000)
        }
        XCTAssertEqual(staged, WireGuardDeviceConstants.stagedPacketLimit)
    }

    func testStopEndsTheThreads() throws {
        let pair = try Pair()
        pair.a.stop()
        XCTAssertEqual(pair.a.waitUntilStopped(), .requested)
        pair.b.stop(reason: .interfaceRemoved)
        XCTAssertEqual(pair.b.waitUntilStopped(), .interfaceRemoved)
    }
}
