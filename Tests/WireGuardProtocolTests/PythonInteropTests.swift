import Foundation
import XCTest
import WarrenTestSupport
@testable import WireGuardProtocol

/// Cross-checks the handshake and the transport keys against an independent implementation of
/// WireGuard's handshake written below in Python (`cryptography` for X25519 and ChaCha20-Poly1305,
/// `hashlib.blake2s` and `hmac` for the rest). The Python side is stateless: given the same inputs
/// (keys, its ephemeral key, indices) it recomputes the same messages, so it runs once per step.
final class PythonInteropTests: XCTestCase {
    static let script = #"""
import sys, hashlib, hmac, struct
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives import serialization as ser

def H(*parts):
    h = hashlib.blake2s()
    for p in parts:
        h.update(p)
    return h.digest()
def HM(key, data):
    return hmac.new(key, data, hashlib.blake2s).digest()
def KDF(ck, ikm, n):
    prk = HM(ck, ikm)
    out, prev = [], b''
    for i in range(1, n + 1):
        prev = HM(prk, prev + bytes([i]))
        out.append(prev)
    return out
def MAC(key, data):
    return hashlib.blake2s(data, digest_size=16, key=key).digest()
def nonce(c):
    return b'\0' * 4 + struct.pack('<Q', c)
def seal(k, c, pt, ad):
    return ChaCha20Poly1305(k).encrypt(nonce(c), pt, ad)
def unseal(k, c, ct, ad):
    return ChaCha20Poly1305(k).decrypt(nonce(c), ct, ad)
def priv(b):
    return X25519PrivateKey.from_private_bytes(b)
def pub(k):
    return k.public_key().public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)
def dh(k, p):
    return k.exchange(X25519PublicKey.from_public_bytes(p))
def transport(receiver, key, payload):
    padded = payload + b'\0' * ((-len(payload)) % 16)
    return b'\x04\0\0\0' + receiver + struct.pack('<Q', 0) + seal(key, 0, padded, b'')
def untransport(key, msg):
    assert msg[:4] == b'\x04\0\0\0'
    return unseal(key, struct.unpack('<Q', msg[8:16])[0], msg[16:], b'')

CK0 = H(b'Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s')
H0 = H(CK0, b'WireGuard v1 zx2c4 Jason@zx2c4.com')
role = sys.argv[1]
lines = [bytes.fromhex(l.strip()) for l in sys.stdin.read().split('\n')]
out = []
if role == 'responder':
    s_priv, i_pub, psk, e_priv, idx, init, swift_msg = lines[:7]
    s = priv(s_priv); s_pub = pub(s)
    assert len(init) == 148 and init[:4] == b'\x01\0\0\0'
    assert MAC(H(b'mac1----', s_pub), init[:116]) == init[116:132], 'mac1'
    sender, ei = init[4:8], init[8:40]
    h = H(H(H0, s_pub), ei)
    ck = KDF(CK0, ei, 1)[0]
    ck, k = KDF(ck, dh(s, ei), 2)
    assert unseal(k, 0, init[40:88], h) == i_pub, 'static'
    h = H(h, init[40:88])
    ck, k = KDF(ck, dh(s, i_pub), 2)
    ts = unseal(k, 0, init[88:116], h)
    h = H(h, init[88:116])
    e = priv(e_priv); er = pub(e)
    h = H(h, er)
    ck = KDF(ck, er, 1)[0]
    ck = KDF(ck, dh(e, ei), 1)[0]
    ck = KDF(ck, dh(e, i_pub), 1)[0]
    ck, tau, k = KDF(ck, psk, 3)
    h = H(h, tau)
    empty = seal(k, 0, b'', h)
    msg = b'\x02\0\0\0' + idx + sender + er + empty
    msg += MAC(H(b'mac1----', i_pub), msg) + b'\0' * 16
    recv_key, send_key = KDF(ck, b'', 2)
    out += [msg.hex(), ts.hex(), transport(sender, send_key, b'from the python responder').hex()]
    if swift_msg:
        assert swift_msg[4:8] == idx
        out.append(untransport(recv_key, swift_msg).hex())
else:
    s_priv, r_pub, psk, e_priv, idx, ts, resp, swift_msg = lines[:8]
    s = priv(s_priv); s_pub = pub(s)
    e = priv(e_priv); ei = pub(e)
    h = H(H(H0, r_pub), ei)
    ck = KDF(CK0, ei, 1)[0]
    ck, k = KDF(ck, dh(e, r_pub), 2)
    est = seal(k, 0, s_pub, h); h = H(h, est)
    ck, k = KDF(ck, dh(s, r_pub), 2)
    ets = seal(k, 0, ts, h); h = H(h, ets)
    msg = b'\x01\0\0\0' + idx + ei + est + ets
    msg += MAC(H(b'mac1----', r_pub), msg) + b'\0' * 16
    out.append(msg.hex())
    if resp:
        assert len(resp) == 92 and resp[:4] == b'\x02\0\0\0' and resp[8:12] == idx
        assert MAC(H(b'mac1----', s_pub), resp[:60]) == resp[60:76], 'mac1'
        er = resp[12:44]
        h = H(h, er)
        ck = KDF(ck, er, 1)[0]
        ck = KDF(ck, dh(e, er), 1)[0]
        ck = KDF(ck, dh(s, er), 1)[0]
        ck, tau, k = KDF(ck, psk, 3)
        h = H(h, tau)
        unseal(k, 0, resp[44:60], h)
        send_key, recv_key = KDF(ck, b'', 2)
        out.append(untransport(recv_key, swift_msg).hex())
        out.append(transport(resp[4:8], send_key, b'from the python initiator').hex())
print('\n'.join(out))
"""#

    private func python(_ role: String, _ lines: [[UInt8]]) throws -> [[UInt8]] {
        let output = try PythonRunner.run(Self.script, arguments: [role],
                                          input: lines.map { KeyText.hex($0) }.joined(separator: "\n") + "\n")
        return try output.split(separator: "\n").map { line in
            try XCTUnwrap(Self.fromHex(String(line)), "python printed non-hex: \(line)")
        }
    }

    static func fromHex(_ s: String) -> [UInt8]? {
        let u = Array(s.utf8)
        guard u.count % 2 == 0 else { return nil }
        var out = [UInt8]()
        var i = 0
        while i < u.count {
            guard let b = UInt8(String(decoding: u[i..<(i + 2)], as: UTF8.self), radix: 16) else { return nil }
            out.append(b)
            i += 2
        }
        return out
    }

    override func setUpWithError() throws {
        do {
            try PythonRunner.requireModules(["cryptography.hazmat.primitives.ciphers.aead", "hashlib"])
        } catch {
            throw XCTSkip("\(error)")
        }
    }

    private func index(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * UInt32($0))) } }

    func testSwiftInitiatesPythonResponds() throws {
        for psk in [false, true] {
            var pair = Pair(seed: psk ? 101 : 100, psk: psk)
            let clock = MockClock()
            let pythonEphemeral = WireGuardPrivateKey(using: &pair.rng)
            let pythonIndex: UInt32 = 0xA1B2_C3D4
            let initiation = try pair.a.createInitiation(senderIndex: 0x1122_3344, timestamp: clock.timestamp, using: &pair.rng)
            var initiationBytes = initiation.bytes
            pair.aCookies.addMACs(to: &initiationBytes, now: clock.now)
            let inputs = [pair.bKey.rawRepresentation, pair.aKey.publicKey.rawRepresentation,
                          pair.a.presharedKey.rawRepresentation, pythonEphemeral.rawRepresentation,
                          index(pythonIndex), initiationBytes]
            let first = try python("responder", inputs + [[]])
            XCTAssertEqual(first.count, 3)
            XCTAssertEqual(first[1], clock.timestamp.bytes, "Python decrypted our TAI64N timestamp")
            let response = try HandshakeResponse(bytes: first[0])
            XCTAssertTrue(CookieChecker(localPublicKey: pair.aKey.publicKey).checkMAC1(first[0]))
            try pair.a.consumeResponse(response)
            let keypair = try pair.a.deriveKeypair(now: clock.now)
            XCTAssertEqual(keypair.remoteIndex, pythonIndex)
            let fromPython = try XCTUnwrap(keypair.open(message: first[2], now: clock.now))
            XCTAssertEqual(Array(fromPython.prefix(25)), Array("from the python responder".utf8))

            let ours = Array("from the swift initiator".utf8)
            let second = try python("responder", inputs + [try XCTUnwrap(keypair.seal(packet: ours))])
            XCTAssertEqual(second.count, 4)
            XCTAssertEqual(Array(second[3].prefix(ours.count)), ours)
        }
    }

    func testPythonInitiatesSwiftResponds() throws {
        for psk in [false, true] {
            var pair = Pair(seed: psk ? 201 : 200, psk: psk)
            let clock = MockClock()
            // Python plays `a` (initiator) with a's keys; Swift is `b`.
            let pythonEphemeral = WireGuardPrivateKey(using: &pair.rng)
            let pythonIndex: UInt32 = 0x0BAD_F00D
            let inputs = [pair.aKey.rawRepresentation, pair.bKey.publicKey.rawRepresentation,
                          pair.b.presharedKey.rawRepresentation, pythonEphemeral.rawRepresentation,
                          index(pythonIndex), clock.timestamp.bytes]
            let first = try python("initiator", inputs + [[], []])
            XCTAssertEqual(first.count, 1)
            XCTAssertTrue(pair.bChecker.checkMAC1(first[0]))
            let initiation = try HandshakeInitiation(bytes: first[0])
            let received = try XCTUnwrap(NoiseHandshake.readInitiation(initiation, localStatic: pair.bKey))
            XCTAssertEqual(received.initiatorStatic, pair.aKey.publicKey)
            XCTAssertEqual(try pair.b.consumeInitiation(received, now: clock.now), clock.timestamp)
            let response = try pair.b.createResponse(senderIndex: 0x5566_7788, using: &pair.rng)
            var responseBytes = response.bytes
            var toA = CookieGenerator(remotePublicKey: pair.aKey.publicKey)
            toA.addMACs(to: &responseBytes, now: clock.now)
            let keypair = try pair.b.deriveKeypair(now: clock.now)
            let ours = Array("from the swift responder".utf8)
            let sealed = try XCTUnwrap(keypair.seal(packet: ours))
            let second = try python("initiator", inputs + [responseBytes, sealed])
            XCTAssertEqual(second.count, 3)
            XCTAssertEqual(Array(second[1].prefix(ours.count)), ours)
            let fromPython = try XCTUnwrap(keypair.open(message: second[2], now: clock.now))
            XCTAssertEqual(Array(fromPython.prefix(25)), Array("from the python initiator".utf8))
        }
    }
}
