// The YAML configuration of `warren-control serve`. Every key is optional; unknown keys and bad values
// are errors that name the key.

import DERPProtocol
import Foundation
import Logging
import WarrenControlServer
import WarrenPolicy
import WarrenPacket
import WarrenTailcfg
import Yams

struct ConfigError: Error, CustomStringConvertible {
    var file: String
    var key: String
    var problem: String
    var description: String { key.isEmpty ? "\(file): \(problem)" : "\(file): \(key): \(problem)" }
}

struct ServeConfigFile {
    var serverURL: String?
    var stateDir: String?
    var listenAddr: String?
    /// host:port for Prometheus metrics, or "off" (or "") for none.
    var metricsListenAddr: String?
    var baseDomain: String?
    var ipv4Prefix: IPPrefix?
    var ipv6Prefix: IPPrefix?
    var dns = DNSSettings()
    var nodeKeyExpiry: Duration??
    var ephemeralInactivityTimeout: Duration?
    var keepAliveInterval: Duration?
    /// The least time between two messages on one map stream (what piles up meanwhile is merged).
    var mapUpdateInterval: Duration?
    var requireDeviceApproval: Bool?
    var logLevel: Logger.Level?
    var derpEnabled: Bool?
    /// The compiled access policy (from `policy_file`), if any.
    var policy: CompiledPolicy?
    /// Its path: the server is then in policy file mode (`policy set` refused).
    var policyPath: String?
    var derpHost: String?
    var derpPort: Int?
    var stunPort: Int?
    /// `derp.stun_secondary_addr` (host:port): a second STUN listener, announced as a STUN-only node of the
    /// embedded relay's region, so that netcheck can tell whether the NAT's mapping depends on the destination.
    var stunSecondary: (host: String, port: Int)?
    /// `derp.mesh_with` (headscale layout: `derp.server.mesh_with`): the other relays of the embedded region.
    var derpMeshPeers: [EmbeddedDERP.MeshPeer] = []
    /// `derp.mesh_key_path` (`derp.server.mesh_key_path`): the key read from it (never printed) and the file.
    var derpMeshKey: DERPMeshKey?
    var derpMeshKeyPath: String?
    /// Where the DERP map comes from besides the embedded relay (`derp.urls`, `derp.paths`, refresh).
    var derpMapSources = DERPMapSettings()
    /// `tls: {cert_file, key_file}`: HTTPS on the control listener.
    var tls: ControlTLSFiles?
    /// `listeners:`: connection caps and timers (ListenerSettings.swift).
    var listeners = ListenerSettings()
    /// What headscale's keys add (HeadscaleConfig.swift): key and database paths, the relay's region, the admin
    /// socket, the log format, and one warning per headscale key known but not implemented.
    var headscale = HeadscaleLayout.Extras()
    /// `oidc:`: sign-in with OpenID Connect (OIDCConfig.swift); nil when no issuer is set.
    var oidc: OIDCConfigSection?

    /// What is odd about the mesh settings (named as the file named them): a key file others may read, and mesh
    /// settings with the embedded relay off.
    func meshWarnings() -> [String] {
        var out: [String] = []
        let renames = headscale.renames
        if let path = derpMeshKeyPath, let mode = (try? FileManager.default.attributesOfItem(atPath: path))?[.posixPermissions] as? Int,
           mode & 0o077 != 0 {
            out.append("\(HeadscaleLayout.rename("derp.mesh_key_path", renames)): \(path) may be read by other users "
                       + "(mode 0\(String(mode & 0o777, radix: 8))); whoever has the key can join the relay mesh (chmod 600)")
        }
        if derpEnabled == false, derpMeshKey != nil || !derpMeshPeers.isEmpty {
            out.append("\(HeadscaleLayout.rename("derp.mesh_with", renames)): ignored: the embedded relay is off")
        }
        return out
    }

    func apply(to configuration: inout ControlConfiguration) {
        if let baseDomain { configuration.baseDomain = baseDomain }
        if let ipv4Prefix { configuration.ipv4Prefix = ipv4Prefix }
        if let ipv6Prefix { configuration.ipv6Prefix = ipv6Prefix }
        configuration.dns = dns
        if let nodeKeyExpiry { configuration.nodeKeyExpiry = nodeKeyExpiry }
        if let ephemeralInactivityTimeout { configuration.ephemeralInactivityTimeout = ephemeralInactivityTimeout }
        if let keepAliveInterval { configuration.keepAliveInterval = keepAliveInterval }
        if let mapUpdateInterval { configuration.mapUpdateInterval = mapUpdateInterval }
        if let requireDeviceApproval { configuration.requireDeviceApproval = requireDeviceApproval }
    }

    /// The largest configuration file read.
    static let maximumDocumentBytes = 256 * 1024
    /// YAML aliases (`*name`) in one file: enough for sharing a block, too few for an expansion bomb.
    static let maximumAliases = 32

    /// How many YAML aliases the text uses: `*` starting a token outside quotes and comments (a conservative count).
    static func aliasCount(_ text: String) -> Int {
        var count = 0
        for line in text.split(whereSeparator: { $0 == "\n" || $0 == "\r" }) {
            var quote: Character?
            var previous: Character = " "
            for c in line {
                if let q = quote {
                    if c == q { quote = nil }
                } else if c == "\"" || c == "'" {
                    quote = c
                } else if c == "#", previous == " " || previous == "\t" {
                    break
                } else if c == "*", " \t[{,:-".contains(previous) {
                    count += 1
                }
                previous = c
            }
        }
        return count
    }

    /// Whether a nameserver is an IP, IP:port ([IPv6]:port) or a DoH URL (https://...).
    static func isNameserver(_ text: String) -> Bool {
        if IPAddress(text) != nil { return true }
        if text.hasPrefix("https://"), let url = URL(string: text), let host = url.host, !host.isEmpty { return true }
        if let (host, port) = splitHostPort(text), port > 0, IPAddress(host) != nil {
            // An IPv6 address with a port must be bracketed.
            return IPAddress(host)?.version == .v4 || text.hasPrefix("[")
        }
        return false
    }

    /// Whether a listen address switches the listener off.
    static func isOff(_ text: String) -> Bool { text.isEmpty || text.lowercased() == "off" }

    static func splitHostPort(_ text: String) -> (String, Int)? {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
              (0...65535).contains(port) else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return host.isEmpty ? nil : (host, port)
    }

    static let topLevelKeys: Set<String> = [
        "server_url", "listen_addr", "base_domain", "prefixes", "dns", "node_key_expiry",
        "ephemeral_inactivity_timeout", "keep_alive_interval", "map_update_interval", "require_device_approval", "log_level",
        "database", "derp", "tls", "metrics_listen_addr", "policy_file", "state_dir",
        "listeners", "oidc",
    ]

    static func load(path: String) throws -> ServeConfigFile {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigError(file: path, key: "", problem: "cannot read the file")
        }
        // Bounded before parsing: a small file of nested aliases ("billion laughs") expands to gigabytes.
        guard data.count <= maximumDocumentBytes else {
            throw ConfigError(file: path, key: "", problem: "the file is \(data.count) bytes; at most \(maximumDocumentBytes) are accepted")
        }
        let text = String(decoding: data, as: UTF8.self)
        let aliases = aliasCount(text)
        guard aliases <= maximumAliases else {
            throw ConfigError(file: path, key: "", problem: "the file uses \(aliases) YAML aliases (*name); at most \(maximumAliases) are accepted")
        }
        let root: Any?
        do {
            root = try Yams.load(yaml: text)
        } catch {
            throw ConfigError(file: path, key: "", problem: "not valid YAML: \(error)")
        }
        guard let root else { return ServeConfigFile() }
        guard let map = root as? [String: Any] else {
            throw ConfigError(file: path, key: "", problem: "the top level must be a mapping of keys")
        }
        // headscale's layout is translated into Warren's; the reader's errors name the key the file used.
        let translated = try HeadscaleLayout.translate(map, file: path)
        var reader = Reader(file: path)
        var out: ServeConfigFile
        do {
            out = try reader.read(translated.warren)
        } catch var error as ConfigError {
            error.key = HeadscaleLayout.rename(error.key, translated.extras.renames)
            throw error
        }
        out.headscale = translated.extras
        out.headscale.warnings += out.meshWarnings()
        return out
    }

    private struct Reader {
        var file: String

        func fail(_ key: String, _ problem: String) -> ConfigError { ConfigError(file: file, key: key, problem: problem) }

        func checkKeys(_ map: [String: Any], allowed: Set<String>, at prefix: String) throws {
            for key in map.keys.sorted() where !allowed.contains(key) {
                throw fail(prefix.isEmpty ? key : "\(prefix).\(key)", "unknown key")
            }
        }

        func string(_ value: Any?, _ key: String) throws -> String? {
            guard let value else { return nil }
            if let s = value as? String { return s }
            throw fail(key, "expected a string")
        }

        func bool(_ value: Any?, _ key: String) throws -> Bool? {
            guard let value else { return nil }
            if let b = value as? Bool { return b }
            throw fail(key, "expected true or false")
        }

        func strings(_ value: Any?, _ key: String) throws -> [String] {
            guard let value else { return [] }
            guard let list = value as? [Any] else { throw fail(key, "expected a list of strings") }
            return try list.enumerated().map { i, item in
                guard let s = item as? String else { throw fail("\(key)[\(i)]", "expected a string") }
                return s
            }
        }

        func port(_ value: Any?, _ key: String) throws -> Int? {
            guard let value else { return nil }
            guard let n = value as? Int, (0...65535).contains(n) else { throw fail(key, "expected a port number (0 to 65535)") }
            return n
        }

        func duration(_ value: Any?, _ key: String) throws -> Duration? {
            guard let value else { return nil }
            let text = value as? String ?? (value as? Int).map { "\($0)s" }
            guard let text, let duration = ConfigDuration.parse(text) else {
                throw fail(key, "expected a duration such as 250ms, 30s, 15m, 24h or 180d")
            }
            return duration
        }

        func prefix(_ value: Any?, _ key: String, version: IPVersion) throws -> IPPrefix? {
            guard let text = try string(value, key) else { return nil }
            guard let prefix = IPPrefix(text), prefix.address.version == version else {
                throw fail(key, "expected an \(version == .v4 ? "IPv4" : "IPv6") prefix such as "
                           + (version == .v4 ? "100.64.0.0/10" : "fd7a:115c:a1e0::/48"))
            }
            // Nodes need room (AddressAllocator skips the network and broadcast addresses), and a prefix as wide
            // as the whole address family would hand out 0.0.0.1 or ::1.
            let range = version == .v4 ? 8...30 : 32...126
            guard range.contains(prefix.bits) else {
                throw fail(key, "\(text) is /\(prefix.bits); an \(version == .v4 ? "IPv4" : "IPv6") prefix must be "
                           + "/\(range.lowerBound) to /\(range.upperBound)")
            }
            return prefix.masked
        }

        func bounded(_ value: Duration?, _ key: String, _ range: ClosedRange<Duration>, _ text: String) throws -> Duration? {
            guard let value else { return nil }
            guard range.contains(value) else { throw fail(key, "must be from \(text)") }
            return value
        }

        /// `derp.mesh_key_path` and `derp.mesh_with`. The key file holds 64 hex digits (as derper's --mesh-psk-file);
        /// a file that is missing, unreadable or holds anything else is refused, and its content is never printed.
        func readMesh(_ d: [String: Any], into out: inout ServeConfigFile) throws {
            if let given = try string(d["mesh_key_path"], "derp.mesh_key_path"), !given.isEmpty {
                let directory = (file as NSString).deletingLastPathComponent
                let path = given.hasPrefix("/") || directory.isEmpty ? given : directory + "/" + given
                guard let handle = FileHandle(forReadingAtPath: path) else {
                    let reason = FileManager.default.fileExists(atPath: path) ? "cannot read \(path)" : "no such file: \(path)"
                    throw fail("derp.mesh_key_path", reason)
                }
                defer { try? handle.close() }
                let data = (try? handle.read(upToCount: 4097)) ?? nil
                guard let data else { throw fail("derp.mesh_key_path", "cannot read \(path)") }
                guard data.count <= 4096, let key = DERPMeshKey(hex: String(decoding: data, as: UTF8.self)) else {
                    throw fail("derp.mesh_key_path", "\(path) does not hold a mesh key: expected 64 hex digits "
                               + "(32 random bytes, such as `openssl rand -hex 32`)")
                }
                guard !key.isZero else { throw fail("derp.mesh_key_path", "\(path) holds a key of all zeros; use 32 random bytes") }
                out.derpMeshKey = key
                out.derpMeshKeyPath = path
            }
            guard let value = d["mesh_with"], !(value is NSNull) else { return }
            guard let list = value as? [Any] else {
                throw fail("derp.mesh_with", "expected a list of relays: host:port, or {addr: host:port, cert_name, stun_port}")
            }
            for (i, item) in list.enumerated() {
                let key = "derp.mesh_with[\(i)]"
                var peer: EmbeddedDERP.MeshPeer
                if let text = item as? String {
                    peer = try meshAddress(text, key)
                } else if let map = item as? [String: Any] {
                    try checkKeys(map, allowed: ["addr", "cert_name", "stun_port"], at: key)
                    guard let address = try string(map["addr"], "\(key).addr") else { throw fail("\(key).addr", "missing (host:port)") }
                    peer = try meshAddress(address, "\(key).addr")
                    if let pin = try string(map["cert_name"], "\(key).cert_name"), !pin.isEmpty {
                        guard pin.hasPrefix("sha256-raw:"), pin.count == 11 + 64, pin.dropFirst(11).allSatisfy(\.isHexDigit) else {
                            throw fail("\(key).cert_name", "expected sha256-raw:<64 hex digits> (the CertName the peer's relay logs)")
                        }
                        peer.certName = pin.lowercased()
                    }
                    peer.stunPort = try port(map["stun_port"], "\(key).stun_port")
                } else {
                    throw fail(key, "expected host:port, or {addr: host:port, cert_name, stun_port}")
                }
                out.derpMeshPeers.append(peer)
            }
            if !out.derpMeshPeers.isEmpty, out.derpMeshKey == nil {
                throw fail("derp.mesh_with", "needs mesh_key_path beside it (a file holding the key every relay of the mesh shares)")
            }
        }

        /// host:port (IPv6 in brackets; the port defaults to 443, as derper's --mesh-with).
        func meshAddress(_ text: String, _ key: String) throws -> EmbeddedDERP.MeshPeer {
            let trimmed = text.trimmingCharacters(in: .whitespaces)
            let problem = "\(text.debugDescription) is not host:port (IPv6 addresses in brackets)"
            if let (host, port) = ServeConfigFile.splitHostPort(trimmed) {
                guard port > 0, !host.contains(":") || trimmed.hasPrefix("[") else { throw fail(key, problem) }
                return EmbeddedDERP.MeshPeer(host: host, port: port)
            }
            var host = trimmed
            if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            guard !host.isEmpty, !host.contains(" "), !host.contains("/"), host.contains(":") == (IPAddress(host)?.version == .v6) else {
                throw fail(key, problem)
            }
            return EmbeddedDERP.MeshPeer(host: host, port: 443)
        }

        func nameservers(_ list: [String], _ key: String) throws -> [String] {
            for (i, server) in list.enumerated() where !ServeConfigFile.isNameserver(server) {
                throw fail("\(key)[\(i)]", "\(server.debugDescription) is not an IP address, IP:port or https:// DoH URL")
            }
            return list
        }

        mutating func read(_ map: [String: Any]) throws -> ServeConfigFile {
            try checkKeys(map, allowed: ServeConfigFile.topLevelKeys, at: "")
            var out = ServeConfigFile()
            out.serverURL = try string(map["server_url"], "server_url")
            if let url = out.serverURL, !(url.hasPrefix("http://") || url.hasPrefix("https://")) {
                throw fail("server_url", "must start with http:// or https://")
            }
            out.stateDir = try string(map["state_dir"], "state_dir")
            out.listenAddr = try string(map["listen_addr"], "listen_addr")
            if let listen = out.listenAddr, ServeConfigFile.splitHostPort(listen) == nil {
                throw fail("listen_addr", "expected host:port, such as 127.0.0.1:8080")
            }
            out.metricsListenAddr = try string(map["metrics_listen_addr"], "metrics_listen_addr")
            if let listen = out.metricsListenAddr, !ServeConfigFile.isOff(listen), ServeConfigFile.splitHostPort(listen) == nil {
                throw fail("metrics_listen_addr", "expected host:port, such as 127.0.0.1:9090, or off")
            }
            out.baseDomain = try string(map["base_domain"], "base_domain")
            if let domain = out.baseDomain, domain.isEmpty || domain.hasPrefix(".") || domain.contains(" ") {
                throw fail("base_domain", "expected a domain name such as tailnet.example")
            }
            if let prefixes = map["prefixes"] {
                guard let p = prefixes as? [String: Any] else { throw fail("prefixes", "expected a mapping with v4 and v6") }
                try checkKeys(p, allowed: ["v4", "v6"], at: "prefixes")
                out.ipv4Prefix = try prefix(p["v4"], "prefixes.v4", version: .v4)
                out.ipv6Prefix = try prefix(p["v6"], "prefixes.v6", version: .v6)
            }
            if let dns = map["dns"] {
                guard let d = dns as? [String: Any] else { throw fail("dns", "expected a mapping") }
                try checkKeys(d, allowed: ["magic_dns", "nameservers", "search_domains", "split", "extra_records"], at: "dns")
                out.dns.magicDNS = try bool(d["magic_dns"], "dns.magic_dns") ?? true
                out.dns.nameservers = try nameservers(try strings(d["nameservers"], "dns.nameservers"), "dns.nameservers")
                out.dns.searchDomains = try strings(d["search_domains"], "dns.search_domains")
                if let split = d["split"] {
                    guard let s = split as? [String: Any] else { throw fail("dns.split", "expected domain: [nameservers]") }
                    for (domain, servers) in s {
                        out.dns.splitDNS[domain] = try nameservers(try strings(servers, "dns.split.\(domain)"), "dns.split.\(domain)")
                    }
                }
                if let records = d["extra_records"] {
                    guard let list = records as? [Any] else { throw fail("dns.extra_records", "expected a list") }
                    for (i, item) in list.enumerated() {
                        let key = "dns.extra_records[\(i)]"
                        guard let r = item as? [String: Any] else { throw fail(key, "expected name, type and value") }
                        try checkKeys(r, allowed: ["name", "type", "value"], at: key)
                        guard let name = try string(r["name"], "\(key).name") else { throw fail("\(key).name", "missing") }
                        guard let value = try string(r["value"], "\(key).value") else { throw fail("\(key).value", "missing") }
                        let type = try string(r["type"], "\(key).type")
                        if let type, type != "A" && type != "AAAA" { throw fail("\(key).type", "must be A or AAAA") }
                        guard IPAddress(value) != nil else { throw fail("\(key).value", "expected an IP address") }
                        out.dns.extraRecords.append(DNSRecord(name: name, type: type, value: value))
                    }
                }
            }
            if let expiry = map["node_key_expiry"] {
                if let text = expiry as? String, text == "0" || text == "never" {
                    out.nodeKeyExpiry = .some(nil)
                } else if let n = expiry as? Int, n == 0 {
                    out.nodeKeyExpiry = .some(nil)
                } else {
                    let parsed = try duration(expiry, "node_key_expiry")
                    // Expiry times are sent as RFC 3339 times (years up to 9999): keep them far from that edge.
                    if let parsed, parsed > .seconds(36_500 * 86_400) {
                        throw fail("node_key_expiry", "at most 36500d (use 0 or never for no expiry)")
                    }
                    out.nodeKeyExpiry = .some(parsed)
                }
            }
            if let path = try string(map["policy_file"], "policy_file") {
                guard let data = FileManager.default.contents(atPath: path) else {
                    throw fail("policy_file", "cannot read \(path)")
                }
                do {
                    out.policy = try CompiledPolicy(text: String(decoding: data, as: UTF8.self))
                    out.policyPath = path
                } catch let error as PolicyError {
                    let place = error.line.map { ":\($0):\(error.column ?? 0)" } ?? ""
                    throw fail("policy_file", "\(path)\(place): \(error.message)")
                }
            }
            if let tls = map["tls"] {
                guard let t = tls as? [String: Any] else { throw fail("tls", "expected a mapping with cert_file and key_file") }
                try checkKeys(t, allowed: ["cert_file", "key_file"], at: "tls")
                guard let certificateFile = try string(t["cert_file"], "tls.cert_file"), !certificateFile.isEmpty else {
                    throw fail("tls.cert_file", "missing (the PEM certificate chain, leaf first)")
                }
                guard let keyFile = try string(t["key_file"], "tls.key_file"), !keyFile.isEmpty else {
                    throw fail("tls.key_file", "missing (the PEM private key)")
                }
                out.tls = try ControlTLSFiles.load(certificateFile: certificateFile, keyFile: keyFile, configFile: file)
            }
            if let derp = map["derp"] {
                guard let d = derp as? [String: Any] else { throw fail("derp", "expected a mapping") }
                try checkKeys(d, allowed: ["enabled", "host", "port", "stun_port", "stun_secondary_addr", "add_embedded_region",
                                           "urls", "paths", "auto_update_enabled", "update_frequency",
                                           "mesh_with", "mesh_key_path"], at: "derp")
                out.derpEnabled = try bool(d["enabled"], "derp.enabled")
                out.derpHost = try string(d["host"], "derp.host")
                out.derpPort = try port(d["port"], "derp.port")
                out.stunPort = try port(d["stun_port"], "derp.stun_port")
                if let text = try string(d["stun_secondary_addr"], "derp.stun_secondary_addr"), !text.isEmpty {
                    guard let (host, port) = ServeConfigFile.splitHostPort(text), IPAddress(host) != nil, port > 0 else {
                        throw fail("derp.stun_secondary_addr", "expected IP:port of a second address of this host, such as 198.51.100.2:3478")
                    }
                    out.stunSecondary = (host, port)
                }
                var sources = DERPMapSettings()
                sources.addEmbeddedRegion = try bool(d["add_embedded_region"], "derp.add_embedded_region") ?? true
                for (i, text) in try strings(d["urls"], "derp.urls").enumerated() {
                    guard let url = URL(string: text), let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https",
                          let host = url.host, !host.isEmpty else {
                        throw fail("derp.urls[\(i)]", "\(text.debugDescription) is not an http:// or https:// URL")
                    }
                    sources.urls.append(text)
                }
                for (i, path) in try strings(d["paths"], "derp.paths").enumerated() {
                    guard !path.isEmpty else { throw fail("derp.paths[\(i)]", "empty path") }
                    sources.paths.append(path)
                }
                sources.autoUpdate = try bool(d["auto_update_enabled"], "derp.auto_update_enabled") ?? false
                if let raw = d["update_frequency"], HeadscaleLayout.isZeroDuration(raw) {
                    sources.autoUpdate = false  // headscale: a zero frequency never refreshes
                } else if let frequency = try duration(d["update_frequency"], "derp.update_frequency") {
                    guard frequency >= .seconds(1) else { throw fail("derp.update_frequency", "at least 1s") }
                    sources.updateFrequency = frequency
                }
                out.derpMapSources = sources
                try readMesh(d, into: &out)
            }
            out.listeners = try ListenerSettings.read(map["listeners"], file: file)
            out.oidc = try OIDCConfigSection.read(map["oidc"], file: file)
            out.ephemeralInactivityTimeout = try bounded(
                duration(map["ephemeral_inactivity_timeout"], "ephemeral_inactivity_timeout"), "ephemeral_inactivity_timeout",
                .seconds(10)...(.seconds(365 * 86_400)), "10s to 365d")
            // Clients give up on a map stream after 120 s of silence.
            out.keepAliveInterval = try bounded(duration(map["keep_alive_interval"], "keep_alive_interval"), "keep_alive_interval",
                                                .seconds(5)...(.seconds(100)), "5s to 100s (clients give up after 120s of silence)")
            out.mapUpdateInterval = try bounded(duration(map["map_update_interval"], "map_update_interval"), "map_update_interval",
                                                .milliseconds(1)...(.seconds(60)), "1ms to 60s")
            out.requireDeviceApproval = try bool(map["require_device_approval"], "require_device_approval")
            if let level = try string(map["log_level"], "log_level") {
                guard let parsed = Logger.Level(rawValue: level.lowercased()) else {
                    throw fail("log_level", "expected one of trace, debug, info, notice, warning, error, critical")
                }
                out.logLevel = parsed
            }
            return out
        }
    }
}

/// "90s", "15m", "24h", "180d" (and combinations such as "1h30m").
enum ConfigDuration {
    /// "250ms", "30s", "15m", "24h", "180d" and sums of them ("1h30m"); nil for anything else, for zero, and
    /// for a total that does not fit (a file's numbers are not trusted to be small).
    static func parse(_ text: String) -> Duration? {
        let bytes = Array(text.utf8)
        var totalMilliseconds: Int64 = 0
        var number: Int64 = 0
        var sawDigit = false
        var i = 0
        while i < bytes.count {
            let byte = bytes[i]
            if byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") {
                let (m, o1) = number.multipliedReportingOverflow(by: 10)
                let (a, o2) = m.addingReportingOverflow(Int64(byte - UInt8(ascii: "0")))
                guard !o1, !o2 else { return nil }
                number = a
                sawDigit = true
                i += 1
                continue
            }
            guard sawDigit else { return nil }
            let unit: Int64
            if byte == UInt8(ascii: "m"), i + 1 < bytes.count, bytes[i + 1] == UInt8(ascii: "s") {
                unit = 1
                i += 2
            } else {
                switch byte {
                case UInt8(ascii: "s"): unit = 1_000
                case UInt8(ascii: "m"): unit = 60_000
                case UInt8(ascii: "h"): unit = 3_600_000
                case UInt8(ascii: "d"): unit = 86_400_000
                default: return nil
                }
                i += 1
            }
            let (product, o1) = number.multipliedReportingOverflow(by: unit)
            let (sum, o2) = totalMilliseconds.addingReportingOverflow(product)
            guard !o1, !o2 else { return nil }
            totalMilliseconds = sum
            number = 0
            sawDigit = false
        }
        guard !sawDigit, totalMilliseconds > 0 else { return nil }
        return .milliseconds(totalMilliseconds)
    }
}
