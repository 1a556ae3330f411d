import WarrenPacket
import WireGuardProtocol
import WireGuardUAPI
import XCTest

func pub(_ byte: UInt8) -> WireGuardPublicKey { try! WireGuardPublicKey(rawRepresentation: [UInt8](repeating: byte, count: 32)) }
func psk(_ byte: UInt8) -> WireGuardPresharedKey { try! WireGuardPresharedKey(rawRepresentation: [UInt8](repeating: byte, count: 32)) }
/// A private key with Curve25519's clamping applied, as wireguard-go stores it.
func priv(_ bytes: [UInt8]) -> WireGuardPrivateKey {
    var b = bytes
    b[0] &= 248
    b[31] = (b[31] & 127) | 64
    return try! WireGuardPrivateKey(rawRepresentation: b)
}
func priv(_ byte: UInt8) -> WireGuardPrivateKey { priv([UInt8](repeating: byte, count: 32)) }

func parseSet(_ text: String) throws(UAPIError) -> DeviceConfigUpdate {
    try DeviceConfigUpdate(parsingSetRequest: Array(text.utf8))
}

/// Asserts that parsing `body` fails with `code`.
func assertSetFails(_ body: String, _ code: UAPIError.Code, file: StaticString = #filePath, line: UInt = #line) {
    do {
        let update = try parseSet(body)
        XCTFail("parsed \(body.debugDescription) into \(update)", file: file, line: line)
    } catch {
        XCTAssertEqual(error.code, code, body.debugDescription, file: file, line: line)
    }
}

final class SetRequestTests: XCTestCase {
    let pub1 = "c53201039adba14be71f886da1d8dbe9eebded08cb111b75340078999aa9f038"
    let pub2 = "4eb32f4a83f88d842563a448cc181bb2c42a637bf12363e2fb2ef594e5965d7d"

    /// What `wg set wuacap0 private-key K listen-port 51820 fwmark 0x20 peer P1 preshared-key S
    /// endpoint 192.0.2.7:51820 persistent-keepalive 25 allowed-ips 10.0.0.0/8,fd00::/64 peer P2 remove`
    /// wrote to a socket (wireguard-tools v1.0.20210914), captured byte for byte.
    static let capturedWgSet = """
        private_key=c809f3e5317e9575c9b5ed78b638b7ce530dabe85ddab614220241801ddf0669
        listen_port=51820
        fwmark=32
        public_key=c53201039adba14be71f886da1d8dbe9eebded08cb111b75340078999aa9f038
        preshared_key=188515093e952f5f22e865cef3012e72f8b5f0b598ac0309d5dacce3b70fcf52
        endpoint=192.0.2.7:51820
        persistent_keepalive_interval=25
        replace_allowed_ips=true
        allowed_ip=10.0.0.0/8
        allowed_ip=fd00::/64
        public_key=4eb32f4a83f88d842563a448cc181bb2c42a637bf12363e2fb2ef594e5965d7d
        remove=true

        """

    /// What `wg setconf` wrote for a file with ListenPort 41414 and one peer with an IPv6 endpoint.
    static let capturedWgSetconf = """
        private_key=c809f3e5317e9575c9b5ed78b638b7ce530dabe85ddab614220241801ddf0669
        listen_port=41414
        fwmark=0
        replace_peers=true
        public_key=c53201039adba14be71f886da1d8dbe9eebded08cb111b75340078999aa9f038
        endpoint=[2001:db8::5]:1234
        replace_allowed_ips=true
        allowed_ip=10.192.122.3/32
        allowed_ip=10.192.124.1/24

        """

    func testCapturedWgSet() throws {
        let update = try parseSet(Self.capturedWgSet)
        XCTAssertEqual(update.privateKey?.hex, "c809f3e5317e9575c9b5ed78b638b7ce530dabe85ddab614220241801ddf0669")
        XCTAssertEqual(update.listenPort, 51820)
        XCTAssertEqual(update.fwmark, 32)
        XCTAssertFalse(update.replacePeers)
        XCTAssertEqual(update.peers.count, 2)
        let first = update.peers[0]
        XCTAssertEqual(first.publicKey.hex, pub1)
        XCTAssertEqual(first.presharedKey?.hex, "188515093e952f5f22e865cef3012e72f8b5f0b598ac0309d5dacce3b70fcf52")
        XCTAssertEqual(first.endpoint, UAPIEndpoint(address: IPAddress("192.0.2.7")!, port: 51820))
        XCTAssertEqual(first.persistentKeepaliveInterval, 25)
        XCTAssertTrue(first.replaceAllowedIPs)
        XCTAssertEqual(first.allowedIPs, [IPPrefix("10.0.0.0/8")!, IPPrefix("fd00::/64")!])
        XCTAssertFalse(first.remove)
        XCTAssertEqual(update.peers[1], PeerConfigUpdate(publicKey: WireGuardPublicKey(hex: pub2)!, remove: true))
    }

    func testCapturedWgSetconf() throws {
        let update = try parseSet(Self.capturedWgSetconf)
        XCTAssertEqual(update.listenPort, 41414)
        XCTAssertEqual(update.fwmark, 0)
        XCTAssertTrue(update.replacePeers)
        XCTAssertEqual(update.peers.count, 1)
        XCTAssertEqual(update.peers[0].endpoint?.description, "[2001:db8::5]:1234")
        XCTAssertEqual(update.peers[0].endpoint?.address, IPAddress("2001:db8::5"))
        XCTAssertNil(update.peers[0].presharedKey)
        XCTAssertNil(update.peers[0].persistentKeepaliveInterval)
        // Host bits are kept as written; the device masks when inserting.
        XCTAssertEqual(update.peers[0].allowedIPs.map(\.description), ["10.192.122.3/32", "10.192.124.1/24"])
    }

    func testEmptyRequestChangesNothing() throws {
        XCTAssertEqual(try parseSet(""), DeviceConfigUpdate())
        XCTAssertEqual(try parseSet("\n"), DeviceConfigUpdate())
    }

    func testPrivateKeyIsClampedUnlessZero() throws {
        let raw = String(repeating: "ff", count: 32)
        let update = try parseSet("private_key=\(raw)\n")
        XCTAssertEqual(update.privateKey?.hex, "f8" + String(repeating: "ff", count: 30) + "7f")
        XCTAssertEqual(try parseSet("private_key=\(String(repeating: "0", count: 64))\n").privateKey?.isZero, true)
    }

    func testUppercaseHexAccepted() throws {
        let update = try parseSet("public_key=\(pub1.uppercased())\n")
        XCTAssertEqual(update.peers.first?.publicKey.hex, pub1)
    }

    func testEachDeviceKey() throws {
        XCTAssertEqual(try parseSet("listen_port=0\n").listenPort, 0)
        XCTAssertEqual(try parseSet("listen_port=65535\n").listenPort, 65535)
        XCTAssertEqual(try parseSet("listen_port=00080\n").listenPort, 80)
        XCTAssertEqual(try parseSet("fwmark=4294967295\n").fwmark, UInt32.max)
        XCTAssertEqual(try parseSet("replace_peers=true\n").replacePeers, true)
        // The last value of a repeated device key wins.
        XCTAssertEqual(try parseSet("listen_port=1\nlisten_port=2\n").listenPort, 2)
    }

    func testEachPeerKey() throws {
        let update = try parseSet("""
            public_key=\(pub1)
            update_only=true
            protocol_version=1
            preshared_key=\(String(repeating: "ab", count: 32))
            endpoint=[2001:db8::1]:51820
            persistent_keepalive_interval=65535
            allowed_ip=0.0.0.0/0
            allowed_ip=::/0
            allowed_ip=::ffff:10.1.2.3/128

            """)
        let peer = try XCTUnwrap(update.peers.first)
        XCTAssertTrue(peer.updateOnly)
        XCTAssertEqual(peer.protocolVersion, 1)
        XCTAssertEqual(peer.presharedKey, psk(0xAB))
        XCTAssertEqual(peer.endpoint?.port, 51820)
        XCTAssertEqual(peer.persistentKeepaliveInterval, 65535)
        XCTAssertFalse(peer.replaceAllowedIPs)
        XCTAssertEqual(peer.allowedIPs.map(\.description), ["0.0.0.0/0", "::/0", "::ffff:10.1.2.3/128"])
    }

    func testReplaceAllowedIPsAfterAllowedIPsDropsThem() throws {
        let update = try parseSet("public_key=\(pub1)\nallowed_ip=10.0.0.1/32\nreplace_allowed_ips=true\nallowed_ip=10.0.0.2/32\n")
        XCTAssertEqual(update.peers[0].allowedIPs, [IPPrefix("10.0.0.2/32")!])
        XCTAssertTrue(update.peers[0].replaceAllowedIPs)
    }

    func testRemoveDiscardsTheRestOfThePeerButStillValidates() throws {
        let update = try parseSet("public_key=\(pub1)\nendpoint=1.2.3.4:5\nremove=true\nallowed_ip=10.0.0.1/32\npublic_key=\(pub2)\n")
        XCTAssertEqual(update.peers, [
            PeerConfigUpdate(publicKey: WireGuardPublicKey(hex: pub1)!, remove: true),
            PeerConfigUpdate(publicKey: WireGuardPublicKey(hex: pub2)!),
        ])
        assertSetFails("public_key=\(pub1)\nremove=true\nallowed_ip=10.0.0.1\n", .invalidValue)
    }

    func testMultiplePeersKeepOrderAndRepeats() throws {
        var body = ""
        for i in 0..<50 {
            body += "public_key=\(pub(UInt8(i % 10)).hex)\nallowed_ip=10.0.\(i).0/24\n"
        }
        let update = try parseSet(body)
        XCTAssertEqual(update.peers.count, 50)
        for (i, peer) in update.peers.enumerated() {
            XCTAssertEqual(peer.publicKey, pub(UInt8(i % 10)))
            XCTAssertEqual(peer.allowedIPs, [IPPrefix("10.0.\(i).0/24")!])
        }
    }

    func testCarriageReturnsAreDropped() throws {
        let update = try parseSet("listen_port=7\r\npublic_key=\(pub1)\r\nallowed_ip=10.0.0.0/8\r\n\r\nlisten_port=x\n")
        XCTAssertEqual(update.listenPort, 7)
        XCTAssertEqual(update.peers.first?.allowedIPs, [IPPrefix("10.0.0.0/8")!])
    }

    func testBlankLineEndsTheRequest() throws {
        XCTAssertEqual(try parseSet("listen_port=7\n\ngarbage\n").listenPort, 7)
    }

    // MARK: errors, with wireguard-go's errno for each

    func testProtocolViolation() {
        assertSetFails("listen_port\n", .protocolViolation)
        assertSetFails("public_key=\(pub1)\nendpoint\n", .protocolViolation)
        assertSetFails("get=1\nfoo\n", .invalidValue)  // has '=': an unknown key
    }

    func testInvalidKeys() {
        for bad in ["", "00", String(repeating: "0", count: 63), String(repeating: "0", count: 65),
                    String(repeating: "g", count: 64), " " + String(repeating: "0", count: 63),
                    "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="] {
            assertSetFails("private_key=\(bad)\n", .invalidValue)
            assertSetFails("public_key=\(bad)\n", .invalidValue)
            assertSetFails("public_key=\(pub1)\npreshared_key=\(bad)\n", .invalidValue)
        }
    }

    func testInvalidNumbers() {
        for bad in ["", "-1", "+1", "65536", "0x10", " 1", "1 ", "1_0", "٣", "99999999999999999999999"] {
            assertSetFails("listen_port=\(bad)\n", .invalidValue)
            assertSetFails("public_key=\(pub1)\npersistent_keepalive_interval=\(bad)\n", .invalidValue)
        }
        assertSetFails("fwmark=4294967296\n", .invalidValue)
        assertSetFails("fwmark=0x20\n", .invalidValue)
    }

    func testInvalidFlags() {
        for bad in ["", "false", "TRUE", "1", "true "] {
            assertSetFails("replace_peers=\(bad)\n", .invalidValue)
            for flag in ["remove", "update_only", "replace_allowed_ips"] {
                assertSetFails("public_key=\(pub1)\n\(flag)=\(bad)\n", .invalidValue)
            }
        }
    }

    func testInvalidEndpoints() {
        for bad in ["", "1.2.3.4", "1.2.3.4:", "1.2.3.4:65536", "1.2.3.4:-1", "2001:db8::1:80", "[2001:db8::1]",
                    "[1.2.3.4]:80", "[2001:db8::1:80", "example.com:80", "1.2.3.04:80", "[fe80::1%eth0]:80",
                    ":80", "[]:80"] {
            assertSetFails("public_key=\(pub1)\nendpoint=\(bad)\n", .invalidValue)
        }
    }

    func testInvalidAllowedIPs() {
        for bad in ["", "10.0.0.1", "10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/08",
                    "10.0.0.0/+8", "fe80::1%eth0/64", "10.0.0.0/8/8", "10.0.0/8"] {
            assertSetFails("public_key=\(pub1)\nallowed_ip=\(bad)\n", .invalidValue)
        }
    }

    func testInvalidProtocolVersion() {
        for bad in ["", "0", "2", "01"] {
            assertSetFails("public_key=\(pub1)\nprotocol_version=\(bad)\n", .invalidValue)
        }
    }

    func testUnknownKeys() {
        assertSetFails("foo=bar\n", .invalidValue)
        assertSetFails("=\n", .invalidValue)
        // Device keys after a public_key line are peer keys there, hence unknown.
        assertSetFails("public_key=\(pub1)\nlisten_port=1\n", .invalidValue)
        assertSetFails("public_key=\(pub1)\nprivate_key=\(pub1)\n", .invalidValue)
        // Peer keys before any public_key line are unknown device keys.
        assertSetFails("allowed_ip=10.0.0.0/8\n", .invalidValue)
        assertSetFails("endpoint=1.2.3.4:5\n", .invalidValue)
    }

    func testFirstErrorWins() {
        assertSetFails("listen_port=x\nnoequals\n", .invalidValue)
        assertSetFails("noequals\nlisten_port=x\n", .protocolViolation)
    }

    func testOverlongLineIsAnIOError() {
        assertSetFails("foo=" + String(repeating: "a", count: DeviceConfigUpdate.maximumLineLength) + "\n", .io)
    }

    func testErrnoValuesAreLinux() throws {
        #if os(Linux)
        XCTAssertEqual(UAPIError.Code.invalidValue.errno, 22)
        XCTAssertEqual(UAPIError.Code.protocolViolation.errno, 71)
        XCTAssertEqual(UAPIError.Code.io.errno, 5)
        XCTAssertEqual(UAPIError.Code.portInUse.errno, 98)
        XCTAssertEqual(UAPIError.Code.unknown.errno, 55)
        XCTAssertEqual(UAPIError(.invalidValue, "").wireErrno, -22)
        #else
        throw XCTSkip("errno numbers differ outside Linux")
        #endif
    }
}
