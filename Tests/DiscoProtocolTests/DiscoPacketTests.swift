import DiscoProtocol
import Foundation
import TailscaleKeys
import WarrenPacket
import WarrenTailcfg
import WarrenTestSupport
import XCTest

final class DiscoPacketTests: XCTestCase {
    private var rng = SeededGenerator(seed: 0xD15C0)

    private func keys() -> (DiscoPrivate, DiscoPrivate) {
        (DiscoPrivate.generate(using: &rng), DiscoPrivate.generate(using: &rng))
    }

    private func samples() -> [DiscoMessage] {
        let tx = rng.bytes(count: 12)
        let node = NodePrivate.generate(using: &rng).publicKey
        return [
            .ping(DiscoPing(txID: tx)),
            .ping(DiscoPing(txID: tx, nodeKey: node, padding: 17)),
            .ping(DiscoPing(txID: tx, nodeKey: node, padding: 1300)),
            .pong(DiscoPong(txID: tx, source: AddrPort("100.64.1.2:41641")!)),
            .pong(DiscoPong(txID: tx, source: AddrPort("[2001:db8:1::5]:1")!)),
            .callMeMaybe([]),
            .callMeMaybe([AddrPort("192.0.2.1:1")!, AddrPort("[::1]:2")!, AddrPort("0.0.0.0:0")!]),
            .unknown(type: 7),
        ]
    }

    func testRoundTripAndHeader() throws {
        let (alice, bob) = keys()
        for message in samples() {
            let nonce = rng.bytes(count: 24)
            let datagram = try DiscoPacket.seal(message, from: alice, to: bob.publicKey, nonce: nonce)
            XCTAssertEqual(Array(datagram[0..<6]), [0x54, 0x53, 0xF0, 0x9F, 0x92, 0xAC])
            XCTAssertEqual(Array(datagram[0..<6]), Array("TS💬".utf8))
            XCTAssertEqual(Array(datagram[6..<38]), alice.publicKey.rawRepresentation)
            XCTAssertEqual(Array(datagram[38..<62]), nonce)
            XCTAssertEqual(datagram.count, 62 + 16 + message.encoded().count)
            XCTAssertTrue(DiscoPacket.looksLikeDisco(datagram))
            XCTAssertEqual(DiscoPacket.senderKey(of: datagram), alice.publicKey)
            datagram.withUnsafeBytes {
                XCTAssertTrue(DiscoPacket.looksLikeDisco($0))
                XCTAssertEqual(DiscoPacket.senderKey(of: $0), alice.publicKey)
            }

            let opened = try DiscoPacket.open(datagram, with: bob)
            XCTAssertEqual(opened.sender, alice.publicKey)
            XCTAssertEqual(opened.message, message)

            // With a precomputed key, either direction computes the same one.
            let bobsKey = try DiscoSharedKey(privateKey: bob, peer: alice.publicKey)
            XCTAssertEqual(try DiscoPacket.open(datagram, sharedKey: bobsKey), message)
            let aliceKey = try DiscoSharedKey(privateKey: alice, peer: bob.publicKey)
            let reply = try DiscoPacket.seal(message, from: alice.publicKey, sharedKey: aliceKey, nonce: nonce)
            XCTAssertEqual(reply, datagram)
            // Opening from an ArraySlice (a datagram inside a larger buffer).
            let framed = [0xEE] + datagram + [0xEE]
            XCTAssertEqual(try DiscoPacket.open(framed[1..<(framed.count - 1)], with: bob).message, message)
        }
    }

    func testWrongKeysAndTampering() throws {
        let (alice, bob) = keys()
        let mallory = DiscoPrivate.generate(using: &rng)
        let datagram = try DiscoPacket.seal(samples()[0], from: alice, to: bob.publicKey, nonce: rng.bytes(count: 24))
        XCTAssertThrowsError(try DiscoPacket.open(datagram, with: mallory)) {
            XCTAssertEqual($0 as? DiscoError, .authenticationFailed)
        }
        // A shared key for another sender refuses the datagram before trying the box.
        let otherKey = try DiscoSharedKey(privateKey: bob, peer: mallory.publicKey)
        XCTAssertThrowsError(try DiscoPacket.open(datagram, sharedKey: otherKey)) {
            XCTAssertEqual($0 as? DiscoError, .authenticationFailed)
        }
        // Every single-bit flip after the magic fails (a flipped sender key changes the box key).
        for index in 6..<datagram.count {
            var bent = datagram
            bent[index] ^= 0x01
            XCTAssertThrowsError(try DiscoPacket.open(bent, with: bob), "byte \(index)")
        }
        // A forged sender key header: Mallory's datagram relabelled as Alice's does not open.
        var forged = try DiscoPacket.seal(samples()[0], from: mallory, to: bob.publicKey, nonce: rng.bytes(count: 24))
        forged.replaceSubrange(6..<38, with: alice.publicKey.rawRepresentation)
        XCTAssertThrowsError(try DiscoPacket.open(forged, with: bob))
    }

    func testNotDiscoAndShort() throws {
        let (alice, bob) = keys()
        let datagram = try DiscoPacket.seal(.callMeMaybe([]), from: alice, to: bob.publicKey, nonce: rng.bytes(count: 24))
        XCTAssertEqual(datagram.count, DiscoPacket.minimumMessageByteCount)
        XCTAssertFalse(DiscoPacket.looksLikeDisco(Array(datagram.prefix(61))))
        XCTAssertTrue(DiscoPacket.looksLikeDisco(Array(datagram.prefix(62))))
        XCTAssertNil(DiscoPacket.senderKey(of: Array(datagram.prefix(61))))
        XCTAssertThrowsError(try DiscoPacket.open(Array(datagram.prefix(61)), with: bob)) {
            XCTAssertEqual($0 as? DiscoError, .notDisco)
        }
        XCTAssertThrowsError(try DiscoPacket.open(Array(datagram.prefix(70)), with: bob)) {
            XCTAssertEqual($0 as? DiscoError, .truncated)
        }
        // A WireGuard message (type 4 little-endian) is not disco.
        XCTAssertFalse(DiscoPacket.looksLikeDisco([4, 0, 0, 0] + [UInt8](repeating: 0, count: 100)))
        var notMagic = datagram
        notMagic[5] = 0xAD
        XCTAssertFalse(DiscoPacket.looksLikeDisco(notMagic))
        XCTAssertThrowsError(try DiscoPacket.seal(.callMeMaybe([]), from: alice, to: bob.publicKey, nonce: [1, 2, 3])) {
            XCTAssertEqual($0 as? DiscoError, .invalidNonceSize)
        }
        // A low-order peer key (all zeros) is refused.
        XCTAssertThrowsError(try DiscoSharedKey(privateKey: alice, peer: DiscoPublic(raw: .zero))) {
            XCTAssertEqual($0 as? DiscoError, .invalidPublicKey)
        }
    }

    /// Mutated datagrams and plaintexts never crash; whatever opens re-encodes to a prefix of what it
    /// was decoded from (the decoder drops trailing bytes and nothing else), modulo the zero-key rule.
    func testFuzzOpenAndDecode() throws {
        let (alice, bob) = keys()
        let messages = samples()
        let datagrams = try messages.map { try DiscoPacket.seal($0, from: alice, to: bob.publicKey, nonce: rng.bytes(count: 24)) }
        let bobsKey = try DiscoSharedKey(privateKey: bob, peer: alice.publicKey)
        MutationFuzzer(seeds: datagrams, iterations: 3_000, maximumLength: 1_600, seed: 0xD15C).run { input in
            _ = DiscoPacket.looksLikeDisco(input)
            _ = DiscoPacket.senderKey(of: input)
            _ = try? DiscoPacket.open(input, with: bob)
            _ = try? DiscoPacket.open(input, sharedKey: bobsKey)
        }
        let plaintexts = messages.map { $0.encoded() }
        MutationFuzzer(seeds: plaintexts, iterations: 30_000, maximumLength: 512, seed: 0xC0FFEE).run { input in
            guard let message = try? DiscoMessage(decoding: input) else { return }
            let again = message.encoded()
            XCTAssertEqual(again[0], input[0])
            switch message {
            case .unknown:
                XCTAssertEqual(again, [input[0], 0])
            case .ping(let ping):
                // Padding is re-written as zeros and an all-zero key as absent; TxID and length hold.
                XCTAssertEqual(ping.txID, Array(input[2..<14]))
                XCTAssertEqual(again.count, input.count - (input.count >= 46 && ping.nodeKey == nil ? 32 : 0))
            case .pong, .callMeMaybe:
                XCTAssertEqual(try? DiscoMessage(decoding: again), message)
                XCTAssertEqual(Array(again[2...]), Array(input[2..<again.count]), "payload prefix")
            }
        }
    }

    /// PyNaCl's Box is crypto_box, as Go's nacl/box that Tailscale uses: a datagram sealed in Python
    /// with Tailscale's framing opens here, and ours opens there.
    func testPyNaClCrossCheck() throws {
        do { try PythonRunner.requireModules(["nacl.public"]) } catch { throw XCTSkip("\(error) (pip install pynacl)") }
        let (alice, bob) = keys()
        let hex: ([UInt8]) -> String = { $0.map { String(format: "%02x", $0) }.joined() }
        let script = #"""
import sys, json
from nacl.public import PrivateKey, PublicKey, Box
req = json.loads(sys.stdin.readline())
me = PrivateKey(bytes.fromhex(req["private"]))
dg = bytes.fromhex(req["datagram"])
assert dg[:6] == "TS💬".encode()
box = Box(me, PublicKey(dg[6:38]))
plain = box.decrypt(dg[62:], dg[38:62])
nonce = bytes(range(24))
pong = bytes([2, 0]) + plain[2:14] + bytes(10) + b"\xff\xff" + bytes([192, 0, 2, 44]) + (41641).to_bytes(2, "big")
reply = "TS💬".encode() + bytes(me.public_key) + box.encrypt(pong, nonce)
print(json.dumps({"plain": plain.hex(), "reply": reply.hex()}))
"""#
        let tx = rng.bytes(count: 12)
        let ping = DiscoMessage.ping(DiscoPing(txID: tx, nodeKey: NodePrivate.generate(using: &rng).publicKey))
        let datagram = try DiscoPacket.seal(ping, from: alice, to: bob.publicKey, nonce: rng.bytes(count: 24))
        let answer = try XCTUnwrap(PythonRunner.runJSON(script, request: ["private": hex(bob.rawRepresentation), "datagram": hex(datagram)],
                                                        requiring: ["nacl.public"]) as? [String: String])
        XCTAssertEqual(answer["plain"], hex(ping.encoded()))
        let replyHex = Array(try XCTUnwrap(answer["reply"]).utf8)
        let reply = stride(from: 0, to: replyHex.count, by: 2).map { UInt8(String(decoding: replyHex[$0..<$0 + 2], as: UTF8.self), radix: 16)! }
        let opened = try DiscoPacket.open(reply, with: alice)
        XCTAssertEqual(opened.sender, bob.publicKey)
        XCTAssertEqual(opened.message, .pong(DiscoPong(txID: tx, source: AddrPort("192.0.2.44:41641")!)))
    }
}
