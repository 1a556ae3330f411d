import Foundation
import WarrenPacket

/// One answer of the LocalAPI.
public struct LocalAPIResponse: Sendable, Equatable {
    public var status: Int
    public var headers: [(String, String)]
    public var body: [UInt8]

    public init(status: Int, headers: [(String, String)] = [], body: [UInt8]) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public static func == (a: LocalAPIResponse, b: LocalAPIResponse) -> Bool {
        a.status == b.status && a.body == b.body && a.headers.map { "\($0.0):\($0.1)" } == b.headers.map { "\($0.0):\($0.1)" }
    }

    static func json(_ value: some Encodable, status: Int = 200) -> LocalAPIResponse {
        do {
            return LocalAPIResponse(status: status, body: Array(try LocalAPIJSON.encode(value)) + [10])
        } catch {
            return .error(500, "encoding the answer failed: \(error)")
        }
    }

    static func error(_ status: Int, _ message: String, headers: [(String, String)] = []) -> LocalAPIResponse {
        let body = (try? LocalAPIJSON.encode(LocalAPIErrorBody(error: message))).map { Array($0) + [10] } ?? Array("{}\n".utf8)
        return LocalAPIResponse(status: status, headers: headers, body: body)
    }
}

/// The LocalAPI's routes, without any I/O: (method, request target, body) in, answer out. `LocalAPIServer` puts it
/// on a socket; tests may call it directly.
public struct LocalAPIRouter: Sendable {
    public static let prefix = "/localapi/v0/"

    /// Route name -> the one method it accepts.
    public static let routes: [String: String] = [
        "status": "GET", "up": "POST", "down": "POST", "logout": "POST", "ping": "POST", "whois": "GET",
        "netcheck": "GET", "suggest-exit-node": "GET", "dns-query": "GET", "dns-status": "GET",
    ]

    public let backend: any LocalBackend

    public init(backend: any LocalBackend) { self.backend = backend }

    public func handle(method: String, target: String, body: [UInt8]) async -> LocalAPIResponse {
        let (path, query) = Self.split(target)
        guard path.hasPrefix(Self.prefix) else { return .error(404, "not found: \(path)") }
        let name = String(path.dropFirst(Self.prefix.count))
        guard let allowed = Self.routes[name] else { return .error(404, "no such LocalAPI endpoint: \(name)") }
        guard method == allowed else {
            return .error(405, "\(name) wants \(allowed), not \(method)", headers: [("Allow", allowed)])
        }
        do {
            switch name {
            case "status":
                var status = await backend.status()
                if query["peers"] == "false" { status.peer = [:] }
                return .json(status)
            case "up":
                let request: UpRequest
                if body.allSatisfy({ $0 == 32 || $0 == 9 || $0 == 10 || $0 == 13 }) {
                    request = UpRequest()
                } else {
                    guard let decoded = try? LocalAPIJSON.decode(UpRequest.self, from: Data(body)) else {
                        return .error(400, "the body is not a JSON UpRequest")
                    }
                    request = decoded
                }
                if let server = request.loginServer, !server.isEmpty, !Self.isHTTPURL(server) {
                    return .error(400, "LoginServer is not an http(s) URL: \(server)")
                }
                return .json(try await backend.up(request))
            case "down":
                try await backend.down()
                return .json(["BackendState": BackendState.stopped.rawValue])
            case "logout":
                try await backend.logout()
                return .json(["BackendState": BackendState.needsLogin.rawValue])
            case "ping":
                guard let ip = query["ip"], !ip.isEmpty else { return .error(400, "missing 'ip' parameter") }
                guard IPAddress(ip) != nil else { return .error(400, "invalid IP address: \(ip)") }
                let typeText = query["type"] ?? "disco"
                guard let type = PingType(text: typeText.isEmpty ? "disco" : typeText) else {
                    return .error(400, "unknown ping type \(typeText): want disco, TSMP, ICMP or peerapi")
                }
                var size = 0
                if let sizeText = query["size"], !sizeText.isEmpty {
                    guard let value = Int(sizeText), (0...65_535).contains(value) else {
                        return .error(400, "invalid size: \(sizeText)")
                    }
                    size = value
                }
                return .json(try await backend.ping(ip: ip, type: type, size: size))
            case "whois":
                guard let address = query["addr"], !address.isEmpty else {
                    return .error(400, "missing 'addr' parameter")
                }
                guard Self.isAddressWithOptionalPort(address) else {
                    return .error(400, "invalid 'addr' parameter: want IP or IP:PORT, got \(address)")
                }
                guard let answer = try await backend.whois(address) else {
                    return .error(404, "no match for IP:port \(address)")
                }
                return .json(answer)
            case "netcheck":
                return .json(try await backend.netcheck())
            case "suggest-exit-node":
                return .json(try await backend.suggestExitNode())
            case "dns-query":
                guard let name = query["name"], !name.isEmpty, name.utf8.count <= 255 else {
                    return .error(400, "missing or too long 'name' parameter")
                }
                return .json(try await backend.dnsQuery(name: name, type: query["type"] ?? ""))
            case "dns-status":
                return .json(try await backend.dnsStatus())
            default:
                return .error(404, "no such LocalAPI endpoint: \(name)")
            }
        } catch let error as LocalAPIError {
            return .error((400...599).contains(error.status) ? error.status : 500, error.message)
        } catch {
            return .error(500, String(describing: error))
        }
    }

    // MARK: helpers

    /// Splits "/path?a=1&b=x%20y" into the path and its decoded query (the first value of each name wins).
    public static func split(_ target: String) -> (path: String, query: [String: String]) {
        let parts = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let path = String(parts.first ?? "")
        var query: [String: String] = [:]
        if parts.count == 2 {
            for pair in parts[1].split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                guard let rawName = kv.first, let name = decodeComponent(rawName) else { continue }
                let value = kv.count == 2 ? decodeComponent(kv[1]) : ""
                if query[name] == nil, let value { query[name] = value }
            }
        }
        return (path, query)
    }

    private static func decodeComponent(_ text: Substring) -> String? {
        text.replacingOccurrences(of: "+", with: " ").removingPercentEncoding
    }

    /// "100.64.0.1", "fd7a::1", "100.64.0.1:22", "[fd7a::1]:22".
    public static func isAddressWithOptionalPort(_ text: String) -> Bool {
        if IPAddress(text) != nil { return true }
        func isPort(_ s: Substring) -> Bool { !s.isEmpty && s.count <= 5 && s.allSatisfy(\.isASCIIDigit) && Int(s)! <= 65_535 }
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return false }
            let host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            return host.contains(":") && IPAddress(host) != nil && rest.hasPrefix(":") && isPort(rest.dropFirst())
        }
        guard let colon = text.lastIndex(of: ":") else { return false }
        let host = text[..<colon]
        return !host.contains(":") && IPAddress(host) != nil && isPort(text[text.index(after: colon)...])
    }

    static func isHTTPURL(_ text: String) -> Bool {
        guard let url = URL(string: text), let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https",
              let host = url.host, !host.isEmpty else { return false }
        return true
    }
}

extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
}
