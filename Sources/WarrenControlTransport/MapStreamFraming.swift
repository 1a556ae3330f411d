// The body of a POST /machine/map response: a sequence of messages, each
//
//   4 bytes  length of the body, little-endian (tailscale/tailscale:control/controlclient/direct.go)
//   N bytes  MapResponse JSON, or one zstd frame of it when the request said "Compress":"zstd"
//
// The server flushes after every message. testcontrol refuses messages over 256 MiB; so does the decoder.

import WarrenTailcfg

public enum MapStreamFraming {
    public static let maximumMessageLength = 256 << 20

    /// zstd level 1: on map JSON it is both faster and smaller than the library default of 3 (a full map
    /// for one node of 10,000, 7.3 MB of JSON: 12 ms and 1.24 MB at level 1, 21 ms and 1.48 MB at level 3).
    public static let compressionLevel: Int32 = 1

    /// Frames one already-encoded body.
    public static func frame(body: [UInt8]) -> [UInt8] {
        let n = UInt32(truncatingIfNeeded: body.count)
        var out: [UInt8] = [UInt8(truncatingIfNeeded: n), UInt8(truncatingIfNeeded: n >> 8),
                            UInt8(truncatingIfNeeded: n >> 16), UInt8(truncatingIfNeeded: n >> 24)]
        out.reserveCapacity(4 + body.count)
        out += body
        return out
    }

    /// Encodes with TailcfgJSON, optionally compresses, and frames a map response (the server has an
    /// overload that encodes with its cached writer).
    public static func frame(_ response: MapResponse, compress: Bool) throws -> [UInt8] {
        frame(body: try body(TailcfgJSON.write(response), compress: compress))
    }

    /// A message body: `json` as is, or one zstd frame of it.
    public static func body(_ json: [UInt8], compress: Bool) throws -> [UInt8] {
        compress ? try Zstd.compress(json, level: compressionLevel) : json
    }
}

/// Splits a map response stream into message bodies (still compressed if the stream is).
public struct MapStreamDecoder: Sendable {
    public enum Step: Equatable, Sendable {
        case needMoreBytes
        case message([UInt8])
    }

    public struct Error: Swift.Error, Hashable, Sendable, CustomStringConvertible {
        public let length: Int
        public var description: String { "map message of \(length) bytes exceeds the limit" }
    }

    private var buffer: [UInt8] = []
    private var start = 0
    public var maximumMessageLength: Int

    public init(maximumMessageLength: Int = MapStreamFraming.maximumMessageLength) {
        self.maximumMessageLength = maximumMessageLength
    }

    public mutating func append(_ bytes: some Sequence<UInt8>) {
        if start > 0 && start >= buffer.count / 2 {
            buffer.removeFirst(start)
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    public mutating func parseStep() throws -> Step {
        guard buffer.count - start >= 4 else { return .needMoreBytes }
        let length = Int(buffer[start]) | Int(buffer[start + 1]) << 8 | Int(buffer[start + 2]) << 16
            | Int(buffer[start + 3]) << 24
        guard length <= maximumMessageLength else { throw Error(length: length) }
        guard buffer.count - start - 4 >= length else { return .needMoreBytes }
        let body = Array(buffer[(start + 4)..<(start + 4 + length)])
        start += 4 + length
        return .message(body)
    }
}
