import DiscoProtocol
import TailscaleKeys
import WarrenPacket
import WarrenTailcfg
import XCTest

/// Plaintext layouts. The expected bytes follow the facts of Tailscale's disco_test.go (type,
/// version, 12-byte TxID, optional node key, zero padding; endpoints as a 16-byte v4-mapped address
/// and a big-endian port), with our own values.
final class DiscoMessageTests: XCTestCase {
    private func hex(_ text: String) -> [UInt8] {
        let digits = text.filter { !$0.isWhitespace }.utf8.map { $0 }
        return stride(from: 0, to: digits.count, by: 2).map {
            UInt8(String(decoding: digits[$0..<$0 + 2], as: UTF8.self), radix: 16)!
        }
    }

    private let tx: [UInt8] = [0xA0, 0xA1, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xAB]
    private var txHex: String { "a0 a1 a2 a3 a4 a5 a6 a7 a8 a9 aa ab" }

    private func nodeKey() -> NodePublic {
        var raw = [UInt8](repeating: 0, count: 32)
        raw[0] = 0x11; raw[5] = 0x55; raw[31] = 0xEE
        return NodePublic(rawRepresentation: raw)!
    }
    private var nodeKeyHex: String { "11 00 00 00 00 55" + String(repeating: " 00", count: 25) + " ee" }

    private func check(_ message: DiscoMessage, _ expected: String, file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertEqual(message.encoded(), hex(expected), file: file, line: line)
        XCTAssertEqual(try DiscoMessage(decoding: hex(expected)), message, file: file, line: line)
    }

    func testPingLayouts() throws {
        try check(.ping(DiscoPing(txID: tx)), "01 00 " + txHex)
        try check(.ping(DiscoPing(txID: tx, nodeKey: nodeKey())), "01 00 " + txHex + " " + nodeKeyHex)
        try check(.ping(DiscoPing(txID: tx, padding: 5)), "01 00 " + txHex + " 00 00 00 00 00")
        try check(.ping(DiscoPing(txID: tx, nodeKey: nodeKey(), padding: 2)), "01 00 " + txHex + " " + nodeKeyHex + " 00 00")
        XCTAssertEqual(DiscoMessage.ping(DiscoPing(txID: tx, nodeKey: nodeKey(), padding: 1200)).encoded().count, 2 + 12 + 32 + 1200)
    }

    func testPingAmbiguities() throws {
        // 12..<44 payload bytes: no key, the rest is padding. 44 or more: the next 32 bytes are the
        // key; an all-zero key reads as absent (what an unkeyed ping with 32+ bytes of padding gives).
        let unkeyedLongPadding = DiscoMessage.ping(DiscoPing(txID: tx, padding: 40)).encoded()
        XCTAssertEqual(try DiscoMessage(decoding: unkeyedLongPadding), .ping(DiscoPing(txID: tx, padding: 8)))
        XCTAssertEqual(try DiscoMessage(decoding: hex("01 00 " + txHex + String(repeating: " 00", count: 31))),
                       .ping(DiscoPing(txID: tx, padding: 31)))
        // A non-zero version is read with the version 0 layout; a zero key is never written.
        XCTAssertEqual(try DiscoMessage(decoding: hex("01 07 " + txHex)), .ping(DiscoPing(txID: tx)))
        XCTAssertEqual(DiscoMessage.ping(DiscoPing(txID: tx, nodeKey: NodePublic(raw: .zero))).encoded(), hex("01 00 " + txHex))
        // A short TxID is zero-filled, a long one cut.
        XCTAssertEqual(DiscoMessage.ping(DiscoPing(txID: [1, 2])).encoded(), [1, 0, 1, 2] + [UInt8](repeating: 0, count: 10))
        XCTAssertEqual(DiscoMessage.ping(DiscoPing(txID: [UInt8](repeating: 9, count: 20))).encoded().count, 14)
    }

    func testPongLayouts() throws {
        try check(.pong(DiscoPong(txID: tx, source: AddrPort("198.51.100.7:41641")!)),
                  "02 00 " + txHex + " 00 00 00 00 00 00 00 00 00 00 ff ff c6 33 64 07 a2 a9")
        try check(.pong(DiscoPong(txID: tx, source: AddrPort("[2001:db8::9]:443")!)),
                  "02 00 " + txHex + " 20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 09 01 bb")
        // Trailing bytes are ignored; a short pong is an error.
        XCTAssertEqual(try DiscoMessage(decoding: hex("02 00 " + txHex + " 00 00 00 00 00 00 00 00 00 00 ff ff 0a 00 00 01 00 50 de ad")),
                       .pong(DiscoPong(txID: tx, source: AddrPort("10.0.0.1:80")!)))
        XCTAssertThrowsError(try DiscoMessage(decoding: hex("02 00 " + txHex + " 00 00"))) {
            XCTAssertEqual($0 as? DiscoError, .truncated)
        }
    }

    func testCallMeMaybeLayouts() throws {
        try check(.callMeMaybe([]), "03 00")
        try check(.callMeMaybe([AddrPort("203.0.113.9:3478")!, AddrPort("[fd00::1:2]:65535")!]),
                  "03 00 00 00 00 00 00 00 00 00 00 00 ff ff cb 00 71 09 0d 96"
                  + " fd 00 00 00 00 00 00 00 00 00 00 00 00 01 00 02 ff ff")
        XCTAssertThrowsError(try DiscoMessage(decoding: hex("03 00 01 02 03"))) {
            XCTAssertEqual($0 as? DiscoError, .partialEndpoint)
        }
    }

    func testUnknownAndShort() throws {
        XCTAssertEqual(try DiscoMessage(decoding: [0x04, 0x00, 1, 2, 3]), .unknown(type: 4))
        XCTAssertEqual(try DiscoMessage(decoding: [0xFF, 0x09]), .unknown(type: 0xFF))
        XCTAssertEqual(DiscoMessage.unknown(type: 9).encoded(), [9, 0])
        XCTAssertThrowsError(try DiscoMessage(decoding: [UInt8]()))
        XCTAssertThrowsError(try DiscoMessage(decoding: [0x01]))
        XCTAssertThrowsError(try DiscoMessage(decoding: hex("01 00 01 02 03")))
        XCTAssertEqual(DiscoMessage.pong(DiscoPong(txID: tx, source: AddrPort("1.2.3.4:5")!)).type, 2)
    }
}
