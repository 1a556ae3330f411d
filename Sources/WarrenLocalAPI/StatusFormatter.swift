import Foundation
import WarrenPacket

/// Text output of the CLI, as pure functions of the LocalAPI's answers (so tests can check it).
public enum StatusFormatter {
    public struct StatusOptions: Sendable {
        public var showSelf = true
        public var showPeers = true
        /// Only peers that are active.
        public var activeOnly = false
        public init(showSelf: Bool = true, showPeers: Bool = true, activeOnly: Bool = false) {
            self.showSelf = showSelf; self.showPeers = showPeers; self.activeOnly = activeOnly
        }
    }

    /// When the backend is not running, the message `status` prints instead of the table (nil when Running).
    public static func notRunningMessage(_ status: IPNStatus) -> String? {
        switch status.backendState {
        case .running:
            return nil
        case .stopped:
            return "Warren is stopped."
        case .starting:
            return "Warren is starting..."
        case .needsMachineAuth:
            return "Machine is not yet approved by the tailnet admin."
        case .needsLogin:
            return status.authURL.isEmpty ? "Logged out." : "Logged out.\nLog in at: \(status.authURL)"
        case .noState:
            return "Warren is not started yet (no state)."
        }
    }

    /// The `status` table: one line per node (self first), columns aligned, then any health warnings.
    public static func statusTable(_ status: IPNStatus, options: StatusOptions = .init()) -> String {
        var rows: [[String]] = []
        if options.showSelf, let me = status.selfStatus {
            rows.append(row(me, in: status, isSelf: true))
        }
        if options.showPeers {
            for peer in status.sortedPeers where !options.activeOnly || peer.active {
                rows.append(row(peer, in: status, isSelf: false))
            }
        }
        var text = align(rows)
        if !status.health.isEmpty {
            text += "\n# Health check:\n" + status.health.map { "#     - \($0)\n" }.joined()
        }
        return text
    }

    /// One node's columns: IP, name, owner, OS, state.
    public static func row(_ node: PeerStatus, in status: IPNStatus, isSelf: Bool) -> [String] {
        let ip = node.tailscaleIPs.first ?? "-"
        let name = node.dnsName.isEmpty ? "\"\(node.hostName)\"" : node.shortName
        return [ip, name, owner(node, in: status), node.os.isEmpty ? "-" : node.os, isSelf ? "-" : state(node)]
    }

    /// "alice@" for a user's node, "tagged-devices" for a tagged one, the user ID when the profile is missing.
    public static func owner(_ node: PeerStatus, in status: IPNStatus) -> String {
        if let tags = node.tags, !tags.isEmpty { return "tagged-devices" }
        guard let profile = status.user[String(node.userID)] else { return node.userID == 0 ? "-" : String(node.userID) }
        let login = profile.loginName
        if let at = login.firstIndex(of: "@") { return String(login[...at]) }
        return login.isEmpty ? "-" : login
    }

    /// The state column of a peer: "-", "idle", "offline", "active; direct IP:PORT", "active; relay \"code\"", with
    /// "; offline" and ", tx N rx M" when they apply.
    public static func state(_ peer: PeerStatus) -> String {
        let traffic = peer.txBytes != 0 || peer.rxBytes != 0
        var text: String
        if !peer.active {
            if peer.exitNode { text = "idle; exit node" + (peer.online ? "" : "; offline") }
            else if peer.exitNodeOption { text = "idle; offers exit node" + (peer.online ? "" : "; offline") }
            else if !peer.online { text = "offline" }
            else if traffic { text = "idle" }
            else { text = "-" }
        } else {
            text = "active; "
            if peer.exitNode { text += "exit node; " } else if peer.exitNodeOption { text += "offers exit node; " }
            if !peer.curAddr.isEmpty {
                text += "direct \(peer.curAddr)"
            } else if !peer.peerRelay.isEmpty {
                text += "peer-relay \(peer.peerRelay)"
            } else if !peer.relay.isEmpty {
                text += "relay \"\(peer.relay)\""
            } else {
                text += "no path"
            }
            if !peer.online { text += "; offline" }
        }
        if traffic { text += ", tx \(peer.txBytes) rx \(peer.rxBytes)" }
        return text
    }

    /// Left-aligned columns separated by two spaces (the last column is not padded).
    public static func align(_ rows: [[String]]) -> String {
        guard let columns = rows.map(\.count).max() else { return "" }
        var widths = [Int](repeating: 0, count: columns)
        for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
        return rows.map { row in
            row.enumerated().map { i, cell in
                i == row.count - 1 ? cell : cell + String(repeating: " ", count: widths[i] - cell.count)
            }.joined(separator: "  ") + "\n"
        }.joined()
    }

    // MARK: ip

    public enum IPFamily: Sendable { case all, v4, v6, first }

    /// `ip` output: the addresses, one per line.
    public static func ipLines(_ addresses: [String], family: IPFamily) -> String {
        let parsed = addresses.map { ($0, IPAddress($0)) }
        let v4 = parsed.filter { $0.1?.version == .v4 }.map(\.0)
        let v6 = parsed.filter { $0.1?.version == .v6 }.map(\.0)
        let chosen: [String]
        switch family {
        case .all: chosen = v4 + v6
        case .v4: chosen = v4
        case .v6: chosen = v6
        case .first: chosen = Array((v4 + v6).prefix(1))
        }
        return chosen.map { $0 + "\n" }.joined()
    }

    /// Finds a node by IP, full DNS name, short name or host name (case-insensitive); self included.
    public static func findNode(_ query: String, in status: IPNStatus) -> PeerStatus? {
        var nodes = status.sortedPeers
        if let me = status.selfStatus { nodes.insert(me, at: 0) }
        let wanted = query.lowercased()
        let wantedFQDN = wanted.hasSuffix(".") ? wanted : wanted + "."
        if let ip = IPAddress(query) {
            return nodes.first { node in node.tailscaleIPs.contains { IPAddress($0) == ip } }
        }
        return nodes.first { $0.dnsName.lowercased() == wantedFQDN }
            ?? nodes.first { $0.shortName.lowercased() == wanted }
            ?? nodes.first { $0.hostName.lowercased() == wanted }
    }

    /// Whether `text` is an IPv4 or IPv6 address.
    public static func isIPAddress(_ text: String) -> Bool { IPAddress(text) != nil }

    // MARK: ping

    /// One `ping` line: "pong from NAME (IP) via ENDPOINT in 12ms", "... via DERP(code) in 80ms",
    /// "... via peer-relay(ip:port:vni:N) in 9ms",
    /// "... via TSMP in 3ms" (no path information), "IP is local Tailscale IP", or the error.
    public static func pingLine(_ result: PingResult, type: PingType = .disco) -> String {
        if result.isLocalIP { return "\(result.ip) is local Tailscale IP" }
        if !result.err.isEmpty { return result.err }
        if type == .peerAPI {
            let ip = result.nodeIP.isEmpty ? result.ip : result.nodeIP
            return "hit peerapi of \(ip) (\(result.nodeName)) at \(result.peerAPIURL) in \(duration(result.latencySeconds))"
        }
        let via: String
        if !result.endpoint.isEmpty { via = result.endpoint }
        else if !result.peerRelay.isEmpty { via = "peer-relay(\(result.peerRelay))" }
        else if !result.derpRegionCode.isEmpty { via = "DERP(\(result.derpRegionCode))" }
        else if result.derpRegionID != 0 { via = "DERP(\(result.derpRegionID))" }
        else { via = type.rawValue }
        let ip = result.nodeIP.isEmpty ? result.ip : result.nodeIP
        let name = result.nodeName.isEmpty ? ip : result.nodeName
        return "pong from \(name) (\(ip)) via \(via) in \(duration(result.latencySeconds))"
    }

    /// A latency rounded to the millisecond, written like Go's time.Duration: "0s", "12ms", "1.5s", "2m3.25s".
    public static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite, seconds > 0 else { return "0s" }
        let ms = Int64((seconds * 1000).rounded())
        if ms == 0 { return "0s" }
        if ms < 1000 { return "\(ms)ms" }
        let minutes = ms / 60_000
        let rest = ms % 60_000
        var secondsText = String(rest / 1000)
        if rest % 1000 != 0 {
            var fraction = String(rest % 1000)
            fraction = String(repeating: "0", count: 3 - fraction.count) + fraction
            while fraction.hasSuffix("0") { fraction.removeLast() }
            secondsText += "." + fraction
        }
        let hours = minutes / 60
        if hours > 0 { return "\(hours)h\(minutes % 60)m\(secondsText)s" }
        return minutes > 0 ? "\(minutes)m\(secondsText)s" : "\(secondsText)s"
    }

    // MARK: netcheck, whois

    public static func netcheckReport(_ report: NetcheckReport) -> String {
        func yesNo(_ value: Bool?) -> String { value.map { $0 ? "true" : "false" } ?? "(unknown)" }
        var lines = ["Report:"]
        lines.append("\t* UDP: \(report.udp)")
        lines.append("\t* IPv4: " + (report.ipv4 ? "yes, \(report.globalV4)" : "(no addr found)"))
        lines.append("\t* IPv6: " + (report.ipv6 ? "yes, \(report.globalV6)"
            : report.osHasIPv6 ? "no, but OS has support" : "no, unavailable in OS"))
        lines.append("\t* MappingVariesByDestIP: \(yesNo(report.mappingVariesByDestIP))")
        var mappers: [String] = []
        if report.upnp == true { mappers.append("UPnP") }
        if report.pmp == true { mappers.append("NAT-PMP") }
        if report.pcp == true { mappers.append("PCP") }
        lines.append("\t* PortMapping: \(mappers.joined(separator: ", "))")
        if report.captivePortal != nil { lines.append("\t* CaptivePortal: \(yesNo(report.captivePortal))") }
        let code = { (id: String) in report.regionCodes[id] ?? "region \(id)" }
        lines.append("\t* Nearest DERP: " + (report.preferredDERP == 0 ? "unknown (no response to latency probes)"
            : code(String(report.preferredDERP))))
        if !report.regionLatency.isEmpty {
            lines.append("\t* DERP latency:")
            let sorted = report.regionLatency.sorted { $0.value != $1.value ? $0.value < $1.value : $0.key < $1.key }
            for (id, seconds) in sorted {
                lines.append("\t\t- \(code(id)): \(String(format: "%.1fms", seconds * 1000))")
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    public static func whois(_ answer: WhoIsResponse) -> String {
        var lines = ["Machine:"]
        lines.append("  Name:          \(answer.node.name.hasSuffix(".") ? String(answer.node.name.dropLast()) : answer.node.name)")
        lines.append("  ID:            \(answer.node.stableID.isEmpty ? String(answer.node.id) : answer.node.stableID)")
        lines.append("  Key:           \(answer.node.key)")
        lines.append("  Addresses:     [\(answer.node.addresses.joined(separator: " "))]")
        if let tags = answer.node.tags, !tags.isEmpty {
            lines.append("  Tags:          \(tags.joined(separator: ", "))")
        }
        if answer.node.tags?.isEmpty ?? true {
            lines.append("User:")
            lines.append("  Name:     \(answer.userProfile.loginName)")
            lines.append("  ID:       \(answer.userProfile.id)")
        }
        if let capMap = answer.capMap, !capMap.isEmpty {
            lines.append("Capabilities:")
            for name in capMap.keys.sorted() {
                lines.append("  - \(name)")
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
