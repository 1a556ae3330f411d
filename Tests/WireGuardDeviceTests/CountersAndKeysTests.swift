import XCTest
import WarrenPacket
import WireGuardProtocol
import WireGuardUAPI
@testable import WireGuardDevice

/// What `wg show` reads back: the private key in wireguard-go's clamped form, and byte counters
/// that count only what the bind actually sent.
final class CountersAndKeysTests: XCTestCase {
    /// Runs one UAPI request text against the device; returns the answer.
    func uapi(_ device: WireGuardDevice, _ text: String) -> String {
        var connection = UAPIConnection()
        var answer = ""
        var actions = connection.receive(Array(text.utf8))
        if !connection.isClosed { actions += connection.receiveEndOfInput() }
        for case .request(let request) in actions { answer += String(decoding: request.respond(using: device), as: UTF8.self) }
        return answer
    }

    func testGetReturnsThePrivateKeyClamped() throws {
        let device = WireGuardDevice(tun: MemoryTUN(name: "clamp0"),
                                     bind: MemoryBind(network: MemoryNetwork(), address: IPAddress("198.51.100.3")!))
        try device.start()
        defer {
            device.stop()
            device.waitUntilStopped()
        }
        // A key with every bit set: clamping clears bits 0-2 of the first byte and bit 7 of the
        // last (bit 6 stays set); one with none set gets bit 6 of the last byte.
        let cases = [
            (String(repeating: "ff", count: 32), "f8" + String(repeating: "ff", count: 30) + "7f"),
            ("01" + String(repeating: "00", count: 31), String(repeating: "00", count: 31) + "40"),
            ("c909f3e5317e9575c9b5ed78b638b7ce530dabe85ddab614220241801ddf06e9",
             "c809f3e5317e9575c9b5ed78b638b7ce530dabe85ddab614220241801ddf0669"),
            // Already clamped: unchanged.
            ("c809f3e5317e9575c9b5ed78b638b7ce530dabe85ddab614220241801ddf0669",
             "c809f3e5317e9575c9b5ed78b638b7ce530dabe85ddab614220241801ddf0669"),
        ]
        for (given, clamped) in cases {
            XCTAssertEqual(uapi(device, "set=1\nprivate_key=\(given)\n\n"), "errno=0\n\n")
            let answer = uapi(device, "get=1\n\n")
            XCTAssertTrue(answer.hasPrefix("private_key=\(clamped)\n"), answer)
            // The public key is the same as for the key as given (X25519 clamps anyway).
            let unclamped = try XCTUnwrap(WireGuardPrivateKey(hex: given))
            XCTAssertEqual(device.status().privateKey?.publicKey, unclamped.publicKey)
        }
        // Setting the zero key still removes it.
        XCTAssertEqual(uapi(device, "set=1\nprivate_key=\(String(repeating: "00", count: 32))\n\n"), "errno=0\n\n")
        XCTAssertFalse(uapi(device, "get=1\n\n").contains("private_key="))
    }

    /// The peer's transmitted bytes once they reach `expected` (or after 5 s).
    func txBytes(_ device: WireGuardDevice, reaching expected: UInt64) -> UInt64 {
        let deadline = Date().addingTimeInterval(5)
        var value = device.status().peers[0].txBytes
        while value < expected && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.01)
            value = device.status().peers[0].txBytes
        }
        return value
    }

    /// While the bind drops every send, no byte is counted as transmitted: neither data packets
    /// nor handshake messages nor keepalives. Once sends go through again, they are counted.
    func testTransmittedBytesCountOnlyWhatWasSent() throws {
        let pair = try DeviceTests.Pair()
        defer { pair.stop() }
        let packet = DeviceTests.ipv4(from: "10.9.0.1", to: "10.9.0.2", payload: Array(repeating: 1, count: 100))
        pair.tunA.inject(packet)
        XCTAssertEqual(pair.tunB.nextWritten(), packet)
        // The handshake initiation (148 bytes) and one transport message (16 + 128 + 16). The
        // sender counts after its send returns, which may be after B has the packet: wait for it.
        let afterFirst = UInt64(148 + 160)
        XCTAssertEqual(txBytes(pair.a, reaching: afterFirst), afterFirst)

        pair.bindA.failsSends.store(true, ordering: .relaxed)
        for n in 0..<50 {
            pair.tunA.inject(DeviceTests.ipv4(from: "10.9.0.1", to: "10.9.0.2", payload: Array(repeating: UInt8(n), count: 200)))
        }
        pair.a.initiateHandshake(with: pair.keyB.publicKey)
        // Give the outbound thread time to read, encrypt and fail to send them (packets it has
        // not reached by then are sent later, and accounted for below).
        Thread.sleep(forTimeInterval: 1)
        XCTAssertEqual(pair.a.status().peers[0].txBytes, afterFirst, "failed sends are not counted")

        pair.bindA.failsSends.store(false, ordering: .relaxed)
        let later = DeviceTests.ipv4(from: "10.9.0.1", to: "10.9.0.2", payload: Array(repeating: 9, count: 300))
        pair.tunA.inject(later)
        var arrived = [[UInt8]]()
        while let p = pair.tunB.nextWritten() {
            arrived.append(p)
            if p == later { break }
        }
        XCTAssertEqual(arrived.last, later)
        // Each packet that arrived went as one transport message: 16-byte header, the packet
        // padded to 16 bytes, 16-byte tag. A retransmitted handshake initiation (148 bytes) may
        // have gone out too if the machine was slow enough to pass REKEY_TIMEOUT.
        let messages = arrived.reduce(0) { $0 + 16 + ($1.count + 15) / 16 * 16 + 16 }
        let counted = Int(txBytes(pair.a, reaching: afterFirst + UInt64(messages)) - afterFirst)
        XCTAssertGreaterThanOrEqual(counted, messages)
        XCTAssertEqual((counted - messages) % 148, 0, "counted \(counted), messages \(messages)")
        XCTAssertLessThan(arrived.count, 51, "most of the packets sent while failing were dropped, not delivered late")
    }
}
