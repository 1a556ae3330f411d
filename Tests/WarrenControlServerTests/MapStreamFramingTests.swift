// The map stream's framing (4-byte little-endian length + body) and its zstd bodies: byte-exact frames,
// drip-fed decoding, a cross-check against the zstd command-line tool, and fuzzing.

import Foundation
import WarrenTailcfg
import WarrenTestSupport
import WarrenControlTransport
import XCTest
@testable import WarrenControlServer

final class MapStreamFramingTests: XCTestCase {
    func testFrameIsLittleEndianLengthThenBody() {
        XCTAssertEqual(MapStreamFraming.frame(body: Array("{}".utf8)), [2, 0, 0, 0, 0x7B, 0x7D])
        let body = [UInt8](repeating: 0x41, count: 0x0102_03)
        let framed = MapStreamFraming.frame(body: body)
        XCTAssertEqual(Array(framed.prefix(4)), [0x03, 0x02, 0x01, 0x00])
        XCTAssertEqual(framed.count, 4 + body.count)
    }

    func testKeepAliveMessageEncodesAsGoWould() throws {
        let json = try TailcfgJSON.encode(MapResponse.keepAliveMessage)
        XCTAssertEqual(String(decoding: json, as: UTF8.self), #"{"KeepAlive":true}"#)
    }

    func testDecoderDripFedWholeAndShuffledSplits() throws {
        let messages: [[UInt8]] = [Array("{\"KeepAlive\":true}".utf8), [], Array(repeating: 7, count: 5000), [1, 2, 3]]
        let stream = messages.flatMap { MapStreamFraming.frame(body: $0) }
        // All at once.
        var whole = MapStreamDecoder()
        whole.append(stream)
        XCTAssertEqual(try drain(&whole), messages)
        // One byte at a time.
        var drip = MapStreamDecoder()
        var got: [[UInt8]] = []
        for byte in stream {
            drip.append([byte])
            got += try drain(&drip)
        }
        XCTAssertEqual(got, messages)
        // Random splits.
        var generator = SeededGenerator(seed: 42)
        for _ in 0..<50 {
            var decoder = MapStreamDecoder()
            var out: [[UInt8]] = []
            var i = 0
            while i < stream.count {
                let n = Int(generator.next() % 700) + 1
                decoder.append(stream[i..<min(stream.count, i + n)])
                out += try drain(&decoder)
                i += n
            }
            XCTAssertEqual(out, messages)
        }
    }

    func testDecoderRefusesOversizedLength() {
        var decoder = MapStreamDecoder(maximumMessageLength: 1000)
        decoder.append([0xE9, 0x03, 0, 0]) // 1001
        XCTAssertThrowsError(try decoder.parseStep())
    }

    func testZstdRoundTripAndTheZstdToolDecodesOurFrames() throws {
        var response = MapResponse()
        response.domain = "lab.warren"
        response.packetFilter = AllowAllPolicy.rules
        let json = try TailcfgJSON.encode(response)
        let compressed = try Zstd.compress(json)
        XCTAssertEqual(Array(compressed.prefix(4)), [0x28, 0xB5, 0x2F, 0xFD], "zstd frame magic")
        XCTAssertEqual(try Zstd.decompress(compressed, maximumSize: 1 << 20), json)

        // Independent implementation: the zstd command-line tool.
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/zstd") else {
            throw XCTSkip("the zstd command-line tool is not installed")
        }
        let input = FileManager.default.temporaryDirectory.appendingPathComponent("wct-\(getpid()).zst")
        try Data(compressed).write(to: input)
        defer { try? FileManager.default.removeItem(at: input) }
        let pipe = Pipe()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/zstd")
        process.arguments = ["-d", "-c", "-q", input.path]
        process.standardOutput = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0)
        XCTAssertEqual(Array(output), json)
    }

    func testZstdDecompressionIsBounded() throws {
        let big = [UInt8](repeating: 0, count: 1 << 20)
        let compressed = try Zstd.compress(big)
        XCTAssertThrowsError(try Zstd.decompress(compressed, maximumSize: 1000))
        XCTAssertThrowsError(try Zstd.decompress(Array(compressed.dropLast(3)), maximumSize: 2 << 20))
    }

    func testFuzzDecoderAndDecompressorNeverCrash() throws {
        let seeds = [MapStreamFraming.frame(body: Array("{\"Node\":{}}".utf8)),
                     MapStreamFraming.frame(body: try Zstd.compress(Array("{\"KeepAlive\":true}".utf8)))]
        MutationFuzzer(seeds: seeds, iterations: 3000, maximumLength: 512, seed: 0xC0DE).run { bytes in
            var decoder = MapStreamDecoder(maximumMessageLength: 1 << 16)
            decoder.append(bytes)
            while case .message(let body)? = try? decoder.parseStep() {
                _ = try? Zstd.decompress(body, maximumSize: 1 << 16)
                _ = try? TailcfgJSON.decode(MapResponse.self, from: body)
            }
        }
        MutationFuzzer(seeds: [Array("{\"Version\":130,\"NodeKey\":\"nodekey:00\",\"Stream\":true}".utf8)],
                       iterations: 3000, maximumLength: 256, seed: 0xFEED).run { bytes in
            _ = try? TailcfgJSON.decode(MapRequest.self, from: bytes)
            _ = try? TailcfgJSON.decode(RegisterRequest.self, from: bytes)
        }
    }

    private func drain(_ decoder: inout MapStreamDecoder) throws -> [[UInt8]] {
        var out: [[UInt8]] = []
        while case .message(let body) = try decoder.parseStep() { out.append(body) }
        return out
    }
}
