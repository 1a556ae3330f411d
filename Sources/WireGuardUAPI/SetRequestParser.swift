// Parsing the body of a `set=1` request into a DeviceConfigUpdate.
//
// The body is a sequence of `key=value` lines (https://www.wireguard.com/xplatform/). Device keys
// come first; each `public_key=` line starts a peer and every line after it belongs to that
// peer. The whole body is parsed before anything is applied, so a malformed request changes
// nothing (wireguard-go applies line by line and can leave a half-applied configuration).

import WarrenPacket
import WireGuardProtocol

extension DeviceConfigUpdate {
    /// The longest line accepted, as wireguard-go's `bufio.Scanner` (64 KiB buffer); a longer
    /// line is an I/O error (EIO) there and here.
    public static let maximumLineLength = 65_536

    /// Parses the lines of a `set=1` request: everything after the `set=1` line, without the
    /// blank line that ends it. Lines end with `\n`; one `\r` before it is dropped.
    /// An empty line ends the request early (anything after it is ignored), as in wireguard-go.
    public init(parsingSetRequest body: some Collection<UInt8>) throws(UAPIError) {
        var lines: [ArraySlice<UInt8>] = []
        var rest = ArraySlice(body)
        while !rest.isEmpty {
            if let newline = rest.firstIndex(of: UInt8(ascii: "\n")) {
                lines.append(rest[..<newline])
                rest = rest[(newline + 1)...]
            } else {
                lines.append(rest)
                rest = []
            }
        }
        try self.init(parsingSetLines: lines)
    }

    /// Parses already split lines (without their `\n`).
    public init(parsingSetLines lines: [ArraySlice<UInt8>]) throws(UAPIError) {
        var parser = SetRequestParser()
        for var line in lines {
            if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
            if line.isEmpty { break }
            guard line.count <= Self.maximumLineLength else {
                throw UAPIError(.io, "line longer than \(Self.maximumLineLength) bytes")
            }
            try parser.consume(line)
        }
        self = parser.finish()
    }
}

/// Turns lines into a DeviceConfigUpdate, one line at a time, failing on the first bad line
/// with the errno wireguard-go gives that line.
struct SetRequestParser {
    private var update = DeviceConfigUpdate()
    private var peer: PeerConfigUpdate?
    /// After `remove=true` (or `update_only` on a removed peer) wireguard-go keeps validating the
    /// peer's lines but applies them to a throw-away peer.
    private var peerIgnored = false

    mutating func consume(_ line: ArraySlice<UInt8>) throws(UAPIError) {
        guard let equals = line.firstIndex(of: UInt8(ascii: "=")) else {
            throw UAPIError(.protocolViolation, "line without '=': \(Self.printable(line))")
        }
        let key = String(decoding: line[..<equals], as: UTF8.self)
        let value = String(decoding: line[(equals + 1)...], as: UTF8.self)

        if key == "public_key" {
            guard let publicKey = WireGuardPublicKey(hex: value) else {
                throw UAPIError(.invalidValue, "invalid public_key \(Self.printable(value))")
            }
            flushPeer()
            peer = PeerConfigUpdate(publicKey: publicKey)
            peerIgnored = false
            return
        }
        if peer == nil {
            try consumeDeviceLine(key: key, value: value)
        } else {
            try consumePeerLine(key: key, value: value)
        }
    }

    mutating func finish() -> DeviceConfigUpdate {
        flushPeer()
        return update
    }

    private mutating func flushPeer() {
        if let peer { update.peers.append(peer) }
        peer = nil
    }

    private mutating func consumeDeviceLine(key: String, value: String) throws(UAPIError) {
        switch key {
        case "private_key":
            // wireguard-go clamps a non-zero private key as it reads it; zero means "none".
            guard let key = WireGuardPrivateKey.fromUAPIHex(value) else {
                throw UAPIError(.invalidValue, "invalid private_key")
            }
            update.privateKey = key
        case "listen_port":
            guard let port = parseDecimal(value, maximum: UInt64(UInt16.max)) else {
                throw UAPIError(.invalidValue, "invalid listen_port \(Self.printable(value))")
            }
            update.listenPort = UInt16(port)
        case "fwmark":
            guard let mark = parseDecimal(value, maximum: UInt64(UInt32.max)) else {
                throw UAPIError(.invalidValue, "invalid fwmark \(Self.printable(value))")
            }
            update.fwmark = UInt32(mark)
        case "replace_peers":
            try Self.requireTrue(key, value)
            // Peers named earlier in the request do not exist here (a public_key line ends the
            // device section), so replacing only has to clear what the device already has.
            update.replacePeers = true
        default:
            throw UAPIError(.invalidValue, "unknown device key \(Self.printable(key))")
        }
    }

    private mutating func consumePeerLine(key: String, value: String) throws(UAPIError) {
        guard var current = peer else { return }
        defer { peer = current }
        switch key {
        case "update_only":
            try Self.requireTrue(key, value)
            if !peerIgnored { current.updateOnly = true }
        case "remove":
            try Self.requireTrue(key, value)
            // Everything said about this peer so far is moot: it is removed.
            current = PeerConfigUpdate(publicKey: current.publicKey, remove: true)
            peerIgnored = true
        case "preshared_key":
            guard let psk = WireGuardPresharedKey(hex: value) else {
                throw UAPIError(.invalidValue, "invalid preshared_key")
            }
            if !peerIgnored { current.presharedKey = psk }
        case "endpoint":
            guard let endpoint = UAPIEndpoint(value) else {
                throw UAPIError(.invalidValue, "invalid endpoint \(Self.printable(value))")
            }
            if !peerIgnored { current.endpoint = endpoint }
        case "persistent_keepalive_interval":
            guard let seconds = parseDecimal(value, maximum: UInt64(UInt16.max)) else {
                throw UAPIError(.invalidValue, "invalid persistent_keepalive_interval \(Self.printable(value))")
            }
            if !peerIgnored { current.persistentKeepaliveInterval = UInt16(seconds) }
        case "replace_allowed_ips":
            try Self.requireTrue(key, value)
            if !peerIgnored {
                current.replaceAllowedIPs = true
                current.allowedIPs = []
            }
        case "allowed_ip":
            guard let prefix = Self.parsePrefix(value) else {
                throw UAPIError(.invalidValue, "invalid allowed_ip \(Self.printable(value))")
            }
            if !peerIgnored { current.allowedIPs.append(prefix) }
        case "protocol_version":
            guard value == "1" else {
                throw UAPIError(.invalidValue, "unsupported protocol_version \(Self.printable(value))")
            }
            if !peerIgnored { current.protocolVersion = 1 }
        default:
            throw UAPIError(.invalidValue, "unknown peer key \(Self.printable(key))")
        }
    }

    /// `address/bits` as Go's `netip.ParsePrefix` takes it: the length is required, decimal,
    /// within the address family, without a sign.
    private static func parsePrefix(_ text: String) -> IPPrefix? {
        guard let slash = text.firstIndex(of: "/") else { return nil }
        let bitsText = text[text.index(after: slash)...]
        guard let address = IPAddress(text[..<slash]),
              bitsText.count <= 3, let bits = parseDecimal(bitsText, maximum: 128),
              bitsText.count == 1 || bitsText.first != "0" else { return nil }
        return IPPrefix(address: address, bits: Int(bits))
    }

    private static func requireTrue(_ key: String, _ value: String) throws(UAPIError) {
        guard value == "true" else {
            throw UAPIError(.invalidValue, "\(key) accepts only true, got \(printable(value))")
        }
    }

    /// A short, printable excerpt of untrusted text for error messages.
    private static func printable(_ text: some Collection<UInt8>) -> String {
        let prefix = text.prefix(64).map { $0 >= 0x20 && $0 < 0x7F ? Character(UnicodeScalar($0)) : "?" }
        return "\"" + String(prefix) + (text.count > 64 ? "...\"" : "\"")
    }

    private static func printable(_ text: String) -> String { printable(Array(text.utf8)) }
}
