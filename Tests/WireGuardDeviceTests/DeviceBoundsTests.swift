// The device's bounds under a handshake flood (docs/limits.md, warren-wireguard): the handshake queue never holds
// more than `handshakeQueueLimit` messages (the excess is dropped at the receive path, cheaply), drains once the
// flood stops, and a real peer still completes its handshake through the flood. Staged packets per peer and the
// cookie reply under load are tested in DeviceTests.

import Foundation
import Synchronization
import WarrenPacket
import WireGuardProtocol
import XCTest
@testable import WireGuardDevice

final class DeviceBoundsTests: XCTestCase {
    func testTheHandshakeQueueIsBoundedUnderAFloodAndARealPeerStillGetsThrough() throws {
        let pair = try DeviceTests.Pair()
        defer { pair.stop() }
        let endpointB = WireGuardEndpoint(address: IPAddress("198.51.100.2")!, port: pair.b.listenPort)
        let flooder = MemoryBind(network: pair.network, address: IPAddress("192.0.2.77")!)
        _ = try flooder.open(port: 0)
        defer { flooder.close() }
        let stop = Mutex(false)
        let sent = Mutex(0)
        let floodThread = Thread {
            var g = CookieGenerator(remotePublicKey: pair.keyB.publicKey)
            var r = SystemRandomNumberGenerator()
            var message = [UInt8](repeating: 0, count: HandshakeInitiation.size)
            message[0] = 1
            while !stop.withLock({ $0 }) {
                for i in 4..<HandshakeInitiation.mac1Offset { message[i] = UInt8.random(in: 0...255, using: &r) }
                g.addMACs(to: &message, now: .now)
                try? message.withUnsafeBytes { try flooder.send($0, to: endpointB) }
                sent.withLock { $0 += 1 }
            }
        }
        floodThread.start()
        var deepest = 0
        let started = Date()
        while Date().timeIntervalSince(started) < 2 {
            deepest = max(deepest, pair.b.handshakeQueue.count)
            usleep(500)
        }
        // A real handshake through the flood (its first initiation may get a cookie reply; the retry carries MAC2).
        let packet = DeviceTests.ipv4(from: "10.9.0.1", to: "10.9.0.2", payload: [7])
        pair.tunA.inject(packet)
        let delivered = pair.tunB.nextWritten(timeout: .seconds(15))
        stop.withLock { $0 = true }
        let floodCount = sent.withLock { $0 }
        XCTAssertLessThanOrEqual(deepest, WireGuardDeviceConstants.handshakeQueueLimit)
        XCTAssertEqual(delivered, packet, "a real peer's handshake did not get through \(floodCount) flooded initiations")
        var drained = false
        for _ in 0..<500 where !drained {
            drained = pair.b.handshakeQueue.count == 0
            if !drained { usleep(10_000) }
        }
        XCTAssertTrue(drained, "the handshake queue did not drain after the flood")
        print("handshake flood: \(floodCount) initiations in \(String(format: "%.1f", Date().timeIntervalSince(started))) s, deepest queue \(deepest) (limit \(WireGuardDeviceConstants.handshakeQueueLimit))")
    }
}
