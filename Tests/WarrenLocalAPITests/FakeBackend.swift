import Foundation
import WarrenLocalAPI
#if canImport(Glibc)
import Glibc
#endif

/// A LocalBackend with a fixed tailnet: self (100.64.0.1), "alpha" (active, direct), "beta" (active over DERP),
/// "gamma" (offline), and a tagged "server" (idle).
final class FakeBackend: LocalBackend, @unchecked Sendable {
    private let lock = NSLock()
    private var _state: BackendState = .running
    private var _upRequests: [UpRequest] = []
    private var _calls: [String] = []
    private var statusCallsUntilRunning = 0

    var upRequests: [UpRequest] { lock.withLock { _upRequests } }
    var calls: [String] { lock.withLock { _calls } }
    func setState(_ state: BackendState) { lock.withLock { _state = state } }

    static let selfKey = "nodekey:" + String(repeating: "a1", count: 32)
    static let created = GoTime.parse("2024-01-02T03:04:05Z")!

    func status() async -> IPNStatus {
        let state: BackendState = lock.withLock {
            _calls.append("status")
            if statusCallsUntilRunning > 0 {
                statusCallsUntilRunning -= 1
                if statusCallsUntilRunning == 0 { _state = .running }
            }
            return _state
        }
        var me = PeerStatus(
            id: "nSELF", publicKey: Self.selfKey, hostName: "laptop", dnsName: "laptop.example.ts.net.", os: "linux",
            userID: 1, tailscaleIPs: ["100.64.0.1", "fd7a:115c:a1e0::1"], addrs: ["192.168.1.10:41641"],
            relay: "fra", created: Self.created, online: true, inNetworkMap: true, inMagicSock: false, inEngine: false)
        me.keyExpiry = GoTime.parse("2030-01-01T00:00:00Z")
        let alpha = PeerStatus(
            id: "nALPHA", publicKey: "nodekey:" + String(repeating: "b2", count: 32), hostName: "alpha-host",
            dnsName: "alpha.example.ts.net.", os: "linux", userID: 1, tailscaleIPs: ["100.64.0.2", "fd7a:115c:a1e0::2"],
            allowedIPs: ["100.64.0.2/32", "fd7a:115c:a1e0::2/128"], addrs: ["203.0.113.7:41641"],
            curAddr: "203.0.113.7:41641", relay: "fra", rxBytes: 5678, txBytes: 1234, created: Self.created,
            lastWrite: Date(timeIntervalSince1970: 1_700_000_000.5), lastSeen: Date(timeIntervalSince1970: 1_700_000_000),
            lastHandshake: Date(timeIntervalSince1970: 1_700_000_001), online: true, active: true,
            inNetworkMap: true, inMagicSock: true, inEngine: true)
        let beta = PeerStatus(
            id: "nBETA", publicKey: "nodekey:" + String(repeating: "c3", count: 32), hostName: "beta",
            dnsName: "beta.example.ts.net.", os: "macOS", userID: 2, tailscaleIPs: ["100.64.0.3"],
            relay: "nyc", rxBytes: 10, txBytes: 20, created: Self.created, online: true, active: true,
            inNetworkMap: true, inMagicSock: true, inEngine: true)
        let gamma = PeerStatus(
            id: "nGAMMA", publicKey: "nodekey:" + String(repeating: "d4", count: 32), hostName: "gamma",
            dnsName: "gamma.example.ts.net.", os: "windows", userID: 2, tailscaleIPs: ["100.64.0.10"],
            created: Self.created, online: false, inNetworkMap: true)
        let server = PeerStatus(
            id: "nSRV", publicKey: "nodekey:" + String(repeating: "e5", count: 32), hostName: "db",
            dnsName: "db.example.ts.net.", os: "linux", userID: 3, tailscaleIPs: ["100.64.0.4"], tags: ["tag:server"],
            created: Self.created, online: true, inNetworkMap: true)
        return IPNStatus(
            version: "0.1.0-test", backendState: state, haveNodeKey: true,
            authURL: state == .needsLogin ? "https://control.example/a/abc123" : "",
            tailscaleIPs: ["100.64.0.1", "fd7a:115c:a1e0::1"], selfStatus: me, health: [],
            magicDNSSuffix: "example.ts.net",
            currentTailnet: TailnetStatus(name: "example.com", magicDNSSuffix: "example.ts.net"),
            peer: Dictionary(uniqueKeysWithValues: [alpha, beta, gamma, server].map { ($0.publicKey, $0) }),
            user: ["1": UserProfile(id: 1, loginName: "alice@example.com", displayName: "Alice"),
                   "2": UserProfile(id: 2, loginName: "bob@example.com", displayName: "Bob"),
                   "3": UserProfile(id: 3, loginName: "tagged-devices", displayName: "Tagged Devices")])
    }

    func up(_ request: UpRequest) async throws -> UpResponse {
        try lock.withLock {
            _calls.append("up")
            _upRequests.append(request)
            if request.authKey == "bad" { throw LocalAPIError(401, "invalid auth key") }
            if request.authKey == nil {
                _state = .needsLogin
                statusCallsUntilRunning = 2
                return UpResponse(backendState: .needsLogin, authURL: "https://control.example/a/abc123")
            }
            _state = .running
            return UpResponse(backendState: .running)
        }
    }

    func down() async throws {
        lock.withLock { _calls.append("down"); _state = .stopped; statusCallsUntilRunning = 0 }
    }

    func logout() async throws {
        lock.withLock { _calls.append("logout"); _state = .needsLogin; statusCallsUntilRunning = 0 }
    }

    func ping(ip: String, type: PingType, size: Int) async throws -> PingResult {
        lock.withLock { _calls.append("ping \(ip) \(type.rawValue) \(size)") }
        switch ip {
        case "100.64.0.1":
            return PingResult(ip: ip, nodeIP: ip, nodeName: "laptop", isLocalIP: true)
        case "100.64.0.2":
            return PingResult(ip: ip, nodeIP: ip, nodeName: "alpha", latencySeconds: 0.012,
                              endpoint: type == .disco ? "203.0.113.7:41641" : "")
        case "100.64.0.3":
            return PingResult(ip: ip, nodeIP: ip, nodeName: "beta", latencySeconds: 0.0804, derpRegionID: 2,
                              derpRegionCode: "nyc")
        case "100.64.0.10":
            return PingResult(ip: ip, nodeIP: ip, nodeName: "gamma", err: "timeout waiting for ping reply")
        case "100.64.0.99":
            throw NSError(domain: "fake", code: 7)
        default:
            throw LocalAPIError(404, "no peer with IP \(ip)")
        }
    }

    func whois(_ address: String) async throws -> WhoIsResponse? {
        lock.withLock { _calls.append("whois \(address)") }
        guard address.hasPrefix("100.64.0.2") else { return nil }
        return WhoIsResponse(
            node: WhoIsNode(id: 2, stableID: "nALPHA", name: "alpha.example.ts.net.", user: 1,
                            key: "nodekey:" + String(repeating: "b2", count: 32),
                            addresses: ["100.64.0.2/32", "fd7a:115c:a1e0::2/128"]),
            userProfile: UserProfile(id: 1, loginName: "alice@example.com", displayName: "Alice"),
            capMap: ["https://tailscale.com/cap/file-sharing": [.null], "example.com/cap/x": [.object(["a": .number(1)])]])
    }

    func dnsQuery(name: String, type: String) async throws -> DNSQueryResponse {
        throw LocalAPIError(503, "MagicDNS is not running")
    }

    func dnsStatus() async throws -> DNSStatus {
        DNSStatus(magicDNS: true, tailnetDomain: "example.ts.net", listening: ["100.100.100.100:53"], hostMode: "memory")
    }

    func suggestExitNode() async throws -> ExitNodeSuggestion {
        ExitNodeSuggestion(id: "nEXIT1CNTRL", name: "exit1.example.ts.net.")
    }

    func netcheck() async throws -> NetcheckReport {
        NetcheckReport(udp: true, ipv4: true, ipv6: false, ipv4CanSend: true, osHasIPv6: true,
                       mappingVariesByDestIP: false, preferredDERP: 1, regionLatency: ["1": 0.0123, "2": 0.0801],
                       regionCodes: ["1": "fra", "2": "nyc"], globalV4: "198.51.100.4:55555")
    }
}

/// A LocalAPIServer over a FakeBackend on a fresh socket under /tmp; `stop()` closes it and removes the files.
struct TestServer {
    let backend: FakeBackend
    let server: LocalAPIServer
    let directory: String
    var socketPath: String { server.socketPath }
    var client: LocalAPIClient { LocalAPIClient(socketPath: socketPath, timeout: 10) }

    static func start(requestTimeout: Double = 2) async throws -> TestServer {
        let directory = "/tmp/warren-lapi-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let backend = FakeBackend()
        var configuration = LocalAPIServer.Configuration()
        configuration.requestTimeout = .milliseconds(Int64(requestTimeout * 1000))
        let server = try await LocalAPIServer.start(
            backend: backend, socketPath: directory + "/sub/warrend.sock", configuration: configuration)
        return TestServer(backend: backend, server: server, directory: directory)
    }

    func stop() async {
        await server.close()
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// Writes raw bytes to a unix socket, half-closes, and reads until the server closes. Returns nil on a read
/// timeout (a hang).
func rawExchange(_ path: String, _ bytes: [UInt8], halfClose: Bool = true, timeout: Int = 8) -> [UInt8]? {
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
        let p = Array(path.utf8)
        raw.copyBytes(from: p)
        raw[p.count] = 0
    }
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    let ok = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    guard ok == 0 else { return [] }
    var time = timeval()
    time.tv_sec = timeout
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &time, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &time, socklen_t(MemoryLayout<timeval>.size))
    var sent = 0
    while sent < bytes.count {
        let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        if n <= 0 { break }
        sent += n
    }
    if halfClose { shutdown(fd, Int32(SHUT_WR)) }
    var answer: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65_536)
    while true {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { return nil }
        if n <= 0 { break }
        answer += buffer[0..<n]
    }
    return answer
}

/// The status code of a raw HTTP answer, if it is one.
func statusCode(_ answer: [UInt8]) -> Int? {
    let text = String(decoding: answer.prefix(20), as: UTF8.self)
    guard text.hasPrefix("HTTP/1.1 ") else { return nil }
    return Int(text.dropFirst(9).prefix(3))
}
