// The server's framing of map messages through its encoder (the framing itself lives in
// WarrenControlTransport, shared with the node's client).

import WarrenControlTransport
import WarrenTailcfg

extension MapStreamFraming {
    /// Encodes (with the hand-written writer, and `encoder`'s cache of peers when given), optionally
    /// compresses, and frames a map response.
    public static func frame(_ response: MapResponse, compress: Bool, encoder: MapMessageEncoder?) throws -> [UInt8] {
        guard let encoder else { return try frame(response, compress: compress) }
        return frame(body: try body(encoder.encode(response), compress: compress))
    }
}
