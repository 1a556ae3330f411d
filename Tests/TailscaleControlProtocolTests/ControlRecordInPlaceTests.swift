// The in-place record path (what NoiseRecordHandler uses) against the array path, which the handshake vectors and
// the real-client interop tests check: the same records byte for byte, counter for counter, and the same refusals.

import TailscaleControlProtocol
import WarrenFastAEAD
import WarrenTestSupport
import XCTest

final class ControlRecordInPlaceTests: XCTestCase {
    private let cipher = ChaCha20Poly1305Context()

    private func sealInPlace(_ plaintext: [UInt8], _ sender: inout ControlRecordSender) throws -> [UInt8] {
        var out = [UInt8](repeating: 0xEE, count: ControlRecordSender.sealedLength(plaintextCount: plaintext.count))
        let written = try plaintext.withUnsafeBytes { p in
            try out.withUnsafeMutableBytes { o in try sender.seal(p, into: o, context: cipher) }
        }
        XCTAssertEqual(written, out.count, "sealedLength is exact")
        return out
    }

    /// Opens `stream` fed in `chunks`, keeping the unconsumed tail between calls as NoiseRecordHandler does.
    private func openInPlace(_ stream: [UInt8], _ receiver: inout ControlRecordReceiver, chunks: [Int]) throws -> [UInt8] {
        var buffered = [UInt8](), out = [UInt8](), offset = 0, i = 0
        while offset < stream.count {
            let end = min(stream.count, offset + max(1, chunks.isEmpty ? stream.count : chunks[i % chunks.count]))
            buffered += stream[offset..<end]
            offset = end
            i += 1
            let consumed = try buffered.withUnsafeMutableBytes { raw in
                try receiver.openRecords(in: raw, context: cipher) { out += $0 }
            }
            buffered.removeFirst(consumed)
        }
        XCTAssertTrue(buffered.isEmpty, "a whole stream leaves nothing behind")
        return out
    }

    func testInPlaceSealWritesTheSameRecordsAsSeal() throws {
        var f = try ControlFixture()
        var arrays = f.clientSession.sender
        var inPlace = f.clientSession.sender
        let max = ControlWire.maximumPlaintextLength
        for size in [0, 1, 5, max - 1, max, max + 1, 2 * max, 10_000, 65_536] {
            let plaintext = f.rng.bytes(count: size)
            XCTAssertEqual(try sealInPlace(plaintext, &inPlace), try arrays.seal(plaintext), "\(size) bytes")
            XCTAssertEqual(inPlace.recordsSealed, arrays.recordsSealed)
        }
        XCTAssertEqual(ControlRecordSender.sealedLength(plaintextCount: 0), 19)
        XCTAssertEqual(ControlRecordSender.sealedLength(plaintextCount: max + 1), max + 1 + 38)
    }

    func testInPlaceOpenReadsWhatEitherPathSealedInAnySplit() throws {
        var f = try ControlFixture()
        var sender = f.clientSession.sender
        var stream = [UInt8](), plaintext = [UInt8]()
        for (i, size) in [5, 0, ControlWire.maximumPlaintextLength, 10_000, 1, 30_000].enumerated() {
            let chunk = f.rng.bytes(count: size)
            plaintext += chunk
            stream += i % 2 == 0 ? try sender.seal(chunk) : try sealInPlace(chunk, &sender)
        }
        var rng = SeededGenerator(seed: 7)
        for round in 0..<30 {
            var receiver = f.accepted.session.receiver
            let chunks = round == 0 ? [] : round == 1 ? [1] : (0..<9).map { _ in Int.random(in: 1...5000, using: &rng) }
            XCTAssertEqual(try openInPlace(stream, &receiver, chunks: chunks), plaintext, "split \(chunks)")
            XCTAssertEqual(receiver.recordsOpened, 15, "1 + 1 + 1 + 3 + 1 + 8 records")
        }
    }

    func testInPlaceOpenRefusesWhatTheArrayPathRefusesAndStaysFailed() throws {
        var f = try ControlFixture()
        var sender = f.clientSession.sender
        let stream = try sender.seal(f.rng.bytes(count: 9000))
        // A flipped bit anywhere: header type, length, ciphertext or tag.
        for index in [0, 1, 2, 3, 100, 4095, 4096, 4100, stream.count - 1] {
            var tampered = stream
            tampered[index] ^= 0x80
            var receiver = f.accepted.session.receiver
            var arrays = f.accepted.session.receiver
            arrays.append(tampered)
            let arraysFailed = (try? arrays.drainPlaintext()) == nil
            XCTAssertThrowsError(try openInPlace(tampered, &receiver, chunks: []), "byte \(index)")
            XCTAssertTrue(arraysFailed, "byte \(index): the array path refuses it too")
            // Failed for good, even on good bytes.
            XCTAssertThrowsError(try openInPlace(stream, &receiver, chunks: [])) { error in
                XCTAssertEqual((error as? ControlProtocolError)?.code, .channelFailed)
            }
        }
        // A header announcing more than a record may hold is refused before its body arrives.
        var receiver = f.accepted.session.receiver
        XCTAssertThrowsError(try openInPlace([0x04, 0x0F, 0xFE], &receiver, chunks: [])) { error in
            XCTAssertEqual((error as? ControlProtocolError)?.code, .recordTooLarge(4097))
        }
        // A record shorter than its tag.
        var short = f.accepted.session.receiver
        XCTAssertThrowsError(try openInPlace([0x04, 0x00, 0x05, 1, 2, 3, 4, 5], &short, chunks: []))
    }

    func testFuzzInPlaceReceiver() throws {
        var f = try ControlFixture()
        var sender = f.clientSession.sender
        let stream = try sender.seal(f.rng.bytes(count: 600))
        let receiver = f.accepted.session.receiver
        MutationFuzzer(seeds: [stream, [0x04, 0x00, 0x10] + [UInt8](repeating: 0, count: 16)],
                       iterations: 5_000, maximumLength: 9_000).run { bytes in
            var r = receiver
            var copy = bytes
            let consumed = (try? copy.withUnsafeMutableBytes { raw in
                try r.openRecords(in: raw, context: self.cipher) { XCTAssertLessThanOrEqual($0.count, ControlWire.maximumPlaintextLength) }
            }) ?? 0
            XCTAssertLessThanOrEqual(consumed, bytes.count)
        }
    }
}
