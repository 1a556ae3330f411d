// zstd frames through Debian's libzstd: the map stream compresses each message as one frame when the
// client asks for "zstd" (tailscale/tailscale:control/controlclient/direct.go decodes them one by one).

import CWarrenZstd

public enum Zstd {
    public struct Error: Swift.Error, Hashable, Sendable, CustomStringConvertible {
        public let description: String
    }

    /// One complete zstd frame holding `input` (with the content size in its header).
    public static func compress(_ input: [UInt8], level: Int32 = 3) throws -> [UInt8] {
        let bound = ZSTD_compressBound(input.count)
        guard ZSTD_isError(bound) == 0 else { throw Error(description: "input too large for zstd") }
        var output = [UInt8](repeating: 0, count: bound)
        let written = output.withUnsafeMutableBytes { out in
            input.withUnsafeBytes { inp in
                ZSTD_compress(out.baseAddress, out.count, inp.baseAddress, inp.count, level)
            }
        }
        guard ZSTD_isError(written) == 0 else { throw Error(description: errorName(written)) }
        output.removeSubrange(written...)
        return output
    }

    /// Decompresses zstd frames, refusing more than `maximumSize` bytes of output (the frame header's
    /// content size is not trusted). Throws on malformed or truncated input.
    public static func decompress(_ input: [UInt8], maximumSize: Int) throws -> [UInt8] {
        guard let stream = ZSTD_createDStream() else { throw Error(description: "out of memory") }
        defer { ZSTD_freeDStream(stream) }
        var output = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        var lastResult = 0
        try input.withUnsafeBytes { inp in
            var inBuffer = ZSTD_inBuffer(src: inp.baseAddress, size: inp.count, pos: 0)
            repeat {
                let produced: Int = try chunk.withUnsafeMutableBytes { out in
                    var outBuffer = ZSTD_outBuffer(dst: out.baseAddress, size: out.count, pos: 0)
                    let result = ZSTD_decompressStream(stream, &outBuffer, &inBuffer)
                    guard ZSTD_isError(result) == 0 else { throw Error(description: errorName(result)) }
                    lastResult = result
                    return outBuffer.pos
                }
                guard output.count + produced <= maximumSize else {
                    throw Error(description: "decompressed size exceeds \(maximumSize) bytes")
                }
                output += chunk[0..<produced]
                // Stop when all input is consumed and the decoder flushed everything it could.
                if inBuffer.pos == inBuffer.size && produced < chunk.count { break }
            } while true
        }
        // A non-zero hint means the last frame is incomplete.
        guard lastResult == 0 else { throw Error(description: "truncated zstd frame") }
        return output
    }

    private static func errorName(_ code: Int) -> String {
        String(cString: ZSTD_getErrorName(code))
    }
}
