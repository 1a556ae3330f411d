// headscale's configuration layout, read beside Warren's own. The key list is headscale v0.29.2's
// (config-example.yaml and the keys its config.go reads), written here by hand: each key is mapped to Warren's
// setting, or known but not implemented (one warning at start when its value asks for something Warren does not
// do), or accepted without effect (Warren already behaves so, or the knob tunes headscale's own internals).
// A key that neither layout knows is refused, naming it. The translation produces Warren's layout, which the
// ServeConfigFile reader then validates as usual; its errors are renamed back to the key the file used.

import Foundation
import WarrenControlPostgres
import WarrenPacket

enum HeadscaleLayout {
    /// What a headscale key is to Warren.
    enum Kind: Sendable {
        /// A mapping whose keys are in the catalogue themselves.
        case section
        /// A mapping whose keys are the user's (domains, parameters): not checked.
        case freeform
        /// Honoured: `to` names Warren's setting (for the docs and `configtest`).
        case mapped(to: String)
        /// Known, not implemented: warned about unless `inert(value, file)` (the value asks for nothing Warren lacks).
        case unimplemented(why: String, inert: @Sendable (Any, [String: Any]) -> Bool)
    }

    /// Every headscale key by its dotted path.
    static let catalogue: [String: Kind] = {
        var c: [String: Kind] = [:]
        let off: @Sendable (Any, [String: Any]) -> Bool = { v, _ in isOff(v) }
        let never: @Sendable (Any, [String: Any]) -> Bool = { _, _ in false }
        let always: @Sendable (Any, [String: Any]) -> Bool = { _, _ in true }
        c["server_url"] = .mapped(to: "server_url")
        c["listen_addr"] = .mapped(to: "listen_addr")
        c["metrics_listen_addr"] = .mapped(to: "metrics_listen_addr (\"\" turns it off)")
        c["grpc_listen_addr"] = .unimplemented(
            why: "Warren has no gRPC API; its admin API is REST on listen_addr (/api/v1, with an API key) and on the local socket",
            inert: off)
        c["grpc_allow_insecure"] = .unimplemented(why: "Warren has no gRPC API", inert: off)
        c["trusted_proxies"] = .unimplemented(
            why: "Warren does not read client addresses from proxy headers (True-Client-IP, X-Real-IP, X-Forwarded-For)", inert: off)
        c["noise"] = .section
        c["noise.private_key_path"] = .mapped(to: "the control (Noise) key file, created if missing (default <state_dir>/control.key)")
        c["prefixes"] = .section
        c["prefixes.v4"] = .mapped(to: "prefixes.v4")
        c["prefixes.v6"] = .mapped(to: "prefixes.v6")
        c["prefixes.allocation"] = .mapped(to: "sequential (Warren's allocator); random is warned about")
        c["derp"] = .section
        c["derp.server"] = .section
        c["derp.server.enabled"] = .mapped(to: "derp.enabled")
        c["derp.server.region_id"] = .mapped(to: "the embedded relay's region ID (default 900)")
        c["derp.server.region_code"] = .mapped(to: "the embedded relay's region code (default warren)")
        c["derp.server.region_name"] = .mapped(to: "the embedded relay's region name")
        c["derp.server.verify_clients"] = .unimplemented(
            why: "Warren's relay always admits only this tailnet's live nodes", inert: { v, _ in (v as? Bool) == true })
        c["derp.server.stun_listen_addr"] = .mapped(to: "derp.stun_port (the port; STUN listens on the relay's host)")
        c["derp.server.private_key_path"] = .mapped(to: "the relay's key file (default <state_dir>/derp/derp.key)")
        c["derp.server.automatically_add_embedded_derp_region"] = .mapped(
            to: "derp.add_embedded_region (the embedded relay's region added to the DERP map, over any region of that ID)")
        c["derp.server.ipv4"] = .mapped(to: "the relay's IPv4 address in the DERP map")
        c["derp.server.ipv6"] = .mapped(to: "the relay's IPv6 address in the DERP map")
        // Warren's additions to headscale's derp.server section (headscale has no relay mesh): the embedded relays of
        // several instances made one region, as derper's --mesh-with and --mesh-psk-file.
        c["derp.server.mesh_with"] = .mapped(to: "derp.mesh_with (the other instances' relays: meshed with, and nodes of the region)")
        c["derp.server.mesh_key_path"] = .mapped(to: "derp.mesh_key_path (the file holding the mesh key, 64 hex digits)")
        c["derp.urls"] = .mapped(to: "derp.urls (DERP maps fetched as JSON, merged after the embedded region's)")
        c["derp.paths"] = .mapped(to: "derp.paths (DERP map files, YAML or JSON, merged after the URLs')")
        c["derp.auto_update_enabled"] = .mapped(to: "derp.auto_update_enabled (the map rebuilt every update_frequency)")
        c["derp.update_frequency"] = .mapped(to: "derp.update_frequency")
        c["disable_check_updates"] = .unimplemented(why: "Warren never checks for updates", inert: always)
        c["node"] = .section
        c["node.expiry"] = .mapped(to: "node_key_expiry (0: no expiry)")
        c["node.ephemeral"] = .section
        c["node.ephemeral.inactivity_timeout"] = .mapped(to: "ephemeral_inactivity_timeout")
        c["ephemeral_node_inactivity_timeout"] = .mapped(to: "ephemeral_inactivity_timeout (node.ephemeral.inactivity_timeout wins)")
        c["node.routes"] = .section
        c["node.routes.ha"] = .section
        let probe = "Warren fails a subnet route over when its router's map stream ends (after a 3 s grace); it does not probe routers"
        c["node.routes.ha.probe_interval"] = .unimplemented(why: probe, inert: { v, _ in isZeroDuration(v) })
        c["node.routes.ha.probe_timeout"] = .unimplemented(why: probe, inert: { _, root in
            value(at: "node.routes.ha.probe_interval", in: root).map(isZeroDuration) ?? false
        })
        c["database"] = .section
        c["database.type"] = .mapped(to: "sqlite or postgres (Warren's store on either)")
        c["database.sqlite"] = .section
        c["database.sqlite.path"] = .mapped(to: "the store's SQLite file (default <state_dir>/warren.sqlite)")
        c["database.sqlite.write_ahead_log"] = .unimplemented(why: "Warren's store always uses the WAL journal",
                                                             inert: { v, _ in (v as? Bool) == true })
        c["database.sqlite.wal_autocheckpoint"] = .unimplemented(
            why: "Warren's store checkpoints at SQLite's default (1000 frames)", inert: { v, _ in (v as? Int) == 1000 })
        c["database.debug"] = .unimplemented(why: "Warren does not log its SQL statements", inert: off)
        c["database.gorm"] = .section
        for key in ["prepare_stmt", "parameterized_queries", "skip_err_record_not_found", "slow_threshold"] {
            c["database.gorm." + key] = .unimplemented(why: "headscale's ORM setting; no meaning for Warren's store", inert: always)
        }
        c["database.postgres"] = .section
        c["database.postgres.host"] = .mapped(to: "the PostgreSQL server: a host name, an address, or a Unix socket directory (/...)")
        c["database.postgres.port"] = .mapped(to: "its port (default 5432; with a socket directory, the socket's number)")
        c["database.postgres.name"] = .mapped(to: "the database (Warren's own: another program's tables are refused)")
        c["database.postgres.user"] = .mapped(to: "the role to log in as")
        c["database.postgres.pass"] = .mapped(to: "its password (never printed)")
        c["database.postgres.ssl"] = .mapped(to: "false (disable), true (require), or a libpq sslmode such as verify-full")
        c["database.postgres.max_open_conns"] = .mapped(to: "the store's connections at most (default 4)")
        for key in ["max_idle_conns", "conn_max_idle_time_secs"] {
            c["database.postgres." + key] = .unimplemented(
                why: "Warren keeps its max_open_conns connections open (and replaces one the server closed)", inert: always)
        }
        let acme = "Warren does not obtain certificates with ACME; give tls_cert_path and tls_key_path"
        let acmeInert: @Sendable (Any, [String: Any]) -> Bool = { _, root in isOff(value(at: "tls_letsencrypt_hostname", in: root) ?? "") }
        for key in ["acme_url", "acme_email", "tls_letsencrypt_cache_dir", "tls_letsencrypt_challenge_type", "tls_letsencrypt_listen"] {
            c[key] = .unimplemented(why: acme, inert: acmeInert)
        }
        c["tls_letsencrypt_hostname"] = .unimplemented(why: acme, inert: off)
        c["tls_cert_path"] = .mapped(to: "tls.cert_file")
        c["tls_key_path"] = .mapped(to: "tls.key_file")
        c["log"] = .section
        c["log.level"] = .mapped(to: "log_level (panic, fatal: critical; warn: warning)")
        c["log.format"] = .mapped(to: "text or json (one JSON object per line)")
        c["policy"] = .section
        c["policy.mode"] = .mapped(to: "file: policy_file; database: no policy_file (policy set)")
        c["policy.path"] = .mapped(to: "policy_file (file mode)")
        c["dns"] = .section
        c["dns.magic_dns"] = .mapped(to: "dns.magic_dns")
        c["dns.base_domain"] = .mapped(to: "base_domain")
        c["dns.override_local_dns"] = .unimplemented(
            why: "Warren always sends the global nameservers as the nodes' resolvers (override); it has no fallback-only mode",
            inert: { v, root in (v as? Bool) == true || isOff(value(at: "dns.nameservers.global", in: root) ?? []) })
        c["dns.nameservers"] = .section
        c["dns.nameservers.global"] = .mapped(to: "dns.nameservers")
        c["dns.nameservers.split"] = .freeform
        c["dns.search_domains"] = .mapped(to: "dns.search_domains")
        c["dns.extra_records"] = .mapped(to: "dns.extra_records")
        c["dns.extra_records_path"] = .mapped(to: "dns.extra_records, read from the JSON file at start (not watched)")
        c["unix_socket"] = .mapped(to: "the admin socket (default <state_dir>/admin.sock)")
        c["unix_socket_permission"] = .mapped(to: "the admin socket's mode (default 0600)")
        c["oidc"] = .section
        // Sign-in with OIDC: the section is the same in both layouts and is read whole (OIDCConfig.swift).
        for key in ["only_start_if_oidc_is_available", "issuer", "client_id", "client_secret", "client_secret_path",
                    "use_expiry_from_token", "scope", "email_verified_required", "allowed_domains", "allowed_users",
                    "allowed_groups", "pkce.enabled", "pkce.method", "expiry"] {
            c["oidc." + key] = .mapped(to: "oidc." + key + (key == "expiry" ? " (headscale before 0.24; Warren keeps it)" : ""))
        }
        c["oidc.extra_params"] = .freeform
        c["oidc.pkce"] = .section
        c["logtail"] = .section
        c["logtail.enabled"] = .unimplemented(
            why: "Warren does not tell clients to turn off their log upload (headscale sends DisableLogTail)",
            inert: { v, _ in (v as? Bool) == true })
        c["taildrop"] = .section
        c["taildrop.enabled"] = .unimplemented(
            why: "Warren does not grant the file-sharing capability, so Taildrop stays off", inert: { v, _ in (v as? Bool) == false })
        c["auto_update"] = .section
        c["auto_update.enabled"] = .unimplemented(why: "Warren does not send the default-auto-update capability", inert: off)
        c["randomize_client_port"] = .unimplemented(
            why: "removed in headscale 0.29; set \"randomizeClientPort\": true in the policy instead", inert: off)
        c["tuning"] = .section
        for key in ["notifier_send_timeout", "batch_change_delay", "node_mapsession_buffered_chan_size", "batcher_workers",
                    "register_cache_expiration", "register_cache_max_entries", "node_store_batch_size", "node_store_batch_timeout"] {
            c["tuning." + key] = .unimplemented(
                why: "headscale's internal tuning; Warren's nearest setting is map_update_interval", inert: never)
        }
        c["cli"] = .section
        for key in ["address", "api_key", "timeout", "insecure"] {
            c["cli." + key] = .unimplemented(
                why: "Warren's admin commands take --server URL with --api-key or WARREN_API_KEY", inert: never)
        }
        return c
    }()

    /// headscale keys renamed in earlier releases (headscale itself refuses them now).
    static let renamed: [String: String] = [
        "acl_policy_path": "policy.path", "dns_config": "dns",
    ]

    /// Warren's own keys by dotted path (sections that Warren's reader checks itself end the walk).
    static let warrenPaths: Set<String> = ServeConfigFile.topLevelKeys.subtracting(["database"]).union([
        "prefixes.v4", "prefixes.v6", "dns.magic_dns", "dns.nameservers", "dns.search_domains", "dns.split",
        "dns.extra_records", "derp.enabled", "derp.host", "derp.port", "derp.stun_port", "derp.add_embedded_region",
        "derp.stun_secondary_addr", "derp.mesh_with", "derp.mesh_key_path",
        // Warren's own OIDC keys (OIDCConfig.swift): the groups claim's name and whether it feeds policy groups.
        "oidc.groups_claim", "oidc.groups_in_policy",
    ])

    /// Pairs that set the same thing in the two layouts: a file may use one of each pair.
    nonisolated(unsafe) static let conflicts: [(warren: String, headscale: [String])] = [
        ("base_domain", ["dns.base_domain"]),
        ("node_key_expiry", ["node.expiry"]),
        ("ephemeral_inactivity_timeout", ["node.ephemeral.inactivity_timeout", "ephemeral_node_inactivity_timeout"]),
        ("log_level", ["log.level"]),
        ("policy_file", ["policy.path", "policy.mode"]),
        ("tls", ["tls_cert_path", "tls_key_path"]),
        ("derp.enabled", ["derp.server.enabled"]),
        ("derp.stun_port", ["derp.server.stun_listen_addr"]),
        ("derp.add_embedded_region", ["derp.server.automatically_add_embedded_derp_region"]),
        ("derp.mesh_with", ["derp.server.mesh_with"]),
        ("derp.mesh_key_path", ["derp.server.mesh_key_path"]),
        ("dns.split", ["dns.nameservers.split"]),
    ]

    // MARK: - Helpers

    /// Empty, false, zero or absent-like: a value that asks for nothing.
    static func isOff(_ value: Any) -> Bool {
        switch value {
        case let b as Bool: return !b
        case let s as String: return s.isEmpty
        case let n as Int: return n == 0
        case let list as [Any]: return list.isEmpty
        case let map as [String: Any]: return map.isEmpty
        case is NSNull: return true
        default: return false
        }
    }

    static func isZeroDuration(_ value: Any) -> Bool {
        if let n = value as? Int { return n == 0 }
        if let s = value as? String { return ["0", "0s", "0ms", ""].contains(s) }
        return false
    }

    static func value(at path: String, in root: [String: Any]) -> Any? {
        var current: Any = root
        for part in path.split(separator: ".") {
            guard let map = current as? [String: Any], let next = map[String(part)] else { return nil }
            current = next
        }
        return current is NSNull ? nil : current
    }

    // MARK: - Translation

    /// What the headscale keys of a file add beyond Warren's layout.
    struct Extras {
        var controlKeyPath: String?
        var databasePath: String?
        /// `database.type: postgres`: where the store is.
        var postgres: PostgresSettings?
        var derpRegionID: Int?
        var derpRegionCode: String?
        var derpRegionName: String?
        var derpIPv4: String?
        var derpIPv6: String?
        var derpKeyPath: String?
        var adminSocketPath: String?
        var adminSocketMode: mode_t?
        var logFormat: LogFormat?
        var randomAllocationAsked = false
        /// One line per headscale key known but not implemented, "KEY: why" (in the order of the catalogue paths).
        var warnings: [String] = []
        /// The headscale keys the file used (dotted paths), for `configtest`.
        var headscaleKeys: [String] = []
        /// Warren's key that a headscale key was turned into, for renaming errors back.
        var renames: [(warren: String, headscale: String)] = []
    }

    struct Result {
        var warren: [String: Any]
        var extras: Extras
    }

    /// Splits a file's mapping into Warren's layout and the extras, refusing unknown keys and mixed layouts.
    static func translate(_ root: [String: Any], file: String) throws -> Result {
        func fail(_ key: String, _ problem: String) -> ConfigError { ConfigError(file: file, key: key, problem: problem) }
        var headscalePresent: [String: Any] = [:]
        var warrenPresent: Set<String> = []

        func walk(_ map: [String: Any], _ prefix: String) throws {
            for key in map.keys.sorted() {
                let path = prefix.isEmpty ? key : prefix + "." + key
                let value = map[key]!
                let isWarren = warrenPaths.contains(path)
                guard let kind = catalogue[path] else {
                    if isWarren { warrenPresent.insert(path); continue }
                    if let newer = renamed[path] {
                        throw fail(path, "unknown key (headscale renamed it \(newer))")
                    }
                    throw fail(path, "unknown key (neither Warren's nor headscale's)")
                }
                switch kind {
                case .section:
                    if let sub = value as? [String: Any] {
                        // dns.nameservers as a list is Warren's; `derp`, `dns` and `prefixes` hold keys of both.
                        try walk(sub, path)
                    } else if isWarren {
                        warrenPresent.insert(path)
                    } else if value is NSNull {
                        continue
                    } else {
                        throw fail(path, "expected a mapping")
                    }
                default:
                    if value is NSNull { continue }
                    headscalePresent[path] = value
                }
            }
        }
        try walk(root, "")

        for (warren, headscale) in conflicts where warrenPresent.contains(warren) {
            if let other = headscale.first(where: { headscalePresent[$0] != nil }) {
                throw fail("", "\(warren) (Warren's layout) and \(other) (headscale's layout) set the same thing; keep one of them")
            }
        }
        if warrenPresent.contains("dns.extra_records"), headscalePresent["dns.extra_records_path"] != nil {
            throw fail("", "dns.extra_records and dns.extra_records_path both give the extra records; keep one of them")
        }

        // Warren's keys are kept as they are; the headscale keys are added in Warren's form.
        var out: [String: Any] = [:]
        for key in root.keys where warrenPaths.contains(key) && catalogue[key] == nil { out[key] = root[key] }
        for section in ["prefixes", "dns", "derp"] {
            guard let map = root[section] as? [String: Any] else { continue }
            var kept: [String: Any] = [:]
            for (key, value) in map where warrenPresent.contains(section + "." + key) { kept[key] = value }
            if !kept.isEmpty { out[section] = kept }
        }
        for key in ["server_url", "listen_addr", "metrics_listen_addr", "oidc"] where root[key] != nil && !(root[key] is NSNull) {
            out[key] = root[key]
        }
        var extras = Extras()
        extras.headscaleKeys = headscalePresent.keys.filter { !warrenPaths.contains($0) }.sorted()
        let configDirectory = (file as NSString).deletingLastPathComponent

        func string(_ path: String) throws -> String? {
            guard let v = headscalePresent[path] else { return nil }
            if let s = v as? String { return s }
            if let n = v as? Int { return String(n) }
            throw fail(path, "expected a string")
        }
        func bool(_ path: String) throws -> Bool? {
            guard let v = headscalePresent[path] else { return nil }
            guard let b = v as? Bool else { throw fail(path, "expected true or false") }
            return b
        }
        /// headscale resolves relative paths against the configuration file's directory.
        func absolute(_ path: String) -> String {
            path.hasPrefix("/") || configDirectory.isEmpty ? path : configDirectory + "/" + path
        }
        func set(_ section: String?, _ key: String, _ value: Any, from headscale: String) {
            if let section {
                var map = out[section] as? [String: Any] ?? [:]
                map[key] = value
                out[section] = map
                extras.renames.append((section + "." + key, headscale))
            } else {
                out[key] = value
                extras.renames.append((key, headscale))
            }
        }

        // Prefixes.
        if let v = headscalePresent["prefixes.v4"] { set("prefixes", "v4", v, from: "prefixes.v4") }
        if let v = headscalePresent["prefixes.v6"] { set("prefixes", "v6", v, from: "prefixes.v6") }
        if let allocation = try string("prefixes.allocation") {
            switch allocation {
            case "sequential": break
            case "random":
                extras.randomAllocationAsked = true
                extras.warnings.append("prefixes.allocation: random is not implemented; Warren hands out addresses in order (sequential)")
            default: throw fail("prefixes.allocation", "expected sequential or random")
            }
        }

        // DNS.
        if let v = headscalePresent["dns.magic_dns"] { set("dns", "magic_dns", v, from: "dns.magic_dns") }
        if let domain = try string("dns.base_domain"), !domain.isEmpty { set(nil, "base_domain", domain, from: "dns.base_domain") }
        if let v = headscalePresent["dns.nameservers.global"] { set("dns", "nameservers", v, from: "dns.nameservers.global") }
        if let v = headscalePresent["dns.nameservers.split"] { set("dns", "split", v, from: "dns.nameservers.split") }
        if let v = headscalePresent["dns.search_domains"] { set("dns", "search_domains", v, from: "dns.search_domains") }
        if let v = headscalePresent["dns.extra_records"] { set("dns", "extra_records", v, from: "dns.extra_records") }
        if headscalePresent["dns.extra_records"] != nil, headscalePresent["dns.extra_records_path"] != nil {
            throw fail("", "dns.extra_records and dns.extra_records_path both give the extra records; keep one of them")
        }
        if let path = try string("dns.extra_records_path"), !path.isEmpty {
            let full = absolute(path)
            guard let data = FileManager.default.contents(atPath: full) else { throw fail("dns.extra_records_path", "cannot read \(full)") }
            guard data.count <= 1 << 20 else { throw fail("dns.extra_records_path", "\(full) is larger than 1 MiB") }
            let records: Any
            do {
                records = try JSONSerialization.jsonObject(with: data)
            } catch {
                throw fail("dns.extra_records_path", "\(full) is not JSON: \(error.localizedDescription)")
            }
            guard records is [Any] else {
                throw fail("dns.extra_records_path", "\(full): expected a JSON list of {\"name\", \"type\", \"value\"}")
            }
            set("dns", "extra_records", records, from: "dns.extra_records_path")
            extras.warnings.append("dns.extra_records_path: read once at start; Warren does not watch \(full) for changes (restart after editing it)")
        }

        // Nodes.
        if let v = headscalePresent["node.expiry"] { set(nil, "node_key_expiry", v, from: "node.expiry") }
        if let v = headscalePresent["node.ephemeral.inactivity_timeout"] {
            set(nil, "ephemeral_inactivity_timeout", v, from: "node.ephemeral.inactivity_timeout")
        } else if let v = headscalePresent["ephemeral_node_inactivity_timeout"] {
            set(nil, "ephemeral_inactivity_timeout", v, from: "ephemeral_node_inactivity_timeout")
        }

        // Logging.
        if let level = try string("log.level") {
            let levels = ["panic": "critical", "fatal": "critical", "error": "error", "warn": "warning", "warning": "warning",
                          "info": "info", "debug": "debug", "trace": "trace"]
            guard let mapped = levels[level.lowercased()] else {
                throw fail("log.level", "expected one of panic, fatal, error, warn, info, debug, trace")
            }
            set(nil, "log_level", mapped, from: "log.level")
        }
        if let format = try string("log.format") {
            switch format {
            case "", "text": extras.logFormat = .text
            case "json": extras.logFormat = .json
            default: throw fail("log.format", "expected text or json")
            }
        }

        // Policy.
        let mode = try string("policy.mode") ?? "file"
        guard mode == "file" || mode == "database" else { throw fail("policy.mode", "expected file or database") }
        if mode == "file", let path = try string("policy.path"), !path.isEmpty {
            set(nil, "policy_file", path, from: "policy.path")
        }

        // TLS.
        let certificate = try string("tls_cert_path") ?? ""
        let key = try string("tls_key_path") ?? ""
        if !certificate.isEmpty || !key.isEmpty {
            out["tls"] = ["cert_file": certificate, "key_file": key]
            extras.renames.append(("tls.cert_file", "tls_cert_path"))
            extras.renames.append(("tls.key_file", "tls_key_path"))
            extras.renames.append(("tls", "tls_cert_path"))
        }

        // The embedded relay.
        if let enabled = try bool("derp.server.enabled") { set("derp", "enabled", enabled, from: "derp.server.enabled") }
        if let stun = try string("derp.server.stun_listen_addr"), !stun.isEmpty {
            guard let (_, port) = ServeConfigFile.splitHostPort(stun.hasPrefix(":") ? "0.0.0.0" + stun : stun) else {
                throw fail("derp.server.stun_listen_addr", "expected host:port, such as 0.0.0.0:3478")
            }
            set("derp", "stun_port", port, from: "derp.server.stun_listen_addr")
        }
        if let id = headscalePresent["derp.server.region_id"] {
            // Tailscale reserves region IDs 900 to 999 for self-hosted relays; any positive ID is taken, as headscale does.
            guard let n = id as? Int, (1...Int(Int32.max)).contains(n) else { throw fail("derp.server.region_id", "expected a positive number") }
            extras.derpRegionID = n
        }
        if let code = try string("derp.server.region_code"), !code.isEmpty { extras.derpRegionCode = code }
        if let name = try string("derp.server.region_name"), !name.isEmpty { extras.derpRegionName = name }
        if let address = try string("derp.server.ipv4"), !address.isEmpty {
            guard IPAddress(address)?.version == .v4 else { throw fail("derp.server.ipv4", "expected an IPv4 address") }
            extras.derpIPv4 = address
        }
        if let address = try string("derp.server.ipv6"), !address.isEmpty {
            guard IPAddress(address)?.version == .v6 else { throw fail("derp.server.ipv6", "expected an IPv6 address") }
            extras.derpIPv6 = address
        }
        if let path = try string("derp.server.private_key_path"), !path.isEmpty { extras.derpKeyPath = absolute(path) }
        if let add = try bool("derp.server.automatically_add_embedded_derp_region") {
            set("derp", "add_embedded_region", add, from: "derp.server.automatically_add_embedded_derp_region")
        }
        if let v = headscalePresent["derp.server.mesh_with"] { set("derp", "mesh_with", v, from: "derp.server.mesh_with") }
        if let path = try string("derp.server.mesh_key_path"), !path.isEmpty {
            set("derp", "mesh_key_path", absolute(path), from: "derp.server.mesh_key_path")
        }
        // The DERP map's sources keep their names in Warren's layout (derp.urls, derp.paths, ...); relative paths
        // are resolved against the configuration file's directory, as the other paths of the file.
        if let v = headscalePresent["derp.paths"] {
            if let list = v as? [Any] {
                set("derp", "paths", list.map { item -> Any in (item as? String).map { $0.isEmpty ? $0 : absolute($0) } ?? item },
                    from: "derp.paths")
            } else {
                set("derp", "paths", v, from: "derp.paths")
            }
        }
        if let v = headscalePresent["derp.urls"] { set("derp", "urls", v, from: "derp.urls") }
        if let v = headscalePresent["derp.auto_update_enabled"] { set("derp", "auto_update_enabled", v, from: "derp.auto_update_enabled") }
        if let v = headscalePresent["derp.update_frequency"] { set("derp", "update_frequency", v, from: "derp.update_frequency") }

        // Keys and sockets.
        if let path = try string("noise.private_key_path"), !path.isEmpty { extras.controlKeyPath = absolute(path) }
        if let path = try string("unix_socket"), !path.isEmpty { extras.adminSocketPath = absolute(path) }
        if let text = try string("unix_socket_permission"), !text.isEmpty {
            var digits = Substring(text)
            if digits.hasPrefix("0o") { digits = digits.dropFirst(2) }
            guard let mode = mode_t(digits, radix: 8), mode <= 0o777 else {
                throw fail("unix_socket_permission", "expected an octal mode such as 0770")
            }
            extras.adminSocketMode = mode
        }

        // The database: SQLite or PostgreSQL, honoured (or refused with the key named), never ignored.
        if root["database"] != nil, !(root["database"] is NSNull) {
            let type = try string("database.type")
            switch type {
            case "sqlite", "sqlite3":
                if let path = try string("database.sqlite.path"), !path.isEmpty { extras.databasePath = absolute(path) }
            case "postgres", "postgresql":
                extras.postgres = try postgresSettings(headscalePresent, fail: fail)
            case nil:
                throw fail("database.type", "missing (sqlite or postgres)")
            case let other?:
                throw fail("database.type", "\(other.debugDescription) is not a database type (sqlite or postgres)")
            }
        }

        // Known, not implemented: one line each, when the value asks for something.
        for path in headscalePresent.keys.sorted() {
            guard case .unimplemented(let why, let inert)? = catalogue[path], !inert(headscalePresent[path]!, root) else { continue }
            extras.warnings.append("\(path): not implemented: \(why)")
        }
        return Result(warren: out, extras: extras)
    }

    /// `database.postgres.*` as headscale reads them (host, name and user required; port 0 or absent: 5432).
    static func postgresSettings(_ present: [String: Any], fail: (String, String) -> ConfigError) throws -> PostgresSettings {
        func text(_ key: String, required: Bool) throws -> String? {
            let path = "database.postgres." + key
            switch present[path] {
            case nil: break
            case let s as String where !s.isEmpty: return s
            case is String: break
            case let n as Int where key == "pass": return String(n)
            default: throw fail(path, "expected a string")
            }
            if required { throw fail(path, "missing (needed with database.type: postgres)") }
            return nil
        }
        func number(_ key: String, _ range: ClosedRange<Int>, _ what: String) throws -> Int? {
            let path = "database.postgres." + key
            switch present[path] {
            case nil: return nil
            case let n as Int where n == 0: return nil
            case let n as Int where range.contains(n): return n
            case let s as String where Int(s).map(range.contains) == true: return Int(s)
            default: throw fail(path, "expected \(what)")
            }
        }
        var settings = PostgresSettings(
            host: try text("host", required: true)!, port: try number("port", 1...65535, "a port number (1 to 65535)") ?? 5432,
            database: try text("name", required: true)!, user: try text("user", required: true)!, password: try text("pass", required: false))
        if let max = try number("max_open_conns", 1...1000, "a number of connections (1 to 1000)") { settings.maxConnections = max }
        switch present["database.postgres.ssl"] {
        case nil: break
        case let b as Bool: settings.tls = b ? .require : .disable
        case let s as String:
            guard let mode = PostgresSettings.TLSMode(headscale: s) else {
                throw fail("database.postgres.ssl", "expected true, false, or one of "
                           + PostgresSettings.TLSMode.allCases.map(\.rawValue).joined(separator: ", "))
            }
            settings.tls = mode
        default: throw fail("database.postgres.ssl", "expected true, false, or a libpq sslmode")
        }
        return settings
    }

    /// The key a file used for an error that the reader reported under Warren's name.
    static func rename(_ key: String, _ renames: [(warren: String, headscale: String)]) -> String {
        var best: (warren: String, headscale: String)?
        for pair in renames where key == pair.warren || key.hasPrefix(pair.warren + ".") || key.hasPrefix(pair.warren + "[") {
            if best == nil || pair.warren.count > best!.warren.count { best = pair }
        }
        guard let best else { return key }
        return best.headscale + key.dropFirst(best.warren.count)
    }
}

enum LogFormat: String {
    case text, json
}
