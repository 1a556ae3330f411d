import DERPProtocol
import TailscaleKeys
import WarrenPacket
import WarrenTestSupport
import XCTest

final class DERPFrameTests: XCTestCase {
    let a = NodePublic(raw: Key32(bytes: [UInt8](repeating: 0xAA, count: 32))!)
    let b = NodePublic(raw: Key32(bytes: (0..<32).map { UInt8($0) })!)

    /// One frame of every type, with the bytes derp.go's layout comments prescribe.
    var samples: [(DERPFrame, [UInt8])] {
        let aBytes = [UInt8](repeating: 0xAA, count: 32)
        let bBytes = (0..<32).map { UInt8($0) }
        return [
            (.serverKey(a), [0x01, 0, 0, 0, 40, 0x44, 0x45, 0x52, 0x50, 0xF0, 0x9F, 0x94, 0x91] + aBytes),
            (.clientInfo(clientKey: b, sealedInfo: [UInt8](repeating: 9, count: 40)), [0x02, 0, 0, 0, 72] + bBytes + [UInt8](repeating: 9, count: 40)),
            (.serverInfo(sealedInfo: [UInt8](repeating: 7, count: 41)), [0x03, 0, 0, 0, 41] + [UInt8](repeating: 7, count: 41)),
            (.sendPacket(destination: a, packet: [1, 2, 3]), [0x04, 0, 0, 0, 35] + aBytes + [1, 2, 3]),
            (.recvPacket(source: b, packet: []), [0x05, 0, 0, 0, 32] + bBytes),
            (.keepAlive, [0x06, 0, 0, 0, 0]),
            (.notePreferred(true), [0x07, 0, 0, 0, 1, 1]),
            (.notePreferred(false), [0x07, 0, 0, 0, 1, 0]),
            (.peerGone(a, reason: .notHere), [0x08, 0, 0, 0, 33] + aBytes + [1]),
            (.peerPresent(DERPPeerPresent(key: b, address: IPAddress("192.0.2.7"), port: 0x1234, flags: [.isRegular, .notIdeal])),
             [0x09, 0, 0, 0, 51] + bBytes + [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 192, 0, 2, 7, 0x12, 0x34, 0x09]),
            (.peerPresent(DERPPeerPresent(key: b, address: IPAddress("2001:db8::1"), port: 443)),
             [0x09, 0, 0, 0, 50] + bBytes + [0x20, 0x01, 0x0D, 0xB8] + [UInt8](repeating: 0, count: 11) + [1, 0x01, 0xBB]),
            (.peerPresent(DERPPeerPresent(key: b)), [0x09, 0, 0, 0, 32] + bBytes),
            (.forwardPacket(source: a, destination: b, packet: [0xEE]), [0x0A, 0, 0, 0, 65] + aBytes + bBytes + [0xEE]),
            (.watchConns, [0x10, 0, 0, 0, 0]),
            (.closePeer(a), [0x11, 0, 0, 0, 32] + aBytes),
            (.ping([1, 2, 3, 4, 5, 6, 7, 8]), [0x12, 0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]),
            (.pong([8, 7, 6, 5, 4, 3, 2, 1]), [0x13, 0, 0, 0, 8, 8, 7, 6, 5, 4, 3, 2, 1]),
            (.health("duplicate"), [0x14, 0, 0, 0, 9] + Array("duplicate".utf8)),
            (.health(""), [0x14, 0, 0, 0, 0]),
            (.restarting(reconnectInMilliseconds: 1000, tryForMilliseconds: 0x01020304), [0x15, 0, 0, 0, 8, 0, 0, 0x03, 0xE8, 1, 2, 3, 4]),
        ]
    }

    func testEveryFrameTypeEncodesByteExactlyAndDecodesBack() throws {
        XCTAssertEqual(DERPWire.magic, [0x44, 0x45, 0x52, 0x50, 0xF0, 0x9F, 0x94, 0x91])
        for (frame, bytes) in samples {
            XCTAssertEqual(try frame.encoded(), bytes, "\(frame)")
            var decoder = DERPFrameDecoder()
            decoder.append(bytes)
            XCTAssertEqual(try decoder.nextFrame(), frame)
            XCTAssertNil(try decoder.nextFrame())
        }
    }

    private var stream: [UInt8] { samples.flatMap { $0.1 } }

    private func decodeAll(_ stream: [UInt8], chunks: [Int]) throws -> [DERPFrame] {
        var decoder = DERPFrameDecoder()
        var frames: [DERPFrame] = []
        var offset = 0
        var i = 0
        while offset < stream.count {
            let end = min(stream.count, offset + max(1, chunks.isEmpty ? stream.count : chunks[i % chunks.count]))
            decoder.append(stream[offset..<end])
            while let frame = try decoder.nextFrame() { frames.append(frame) }
            offset = end
            i += 1
        }
        XCTAssertEqual(decoder.bufferedByteCount, 0)
        return frames
    }

    func testDripFedAllAtOnceAndRandomSplits() throws {
        let expected = samples.map { $0.0 }
        XCTAssertEqual(try decodeAll(stream, chunks: [1]), expected)
        XCTAssertEqual(try decodeAll(stream, chunks: []), expected)
        var rng = SeededGenerator(seed: 3)
        for _ in 0..<25 {
            XCTAssertEqual(try decodeAll(stream, chunks: (0..<9).map { _ in Int.random(in: 1...90, using: &rng) }), expected)
        }
    }

    func testUnknownFramesAreSkippedWithoutBuffering() throws {
        var decoder = DERPFrameDecoder()
        // An unknown type announcing 3 MiB, more than any known frame may carry.
        decoder.append([0x7F, 0x00, 0x30, 0x00, 0x00])
        XCTAssertEqual(try decoder.nextFrame(), .unknown(type: 0x7F, length: 3 << 20))
        let chunk = [UInt8](repeating: 0x55, count: 64 << 10)
        for _ in 0..<48 {
            decoder.append(chunk)
            XCTAssertNil(try decoder.nextFrame())
            XCTAssertLessThanOrEqual(decoder.bufferedByteCount, chunk.count)
        }
        decoder.append(try DERPFrame.keepAlive.encoded())
        XCTAssertEqual(try decoder.nextFrame(), .keepAlive)
    }

    func testOversizedHeadersFailTheStream() throws {
        var decoder = DERPFrameDecoder()
        let tooBig = UInt32(32 + DERPWire.maximumPacketLength + 1)
        decoder.append(DERPFrame.header(type: 0x04, length: tooBig))
        XCTAssertThrowsError(try decoder.nextFrame()) { error in
            XCTAssertEqual((error as? DERPProtocolError)?.code, .frameTooLarge(type: 4, length: tooBig))
        }
        decoder.append(try DERPFrame.keepAlive.encoded())
        XCTAssertThrowsError(try decoder.nextFrame()) { error in
            XCTAssertEqual((error as? DERPProtocolError)?.code, .decoderFailed)
        }
        // Pings above 1000 bytes and ClientInfo above 256 KiB are refused as the server does.
        var pings = DERPFrameDecoder()
        pings.append(DERPFrame.header(type: 0x12, length: 1001))
        XCTAssertThrowsError(try pings.nextFrame())
        var infos = DERPFrameDecoder()
        infos.append(DERPFrame.header(type: 0x02, length: UInt32(256 << 10) + 1))
        XCTAssertThrowsError(try infos.nextFrame())
    }

    func testMalformedFramesAreConsumedAndTheStreamContinues() throws {
        var decoder = DERPFrameDecoder()
        decoder.append([0x07, 0, 0, 0, 2, 1, 1])                 // NotePreferred must be 1 byte
        decoder.append([0x04, 0, 0, 0, 3, 1, 2, 3])              // SendPacket shorter than a key
        decoder.append([0x01, 0, 0, 0, 40] + [UInt8](repeating: 0, count: 40))  // ServerKey without magic
        decoder.append(try DERPFrame.ping([0, 1, 2, 3, 4, 5, 6, 7]).encoded())
        XCTAssertThrowsError(try decoder.nextFrame()) { XCTAssertEqual(($0 as? DERPProtocolError)?.code, .malformed(.notePreferred)) }
        XCTAssertThrowsError(try decoder.nextFrame()) { XCTAssertEqual(($0 as? DERPProtocolError)?.code, .malformed(.sendPacket)) }
        XCTAssertThrowsError(try decoder.nextFrame()) { XCTAssertEqual(($0 as? DERPProtocolError)?.code, .badMagic) }
        XCTAssertEqual(try decoder.nextFrame(), .ping([0, 1, 2, 3, 4, 5, 6, 7]))
    }

    func testLenientForms() throws {
        var decoder = DERPFrameDecoder()
        decoder.append([0x08, 0, 0, 0, 32] + a.rawRepresentation)             // PeerGone without a reason
        decoder.append([0x12, 0, 0, 0, 12] + [1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 9])  // ping with extra bytes
        decoder.append([0x01, 0, 0, 0, 42] + DERPWire.magic + a.rawRepresentation + [0xAB, 0xCD])
        XCTAssertEqual(try decoder.nextFrame(), .peerGone(a, reason: .disconnected))
        XCTAssertEqual(try decoder.nextFrame(), .ping([1, 2, 3, 4, 5, 6, 7, 8]))
        XCTAssertEqual(try decoder.nextFrame(), .serverKey(a, extra: [0xAB, 0xCD]))
    }

    func testEncodingRefusesOversizedPacketsAndBadPings() {
        XCTAssertNoThrow(try DERPFrame.sendPacket(destination: a, packet: [UInt8](repeating: 0, count: 64 << 10)).encoded())
        XCTAssertThrowsError(try DERPFrame.sendPacket(destination: a, packet: [UInt8](repeating: 0, count: (64 << 10) + 1)).encoded())
        XCTAssertThrowsError(try DERPFrame.ping([1, 2, 3]).encoded())
    }

    func testFuzzDecoder() throws {
        let seeds = samples.map { $0.1 } + [stream]
        MutationFuzzer(seeds: seeds, iterations: 10_000, maximumLength: 2_000).run { bytes in
            var decoder = DERPFrameDecoder()
            decoder.append(bytes)
            var rounds = 0
            while rounds < 1_000 {
                rounds += 1
                do {
                    guard let frame = try decoder.nextFrame() else { break }
                    if case .unknown = frame { continue }
                    // Whatever decodes must re-encode (except oversized packets, which cannot decode).
                    XCTAssertNoThrow(try frame.encoded())
                } catch let error as DERPProtocolError {
                    if case .malformed = error.code { continue }
                    if case .badMagic = error.code { continue }
                    break
                } catch {
                    XCTFail("unexpected error \(error)")
                    break
                }
            }
            XCTAssertLessThan(rounds, 1_000)
        }
    }
}
