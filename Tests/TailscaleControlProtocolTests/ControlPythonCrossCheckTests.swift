import Foundation
import TailscaleControlProtocol
import TailscaleKeys
import WarrenTestSupport
import XCTest

/// Cross-checks the Swift responder against an independent Noise IK initiator written here in Python
/// (X25519 and ChaCha20-Poly1305 from `cryptography`, BLAKE2s and HMAC from the standard library).
final class ControlPythonCrossCheckTests: XCTestCase {
    static let initiator = #"""
import sys, json, hashlib, hmac
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives import serialization

def blake(*parts):
    h = hashlib.blake2s(digest_size=32)
    for p in parts:
        h.update(p)
    return h.digest()

def hkdf2(ck, ikm):
    prk = hmac.new(ck, ikm, hashlib.blake2s).digest()
    t1 = hmac.new(prk, b"\x01", hashlib.blake2s).digest()
    t2 = hmac.new(prk, t1 + b"\x02", hashlib.blake2s).digest()
    return t1, t2

def public(priv):
    return X25519PrivateKey.from_private_bytes(priv).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)

def dh(priv, pub):
    return X25519PrivateKey.from_private_bytes(priv).exchange(X25519PublicKey.from_public_bytes(pub))

def nonce(n):  # Tailscale's controlbase: 4 zero bytes, then a big-endian 64-bit counter
    return b"\x00" * 4 + n.to_bytes(8, "big")

class Symmetric:
    def __init__(self):
        self.h = blake(b"Noise_IK_25519_ChaChaPoly_BLAKE2s")
        self.ck = self.h
    def mix_hash(self, data):
        self.h = blake(self.h, data)
    def mix_dh(self, priv, pub):
        self.ck, k = hkdf2(self.ck, dh(priv, pub))
        return k
    def encrypt(self, k, pt):
        ct = ChaCha20Poly1305(k).encrypt(nonce(0), pt, self.h)
        self.mix_hash(ct)
        return ct
    def decrypt(self, k, ct):
        pt = ChaCha20Poly1305(k).decrypt(nonce(0), ct, self.h)
        self.mix_hash(ct)
        return pt

req = json.loads(sys.stdin.readline())
machine = bytes.fromhex(req["machine"])
eph = bytes.fromhex(req["ephemeral"])
control = bytes.fromhex(req["control_public"])
version = req["version"]

s = Symmetric()
s.mix_hash(b"Tailscale Control Protocol v" + str(version).encode())
s.mix_hash(control)
eph_pub = public(eph)
s.mix_hash(eph_pub)
encrypted_machine = s.encrypt(s.mix_dh(eph, control), public(machine))
tag = s.encrypt(s.mix_dh(machine, control), b"")
initiation = version.to_bytes(2, "big") + b"\x01" + (96).to_bytes(2, "big") + eph_pub + encrypted_machine + tag
out = {"initiation": initiation.hex()}

if "response" in req:
    resp = bytes.fromhex(req["response"])
    assert resp[0] == 2 and int.from_bytes(resp[1:3], "big") == 48 and len(resp) == 51
    server_eph = resp[3:35]
    s.mix_hash(server_eph)
    s.mix_dh(eph, server_eph)
    s.decrypt(s.mix_dh(machine, server_eph), resp[35:51])
    k1, k2 = hkdf2(s.ck, b"")
    out["handshake_hash"] = s.h.hex()
    record = bytes.fromhex(req["server_record"])
    assert record[0] == 4 and int.from_bytes(record[1:3], "big") == len(record) - 3
    out["server_plaintext"] = ChaCha20Poly1305(k2).decrypt(nonce(0), record[3:], None).hex()
    records = b""
    for i, chunk in enumerate(req["client_messages"]):
        ct = ChaCha20Poly1305(k1).encrypt(nonce(i), bytes.fromhex(chunk), None)
        records += b"\x04" + len(ct).to_bytes(2, "big") + ct
    out["client_records"] = records.hex()

print(json.dumps(out))
"""#

    static let modules = ["cryptography.hazmat.primitives.ciphers.aead"]

    private func runPython(_ request: [String: Any]) throws -> [String: String] {
        try XCTUnwrap(PythonRunner.runJSON(Self.initiator, request: request, requiring: Self.modules) as? [String: String])
    }

    private func requirePythonCryptography() throws {
        do { try PythonRunner.requireModules(Self.modules) } catch { throw XCTSkip("\(error) (pip install cryptography)") }
    }

    private func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

    private func unhex(_ text: String?) throws -> [UInt8] {
        let text = try XCTUnwrap(text)
        var out = [UInt8]()
        var index = text.startIndex
        while index < text.endIndex {
            let next = text.index(index, offsetBy: 2)
            out.append(try XCTUnwrap(UInt8(text[index..<next], radix: 16)))
            index = next
        }
        return out
    }

    func testPythonInitiatorSwiftResponder() throws {
        try requirePythonCryptography()
        var rng = SeededGenerator(seed: 2021)
        let machine = MachinePrivate.generate(using: &rng)
        let clientEphemeral = MachinePrivate.generate(using: &rng)
        let control = MachinePrivate.generate(using: &rng)
        let serverEphemeral = MachinePrivate.generate(using: &rng)
        var request: [String: Any] = [
            "machine": hex(machine.rawRepresentation), "ephemeral": hex(clientEphemeral.rawRepresentation),
            "control_public": hex(control.publicKey.rawRepresentation), "version": 145,
        ]

        // Python initiates; Swift responds.
        let first = try runPython(request)
        let initiation = try unhex(first["initiation"])
        var accepted = try ControlServerHandshake.respond(to: initiation, controlKey: control, ephemeral: serverEphemeral)
        XCTAssertEqual(accepted.machineKey, machine.publicKey)
        XCTAssertEqual(accepted.session.protocolVersion, 145)

        // Swift's first record to the client, and two client records (the second uses nonce 1).
        let serverMessage = Array("hello from the Swift control server".utf8)
        let clientMessages = [Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8), Array("second record".utf8)]
        request["response"] = hex(accepted.response)
        request["server_record"] = hex(try accepted.session.sender.seal(serverMessage))
        request["client_messages"] = clientMessages.map(hex)
        let second = try runPython(request)

        XCTAssertEqual(try unhex(second["initiation"]), initiation, "the Python side must be deterministic")
        XCTAssertEqual(try unhex(second["handshake_hash"]), accepted.session.handshakeHash)
        XCTAssertEqual(try unhex(second["server_plaintext"]), serverMessage)
        accepted.session.receiver.append(try unhex(second["client_records"]))
        XCTAssertEqual(try accepted.session.receiver.nextPlaintext(), clientMessages[0])
        XCTAssertEqual(try accepted.session.receiver.nextPlaintext(), clientMessages[1])
        XCTAssertNil(try accepted.session.receiver.nextPlaintext())

        // And the Swift client produces the very initiation Python did from the same keys.
        let swiftClient = try ControlClientHandshake(machineKey: machine, controlKey: control.publicKey,
                                                     protocolVersion: 145, ephemeral: clientEphemeral)
        XCTAssertEqual(swiftClient.initiation, initiation)
    }
}
