// Parsing and files for warren-derp.

import ArgumentParser
import Foundation
import TailscaleKeys
import WarrenDERPServer
import WarrenDERPTransport

/// `HOST:PORT`, `:PORT` (all addresses), or `[IPv6]:PORT`.
struct ListenAddress {
    var host: String
    var port: Int

    init(_ text: String) throws {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
            throw ValidationError("--listen must be HOST:PORT or :PORT, not \(text)")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        self.host = host.isEmpty ? "::" : host
        self.port = port
    }
}

/// The relay's node key, kept as `privkey:<hex>` in `derp.key` (created with mode 0600).
enum DERPKeyFile {
    static func loadOrCreate(directory: String) throws -> NodePrivate {
        let path = (directory as NSString).appendingPathComponent("derp.key")
        if let text = try? String(contentsOfFile: path, encoding: .utf8) {
            return try NodePrivate(parsing: text.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        var generator = SystemRandomNumberGenerator()
        let key = NodePrivate.generate(using: &generator)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        guard FileManager.default.createFile(atPath: path, contents: Data((key.textRepresentation + "\n").utf8),
                                             attributes: [.posixPermissions: 0o600]) else {
            throw ValidationError("cannot write \(path)")
        }
        return key
    }
}

/// `--mesh-with host[:port],...` (default port 443; IPv6 in brackets), and how each peer's certificate is checked.
enum MeshPeers {
    static func parse(_ list: String, trust: String, plainHTTP: Bool) throws -> [DERPMesh.Peer] {
        let trustMode: DERPServerTrust?
        switch trust {
        case _ where plainHTTP: trustMode = nil
        case "system": trustMode = .system
        case "insecure-for-tests": trustMode = .insecureForTests
        case let pin where pin.hasPrefix("sha256-raw:") && pin.count == 11 + 64
            && pin.dropFirst(11).allSatisfy({ $0.isHexDigit }): trustMode = .pinned(pin)
        default:
            throw ValidationError("--mesh-trust must be system, sha256-raw:<64 hex digits> (a pinned certificate) or insecure-for-tests")
        }
        var peers: [DERPMesh.Peer] = []
        for entry in list.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) where !entry.isEmpty {
            var host = entry
            var port = 443
            if entry.hasPrefix("[") {
                guard let close = entry.firstIndex(of: "]") else { throw ValidationError("--mesh-with: bad address \(entry)") }
                host = String(entry[entry.index(after: entry.startIndex)..<close])
                let rest = entry[entry.index(after: close)...]
                if !rest.isEmpty {
                    guard rest.hasPrefix(":"), let p = Int(rest.dropFirst()) else { throw ValidationError("--mesh-with: bad address \(entry)") }
                    port = p
                }
            } else if let colon = entry.lastIndex(of: ":") {
                guard entry.firstIndex(of: ":") == colon, let p = Int(entry[entry.index(after: colon)...]) else {
                    throw ValidationError("--mesh-with: \(entry) is not host[:port] (IPv6 addresses in brackets)")
                }
                host = String(entry[..<colon])
                port = p
            }
            guard !host.isEmpty, (1...65535).contains(port) else { throw ValidationError("--mesh-with: bad address \(entry)") }
            peers.append(DERPMesh.Peer(host: host, port: port, trust: trustMode))
        }
        return peers
    }
}
