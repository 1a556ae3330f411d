// The node's control client as a long-running service, the counterpart of tailscale's
// control/controlclient (auto.go: the login and map loops with backoff; direct.go: register and the map
// poll; map.go: the stream's messages). One ts2021 connection at a time:
//
//   connect     GET /key (once, again after a failed handshake), POST /ts2021, HTTP/2
//   register    once per service (not again on reconnects): with the auth key, or interactively
//               (AuthURL, then Followup long polls until approved), or with nothing when the server
//               already knows this node key
//   map         Stream, KeepAlive, Compress "zstd": every message decoded and handed on, in order; a
//               watchdog drops the connection after `watchdogTimeout` of silence
//   lite        endpoint and hostinfo changes go out as Stream=false, OmitPeers=true requests, coalesced
//   reconnect   exponential backoff with jitter (reset once a stream delivered something)
//
// `run()` returns when cancelled, after `logout()`, or when the node key expired; then `events` finishes.

import Foundation
import Logging
import NIOCore
import TailscaleKeys
import WarrenControlTransport
import WarrenPacket
import WarrenTailcfg

public enum ControlEvent: Sendable {
    /// Interactive login: show this URL to the user (nil: the server gave none yet).
    case needsLogin(authURL: String?)
    /// Registered, waiting for an administrator to approve the device; the map keeps streaming.
    case needsMachineAuth
    /// Registered and authorized (again after a device approval, with `machineAuthorized` true).
    case loggedIn(RegisterResponse)
    /// Every map message but keep-alives, in order; the first after each (re)connection is a full map.
    case map(MapResponse)
    /// The connection or stream was lost; the service retries with backoff.
    case disconnected(reason: String)
    /// The node key expired: rotate it (``ControlClientConfiguration/oldNodeKey``) and start a new service.
    case keyExpired
    case loggedOut
}

public enum ControlClientError: Error, CustomStringConvertible, Sendable {
    /// The server answered the register request with an error text.
    case registrationRefused(String)
    /// An HTTP status the client does not go on from.
    case http(path: String, status: Int, body: String)
    /// HTTP 429: wait at least this long.
    case retryAfter(Duration)
    case streamEnded

    public var description: String {
        switch self {
        case .registrationRefused(let text): "registration refused: \(text)"
        case .http(let path, let status, let body): "\(path): HTTP \(status): \(body)"
        case .retryAfter(let d): "rate limited; retry after \(d)"
        case .streamEnded: "map stream ended"
        }
    }
}

public actor ControlClientService {
    public struct Statistics: Sendable, Hashable {
        /// Successful ts2021 connections.
        public var connections = 0
        /// Register requests answered (interactive follow-ups included).
        public var registerRequests = 0
        /// Completed registrations (at most one per service unless the server forgot the node).
        public var registrations = 0
        /// Map messages received, keep-alives included.
        public var mapMessages = 0
        public var keepAlives = 0
        public var liteUpdates = 0
    }

    /// Why `run()` stopped for good.
    private enum Stop: Error {
        case keyExpired
        case loggedOut
    }

    public nonisolated let events: AsyncStream<ControlEvent>
    private let continuation: AsyncStream<ControlEvent>.Continuation
    private let configuration: ControlClientConfiguration
    private let logger: Logger
    private let sleep: @Sendable (Duration) async throws -> Void
    private let random: @Sendable () -> Double

    public private(set) var statistics = Statistics()
    private var controlKey: MachinePublic?
    private var connection: ControlConnection?
    private var registered = false
    private var authKeySent = false
    private var awaitingMachineAuth = false
    private var lastRegistration: RegisterResponse?
    private var lastAuthURL: String?
    private var stopped = false
    private var loggingOut = false
    private var messagesThisSession = 0

    private var hostinfo: Hostinfo
    private var endpoints: [AddrPort] = []
    private var endpointTypes: [Int] = []
    /// Endpoints or hostinfo changed since the last lite update that went through.
    private var liteDirty = false
    private var liteSignal: AsyncStream<Void>.Continuation?

    /// - Parameters:
    ///   - sleep: waits between reconnects and in the watchdog (tests pass a faster clock).
    ///   - random: jitter source in [0, 1).
    public init(configuration: ControlClientConfiguration, logger: Logger,
                sleep: @escaping @Sendable (Duration) async throws -> Void = { try await Task.sleep(for: $0) },
                random: @escaping @Sendable () -> Double = { Double.random(in: 0..<1) }) {
        self.configuration = configuration
        self.logger = logger
        self.sleep = sleep
        self.random = random
        hostinfo = configuration.hostinfo
        (events, continuation) = AsyncStream<ControlEvent>.makeStream()
    }

    /// The node key this service logs in with.
    public nonisolated var nodeKey: NodePublic { configuration.nodeKey.publicKey }

    private func emit(_ event: ControlEvent) { continuation.yield(event) }

    // MARK: The loop

    public func run() async {
        await withTaskCancellationHandler {
            await loop()
        } onCancel: {
            Task { await self.dropConnection() }
        }
        await dropConnection()
        continuation.finish()
    }

    private func loop() async {
        var attempt = 0
        while !Task.isCancelled && !stopped {
            if loggingOut {
                try? await sleep(configuration.backoff.initial)
                continue
            }
            messagesThisSession = 0
            var minimumDelay = Duration.zero
            let reason: String
            do {
                try await session()
                reason = ControlClientError.streamEnded.description
            } catch is CancellationError {
                break
            } catch Stop.keyExpired {
                stopped = true
                emit(.keyExpired)
                break
            } catch Stop.loggedOut {
                break
            } catch ControlClientError.retryAfter(let duration) {
                minimumDelay = duration
                reason = ControlClientError.retryAfter(duration).description
            } catch {
                reason = "\(error)"
            }
            if Task.isCancelled || stopped { break }
            // logout() is using the connection (the server ended the stream because of it): leave both be.
            if loggingOut { continue }
            await dropConnection()
            logger.info("control connection lost", metadata: ["reason": "\(reason)"])
            emit(.disconnected(reason: reason))
            if messagesThisSession > 0 { attempt = 0 }
            let delay = max(minimumDelay, configuration.backoff.delay(attempt: attempt, random: random()))
            attempt += 1
            do { try await sleep(delay) } catch { break }
        }
    }

    private func dropConnection() async {
        liteSignal?.finish()
        liteSignal = nil
        if let connection {
            self.connection = nil
            await connection.close()
        }
    }

    /// One connection: connect, register if needed, stream the map until it ends.
    private func session() async throws {
        let connection = try await connect()
        if !registered { try await register(on: connection) }
        try Task.checkCancellation()
        try await streamMap(on: connection)
    }

    private func endpoint() throws -> ControlEndpoint {
        var endpoint = try ControlEndpoint(url: configuration.serverURL, tls: configuration.tls, extraCAFile: configuration.extraCAFile)
        endpoint.socketMark = configuration.socketMark
        return endpoint
    }

    private var protocolVersion: UInt16 { UInt16(clamping: configuration.capabilityVersion) }

    private func connect() async throws -> ControlConnection {
        if let connection, connection.isActive { return connection }
        let endpoint = try endpoint()
        let key: MachinePublic
        if let controlKey {
            key = controlKey
        } else {
            key = try await ControlConnection.fetchServerKey(endpoint, capabilityVersion: protocolVersion).publicKey
            controlKey = key
        }
        let connection: ControlConnection
        do {
            connection = try await ControlConnection.connect(to: endpoint, machineKey: configuration.machineKey,
                                                             controlKey: key, protocolVersion: protocolVersion)
        } catch {
            // The server's key may have changed: ask again next time.
            controlKey = nil
            throw error
        }
        if Task.isCancelled || stopped {
            await connection.close()
            throw CancellationError()
        }
        self.connection = connection
        statistics.connections += 1
        logger.debug("control connection established", metadata: ["server": "\(endpoint)"])
        return connection
    }

    // MARK: Registration

    private func baseRegisterRequest() -> RegisterRequest {
        var request = RegisterRequest()
        request.version = configuration.capabilityVersion
        request.nodeKey = configuration.nodeKey.publicKey
        if let old = configuration.oldNodeKey { request.oldNodeKey = old }
        request.hostinfo = hostinfo
        if configuration.ephemeral { request.ephemeral = true }
        return request
    }

    private func register(on connection: ControlConnection) async throws {
        var request = baseRegisterRequest()
        if let authKey = configuration.authKey, !authKey.isEmpty, !authKeySent {
            request.auth = RegisterResponseAuth(authKey: authKey)
        }
        var response = try await postRegister(request, on: connection)
        if request.auth != nil && response.error.isEmpty { authKeySent = true }
        while true {
            if !response.error.isEmpty { throw ControlClientError.registrationRefused(response.error) }
            if response.nodeKeyExpired && response.authURL.isEmpty { throw Stop.keyExpired }
            if response.authURL.isEmpty { break }
            if response.authURL != lastAuthURL {
                lastAuthURL = response.authURL
                logger.info("login required", metadata: ["url": "\(response.authURL)"])
                emit(.needsLogin(authURL: response.authURL))
            }
            // Long poll until someone approves the login (the server answers again with the URL meanwhile).
            var followup = baseRegisterRequest()
            followup.followup = response.authURL
            response = try await postRegister(followup, on: connection)
        }
        registered = true
        lastAuthURL = nil
        lastRegistration = response
        statistics.registrations += 1
        if response.machineAuthorized {
            awaitingMachineAuth = false
            logger.info("logged in", metadata: ["login": "\(response.login.loginName)"])
            emit(.loggedIn(response))
        } else {
            awaitingMachineAuth = true
            logger.info("registered; waiting for device approval")
            emit(.needsMachineAuth)
        }
    }

    private func postRegister(_ request: RegisterRequest, on connection: ControlConnection) async throws -> RegisterResponse {
        let response = try await connection.post("/machine/register", json: try TailcfgJSON.encode(request),
                                                  headers: [("Ts-Lb", "\(configuration.nodeKey.publicKey)")])
        statistics.registerRequests += 1
        let body = try await response.collect(maximumLength: 1 << 20)
        try checkStatus(response, body: body, path: "/machine/register")
        return try TailcfgJSON.decode(RegisterResponse.self, from: body)
    }

    /// Maps a non-200 answer to what the loop does next.
    private func checkStatus(_ response: ControlHTTPResponse, body: [UInt8], path: String) throws {
        guard response.status != 200 else { return }
        let text = String(decoding: body.prefix(512), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        switch response.status {
        case 429:
            let seconds = response.header("Retry-After").flatMap { Int($0.trimmingCharacters(in: .whitespaces)) } ?? 0
            throw ControlClientError.retryAfter(.seconds(min(max(seconds, 0), 3600)))
        case 401, 403:
            let lower = text.lowercased()
            if lower.contains("expired") { throw Stop.keyExpired }
            if lower.contains("not registered") || response.status == 401 {
                // The server forgot this node (deleted, or a new database): register again next time.
                registered = false
            }
            throw ControlClientError.http(path: path, status: response.status, body: text)
        default:
            throw ControlClientError.http(path: path, status: response.status, body: text)
        }
    }

    // MARK: The map stream

    private func mapRequest(stream: Bool) -> MapRequest {
        var request = MapRequest()
        request.version = configuration.capabilityVersion
        request.nodeKey = configuration.nodeKey.publicKey
        request.discoKey = configuration.discoKey
        request.hostinfo = hostinfo
        if stream {
            request.stream = true
            request.keepAlive = true
            request.compress = "zstd"
        } else {
            request.stream = false
            request.omitPeers = true
            request.readOnly = false
        }
        if !endpoints.isEmpty || !stream {
            request.endpoints = endpoints
            request.endpointTypes = endpointTypes
        }
        return request
    }

    private func streamMap(on connection: ControlConnection) async throws {
        let request = mapRequest(stream: true)
        let response = try await connection.post("/machine/map", json: try TailcfgJSON.encode(request),
                                                  headers: [("Ts-Lb", "\(configuration.nodeKey.publicKey)")])
        if response.status != 200 {
            let body = try await response.collect(maximumLength: 1 << 20)
            try checkStatus(response, body: body, path: "/machine/map")
        }
        // Lite updates on this connection from now on; send one at once if something is pending (servers
        // since capability 68 ignore endpoints on streaming requests).
        let (signals, signal) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        liteSignal = signal
        if liteDirty || !endpoints.isEmpty {
            liteDirty = true
            signal.yield()
        }
        let timeout = configuration.watchdogTimeout
        let sleep = self.sleep
        let maximum = configuration.maximumMapMessageSize
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { [weak self] in
                // Watchdog: no message at all during a whole period drops the connection.
                var seen = -1
                while !Task.isCancelled {
                    try await sleep(timeout)
                    guard let self else { return }
                    let now = await self.messagesThisSession
                    if now == seen {
                        await self.watchdogFired(connection)
                        return
                    }
                    seen = now
                }
            }
            group.addTask { [weak self] in
                for await _ in signals {
                    guard let self else { return }
                    await self.sendLiteUpdate(on: connection)
                }
            }
            defer { group.cancelAll() }
            var decoder = MapStreamDecoder(maximumMessageLength: maximum)
            do {
                for await chunk in response.body {
                    decoder.append(chunk)
                    while case .message(let body) = try decoder.parseStep() {
                        let json = try Zstd.decompress(body, maximumSize: maximum)
                        handle(try TailcfgJSON.decode(MapResponse.self, from: json))
                    }
                }
            } catch {
                response.cancel()
                throw error
            }
            try Task.checkCancellation()
        }
    }

    private func watchdogFired(_ connection: ControlConnection) async {
        logger.notice("no map message within the watchdog period; reconnecting",
                      metadata: ["timeout": "\(configuration.watchdogTimeout)"])
        await connection.close()
    }

    private func handle(_ message: MapResponse) {
        statistics.mapMessages += 1
        messagesThisSession += 1
        if let ping = message.pingRequest { answer(ping) }
        if message.keepAlive == true {
            statistics.keepAlives += 1
            return
        }
        if awaitingMachineAuth, message.node?.machineAuthorized == true, var registration = lastRegistration {
            awaitingMachineAuth = false
            registration.machineAuthorized = true
            lastRegistration = registration
            logger.info("device approved")
            emit(.loggedIn(registration))
        }
        emit(.map(message))
    }

    /// A liveness probe (no Types): a HEAD request to its URL, over the Noise channel when URLIsNoise (as
    /// tailscale's answerHeadPing). Peer pings (disco, TSMP, ICMP) are not answered yet.
    private func answer(_ ping: PingRequest) {
        let types = ping.types ?? ""
        guard types.isEmpty, ping.urlIsNoise == true, let connection, let path = Self.pathOfURL(ping.url) else {
            logger.info("ping request not answered", metadata: ["url": "\(ping.url)", "types": "\(types)"])
            return
        }
        let logger = logger
        Task {
            do {
                let response = try await connection.head(path)
                response.cancel()
                logger.debug("answered a ping request", metadata: ["status": "\(response.status)"])
            } catch {
                logger.info("ping request failed", metadata: ["error": "\(error)"])
            }
        }
    }

    /// "/path?query" of an absolute URL, or the text itself when it starts with "/".
    static func pathOfURL(_ url: String) -> String? {
        if url.hasPrefix("/") { return url }
        guard let scheme = url.range(of: "://") else { return nil }
        let rest = url[scheme.upperBound...]
        guard let slash = rest.firstIndex(of: "/") else { return "/" }
        return String(rest[slash...])
    }

    // MARK: Lite updates

    /// New endpoints (and their types: 1 local, 2 STUN, 3 port-mapped, 4 STUN4LocalPort, 5 explicit) for
    /// the server; sent at once over the current connection when they changed, else with the next one.
    public func updateEndpoints(_ endpoints: [AddrPort], types: [Int]) {
        guard endpoints != self.endpoints || types != endpointTypes else { return }
        self.endpoints = endpoints
        endpointTypes = types
        liteDirty = true
        liteSignal?.yield()
    }

    /// New host details (NetInfo: preferred DERP and so on), sent like endpoints.
    public func updateHostinfo(_ hostinfo: Hostinfo) {
        guard hostinfo != self.hostinfo else { return }
        self.hostinfo = hostinfo
        liteDirty = true
        liteSignal?.yield()
    }

    private func sendLiteUpdate(on connection: ControlConnection) async {
        guard liteDirty, registered else { return }
        let request = mapRequest(stream: false)
        liteDirty = false
        do {
            let response = try await connection.post("/machine/map", json: try TailcfgJSON.encode(request),
                                                      headers: [("Ts-Lb", "\(configuration.nodeKey.publicKey)")])
            let body = try await response.collect(maximumLength: configuration.maximumMapMessageSize)
            guard response.status == 200 else {
                throw ControlClientError.http(path: "/machine/map", status: response.status,
                                              body: String(decoding: body.prefix(200), as: UTF8.self))
            }
            statistics.liteUpdates += 1
            logger.debug("endpoints sent", metadata: ["endpoints": "\(request.endpoints?.count ?? 0)"])
        } catch {
            // Sent again on the next change or connection.
            liteDirty = true
            logger.info("endpoint update failed", metadata: ["error": "\(error)"])
        }
    }

    // MARK: Logout

    /// Expires the node key on the server (a RegisterRequest with an expiry in the past, Unix time 123 as
    /// Tailscale sends), emits `loggedOut`, and stops `run()`.
    public func logout() async throws {
        loggingOut = true
        defer { loggingOut = false }
        let connection = try await connect()
        var request = baseRegisterRequest()
        request.expiry = TailcfgTime(secondsSince1970: 123)
        request.followup = ""
        let response = try await postRegister(request, on: connection)
        guard response.error.isEmpty else { throw ControlClientError.registrationRefused(response.error) }
        stopped = true
        registered = false
        emit(.loggedOut)
        await dropConnection()
    }
}
