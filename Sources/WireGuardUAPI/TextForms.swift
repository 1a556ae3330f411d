// The text forms: a snapshot as a `get=1` answer, an update as a `set=1` request, and the reverse
// of the first (for clients such as a future `warren` CLI, and for round-trip tests).

import WarrenPacket
import WireGuardProtocol

extension DeviceSnapshot {
    /// The body of a `get=1` answer, in wireguard-go's order, without the `errno=` line:
    /// `private_key`, `listen_port`, `fwmark`, then per peer `public_key`, `preshared_key`,
    /// `protocol_version`, `endpoint`, `last_handshake_time_sec`, `last_handshake_time_nsec`,
    /// `tx_bytes`, `rx_bytes`, `persistent_keepalive_interval`, `allowed_ip`... Every line ends
    /// with `\n`.
    public var getResponseBody: String {
        var out = ""
        if let privateKey, !privateKey.isZero { out += "private_key=\(privateKey.hex)\n" }
        if listenPort != 0 { out += "listen_port=\(listenPort)\n" }
        if fwmark != 0 { out += "fwmark=\(fwmark)\n" }
        for peer in peers {
            out += "public_key=\(peer.publicKey.hex)\n"
            out += "preshared_key=\(peer.presharedKey.hex)\n"
            out += "protocol_version=\(peer.protocolVersion)\n"
            if let endpoint = peer.endpoint { out += "endpoint=\(endpoint)\n" }
            out += "last_handshake_time_sec=\(peer.lastHandshakeTimeSec)\n"
            out += "last_handshake_time_nsec=\(peer.lastHandshakeTimeNsec)\n"
            out += "tx_bytes=\(peer.txBytes)\n"
            out += "rx_bytes=\(peer.rxBytes)\n"
            out += "persistent_keepalive_interval=\(peer.persistentKeepaliveInterval)\n"
            for prefix in peer.allowedIPs { out += "allowed_ip=\(prefix)\n" }
        }
        return out
    }

    /// The complete answer to `get=1`: the body, `errno=0` and the blank line.
    public var getResponse: String { getResponseBody + "errno=0\n\n" }

    /// Parses a `get=1` answer (with or without its `errno=0` line and blank line).
    /// A non-zero errno throws it back as the matching error.
    public init(parsingGetResponse text: String) throws(UAPIError) {
        var snapshot = DeviceSnapshot()
        var peer: PeerSnapshot?
        func invalid(_ line: Substring) -> UAPIError { UAPIError(.invalidValue, "bad line \"\(line.prefix(80))\"") }
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.isEmpty { break }
            guard let equals = line.firstIndex(of: "=") else {
                throw UAPIError(.protocolViolation, "line without '='")
            }
            let key = line[..<equals]
            let value = line[line.index(after: equals)...]
            if key == "public_key" {
                guard let k = WireGuardPublicKey(hex: value) else { throw invalid(line) }
                if let peer { snapshot.peers.append(peer) }
                peer = PeerSnapshot(publicKey: k)
                continue
            }
            if key == "errno" {
                guard let n = Int32(value) else { throw invalid(line) }
                if n != 0 { throw UAPIError(Self.code(forWireErrno: n), "device answered errno=\(n)") }
                continue
            }
            if var p = peer {
                switch key {
                case "preshared_key":
                    guard let k = WireGuardPresharedKey(hex: value) else { throw invalid(line) }
                    p.presharedKey = k
                case "protocol_version":
                    guard let v = Int(value) else { throw invalid(line) }
                    p.protocolVersion = v
                case "endpoint":
                    guard let e = UAPIEndpoint(value) else { throw invalid(line) }
                    p.endpoint = e
                case "last_handshake_time_sec":
                    guard let v = Int64(value) else { throw invalid(line) }
                    p.lastHandshakeTimeSec = v
                case "last_handshake_time_nsec":
                    guard let v = Int64(value) else { throw invalid(line) }
                    p.lastHandshakeTimeNsec = v
                case "tx_bytes":
                    guard let v = UInt64(value) else { throw invalid(line) }
                    p.txBytes = v
                case "rx_bytes":
                    guard let v = UInt64(value) else { throw invalid(line) }
                    p.rxBytes = v
                case "persistent_keepalive_interval":
                    guard let v = UInt16(value) else { throw invalid(line) }
                    p.persistentKeepaliveInterval = v
                case "allowed_ip":
                    guard value.contains("/"), let prefix = IPPrefix(value) else { throw invalid(line) }
                    p.allowedIPs.append(prefix)
                default:
                    throw invalid(line)
                }
                peer = p
            } else {
                switch key {
                case "private_key":
                    guard let k = WireGuardPrivateKey(hex: value) else { throw invalid(line) }
                    snapshot.privateKey = k
                case "listen_port":
                    guard let v = UInt16(value) else { throw invalid(line) }
                    snapshot.listenPort = v
                case "fwmark":
                    guard let v = UInt32(value) else { throw invalid(line) }
                    snapshot.fwmark = v
                default:
                    throw invalid(line)
                }
            }
        }
        if let peer { snapshot.peers.append(peer) }
        self = snapshot
    }

    private static func code(forWireErrno n: Int32) -> UAPIError.Code {
        let known: [UAPIError.Code] = [.invalidValue, .protocolViolation, .io, .portInUse, .unknown]
        return known.first { $0.errno == -n } ?? .unknown
    }
}

extension DeviceConfigUpdate {
    /// The `set=1` request that produces this update, from `set=1` to the final blank line.
    /// Peers that are removed get only `public_key` and `remove=true`.
    public var setRequest: String {
        var out = "set=1\n"
        if let privateKey { out += "private_key=\(privateKey.hex)\n" }
        if let listenPort { out += "listen_port=\(listenPort)\n" }
        if let fwmark { out += "fwmark=\(fwmark)\n" }
        if replacePeers { out += "replace_peers=true\n" }
        for peer in peers {
            out += "public_key=\(peer.publicKey.hex)\n"
            if peer.remove {
                out += "remove=true\n"
                continue
            }
            if peer.updateOnly { out += "update_only=true\n" }
            if let version = peer.protocolVersion { out += "protocol_version=\(version)\n" }
            if let psk = peer.presharedKey { out += "preshared_key=\(psk.hex)\n" }
            if let endpoint = peer.endpoint { out += "endpoint=\(endpoint)\n" }
            if let seconds = peer.persistentKeepaliveInterval { out += "persistent_keepalive_interval=\(seconds)\n" }
            if peer.replaceAllowedIPs { out += "replace_allowed_ips=true\n" }
            for prefix in peer.allowedIPs { out += "allowed_ip=\(prefix)\n" }
        }
        return out + "\n"
    }
}
