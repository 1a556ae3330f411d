import DERPProtocol
import Foundation
import TailscaleKeys
import WarrenTestSupport
import XCTest

/// A Python DERP client (PyNaCl's Box, which is crypto_box like Go's nacl/box) logs in to the Swift
/// server handshake, and opens the ServerInfo the Swift side sends back.
final class DERPPyNaClCrossCheckTests: XCTestCase {
    static let script = #"""
import sys, json
from nacl.public import PrivateKey, PublicKey, Box
req = json.loads(sys.stdin.readline())
me = PrivateKey(bytes.fromhex(req["client_private"]))
server = PublicKey(bytes.fromhex(req["server_public"]))
box = Box(me, server)
out = {"client_public": bytes(me.public_key).hex()}
if "server_info" in req:
    frame = bytes.fromhex(req["server_info"])
    assert frame[0] == 3 and int.from_bytes(frame[1:5], "big") == len(frame) - 5
    out["server_info_json"] = box.decrypt(frame[5+24:], frame[5:5+24]).decode()
else:
    info = json.dumps({"version": 2, "CanAckPings": True, "AppName": "pynacl"}).encode()
    nonce = bytes(range(24))
    sealed = box.encrypt(info, nonce)  # nonce followed by the box, as Tailscale's SealTo
    payload = bytes(me.public_key) + bytes(sealed)
    out["client_info"] = (bytes([2]) + len(payload).to_bytes(4, "big") + payload).hex()
print(json.dumps(out))
"""#

    private func python(_ request: [String: String]) throws -> [String: String] {
        try XCTUnwrap(PythonRunner.runJSON(Self.script, request: request, requiring: ["nacl.public"]) as? [String: String])
    }

    private func requirePyNaCl() throws {
        do { try PythonRunner.requireModules(["nacl.public"]) } catch { throw XCTSkip("\(error) (pip install pynacl)") }
    }

    private func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

    private func unhex(_ text: String?) throws -> [UInt8] {
        let chars = Array(try XCTUnwrap(text).utf8)
        return try stride(from: 0, to: chars.count, by: 2).map {
            try XCTUnwrap(UInt8(String(decoding: chars[$0..<$0 + 2], as: UTF8.self), radix: 16))
        }
    }

    func testPythonClientLogsInToSwiftServer() throws {
        try requirePyNaCl()
        var rng = SeededGenerator(seed: 55)
        let serverPrivate = NodePrivate.generate(using: &rng)
        let clientPrivate = NodePrivate.generate(using: &rng)
        let request = ["client_private": hex(clientPrivate.rawRepresentation), "server_public": hex(serverPrivate.publicKey.rawRepresentation)]
        let first = try python(request)
        XCTAssertEqual(first["client_public"], hex(clientPrivate.publicKey.rawRepresentation))

        var decoder = DERPFrameDecoder()
        decoder.append(try unhex(first["client_info"]))
        let frame = try XCTUnwrap(try decoder.nextFrame())
        let nonces = SeededNonces(seed: 77)
        var server = DERPServerHandshake(serverKey: serverPrivate.publicKey)
        let reply = try server.receive(frame, sealer: DERPNaClSealer(privateKey: serverPrivate, nonce: { nonces.next() }))
        XCTAssertEqual(server.state, .established(client: clientPrivate.publicKey,
                                                  info: DERPClientInfo(canAckPings: true, appName: "pynacl")))

        var second = request
        second["server_info"] = hex(reply)
        XCTAssertEqual(try python(second)["server_info_json"], #"{"version":2}"#)
    }
}
