// Admission by URL: Tailscale derper's `--verify-client-url` contract.
//
//   POST <url>   Content-Type: application/json
//                {"NodePublic":"nodekey:<64 hex>","Source":"<client IP>"}
//   200          {"Allow":true|false}
//
// Any other status, an unreachable URL or a body that does not parse refuses the client, unless
// `failOpen` is set (tailscale/tailscale:tailcfg/derpmap.go DERPAdmitClientRequest/Response).

import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import NIOCore
import TailscaleKeys

public enum DERPHTTPAdmission {
    struct Request: Encodable {
        var NodePublic: String
        var Source: String
    }

    struct Response: Decodable {
        var Allow: Bool
    }

    /// An admission closure that asks `url`, with `bearerToken` (if any) in `Authorization`,
    /// giving up after `timeout` seconds.
    public static func make(url: URL, bearerToken: String? = nil, timeout: TimeInterval = 5,
                            failOpen: Bool = false) -> DERPAdmission {
        return { node, source in
            var request = URLRequest(url: url, timeoutInterval: timeout)
            request.httpMethod = "POST"
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
            if let bearerToken { request.setValue("Bearer \(bearerToken)", forHTTPHeaderField: "Authorization") }
            let body = Request(NodePublic: node.description, Source: source?.derpIPAddress.map { "\($0)" } ?? "")
            guard let data = try? JSONEncoder().encode(body) else { return false }
            request.httpBody = data
            do {
                let (reply, response) = try await URLSession.shared.data(for: request)
                guard (response as? HTTPURLResponse)?.statusCode == 200, reply.count <= 4096 else { return false }
                return (try? JSONDecoder().decode(Response.self, from: reply))?.Allow ?? false
            } catch {
                return failOpen
            }
        }
    }
}
