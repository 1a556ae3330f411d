import STUNProtocol
import WarrenPacket
import WarrenTestSupport
import XCTest

private func hex(_ text: String) -> [UInt8] {
    let chars = Array(text.utf8)
    return stride(from: 0, to: chars.count, by: 2).map { UInt8(String(decoding: chars[$0..<$0 + 2], as: UTF8.self), radix: 16)! }
}

final class STUNTests: XCTestCase {
    // RFC 5769 section 2.
    let password = Array("VOkJxbRl1RmTxUk/WvJxBt".utf8)
    let transactionID = hex("b7e7a701bc34d686fa87dfae")
    let sampleRequest = hex("000100582112a442b7e7a701bc34d686fa87dfae802200105354554e207465737420636c69656e74002400046e0001ff"
                            + "80290008932ff9b151263b36000600096576746a3a68367659202020000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1"
                            + "b571a280280004e57a3bcf")
    let sampleIPv4Response = hex("0101003c2112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f7220002000080001a147e112a643"
                                 + "000800142b91f599fd9e90c38c7489f92af9ba53f06be7d780280004c07d4c96")
    let sampleIPv6Response = hex("010100482112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f7220002000140002a1470113a9fa"
                                 + "a5d3f179bc25f4b5bed2b9d900080014a382954e4be67bf11784c97c8292c275bfe3ed4180280004c8fb0b4c")

    func testCRC32CheckValue() {
        XCTAssertEqual(CRC32.checksum(Array("123456789".utf8)), 0xCBF4_3926)
    }

    func testRFC5769SampleRequest() throws {
        let message = try STUNMessage(parsing: sampleRequest)
        XCTAssertEqual(message.type, STUNWire.bindingRequest)
        XCTAssertEqual(message.transactionID, transactionID)
        XCTAssertEqual(message.attribute(STUNAttributeType.software), Array("STUN test client".utf8))
        XCTAssertEqual(message.attribute(STUNAttributeType.username), Array("evtj:h6vY".utf8))
        XCTAssertTrue(STUNMessage.verifyMessageIntegrity(sampleRequest, key: password))
        XCTAssertFalse(STUNMessage.verifyMessageIntegrity(sampleRequest, key: Array("wrong".utf8)))
        XCTAssertTrue(STUNMessage.verifyFingerprint(sampleRequest))
        XCTAssertEqual(try STUNBinding.parseRequest(sampleRequest, requireTailscaleSoftware: false), transactionID)
        XCTAssertThrowsError(try STUNBinding.parseRequest(sampleRequest)) { error in
            XCTAssertEqual((error as? STUNError)?.code, .wrongSoftware)
        }

        // Rebuild it from its attributes: same bytes, integrity and fingerprint included.
        let rebuilt = STUNMessage(type: STUNWire.bindingRequest, transactionID: transactionID, attributes: [
            STUNAttribute(type: STUNAttributeType.software, value: Array("STUN test client".utf8)),
            STUNAttribute(type: STUNAttributeType.priority, value: hex("6e0001ff")),
            STUNAttribute(type: STUNAttributeType.iceControlled, value: hex("932ff9b151263b36")),
            STUNAttribute(type: STUNAttributeType.username, value: Array("evtj:h6vY".utf8)),
        ])
        XCTAssertEqual(try rebuilt.encoded(paddingByte: 0x20, messageIntegrityKey: password, fingerprint: true), sampleRequest)
    }

    func testRFC5769SampleIPv4Response() throws {
        let address = try XCTUnwrap(IPAddress("192.0.2.1"))
        let built = try STUNMessage(type: STUNWire.bindingSuccessResponse, transactionID: transactionID, attributes: [
            STUNAttribute(type: STUNAttributeType.software, value: Array("test vector".utf8)),
            STUNBinding.xorMappedAddress(transactionID: transactionID, address: address, port: 32853),
        ]).encoded(paddingByte: 0x20, messageIntegrityKey: password, fingerprint: true)
        XCTAssertEqual(built, sampleIPv4Response)
        let parsed = try STUNBinding.parseResponse(sampleIPv4Response)
        XCTAssertEqual(parsed.transactionID, transactionID)
        XCTAssertEqual(parsed.address, address)
        XCTAssertEqual(parsed.port, 32853)
        XCTAssertTrue(STUNMessage.verifyMessageIntegrity(sampleIPv4Response, key: password))
        XCTAssertTrue(STUNMessage.verifyFingerprint(sampleIPv4Response))
    }

    func testRFC5769SampleIPv6Response() throws {
        let address = try XCTUnwrap(IPAddress("2001:db8:1234:5678:11:2233:4455:6677"))
        let built = try STUNMessage(type: STUNWire.bindingSuccessResponse, transactionID: transactionID, attributes: [
            STUNAttribute(type: STUNAttributeType.software, value: Array("test vector".utf8)),
            STUNBinding.xorMappedAddress(transactionID: transactionID, address: address, port: 32853),
        ]).encoded(paddingByte: 0x20, messageIntegrityKey: password, fingerprint: true)
        XCTAssertEqual(built, sampleIPv6Response)
        let parsed = try STUNBinding.parseResponse(sampleIPv6Response)
        XCTAssertEqual(parsed.address, address)
        XCTAssertEqual(parsed.port, 32853)
        XCTAssertTrue(STUNMessage.verifyFingerprint(sampleIPv6Response))
    }

    func testTailscaleBindingRequestLayoutAndServerRules() throws {
        let request = try STUNBinding.request(transactionID: transactionID)
        XCTAssertEqual(request.count, 40)
        XCTAssertEqual(Array(request[0..<20]), [0x00, 0x01, 0x00, 0x14, 0x21, 0x12, 0xA4, 0x42] + transactionID)
        XCTAssertEqual(Array(request[20..<32]), [0x80, 0x22, 0x00, 0x08] + Array("tailnode".utf8))
        XCTAssertEqual(Array(request[32..<36]), [0x80, 0x28, 0x00, 0x04])
        let crc = CRC32.checksum(request[0..<32]) ^ 0x5354_554E
        XCTAssertEqual(Array(request[36..<40]), [UInt8(crc >> 24), UInt8(crc >> 16 & 0xFF), UInt8(crc >> 8 & 0xFF), UInt8(crc & 0xFF)])
        XCTAssertEqual(try STUNBinding.parseRequest(request), transactionID)

        var tampered = request
        tampered[10] ^= 1
        XCTAssertThrowsError(try STUNBinding.parseRequest(tampered)) { XCTAssertEqual(($0 as? STUNError)?.code, .wrongFingerprint) }
        let noFingerprint = try STUNMessage(type: STUNWire.bindingRequest, transactionID: transactionID, attributes: [
            STUNAttribute(type: STUNAttributeType.software, value: Array("tailnode".utf8)),
        ]).encoded()
        XCTAssertThrowsError(try STUNBinding.parseRequest(noFingerprint)) { XCTAssertEqual(($0 as? STUNError)?.code, .noFingerprint) }
        XCTAssertThrowsError(try STUNBinding.parseRequest(sampleIPv4Response)) { XCTAssertEqual(($0 as? STUNError)?.code, .notBindingRequest) }
        XCTAssertThrowsError(try STUNBinding.parseRequest([UInt8](repeating: 0, count: 48))) { XCTAssertEqual(($0 as? STUNError)?.code, .notSTUN) }
    }

    func testResponsesRoundTripForBothFamilies() throws {
        for (text, port) in [("100.64.0.7", UInt16(41641)), ("fd7a:115c:a1e0::1", UInt16(3478)), ("::ffff:1.2.3.4", UInt16(1))] {
            let address = try XCTUnwrap(IPAddress(text))
            let response = try STUNBinding.response(transactionID: transactionID, address: address, port: port)
            XCTAssertTrue(STUNMessage.verifyFingerprint(response))
            let parsed = try STUNBinding.parseResponse(response)
            XCTAssertEqual(parsed.port, port)
            XCTAssertEqual(parsed.transactionID, transactionID)
            XCTAssertEqual(parsed.address, text.hasPrefix("::ffff:") ? IPAddress("1.2.3.4") : address)
        }
        XCTAssertThrowsError(try STUNBinding.response(transactionID: [1, 2, 3], address: .v4(1), port: 1))
    }

    /// Responses from real servers, as recorded in Tailscale's net/stun tests.
    func testRecordedServerResponses() throws {
        // XOR-MAPPED-ADDRESS only.
        let google = hex("0101000c2112a4422360b11e3ec68ffa93e08007002000080001c7866957856f")
        XCTAssertEqual(try STUNBinding.parseResponse(google).address, IPAddress("72.69.33.45"))
        XCTAssertEqual(try STUNBinding.parseResponse(google).port, 59028)
        // MAPPED-ADDRESS only (an RFC 3489-era server).
        let powervoip = hex("010100242112a4427e57966829f444609d1deaa600010008" + "0001e9d348452" + "12d00040008" + "00010d964d48a9d4"
                            + "0005000800010d974d48a9d5")
        XCTAssertEqual(try STUNBinding.parseResponse(powervoip).address, IPAddress("72.69.33.45"))
        XCTAssertEqual(try STUNBinding.parseResponse(powervoip).port, 59859)
        // Trailing bytes after the message are ignored.
        let pion = hex("010100242112a442ebc2d36ef471217c4f3e308e8022000a656e64706f696e746572000000200008"
                       + "0001ce665e12a443802800 04b699bb02010100242112a442".replacingOccurrences(of: " ", with: ""))
        XCTAssertEqual(try STUNBinding.parseResponse(pion).address, IPAddress("127.0.0.1"))
        XCTAssertEqual(try STUNBinding.parseResponse(pion).port, 61300)
    }

    func testMalformedAttributesAreRejected() {
        var bad = sampleIPv4Response
        bad[23] = 0xFF  // SOFTWARE claims 255 bytes
        XCTAssertThrowsError(try STUNMessage(parsing: bad))
        var short = sampleIPv4Response
        short[3] = 0xFF  // message length beyond the datagram
        XCTAssertThrowsError(try STUNMessage(parsing: short))
    }

    func testFuzzParsers() throws {
        let seeds = [sampleRequest, sampleIPv4Response, sampleIPv6Response, try STUNBinding.request(transactionID: transactionID)]
        MutationFuzzer(seeds: seeds, iterations: 20_000, maximumLength: 600).run { bytes in
            _ = try? STUNMessage(parsing: bytes)
            _ = try? STUNBinding.parseRequest(bytes)
            _ = try? STUNBinding.parseRequest(bytes, requireTailscaleSoftware: false)
            _ = try? STUNBinding.parseResponse(bytes)
            _ = STUNMessage.verifyFingerprint(bytes)
            _ = STUNMessage.verifyMessageIntegrity(bytes, key: password)
        }
    }
}
