// POST /verify: the admission check a DERP relay makes before it admits a client (warren-derp's
// `--verify-clients-url`, and Tailscale derper's `--verify-client-url`).
//
// Wire shape (tailscale/tailscale:tailcfg/derpmap.go, DERPAdmitClientRequest and DERPAdmitClientResponse;
// Go's default JSON field names, no tags):
//
//   POST /verify    Content-Type: application/json
//                   {"NodePublic":"nodekey:<64 hex digits>","Source":"<client IP, or empty>"}
//   200             {"Allow":true}   the node key belongs to a registered, authorized node whose key has
//                                    not expired
//                   {"Allow":false}  anything else (unknown key, waiting for approval, expired)
//   400             the body is not such a request
//
// The answer only says whether a node key is live in this tailnet, as headscale's /verify does; a relay
// that sends `Authorization: Bearer …` is answered the same (no token is configured on this side).

import Foundation
import TailscaleKeys

public enum DERPAdmitEndpoint {
    public static let path = "/verify"

    /// The request body. `Source` is the client's IP address as text (Go's netip.Addr: empty when unset).
    public struct Request: Sendable, Hashable {
        public var nodePublic: NodePublic
        public var source: String

        public init(nodePublic: NodePublic, source: String = "") {
            self.nodePublic = nodePublic
            self.source = source
        }

        /// Parses the JSON body; nil for anything that is not an object with a valid `NodePublic` text
        /// (bytes from the network: never traps).
        public init?(json bytes: [UInt8]) {
            guard bytes.count <= 16 * 1024,
                  let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any],
                  let keyText = object["NodePublic"] as? String, let key = NodePublic(keyText) else { return nil }
            let source = object["Source"]
            if let source, !(source is String), !(source is NSNull) { return nil }
            self.init(nodePublic: key, source: source as? String ?? "")
        }
    }

    /// The JSON of a `DERPAdmitClientResponse`.
    public static func responseBody(allow: Bool) -> [UInt8] { Array(#"{"Allow":\#(allow)}"#.utf8) }

    /// Whether `key` is the current node key of a registered node that is authorized and not expired.
    public static func admits(_ key: NodePublic, engine: ControlEngine) async -> Bool {
        guard let node = await engine.node(withNodeKey: key) else { return false }
        return node.authorized && !node.isExpired(at: engine.currentTime())
    }

    static func answer(body: [UInt8], engine: ControlEngine) async -> PlainHTTPResponse {
        guard let request = Request(json: body) else {
            return PlainHTTPResponse(status: 400, text: "verify: expected {\"NodePublic\":\"nodekey:…\",\"Source\":\"…\"}\n")
        }
        let allow = await admits(request.nodePublic, engine: engine)
        return PlainHTTPResponse(status: 200, contentType: "application/json", body: responseBody(allow: allow))
    }
}

extension ControlEngine {
    /// Those of `keys` that ``DERPAdmitEndpoint/admits(_:engine:)`` would admit now, in one call (the embedded relay
    /// asks this for every connected client, every second).
    public func liveNodeKeys(among keys: Set<NodePublic>) -> Set<NodePublic> {
        let time = currentTime()
        return keys.filter { key in node(withNodeKey: key).map { $0.authorized && !$0.isExpired(at: time) } ?? false }
    }
}
