import Foundation
import XCTest
import WarrenPacket
import WarrenTestSupport
@testable import WireGuardProtocol

/// Cross-checks MAC1, MAC2 and cookie replies against an independent implementation in Python
/// (`hashlib.blake2s` for the MACs, PyNaCl's XChaCha20-Poly1305 for the sealed cookie).
final class PythonCookieInteropTests: XCTestCase {
    static let script = #"""
import sys, hashlib
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_encrypt as xseal
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt as xopen

def H(*parts):
    h = hashlib.blake2s()
    for p in parts:
        h.update(p)
    return h.digest()
def MAC(key, data):
    return hashlib.blake2s(data, digest_size=16, key=key).digest()

step = sys.argv[1]
lines = [bytes.fromhex(l.strip()) for l in sys.stdin.read().split('\n')]
out = []
if step == 'check-swift-reply':
    # Swift's responder answered init1 with a cookie reply; init2 is the initiator's retry.
    r_pub, secret, source, init1, reply, init2 = lines[:6]
    assert MAC(H(b'mac1----', r_pub), init1[:116]) == init1[116:132], 'mac1 of init1'
    assert init1[132:148] == bytes(16), 'no cookie yet: mac2 zero'
    assert len(reply) == 64 and reply[:4] == b'\x03\0\0\0' and reply[4:8] == init1[4:8], 'reply header'
    cookie = xopen(reply[32:64], init1[116:132], reply[8:32], H(b'cookie--', r_pub))
    assert cookie == MAC(secret, source), 'cookie = MAC(secret, source address)'
    assert MAC(H(b'mac1----', r_pub), init2[:116]) == init2[116:132], 'mac1 of init2'
    assert MAC(cookie, init2[:132]) == init2[132:148], 'mac2 of init2'
    out.append(cookie.hex())
elif step == 'make-reply':
    # Python answers a Swift initiation with a cookie reply, as a responder under load.
    r_pub, secret, source, nonce, init = lines[:5]
    sealed = xseal(MAC(secret, source), init[116:132], nonce, H(b'cookie--', r_pub))
    out.append((b'\x03\0\0\0' + init[4:8] + nonce + sealed).hex())
elif step == 'check-mac2':
    r_pub, secret, source, init = lines[:4]
    out.append('01' if MAC(MAC(secret, source), init[:132]) == init[132:148] else '00')
print('\n'.join(out))
"""#

    override func setUpWithError() throws {
        do { try PythonRunner.requireModules(["nacl.bindings", "hashlib"]) } catch { throw XCTSkip("\(error)") }
    }

    private func python(_ step: String, _ lines: [[UInt8]]) throws -> [[UInt8]] {
        let output = try PythonRunner.run(Self.script, arguments: [step],
                                          input: lines.map { KeyText.hex($0) }.joined(separator: "\n") + "\n")
        return try output.split(separator: "\n").map { line in
            try XCTUnwrap(PythonInteropTests.fromHex(String(line)), "python printed non-hex: \(line)")
        }
    }

    func testCookieRepliesAndMAC2AgreeWithPython() throws {
        var pair = Pair(seed: 300)
        var clock = MockClock()
        var rng = SeededGenerator(seed: 301)
        let responderPublic = pair.bKey.publicKey.rawRepresentation
        let source = CookieChecker.sourceBytes(address: IPAddress("198.51.100.4")!, port: 40000)
        func initiation(_ index: UInt32) throws -> [UInt8] {
            var b = try pair.a.createInitiation(senderIndex: index, timestamp: clock.timestamp, using: &rng).bytes
            pair.aCookies.addMACs(to: &b, now: clock.now)
            return b
        }

        // Swift's responder under load makes the reply; Python opens it as the initiator would.
        let first = try initiation(0x0101_0101)
        guard case .reply(let reply) = pair.bChecker.screen(first, source: source, underLoad: true, now: clock.now,
                                                            using: &rng) else { return XCTFail("expected a cookie reply") }
        XCTAssertTrue(pair.aCookies.consume(reply, now: clock.now))
        clock.advance(.seconds(5))
        let retry = try initiation(0x0202_0202)
        let checked = try python("check-swift-reply", [responderPublic, pair.bChecker.secret, source, first, reply.bytes, retry])
        XCTAssertEqual(checked.count, 1, "Python opened the cookie and verified MAC1 and MAC2")

        // Python's responder makes the reply; Swift's initiator takes it and signs its retry with it.
        var other = Pair(seed: 302)
        var otherClock = MockClock()
        let secret = rng.bytes(count: 32), nonce = rng.bytes(count: 24)
        let otherPublic = other.bKey.publicKey.rawRepresentation
        var message = try other.a.createInitiation(senderIndex: 0x0303_0303, timestamp: otherClock.timestamp, using: &rng).bytes
        other.aCookies.addMACs(to: &message, now: otherClock.now)
        let pythonReply = try XCTUnwrap(python("make-reply", [otherPublic, secret, source, nonce, message]).first)
        XCTAssertTrue(other.aCookies.consume(try CookieReply(bytes: pythonReply), now: otherClock.now))
        otherClock.advance(.seconds(5))
        var signed = try other.a.createInitiation(senderIndex: 0x0404_0404, timestamp: otherClock.timestamp, using: &rng).bytes
        other.aCookies.addMACs(to: &signed, now: otherClock.now)
        XCTAssertEqual(try python("check-mac2", [otherPublic, secret, source, signed]), [[1]])
        XCTAssertTrue(other.bChecker.checkMAC1(signed))
    }
}
