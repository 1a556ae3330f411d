// Where a control server is and how to reach it: host, port, and TLS or not. Parsed from the URL a node
// is given (`--login-server`), as http://host[:port] or https://host[:port] (a path is ignored).

import NIOCore
import NIOSSL

public struct ControlTransportError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(description: String) { self.description = description }
    public init(_ description: String) { self.description = description }
}

public struct ControlEndpoint: Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int
    /// HTTPS to the control server (nil: plain HTTP; the Noise channel carries the security either way).
    public var tls: NIOSSLContext?
    /// The Linux fwmark (SO_MARK) of the connections: a node's policy routing keeps marked traffic
    /// out of its own tunnel (an exit node's default route would otherwise swallow it). Nil: none.
    public var socketMark: UInt32?

    public init(host: String, port: Int, tls: NIOSSLContext? = nil, socketMark: UInt32? = nil) {
        self.host = host
        self.port = port
        self.tls = tls
        self.socketMark = socketMark
    }

    /// Parses `http://host[:port]` or `https://host[:port]` (IPv6 hosts in brackets). For https without
    /// `tls`, a context is made that trusts the system's roots plus `extraCAFile` (PEM) when given.
    public init(url: String, tls: NIOSSLContext? = nil, extraCAFile: String? = nil) throws {
        let secure: Bool
        var rest: Substring
        if url.lowercased().hasPrefix("https://") {
            secure = true
            rest = url.dropFirst("https://".count)
        } else if url.lowercased().hasPrefix("http://") {
            secure = false
            rest = url.dropFirst("http://".count)
        } else {
            throw ControlTransportError("control URL must start with http:// or https://: \(url)")
        }
        if let slash = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) { rest = rest[..<slash] }
        var host: Substring
        var portText: Substring?
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { throw ControlTransportError("bad IPv6 host in \(url)") }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if after.hasPrefix(":") { portText = after.dropFirst() } else if !after.isEmpty {
                throw ControlTransportError("bad host in \(url)")
            }
        } else if let colon = rest.lastIndex(of: ":") {
            host = rest[..<colon]
            portText = rest[rest.index(after: colon)...]
        } else {
            host = rest
        }
        guard !host.isEmpty else { throw ControlTransportError("no host in \(url)") }
        var port = secure ? 443 : 80
        if let portText {
            guard let p = Int(portText), (1...65535).contains(p) else { throw ControlTransportError("bad port in \(url)") }
            port = p
        }
        self.host = String(host)
        self.port = port
        if secure {
            if let tls {
                self.tls = tls
            } else {
                var configuration = TLSConfiguration.makeClientConfiguration()
                if let extraCAFile { configuration.additionalTrustRoots = [.file(extraCAFile)] }
                self.tls = try NIOSSLContext(configuration: configuration)
            }
        } else {
            self.tls = nil
        }
    }

    /// The Host header value.
    public var hostHeader: String {
        let bracketed = host.contains(":") ? "[\(host)]" : host
        let standard = tls == nil ? 80 : 443
        return port == standard ? bracketed : "\(bracketed):\(port)"
    }

    public var description: String { "\(tls == nil ? "http" : "https")://\(hostHeader)" }

    /// Whether the host is an IP literal (no SNI then).
    var isAddressLiteral: Bool { host.contains(":") || host.allSatisfy { $0.isNumber || $0 == "." } }

    /// Adds the TLS client handler first in a new channel's pipeline (when TLS is on).
    func addTLS(to pipeline: ChannelPipeline.SynchronousOperations) throws {
        guard let tls else { return }
        try pipeline.addHandler(NIOSSLClientHandler(context: tls, serverHostname: isAddressLiteral ? nil : host))
    }
}
