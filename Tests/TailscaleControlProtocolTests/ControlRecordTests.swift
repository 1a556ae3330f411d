import TailscaleControlProtocol
import TailscaleKeys
import WarrenTestSupport
import XCTest

final class ControlRecordTests: XCTestCase {
    /// Feeds `stream` to a fresh copy of `receiver` in the given chunk sizes and returns all plaintext.
    private func feed(_ stream: [UInt8], to receiver: ControlRecordReceiver, chunks: [Int]) throws -> [UInt8] {
        var receiver = receiver
        var out = [UInt8]()
        var offset = 0
        var i = 0
        while offset < stream.count {
            let size = max(1, chunks.isEmpty ? stream.count : chunks[i % chunks.count])
            let end = min(stream.count, offset + size)
            receiver.append(stream[offset..<end])
            out += try receiver.drainPlaintext()
            offset = end
            i += 1
        }
        return out
    }

    private func makeStream() throws -> (stream: [UInt8], plaintext: [UInt8], receiver: ControlRecordReceiver) {
        var f = try ControlFixture()
        var sender = f.clientSession.sender
        var plaintext = [UInt8]()
        var stream = [UInt8]()
        // Small, empty, exactly-one-record and multi-record writes.
        for size in [5, 0, ControlWire.maximumPlaintextLength, 10_000, 1] {
            let chunk = f.rng.bytes(count: size)
            plaintext += chunk
            stream += try sender.seal(chunk)
        }
        return (stream, plaintext, f.accepted.session.receiver)
    }

    func testRecordFramingLimits() throws {
        var f = try ControlFixture()
        var sender = f.clientSession.sender
        let big = try sender.seal(f.rng.bytes(count: ControlWire.maximumPlaintextLength + 1))
        // Two records: 4096 bytes, then 3 + 1 + 16.
        XCTAssertEqual(big.count, 4096 + 20)
        XCTAssertEqual(Array(big[0..<3]), [0x04, 0x0F, 0xFD])
        XCTAssertEqual(Array(big[4096..<4099]), [0x04, 0x00, 17])
        let empty = try sender.seal([UInt8]())
        XCTAssertEqual(empty.count, 3 + 16)
        XCTAssertEqual(sender.recordsSealed, 3)
    }

    func testDripFedOneByteAtATime() throws {
        let (stream, plaintext, receiver) = try makeStream()
        XCTAssertEqual(try feed(stream, to: receiver, chunks: [1]), plaintext)
    }

    func testAllAtOnce() throws {
        let (stream, plaintext, receiver) = try makeStream()
        XCTAssertEqual(try feed(stream, to: receiver, chunks: []), plaintext)
    }

    func testRandomSplits() throws {
        let (stream, plaintext, receiver) = try makeStream()
        var rng = SeededGenerator(seed: 99)
        for _ in 0..<20 {
            let chunks = (0..<16).map { _ in Int.random(in: 1...700, using: &rng) }
            XCTAssertEqual(try feed(stream, to: receiver, chunks: chunks), plaintext)
        }
    }

    func testTamperedRecordIsRejectedAndReceiverStaysFailed() throws {
        let (stream, _, receiver) = try makeStream()
        for index in [0, 1, 2, 3, 10, 30] {
            var tampered = stream
            tampered[index] ^= 0x80
            XCTAssertThrowsError(try feed(tampered, to: receiver, chunks: []), "byte \(index)")
        }
        var failing = receiver
        var tampered = stream
        tampered[5] ^= 1
        failing.append(tampered)
        XCTAssertThrowsError(try failing.nextPlaintext())
        XCTAssertThrowsError(try failing.nextPlaintext()) { error in
            XCTAssertEqual((error as? ControlProtocolError)?.code, .channelFailed)
        }
    }

    func testOversizedRecordHeaderIsRejectedBeforeBuffering() throws {
        let (_, _, receiver) = try makeStream()
        var r = receiver
        r.append([0x04, 0x0F, 0xFE])  // 3 + 4094 > 4096
        XCTAssertThrowsError(try r.nextPlaintext()) { error in
            XCTAssertEqual((error as? ControlProtocolError)?.code, .recordTooLarge(4097))
        }
    }

    func testEarlyPayloadFramingAndDetection() throws {
        let json = Array(#"{"nodeKeyChallenge":"chalpub:00"}"#.utf8)
        let framed = ControlEarlyPayload.frame(json: json)
        XCTAssertEqual(Array(framed[0..<9]), [0xFF, 0xFF, 0xFF, 0x54, 0x53, 0, 0, 0, UInt8(json.count)])
        XCTAssertEqual(try ControlEarlyPayload.detect(framed), .present(length: json.count))
        XCTAssertEqual(try ControlEarlyPayload.detect(framed.prefix(8)), .needMoreBytes)
        // An HTTP/2 SETTINGS frame header.
        XCTAssertEqual(try ControlEarlyPayload.detect([0, 0, 18, 4, 0, 0, 0, 0, 0]), .absent)
        XCTAssertThrowsError(try ControlEarlyPayload.detect([0xFF, 0xFF, 0xFF, 0x54, 0x53, 0x01, 0, 0, 0]))
    }

    func testFuzzRecordReceiver() throws {
        let (stream, _, receiver) = try makeStream()
        MutationFuzzer(seeds: [Array(stream.prefix(600)), [0x04, 0x00, 0x10] + [UInt8](repeating: 0, count: 16)],
                       iterations: 5_000, maximumLength: 5_000).run { bytes in
            var r = receiver
            r.append(bytes)
            _ = try? r.drainPlaintext()
        }
    }

    func testFuzzFrameDecoder() {
        MutationFuzzer(seeds: [[0x02, 0x00, 0x30] + [UInt8](repeating: 7, count: 48), [0x03, 0x00, 0x02, 0x68, 0x69]],
                       iterations: 5_000, maximumLength: 2_000).run { bytes in
            var decoder = ControlFrameDecoder(maximumFrameLength: 4096)
            decoder.append(bytes)
            var consumed = 0
            while let frame = try? decoder.nextFrame() { consumed += 3 + frame.payload.count }
            XCTAssertLessThanOrEqual(consumed, bytes.count)
            _ = try? ControlEarlyPayload.detect(bytes)
        }
    }
}
