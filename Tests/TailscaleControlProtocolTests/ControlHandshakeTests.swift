import TailscaleControlProtocol
import TailscaleKeys
import WarrenTestSupport
import XCTest

/// Keys and a completed in-memory handshake shared by the tests.
struct ControlFixture {
    var rng = SeededGenerator(seed: 0xC0_47_20_21)
    let machineKey: MachinePrivate
    let controlKey: MachinePrivate
    let client: ControlClientHandshake
    let accepted: ControlServerHandshake.Accepted
    let clientSession: ControlSession

    init(version: UInt16 = 145) throws {
        machineKey = MachinePrivate.generate(using: &rng)
        controlKey = MachinePrivate.generate(using: &rng)
        client = try ControlClientHandshake(machineKey: machineKey, controlKey: controlKey.publicKey,
                                            protocolVersion: version, ephemeral: MachinePrivate.generate(using: &rng))
        accepted = try ControlServerHandshake.respond(to: client.initiation, controlKey: controlKey,
                                                      ephemeral: MachinePrivate.generate(using: &rng))
        clientSession = try client.receiveResponse(bytes: accepted.response)
    }
}

final class ControlHandshakeTests: XCTestCase {
    func testHandshakeAgreesOnKeysVersionAndHash() throws {
        let f = try ControlFixture(version: 131)
        XCTAssertEqual(f.client.initiation.count, 101)
        XCTAssertEqual(Array(f.client.initiation[0..<5]), [0x00, 131, 0x01, 0x00, 96])
        XCTAssertEqual(f.accepted.response.count, 51)
        XCTAssertEqual(Array(f.accepted.response[0..<3]), [0x02, 0x00, 48])
        XCTAssertEqual(f.accepted.machineKey, f.machineKey.publicKey)
        XCTAssertEqual(f.accepted.session.protocolVersion, 131)
        XCTAssertEqual(f.clientSession.peer, f.controlKey.publicKey)
        XCTAssertEqual(f.clientSession.handshakeHash, f.accepted.session.handshakeHash)
        XCTAssertEqual(f.clientSession.handshakeHash.count, 32)
    }

    func testRecordsFlowBothWays() throws {
        let f = try ControlFixture()
        var clientSession = f.clientSession
        var serverSession = f.accepted.session
        let hello = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
        serverSession.receiver.append(try clientSession.sender.seal(hello))
        XCTAssertEqual(try serverSession.receiver.drainPlaintext(), hello)
        let reply = Array("map response".utf8)
        clientSession.receiver.append(try serverSession.sender.seal(reply))
        XCTAssertEqual(try clientSession.receiver.drainPlaintext(), reply)
        // The nonce advances per record: resending the same bytes must fail.
        let record = try serverSession.sender.seal(reply)
        clientSession.receiver.append(record)
        XCTAssertEqual(try clientSession.receiver.nextPlaintext(), reply)
        clientSession.receiver.append(record)
        XCTAssertThrowsError(try clientSession.receiver.nextPlaintext())
    }

    func testServerWithWrongKeyCannotCompleteAndTamperingIsDetected() throws {
        var f = try ControlFixture()
        let impostor = MachinePrivate.generate(using: &f.rng)
        XCTAssertThrowsError(try ControlServerHandshake.respond(to: f.client.initiation, controlKey: impostor,
                                                                ephemeral: MachinePrivate.generate(using: &f.rng)))
        for index in [0, 1, 4, 10, 40, 90, 100] {
            var tampered = f.client.initiation
            tampered[index] ^= 0x01
            XCTAssertThrowsError(try ControlServerHandshake.respond(to: tampered, controlKey: f.controlKey,
                                                                    ephemeral: MachinePrivate.generate(using: &f.rng)),
                                 "flipping byte \(index) must be detected")
        }
        for index in [0, 2, 3, 20, 50] {
            var tampered = f.accepted.response
            tampered[index] ^= 0x01
            XCTAssertThrowsError(try f.client.receiveResponse(bytes: tampered), "flipping response byte \(index)")
        }
    }

    func testVersionIsAuthenticatedThroughThePrologue() throws {
        var f = try ControlFixture(version: 120)
        var downgraded = f.client.initiation
        downgraded[1] = 100
        XCTAssertThrowsError(try ControlServerHandshake.respond(to: downgraded, controlKey: f.controlKey,
                                                                ephemeral: MachinePrivate.generate(using: &f.rng)))
    }

    func testServerErrorMessageSurfacesAsError() throws {
        let f = try ControlFixture()
        let message = ControlServerHandshake.errorMessage("wrong handshake initiation size")
        XCTAssertEqual(Array(message[0..<3]), [0x03, 0x00, 31])
        XCTAssertThrowsError(try f.client.receiveResponse(bytes: message)) { error in
            XCTAssertEqual((error as? ControlProtocolError)?.code, .serverError("wrong handshake initiation size"))
        }
    }

    func testInitiationParsesAndReencodes() throws {
        let f = try ControlFixture(version: 0xABCD)
        let parsed = try ControlInitiation(bytes: f.client.initiation)
        XCTAssertEqual(parsed.protocolVersion, 0xABCD)
        XCTAssertEqual(parsed.bytes, f.client.initiation)
        XCTAssertThrowsError(try ControlInitiation(bytes: f.client.initiation.dropLast()))
        var wrongType = f.client.initiation
        wrongType[2] = 4
        XCTAssertThrowsError(try ControlInitiation(bytes: wrongType))
    }

    func testFuzzServerHandshake() throws {
        var f = try ControlFixture()
        let ephemeral = MachinePrivate.generate(using: &f.rng)
        let key = f.controlKey
        MutationFuzzer(seeds: [f.client.initiation], iterations: 3_000, maximumLength: 300).run { bytes in
            if let accepted = try? ControlServerHandshake.respond(to: bytes, controlKey: key, ephemeral: ephemeral) {
                XCTAssertEqual(bytes, f.client.initiation, "only the genuine initiation may be accepted")
                XCTAssertEqual(accepted.machineKey, f.machineKey.publicKey)
            }
        }
    }

    func testFuzzClientResponse() throws {
        let f = try ControlFixture()
        let seeds = [f.accepted.response, ControlServerHandshake.errorMessage("nope")]
        MutationFuzzer(seeds: seeds, iterations: 3_000, maximumLength: 300).run { bytes in
            if (try? f.client.receiveResponse(bytes: bytes)) != nil {
                XCTAssertEqual(Array(bytes.prefix(51)), f.accepted.response)
            }
        }
    }
}
