import Foundation
import TailscaleKeys
import WarrenTestSupport
import XCTest

final class TailscaleKeysTests: XCTestCase {
    // RFC 7748 section 6.1.
    let alicePrivate = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
    let alicePublic = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    let bobPublic = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
    let shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"

    func testPublicKeyDerivationAndSharedSecretMatchRFC7748() throws {
        let alice = try XCTUnwrap(Key32(hex: alicePrivate))
        let machine = MachinePrivate(raw: alice)
        XCTAssertEqual(machine.publicKey.raw.hex, alicePublic)
        let bob = try XCTUnwrap(Key32(hex: bobPublic))
        XCTAssertEqual(Key32(bytes: try machine.sharedSecret(with: MachinePublic(raw: bob)))?.hex, shared)
        XCTAssertEqual(NodePrivate(raw: alice).publicKey.raw.hex, alicePublic)
        XCTAssertEqual(DiscoPrivate(raw: alice).publicKey.raw.hex, alicePublic)
    }

    func testTextFormsUseTailscalePrefixes() throws {
        let raw = try XCTUnwrap(Key32(hex: alicePublic))
        XCTAssertEqual(MachinePublic(raw: raw).description, "mkey:" + alicePublic)
        XCTAssertEqual(NodePublic(raw: raw).description, "nodekey:" + alicePublic)
        XCTAssertEqual(DiscoPublic(raw: raw).description, "discokey:" + alicePublic)
        XCTAssertEqual(ChallengePublic(raw: raw).description, "chalpub:" + alicePublic)
        let priv = try XCTUnwrap(Key32(hex: alicePrivate))
        XCTAssertEqual(MachinePrivate(raw: priv).textRepresentation, "privkey:" + alicePrivate)
        XCTAssertEqual(NodePrivate(raw: priv).textRepresentation, "privkey:" + alicePrivate)
        XCTAssertFalse(MachinePrivate(raw: priv).description.contains(alicePrivate), "description must not leak the secret")
    }

    func testParsingAcceptsEitherCaseAndRejectsWrongPrefixOrLength() throws {
        XCTAssertEqual(NodePublic("nodekey:" + alicePublic.uppercased())?.raw.hex, alicePublic)
        XCTAssertNil(NodePublic("mkey:" + alicePublic))
        XCTAssertNil(NodePublic(alicePublic))
        XCTAssertNil(NodePublic("nodekey:" + alicePublic.dropLast()))
        XCTAssertNil(NodePublic("nodekey:" + alicePublic + "00"))
        XCTAssertNil(NodePublic("nodekey:" + alicePublic.dropLast() + "g"))
        XCTAssertThrowsError(try MachinePublic(parsing: "nodekey:" + alicePublic))
        XCTAssertNoThrow(try MachinePrivate(parsing: "privkey:" + alicePrivate))
    }

    func testJSONCodingUsesTextForm() throws {
        struct Sample: Codable, Equatable {
            var Key: NodePublic
            var Machine: MachinePublic
            var DiscoKey: DiscoPublic
            var Private: MachinePrivate
        }
        let pub = try XCTUnwrap(Key32(hex: alicePublic))
        let priv = try XCTUnwrap(Key32(hex: alicePrivate))
        let sample = Sample(Key: NodePublic(raw: pub), Machine: MachinePublic(raw: pub), DiscoKey: DiscoPublic(raw: pub),
                            Private: MachinePrivate(raw: priv))
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let json = String(decoding: try encoder.encode(sample), as: UTF8.self)
        XCTAssertEqual(json, #"{"DiscoKey":"discokey:\#(alicePublic)","Key":"nodekey:\#(alicePublic)","#
                       + #""Machine":"mkey:\#(alicePublic)","Private":"privkey:\#(alicePrivate)"}"#)
        XCTAssertEqual(try JSONDecoder().decode(Sample.self, from: Data(json.utf8)), sample)
        let swapped = json.replacingOccurrences(of: "\"nodekey:", with: "\"discokey:")
        XCTAssertThrowsError(try JSONDecoder().decode(Sample.self, from: Data(swapped.utf8)))
    }

    func testShortStringIsFirstFiveBase64Digits() throws {
        let key = NodePublic(raw: try XCTUnwrap(Key32(hex: alicePublic)))
        let expected = "[" + String(Data(key.rawRepresentation).base64EncodedString().prefix(5)) + "]"
        XCTAssertEqual(key.shortString, expected)
        XCTAssertEqual(NodePublic(raw: .zero).shortString, "")
    }

    func testPrivateKeysCompareByValueAndGenerationIsSeededAndClamped() {
        var a = SeededGenerator(seed: 7)
        var b = SeededGenerator(seed: 7)
        let k1 = NodePrivate.generate(using: &a)
        let k2 = NodePrivate.generate(using: &b)
        XCTAssertEqual(k1, k2)
        XCTAssertNotEqual(k1, NodePrivate.generate(using: &a))
        let bytes = k1.rawRepresentation
        XCTAssertEqual(bytes[0] & 7, 0)
        XCTAssertEqual(bytes[31] & 0xC0, 0x40)
    }

    func testLowOrderPeerKeyIsRejected() {
        var rng = SeededGenerator(seed: 1)
        let key = MachinePrivate.generate(using: &rng)
        XCTAssertThrowsError(try key.sharedSecret(with: MachinePublic(raw: .zero)))
    }

    func testKeyOrderingMatchesByteOrder() throws {
        let a = try XCTUnwrap(Key32(bytes: [0x01] + [UInt8](repeating: 0xFF, count: 31)))
        let b = try XCTUnwrap(Key32(bytes: [0x02] + [UInt8](repeating: 0x00, count: 31)))
        XCTAssertLessThan(a, b)
        XCTAssertEqual(Key32(bytes: a.bytes), a)
    }

    func testFuzzTextParsing() {
        let seeds = [Array(("nodekey:" + alicePublic).utf8), Array(("privkey:" + alicePrivate).utf8)]
        MutationFuzzer(seeds: seeds, iterations: 5_000, maximumLength: 200).run { bytes in
            let text = String(decoding: bytes, as: UTF8.self)
            if let key = NodePublic(text) { XCTAssertEqual(NodePublic(key.description), key) }
            _ = try? NodePrivate(parsing: text)
        }
    }
}

final class Key32WordsTests: XCTestCase {
    func testBigEndianWordsMatchTheBytes() throws {
        let bytes = (0..<32).map { UInt8($0 * 7 + 1) }
        let key = try XCTUnwrap(Key32(bytes: bytes))
        XCTAssertEqual(key.bytes, bytes)
        let words = key.bigEndianWords
        XCTAssertEqual(words.0, 0x0108_0F16_1D24_2B32)
        XCTAssertEqual(Key32(bigEndianWords: words), key)
        // Contiguous (array slice) and non-contiguous (reversed twice) inputs agree.
        XCTAssertEqual(Key32(bytes: ([0] + bytes)[1...]), key)
        XCTAssertEqual(Key32(bytes: bytes.reversed().reversed()), key)
        XCTAssertEqual(Key32(bytes: bytes.lazy.map { $0 }), key)
        XCTAssertNil(Key32(bytes: bytes.dropLast()))
    }
}
