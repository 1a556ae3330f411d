import WarrenPacket
import WarrenTestSupport
import WireGuardProtocol
import WireGuardUAPI
import XCTest

final class TextFormTests: XCTestCase {
    func sampleSnapshot() -> DeviceSnapshot {
        DeviceSnapshot(
            privateKey: try! WireGuardPrivateKey(rawRepresentation: [UInt8](repeating: 0x11, count: 32)), listenPort: 51820, fwmark: 7,
            peers: [
                PeerSnapshot(
                    publicKey: pub(0x22), presharedKey: psk(0x33),
                    endpoint: UAPIEndpoint(address: IPAddress("192.0.2.1")!, port: 51820),
                    lastHandshakeTimeSec: 1_700_000_000, lastHandshakeTimeNsec: 123_456_789,
                    txBytes: 1 << 40, rxBytes: 42, persistentKeepaliveInterval: 25,
                    allowedIPs: [IPPrefix("10.0.0.0/24")!, IPPrefix("fd00::/64")!]),
                PeerSnapshot(publicKey: pub(0x44)),
            ])
    }

    func testGetResponseExactText() {
        let expected = """
            private_key=\(String(repeating: "11", count: 32))
            listen_port=51820
            fwmark=7
            public_key=\(String(repeating: "22", count: 32))
            preshared_key=\(String(repeating: "33", count: 32))
            protocol_version=1
            endpoint=192.0.2.1:51820
            last_handshake_time_sec=1700000000
            last_handshake_time_nsec=123456789
            tx_bytes=1099511627776
            rx_bytes=42
            persistent_keepalive_interval=25
            allowed_ip=10.0.0.0/24
            allowed_ip=fd00::/64
            public_key=\(String(repeating: "44", count: 32))
            preshared_key=\(String(repeating: "00", count: 32))
            protocol_version=1
            last_handshake_time_sec=0
            last_handshake_time_nsec=0
            tx_bytes=0
            rx_bytes=0
            persistent_keepalive_interval=0
            errno=0


            """
        XCTAssertEqual(sampleSnapshot().getResponse, expected)
    }

    func testEmptyDeviceOmitsZeroFields() {
        XCTAssertEqual(DeviceSnapshot().getResponse, "errno=0\n\n")
        XCTAssertEqual(DeviceSnapshot(privateKey: try! WireGuardPrivateKey(rawRepresentation: [UInt8](repeating: 0, count: 32))).getResponse, "errno=0\n\n")
    }

    func testIPv6EndpointIsBracketed() {
        var snapshot = DeviceSnapshot(peers: [PeerSnapshot(publicKey: pub(1))])
        snapshot.peers[0].endpoint = UAPIEndpoint(address: IPAddress("2001:db8::1")!, port: 1)
        XCTAssertTrue(snapshot.getResponse.contains("\nendpoint=[2001:db8::1]:1\n"))
    }

    func testSnapshotRoundTrip() throws {
        let snapshot = sampleSnapshot()
        XCTAssertEqual(try DeviceSnapshot(parsingGetResponse: snapshot.getResponse), snapshot)
        XCTAssertEqual(try DeviceSnapshot(parsingGetResponse: snapshot.getResponseBody), snapshot)
    }

    func testParsingAnErrorAnswerThrowsIt() {
        XCTAssertThrowsError(try DeviceSnapshot(parsingGetResponse: "errno=-98\n\n")) { error in
            XCTAssertEqual((error as? UAPIError)?.code, .portInUse)
        }
    }

    func testUpdateRoundTrip() throws {
        let update = DeviceConfigUpdate(
            privateKey: priv(0x11), listenPort: 0, fwmark: 0, replacePeers: true,
            peers: [
                PeerConfigUpdate(
                    publicKey: pub(0x22), updateOnly: true, presharedKey: .zero,
                    endpoint: UAPIEndpoint("[::1]:9"), persistentKeepaliveInterval: 0,
                    replaceAllowedIPs: true, allowedIPs: [IPPrefix("0.0.0.0/0")!, IPPrefix("::/0")!],
                    protocolVersion: 1),
                PeerConfigUpdate(publicKey: pub(0x33), remove: true),
                PeerConfigUpdate(publicKey: pub(0x22), allowedIPs: [IPPrefix("10.1.0.0/16")!]),
            ])
        let text = update.setRequest
        XCTAssertTrue(text.hasPrefix("set=1\n"))
        XCTAssertTrue(text.hasSuffix("\n\n"))
        XCTAssertEqual(try DeviceConfigUpdate(parsingSetRequest: Array(text.utf8).dropFirst(6)), update)
    }

    /// Random updates survive format-then-parse unchanged.
    func testRandomUpdatesRoundTrip() throws {
        var rng = SeededGenerator(seed: 42)
        for _ in 0..<300 {
            var update = DeviceConfigUpdate()
            if Bool.random(using: &rng) { update.privateKey = priv(rng.bytes(count: 32)) }
            if Bool.random(using: &rng) { update.listenPort = UInt16.random(in: 0...UInt16.max, using: &rng) }
            if Bool.random(using: &rng) { update.fwmark = UInt32.random(in: 0...UInt32.max, using: &rng) }
            update.replacePeers = Bool.random(using: &rng)
            for _ in 0..<Int.random(in: 0...4, using: &rng) {
                var peer = PeerConfigUpdate(publicKey: try WireGuardPublicKey(rawRepresentation: rng.bytes(count: 32)))
                if Int.random(in: 0..<5, using: &rng) == 0 {
                    peer.remove = true
                } else {
                    peer.updateOnly = Bool.random(using: &rng)
                    if Bool.random(using: &rng) { peer.presharedKey = try WireGuardPresharedKey(rawRepresentation: rng.bytes(count: 32)) }
                    if Bool.random(using: &rng) {
                        let address = Bool.random(using: &rng)
                            ? IPAddress(bytes: rng.bytes(count: 4))! : IPAddress(bytes: rng.bytes(count: 16))!
                        peer.endpoint = UAPIEndpoint(address: address, port: UInt16.random(in: 0...UInt16.max, using: &rng))
                    }
                    if Bool.random(using: &rng) { peer.persistentKeepaliveInterval = UInt16.random(in: 0...UInt16.max, using: &rng) }
                    peer.replaceAllowedIPs = Bool.random(using: &rng)
                    for _ in 0..<Int.random(in: 0...3, using: &rng) {
                        let address = Bool.random(using: &rng)
                            ? IPAddress(bytes: rng.bytes(count: 4))! : IPAddress(bytes: rng.bytes(count: 16))!
                        peer.allowedIPs.append(IPPrefix(address: address, bits: Int.random(in: 0...address.bitCount, using: &rng))!)
                    }
                    if Bool.random(using: &rng) { peer.protocolVersion = 1 }
                }
                update.peers.append(peer)
            }
            let text = update.setRequest
            XCTAssertEqual(try DeviceConfigUpdate(parsingSetRequest: Array(text.utf8).dropFirst(6)), update, text)
        }
    }

    func testPrivateKeyForms() throws {
        XCTAssertTrue(try WireGuardPrivateKey(rawRepresentation: [UInt8](repeating: 0, count: 32)).isZero)
        XCTAssertFalse(priv(0).isZero)
        XCTAssertEqual(priv(0xFF).rawRepresentation.first, 0xF8)
        XCTAssertEqual(priv(0x00).rawRepresentation.last, 0x40)
        // A private key prints in hex in the get answer, clamped as it was stored.
        let snapshot = DeviceSnapshot(privateKey: priv(0xFF))
        XCTAssertEqual(snapshot.getResponse, "private_key=f8\(String(repeating: "ff", count: 30))7f\nerrno=0\n\n")
    }

    func testEndpointForms() {
        XCTAssertEqual(UAPIEndpoint("10.0.0.1:0")?.description, "10.0.0.1:0")
        XCTAssertEqual(UAPIEndpoint("[2001:DB8:0:0:0:0:0:1]:65535")?.description, "[2001:db8::1]:65535")
        XCTAssertEqual(UAPIEndpoint("[::ffff:1.2.3.4]:5")?.address.version, .v6)
        XCTAssertNil(UAPIEndpoint("[::1]:65536"))
    }
}
