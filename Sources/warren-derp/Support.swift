// Parsing and files for warren-derp.

import ArgumentParser
import Foundation
import TailscaleKeys

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
