import Synchronization
import WarrenPacket
import WarrenTestSupport
import WireGuardProtocol
import WireGuardUAPI
import XCTest

/// A handler that records what it is given and answers from a fixed snapshot.
final class RecordingHandler: UAPIHandler {
    let state = Mutex<(snapshot: DeviceSnapshot, applied: [DeviceConfigUpdate], failWith: UAPIError?)>(
        (DeviceSnapshot(listenPort: 1234), [], nil))

    func snapshot() -> DeviceSnapshot { state.withLock { $0.snapshot } }

    func apply(_ update: DeviceConfigUpdate) throws(UAPIError) {
        let failure: UAPIError? = state.withLock { s in
            if let error = s.failWith { return error }
            s.applied.append(update)
            return nil
        }
        if let failure { throw failure }
    }

    var applied: [DeviceConfigUpdate] { state.withLock { $0.applied } }
}

/// Runs a connection over `input` delivered in the given chunk sizes; returns the bytes written
/// back and whether the connection asked to be closed.
func converse(_ input: [UInt8], chunks: [Int]? = nil, endOfInput: Bool = true, handler: RecordingHandler)
    -> (output: String, closed: Bool)
{
    var connection = UAPIConnection()
    var output: [UInt8] = []
    var closed = false
    func run(_ actions: [UAPIConnection.Action]) {
        for action in actions {
            switch action {
            case .request(let request): output += request.respond(using: handler)
            case .close: closed = true
            }
        }
    }
    var rest = input[...]
    var sizes = (chunks ?? [input.count])[...]
    while !rest.isEmpty, !closed {
        let size = max(1, sizes.popFirst() ?? rest.count)
        run(connection.receive(rest.prefix(size)))
        rest = rest.dropFirst(size)
    }
    if endOfInput, !closed { run(connection.receiveEndOfInput()) }
    return (String(decoding: output, as: UTF8.self), closed)
}

final class ConnectionTests: XCTestCase {
    let pub = String(repeating: "ab", count: 32)

    func testGet() {
        let handler = RecordingHandler()
        let result = converse(Array("get=1\n\n".utf8), endOfInput: false, handler: handler)
        XCTAssertEqual(result.output, "listen_port=1234\nerrno=0\n\n")
        XCTAssertFalse(result.closed)
    }

    func testSeveralRequestsOnOneConnection() {
        let handler = RecordingHandler()
        let input = "set=1\nlisten_port=1\n\nget=1\n\nset=1\nlisten_port=x\n\nset=1\nfwmark=3\n\nget=1\n\n"
        let result = converse(Array(input.utf8), handler: handler)
        XCTAssertEqual(result.output, "errno=0\n\nlisten_port=1234\nerrno=0\n\nerrno=-22\n\nerrno=0\n\nlisten_port=1234\nerrno=0\n\n")
        XCTAssertEqual(handler.applied, [DeviceConfigUpdate(listenPort: 1), DeviceConfigUpdate(fwmark: 3)])
        XCTAssertTrue(result.closed)
    }

    func testDripFedAndShuffledChunkingGiveTheSameAnswers() {
        let input = Array("set=1\npublic_key=\(pub)\nallowed_ip=10.0.0.0/8\n\nget=1\n\nset=1\nfoo\n\n".utf8)
        let whole = converse(input, handler: RecordingHandler())
        XCTAssertEqual(whole.output, "errno=0\n\nlisten_port=1234\nerrno=0\n\nerrno=-71\n\n")
        XCTAssertEqual(converse(input, chunks: Array(repeating: 1, count: input.count), handler: RecordingHandler()).output, whole.output)
        var rng = SeededGenerator(seed: 7)
        for _ in 0..<50 {
            let chunks = (0..<input.count).map { _ in Int.random(in: 1...9, using: &rng) }
            let handler = RecordingHandler()
            XCTAssertEqual(converse(input, chunks: chunks, handler: handler).output, whole.output)
            XCTAssertEqual(handler.applied.count, 1)
        }
    }

    func testMalformedSetAppliesNothing() {
        let handler = RecordingHandler()
        let result = converse(Array("set=1\nlisten_port=5\npublic_key=\(pub)\nallowed_ip=bad\n\n".utf8), handler: handler)
        XCTAssertEqual(result.output, "errno=-22\n\n")
        XCTAssertTrue(handler.applied.isEmpty)
    }

    func testHandlerErrorsAreAnswered() {
        let handler = RecordingHandler()
        handler.state.withLock { $0.failWith = UAPIError(.portInUse, "taken") }
        XCTAssertEqual(converse(Array("set=1\nlisten_port=5\n\n".utf8), handler: handler).output, "errno=-98\n\n")
        handler.state.withLock { $0.failWith = UAPIError(.unknown, "?") }
        XCTAssertEqual(converse(Array("set=1\n\n".utf8), handler: handler).output, "errno=-55\n\n")
    }

    func testGetWithTrailingCharacterIsEINVALAndTheConnectionGoesOn() {
        let result = converse(Array("get=1\nxget=1\n\n".utf8), endOfInput: false, handler: RecordingHandler())
        XCTAssertEqual(result.output, "errno=-22\n\nlisten_port=1234\nerrno=0\n\n")
        XCTAssertFalse(result.closed)
    }

    func testUnknownOperationClosesWithoutAnswer() {
        for input in ["hello\n", "get=2\n\n", "set=1 \n\n", "GET=1\n\n", "\n", "get=1\r\n\n"] {
            let result = converse(Array(input.utf8), endOfInput: false, handler: RecordingHandler())
            XCTAssertEqual(result.output, "", input.debugDescription)
            XCTAssertTrue(result.closed, input.debugDescription)
        }
        // An endless first line is not buffered forever.
        let endless = converse([UInt8](repeating: UInt8(ascii: "g"), count: 10_000), endOfInput: false, handler: RecordingHandler())
        XCTAssertTrue(endless.closed)
    }

    func testSetCutShortByEndOfInputIsApplied() {
        let handler = RecordingHandler()
        let result = converse(Array("set=1\nlisten_port=9\nfwmark=4".utf8), handler: handler)
        XCTAssertEqual(result.output, "errno=0\n\n")
        XCTAssertEqual(handler.applied, [DeviceConfigUpdate(listenPort: 9, fwmark: 4)])
        XCTAssertTrue(result.closed)
    }

    func testEndOfInputMidGetClosesSilently() {
        let result = converse(Array("get=1\n".utf8), handler: RecordingHandler())
        XCTAssertEqual(result.output, "")
        XCTAssertTrue(result.closed)
    }

    func testOverlongSetLineIsEIOThenClose() {
        let long = "set=1\nfoo=" + String(repeating: "a", count: 70_000)
        let result = converse(Array(long.utf8), chunks: [4096], endOfInput: false, handler: RecordingHandler())
        XCTAssertEqual(result.output, "errno=-5\n\n")
        XCTAssertTrue(result.closed)
    }

    func testLargeSetWithManyLines() {
        var body = "set=1\npublic_key=\(pub)\n"
        for i in 0..<20_000 { body += "allowed_ip=10.\(i >> 8).\(i & 255).0/24\n" }
        body += "\n"
        let handler = RecordingHandler()
        XCTAssertEqual(converse(Array(body.utf8), chunks: [1000], endOfInput: false, handler: handler).output, "errno=0\n\n")
        XCTAssertEqual(handler.applied.first?.peers.first?.allowedIPs.count, 20_000)
    }

    func testNothingIsReadAfterClose() {
        var connection = UAPIConnection()
        XCTAssertEqual(connection.receive(Array("bad\n".utf8)), [.close])
        XCTAssertTrue(connection.isClosed)
        XCTAssertEqual(connection.receive(Array("get=1\n\n".utf8)), [])
    }
}

final class FuzzTests: XCTestCase {
    func testFuzzSetParser() {
        let seeds = [SetRequestTests.capturedWgSet, SetRequestTests.capturedWgSetconf,
                     "public_key=\(String(repeating: "ab", count: 32))\nremove=true\nreplace_allowed_ips=true\n"
                        + "endpoint=[::1]:1\nprotocol_version=1\nupdate_only=true\n"]
            .map { Array($0.utf8) }
        MutationFuzzer(seeds: seeds, iterations: 20_000, seed: 0xA11).run { bytes in
            do throws(UAPIError) {
                let update = try DeviceConfigUpdate(parsingSetRequest: bytes)
                // Anything that parses survives a format-and-parse round trip.
                let again = try DeviceConfigUpdate(parsingSetRequest: Array(update.setRequest.utf8).dropFirst(6))
                XCTAssertEqual(again, update)
            } catch {
                XCTAssertNotEqual(error.wireErrno, 0)
            }
        }
    }

    func testFuzzConnection() {
        let seeds = ["get=1\n\nset=1\n" + SetRequestTests.capturedWgSet + "get=1\n\n",
                     "set=1\n" + SetRequestTests.capturedWgSetconf]
            .map { Array($0.utf8) }
        var rng = SeededGenerator(seed: 3)
        MutationFuzzer(seeds: seeds, iterations: 5_000, seed: 0xC0).run { bytes in
            let chunks = (0..<8).map { _ in Int.random(in: 1...64, using: &rng) }
            let result = converse(bytes, chunks: chunks, handler: RecordingHandler())
            XCTAssertTrue(result.output.isEmpty || result.output.hasSuffix("\n\n"))
        }
    }

    func testFuzzGetResponseParser() {
        let seeds = [Array(DeviceSnapshot(privateKey: priv(1), listenPort: 5, peers: [PeerSnapshot(publicKey: pub(2),
            endpoint: UAPIEndpoint("1.2.3.4:5"), allowedIPs: [IPPrefix("10.0.0.0/8")!])]).getResponse.utf8)]
        MutationFuzzer(seeds: seeds, iterations: 10_000, seed: 0x6E7).run { bytes in
            _ = try? DeviceSnapshot(parsingGetResponse: String(decoding: bytes, as: UTF8.self))
        }
    }
}
